//! [`PolicyStore`] on the embedded store. Every change of a policy appends its audit event in the same
//! write, so the audit log never misses a change that committed, nor records one that did not.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use countersign_core::domain::{AuditDraft, Policy, PolicyName};
use countersign_core::ports::{PolicySet, PolicyStore, StoreError};

use crate::audit::append_tx;
use crate::error::Sql;
use crate::rows::{collect, parse_policy, to_json};
use crate::EmbeddedStore;

/// The policy set's generation (migration 4), inside the caller's transaction.
pub(crate) fn generation_tx(tx: &Connection) -> Result<u64, StoreError> {
    let g: i64 = tx
        .prepare_cached("SELECT generation FROM policy_generation WHERE id = 1")
        .sql()?
        .query_row([], |r| r.get(0))
        .sql()?;
    u64::try_from(g).map_err(|_| StoreError::Corrupt(format!("policy generation {g} is negative")))
}

/// Raises the generation, in the transaction that changes a policy.
fn bump_generation_tx(tx: &Connection) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE policy_generation SET generation = generation + 1 WHERE id = 1")
        .sql()?
        .execute([])
        .sql()?;
    Ok(())
}

#[async_trait]
impl PolicyStore for EmbeddedStore {
    async fn policy_generation(&self) -> Result<u64, StoreError> {
        self.read(generation_tx).await
    }

    async fn policy_set(&self) -> Result<PolicySet, StoreError> {
        self.read(|tx| {
            let generation = generation_tx(tx)?;
            let mut stmt = tx.prepare_cached("SELECT name, doc FROM policies ORDER BY name").sql()?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).sql()?;
            Ok(PolicySet { generation, policies: collect(rows, parse_policy)? })
        })
        .await
    }

    async fn get_policy(&self, name: &PolicyName) -> Result<Option<Policy>, StoreError> {
        let name = name.to_string();
        self.read(move |tx| {
            let doc: Option<String> = tx
                .prepare_cached("SELECT doc FROM policies WHERE name = ?1")
                .sql()?
                .query_row([&name], |r| r.get(0))
                .optional()
                .sql()?;
            doc.map(|d| parse_policy(&name, &d)).transpose()
        })
        .await
    }

    async fn put_policy(&self, policy: &Policy, event: AuditDraft) -> Result<(), StoreError> {
        let name = policy.name.to_string();
        let doc = to_json(policy, "policy")?;
        let version = policy.version();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO policies (name, doc, version) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET doc = excluded.doc, version = excluded.version",
            )
            .sql()?
            .execute(params![name, doc, version])
            .sql()?;
            bump_generation_tx(tx)?;
            append_tx(tx, vec![event])?;
            Ok(())
        })
        .await
    }

    async fn delete_policy(&self, name: &PolicyName, event: AuditDraft) -> Result<(), StoreError> {
        let name = name.to_string();
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM policies WHERE name = ?1").sql()?.execute([&name]).sql()?;
            bump_generation_tx(tx)?;
            append_tx(tx, vec![event])?;
            Ok(())
        })
        .await
    }
}
