//! [`PolicyStore`] on the embedded store. Every change of a policy appends its audit event in the same
//! write, so the audit log never misses a change that committed, nor records one that did not.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use countersign_core::domain::{AuditDraft, Policy, PolicyName};
use countersign_core::ports::{PolicyStore, StoreError};

use crate::audit::append_tx;
use crate::error::Sql;
use crate::rows::{collect, parse_policy, to_json};
use crate::EmbeddedStore;

#[async_trait]
impl PolicyStore for EmbeddedStore {
    async fn list_policies(&self) -> Result<Vec<Policy>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached("SELECT name, doc FROM policies ORDER BY name").sql()?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).sql()?;
            collect(rows, parse_policy)
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
            append_tx(tx, vec![event])?;
            Ok(())
        })
        .await
    }

    async fn delete_policy(&self, name: &PolicyName, event: AuditDraft) -> Result<(), StoreError> {
        let name = name.to_string();
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM policies WHERE name = ?1").sql()?.execute([&name]).sql()?;
            append_tx(tx, vec![event])?;
            Ok(())
        })
        .await
    }
}
