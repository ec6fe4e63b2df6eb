//! `EventOutbox` on the requests table (issue 19): one item per decision event owed, in partition
//! [`OUTBOX_PK`] under sort key [`outbox_sk`]`(seq)`, put by [`DynamoStore::outbox_put`] inside the very
//! transaction of the change (`transact_with_audit`), read in `seq` order and deleted by the sweeper's
//! relay once published. The audit table stays append-only: the outbox is not in it.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};

use super::error::{build_error, from_sdk};
use super::items::{s, Item};
use super::keys::*;
use super::DynamoStore;
use countersign_core::domain::events::OutboxEntry;
use countersign_core::ports::{EventOutbox, StoreError};

impl DynamoStore {
    /// The put of one outbox entry, as a transaction item. Unconditional: its key is its record's `seq`,
    /// which the audit put in the same transaction claims with `attribute_not_exists`.
    pub(super) fn outbox_put(&self, entry: &OutboxEntry) -> Result<TransactWriteItem, StoreError> {
        let doc =
            serde_json::to_string(entry).map_err(|e| StoreError::Other(format!("cannot encode outbox entry: {e}")))?;
        let mut item = Item::new();
        item.insert(PK.into(), s(OUTBOX_PK));
        item.insert(SK.into(), s(outbox_sk(entry.seq())));
        item.insert(DOC.into(), s(doc));
        let put = Put::builder()
            .table_name(&self.tables.requests)
            .set_item(Some(item))
            .build()
            .map_err(|e| build_error("outbox put", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }
}

fn entry_from_item(item: &Item) -> Result<OutboxEntry, StoreError> {
    let sk = super::items::get_s(item, SK)?;
    let doc = super::items::get_s(item, DOC)?;
    let entry: OutboxEntry =
        serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("outbox entry {sk}: {e}")))?;
    if outbox_sk(entry.seq()) != sk {
        return Err(StoreError::Corrupt(format!("outbox item {sk} holds the entry of seq {}", entry.seq())));
    }
    Ok(entry)
}

#[async_trait]
impl EventOutbox for DynamoStore {
    async fn due(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        while out.len() < limit {
            let page = self
                .client
                .query()
                .table_name(&self.tables.requests)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", s(OUTBOX_PK))
                .scan_index_forward(true)
                .consistent_read(true)
                .limit(self.page_limit(limit - out.len()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| from_sdk("Query(outbox)", e))?;
            for item in page.items() {
                out.push(entry_from_item(item)?);
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn delete(&self, seqs: &[u64]) -> Result<(), StoreError> {
        for seq in seqs {
            self.client
                .delete_item()
                .table_name(&self.tables.requests)
                .key(PK, s(OUTBOX_PK))
                .key(SK, s(outbox_sk(*seq)))
                .send()
                .await
                .map_err(|e| from_sdk("DeleteItem(outbox)", e))?;
        }
        Ok(())
    }
}
