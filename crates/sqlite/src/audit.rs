//! [`AuditLog`] on the embedded store, and the audit operations the other writes run inside their own
//! transaction (every state change appends its events in the same transaction as the change).
//!
//! The `audit` table is append-only: this module must never contain a statement that updates or deletes
//! its rows (the schema's triggers refuse them too), and must never extend a chain whose tail was moved.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use countersign_core::domain::audit::seal_after;
use countersign_core::domain::{AuditDraft, AuditEvent, RequestId};
use countersign_core::ports::{AuditLog, StoreError};

use crate::error::Sql;
use crate::rows::{limit, parse_audit, to_i64, to_json};
use crate::EmbeddedStore;

fn query_audit(tx: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<AuditEvent>, StoreError> {
    let mut stmt = tx.prepare_cached(sql).sql()?;
    let rows = stmt.query_map(params, |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))).sql()?;
    rows.map(|row| {
        let (position, doc) = row.sql()?;
        parse_audit(position, &doc)
    })
    .collect()
}

fn last_audit_tx(tx: &Connection) -> Result<Option<(i64, AuditEvent)>, StoreError> {
    let row: Option<(i64, String)> = tx
        .prepare_cached("SELECT seq, doc FROM audit ORDER BY seq DESC LIMIT 1")
        .sql()?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .sql()?;
    row.map(|(position, doc)| parse_audit(position, &doc).map(|e| (position, e))).transpose()
}

/// Seals `drafts` after the last record and inserts them. Refuses to extend a chain whose tail record is
/// not at its own position (someone moved it), rather than hide the damage under new records.
pub(crate) fn append_tx(tx: &Connection, drafts: Vec<AuditDraft>) -> Result<Vec<AuditEvent>, StoreError> {
    if drafts.is_empty() {
        return Ok(Vec::new());
    }
    let last = match last_audit_tx(tx)? {
        None => None,
        Some((position, e)) => {
            if to_i64(e.seq, "audit seq")? != position {
                return Err(StoreError::Corrupt(format!(
                    "the last audit record, at seq {position}, says it is seq {}",
                    e.seq
                )));
            }
            Some((e.seq, e.hash))
        }
    };
    let events = seal_after(last, drafts);
    let mut stmt = tx.prepare_cached("INSERT INTO audit (seq, doc, request_id, at) VALUES (?1, ?2, ?3, ?4)").sql()?;
    for e in &events {
        stmt.execute(params![
            to_i64(e.seq, "audit seq")?,
            to_json(e, "audit record")?,
            e.request_id.map(|r| r.to_string()),
            e.at.unix_millis(),
        ])
        .sql()?;
    }
    Ok(events)
}

#[async_trait]
impl AuditLog for EmbeddedStore {
    async fn append(&self, events: Vec<AuditDraft>) -> Result<Vec<AuditEvent>, StoreError> {
        self.write(move |tx| append_tx(tx, events)).await
    }

    async fn read_from(&self, from_seq: u64, limit_n: usize) -> Result<Vec<AuditEvent>, StoreError> {
        // Past i64::MAX there is nothing to read.
        let Ok(from) = i64::try_from(from_seq) else {
            return Ok(Vec::new());
        };
        self.read(move |tx| {
            query_audit(tx, "SELECT seq, doc FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2", [from, limit(limit_n)])
        })
        .await
    }

    async fn for_request(&self, id: &RequestId) -> Result<Vec<AuditEvent>, StoreError> {
        let id = id.to_string();
        self.read(move |tx| query_audit(tx, "SELECT seq, doc FROM audit WHERE request_id = ?1 ORDER BY seq", [id]))
            .await
    }

    async fn last(&self) -> Result<Option<AuditEvent>, StoreError> {
        self.read(|tx| Ok(last_audit_tx(tx)?.map(|(_, e)| e))).await
    }
}
