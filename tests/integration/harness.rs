//! Builds the stores under test, each on fresh storage, and the raw access tests use to tamper with them.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use countersign::adapters::embedded::EmbeddedStore;
use countersign::ports::{AuditLog, PolicyStore, RequestStore};

/// Everything a conformance test needs from a store.
pub trait Store: PolicyStore + RequestStore + AuditLog + 'static {}
impl<T: PolicyStore + RequestStore + AuditLog + 'static> Store for T {}

/// Changes the audit trail behind the store's back, the way someone with raw access to the storage could.
/// Records are addressed by their position in the chain (their `seq` when intact).
#[async_trait]
pub trait Tamper: Send + Sync {
    /// Changes a detail of the record without fixing its hash.
    async fn edit_audit(&self, seq: u64);
    /// Removes the record.
    async fn delete_audit(&self, seq: u64);
    /// Exchanges the contents of two positions, so each record turns up where the other was.
    async fn swap_audit(&self, a: u64, b: u64);
}

/// A store under test: the store, raw access to its storage, and whatever must live as long as it does.
pub struct Sut<S> {
    pub store: Arc<S>,
    pub tamper: Box<dyn Tamper>,
    _keep: Box<dyn Send + Sync>,
}

/// Adds a `tampered` detail to a stored audit record's JSON.
fn edited(doc: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(doc).expect("audit doc is JSON");
    v["details"]["tampered"] = serde_json::Value::String("yes".into());
    v.to_string()
}

// ---- embedded ----

/// A fresh embedded store in its own temporary directory (deleted when the `TempDir` drops).
pub fn embedded() -> (tempfile::TempDir, Arc<EmbeddedStore>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = EmbeddedStore::open(dir.path()).expect("open embedded store");
    (dir, Arc::new(store))
}

pub async fn embedded_sut() -> Option<Sut<EmbeddedStore>> {
    let (dir, store) = embedded();
    Some(Sut {
        tamper: Box::new(SqliteTamper {
            path: store.db_path().to_path_buf(),
        }),
        store,
        _keep: Box::new(dir),
    })
}

/// Raw access through a second connection to the database file. The store's triggers refuse to change
/// audit rows, so this drops them first, as anyone with write access to the file can.
pub struct SqliteTamper {
    path: PathBuf,
}

impl SqliteTamper {
    fn conn(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(&self.path).expect("open database file");
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .expect("busy timeout");
        conn.execute_batch(
            "DROP TRIGGER IF EXISTS audit_is_append_only_update;
             DROP TRIGGER IF EXISTS audit_is_append_only_delete;",
        )
        .expect("drop triggers");
        conn
    }

    fn doc(conn: &rusqlite::Connection, seq: u64) -> String {
        conn.query_row(
            "SELECT doc FROM audit WHERE seq = ?1",
            [i64::try_from(seq).unwrap()],
            |r| r.get(0),
        )
        .expect("audit record exists")
    }

    fn set_doc(conn: &rusqlite::Connection, seq: u64, doc: &str) {
        let n = conn
            .execute(
                "UPDATE audit SET doc = ?2 WHERE seq = ?1",
                rusqlite::params![i64::try_from(seq).unwrap(), doc],
            )
            .expect("update audit record");
        assert_eq!(n, 1);
    }
}

#[async_trait]
impl Tamper for SqliteTamper {
    async fn edit_audit(&self, seq: u64) {
        let conn = self.conn();
        let doc = Self::doc(&conn, seq);
        Self::set_doc(&conn, seq, &edited(&doc));
    }

    async fn delete_audit(&self, seq: u64) {
        let n = self
            .conn()
            .execute(
                "DELETE FROM audit WHERE seq = ?1",
                [i64::try_from(seq).unwrap()],
            )
            .expect("delete audit record");
        assert_eq!(n, 1);
    }

    async fn swap_audit(&self, a: u64, b: u64) {
        let mut conn = self.conn();
        let tx = conn.transaction().expect("transaction");
        let (doc_a, doc_b) = (Self::doc(&tx, a), Self::doc(&tx, b));
        Self::set_doc(&tx, a, &doc_b);
        Self::set_doc(&tx, b, &doc_a);
        tx.commit().expect("commit swap");
    }
}
