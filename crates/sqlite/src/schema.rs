//! The file's schema and the settings of every connection: the migrations (in order, numbered by
//! `PRAGMA user_version`), the pragmas (WAL, `synchronous=FULL`, busy timeout, foreign keys) and the one way
//! to open a connection.
//!
//! Never edit a released migration: append a new one. Nothing here reads or writes items; the triggers that
//! keep `audit` append-only live in the first migration and must never be dropped by a later one.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use countersign_core::ports::StoreError;

use crate::error::Sql;

/// How long an operation waits for another process holding the write lock before `Unavailable`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations, applied in order; `PRAGMA user_version` is the number applied so far.
/// Never edit a released migration: append a new one.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE policies (
    name    TEXT PRIMARY KEY NOT NULL,
    doc     TEXT NOT NULL,
    version TEXT NOT NULL
) STRICT;

CREATE TABLE requests (
    id          TEXT PRIMARY KEY NOT NULL,
    doc         TEXT NOT NULL,
    status      TEXT NOT NULL,
    version     INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    principal   TEXT NOT NULL,
    policy      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    notify_due  INTEGER
) STRICT;
CREATE INDEX requests_by_status ON requests (status, created_at, id);
CREATE INDEX requests_pending_by_principal_policy ON requests (principal, policy, status);
CREATE INDEX requests_by_principal ON requests (principal, created_at, id);
CREATE INDEX requests_notify_due ON requests (notify_due, id) WHERE notify_due IS NOT NULL;

CREATE TABLE votes (
    request_id TEXT NOT NULL REFERENCES requests (id),
    user_id    TEXT NOT NULL,
    doc        TEXT NOT NULL,
    PRIMARY KEY (request_id, user_id)
) STRICT;

CREATE TABLE idempotency (
    principal       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_id      TEXT NOT NULL REFERENCES requests (id),
    PRIMARY KEY (principal, idempotency_key)
) STRICT;

CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY NOT NULL,
    doc        TEXT NOT NULL,
    request_id TEXT,
    at         INTEGER NOT NULL
) STRICT;
CREATE INDEX audit_by_request ON audit (request_id, seq) WHERE request_id IS NOT NULL;
CREATE TRIGGER audit_is_append_only_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;
CREATE TRIGGER audit_is_append_only_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;
"#,
    r#"
-- The action and environment of each request, for counting a request's history without parsing documents.
-- Rows whose document does not parse keep NULL: they are never counted, and reading them stays Corrupt.
ALTER TABLE requests ADD COLUMN action TEXT;
ALTER TABLE requests ADD COLUMN environment TEXT;
UPDATE requests SET action = json_extract(doc, '$.action'), environment = json_extract(doc, '$.environment')
    WHERE json_valid(doc);
"#,
    r#"
-- A principal's requests newest first, with what the history count needs: that count reads only this index,
-- never the table's pages of documents. It replaces requests_by_principal, its prefix.
CREATE INDEX requests_history ON requests (principal, created_at, id, action, environment);
DROP INDEX requests_by_principal;
"#,
    r#"
-- The policy set's generation: raised in the same transaction as every change of a policy, so a process
-- that keeps the parsed set re-reads it only when this moved (another process may have run `policy apply`).
CREATE TABLE policy_generation (
    id         INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    generation INTEGER NOT NULL
) STRICT;
INSERT INTO policy_generation (id, generation) VALUES (1, 0);
"#,
    r#"
-- Break-glass uses per principal and UTC day (row 41), counted in the transaction that creates each one.
CREATE TABLE break_glass_uses (
    principal TEXT NOT NULL,
    day       TEXT NOT NULL,
    uses      INTEGER NOT NULL,
    PRIMARY KEY (principal, day)
) STRICT;
"#,
    r#"
-- Decision events owed (issue 19): written in the same transaction as the change, deleted once published.
CREATE TABLE event_outbox (
    seq INTEGER PRIMARY KEY NOT NULL,
    doc TEXT NOT NULL
) STRICT;
"#,
];

/// Opens a connection with the settings every connection of the store uses.
pub(crate) fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).sql()?;
    conn.busy_timeout(BUSY_TIMEOUT).sql()?;
    conn.pragma_update(None, "foreign_keys", "ON").sql()?;
    // Every statement of the store stays prepared (rusqlite keeps 16 by default; the store has ~25).
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Opens the writer's connection on `path`: WAL with `synchronous=FULL` (an acknowledged write survives a
/// crash or a power loss), then the migrations it has not seen yet.
pub(crate) fn open_for_writing(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = connect(path)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).sql()?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Other(format!(
            "{} could not be switched to WAL (journal_mode is {mode})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL").sql()?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).sql()?;
    let applied: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0)).sql()?;
    let applied =
        usize::try_from(applied).map_err(|_| StoreError::Corrupt(format!("schema version {applied} is negative")))?;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Other(format!(
            "the database has schema version {applied}, newer than this countersign knows ({}): upgrade countersign",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(sql).sql()?;
        tx.pragma_update(None, "user_version", i + 1).sql()?;
    }
    tx.commit().sql()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rusqlite::{params, Connection};

    use countersign_core::domain::Timestamp;
    use countersign_core::ports::{AuditLog, RequestStore};

    use super::MIGRATIONS;
    use crate::rows::RequestRow;
    use crate::test_support::draft;
    use crate::{EmbeddedStore, DB_FILE};

    #[tokio::test]
    async fn opening_twice_keeps_data_and_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.append(vec![draft(1)]).await.unwrap();
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.last().await.unwrap().unwrap().seq, 1);
        let conn = Connection::open(store.db_path()).unwrap();
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, i64::try_from(MIGRATIONS.len()).unwrap());
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn database_refuses_to_update_or_delete_audit_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.append(vec![draft(1), draft(2)]).await.unwrap();
        let conn = Connection::open(store.db_path()).unwrap();
        let update = conn.execute("UPDATE audit SET doc = '{}' WHERE seq = 1", []);
        assert!(update.unwrap_err().to_string().contains("append-only"));
        let delete = conn.execute("DELETE FROM audit WHERE seq = 2", []);
        assert!(delete.unwrap_err().to_string().contains("append-only"));
        assert_eq!(store.read_from(1, 10).await.unwrap().len(), 2);
    }
    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(EmbeddedStore::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = EmbeddedStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
    }

    // That the count on the indexed columns equals the default over `list_by_principal` is the conformance
    // test `earlier_of_same_kind_agrees_with_the_listed_requests`, run on both stores.

    #[tokio::test]
    async fn upgrading_from_schema_1_fills_the_history_columns_of_existing_requests() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Timestamp::from_unix_millis(1_795_621_462_000);
        let (old, new) = (
            countersign_core::testing::sample_request(2, t0),
            countersign_core::testing::sample_request(2, t0.plus_seconds(60)),
        );
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            let row = RequestRow::of(&old).unwrap();
            conn.execute(
                "INSERT INTO requests (id, doc, status, version, expires_at, principal, policy, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    row.id,
                    row.doc,
                    row.status,
                    row.version,
                    row.expires_at,
                    row.principal,
                    row.policy,
                    row.created_at
                ],
            )
            .unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.create_request(&new, vec![], 100).await.unwrap();
        let same = store.earlier_of_same_kind(&new, t0, 1000).await.unwrap();
        assert_eq!((same.count, same.newest), (1, Some(old)));
    }
}
