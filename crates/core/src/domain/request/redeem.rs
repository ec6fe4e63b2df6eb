//! Redemption (row 35): an approval is used at most once, by the principal that asked for it (and by the
//! same session when the policy binds it), before `usable_until`, for the artifact it was bound to. An
//! approval left unused past `usable_until` is marked so by the sweeper and can never be used.

use super::{ApprovalRequest, Status, Transition};
use crate::domain::audit::{Actor, AuditKind};
use crate::domain::ids::ArtifactDigest;
use crate::domain::principal::Principal;
use crate::domain::time::Timestamp;

/// Why a redemption was refused. Checked in this order; each maps to one stable API code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedeemRefusal {
    /// Row 42: a reviewer drill is never redeemed, whatever its status.
    #[error("this request is a reviewer drill: it can never be redeemed")]
    Drill,
    /// `bind_session`: the caller is the requesting principal, in another session.
    #[error("this request can only be redeemed by the session that created it ({expected})")]
    SessionMismatch { expected: String },
    #[error("the request is {}, not approved", .0.as_str())]
    NotApproved(Status),
    #[error("the approval was already redeemed at {} by {by}", .at.to_rfc3339())]
    AlreadyRedeemed { at: Timestamp, by: String },
    /// Past `usable_until` (or approved before redemption existed: `None`).
    #[error("the approval could only be used until {}", .0.map_or_else(|| "its decision".into(), Timestamp::to_rfc3339))]
    ApprovalExpired(Option<Timestamp>),
    #[error("{}", artifact_problem(.expected.as_ref(), .given.as_ref()))]
    ArtifactMismatch { expected: Option<ArtifactDigest>, given: Option<ArtifactDigest> },
}

fn artifact_problem(expected: Option<&ArtifactDigest>, given: Option<&ArtifactDigest>) -> String {
    match (expected, given) {
        (Some(e), None) => format!("artifact: the request is bound to {e}; give that digest to redeem it"),
        (Some(e), Some(g)) => format!("artifact: {g} is not the artifact the request is bound to ({e})"),
        (None, Some(g)) => format!("artifact: the request is bound to no artifact, but {g} was given"),
        (None, None) => "artifact: mismatch".into(),
    }
}

impl ApprovalRequest {
    /// `by` uses the approval, naming `artifact`. Its audit record, `request.redeemed`, is the one a receipt
    /// points to.
    pub fn redeem(
        &self,
        by: &Principal,
        artifact: Option<&ArtifactDigest>,
        now: Timestamp,
    ) -> Result<Transition, RedeemRefusal> {
        if self.drill.is_some() {
            return Err(RedeemRefusal::Drill);
        }
        if self.bind_session && by.session != self.requester.session {
            return Err(RedeemRefusal::SessionMismatch { expected: self.requester.arn.clone() });
        }
        let status = self.effective_status(now);
        if status != Status::Approved {
            return Err(RedeemRefusal::NotApproved(status));
        }
        if let Some(at) = self.redeemed_at {
            return Err(RedeemRefusal::AlreadyRedeemed { at, by: self.redeemed_by.clone().unwrap_or_default() });
        }
        match self.usable_until {
            Some(until) if now < until && self.unused_at.is_none() => {}
            until => return Err(RedeemRefusal::ApprovalExpired(until)),
        }
        if artifact != self.artifact.as_ref() {
            return Err(RedeemRefusal::ArtifactMismatch { expected: self.artifact.clone(), given: artifact.cloned() });
        }
        let mut r = self.next();
        r.redeemed_at = Some(now);
        r.redeemed_by = Some(by.arn.clone());
        r.notification.update_pending = true;
        let mut event = self.draft(now, AuditKind::RequestRedeemed, Actor::aws(&by.arn)).with("session", &by.arn);
        if let Some(a) = &self.artifact {
            event = event.with("artifact", a.as_str());
        }
        Ok(Transition { request: r, vote: None, events: vec![event] })
    }

    /// When this approval, still unused, must be looked at by the sweeper: its `usable_until`.
    pub(super) fn awaiting_use(&self) -> Option<Timestamp> {
        let waiting = self.status == Status::Approved && self.redeemed_at.is_none() && self.unused_at.is_none();
        self.usable_until.filter(|_| waiting)
    }

    /// Has this approval gone unused past `usable_until` without being marked so yet?
    pub fn unused_due(&self, now: Timestamp) -> bool {
        self.awaiting_use().is_some_and(|until| now >= until)
    }

    /// The sweeper marks an approval that was not used in time (`request.unused`); the message then says so.
    pub fn mark_unused(&self, now: Timestamp) -> Option<Transition> {
        if !self.unused_due(now) {
            return None;
        }
        let mut r = self.next();
        r.unused_at = Some(now);
        r.notification.update_pending = true;
        let until = self.usable_until.map(Timestamp::to_rfc3339).unwrap_or_default();
        let event = self.draft(now, AuditKind::RequestUnused, Actor::system("sweeper")).with("usable_until", until);
        Some(Transition { request: r, vote: None, events: vec![event] })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::domain::ids::SlackUserId;
    use crate::domain::request::Governing;
    use crate::testing::{sample_request, SAMPLE_CALLER};

    const T0: Timestamp = Timestamp::from_unix_millis(1_795_621_462_000);

    fn approved() -> ApprovalRequest {
        let r = sample_request(1, T0);
        let u = SlackUserId::parse("UALICE01").unwrap();
        r.approve(&u, &Governing::as_stored(&r), T0.plus_seconds(10)).unwrap().request
    }

    fn caller() -> Principal {
        Principal::parse(SAMPLE_CALLER).unwrap()
    }

    #[test]
    fn approval_opens_a_use_window_of_use_within() {
        let r = approved();
        assert_eq!(r.usable_until, Some(T0.plus_seconds(10 + 900)));
        assert_eq!(r.notification_due_at().map(|t| t <= T0.plus_seconds(910)), Some(true));
    }

    #[test]
    fn redeems_once_and_records_the_session() {
        let r = approved();
        let t = r.redeem(&caller(), None, T0.plus_seconds(20)).unwrap();
        assert_eq!(t.request.redeemed_at, Some(T0.plus_seconds(20)));
        assert_eq!(t.request.redeemed_by.as_deref(), Some(SAMPLE_CALLER));
        assert_eq!(t.events[0].kind, AuditKind::RequestRedeemed);
        assert!(matches!(
            t.request.redeem(&caller(), None, T0.plus_seconds(21)),
            Err(RedeemRefusal::AlreadyRedeemed { .. })
        ));
        assert_eq!(t.request.awaiting_use(), None, "a used approval is never marked unused");
    }

    #[test]
    fn refuses_a_pending_request_and_a_late_redeem() {
        let pending = sample_request(1, T0);
        assert_eq!(pending.redeem(&caller(), None, T0), Err(RedeemRefusal::NotApproved(Status::Pending)));
        let r = approved();
        let until = r.usable_until.unwrap();
        assert_eq!(r.redeem(&caller(), None, until), Err(RedeemRefusal::ApprovalExpired(Some(until))));
        assert!(r.redeem(&caller(), None, until.plus_millis(-1)).is_ok());
    }

    #[test]
    fn refuses_a_missing_or_different_artifact() {
        let mut r = approved();
        let bound = ArtifactDigest::of_bytes(b"build-1");
        r.artifact = Some(bound.clone());
        let other = ArtifactDigest::of_bytes(b"build-2");
        assert!(matches!(r.redeem(&caller(), None, T0), Err(RedeemRefusal::ArtifactMismatch { .. })));
        assert!(matches!(r.redeem(&caller(), Some(&other), T0), Err(RedeemRefusal::ArtifactMismatch { .. })));
        assert!(r.redeem(&caller(), Some(&bound), T0.plus_seconds(11)).is_ok());
        r.artifact = None;
        assert!(matches!(r.redeem(&caller(), Some(&bound), T0), Err(RedeemRefusal::ArtifactMismatch { .. })));
    }

    #[test]
    fn bound_session_refuses_another_session_of_the_same_role() {
        let mut r = approved();
        r.bind_session = true;
        let other = Principal::parse(&SAMPLE_CALLER.replace("/run-42", "/run-43")).unwrap();
        assert_eq!(other.identity(), caller().identity(), "same principal");
        assert!(matches!(r.redeem(&other, None, T0.plus_seconds(11)), Err(RedeemRefusal::SessionMismatch { .. })));
        assert!(r.redeem(&caller(), None, T0.plus_seconds(11)).is_ok());
    }

    #[test]
    fn an_unused_approval_is_marked_once_at_usable_until() {
        let r = approved();
        let until = r.usable_until.unwrap();
        assert!(r.mark_unused(until.plus_millis(-1)).is_none());
        let t = r.mark_unused(until).unwrap();
        assert_eq!(t.events[0].kind, AuditKind::RequestUnused);
        assert!(t.request.notification.update_pending);
        assert!(t.request.mark_unused(until.plus_seconds(60)).is_none());
        assert!(matches!(t.request.redeem(&caller(), None, until), Err(RedeemRefusal::ApprovalExpired(_))));
    }
}
