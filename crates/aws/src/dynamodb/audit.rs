//! `AuditLog` on the audit table: one partition (`pk = CHAIN`) ordered by `seq`.
//!
//! Only ever `PutItem` (inside transactions) with `attribute_not_exists`; never update or delete here.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::error::from_sdk;
use super::items::{self, s, Item};
use super::keys::*;
use super::{DynamoStore, TxOutcome};
use countersign_core::domain::{AuditDraft, AuditEvent, RequestId};
use countersign_core::ports::{AuditLog, StoreError};

impl DynamoStore {
    /// The last record as stored, read consistently: its key `seq` and the record.
    async fn last_record(&self) -> Result<Option<(u64, AuditEvent)>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.audit)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":pk", s(CHAIN_PK))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk("Query(audit last)", e))?;
        out.items().first().map(items::audit_from_item).transpose()
    }

    /// Where the next record goes: the last key `seq` and the last record's hash (`None` for an empty
    /// chain). The key, not the document, decides the position, so a tampered document can never make
    /// an append collide with or go behind an existing record.
    pub(super) async fn last_link(&self) -> Result<Option<(u64, String)>, StoreError> {
        Ok(self.last_record().await?.map(|(seq, e)| (seq, e.hash)))
    }

    async fn query_audit(
        &self,
        index: Option<&str>,
        condition: &str,
        names: &[(&str, &str)],
        values: Item,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        while out.len() < limit {
            let mut q = self
                .client
                .query()
                .table_name(&self.tables.audit)
                .set_index_name(index.map(str::to_string))
                .key_condition_expression(condition)
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(true)
                // Index reads cannot be consistent; the base table's always are.
                .consistent_read(index.is_none())
                .limit(self.page_limit(limit - out.len()))
                .set_exclusive_start_key(start.take());
            for (k, v) in names {
                q = q.expression_attribute_names(*k, *v);
            }
            let page = q.send().await.map_err(|e| from_sdk("Query(audit)", e))?;
            for item in page.items() {
                out.push(items::audit_from_item(item)?.1);
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }
}

#[async_trait]
impl AuditLog for DynamoStore {
    async fn append(&self, events: Vec<AuditDraft>) -> Result<Vec<AuditEvent>, StoreError> {
        match self.transact_with_audit("TransactWriteItems(audit append)", Vec::new(), &events, None).await? {
            TxOutcome::Committed(sealed) => Ok(sealed),
            TxOutcome::Refused(_) => Err(StoreError::Other("audit append was refused without a state item".into())),
        }
    }

    async fn read_from(&self, from_seq: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let mut values = Item::new();
        values.insert(":pk".into(), s(CHAIN_PK));
        values.insert(":from".into(), AttributeValue::N(from_seq.to_string()));
        self.query_audit(None, "#pk = :pk AND #seq >= :from", &[("#pk", PK), ("#seq", SEQ)], values, limit).await
    }

    async fn for_request(&self, id: &RequestId) -> Result<Vec<AuditEvent>, StoreError> {
        let mut values = Item::new();
        values.insert(":id".into(), s(id.to_string()));
        self.query_audit(Some(INDEX_BY_REQUEST), "#rid = :id", &[("#rid", REQUEST_ID)], values, usize::MAX).await
    }

    async fn last(&self) -> Result<Option<AuditEvent>, StoreError> {
        Ok(self.last_record().await?.map(|(_, e)| e))
    }
}
