//! Builds the stores under test, each on fresh storage, and the raw access tests use to tamper with them.
//!
//! DynamoDB tests need an emulator: `AWS_ENDPOINT_URL=http://127.0.0.1:PORT` (moto's server; use
//! `scripts/moto_serial.py`, since moto's threaded server does not isolate concurrent transactions).
//! Without it they print a notice and pass, except under `CI=true`, where they fail.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use countersign_aws::dynamodb::{create_tables, keys, DynamoStore, TableNames};
use countersign_core::ports::{AuditLog, EventOutbox, PolicyStore, RequestStore};
use countersign_sqlite::EmbeddedStore;

/// Everything a conformance test needs from a store.
pub trait Store: PolicyStore + RequestStore + AuditLog + EventOutbox + 'static {}
impl<T: PolicyStore + RequestStore + AuditLog + EventOutbox + 'static> Store for T {}

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
    Some(Sut { tamper: Box::new(SqliteTamper { path: store.db_path().to_path_buf() }), store, _keep: Box::new(dir) })
}

/// Raw access through a second connection to the database file. The store's triggers refuse to change
/// audit rows, so this drops them first, as anyone with write access to the file can.
pub struct SqliteTamper {
    path: PathBuf,
}

impl SqliteTamper {
    /// Tampers with the database file at `path`.
    pub fn at(path: &Path) -> Self {
        Self { path: path.to_path_buf() }
    }

    fn conn(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(&self.path).expect("open database file");
        conn.busy_timeout(std::time::Duration::from_secs(5)).expect("busy timeout");
        conn.execute_batch(
            "DROP TRIGGER IF EXISTS audit_is_append_only_update;
             DROP TRIGGER IF EXISTS audit_is_append_only_delete;",
        )
        .expect("drop triggers");
        conn
    }

    fn doc(conn: &rusqlite::Connection, seq: u64) -> String {
        conn.query_row("SELECT doc FROM audit WHERE seq = ?1", [i64::try_from(seq).unwrap()], |r| r.get(0))
            .expect("audit record exists")
    }

    fn set_doc(conn: &rusqlite::Connection, seq: u64, doc: &str) {
        let n = conn
            .execute("UPDATE audit SET doc = ?2 WHERE seq = ?1", rusqlite::params![i64::try_from(seq).unwrap(), doc])
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
            .execute("DELETE FROM audit WHERE seq = ?1", [i64::try_from(seq).unwrap()])
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

// ---- DynamoDB ----

/// A DynamoDB store on fresh tables (unique prefix) in the emulator at `AWS_ENDPOINT_URL`, with dummy
/// credentials so the tests can never reach a real account. `None` when no emulator is configured; in
/// CI (`CI=true`) that is a failure instead, so the DynamoDB tests cannot silently skip.
/// The emulator's endpoint: `None` (with a notice) when unset outside CI; a failure under `CI=true`; never
/// anything but a loopback address.
pub fn emulator_endpoint() -> Option<String> {
    crate::emulator::endpoint(crate::emulator::Service::Dynamodb)
}

pub async fn dynamo() -> Option<(Arc<DynamoStore>, aws_sdk_dynamodb::Client, TableNames)> {
    let endpoint = emulator_endpoint()?;
    let config = crate::emulator::sdk_config(&endpoint).await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let prefix = format!("cs-test-{}", ulid::Ulid::new().to_string().to_lowercase());
    let tables = TableNames::with_prefix(&prefix);
    create_tables(&client, &tables).await.expect("create DynamoDB tables");
    let store = DynamoStore::new(client.clone(), tables.clone());
    Some((Arc::new(store), client, tables))
}

pub async fn dynamo_sut() -> Option<Sut<DynamoStore>> {
    let (store, client, tables) = dynamo().await?;
    Some(Sut { store, tamper: Box::new(DynamoTamper { client, table: tables.audit }), _keep: Box::new(()) })
}

/// Raw access to the audit table through the SDK, bypassing the adapter (and the IAM policy that forbids
/// updates and deletes in production).
pub struct DynamoTamper {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoTamper {
    /// Raw access to the audit table `table`.
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        Self { client, table }
    }

    fn key(seq: u64) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (keys::PK.to_string(), AttributeValue::S(keys::CHAIN_PK.to_string())),
            (keys::SEQ.to_string(), AttributeValue::N(seq.to_string())),
        ])
    }

    async fn item(&self, seq: u64) -> HashMap<String, AttributeValue> {
        self.client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(seq)))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem audit record")
            .item
            .expect("audit record exists")
    }

    fn doc(item: &HashMap<String, AttributeValue>) -> String {
        item.get(keys::DOC).and_then(|v| v.as_s().ok()).expect("audit record has a doc").clone()
    }

    async fn put(&self, mut item: HashMap<String, AttributeValue>, doc: String) {
        item.insert(keys::DOC.to_string(), AttributeValue::S(doc));
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.expect("PutItem audit record");
    }
}

#[async_trait]
impl Tamper for DynamoTamper {
    async fn edit_audit(&self, seq: u64) {
        let item = self.item(seq).await;
        let doc = edited(&Self::doc(&item));
        self.put(item, doc).await;
    }

    async fn delete_audit(&self, seq: u64) {
        self.item(seq).await;
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(seq)))
            .send()
            .await
            .expect("DeleteItem audit record");
    }

    async fn swap_audit(&self, a: u64, b: u64) {
        let (item_a, item_b) = (self.item(a).await, self.item(b).await);
        let (doc_a, doc_b) = (Self::doc(&item_a), Self::doc(&item_b));
        self.put(item_a, doc_b).await;
        self.put(item_b, doc_a).await;
    }
}
