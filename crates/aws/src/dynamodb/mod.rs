//! The DynamoDB store: `PolicyStore`, `RequestStore`, `AuditLog` and `EventOutbox` on three tables.
//!
//! Every state change is one `TransactWriteItems` that also appends its audit records, each put with
//! `attribute_not_exists`, so a change and its record are written together or not at all, and two writers
//! can never take the same place in the chain. The audit table is append-only: this module never updates
//! or deletes an item there (the IAM policy forbids it too). Keys and attribute names live in [`keys`],
//! item conversions in `items`; `docs/dynamodb-keys.md` describes the design and the access patterns.
//!
//! Reads of the base tables are strongly consistent. Index queries cannot be: a list may show a request a
//! moment behind, which is safe because every write is conditional on the version read.

pub mod keys;

mod audit;
mod error;
mod items;
mod outbox;
mod policies;
mod reads;
mod requests;
mod tables;

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;

use countersign_core::domain::audit::seal_after;
use countersign_core::domain::events::{event_of, OutboxEntry};
use countersign_core::domain::{ApprovalRequest, AuditDraft, AuditEvent};
use countersign_core::ports::StoreError;

pub use tables::create_tables;

use error::{
    build_error, cancellation_codes, from_sdk, ContentionExhausted, CONDITION_FAILED, THROTTLED_REASONS,
    TRANSACTION_CONFLICT,
};
use items::Item;

/// Names of the three tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub policies: String,
    pub requests: String,
    pub audit: String,
}

impl TableNames {
    /// `{prefix}-policy-set`, `{prefix}-requests`, `{prefix}-audit`. (The policies table was
    /// `{prefix}-policies` while it was keyed by name alone; see docs/dynamodb.md.)
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            policies: format!("{prefix}-policy-set"),
            requests: format!("{prefix}-requests"),
            audit: format!("{prefix}-audit"),
        }
    }
}

/// How many times a write is retried when another writer took its place in the audit chain (or a
/// transaction conflict cancelled it) before giving up with `StoreError::Unavailable`.
const MAX_WRITE_ATTEMPTS: u32 = 50;
/// DynamoDB's limit on items per transaction.
const MAX_TRANSACTION_ITEMS: usize = 100;
const DEFAULT_PAGE_SIZE: i32 = 100;

/// The DynamoDB adapter. Cheap to clone: the SDK client is a handle, and clones share one [`ChainHead`].
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    tables: TableNames,
    page_size: i32,
    head: Arc<tokio::sync::Mutex<ChainHead>>,
}

/// This process's view of the end of the audit chain, behind the lock every append of this process takes.
///
/// Appends from one process queue on the lock instead of racing each other for the same `seq` (each lost
/// race costs a cancelled transaction and a re-read), and an append that follows one of ours starts from the
/// link we wrote instead of reading it back. The conditional puts stay the arbiter: another process may have
/// appended meanwhile, which cancels the transaction on an audit item, forgets the link and re-reads it.
#[derive(Debug, Default)]
enum ChainHead {
    /// Read the last record before the next append.
    #[default]
    Unknown,
    /// The chain ended here when this process last wrote to it (`None`: it was empty).
    Known(Option<(u64, String)>),
}

/// What became of a transaction after its audit records found their place.
enum TxOutcome {
    Committed(Vec<AuditEvent>),
    /// A condition on one of the state items (not the audit records) failed. Holds the cancellation code
    /// of each state item, in the order given.
    Refused(Vec<String>),
}

impl DynamoStore {
    pub fn new(client: Client, tables: TableNames) -> Self {
        Self { client, tables, page_size: DEFAULT_PAGE_SIZE, head: Arc::default() }
    }

    /// Reads the end of the audit chain into this process's [`ChainHead`] unless an append already knows it:
    /// a Lambda starts this at init, so its first (audited) answer does not wait for the read. It holds the
    /// lock every append takes, so an append that comes meanwhile waits for it instead of reading again; a
    /// stale head costs what it always costs, one cancelled transaction and a re-read.
    pub async fn warm_chain_head(&self) -> Result<(), StoreError> {
        let mut head = self.head.lock().await;
        if matches!(*head, ChainHead::Unknown) {
            *head = ChainHead::Known(self.last_link().await?);
        }
        Ok(())
    }

    /// Items per Query page (default 100). Small pages exercise pagination in tests.
    #[must_use]
    pub fn with_page_size(mut self, page_size: u16) -> Self {
        self.page_size = i32::from(page_size.max(1));
        self
    }

    pub fn tables(&self) -> &TableNames {
        &self.tables
    }

    /// A Query page limit for `remaining` wanted items.
    fn page_limit(&self, remaining: usize) -> i32 {
        i32::try_from(remaining).map_or(self.page_size, |r| r.min(self.page_size))
    }

    /// Writes `state` items and the audit records of `drafts` in one transaction, chained after the
    /// current last record. Retries (bounded, with jittered backoff) when another writer took the chain
    /// position first or a transaction conflict cancelled the write; returns `Refused` as soon as a
    /// condition on a state item fails.
    ///
    /// With `snapshot` (the request as this write leaves it), the decision events owed for the sealed
    /// records go into the same transaction as outbox items (issue 19, [`outbox`]).
    async fn transact_with_audit(
        &self,
        op: &'static str,
        state: Vec<TransactWriteItem>,
        drafts: &[AuditDraft],
        snapshot: Option<&ApprovalRequest>,
    ) -> Result<TxOutcome, StoreError> {
        let n_state = state.len();
        let n_outbox = snapshot
            .map_or(0, |r| drafts.iter().filter(|d| event_of(d.kind).is_some() && d.request_id == Some(r.id)).count());
        if n_state + drafts.len() + n_outbox > MAX_TRANSACTION_ITEMS {
            return Err(StoreError::Other(format!(
                "{op}: {} items exceed the {MAX_TRANSACTION_ITEMS}-item transaction limit",
                n_state + drafts.len() + n_outbox
            )));
        }
        if n_state + drafts.len() == 0 {
            return Ok(TxOutcome::Committed(Vec::new()));
        }
        // Held across the attempts: see `ChainHead`. Writes without audit records do not need it.
        let mut head = if drafts.is_empty() { None } else { Some(self.head.lock().await) };
        for attempt in 0..MAX_WRITE_ATTEMPTS {
            let events = match head.as_deref_mut() {
                None => Vec::new(),
                Some(h) => {
                    let link = match std::mem::take(h) {
                        ChainHead::Known(link) => link,
                        ChainHead::Unknown => self.last_link().await?,
                    };
                    seal_after(link, drafts.to_vec())
                }
            };
            let mut tx = state.clone();
            for e in &events {
                tx.push(self.audit_put(e)?);
            }
            if let Some(r) = snapshot {
                for entry in OutboxEntry::for_write(&events, r) {
                    tx.push(self.outbox_put(&entry)?);
                }
            }
            // From here the head is `Unknown` (taken above) unless the transaction commits.
            let err = match self.client.transact_write_items().set_transact_items(Some(tx)).send().await {
                Ok(_) => {
                    if let (Some(h), Some(last)) = (head.as_deref_mut(), events.last()) {
                        *h = ChainHead::Known(Some((last.seq, last.hash.clone())));
                    }
                    return Ok(TxOutcome::Committed(events));
                }
                Err(err) => err,
            };
            let Some(codes) = cancellation_codes(&err) else {
                return Err(from_sdk(op, err));
            };
            let state_codes: Vec<String> =
                (0..n_state).map(|i| codes.get(i).cloned().unwrap_or_else(|| "None".to_string())).collect();
            if state_codes.iter().any(|c| c == CONDITION_FAILED) {
                return Ok(TxOutcome::Refused(state_codes));
            }
            if let Some(c) = codes.iter().find(|c| THROTTLED_REASONS.contains(&c.as_str())) {
                return Err(error::unavailable(op, c, err));
            }
            let chain_moved = codes.iter().skip(n_state).any(|c| c == CONDITION_FAILED);
            let conflict = codes.iter().any(|c| c == TRANSACTION_CONFLICT);
            if !(chain_moved || conflict) {
                tracing::error!(op, codes = ?codes, "DynamoDB cancelled a transaction for an unexpected reason");
                return Err(StoreError::Other(format!("DynamoDB {op} was cancelled ({})", codes.join(", "))));
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
        Err(StoreError::unavailable(ContentionExhausted { op, attempts: MAX_WRITE_ATTEMPTS }))
    }

    fn audit_put(&self, e: &AuditEvent) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.tables.audit)
            .set_item(Some(items::audit_item(e)?))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", keys::PK)
            .build()
            .map_err(|e| build_error("audit put", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }
}

/// A put of `item` into `table` under `condition` (with its names and values), as a transaction item.
fn conditional_put(
    table: &str,
    item: Item,
    condition: Option<&str>,
    names: &[(&str, &str)],
    values: Item,
) -> Result<TransactWriteItem, StoreError> {
    let mut put = Put::builder().table_name(table).set_item(Some(item));
    if let Some(c) = condition {
        put = put.condition_expression(c);
    }
    for (k, v) in names {
        put = put.expression_attribute_names(*k, *v);
    }
    if !values.is_empty() {
        put = put.set_expression_attribute_values(Some(values));
    }
    let put = put.build().map_err(|e| build_error("put", e))?;
    Ok(TransactWriteItem::builder().put(put).build())
}

/// Jittered, growing pause between attempts: up to 5 ms × (attempt + 1), at most 100 ms.
fn backoff(attempt: u32) -> Duration {
    let cap_ms = (5 * u64::from(attempt + 1)).min(100);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    Duration::from_millis(1 + h.finish() % cap_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_follow_the_prefix() {
        let t = TableNames::with_prefix("countersign-prod");
        assert_eq!(t.policies, "countersign-prod-policy-set");
        assert_eq!(t.requests, "countersign-prod-requests");
        assert_eq!(t.audit, "countersign-prod-audit");
    }

    #[test]
    fn backoff_is_bounded() {
        for attempt in 0..MAX_WRITE_ATTEMPTS {
            let d = backoff(attempt);
            assert!(d >= Duration::from_millis(1) && d <= Duration::from_millis(101), "{d:?}");
        }
    }
}
