//! Delivering a request's Slack message: the first post, updates after each change, retries.
//!
//! The request item is the outbox: `notification` says what is owed (a post, an update) and when it may be
//! tried next. Whoever delivers (the API right after creating, the interactions handler after a vote, the
//! relay in the sweeper) records the outcome with a versioned write, so nothing owed is ever forgotten.
//!
//! One message per request, even when the store fails between a successful post and the write that records
//! it: every first post other than the creating call's own (which cannot follow an earlier attempt) first
//! asks the notifier for a message of ours already carrying the request, and adopts it instead of posting
//! again. When that search cannot be done (the chat system refuses it for good: a missing scope, a history
//! too long to search) we post anyway — a request without a message cannot be approved, while an orphaned
//! duplicate's buttons are refused (its (channel, ts) is not the stored one). A search that fails for a
//! transient reason counts as a failed attempt and is retried later.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::request::NotificationState;
use crate::domain::Policy;
use crate::domain::{
    Actor, ApprovalRequest, AuditDraft, AuditKind, Environment, History, RequestId, SlackChannelId, Timestamp,
};
use crate::ports::{
    Clock, Commit, Conflict, Guard, MessageContext, Notifier, NotifyError, PolicySet, PostedMessage, StoreError, Stores,
};

/// Retries of a versioned bookkeeping write that lost a race.
const SAVE_ATTEMPTS: usize = 20;
/// How long whoever claims a first post owns it (far longer than one Slack call may take).
pub const POST_LEASE: Duration = Duration::from_secs(60);
/// Longest wait between two delivery attempts.
const MAX_BACKOFF_SECONDS: i64 = 15 * 60;
const HISTORY_DAYS: i64 = 30;
/// How far before `created_at` the search for an earlier post starts: covers skew between our clock and
/// the chat system's.
const EARLIER_POST_SKEW_SECONDS: i64 = 5 * 60;

/// Who is delivering, which decides whether a first post may follow an earlier attempt that reached Slack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deliverer {
    /// Must claim the first-post lease before posting (a cancel, a vote, an expiry).
    Claiming,
    /// The creating call, holding the lease written with the request: no attempt can have come before.
    Creator,
    /// Holds a lease claimed after creation (the relay): an earlier attempt may already be in Slack.
    Retry,
}

/// What the caller of a delivery already holds, so that it is not read again.
#[derive(Default)]
struct Known {
    /// The request as the caller last read or wrote it.
    request: Option<ApprovalRequest>,
    /// The policy set the caller has just checked.
    policies: Option<Arc<PolicySet>>,
}

/// What a delivery did in Slack.
enum Delivered {
    /// A new message; the label says how the search for an earlier one went (`None`: not needed).
    Posted(PostedMessage, Option<&'static str>),
    /// An earlier attempt's message, found and taken as the request's (it still needs an update).
    Adopted(PostedMessage),
    Updated,
}

#[derive(Clone)]
pub struct Dispatcher {
    pub stores: Stores,
    pub notifier: Arc<dyn Notifier>,
    pub clock: Arc<dyn Clock>,
    pub sensitive_environments: Arc<BTreeSet<Environment>>,
}

/// When to try again after `attempts` failures, honouring a `Retry-After`.
pub fn next_attempt(now: Timestamp, attempts: u32, retry_after: Option<Duration>) -> Timestamp {
    if let Some(d) = retry_after {
        return now.plus_millis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1000));
    }
    let exp = 5i64.saturating_mul(1i64 << attempts.saturating_sub(1).min(20));
    now.plus_seconds(exp.min(MAX_BACKOFF_SECONDS))
}

impl Dispatcher {
    /// This principal's earlier requests of the same kind in the last 30 days. "Earlier" is by
    /// (created_at, id), so two requests created in the same millisecond never both count the other, and a
    /// message re-rendered later (after a vote or cancel) still ignores requests that came after it.
    pub async fn history(&self, r: &ApprovalRequest) -> Result<History, StoreError> {
        let since = r.created_at.plus_seconds(-HISTORY_DAYS * 86_400);
        let same = self.stores.requests.same_kind_summary(r, since, 1000).await?;
        Ok(History {
            same_kind_last_30_days: same.count,
            last_outcome: same.newest.map(|o| (o.effective_status(self.clock.now()), o.created_at)),
        })
    }

    /// Posts or updates the message if anything is owed. Returns the request as last written, `None` if it
    /// does not exist. Slack failures are recorded for the relay, not returned; store failures are returned.
    ///
    /// A first post is only made under a lease (`notification.next_attempt_at` in the future, claimed with
    /// a versioned write), so two deliverers — a cancel and the relay, say — never post two messages. When
    /// someone else holds it (or a backoff is running), this leaves the post to them: whoever posts
    /// re-renders afterwards if the request changed meanwhile.
    pub async fn deliver(&self, id: &RequestId) -> Result<Option<ApprovalRequest>, StoreError> {
        self.deliver_inner(id, Deliverer::Claiming, Known::default()).await
    }

    /// [`Self::deliver`] right after this call wrote `written` (a vote, a cancel): starts from it instead of
    /// reading it back (a write that came in between makes the bookkeeping write conflict, which re-reads),
    /// and renders with `policies` when this call has just checked them.
    pub async fn deliver_written(
        &self,
        written: ApprovalRequest,
        policies: Option<Arc<PolicySet>>,
    ) -> Result<Option<ApprovalRequest>, StoreError> {
        let id = written.id;
        self.deliver_inner(&id, Deliverer::Claiming, Known { request: Some(written), policies }).await
    }

    /// [`Self::deliver_written`] by the creating call, which holds the first-post lease written with the
    /// request. Its first post skips the search for an earlier one: there cannot be one, and the hot path
    /// stays one Slack call.
    pub async fn deliver_created(
        &self,
        created: ApprovalRequest,
        policies: Option<Arc<PolicySet>>,
    ) -> Result<Option<ApprovalRequest>, StoreError> {
        let id = created.id;
        self.deliver_inner(&id, Deliverer::Creator, Known { request: Some(created), policies }).await
    }

    /// The request's policy as it is now, for its message: from the set this call has just checked, else read.
    async fn policy_of(&self, r: &ApprovalRequest, known: Option<&PolicySet>) -> Result<Option<Policy>, StoreError> {
        match known {
            Some(set) => Ok(set.policies.iter().find(|p| p.name == r.policy.name).cloned()),
            None => self.stores.policies.get_policy(&r.policy.name).await,
        }
    }

    /// The first post, or the adoption of an earlier attempt's message when one may exist.
    async fn first_post(&self, ctx: &MessageContext<'_>, may_follow_a_post: bool) -> Result<Delivered, NotifyError> {
        let mut check = None;
        if may_follow_a_post {
            let since = ctx.request.created_at.plus_seconds(-EARLIER_POST_SKEW_SECONDS);
            match self.notifier.find_request_message(ctx.request, since).await {
                Ok(Some(p)) => return Ok(Delivered::Adopted(p)),
                Ok(None) => check = Some("none_found"),
                Err(e) if e.retryable => {
                    return Err(NotifyError { message: format!("looking for an earlier post: {}", e.message), ..e })
                }
                Err(e) => {
                    // Availability over a possible duplicate: see the module docs.
                    tracing::warn!(request_id = %ctx.request.id, error = %e,
                        "cannot look for an earlier post of this request; posting anyway");
                    check = Some("unavailable");
                }
            }
        }
        self.notifier.post_request(ctx).await.map(|p| Delivered::Posted(p, check))
    }

    /// Claims the first-post lease on `r`: `false` when it is held (or backing off) or the claim lost a race.
    async fn claim_post(&self, r: &ApprovalRequest, now: Timestamp) -> Result<bool, StoreError> {
        if r.notification.next_attempt_at.is_some_and(|t| t > now) {
            return Ok(false);
        }
        let mut next = r.clone();
        next.version += 1;
        let lease_ms = i64::try_from(POST_LEASE.as_millis()).unwrap_or(60_000);
        next.notification.next_attempt_at = Some(now.plus_millis(lease_ms));
        let claim = Commit {
            expected_version: r.version,
            request: next,
            vote: None,
            events: vec![],
            guard: Guard::VersionOnly,
        };
        match self.stores.requests.commit(claim).await {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn deliver_inner(
        &self,
        id: &RequestId,
        mut who: Deliverer,
        mut known: Known,
    ) -> Result<Option<ApprovalRequest>, StoreError> {
        let mut latest = None;
        for _ in 0..4 {
            let r = match known.request.take() {
                Some(r) => r,
                None => match self.stores.requests.get_request(id).await? {
                    Some(r) => r,
                    None => return Ok(None),
                },
            };
            let posted =
                r.notification.ts.clone().map(|ts| PostedMessage { channel: r.notification.channel.to_string(), ts });
            if posted.is_some() && !r.notification.update_pending {
                return Ok(Some(r));
            }
            if posted.is_none() && who == Deliverer::Claiming {
                if !self.claim_post(&r, self.clock.now()).await? {
                    return Ok(Some(r));
                }
                who = Deliverer::Retry;
                continue;
            }
            // Only the creator's post of the untouched request can be sure nothing was posted before.
            let may_follow_a_post = !(who == Deliverer::Creator && r.version == 1 && r.notification.attempts == 0);
            let policy = self.policy_of(&r, known.policies.as_deref()).await?;
            let history = self.history(&r).await?;
            let now = self.clock.now();
            let ctx = MessageContext {
                request: &r,
                policy: policy.as_ref(),
                history: &history,
                sensitive: self.sensitive_environments.contains(&r.environment),
                now,
            };
            let rendered_version = r.version;
            let outcome = match &posted {
                None => self.first_post(&ctx, may_follow_a_post).await,
                Some(p) => self.notifier.update_request(&ctx, p).await.map(|()| Delivered::Updated),
            };
            match outcome {
                Ok(delivered) => {
                    let (new_post, adopted, check) = match delivered {
                        Delivered::Posted(p, check) => (Some(p), false, check),
                        Delivered::Adopted(p) => (Some(p), true, None),
                        Delivered::Updated => (None, false, None),
                    };
                    let is_post = new_post.is_some();
                    let saved = self
                        .save(id, Some(r.clone()), |cur| {
                            let n = &mut cur.notification;
                            if let Some(p) = &new_post {
                                if n.ts.is_some() {
                                    return None; // someone else recorded a post meanwhile
                                }
                                n.ts = Some(p.ts.clone());
                                if let Ok(c) = SlackChannelId::parse(&p.channel) {
                                    n.channel = c;
                                }
                            }
                            n.state = NotificationState::Posted;
                            n.attempts = 0;
                            n.next_attempt_at = None;
                            // Anything written after we rendered still needs showing; an adopted message
                            // shows whatever an earlier attempt rendered.
                            n.update_pending = adopted || cur.version != rendered_version;
                            let events = if is_post {
                                let mut e =
                                    AuditDraft::new(now, AuditKind::SlackPosted, Actor::system("slack"), Some(cur.id))
                                        .with("channel", n.channel.as_str())
                                        .with("ts", n.ts.clone().unwrap_or_default());
                                if adopted {
                                    e = e.with("adopted", "true");
                                }
                                if let Some(c) = check {
                                    e = e.with("earlier_post", c);
                                }
                                vec![e]
                            } else {
                                vec![]
                            };
                            Some(events)
                        })
                        .await?;
                    latest = saved;
                    match &latest {
                        Some(l) if l.notification.update_pending => {
                            known.request = latest.clone();
                            continue;
                        }
                        _ => return Ok(latest),
                    }
                }
                Err(e) => {
                    tracing::warn!(request_id = %id, retryable = e.retryable, error = %e, "slack delivery failed");
                    let is_post = posted.is_none();
                    let saved = self
                        .save(id, Some(r.clone()), |cur| {
                            let n = &mut cur.notification;
                            if is_post && n.ts.is_some() {
                                return None;
                            }
                            n.attempts = n.attempts.saturating_add(1);
                            n.next_attempt_at = Some(next_attempt(now, n.attempts, e.retry_after));
                            if is_post {
                                n.state = NotificationState::Retrying;
                                Some(vec![AuditDraft::new(
                                    now,
                                    AuditKind::SlackPostFailed,
                                    Actor::system("slack"),
                                    Some(cur.id),
                                )
                                .with("attempt", n.attempts.to_string())
                                .with("error", e.message.clone())])
                            } else {
                                Some(vec![])
                            }
                        })
                        .await?;
                    return Ok(saved.or(latest));
                }
            }
        }
        Ok(latest)
    }

    /// Lets `f` change the request's notification bookkeeping (returning the audit records, or `None` to
    /// write nothing), and writes it conditionally on the version, retrying lost races. The first attempt
    /// starts from `read` when given (the request as this call last read or wrote it); a lost race re-reads.
    pub(super) async fn save(
        &self,
        id: &RequestId,
        mut read: Option<ApprovalRequest>,
        f: impl Fn(&mut ApprovalRequest) -> Option<Vec<AuditDraft>>,
    ) -> Result<Option<ApprovalRequest>, StoreError> {
        for _ in 0..SAVE_ATTEMPTS {
            let cur = match read.take() {
                Some(cur) => cur,
                None => match self.stores.requests.get_request(id).await? {
                    Some(cur) => cur,
                    None => return Ok(None),
                },
            };
            let mut next = cur.clone();
            let Some(events) = f(&mut next) else {
                return Ok(Some(cur));
            };
            next.version = cur.version + 1;
            let commit = Commit {
                expected_version: cur.version,
                request: next.clone(),
                vote: None,
                events,
                guard: Guard::VersionOnly,
            };
            match self.stores.requests.commit(commit).await {
                Ok(_) => return Ok(Some(next)),
                Err(StoreError::Conflict(Conflict::Stale)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Contention("the Slack delivery record"))
    }

    /// Takes the relay's lease on a due request (so two relays never post the same message), then delivers.
    pub async fn relay_one(&self, id: &RequestId, lease: Duration) -> Result<(), StoreError> {
        let now = self.clock.now();
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(60_000);
        let Some(cur) = self.stores.requests.get_request(id).await? else {
            return Ok(());
        };
        if cur.notification.next_attempt_at.is_some_and(|t| t > now) {
            return Ok(());
        }
        let mut next = cur.clone();
        next.version += 1;
        next.notification.next_attempt_at = Some(now.plus_millis(lease_ms));
        let claim = Commit {
            expected_version: cur.version,
            request: next,
            vote: None,
            events: vec![],
            guard: Guard::VersionOnly,
        };
        match self.stores.requests.commit(claim).await {
            Ok(_) => self.deliver_inner(id, Deliverer::Retry, Known::default()).await.map(|_| ()),
            Err(StoreError::Conflict(_)) => Ok(()), // someone else is on it
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps_and_honours_retry_after() {
        let t = Timestamp::from_unix_millis(0);
        assert_eq!(next_attempt(t, 1, None), t.plus_seconds(5));
        assert_eq!(next_attempt(t, 2, None), t.plus_seconds(10));
        assert_eq!(next_attempt(t, 30, None), t.plus_seconds(MAX_BACKOFF_SECONDS));
        assert_eq!(next_attempt(t, 1, Some(Duration::from_secs(42))), t.plus_seconds(42));
    }
}
