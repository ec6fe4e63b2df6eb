//! Break-glass after the fact (row 41): the announcement in the break-glass channel, the review by an
//! approver (owners excluded), the reminder at half the window and the escalation at its end.
//!
//! Each step is claimed with a versioned write before Slack is called, so two deliverers (the creating
//! call and the sweeper, or two sweepers) never post the same notice twice; a notice whose post failed is
//! tried again by the sweeper once its lease ran out. The review itself commits exactly once: its write is
//! conditional on the version it was decided on, and a lost race re-reads and finds it reviewed.

use std::time::Duration;

use crate::domain::break_glass::{ReviewError, ReviewStep, Verdict, NOTICE_LEASE_SECONDS};
use crate::domain::{Actor, ApprovalRequest, AuditDraft, AuditKind, Principal, RequestId, SlackUserId, Timestamp};
use crate::ports::{Commit, Conflict, Guard, MessageContext, PostedMessage, StoreError};

use super::notify::Dispatcher;
use super::sweeper::Sweeper;
use super::votes::{governing, Rejection, VoteOutcome, VoteService};

const REVIEW_ATTEMPTS: usize = 50;

/// A review as the interactions handler hands it over, after the signature and workspace checks.
#[derive(Debug, Clone)]
pub struct ReviewRequest {
    pub user: SlackUserId,
    pub request_id: RequestId,
    /// The (channel, ts) of the message that was clicked; `None` for the flag modal's submission.
    pub clicked: Option<(String, String)>,
    pub verdict: Verdict,
}

impl Dispatcher {
    /// The request as the break-glass channel's copy renders it: the same message, in that channel.
    fn copy_of(r: &ApprovalRequest) -> Option<(ApprovalRequest, Option<PostedMessage>)> {
        let b = r.break_glass.as_ref()?;
        let mut copy = r.clone();
        copy.notification.channel = b.channel.clone();
        let posted = b.alert_ts.clone().map(|ts| PostedMessage { channel: b.channel.to_string(), ts });
        Some((copy, posted))
    }

    /// Posts the break-glass announcement (a copy of the message, banner and Review action included) in
    /// the break-glass channel, once. `claimed`: the caller holds the notice lease (the creating call holds
    /// the one written with the request); otherwise it is claimed here first. A failed post is left to the
    /// sweeper when the lease runs out.
    pub async fn deliver_alert(
        &self,
        r: &ApprovalRequest,
        claimed: bool,
    ) -> Result<Option<ApprovalRequest>, StoreError> {
        let Some((copy, None)) = Self::copy_of(r) else {
            return Ok(Some(r.clone()));
        };
        let now = self.clock.now();
        let mut current = r.clone();
        if !claimed {
            match self.claim_notice(r, now).await? {
                Some(c) => current = c,
                None => return Ok(Some(r.clone())),
            }
        }
        let policy = self.stores.policies.get_policy(&r.policy.name).await?;
        let history = self.history(r).await?;
        let ctx = MessageContext {
            request: &copy,
            policy: policy.as_ref(),
            history: &history,
            sensitive: self.sensitive_environments.contains(&r.environment),
            now,
        };
        match self.notifier.post_request(&ctx).await {
            Ok(p) => {
                self.save(&r.id, Some(current), |cur| {
                    let b = cur.break_glass.as_mut()?;
                    if b.alert_ts.is_some() {
                        return None;
                    }
                    b.alert_ts = Some(p.ts.clone());
                    b.notice_lease_until = None;
                    Some(vec![AuditDraft::new(now, AuditKind::SlackPosted, Actor::system("slack"), Some(cur.id))
                        .with("channel", p.channel.as_str())
                        .with("ts", p.ts.as_str())
                        .with("copy", "break_glass")])
                })
                .await
            }
            Err(e) => {
                tracing::warn!(request_id = %r.id, error = %e, "break-glass announcement failed; the sweeper retries");
                Ok(Some(current))
            }
        }
    }

    /// Brings the break-glass channel's copy up to date (after a review), best effort: the request's own
    /// message is the one whose updates are owed and retried.
    pub async fn update_alert(&self, r: &ApprovalRequest) {
        let Some((copy, Some(posted))) = Self::copy_of(r) else {
            return;
        };
        let policy = self.stores.policies.get_policy(&r.policy.name).await.ok().flatten();
        let history = self.history(r).await.unwrap_or_default();
        let ctx = MessageContext {
            request: &copy,
            policy: policy.as_ref(),
            history: &history,
            sensitive: self.sensitive_environments.contains(&r.environment),
            now: self.clock.now(),
        };
        if let Err(e) = self.notifier.update_request(&ctx, &posted).await {
            tracing::warn!(request_id = %r.id, error = %e, "break-glass copy not updated");
        }
    }

    /// Claims the notice lease of `r` for [`NOTICE_LEASE_SECONDS`]: the request as written, or `None` when
    /// someone else holds it (or the claim lost a race).
    async fn claim_notice(&self, r: &ApprovalRequest, now: Timestamp) -> Result<Option<ApprovalRequest>, StoreError> {
        let Some(b) = &r.break_glass else {
            return Ok(None);
        };
        if b.notice_lease_until.is_some_and(|t| t > now) {
            return Ok(None);
        }
        let mut next = r.clone();
        next.version += 1;
        if let Some(nb) = next.break_glass.as_mut() {
            nb.notice_lease_until = Some(now.plus_seconds(NOTICE_LEASE_SECONDS));
        }
        let claim = Commit {
            expected_version: r.version,
            request: next.clone(),
            vote: None,
            events: vec![],
            guard: Guard::VersionOnly,
        };
        match self.stores.requests.commit(claim).await {
            Ok(_) => Ok(Some(next)),
            Err(StoreError::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl VoteService {
    /// Authorizes and records one review of a break-glass: only an approver of the policy that governs the
    /// request now, never an owner of its identity (rows 30, 41), an eligible account, from the request's
    /// message or its break-glass copy. Exactly once: a second review is refused as already reviewed.
    pub async fn review(&self, v: ReviewRequest) -> Result<VoteOutcome, StoreError> {
        let (r, set) = self.stores.request_and_policies(&v.request_id).await?;
        let Some(r) = r else {
            return self.refuse_review(&v, Rejection::UnknownRequest).await;
        };
        let Some(b) = &r.break_glass else {
            return self.refuse_review(&v, Rejection::NotBreakGlass).await;
        };
        if let Some((channel, ts)) = &v.clicked {
            let primary = r.notification.channel.as_str() == channel && r.notification.ts.as_deref() == Some(ts);
            let copy = b.channel.as_str() == channel && b.alert_ts.as_deref() == Some(ts.as_str());
            if !primary && !copy {
                return self.refuse_review(&v, Rejection::WrongMessage).await;
            }
        }
        let Ok(principal) = Principal::parse(&r.requester.arn) else {
            return self.refuse_review(&v, Rejection::NoPolicy).await;
        };
        let policy = match governing(&r, &principal, &set.policies) {
            Ok(p) => p,
            Err(why) => return self.refuse_review(&v, why).await,
        };
        if let Err(why) = self.rights(&v.user, &policy, &principal, &set.policies).await {
            return self.refuse_review(&v, why).await;
        }
        if let Err(why) = self.eligible(&v.user).await {
            return self.refuse_review(&v, why).await;
        }
        let mut read = Some(r);
        for _ in 0..REVIEW_ATTEMPTS {
            let r = match read.take() {
                Some(r) => r,
                None => match self.stores.requests.get_request(&v.request_id).await? {
                    Some(r) => r,
                    None => return self.refuse_review(&v, Rejection::UnknownRequest).await,
                },
            };
            let now = self.clock.now();
            let t = match r.review(&v.user, &v.verdict, now) {
                Ok(t) => t,
                Err(ReviewError::AlreadyReviewed(s)) => {
                    return self.refuse_review(&v, Rejection::AlreadyReviewed(s.as_str())).await
                }
                Err(ReviewError::NotBreakGlass) => return self.refuse_review(&v, Rejection::NotBreakGlass).await,
            };
            let commit = Commit {
                expected_version: r.version,
                request: t.request.clone(),
                vote: None,
                events: t.events,
                guard: Guard::VersionOnly,
            };
            match self.stores.requests.commit(commit).await {
                Ok(_) => {
                    let deliver = async {
                        let after = self.dispatcher.deliver_written(t.request.clone(), None).await;
                        self.dispatcher.update_alert(&t.request).await;
                        after
                    };
                    let updated = match tokio::time::timeout(self.update_budget, deliver).await {
                        Ok(Ok(Some(after))) => after,
                        _ => t.request,
                    };
                    return Ok(VoteOutcome::Recorded(updated));
                }
                Err(StoreError::Conflict(Conflict::Stale)) => tokio::time::sleep(Duration::from_millis(2)).await,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Contention("this request"))
    }
}

impl VoteService {
    /// Audits a refused review (`vote.rejected`, as for votes) and returns it.
    async fn refuse_review(&self, v: &ReviewRequest, why: Rejection) -> Result<VoteOutcome, StoreError> {
        if !matches!(why, Rejection::TryAgain(_)) {
            let rid = (!matches!(why, Rejection::UnknownRequest)).then_some(v.request_id);
            self.audit(&v.user, rid, AuditKind::VoteRejected, &why).await?;
        }
        Ok(VoteOutcome::Rejected(why))
    }
}

impl Sweeper {
    /// Does what `r`'s break-glass review owes at `now` ([`ReviewStep`]); returns what it did.
    pub(super) async fn review_step(
        &self,
        r: &ApprovalRequest,
        now: Timestamp,
    ) -> Result<Option<ReviewStep>, StoreError> {
        let Some(step) = r.review_step(now) else {
            return Ok(None);
        };
        match step {
            ReviewStep::Alert => {
                self.dispatcher.deliver_alert(r, false).await?;
            }
            ReviewStep::Remind => {
                let mut next = r.clone();
                next.version += 1;
                if let Some(b) = next.break_glass.as_mut() {
                    b.reminded = true;
                }
                let reminded = AuditDraft::new(now, AuditKind::SlackReminded, Actor::system("sweeper"), Some(r.id))
                    .with("reminder", "review");
                if !self.claim(r, next.clone(), vec![reminded]).await? {
                    return Ok(None);
                }
                // A reminder is a courtesy, as for votes: claimed and audited; a failed one is logged.
                self.post_notice(&next, primary(&next)).await;
            }
            ReviewStep::MarkOverdue => {
                let Some(t) = r.mark_review_overdue(now) else {
                    return Ok(None);
                };
                if !self.claim(r, t.request.clone(), t.events).await? {
                    return Ok(None);
                }
                if let Err(e) = self.dispatcher.deliver_written(t.request.clone(), None).await {
                    tracing::warn!(request_id = %r.id, error = %e, "message update after overdue review deferred");
                }
                // The escalation is owed from here; the next run posts it (after the message update).
            }
            ReviewStep::Escalate => {
                let Some(b) = &r.break_glass else {
                    return Ok(None);
                };
                let mut claimed = r.clone();
                claimed.version += 1;
                if let Some(nb) = claimed.break_glass.as_mut() {
                    nb.notice_lease_until = Some(now.plus_seconds(NOTICE_LEASE_SECONDS));
                }
                if !self.claim(r, claimed.clone(), vec![]).await? {
                    return Ok(None);
                }
                let target = b
                    .alert_ts
                    .clone()
                    .map(|ts| PostedMessage { channel: b.channel.to_string(), ts })
                    .or_else(|| primary(r));
                if !self.post_notice(&claimed, target).await {
                    return Ok(None); // tried again when the lease runs out
                }
                let mut done = claimed.clone();
                done.version += 1;
                if let Some(nb) = done.break_glass.as_mut() {
                    nb.escalation_owed = false;
                    nb.notice_lease_until = None;
                }
                let posted = AuditDraft::new(now, AuditKind::SlackReminded, Actor::system("sweeper"), Some(r.id))
                    .with("reminder", "review_overdue");
                self.claim(&claimed, done, vec![posted]).await?;
            }
        }
        Ok(Some(step))
    }

    /// Writes `next` over `r` (version-conditional): `false` when another writer got there first.
    async fn claim(
        &self,
        r: &ApprovalRequest,
        next: ApprovalRequest,
        events: Vec<AuditDraft>,
    ) -> Result<bool, StoreError> {
        let commit =
            Commit { expected_version: r.version, request: next, vote: None, events, guard: Guard::VersionOnly };
        match self.stores.requests.commit(commit).await {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Posts the reminder or escalation `r`'s state calls for, in `target`'s thread: `true` when posted.
    async fn post_notice(&self, r: &ApprovalRequest, target: Option<PostedMessage>) -> bool {
        let Some(target) = target else {
            return false;
        };
        let policy = self.stores.policies.get_policy(&r.policy.name).await.ok().flatten();
        let history = self.dispatcher.history(r).await.unwrap_or_default();
        let ctx = MessageContext {
            request: r,
            policy: policy.as_ref(),
            history: &history,
            sensitive: self.dispatcher.sensitive_environments.contains(&r.environment),
            now: self.clock.now(),
        };
        match self.dispatcher.notifier.remind(&ctx, &target).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(request_id = %r.id, error = %e, "break-glass notice could not be posted");
                false
            }
        }
    }
}

fn primary(r: &ApprovalRequest) -> Option<PostedMessage> {
    r.notification.ts.clone().map(|ts| PostedMessage { channel: r.notification.channel.to_string(), ts })
}
