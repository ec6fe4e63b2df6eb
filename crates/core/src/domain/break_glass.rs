//! Break-glass (threat row 41): a request a policy lets through at once, in an emergency, on the condition
//! that it is shouted about and reviewed afterwards.
//!
//! What a policy allows ([`BreakGlassPolicy`]), what a break-glass request carries ([`BreakGlass`]), the
//! review it owes ([`Review`]) and every transition of that review live here; the store only counts uses
//! per principal and UTC day ([`ApprovalRequest::break_glass_day`]) in the create transaction.

use serde::{Deserialize, Serialize};

use super::audit::{Actor, AuditDraft, AuditKind};
use super::ids::{SlackChannelId, SlackGroupId, SlackUserId};
use super::request::{ApprovalRequest, Transition};
use super::time::Timestamp;

/// `max_per_day` when the policy does not say.
pub const DEFAULT_MAX_PER_DAY: u32 = 3;
/// The largest `max_per_day` a policy may set: break-glass is for emergencies, not a second approval path.
pub const MAX_MAX_PER_DAY: u32 = 20;
/// `review_within` when the policy does not say.
pub const DEFAULT_REVIEW_WITHIN_SECONDS: u64 = 24 * 3600;
pub const MIN_REVIEW_WITHIN_SECONDS: u64 = 5 * 60;
pub const MAX_REVIEW_WITHIN_SECONDS: u64 = 7 * 24 * 3600;
/// A break-glass request must say why, in at least this many characters (`400 reason_required`).
pub const MIN_REASON_CHARS: usize = 20;
/// How long whoever claims a notice (the alert, the escalation) owns it before another may try.
pub const NOTICE_LEASE_SECONDS: i64 = 60;
/// How long the creating call owns the alert before the sweeper may post it.
pub const FIRST_ALERT_LEASE_SECONDS: i64 = 30;

/// Who is mentioned on a break-glass post and its escalation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    #[serde(default)]
    pub users: Vec<SlackUserId>,
    #[serde(default)]
    pub groups: Vec<SlackGroupId>,
}

/// A policy's `break_glass` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassPolicy {
    /// Where every break-glass is announced, besides the policy's own channel.
    pub channel: SlackChannelId,
    #[serde(default)]
    pub notify: Notify,
    /// Per principal and UTC day.
    pub max_per_day: u32,
    /// Seconds after the break-glass by which an approver must have reviewed it.
    pub review_within: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    Pending,
    Ok,
    Flagged,
    Overdue,
}

impl ReviewStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ok => "ok",
            Self::Flagged => "flagged",
            Self::Overdue => "overdue",
        }
    }

    /// Still waiting for a reviewer (overdue ones too: a late review is still a review).
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Overdue)
    }
}

/// The review a break-glass owes, as the request object shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub status: ReviewStatus,
    pub by: Option<SlackUserId>,
    pub at: Option<Timestamp>,
    pub reason: Option<String>,
}

/// What a break-glass request carries beyond a normal one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlass {
    /// The break-glass channel (the policy's `break_glass.channel` at creation).
    pub channel: SlackChannelId,
    pub notify: Notify,
    /// Counted against in the create transaction (the policy's at creation).
    pub max_per_day: u32,
    pub review_due_at: Timestamp,
    pub review: Review,
    /// The announcement in the break-glass channel, once posted.
    pub alert_ts: Option<String>,
    /// The reminder at half of `review_within` was claimed.
    #[serde(default)]
    pub reminded: bool,
    /// The escalation at the end of the window is owed (claimed with `request.review_overdue`, not yet posted).
    #[serde(default)]
    pub escalation_owed: bool,
    /// Who owns the next notice (alert or escalation) until then.
    #[serde(default)]
    pub notice_lease_until: Option<Timestamp>,
}

/// A reviewer's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Flag { reason: String },
}

/// Why a review was refused by the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("this request is not a break-glass")]
    NotBreakGlass,
    #[error("this break-glass was already reviewed ({})", .0.as_str())]
    AlreadyReviewed(ReviewStatus),
}

/// What the sweeper owes a break-glass request at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewStep {
    /// Post the announcement in the break-glass channel (the creating call did not).
    Alert,
    /// Remind approvers in the message's thread (half of the window).
    Remind,
    /// Mark the review overdue and audit `request.review_overdue` (end of the window).
    MarkOverdue,
    /// Post the escalation mentioning `notify` (claimed by `MarkOverdue`).
    Escalate,
}

impl BreakGlass {
    /// A new break-glass under `policy`, created at `now`.
    pub fn new(policy: &BreakGlassPolicy, now: Timestamp) -> Self {
        Self {
            channel: policy.channel.clone(),
            notify: policy.notify.clone(),
            max_per_day: policy.max_per_day,
            review_due_at: now.plus_seconds(i64::try_from(policy.review_within).unwrap_or(i64::MAX)),
            review: Review { status: ReviewStatus::Pending, by: None, at: None, reason: None },
            alert_ts: None,
            reminded: false,
            escalation_owed: false,
            notice_lease_until: Some(now.plus_seconds(FIRST_ALERT_LEASE_SECONDS)),
        }
    }
}

impl ApprovalRequest {
    /// The UTC day (`YYYY-MM-DD`) a break-glass counts against `max_per_day` on: its creation's.
    pub fn break_glass_day(&self) -> String {
        self.created_at.to_rfc3339().chars().take(10).collect()
    }

    fn half_review_at(&self, b: &BreakGlass) -> Timestamp {
        let half = (b.review_due_at.unix_millis() - self.created_at.unix_millis()) / 2;
        self.created_at.plus_millis(half)
    }

    /// What the sweeper owes this request's review at `now`, the most urgent first; `None` if nothing.
    pub fn review_step(&self, now: Timestamp) -> Option<ReviewStep> {
        let b = self.break_glass.as_ref()?;
        let leased = b.notice_lease_until.is_some_and(|t| t > now);
        if b.alert_ts.is_none() && !leased {
            return Some(ReviewStep::Alert);
        }
        if b.escalation_owed && !leased {
            return Some(ReviewStep::Escalate);
        }
        if b.review.status == ReviewStatus::Pending && now >= b.review_due_at {
            return Some(ReviewStep::MarkOverdue);
        }
        if b.review.status == ReviewStatus::Pending && !b.reminded && now >= self.half_review_at(b) {
            return Some(ReviewStep::Remind);
        }
        None
    }

    /// When [`Self::review_step`] will next have something (both stores index requests by
    /// [`Self::notification_due_at`], which includes this).
    pub fn review_step_at(&self) -> Option<Timestamp> {
        let b = self.break_glass.as_ref()?;
        let lease = b.notice_lease_until.unwrap_or(self.created_at);
        if b.alert_ts.is_none() || b.escalation_owed {
            return Some(lease);
        }
        match b.review.status {
            ReviewStatus::Pending if !b.reminded => Some(self.half_review_at(b)),
            ReviewStatus::Pending => Some(b.review_due_at),
            _ => None,
        }
    }

    /// The creation's `request.break_glass` record.
    pub(super) fn break_glass_event(&self, b: &BreakGlass) -> AuditDraft {
        AuditDraft::new(self.created_at, AuditKind::RequestBreakGlass, Actor::aws(&self.requester.arn), Some(self.id))
            .with("policy", self.policy.name.as_str())
            .with("principal", &self.requester.principal)
            .with("reason", self.reason.clone().unwrap_or_default())
            .with("channel", b.channel.as_str())
            .with("review_due_at", b.review_due_at.to_rfc3339())
    }

    /// An approver (authorized by the service) reviews the break-glass.
    pub fn review(&self, user: &SlackUserId, verdict: &Verdict, now: Timestamp) -> Result<Transition, ReviewError> {
        let b = self.break_glass.as_ref().ok_or(ReviewError::NotBreakGlass)?;
        if !b.review.status.is_open() {
            return Err(ReviewError::AlreadyReviewed(b.review.status));
        }
        let mut r = self.clone();
        r.version += 1;
        r.notification.update_pending = true;
        let (status, reason) = match verdict {
            Verdict::Ok => (ReviewStatus::Ok, None),
            Verdict::Flag { reason } => (ReviewStatus::Flagged, Some(reason.clone())),
        };
        let late = b.review.status == ReviewStatus::Overdue;
        if let Some(nb) = r.break_glass.as_mut() {
            nb.review = Review { status, by: Some(user.clone()), at: Some(now), reason: reason.clone() };
            // Reviewed before the escalation went out: there is nobody left to escalate to.
            nb.escalation_owed = false;
        }
        let mut d = AuditDraft::new(now, AuditKind::RequestReviewed, Actor::slack(user.as_str()), Some(self.id))
            .with("policy", self.policy.name.as_str())
            .with("principal", &self.requester.principal)
            .with("review", status.as_str());
        if let Some(reason) = reason {
            d = d.with("reason", reason);
        }
        if late {
            d = d.with("late", "true");
        }
        Ok(Transition { request: r, vote: None, events: vec![d] })
    }

    /// The sweeper marks an unreviewed break-glass overdue at the end of its window, and owes the escalation.
    pub fn mark_review_overdue(&self, now: Timestamp) -> Option<Transition> {
        let b = self.break_glass.as_ref()?;
        if b.review.status != ReviewStatus::Pending || now < b.review_due_at {
            return None;
        }
        let mut r = self.clone();
        r.version += 1;
        r.notification.update_pending = true;
        if let Some(nb) = r.break_glass.as_mut() {
            nb.review.status = ReviewStatus::Overdue;
            nb.escalation_owed = true;
            nb.notice_lease_until = None;
        }
        let d = AuditDraft::new(now, AuditKind::RequestReviewOverdue, Actor::system("sweeper"), Some(self.id))
            .with("policy", self.policy.name.as_str())
            .with("principal", &self.requester.principal)
            .with("review_due_at", b.review_due_at.to_rfc3339());
        Some(Transition { request: r, vote: None, events: vec![d] })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::sample_request;

    const T0: Timestamp = Timestamp::from_unix_millis(1_795_621_462_000);

    fn policy() -> BreakGlassPolicy {
        BreakGlassPolicy {
            channel: SlackChannelId::parse("C0BREAKGL").unwrap(),
            notify: Notify { users: vec![SlackUserId::parse("USECLEAD1").unwrap()], groups: vec![] },
            max_per_day: 3,
            review_within: 3600,
        }
    }

    fn break_glass() -> ApprovalRequest {
        let mut r = sample_request(0, T0);
        r.break_glass = Some(BreakGlass::new(&policy(), T0));
        r
    }

    fn alerted(mut r: ApprovalRequest) -> ApprovalRequest {
        let b = r.break_glass.as_mut().unwrap();
        b.alert_ts = Some("1.2".into());
        b.notice_lease_until = None;
        r
    }

    #[test]
    fn the_review_falls_due_at_half_the_window_then_overdue_at_its_end() {
        let r = break_glass();
        assert_eq!(r.review_step(T0), None, "the creating call owns the alert first");
        assert_eq!(r.review_step(T0.plus_seconds(FIRST_ALERT_LEASE_SECONDS)), Some(ReviewStep::Alert));
        let r = alerted(r);
        assert_eq!(r.review_step(T0.plus_seconds(1799)), None);
        assert_eq!(r.review_step_at(), Some(T0.plus_seconds(1800)));
        assert_eq!(r.review_step(T0.plus_seconds(1800)), Some(ReviewStep::Remind));
        assert_eq!(r.review_step(T0.plus_seconds(3600)), Some(ReviewStep::MarkOverdue));
        let t = r.mark_review_overdue(T0.plus_seconds(3600)).unwrap();
        assert_eq!(t.events[0].kind, AuditKind::RequestReviewOverdue);
        assert_eq!(t.request.break_glass.as_ref().unwrap().review.status, ReviewStatus::Overdue);
        assert_eq!(t.request.review_step(T0.plus_seconds(3600)), Some(ReviewStep::Escalate));
        assert!(t.request.mark_review_overdue(T0.plus_seconds(3601)).is_none(), "marked once");
    }

    #[test]
    fn a_review_is_recorded_once_even_when_late() {
        let r = alerted(break_glass());
        let u = SlackUserId::parse("UALICE01").unwrap();
        let over = r.mark_review_overdue(T0.plus_seconds(3600)).unwrap().request;
        let t = over.review(&u, &Verdict::Flag { reason: "nobody was paged".into() }, T0.plus_seconds(4000)).unwrap();
        let review = &t.request.break_glass.as_ref().unwrap().review;
        assert_eq!((review.status, review.reason.as_deref()), (ReviewStatus::Flagged, Some("nobody was paged")));
        assert_eq!(t.events[0].details.get("late").map(String::as_str), Some("true"));
        assert_eq!(
            t.request.review(&u, &Verdict::Ok, T0).unwrap_err(),
            ReviewError::AlreadyReviewed(ReviewStatus::Flagged)
        );
        assert_eq!(t.request.review_step(T0.plus_seconds(9999)), None, "reviewed: no escalation left to post");
        assert_eq!(sample_request(1, T0).review(&u, &Verdict::Ok, T0).unwrap_err(), ReviewError::NotBreakGlass);
    }

    #[test]
    fn the_day_counted_is_the_utc_day_of_creation() {
        assert_eq!(break_glass().break_glass_day(), T0.to_rfc3339()[..10]);
        assert_eq!(policy().notify.users, [SlackUserId::parse("USECLEAD1").unwrap()]);
    }
}
