//! Decision events (issue 19): which audit records become an event, under which name and `detail-type`,
//! and what an event carries. docs/events.md is the contract.
//!
//! An event is made from an outbox entry: the sealed audit record and the request as that same write left
//! it, so `detail` shows the request as it was at the event, not as it is when the relay gets to it.
//! Nothing here does I/O; the stores write the entries, the relay (`service::events`) publishes them.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::audit::{AuditEvent, AuditKind};
use super::request::ApprovalRequest;
use super::time::Timestamp;
use super::view::RequestView;

/// The `source` of every event.
pub const SOURCE: &str = "countersign";

/// The event an audit record of `kind` is published as: its name (`request.approved`) and its
/// `detail-type` (`Countersign Request Approved`), or `None` for records that are not an audit-worthy
/// change of a request. The one place this is decided: the stores write outbox entries for exactly these.
pub fn event_of(kind: AuditKind) -> Option<(&'static str, &'static str)> {
    match kind {
        AuditKind::RequestCreated => Some(("request.created", "Countersign Request Created")),
        AuditKind::RequestAutoApproved => Some(("request.auto_approved", "Countersign Request Auto Approved")),
        AuditKind::RequestApproved => Some(("request.approved", "Countersign Request Approved")),
        AuditKind::RequestDenied => Some(("request.denied", "Countersign Request Denied")),
        AuditKind::RequestCancelled => Some(("request.cancelled", "Countersign Request Cancelled")),
        AuditKind::RequestExpired => Some(("request.expired", "Countersign Request Expired")),
        AuditKind::RequestRedeemed => Some(("request.redeemed", "Countersign Request Redeemed")),
        AuditKind::RequestUnused => Some(("request.unused", "Countersign Request Unused")),
        AuditKind::RequestBreakGlass => Some(("request.break_glass", "Countersign Request Break Glass")),
        AuditKind::RequestReviewed => Some(("request.reviewed", "Countersign Request Reviewed")),
        AuditKind::RequestReviewOverdue => Some(("request.review_overdue", "Countersign Request Review Overdue")),
        // Not a change of a request (a refusal creates none), or bookkeeping of votes, Slack and policies.
        AuditKind::RequestRefused
        | AuditKind::VoteApprove
        | AuditKind::VoteDeny
        | AuditKind::VoteDuplicate
        | AuditKind::VoteRejected
        | AuditKind::CallbackRejected
        | AuditKind::SlackPosted
        | AuditKind::SlackPostFailed
        | AuditKind::SlackUpdated
        | AuditKind::SlackReminded
        | AuditKind::PolicyChanged
        | AuditKind::PolicyDeleted => None,
    }
}

/// What a store writes, in the same atomic write as the change, for each sealed record that
/// [`event_of`] names: the record and the request as committed. Keyed by `record.seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub record: AuditEvent,
    pub request: ApprovalRequest,
}

impl OutboxEntry {
    /// The entries owed for `sealed`, the records of one write that left `request` as it is.
    pub fn for_write(sealed: &[AuditEvent], request: &ApprovalRequest) -> Vec<OutboxEntry> {
        sealed
            .iter()
            .filter(|e| event_of(e.kind).is_some() && e.request_id == Some(request.id))
            .map(|e| OutboxEntry { record: e.clone(), request: request.clone() })
            .collect()
    }

    pub fn seq(&self) -> u64 {
        self.record.seq
    }
}

/// One event as published: EventBridge's `Source`, `DetailType`, `Time` and `Detail`.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionEvent {
    /// The audit record's `seq`: events are published in this order.
    pub seq: u64,
    /// `request.approved`.
    pub name: &'static str,
    /// `Countersign Request Approved`.
    pub detail_type: &'static str,
    /// The audit record's `at`.
    pub time: Timestamp,
    /// The request object (as the API shows it) plus `event`, `event_id` and `audit: {seq, hash}`.
    pub detail: Value,
}

impl DecisionEvent {
    /// The event of an outbox entry, or `None` if its record is not one [`event_of`] names (an entry a
    /// newer version wrote for a kind this one does not know is then dropped by the relay, not published
    /// under a guessed name).
    pub fn of(entry: &OutboxEntry) -> Option<Self> {
        let (name, detail_type) = event_of(entry.record.kind)?;
        let mut detail = serde_json::to_value(RequestView::from(&entry.request)).unwrap_or_else(|_| json!({}));
        if let Value::Object(map) = &mut detail {
            map.insert("event".into(), Value::String(name.into()));
            map.insert("event_id".into(), Value::String(entry.record.hash.clone()));
            map.insert("audit".into(), json!({"seq": entry.record.seq, "hash": entry.record.hash}));
        }
        Some(Self { seq: entry.record.seq, name, detail_type, time: entry.record.at, detail })
    }

    /// The event as EventBridge delivers it to a target, less the fields only EventBridge knows (`id`,
    /// `account`, `region`): what local mode writes to `events.jsonl` and POSTs to its webhook.
    pub fn envelope(&self) -> Value {
        json!({
            "version": "0",
            "source": SOURCE,
            "detail-type": self.detail_type,
            "time": self.time.to_rfc3339(),
            "resources": [],
            "detail": self.detail,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::domain::audit::{Actor, AuditDraft};

    #[test]
    fn every_request_outcome_is_an_event_and_bookkeeping_is_not() {
        assert_eq!(event_of(AuditKind::RequestApproved), Some(("request.approved", "Countersign Request Approved")));
        assert_eq!(
            event_of(AuditKind::RequestAutoApproved),
            Some(("request.auto_approved", "Countersign Request Auto Approved"))
        );
        for k in [AuditKind::VoteApprove, AuditKind::SlackPosted, AuditKind::RequestRefused, AuditKind::PolicyChanged] {
            assert_eq!(event_of(k), None, "{k}");
        }
        // The name is the audit kind's stable string.
        for k in [
            AuditKind::RequestCreated,
            AuditKind::RequestAutoApproved,
            AuditKind::RequestApproved,
            AuditKind::RequestDenied,
            AuditKind::RequestCancelled,
            AuditKind::RequestExpired,
            AuditKind::RequestRedeemed,
            AuditKind::RequestUnused,
        ] {
            let (name, detail_type) = event_of(k).unwrap();
            assert_eq!(name, k.as_str());
            assert!(detail_type.starts_with("Countersign Request "), "{detail_type}");
        }
    }

    #[test]
    fn the_detail_is_the_request_object_with_the_audit_record_as_id() {
        let t0 = Timestamp::from_unix_millis(1_795_621_462_000);
        let r = crate::testing::sample_request(1, t0);
        let sealed = vec![
            AuditDraft::new(t0, AuditKind::RequestCreated, Actor::system("t"), Some(r.id)).seal(7, "00"),
            AuditDraft::new(t0, AuditKind::SlackPosted, Actor::system("t"), Some(r.id)).seal(8, "11"),
        ];
        let entries = OutboxEntry::for_write(&sealed, &r);
        assert_eq!(entries.len(), 1, "only the event-worthy record");
        let e = DecisionEvent::of(&entries[0]).unwrap();
        assert_eq!((e.seq, e.name, e.detail_type, e.time), (7, "request.created", "Countersign Request Created", t0));
        let view = serde_json::to_value(RequestView::from(&r)).unwrap();
        for (k, v) in view.as_object().unwrap() {
            assert_eq!(&e.detail[k], v, "{k} as the API shows it");
        }
        assert_eq!(e.detail["event_id"], sealed[0].hash);
        assert_eq!(e.detail["audit"], json!({"seq": 7, "hash": sealed[0].hash}));
        assert_eq!(e.envelope()["source"], "countersign");
        assert_eq!(e.envelope()["detail-type"], "Countersign Request Created");
    }
}
