//! Recording approvals and denials from Slack: re-check everything against server-side state (request,
//! current policy, approver rights, expiry, the clicked message, the voter's account in Slack's directory)
//! and commit exactly once.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::policy::{select, Owners};
use crate::domain::request::{Governing, PolicyRef};
use crate::domain::voter::eligibility;
use crate::domain::{
    check_credentials, Actor, ApprovalRequest, AuditDraft, AuditKind, Ineligible, Policy, Principal, RequestId,
    SlackUserId, SlackWorkspaces, TransitionError,
};
use crate::ports::{Clock, Commit, Conflict, Guard, StoreError, Stores};

use super::notify::Dispatcher;
use super::refusals::{RefusalBudget, RefusedCallback};

/// Upper bound on optimistic retries of one vote under contention.
const VOTE_ATTEMPTS: usize = 200;

/// The policy that governs `r` now (rights are re-checked against the policies as they are, row 31), or
/// `NoPolicy` when none matches it any more.
pub(super) fn governing(r: &ApprovalRequest, principal: &Principal, policies: &[Policy]) -> Result<Policy, Rejection> {
    select(policies, principal, &r.action, &r.environment, r.resource.as_ref()).cloned().ok_or(Rejection::NoPolicy)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny { reason: String },
}

/// A vote as the interactions handler hands it over, after the signature and workspace checks.
#[derive(Debug, Clone)]
pub struct VoteRequest {
    pub user: SlackUserId,
    pub request_id: RequestId,
    /// The (channel, ts) of the message that was clicked; `None` for modal submissions.
    pub clicked: Option<(String, String)>,
    pub decision: Decision,
}

/// Why a vote was not counted; the message is safe to show the clicker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    UnknownRequest,
    WrongMessage,
    NoPolicy,
    /// Row 40: a policy now matching the request requires temporary credentials, and it was not signed
    /// with them (the policy changed after the request was made).
    LongTermCredentials(String),
    NotApprover(String),
    AlreadyDecided(&'static str),
    /// Row 34: the voter's account may not vote (deactivated, bot, guest, another workspace).
    Ineligible(Ineligible),
    /// A dependency (Slack group lookup, `users.info`) failed: nothing was recorded; try again.
    TryAgain(String),
    /// A Review click on a request that is not a break-glass (row 41).
    NotBreakGlass,
    /// The break-glass was already reviewed (`ok` or `flagged`).
    AlreadyReviewed(&'static str),
}

impl Rejection {
    pub fn message(&self) -> String {
        match self {
            Self::UnknownRequest => "This request does not exist.".into(),
            Self::WrongMessage => "This message is not the one Countersign posted for this request.".into(),
            Self::NoPolicy => "No policy governs this request any more, so nobody can approve it.".into(),
            Self::LongTermCredentials(why) => format!("Nobody can approve this request any more: {why}."),
            Self::NotApprover(why) => format!("Your vote was not counted: {why}."),
            Self::AlreadyDecided(s) => format!("This request is already {s}; your vote was not counted."),
            Self::Ineligible(i) => format!("Your vote was not counted: {}.", i.describe()),
            Self::TryAgain(why) => format!("Could not check your approver rights ({why}); please try again."),
            Self::NotBreakGlass => "This request is not a break-glass: there is nothing to review.".into(),
            Self::AlreadyReviewed(s) => format!("This break-glass was already reviewed ({s}); yours was not recorded."),
        }
    }

    /// [`Self::message`] as a break-glass reviewer reads it.
    pub fn review_message(&self) -> String {
        match self {
            Self::NotApprover(why) => format!("Your review was not recorded: {why}."),
            Self::Ineligible(i) => format!("Your review was not recorded: {}.", i.describe()),
            other => other.message(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::UnknownRequest => "unknown_request",
            Self::WrongMessage => "wrong_message",
            Self::NoPolicy => "no_matching_policy",
            Self::LongTermCredentials(_) => "long_term_credentials",
            Self::NotApprover(_) => "not_approver",
            Self::AlreadyDecided(_) => "already_decided",
            Self::Ineligible(_) => "voter_ineligible",
            Self::TryAgain(_) => "try_again",
            Self::NotBreakGlass => "not_break_glass",
            Self::AlreadyReviewed(_) => "already_reviewed",
        }
    }
}

#[derive(Debug)]
pub enum VoteOutcome {
    /// Counted (and, when it completed the quorum or denied, decided the request).
    Recorded(ApprovalRequest),
    /// This approver had already voted: nothing changed (audited as a duplicate).
    Duplicate(ApprovalRequest),
    Rejected(Rejection),
}

#[derive(Clone)]
pub struct VoteService {
    pub stores: Stores,
    pub clock: Arc<dyn Clock>,
    pub dispatcher: Dispatcher,
    /// How long the handler may spend updating the message before leaving it to the relay.
    pub update_budget: Duration,
    /// When the caller must have its answer (Slack's acknowledgement window): calls to Slack made on its
    /// behalf (group lookups, the message update) stop there. `None`: only their own timeouts apply.
    pub deadline: Option<tokio::time::Instant>,
    /// The workspaces whose active full members may vote (row 34).
    pub workspaces: Arc<SlackWorkspaces>,
    /// How many refused, unauthenticated callbacks this process may still record (one per process).
    pub refusals: Arc<RefusalBudget>,
}

impl VoteService {
    /// The same service, bounded by `deadline` (see [`VoteService::deadline`]).
    #[must_use]
    pub fn until(mut self, deadline: tokio::time::Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// `max`, or less if the deadline is nearer.
    fn budget(&self, max: Duration) -> Duration {
        match self.deadline {
            Some(d) => max.min(d.saturating_duration_since(tokio::time::Instant::now())),
            None => max,
        }
    }

    pub(super) async fn audit(
        &self,
        user: &SlackUserId,
        request_id: Option<RequestId>,
        kind: AuditKind,
        why: &Rejection,
    ) -> Result<(), StoreError> {
        let mut d = AuditDraft::new(self.clock.now(), kind, Actor::slack(user.as_str()), request_id)
            .with("code", why.code())
            .with("message", why.message());
        if let Rejection::Ineligible(i) = why {
            d = d.with("reason", i.code());
        }
        self.stores.audit.append(vec![d]).await.map(|_| ())
    }

    /// Records a rejected callback (bad workspace, app, payload) in the audit trail.
    pub async fn audit_rejected_callback(
        &self,
        user: Option<&str>,
        code: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let actor = user.map_or_else(Actor::slack_unknown, Actor::slack);
        let d = AuditDraft::new(self.clock.now(), AuditKind::CallbackRejected, actor, None)
            .with("code", code)
            .with("message", detail);
        self.stores.audit.append(vec![d]).await.map(|_| ())
    }

    /// Records a callback refused before it was authenticated (bad signature, body over the limit) as
    /// `callback.rejected` by `slack:unknown`, within this process's [`RefusalBudget`]: `Ok(true)` when a
    /// record was written, `Ok(false)` when the refusal was only counted (the next record carries the count
    /// as `suppressed`). Bounded by the caller's deadline; a record that could not be written is counted too.
    pub async fn audit_refused_callback(&self, r: &RefusedCallback) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let Some(suppressed) = self.refusals.take(now) else {
            return Ok(false);
        };
        let mut d = AuditDraft::new(now, AuditKind::CallbackRejected, Actor::slack_unknown(), None)
            .with("code", r.code.as_str())
            .with("reason", r.reason)
            .with("suppressed", suppressed.to_string());
        if let Some(n) = r.body_bytes {
            d = d.with("body_bytes", n.to_string());
        }
        if let Some(ip) = &r.source_ip {
            d = d.with("source_ip", ip.as_str());
        }
        let append = self.stores.audit.append(vec![d]);
        let written = match self.deadline {
            // Cancelling an append is safe for both stores (the chain head is re-read); it may still have
            // landed, in which case `suppressed` later over-counts by one: never under.
            Some(deadline) => tokio::time::timeout_at(deadline, append).await.unwrap_or_else(|_| {
                Err(StoreError::unavailable(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the audit append did not finish before the callback's deadline",
                )))
            }),
            None => append.await,
        };
        match written {
            Ok(_) => Ok(true),
            Err(e) => {
                self.refusals.unrecorded(suppressed.saturating_add(1));
                Err(e)
            }
        }
    }

    /// Checks that `user` may vote on the request now; audits and returns the rejection otherwise.
    pub async fn authorize(
        &self,
        user: &SlackUserId,
        request_id: &RequestId,
        clicked: Option<&(String, String)>,
    ) -> Result<Result<(ApprovalRequest, Governing), Rejection>, StoreError> {
        let mut res = self.check(user, request_id, clicked).await?;
        if res.is_ok() {
            if let Err(why) = self.eligible(user).await {
                res = Err(why);
            }
        }
        if let Err(why) = &res {
            if !matches!(why, Rejection::TryAgain(_)) {
                let rid = (!matches!(why, Rejection::UnknownRequest)).then_some(*request_id);
                self.audit(user, rid, AuditKind::VoteRejected, why).await?;
            }
        }
        Ok(res)
    }

    /// Row 34: asks Slack's directory (`users.info`, cached ≤ 60 s) whether `user` is an active full member
    /// of our workspaces, within the caller's deadline. A lookup that fails or runs out of time refuses the
    /// vote (fail closed) with "try again"; it never counts.
    pub(super) async fn eligible(&self, user: &SlackUserId) -> Result<(), Rejection> {
        let lookup = self.dispatcher.notifier.user_account(user);
        let account = match self.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, lookup).await.unwrap_or_else(|_| {
                Err(crate::ports::NotifyError {
                    retryable: true,
                    retry_after: None,
                    message: "Slack did not answer in time".into(),
                })
            }),
            None => lookup.await,
        };
        let account = account.map_err(|e| {
            tracing::warn!(error = %e, "users.info failed: vote refused");
            Rejection::TryAgain(format!("Slack could not confirm your account: {}", e.message))
        })?;
        eligibility(user.as_str(), &account, &self.workspaces).map_err(Rejection::Ineligible)
    }

    async fn check(
        &self,
        user: &SlackUserId,
        request_id: &RequestId,
        clicked: Option<&(String, String)>,
    ) -> Result<Result<(ApprovalRequest, Governing), Rejection>, StoreError> {
        // One read for the request and the policy generation; the set is re-read only when it moved.
        let (r, set) = self.stores.request_and_policies(request_id).await?;
        let Some(r) = r else {
            return Ok(Err(Rejection::UnknownRequest));
        };
        if let Some((channel, ts)) = clicked {
            let n = &r.notification;
            if n.channel.as_str() != channel || n.ts.as_deref() != Some(ts.as_str()) {
                return Ok(Err(Rejection::WrongMessage));
            }
        }
        // Rights are re-checked against the policy as it is now, not as it was when the message went out.
        let Ok(principal) = Principal::parse(&r.requester.arn) else {
            return Ok(Err(Rejection::NoPolicy));
        };
        let policies = &set.policies;
        let policy = match governing(&r, &principal, policies) {
            Ok(p) => p,
            Err(why) => return Ok(Err(why)),
        };
        let key = r.requester.access_key_id.as_deref();
        if let Err(e) = check_credentials(policies, &principal, &r.action, &r.environment, r.resource.as_ref(), key) {
            return Ok(Err(Rejection::LongTermCredentials(e.to_string())));
        }
        let owners = match self.rights(user, &policy, &principal, policies).await {
            Ok(owners) => owners,
            Err(why) => return Ok(Err(why)),
        };
        if r.status.is_terminal() {
            return Ok(Err(Rejection::AlreadyDecided(r.status.as_str())));
        }
        if self.clock.now() >= r.expires_at {
            return Ok(Err(Rejection::AlreadyDecided("expired")));
        }
        // Earlier approvals count only while their approvers could approve now (row 31: the quorum is met
        // "from the current policy's approvers"). An owner's approval never counts (row 30). Under the
        // policy the request was created under, approvers were checked when they voted; under another
        // policy (or version), each is checked again against it.
        let drifted = PolicyRef::of(&policy) != r.policy;
        let mut discounted = Vec::new();
        for a in &r.approvals {
            let still = if owners.contains(&a.user_id) {
                false
            } else if !drifted {
                true
            } else {
                let in_group = if policy.needs_group_lookup(&a.user_id, &owners) {
                    match self.in_approver_group(&policy, &a.user_id).await {
                        Ok(found) => found,
                        Err(why) => return Ok(Err(Rejection::TryAgain(why))),
                    }
                } else {
                    false
                };
                policy.approver_check(&a.user_id, &owners, in_group).is_ok()
            };
            if !still {
                discounted.push(a.user_id.clone());
            }
        }
        let governing = Governing::of(&policy).discounting(discounted);
        Ok(Ok((r, governing)))
    }

    /// The owners of `principal`, if `user` is one of `policy`'s approvers (the [`governing`] one) and not an
    /// owner (rows 30, 31). Votes and break-glass reviews both ask this.
    pub(super) async fn rights(
        &self,
        user: &SlackUserId,
        policy: &Policy,
        principal: &Principal,
        policies: &[Policy],
    ) -> Result<Owners, Rejection> {
        // Owners belong to the identity, not to the policy that matched (row 30): the owners of every policy
        // for this principal are refused, before and regardless of any group lookup.
        let owners = Owners::of(policies, principal);
        let in_group = if policy.needs_group_lookup(user, &owners) {
            self.in_approver_group(policy, user).await.map_err(Rejection::TryAgain)?
        } else {
            false
        };
        policy.approver_check(user, &owners, in_group).map_err(|e| Rejection::NotApprover(e.to_string()))?;
        Ok(owners)
    }

    /// Whether `user` is in one of `policy`'s approver groups, within the caller's deadline; `Err` when
    /// Slack cannot say (the caller refuses with "try again").
    async fn in_approver_group(&self, policy: &Policy, user: &SlackUserId) -> Result<bool, String> {
        let lookups = async {
            for g in &policy.approvers.groups {
                match self.dispatcher.notifier.group_members(g).await {
                    Ok(members) if members.contains(user) => return Ok(true),
                    Ok(_) => {}
                    Err(e) => return Err(e.message),
                }
            }
            Ok(false)
        };
        // Several groups, each looked up with its own timeout, must still fit the caller's deadline.
        match self.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, lookups)
                .await
                .unwrap_or_else(|_| Err("Slack did not answer in time".to_string())),
            None => lookups.await,
        }
    }

    /// Authorizes and records one vote: the vote, any status change and the audit records commit together,
    /// conditionally, so concurrent and repeated clicks give exactly one outcome.
    pub async fn vote(&self, v: VoteRequest) -> Result<VoteOutcome, StoreError> {
        // The first attempt applies the vote to the request as authorization just read it: the commit is
        // conditional on its version, so if it changed since, the commit conflicts and the retry re-reads.
        // The vote counts under the policy that authorized it, which may not be the one stored on the
        // request (row 31): the transition raises the quorum to `max(stored, current)` and the commit stores
        // it, so every later vote, and the message, sees the raised count.
        let (mut authorized, governing) = match self.authorize(&v.user, &v.request_id, v.clicked.as_ref()).await? {
            Ok((r, governing)) => (Some(r), governing),
            Err(why) => return Ok(VoteOutcome::Rejected(why)),
        };
        for attempt in 0..VOTE_ATTEMPTS {
            let r = match authorized.take() {
                Some(r) => r,
                None => match self.stores.requests.get_request(&v.request_id).await? {
                    Some(r) => r,
                    None => return Ok(VoteOutcome::Rejected(Rejection::UnknownRequest)),
                },
            };
            let now = self.clock.now();
            let t = match &v.decision {
                Decision::Approve => r.approve(&v.user, &governing, now),
                Decision::Deny { reason } => r.deny(&v.user, reason, &governing, now),
            };
            let t = match t {
                Ok(t) => t,
                Err(TransitionError::DuplicateVote) => return self.duplicate(&v, r).await,
                Err(TransitionError::AlreadyDecided(s)) => {
                    let why = Rejection::AlreadyDecided(s.as_str());
                    self.audit(&v.user, Some(v.request_id), AuditKind::VoteRejected, &why).await?;
                    return Ok(VoteOutcome::Rejected(why));
                }
                Err(TransitionError::Expired | TransitionError::NotYetExpired) => {
                    let why = Rejection::AlreadyDecided("expired");
                    self.audit(&v.user, Some(v.request_id), AuditKind::VoteRejected, &why).await?;
                    return Ok(VoteOutcome::Rejected(why));
                }
            };
            let commit = Commit {
                expected_version: r.version,
                request: t.request.clone(),
                vote: t.vote,
                events: t.events,
                guard: Guard::OpenAt(now),
            };
            match self.stores.requests.commit(commit).await {
                Ok(_) => {
                    let budget = self.budget(self.update_budget);
                    // Starts from the request as committed, with the policy set this call just checked.
                    let fresh = self.stores.policy_cache.last();
                    let deliver = self.dispatcher.deliver_written(t.request.clone(), fresh);
                    let updated = match tokio::time::timeout(budget, deliver).await {
                        Ok(Ok(Some(after))) => after,
                        Ok(Ok(None)) | Err(_) => t.request,
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "message update not recorded; the relay will retry");
                            t.request
                        }
                    };
                    return Ok(VoteOutcome::Recorded(updated));
                }
                Err(StoreError::Conflict(Conflict::DuplicateVote)) => return self.duplicate(&v, r).await,
                Err(StoreError::Conflict(Conflict::Stale)) => {
                    // Lost a race: re-read and re-apply. Small jitter spreads retries of many approvers.
                    let jitter = u64::from(v.user.as_str().bytes().fold(attempt as u8, u8::wrapping_add)) % 20;
                    tokio::time::sleep(Duration::from_millis(1 + jitter)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Contention("this request"))
    }

    async fn duplicate(&self, v: &VoteRequest, r: ApprovalRequest) -> Result<VoteOutcome, StoreError> {
        let d = AuditDraft::new(
            self.clock.now(),
            AuditKind::VoteDuplicate,
            Actor::slack(v.user.as_str()),
            Some(v.request_id),
        );
        self.stores.audit.append(vec![d]).await?;
        Ok(VoteOutcome::Duplicate(r))
    }
}
