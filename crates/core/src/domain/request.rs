//! The approval request and its state machine.
//!
//! `pending → approved | denied | expired | cancelled`; terminal states never change. Every transition is a
//! pure function returning the new request and the audit drafts it causes; the store commits both, and the
//! vote, in one conditional write (see `ports::RequestStore::commit`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::audit::{Actor, AuditDraft, AuditKind};
use super::ids::{
    Action, ArtifactDigest, Environment, IdempotencyKey, PolicyName, RequestId, Resource, SlackChannelId, SlackUserId,
};
use super::policy::Policy;
use super::principal::Principal;
use super::time::Timestamp;

mod redeem;
pub use redeem::RedeemRefusal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Expired,
    Cancelled,
}

impl Status {
    pub fn is_terminal(self) -> bool {
        self != Self::Pending
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "denied" => Self::Denied,
            "expired" => Self::Expired,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// Who asked, as verified by AWS IAM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    pub arn: String,
    pub account_id: String,
    /// The identity policies matched on (`Principal::identity`).
    pub principal: String,
    pub session: Option<String>,
    /// Access key id the call was signed with (shown by its last 4 characters only).
    pub access_key_id: Option<String>,
}

impl Requester {
    pub fn from_principal(p: &Principal, access_key_id: Option<String>) -> Self {
        Self {
            arn: p.arn.clone(),
            account_id: p.account.clone(),
            principal: p.identity(),
            session: p.session.clone(),
            access_key_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    pub name: PolicyName,
    pub version: String,
}

impl PolicyRef {
    pub fn of(policy: &Policy) -> Self {
        Self { name: policy.name.clone(), version: policy.version() }
    }
}

/// The policy that governs a vote: the one that matches the request at vote time (row 31). It may differ
/// from the one stored on the request (another name, or the same name at another version) when policies
/// changed while the request was pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Governing {
    pub policy: PolicyRef,
    pub required_approvals: u32,
    /// Earlier approvers whose approvals no longer count: they are not approvers under the governing
    /// policy, or they own the identity (row 31: the quorum is met "from the current policy's approvers").
    /// Their votes stay recorded (they cannot vote again); their approvals leave the count.
    pub discounted: BTreeSet<SlackUserId>,
}

impl Governing {
    pub fn of(policy: &Policy) -> Self {
        Self {
            policy: PolicyRef::of(policy),
            required_approvals: policy.required_approvals,
            discounted: BTreeSet::new(),
        }
    }

    /// The terms stored on `r`, as if no policy had changed since it was created.
    pub fn as_stored(r: &ApprovalRequest) -> Self {
        Self { policy: r.policy.clone(), required_approvals: r.required_approvals, discounted: BTreeSet::new() }
    }

    /// The same terms, with `users`' earlier approvals no longer counted.
    #[must_use]
    pub fn discounting(mut self, users: impl IntoIterator<Item = SlackUserId>) -> Self {
        self.discounted.extend(users);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub user_id: SlackUserId,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    pub user_id: SlackUserId,
    pub reason: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationState {
    Pending,
    Posted,
    Retrying,
}

/// Where the Slack message is, and whether it still needs posting or updating.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub state: NotificationState,
    pub channel: SlackChannelId,
    pub ts: Option<String>,
    pub attempts: u32,
    /// When the relay may try again (honours Slack's `Retry-After`).
    pub next_attempt_at: Option<Timestamp>,
    /// The message no longer shows the current state (`chat.update` owed).
    pub update_pending: bool,
    /// Reminders already posted in the message thread (at 1/3 and 2/3 of the TTL).
    #[serde(default)]
    pub reminders_sent: u32,
}

/// What reviewers should know about this principal's past requests of the same kind (computed by the
/// service from the store): unusual requests should look unusual.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Earlier requests by the same principal for the same action and environment in the last 30 days.
    pub same_kind_last_30_days: u32,
    /// How the most recent of those ended (or `pending`), and when it was created.
    pub last_outcome: Option<(Status, Timestamp)>,
}

impl History {
    pub fn is_first_of_its_kind(&self) -> bool {
        self.same_kind_last_30_days == 0
    }
}

/// A vote as recorded (one per Slack user per request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub request_id: RequestId,
    pub user_id: SlackUserId,
    pub decision: VoteDecision,
    pub reason: Option<String>,
    pub at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteDecision {
    Approve,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    pub id: RequestId,
    pub status: Status,
    pub action: Action,
    pub environment: Environment,
    pub resource: Option<Resource>,
    pub reason: Option<String>,
    pub details: BTreeMap<String, String>,
    pub requester: Requester,
    pub policy: PolicyRef,
    pub required_approvals: u32,
    pub approvals: Vec<Approval>,
    pub denial: Option<Denial>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub decided_at: Option<Timestamp>,
    pub notification: Notification,
    pub idempotency_key: Option<IdempotencyKey>,
    /// SHA-256 of the request body that created it, to tell a retry from a conflicting reuse of the key.
    pub body_hash: Option<String>,
    /// Bumped by every write; writes are conditional on it.
    pub version: u64,
    /// The artifact the request is bound to: redemption must name the same digest (row 35).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactDigest>,
    /// Seconds an approval stays redeemable: the policy's `use_within` when the request was created.
    #[serde(default = "default_use_within")]
    pub use_within: u64,
    /// Redemption must come from the session that created the request (the policy's `bind_session`).
    #[serde(default)]
    pub bind_session: bool,
    /// Set at approval: `decided_at + use_within`. Requests approved before redemption existed have none
    /// and can never be redeemed.
    #[serde(default)]
    pub usable_until: Option<Timestamp>,
    /// When the approval was used, and by which session ARN (at most once).
    #[serde(default)]
    pub redeemed_at: Option<Timestamp>,
    #[serde(default)]
    pub redeemed_by: Option<String>,
    /// When the sweeper found the approval unused past `usable_until` (`request.unused`).
    #[serde(default)]
    pub unused_at: Option<Timestamp>,
    /// Set on a break-glass (row 41): approved at once, announced, and owing a review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<super::break_glass::BreakGlass>,
    /// Set on a reviewer drill (row 42): never redeemable, revealed once over. Not in the API's view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<super::drill::Drill>,
}

fn default_use_within() -> u64 {
    super::policy::DEFAULT_USE_WITHIN_SECONDS
}

/// Why a transition was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("the request is already {}", .0.as_str())]
    AlreadyDecided(Status),
    #[error("the request has expired")]
    Expired,
    #[error("this approver has already voted")]
    DuplicateVote,
    #[error("the request has not expired yet")]
    NotYetExpired,
}

/// The result of a transition: the new state and the audit records it causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub request: ApprovalRequest,
    pub vote: Option<Vote>,
    pub events: Vec<AuditDraft>,
}

impl ApprovalRequest {
    /// When the relay must next look at this request's Slack message (post it, or bring it up to date), or
    /// `None` if nothing is owed. Both stores index requests by this; the rule lives here only.
    ///
    /// An approval still waiting to be used is due at `usable_until` too: the sweeper then marks it unused
    /// and the message says so ([`Self::unused_due`]).
    pub fn notification_due_at(&self) -> Option<Timestamp> {
        let n = &self.notification;
        let message = self.message_owed().then(|| n.next_attempt_at.unwrap_or(self.created_at));
        [message, self.awaiting_use(), self.review_step_at()].into_iter().flatten().min()
    }

    /// Does the Slack message still need posting or bringing up to date?
    pub fn message_owed(&self) -> bool {
        self.notification.state != NotificationState::Posted || self.notification.update_pending
    }

    fn ensure_open(&self, now: Timestamp) -> Result<(), TransitionError> {
        if self.status.is_terminal() {
            return Err(TransitionError::AlreadyDecided(self.status));
        }
        if now >= self.expires_at {
            return Err(TransitionError::Expired);
        }
        Ok(())
    }

    pub fn has_voted(&self, user: &SlackUserId) -> bool {
        self.approvals.iter().any(|a| &a.user_id == user) || self.denial.as_ref().is_some_and(|d| &d.user_id == user)
    }

    fn next(&self) -> Self {
        let mut r = self.clone();
        r.version += 1;
        r
    }

    fn draft(&self, now: Timestamp, kind: AuditKind, actor: Actor) -> AuditDraft {
        AuditDraft::new(now, kind, actor, Some(self.id))
            .with("policy", self.policy.name.as_str())
            .with("principal", &self.requester.principal)
    }

    /// Approvals this request needs when `current` governs it: `max(stored, current)` (row 31). Tightening a
    /// policy raises the quorum of its pending requests; loosening one never lowers it, so the count shown
    /// to earlier approvers never shrinks under them.
    pub fn quorum_under(&self, current: &Governing) -> u32 {
        self.required_approvals.max(current.required_approvals)
    }

    /// The next version of this request, re-based on the policy that governs the vote: the quorum raised as
    /// [`Self::quorum_under`] says. The stored policy ref stays the one the request was created under (it
    /// keys the per-policy `max_pending` accounting); each vote record names both.
    fn next_under(&self, current: &Governing) -> Self {
        let mut r = self.next();
        r.required_approvals = self.quorum_under(current);
        r.approvals.retain(|a| !current.discounted.contains(&a.user_id));
        r
    }

    /// A vote's audit record: the stored policy and the one that governed the vote, and the quorum if the
    /// vote raised it.
    fn vote_draft(
        &self,
        now: Timestamp,
        kind: AuditKind,
        actor: Actor,
        current: &Governing,
        after: &Self,
    ) -> AuditDraft {
        let mut d = self
            .draft(now, kind, actor)
            .with("policy_version", &self.policy.version)
            .with("current_policy", current.policy.name.as_str())
            .with("current_policy_version", &current.policy.version);
        if after.required_approvals != self.required_approvals {
            d = d
                .with("required_approvals", after.required_approvals.to_string())
                .with("previous_required_approvals", self.required_approvals.to_string());
        }
        let dropped: Vec<&str> = self
            .approvals
            .iter()
            .filter(|a| current.discounted.contains(&a.user_id))
            .map(|a| a.user_id.as_str())
            .collect();
        if !dropped.is_empty() {
            d = d.with("discounted_approvals", dropped.join(","));
        }
        d
    }

    fn decided(&mut self, status: Status, now: Timestamp) {
        self.status = status;
        self.decided_at = Some(now);
        self.notification.update_pending = true;
        if status == Status::Approved {
            self.open_use_window(now);
        }
    }

    /// An approval granted at `at` may be used until `at + use_within`.
    pub(crate) fn open_use_window(&mut self, at: Timestamp) {
        self.usable_until = Some(at.plus_seconds(i64::try_from(self.use_within).unwrap_or(i64::MAX)));
    }

    /// Events for a newly created request (auto-approved when the policy needs no approvals).
    pub fn creation_events(&self) -> Vec<AuditDraft> {
        let actor = Actor::aws(&self.requester.arn);
        let mut created = self
            .draft(self.created_at, AuditKind::RequestCreated, actor.clone())
            .with("action", self.action.as_str())
            .with("environment", self.environment.as_str())
            .with("policy_version", &self.policy.version)
            .with("required_approvals", self.required_approvals.to_string())
            .with("expires_at", self.expires_at.to_rfc3339());
        if let Some(r) = &self.resource {
            created = created.with("resource", r.as_str());
        }
        if let Some(r) = &self.reason {
            created = created.with("reason", r);
        }
        if let Some(a) = &self.artifact {
            created = created.with("artifact", a.as_str());
        }
        if self.break_glass.is_some() {
            created = created.with("break_glass", "true");
        }
        if let Some(d) = &self.drill {
            created = created.with("drill", "true").with("scenario", &d.scenario);
        }
        let mut events = vec![created];
        if let Some(b) = &self.break_glass {
            events.push(self.break_glass_event(b));
        } else if self.status == Status::Approved {
            events.push(self.draft(self.created_at, AuditKind::RequestAutoApproved, Actor::system("policy")));
        }
        events
    }

    /// An approver, authorized under `current` (the policy that matches the request now), approves.
    /// Reaching the quorum under `current` ([`Self::quorum_under`]) approves the request.
    pub fn approve(
        &self,
        user: &SlackUserId,
        current: &Governing,
        now: Timestamp,
    ) -> Result<Transition, TransitionError> {
        self.ensure_open(now)?;
        if self.has_voted(user) {
            return Err(TransitionError::DuplicateVote);
        }
        let mut r = self.next_under(current);
        r.approvals.push(Approval { user_id: user.clone(), at: now });
        r.notification.update_pending = true;
        let actor = Actor::slack(user.as_str());
        let mut events = vec![self
            .vote_draft(now, AuditKind::VoteApprove, actor.clone(), current, &r)
            .with("approvals", format!("{}/{}", r.approvals.len(), r.required_approvals))];
        if r.approvals.len() as u64 >= u64::from(r.required_approvals) {
            r.decided(Status::Approved, now);
            events.push(self.draft(now, AuditKind::RequestApproved, actor));
        }
        Ok(Transition {
            vote: Some(Vote {
                request_id: self.id,
                user_id: user.clone(),
                decision: VoteDecision::Approve,
                reason: None,
                at: now,
            }),
            request: r,
            events,
        })
    }

    /// An approver, authorized under `current`, denies: one deny is final.
    pub fn deny(
        &self,
        user: &SlackUserId,
        reason: &str,
        current: &Governing,
        now: Timestamp,
    ) -> Result<Transition, TransitionError> {
        self.ensure_open(now)?;
        if self.has_voted(user) {
            return Err(TransitionError::DuplicateVote);
        }
        let mut r = self.next_under(current);
        r.denial = Some(Denial { user_id: user.clone(), reason: reason.to_string(), at: now });
        r.decided(Status::Denied, now);
        let actor = Actor::slack(user.as_str());
        let events = vec![
            self.vote_draft(now, AuditKind::VoteDeny, actor.clone(), current, &r).with("reason", reason),
            self.draft(now, AuditKind::RequestDenied, actor).with("reason", reason),
        ];
        Ok(Transition {
            vote: Some(Vote {
                request_id: self.id,
                user_id: user.clone(),
                decision: VoteDecision::Deny,
                reason: Some(reason.to_string()),
                at: now,
            }),
            request: r,
            events,
        })
    }

    /// The requesting principal withdraws its request.
    pub fn cancel(&self, by_arn: &str, now: Timestamp) -> Result<Transition, TransitionError> {
        self.ensure_open(now)?;
        let mut r = self.next();
        r.decided(Status::Cancelled, now);
        Ok(Transition {
            events: vec![self.draft(now, AuditKind::RequestCancelled, Actor::aws(by_arn))],
            request: r,
            vote: None,
        })
    }

    /// The sweeper marks an overdue pending request expired.
    pub fn expire(&self, now: Timestamp) -> Result<Transition, TransitionError> {
        if self.status.is_terminal() {
            return Err(TransitionError::AlreadyDecided(self.status));
        }
        if now < self.expires_at {
            return Err(TransitionError::NotYetExpired);
        }
        let mut r = self.next();
        r.decided(Status::Expired, now);
        Ok(Transition {
            events: vec![self
                .draft(now, AuditKind::RequestExpired, Actor::system("sweeper"))
                .with("approvals", format!("{}/{}", self.approvals.len(), self.required_approvals))],
            request: r,
            vote: None,
        })
    }

    /// The status a reader should see: a pending request past its expiry reads `expired` even before the
    /// sweeper has written it.
    pub fn effective_status(&self, now: Timestamp) -> Status {
        if self.status == Status::Pending && now >= self.expires_at {
            Status::Expired
        } else {
            self.status
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    use crate::testing::sample_request as sample;

    fn u(s: &str) -> SlackUserId {
        SlackUserId::parse(s).unwrap()
    }

    const T0: Timestamp = Timestamp::from_unix_millis(1_795_621_462_000);

    #[test]
    fn quorum_of_distinct_approvers_approves() {
        let r = sample(2, T0);
        let t1 = r.approve(&u("UALICE01"), &Governing::as_stored(&r), T0.plus_seconds(1)).unwrap();
        assert_eq!(t1.request.status, Status::Pending);
        assert_eq!(t1.events.len(), 1);
        assert_eq!(
            t1.request.approve(&u("UALICE01"), &Governing::as_stored(&t1.request), T0),
            Err(TransitionError::DuplicateVote)
        );
        let t2 = t1.request.approve(&u("UBOB0001"), &Governing::as_stored(&t1.request), T0.plus_seconds(2)).unwrap();
        assert_eq!(t2.request.status, Status::Approved);
        assert_eq!(t2.request.decided_at, Some(T0.plus_seconds(2)));
        assert_eq!(
            t2.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
            vec![AuditKind::VoteApprove, AuditKind::RequestApproved]
        );
        assert_eq!(t2.request.version, 3);
    }

    #[test]
    fn one_deny_denies() {
        let r = sample(2, T0);
        let t = r.deny(&u("UALICE01"), "not now", &Governing::as_stored(&r), T0).unwrap();
        assert_eq!(t.request.status, Status::Denied);
        assert_eq!(t.request.denial.as_ref().unwrap().reason, "not now");
    }

    #[test]
    fn terminal_states_never_change() {
        let r = sample(1, T0);
        let approved = r.approve(&u("UALICE01"), &Governing::as_stored(&r), T0).unwrap().request;
        assert_eq!(
            approved.deny(&u("UBOB0001"), "x", &Governing::as_stored(&approved), T0),
            Err(TransitionError::AlreadyDecided(Status::Approved))
        );
        assert_eq!(approved.cancel("arn", T0), Err(TransitionError::AlreadyDecided(Status::Approved)));
        assert_eq!(approved.expire(T0.plus_seconds(99_999)), Err(TransitionError::AlreadyDecided(Status::Approved)));
    }

    #[test]
    fn expired_request_cannot_be_approved_even_before_the_sweeper() {
        let r = sample(1, T0);
        let late = r.expires_at;
        assert_eq!(r.approve(&u("UALICE01"), &Governing::as_stored(&r), late), Err(TransitionError::Expired));
        assert_eq!(r.effective_status(late), Status::Expired);
        assert_eq!(r.expire(late.plus_millis(-1)), Err(TransitionError::NotYetExpired));
        assert_eq!(r.expire(late).unwrap().request.status, Status::Expired);
    }

    fn governing(version: &str, required: u32) -> Governing {
        Governing {
            policy: PolicyRef { name: PolicyName::parse("deploy-production").unwrap(), version: version.into() },
            required_approvals: required,
            discounted: BTreeSet::new(),
        }
    }

    #[test]
    fn t31_a_tightened_policy_raises_the_quorum_of_a_pending_request() {
        let r = sample(1, T0);
        let tightened = governing("def", 2);
        let t = r.approve(&u("UALICE01"), &tightened, T0).unwrap();
        assert_eq!(t.request.status, Status::Pending, "one approval does not make a quorum of two");
        assert_eq!(t.request.required_approvals, 2);
        assert_eq!(t.request.policy, r.policy, "the stored policy stays the one the request was created under");
        let vote = &t.events[0];
        assert_eq!(vote.kind, AuditKind::VoteApprove);
        for (k, v) in [
            ("policy", "deploy-production"),
            ("policy_version", "abc"),
            ("current_policy", "deploy-production"),
            ("current_policy_version", "def"),
            ("required_approvals", "2"),
            ("previous_required_approvals", "1"),
            ("approvals", "1/2"),
        ] {
            assert_eq!(vote.details.get(k).map(String::as_str), Some(v), "{k}: {:?}", vote.details);
        }
        // A later vote under an older view of the policy cannot bring the quorum back down.
        let t2 = t.request.approve(&u("UBOB0001"), &governing("abc", 1), T0).unwrap();
        assert_eq!(t2.request.required_approvals, 2);
        assert_eq!(t2.request.status, Status::Approved);
    }

    #[test]
    fn t31_a_loosened_policy_keeps_the_stored_quorum() {
        let r = sample(2, T0);
        let t = r.approve(&u("UALICE01"), &governing("def", 1), T0).unwrap();
        assert_eq!(t.request.status, Status::Pending);
        assert_eq!(t.request.required_approvals, 2);
        assert_eq!(t.events[0].details.get("approvals").map(String::as_str), Some("1/2"));
        assert!(!t.events[0].details.contains_key("previous_required_approvals"));
        // A deny under a changed policy names both versions too.
        let d = r.deny(&u("UBOB0001"), "no", &governing("def", 3), T0).unwrap();
        assert_eq!(d.events[0].details.get("current_policy_version").map(String::as_str), Some("def"));
        assert_eq!(d.events[0].details.get("policy_version").map(String::as_str), Some("abc"));
        assert_eq!(d.request.required_approvals, 3);
    }

    #[test]
    fn auto_approved_creation_is_audited() {
        let r = sample(0, T0);
        let kinds: Vec<_> = r.creation_events().iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![AuditKind::RequestCreated, AuditKind::RequestAutoApproved]);
    }
}
