//! `PolicyStore` on the policies table: one item per policy, keyed by name.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Delete, TransactWriteItem};

use super::error::{build_error, from_sdk};
use super::items::{self, s, Item};
use super::keys::*;
use super::{conditional_put, DynamoStore, TxOutcome};
use countersign_core::domain::{AuditDraft, Policy, PolicyName};
use countersign_core::ports::{Conflict, PolicyStore, StoreError};

#[async_trait]
impl PolicyStore for DynamoStore {
    async fn list_policies(&self) -> Result<Vec<Policy>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.tables.policies)
                .consistent_read(true)
                .limit(self.page_size)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| from_sdk("Scan(policies)", e))?;
            for item in page.items() {
                out.push(items::policy_from_item(item)?);
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn get_policy(&self, name: &PolicyName) -> Result<Option<Policy>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.policies)
            .key(PK, s(name.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk("GetItem(policy)", e))?;
        out.item.as_ref().map(items::policy_from_item).transpose()
    }

    async fn put_policy(&self, policy: &Policy, event: AuditDraft) -> Result<(), StoreError> {
        let put = conditional_put(&self.tables.policies, items::policy_item(policy)?, None, &[], Item::new())?;
        match self.transact_with_audit("TransactWriteItems(put policy)", vec![put], &[event]).await? {
            TxOutcome::Committed(_) => Ok(()),
            TxOutcome::Refused(codes) => {
                Err(StoreError::Other(format!("put policy was cancelled ({})", codes.join(", "))))
            }
        }
    }

    /// Deleting a policy that does not exist is `Conflict::Stale`: no `policy.deleted` record is written
    /// for something that was not there.
    async fn delete_policy(&self, name: &PolicyName, event: AuditDraft) -> Result<(), StoreError> {
        let delete = Delete::builder()
            .table_name(&self.tables.policies)
            .key(PK, s(name.as_str()))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(|e| build_error("policy delete", e))?;
        let tx = vec![TransactWriteItem::builder().delete(delete).build()];
        match self.transact_with_audit("TransactWriteItems(delete policy)", tx, &[event]).await? {
            TxOutcome::Committed(_) => Ok(()),
            TxOutcome::Refused(_) => Err(StoreError::Conflict(Conflict::Stale)),
        }
    }
}
