//! Every table key, index name and attribute name of the DynamoDB store, in one place.
//!
//! The SAM template, the IAM policies and the tests that tamper with items all depend on these exact
//! strings; `docs/dynamodb-keys.md` describes them. Changing one is a data migration, not a refactor.

use countersign_core::domain::{IdempotencyKey, PolicyName, RequestId, SlackUserId, Timestamp};

// --- attribute names -------------------------------------------------------------------------------------

/// Partition key of every table (S).
pub const PK: &str = "pk";
/// Sort key of the requests and policies tables (S).
pub const SK: &str = "sk";
/// The policy set's generation (N), on the generation item.
pub const GENERATION: &str = "generation";
/// Sort key of the audit table: the record's position in the chain (N).
pub const SEQ: &str = "seq";
/// The domain value as JSON (S): request, vote, policy or audit event. The source of truth on read.
pub const DOC: &str = "doc";
/// Request status (S), copied out of `doc` for condition expressions.
pub const STATUS: &str = "status";
/// Request or policy version (N for requests, S for policies).
pub const VERSION: &str = "version";
/// Request expiry in unix milliseconds (N), copied out of `doc` for condition expressions.
pub const EXPIRES_AT: &str = "expires_at";
/// Garbage-collection time in unix seconds (N); never used to decide anything.
pub const TTL: &str = "ttl";
/// Request id (S): on idempotency items, and on audit records that concern a request (index `by-request`).
pub const REQUEST_ID: &str = "request_id";
/// Request action and environment (S), copied out of `doc` so that a request's history can be counted from
/// the `by-principal` index without reading documents. Absent on items written before 2026-12.
pub const ACTION: &str = "action";
pub const ENVIRONMENT: &str = "environment";
/// Pending counter value (N).
pub const COUNT: &str = "n";

pub const GSI1_PK: &str = "gsi1pk";
pub const GSI1_SK: &str = "gsi1sk";
pub const GSI2_PK: &str = "gsi2pk";
pub const GSI2_SK: &str = "gsi2sk";
pub const GSI3_PK: &str = "gsi3pk";
pub const GSI3_SK: &str = "gsi3sk";

// --- index names -----------------------------------------------------------------------------------------

/// Requests table: `gsi1pk` = principal identity, `gsi1sk` = created_at + id.
pub const INDEX_BY_PRINCIPAL: &str = "by-principal";
/// Requests table, sparse: only pending requests; `gsi2sk` = expires_at + id.
pub const INDEX_PENDING: &str = "pending";
/// Requests table, sparse: only requests whose Slack message is owed; `gsi3sk` = due time + id.
pub const INDEX_NOTIFY_DUE: &str = "notify-due";
/// Audit table, sparse: only records with a request id; (`request_id`, `seq`).
pub const INDEX_BY_REQUEST: &str = "by-request";

// --- constant key values ---------------------------------------------------------------------------------

pub const REQUEST_SK: &str = "REQ";
pub const IDEMPOTENCY_SK: &str = "IDEM";
pub const COUNTER_SK: &str = "COUNT";
pub const PENDING_GSI_PK: &str = "PENDING";
pub const DUE_GSI_PK: &str = "DUE";
/// The one partition of the policies table: every policy and the generation item, read by one `Query`.
pub const POLICY_SET_PK: &str = "POLICIES";
/// Sort key of the generation item, raised by one in the transaction of every policy change. It sorts
/// before every `POLICY#` key.
pub const GENERATION_SK: &str = "GENERATION";
/// The one partition of the audit table: the chain is totally ordered by `seq`.
pub const CHAIN_PK: &str = "CHAIN";
/// The partition of the requests table holding the decision events owed (issue 19), sorted by
/// [`outbox_sk`]. Only the sweeper may delete there (the template's condition on `dynamodb:LeadingKeys`).
pub const OUTBOX_PK: &str = "OUTBOX";

/// How long request, vote and idempotency items stay after the request's expiry before DynamoDB TTL may
/// delete them. TTL is garbage collection only: expiry is enforced by `expires_at` in every condition.
pub const RETENTION_AFTER_EXPIRY_SECONDS: i64 = 400 * 24 * 3600;

/// Width of zero-padded millisecond times in sort keys (good until the year 33658).
pub const TIME_KEY_WIDTH: usize = 15;
const TIME_KEY_MAX: i64 = 999_999_999_999_999;

// --- key builders ----------------------------------------------------------------------------------------

/// `REQ#{id}`: the partition holding a request and its votes.
pub fn request_pk(id: &RequestId) -> String {
    format!("REQ#{id}")
}

/// `POLICY#{name}`: one policy in the policy-set partition.
pub fn policy_sk(name: &PolicyName) -> String {
    format!("POLICY#{name}")
}

/// `VOTE#{user}`: one vote per Slack user per request.
pub fn vote_sk(user: &SlackUserId) -> String {
    format!("VOTE#{user}")
}

/// `IDEM#{principal}#{key}`. The principal is an IAM ARN, which cannot contain `#`, so the split is
/// unambiguous whatever the key contains.
pub fn idempotency_pk(principal: &str, key: &IdempotencyKey) -> String {
    format!("IDEM#{principal}#{key}")
}

/// `PENDING#{principal}#{policy}`: the number of pending requests of one principal under one policy.
pub fn pending_counter_pk(principal: &str, policy: &PolicyName) -> String {
    format!("PENDING#{principal}#{policy}")
}

/// `BREAKGLASS#{principal}#{YYYY-MM-DD}`: the break-glass uses of one principal on one UTC day (row 41).
pub fn break_glass_counter_pk(principal: &str, day: &str) -> String {
    format!("BREAKGLASS#{principal}#{day}")
}

/// `{seq:020}`: an outbox entry's sort key, the audit record's `seq`, so that string order is chain order.
pub fn outbox_sk(seq: u64) -> String {
    format!("{seq:020}")
}

/// A time as a fixed-width decimal string, so that string order is time order. Clamped to
/// `[0, 10^15)` milliseconds.
pub fn time_key(t: Timestamp) -> String {
    let ms = t.unix_millis().clamp(0, TIME_KEY_MAX);
    format!("{ms:0width$}", width = TIME_KEY_WIDTH)
}

/// `{time_key}#{id}`: time order, ties broken by id.
pub fn time_id_key(t: Timestamp, id: &RequestId) -> String {
    format!("{}#{id}", time_key(t))
}

/// The TTL attribute of a request's items: `expires_at` plus the retention period, in unix seconds.
pub fn gc_ttl_seconds(expires_at: Timestamp) -> i64 {
    expires_at.unix_seconds().saturating_add(RETENTION_AFTER_EXPIRY_SECONDS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn time_keys_sort_like_times() {
        let times = [0_i64, 1, 999, 1_000, 1_795_621_462_123, 10_000_000_000_000, TIME_KEY_MAX];
        for w in times.windows(2) {
            let (a, b) = (Timestamp::from_unix_millis(w[0]), Timestamp::from_unix_millis(w[1]));
            assert!(time_key(a) < time_key(b), "{} < {}", time_key(a), time_key(b));
            assert_eq!(time_key(a).len(), TIME_KEY_WIDTH);
        }
        assert_eq!(time_key(Timestamp::from_unix_millis(1_795_621_462_123)), "001795621462123");
    }

    #[test]
    fn time_keys_clamp_out_of_range_times() {
        assert_eq!(time_key(Timestamp::from_unix_millis(-5)), "000000000000000");
        assert_eq!(time_key(Timestamp::from_unix_millis(i64::MAX)), "999999999999999");
    }

    #[test]
    fn time_id_keys_order_by_time_then_id() {
        let t = Timestamp::from_unix_millis(1_000);
        let a = RequestId::from_parts(1, 1);
        let b = RequestId::from_parts(1, 2);
        assert!(time_id_key(t, &a) < time_id_key(t, &b));
        assert!(time_id_key(t, &b) < time_id_key(t.plus_millis(1), &a));
        // A bound of `time_key(now + 1ms)` includes every key due at or before `now`.
        assert!(time_id_key(t, &b) < time_key(t.plus_millis(1)));
        assert!(time_id_key(t.plus_millis(1), &a) > time_key(t.plus_millis(1)));
    }

    #[test]
    fn partition_keys_have_their_documented_shape() {
        let id = RequestId::parse("req_01JD0000000000000000000000").unwrap();
        assert_eq!(request_pk(&id), "REQ#req_01JD0000000000000000000000");
        assert_eq!(vote_sk(&SlackUserId::parse("U012AB3CD").unwrap()), "VOTE#U012AB3CD");
        assert_eq!(policy_sk(&PolicyName::parse("deploy-production").unwrap()), "POLICY#deploy-production");
        let p = "arn:aws:iam::111122223333:role/github-deploy";
        assert_eq!(
            idempotency_pk(p, &IdempotencyKey::parse("k#1").unwrap()),
            "IDEM#arn:aws:iam::111122223333:role/github-deploy#k#1"
        );
        assert_eq!(
            pending_counter_pk(p, &PolicyName::parse("deploy-production").unwrap()),
            "PENDING#arn:aws:iam::111122223333:role/github-deploy#deploy-production"
        );
    }

    #[test]
    fn gc_ttl_is_in_seconds_well_after_expiry() {
        let exp = Timestamp::from_unix_millis(1_795_621_462_999);
        assert_eq!(gc_ttl_seconds(exp), 1_795_621_462 + 400 * 86_400);
    }
}
