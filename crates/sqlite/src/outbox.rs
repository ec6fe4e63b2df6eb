//! [`EventOutbox`] on the embedded store (issue 19): the `event_outbox` table, one row per decision event
//! owed, keyed by its audit record's `seq`. [`outbox_tx`] is called by the request writes inside their own
//! transaction, so a change and its events are committed together or not at all.
//!
//! [`EventOutbox`]: countersign_core::ports::EventOutbox

use async_trait::async_trait;
use rusqlite::{params, Connection};

use countersign_core::domain::events::OutboxEntry;
use countersign_core::domain::{ApprovalRequest, AuditEvent};
use countersign_core::ports::{EventOutbox, StoreError};

use crate::error::Sql;
use crate::rows::{limit, to_i64, to_json};
use crate::EmbeddedStore;

/// Writes the outbox entries owed for `sealed`, the records of the write that left `request` as it is.
pub(crate) fn outbox_tx(tx: &Connection, sealed: &[AuditEvent], request: &ApprovalRequest) -> Result<(), StoreError> {
    let entries = OutboxEntry::for_write(sealed, request);
    if entries.is_empty() {
        return Ok(());
    }
    let mut stmt = tx.prepare_cached("INSERT INTO event_outbox (seq, doc) VALUES (?1, ?2)").sql()?;
    for e in &entries {
        stmt.execute(params![to_i64(e.seq(), "outbox seq")?, to_json(e, "outbox entry")?]).sql()?;
    }
    Ok(())
}

#[async_trait]
impl EventOutbox for EmbeddedStore {
    async fn due(&self, limit_n: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.read(move |tx| {
            let mut stmt = tx.prepare_cached("SELECT seq, doc FROM event_outbox ORDER BY seq LIMIT ?1").sql()?;
            let rows = stmt.query_map([limit(limit_n)], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))).sql()?;
            rows.map(|row| {
                let (seq, doc) = row.sql()?;
                serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt(format!("outbox entry {seq}: {e}")))
            })
            .collect()
        })
        .await
    }

    async fn delete(&self, seqs: &[u64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let seqs = seqs.to_vec();
        self.write(move |tx| {
            let mut stmt = tx.prepare_cached("DELETE FROM event_outbox WHERE seq = ?1").sql()?;
            for s in &seqs {
                stmt.execute([to_i64(*s, "outbox seq")?]).sql()?;
            }
            Ok(())
        })
        .await
    }
}
