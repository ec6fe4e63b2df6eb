//! Conversions between domain values and DynamoDB items, in one place.
//!
//! Each item keeps the whole domain value as JSON in `doc` (the source of truth on read) plus the few
//! top-level attributes that keys, indexes and condition expressions need. Reading checks that the copies
//! agree with `doc`: an item whose parts disagree or do not parse is `StoreError::Corrupt`, never skipped.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::keys::*;
use countersign_core::domain::{ApprovalRequest, AuditEvent, Policy, RequestId, Status, Timestamp, Vote};
use countersign_core::ports::StoreError;

pub type Item = HashMap<String, AttributeValue>;

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn to_json<T: Serialize>(what: &str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Other(format!("cannot encode {what}: {e}")))
}

fn corrupt(item: &Item, problem: impl std::fmt::Display) -> StoreError {
    let key = match (item.get(PK), item.get(SK).or_else(|| item.get(SEQ))) {
        (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => format!("{pk}/{sk}"),
        (Some(AttributeValue::S(pk)), Some(AttributeValue::N(sk))) => format!("{pk}/{sk}"),
        (Some(AttributeValue::S(pk)), _) => pk.clone(),
        _ => "(item without a key)".to_string(),
    };
    StoreError::Corrupt(format!("DynamoDB item {key}: {problem}"))
}

pub fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        Some(_) => Err(corrupt(item, format_args!("attribute {name} is not a string"))),
        None => Err(corrupt(item, format_args!("attribute {name} is missing"))),
    }
}

pub fn get_i64(item: &Item, name: &str) -> Result<i64, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => {
            v.parse().map_err(|_| corrupt(item, format_args!("attribute {name} is not an integer")))
        }
        Some(_) => Err(corrupt(item, format_args!("attribute {name} is not a number"))),
        None => Err(corrupt(item, format_args!("attribute {name} is missing"))),
    }
}

pub fn get_u64(item: &Item, name: &str) -> Result<u64, StoreError> {
    let v = get_i64(item, name)?;
    u64::try_from(v).map_err(|_| corrupt(item, format_args!("attribute {name} is negative")))
}

fn doc<T: DeserializeOwned>(item: &Item, what: &str) -> Result<T, StoreError> {
    let json = get_s(item, DOC)?;
    serde_json::from_str(json).map_err(|e| corrupt(item, format_args!("{what} does not parse: {e}")))
}

// --- requests --------------------------------------------------------------------------------------------

/// The request item, with every index attribute derived from the request (sparse ones omitted when they
/// do not apply, so a full `Put` also removes the request from those indexes).
pub fn request_item(r: &ApprovalRequest) -> Result<Item, StoreError> {
    let mut item = Item::new();
    item.insert(PK.into(), s(request_pk(&r.id)));
    item.insert(SK.into(), s(REQUEST_SK));
    item.insert(DOC.into(), s(to_json("request", r)?));
    item.insert(STATUS.into(), s(r.status.as_str()));
    item.insert(VERSION.into(), n(r.version));
    item.insert(EXPIRES_AT.into(), n(r.expires_at.unix_millis()));
    item.insert(TTL.into(), n(gc_ttl_seconds(r.expires_at)));
    item.insert(ACTION.into(), s(r.action.as_str()));
    item.insert(ENVIRONMENT.into(), s(r.environment.as_str()));
    item.insert(GSI1_PK.into(), s(&r.requester.principal));
    item.insert(GSI1_SK.into(), s(time_id_key(r.created_at, &r.id)));
    if r.status == Status::Pending {
        item.insert(GSI2_PK.into(), s(PENDING_GSI_PK));
        item.insert(GSI2_SK.into(), s(time_id_key(r.expires_at, &r.id)));
    }
    if let Some(due) = r.notification_due_at() {
        item.insert(GSI3_PK.into(), s(DUE_GSI_PK));
        item.insert(GSI3_SK.into(), s(time_id_key(due, &r.id)));
    }
    Ok(item)
}

/// Reads a request item back, checking that the attributes conditions rely on agree with `doc`.
pub fn request_from_item(item: &Item) -> Result<ApprovalRequest, StoreError> {
    let r: ApprovalRequest = doc(item, "request")?;
    if get_s(item, PK)? != request_pk(&r.id) {
        return Err(corrupt(item, format_args!("holds request {} under another key", r.id)));
    }
    if get_s(item, STATUS)? != r.status.as_str() {
        return Err(corrupt(item, "status attribute disagrees with the document"));
    }
    if get_u64(item, VERSION)? != r.version {
        return Err(corrupt(item, "version attribute disagrees with the document"));
    }
    if get_i64(item, EXPIRES_AT)? != r.expires_at.unix_millis() {
        return Err(corrupt(item, "expires_at attribute disagrees with the document"));
    }
    // Older items have no copies of these two; where they are, they must agree.
    for (name, value) in [(ACTION, r.action.as_str()), (ENVIRONMENT, r.environment.as_str())] {
        if item.contains_key(name) && get_s(item, name)? != value {
            return Err(corrupt(item, format_args!("{name} attribute disagrees with the document")));
        }
    }
    Ok(r)
}

pub fn vote_item(v: &Vote, expires_at: Timestamp) -> Result<Item, StoreError> {
    let mut item = Item::new();
    item.insert(PK.into(), s(request_pk(&v.request_id)));
    item.insert(SK.into(), s(vote_sk(&v.user_id)));
    item.insert(DOC.into(), s(to_json("vote", v)?));
    item.insert(TTL.into(), n(gc_ttl_seconds(expires_at)));
    Ok(item)
}

#[cfg(test)]
pub fn vote_from_item(item: &Item) -> Result<Vote, StoreError> {
    doc(item, "vote")
}

/// The idempotency item of a request, if it has a key.
pub fn idempotency_item(r: &ApprovalRequest) -> Option<Item> {
    let key = r.idempotency_key.as_ref()?;
    let mut item = Item::new();
    item.insert(PK.into(), s(idempotency_pk(&r.requester.principal, key)));
    item.insert(SK.into(), s(IDEMPOTENCY_SK));
    item.insert(REQUEST_ID.into(), s(r.id.to_string()));
    item.insert(TTL.into(), n(gc_ttl_seconds(r.expires_at)));
    Some(item)
}

pub fn idempotency_request_id(item: &Item) -> Result<RequestId, StoreError> {
    RequestId::parse(get_s(item, REQUEST_ID)?).map_err(|e| corrupt(item, e))
}

// --- policies --------------------------------------------------------------------------------------------

pub fn policy_item(p: &Policy) -> Result<Item, StoreError> {
    let mut item = Item::new();
    item.insert(PK.into(), s(POLICY_SET_PK));
    item.insert(SK.into(), s(policy_sk(&p.name)));
    item.insert(DOC.into(), s(to_json("policy", p)?));
    item.insert(VERSION.into(), s(p.version()));
    Ok(item)
}

pub fn policy_from_item(item: &Item) -> Result<Policy, StoreError> {
    let p: Policy = doc(item, "policy")?;
    if get_s(item, PK)? != POLICY_SET_PK || get_s(item, SK)? != policy_sk(&p.name) {
        return Err(corrupt(item, format_args!("holds policy {} under another key", p.name)));
    }
    Ok(p)
}

/// The generation on the generation item; 0 when there is no item yet (no policy was ever written).
pub fn generation_from_item(item: Option<&Item>) -> Result<u64, StoreError> {
    match item {
        None => Ok(0),
        Some(item) => get_u64(item, GENERATION),
    }
}

// --- audit -----------------------------------------------------------------------------------------------

pub fn audit_item(e: &AuditEvent) -> Result<Item, StoreError> {
    let mut item = Item::new();
    item.insert(PK.into(), s(CHAIN_PK));
    item.insert(SEQ.into(), n(e.seq));
    item.insert(DOC.into(), s(to_json("audit event", e)?));
    if let Some(id) = e.request_id {
        item.insert(REQUEST_ID.into(), s(id.to_string()));
    }
    Ok(item)
}

/// An audit record as stored, with the `seq` of its key.
///
/// The record is returned exactly as its `doc` says, even when that disagrees with the key: a moved or
/// edited record is for the chain verifier to name (`audit verify`), not for the store to hide or fix.
pub fn audit_from_item(item: &Item) -> Result<(u64, AuditEvent), StoreError> {
    let key_seq = get_u64(item, SEQ)?;
    let e: AuditEvent = doc(item, "audit record")?;
    Ok((key_seq, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use countersign_core::domain::audit::seal_after;
    use countersign_core::domain::request::VoteDecision;
    use countersign_core::domain::request::{Governing, NotificationState};
    use countersign_core::domain::*;
    use countersign_core::testing::sample_request as sample;

    const T0: Timestamp = Timestamp::from_unix_millis(1_795_621_462_000);

    fn text(item: &Item, name: &str) -> String {
        get_s(item, name).unwrap().to_string()
    }

    #[test]
    fn request_round_trips_through_its_item() {
        let mut r = sample(2, T0);
        r.details.insert("commit".into(), "abc123".into());
        let item = request_item(&r).unwrap();
        assert_eq!(request_from_item(&item).unwrap(), r);
        assert_eq!(text(&item, PK), format!("REQ#{}", r.id));
        assert_eq!(text(&item, SK), "REQ");
        assert_eq!(text(&item, STATUS), "pending");
        assert_eq!(get_u64(&item, VERSION).unwrap(), 1);
        assert_eq!(get_i64(&item, EXPIRES_AT).unwrap(), r.expires_at.unix_millis());
        assert_eq!(get_i64(&item, TTL).unwrap(), r.expires_at.unix_seconds() + 400 * 86_400);
        assert_eq!(text(&item, GSI1_PK), "arn:aws:iam::111122223333:role/github-deploy");
        assert_eq!(text(&item, GSI1_SK), format!("{}#{}", time_key(T0), r.id));
    }

    #[test]
    fn pending_index_holds_only_pending_requests() {
        let r = sample(1, T0);
        let item = request_item(&r).unwrap();
        assert_eq!(text(&item, GSI2_PK), "PENDING");
        assert_eq!(text(&item, GSI2_SK), format!("{}#{}", time_key(r.expires_at), r.id));
        let approved =
            r.approve(&SlackUserId::parse("UALICE01").unwrap(), &Governing::as_stored(&r), T0).unwrap().request;
        let item = request_item(&approved).unwrap();
        assert!(!item.contains_key(GSI2_PK) && !item.contains_key(GSI2_SK));
    }

    #[test]
    fn notify_due_index_holds_only_requests_whose_message_is_owed() {
        let mut r = sample(1, T0);
        // Never posted: due at creation.
        let item = request_item(&r).unwrap();
        assert_eq!(text(&item, GSI3_PK), "DUE");
        assert_eq!(text(&item, GSI3_SK), format!("{}#{}", time_key(T0), r.id));
        // Retrying: due at the next attempt.
        r.notification.state = NotificationState::Retrying;
        r.notification.next_attempt_at = Some(T0.plus_seconds(30));
        let item = request_item(&r).unwrap();
        assert_eq!(text(&item, GSI3_SK), format!("{}#{}", time_key(T0.plus_seconds(30)), r.id));
        // Posted and current: not in the index.
        r.notification.state = NotificationState::Posted;
        r.notification.next_attempt_at = None;
        let item = request_item(&r).unwrap();
        assert!(!item.contains_key(GSI3_PK) && !item.contains_key(GSI3_SK));
        // Posted but an update is owed: back in.
        r.notification.update_pending = true;
        assert_eq!(text(&request_item(&r).unwrap(), GSI3_PK), "DUE");
    }

    #[test]
    fn request_item_whose_copies_disagree_with_doc_is_corrupt() {
        let r = sample(1, T0);
        let base = request_item(&r).unwrap();
        for (attr, value) in [
            (STATUS, s("approved")),
            (VERSION, n(2)),
            (EXPIRES_AT, n(r.expires_at.unix_millis() + 1)),
            (ACTION, s("rollback")),
            (ENVIRONMENT, s("staging")),
            (ACTION, n(1)),
            (PK, s(request_pk(&RequestId::from_parts(1, 1)))),
            (DOC, s("{not json")),
            (DOC, n(1)),
        ] {
            let mut item = base.clone();
            item.insert(attr.into(), value);
            let err = request_from_item(&item).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt(_)), "{attr}: {err:?}");
        }
        let mut item = base.clone();
        item.remove(DOC);
        assert!(matches!(request_from_item(&item), Err(StoreError::Corrupt(_))));
        // An item written before the copies existed still reads.
        let mut item = base.clone();
        item.remove(ACTION);
        item.remove(ENVIRONMENT);
        assert_eq!(request_from_item(&item).unwrap(), r);
    }

    #[test]
    fn vote_and_idempotency_items_have_their_keys() {
        let mut r = sample(1, T0);
        let t = r.approve(&SlackUserId::parse("UALICE01").unwrap(), &Governing::as_stored(&r), T0).unwrap();
        let v = t.vote.unwrap();
        let item = vote_item(&v, r.expires_at).unwrap();
        assert_eq!(text(&item, PK), format!("REQ#{}", r.id));
        assert_eq!(text(&item, SK), "VOTE#UALICE01");
        assert_eq!(vote_from_item(&item).unwrap().decision, VoteDecision::Approve);

        assert!(idempotency_item(&r).is_none());
        r.idempotency_key = Some(IdempotencyKey::parse("ci-run-42").unwrap());
        let item = idempotency_item(&r).unwrap();
        assert_eq!(text(&item, PK), "IDEM#arn:aws:iam::111122223333:role/github-deploy#ci-run-42");
        assert_eq!(text(&item, SK), "IDEM");
        assert_eq!(idempotency_request_id(&item).unwrap(), r.id);
        let mut bad = item.clone();
        bad.insert(REQUEST_ID.into(), s("nope"));
        assert!(matches!(idempotency_request_id(&bad), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn audit_event_round_trips_and_request_id_feeds_the_sparse_index() {
        let id = RequestId::from_parts(5, 5);
        let events = seal_after(
            None,
            vec![
                AuditDraft::new(T0, AuditKind::RequestCreated, Actor::system("t"), Some(id)).with("k", "v"),
                AuditDraft::new(T0, AuditKind::PolicyChanged, Actor::cli("me"), None),
            ],
        );
        let with = audit_item(&events[0]).unwrap();
        assert_eq!(text(&with, PK), "CHAIN");
        assert_eq!(get_u64(&with, SEQ).unwrap(), 1);
        assert_eq!(text(&with, REQUEST_ID), id.to_string());
        assert_eq!(audit_from_item(&with).unwrap(), (1, events[0].clone()));
        let without = audit_item(&events[1]).unwrap();
        assert!(!without.contains_key(REQUEST_ID));
        assert_eq!(audit_from_item(&without).unwrap(), (2, events[1].clone()));

        let mut bad = with.clone();
        bad.insert(DOC.into(), s(r#"{"seq":1}"#));
        assert!(matches!(audit_from_item(&bad), Err(StoreError::Corrupt(_))));
        let mut bad = with;
        bad.insert(SEQ.into(), s("1"));
        assert!(matches!(audit_from_item(&bad), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn policy_item_is_keyed_by_name_and_checked_on_read() {
        let src = include_str!("../../../../infra/policies.example.yaml");
        let p = match countersign_core::domain::policy::parse_policies(src) {
            Ok(mut ps) => ps.remove(0),
            Err(e) => panic!("fixture policy does not parse: {e:?}"),
        };
        let item = policy_item(&p).unwrap();
        assert_eq!(text(&item, PK), POLICY_SET_PK);
        assert_eq!(text(&item, SK), "POLICY#deploy-production");
        assert_eq!(text(&item, VERSION), p.version());
        assert_eq!(policy_from_item(&item).unwrap(), p);
        let mut moved = item;
        moved.insert(SK.into(), s("POLICY#other"));
        assert!(matches!(policy_from_item(&moved), Err(StoreError::Corrupt(_))));
    }
}
