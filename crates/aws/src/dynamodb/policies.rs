//! `PolicyStore` on the policies table: one partition (`POLICIES`) holding every policy (`POLICY#{name}`)
//! and the generation item (`GENERATION`), so the whole set is one strongly consistent `Query` and never a
//! `Scan`. Every change of a policy raises the generation in its own transaction.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Delete, TransactWriteItem, Update};

use super::error::{build_error, from_sdk};
use super::items::{self, n, s, Item};
use super::keys::*;
use super::{conditional_put, DynamoStore, TxOutcome};
use countersign_core::domain::{AuditDraft, Policy, PolicyName};
use countersign_core::ports::{Conflict, PolicySet, PolicyStore, StoreError};

impl DynamoStore {
    /// `ADD generation 1` on the generation item, for the transaction of a policy change.
    fn generation_bump(&self) -> Result<TransactWriteItem, StoreError> {
        let u = Update::builder()
            .table_name(&self.tables.policies)
            .key(PK, s(POLICY_SET_PK))
            .key(SK, s(GENERATION_SK))
            .update_expression("ADD #g :one")
            .expression_attribute_names("#g", GENERATION)
            .expression_attribute_values(":one", n(1))
            .build()
            .map_err(|e| build_error("generation update", e))?;
        Ok(TransactWriteItem::builder().update(u).build())
    }
}

#[async_trait]
impl PolicyStore for DynamoStore {
    async fn policy_generation(&self) -> Result<u64, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.policies)
            .key(PK, s(POLICY_SET_PK))
            .key(SK, s(GENERATION_SK))
            .projection_expression("#g")
            .expression_attribute_names("#g", GENERATION)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk("GetItem(policy generation)", e))?;
        items::generation_from_item(out.item.as_ref())
    }

    async fn policy_set(&self) -> Result<PolicySet, StoreError> {
        let mut set = PolicySet::default();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.tables.policies)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", s(POLICY_SET_PK))
                .consistent_read(true)
                .limit(self.page_size)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| from_sdk("Query(policies)", e))?;
            for item in page.items() {
                if item.get(SK).and_then(|v| v.as_s().ok()).map(String::as_str) == Some(GENERATION_SK) {
                    set.generation = items::generation_from_item(Some(item))?;
                } else {
                    set.policies.push(items::policy_from_item(item)?);
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        set.policies.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(set)
    }

    async fn get_policy(&self, name: &PolicyName) -> Result<Option<Policy>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.policies)
            .key(PK, s(POLICY_SET_PK))
            .key(SK, s(policy_sk(name)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk("GetItem(policy)", e))?;
        out.item.as_ref().map(items::policy_from_item).transpose()
    }

    async fn put_policy(&self, policy: &Policy, event: AuditDraft) -> Result<(), StoreError> {
        let put = conditional_put(&self.tables.policies, items::policy_item(policy)?, None, &[], Item::new())?;
        let tx = vec![put, self.generation_bump()?];
        match self.transact_with_audit("TransactWriteItems(put policy)", tx, &[event], None).await? {
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
            .key(PK, s(POLICY_SET_PK))
            .key(SK, s(policy_sk(name)))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(|e| build_error("policy delete", e))?;
        let tx = vec![TransactWriteItem::builder().delete(delete).build(), self.generation_bump()?];
        match self.transact_with_audit("TransactWriteItems(delete policy)", tx, &[event], None).await? {
            TxOutcome::Committed(_) => Ok(()),
            TxOutcome::Refused(_) => Err(StoreError::Conflict(Conflict::Stale)),
        }
    }
}
