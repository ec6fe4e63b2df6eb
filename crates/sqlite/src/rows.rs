//! Row mapping: items are stored as their domain JSON (`doc`) plus the columns the queries need, and this
//! module is the one place that turns one into the other.
//!
//! An item whose JSON no longer parses, or that is not the item its key names, is [`StoreError::Corrupt`]:
//! nothing here may skip it or repair it. The indexed columns of a request are always derived from the
//! request itself ([`RequestRow::of`]), never written separately, so they can never disagree with its `doc`.

use countersign_core::domain::{ApprovalRequest, AuditEvent, Policy, Timestamp};
use countersign_core::ports::StoreError;

use crate::error::Sql;

pub(crate) fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Other(format!("{what} {v} is out of range")))
}

pub(crate) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Other(format!("cannot encode {what}: {e}")))
}

pub(crate) fn parse_request(id: &str, doc: &str) -> Result<ApprovalRequest, StoreError> {
    let r: ApprovalRequest =
        serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("request {id}: {e}")))?;
    if r.id.to_string() != id {
        return Err(StoreError::Corrupt(format!("request row {id} holds request {}", r.id)));
    }
    Ok(r)
}

pub(crate) fn parse_policy(name: &str, doc: &str) -> Result<Policy, StoreError> {
    let p: Policy = serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("policy {name}: {e}")))?;
    if p.name.as_str() != name {
        return Err(StoreError::Corrupt(format!("policy row {name} holds policy {}", p.name)));
    }
    Ok(p)
}

/// The record as stored. Its position (`seq` column) is not checked against its own `seq`: a record moved
/// by tampering must come back where it now is, so that chain verification names it.
pub(crate) fn parse_audit(position: i64, doc: &str) -> Result<AuditEvent, StoreError> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("audit record at seq {position}: {e}")))
}

pub(crate) fn collect<T>(
    rows: impl Iterator<Item = rusqlite::Result<(String, String)>>,
    parse: impl Fn(&str, &str) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.map(|row| {
        let (key, doc) = row.sql()?;
        parse(&key, &doc)
    })
    .collect()
}

/// The indexed columns of a request, derived from the request itself so they can never disagree.
pub(crate) struct RequestRow {
    pub(crate) id: String,
    pub(crate) doc: String,
    pub(crate) status: &'static str,
    pub(crate) version: i64,
    pub(crate) expires_at: i64,
    pub(crate) principal: String,
    pub(crate) policy: String,
    pub(crate) created_at: i64,
    pub(crate) notify_due: Option<i64>,
    pub(crate) action: String,
    pub(crate) environment: String,
}

impl RequestRow {
    pub(crate) fn of(r: &ApprovalRequest) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.id.to_string(),
            doc: to_json(r, "request")?,
            status: r.status.as_str(),
            version: to_i64(r.version, "request version")?,
            expires_at: r.expires_at.unix_millis(),
            principal: r.requester.principal.clone(),
            policy: r.policy.name.to_string(),
            created_at: r.created_at.unix_millis(),
            notify_due: r.notification_due_at().map(Timestamp::unix_millis),
            action: r.action.as_str().to_string(),
            environment: r.environment.as_str().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rusqlite::Connection;

    use countersign_core::ports::{AuditLog, RequestStore, StoreError};

    use crate::test_support::draft;
    use crate::EmbeddedStore;

    #[tokio::test]
    async fn unparsable_items_are_corrupt_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let conn = Connection::open(store.db_path()).unwrap();
        conn.execute(
            "INSERT INTO requests (id, doc, status, version, expires_at, principal, policy, created_at)
             VALUES ('req_01JD0000000000000000000000', '{\"id\": 1}', 'pending', 1, 0, 'p', 'x', 0)",
            [],
        )
        .unwrap();
        conn.execute("INSERT INTO audit (seq, doc, request_id, at) VALUES (1, 'not json', NULL, 0)", []).unwrap();
        assert!(matches!(store.list_pending(10).await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.read_from(1, 10).await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.append(vec![draft(1)]).await, Err(StoreError::Corrupt(_))));
    }
}
