//! The embedded store for local mode: one SQLite file, `DIR/countersign.db`, that implements
//! [`PolicyStore`], [`RequestStore`] and [`AuditLog`] with the same guarantees as the DynamoDB store.
//!
//! Every operation runs on a blocking thread, on the one connection behind a mutex, inside one
//! `BEGIN IMMEDIATE` transaction: operations are serialized and all-or-nothing, and a second process on the
//! same file waits (busy timeout) instead of interleaving. The file uses WAL with `synchronous=FULL`, so a
//! committed vote survives a crash.
//!
//! The `audit` table is append-only: this module contains no statement that updates or deletes its rows,
//! and triggers refuse such statements from any connection. Someone with write access to the file can still
//! drop the triggers and edit it; the hash chain (`domain::audit::verify_chain`) is what detects that.
//!
//! Items are stored as their domain JSON (`doc`) plus the columns the queries need. An item whose JSON no
//! longer parses is reported as [`StoreError::Corrupt`], never skipped.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior};

use crate::domain::audit::seal_after;
use crate::domain::request::NotificationState;
use crate::domain::{ApprovalRequest, AuditDraft, AuditEvent, Policy, PolicyName, RequestId, Status, Timestamp};
use crate::ports::{AuditLog, Commit, Conflict, CreateOutcome, Guard, PolicyStore, RequestStore, StoreError};

/// The database file inside the data directory.
pub const DB_FILE: &str = "countersign.db";

/// How long an operation waits for another process holding the write lock before `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations, applied in order; `PRAGMA user_version` is the number applied so far.
/// Never edit a released migration: append a new one.
const MIGRATIONS: &[&str] = &[r#"
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
"#];

/// The SQLite-backed store. Cheap to share behind an `Arc`; all clones of the `Arc` use one connection.
#[derive(Debug)]
pub struct EmbeddedStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl EmbeddedStore {
    /// Opens (creating if needed) `DIR/countersign.db` with WAL, `synchronous=FULL` and a busy timeout, and
    /// runs the migrations it has not seen yet.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(StoreError::unavailable)?;
        let path = data_dir.join(DB_FILE);
        let mut conn = Connection::open(&path).sql()?;
        conn.busy_timeout(BUSY_TIMEOUT).sql()?;
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).sql()?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Other(format!(
                "{} could not be switched to WAL (journal_mode is {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL").sql()?;
        conn.pragma_update(None, "foreign_keys", "ON").sql()?;
        migrate(&mut conn)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)), path })
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on a blocking thread; commits only if `f` succeeds.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while the lock was held dropped its transaction, which rolled back: the connection
            // is still consistent, so a poisoned lock is safe to take over.
            let mut guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            let tx = guard.transaction_with_behavior(TransactionBehavior::Immediate).sql()?;
            let out = f(&tx)?;
            tx.commit().sql()?;
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Other(format!("embedded store task failed: {e}")))?
    }
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

// ---- errors ----

trait Sql<T> {
    fn sql(self) -> Result<T, StoreError>;
}

impl<T> Sql<T> for rusqlite::Result<T> {
    fn sql(self) -> Result<T, StoreError> {
        self.map_err(sql_error)
    }
}

/// Busy, locked and I/O failures are retryable (`Unavailable`); everything else is not.
fn sql_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::DiskFull
                    | ErrorCode::CannotOpen
                    | ErrorCode::FileLockingProtocolFailed
            ) =>
        {
            StoreError::unavailable(e)
        }
        _ => StoreError::Other(format!("sqlite: {e}")),
    }
}

fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Other(format!("{what} {v} is out of range")))
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_json<T: serde::Serialize>(v: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Other(format!("cannot encode {what}: {e}")))
}

// ---- rows ----

fn parse_request(id: &str, doc: &str) -> Result<ApprovalRequest, StoreError> {
    let r: ApprovalRequest =
        serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("request {id}: {e}")))?;
    if r.id.to_string() != id {
        return Err(StoreError::Corrupt(format!("request row {id} holds request {}", r.id)));
    }
    Ok(r)
}

fn parse_policy(name: &str, doc: &str) -> Result<Policy, StoreError> {
    let p: Policy = serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("policy {name}: {e}")))?;
    if p.name.as_str() != name {
        return Err(StoreError::Corrupt(format!("policy row {name} holds policy {}", p.name)));
    }
    Ok(p)
}

/// The record as stored. Its position (`seq` column) is not checked against its own `seq`: a record moved
/// by tampering must come back where it now is, so that chain verification names it.
fn parse_audit(position: i64, doc: &str) -> Result<AuditEvent, StoreError> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("audit record at seq {position}: {e}")))
}

fn collect<T>(
    rows: impl Iterator<Item = rusqlite::Result<(String, String)>>,
    parse: impl Fn(&str, &str) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.map(|row| {
        let (key, doc) = row.sql()?;
        parse(&key, &doc)
    })
    .collect()
}

/// When the relay owes Slack a post or an update: not yet posted, or the message is stale.
fn notification_due(r: &ApprovalRequest) -> Option<Timestamp> {
    let n = &r.notification;
    (n.state != NotificationState::Posted || n.update_pending).then(|| n.next_attempt_at.unwrap_or(r.created_at))
}

/// The indexed columns of a request, derived from the request itself so they can never disagree.
struct RequestRow {
    id: String,
    doc: String,
    status: &'static str,
    version: i64,
    expires_at: i64,
    principal: String,
    policy: String,
    created_at: i64,
    notify_due: Option<i64>,
}

impl RequestRow {
    fn of(r: &ApprovalRequest) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.id.to_string(),
            doc: to_json(r, "request")?,
            status: r.status.as_str(),
            version: to_i64(r.version, "request version")?,
            expires_at: r.expires_at.unix_millis(),
            principal: r.requester.principal.clone(),
            policy: r.policy.name.to_string(),
            created_at: r.created_at.unix_millis(),
            notify_due: notification_due(r).map(Timestamp::unix_millis),
        })
    }
}

// ---- operations inside a transaction ----

fn get_request_tx(tx: &Transaction<'_>, id: &str) -> Result<Option<ApprovalRequest>, StoreError> {
    let doc: Option<String> =
        tx.query_row("SELECT doc FROM requests WHERE id = ?1", [id], |r| r.get(0)).optional().sql()?;
    doc.map(|d| parse_request(id, &d)).transpose()
}

fn query_requests(
    tx: &Transaction<'_>,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<ApprovalRequest>, StoreError> {
    let mut stmt = tx.prepare_cached(sql).sql()?;
    let rows = stmt.query_map(params, |r| Ok((r.get(0)?, r.get(1)?))).sql()?;
    collect(rows, parse_request)
}

fn query_audit(tx: &Transaction<'_>, sql: &str, params: impl rusqlite::Params) -> Result<Vec<AuditEvent>, StoreError> {
    let mut stmt = tx.prepare_cached(sql).sql()?;
    let rows = stmt.query_map(params, |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))).sql()?;
    rows.map(|row| {
        let (position, doc) = row.sql()?;
        parse_audit(position, &doc)
    })
    .collect()
}

fn last_audit_tx(tx: &Transaction<'_>) -> Result<Option<(i64, AuditEvent)>, StoreError> {
    let row: Option<(i64, String)> = tx
        .query_row("SELECT seq, doc FROM audit ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .sql()?;
    row.map(|(position, doc)| parse_audit(position, &doc).map(|e| (position, e))).transpose()
}

/// Seals `drafts` after the last record and inserts them. Refuses to extend a chain whose tail record is
/// not at its own position (someone moved it), rather than hide the damage under new records.
fn append_tx(tx: &Transaction<'_>, drafts: Vec<AuditDraft>) -> Result<Vec<AuditEvent>, StoreError> {
    if drafts.is_empty() {
        return Ok(Vec::new());
    }
    let last = match last_audit_tx(tx)? {
        None => None,
        Some((position, e)) => {
            if to_i64(e.seq, "audit seq")? != position {
                return Err(StoreError::Corrupt(format!(
                    "the last audit record, at seq {position}, says it is seq {}",
                    e.seq
                )));
            }
            Some((e.seq, e.hash))
        }
    };
    let events = seal_after(last, drafts);
    let mut stmt = tx.prepare_cached("INSERT INTO audit (seq, doc, request_id, at) VALUES (?1, ?2, ?3, ?4)").sql()?;
    for e in &events {
        stmt.execute(params![
            to_i64(e.seq, "audit seq")?,
            to_json(e, "audit record")?,
            e.request_id.map(|r| r.to_string()),
            e.at.unix_millis(),
        ])
        .sql()?;
    }
    Ok(events)
}

fn create_request_tx(
    tx: &Transaction<'_>,
    request: &ApprovalRequest,
    events: Vec<AuditDraft>,
    max_pending: u32,
) -> Result<CreateOutcome, StoreError> {
    if request.version != 1 {
        return Err(StoreError::Other(format!("a new request must have version 1, not {}", request.version)));
    }
    let row = RequestRow::of(request)?;
    if let Some(key) = &request.idempotency_key {
        let existing: Option<String> = tx
            .query_row(
                "SELECT request_id FROM idempotency WHERE principal = ?1 AND idempotency_key = ?2",
                params![row.principal, key.as_str()],
                |r| r.get(0),
            )
            .optional()
            .sql()?;
        if let Some(id) = existing {
            return match get_request_tx(tx, &id)? {
                Some(r) => Ok(CreateOutcome::Existing(r)),
                None => Err(StoreError::Corrupt(format!(
                    "idempotency key of {} points at missing request {id}",
                    row.principal
                ))),
            };
        }
    }
    // Only a new pending request can exceed the number of pending requests.
    if request.status == Status::Pending {
        let pending: i64 = tx
            .query_row(
                "SELECT count(*) FROM requests WHERE principal = ?1 AND policy = ?2 AND status = 'pending'",
                params![row.principal, row.policy],
                |r| r.get(0),
            )
            .sql()?;
        if pending >= i64::from(max_pending) {
            return Ok(CreateOutcome::TooManyPending);
        }
    }
    let taken: bool =
        tx.query_row("SELECT EXISTS (SELECT 1 FROM requests WHERE id = ?1)", [&row.id], |r| r.get(0)).sql()?;
    if taken {
        return Err(StoreError::Other(format!("request id {} already exists", row.id)));
    }
    tx.execute(
        "INSERT INTO requests (id, doc, status, version, expires_at, principal, policy, created_at, notify_due)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            row.id,
            row.doc,
            row.status,
            row.version,
            row.expires_at,
            row.principal,
            row.policy,
            row.created_at,
            row.notify_due,
        ],
    )
    .sql()?;
    if let Some(key) = &request.idempotency_key {
        tx.execute(
            "INSERT INTO idempotency (principal, idempotency_key, request_id) VALUES (?1, ?2, ?3)",
            params![row.principal, key.as_str(), row.id],
        )
        .sql()?;
    }
    append_tx(tx, events)?;
    Ok(CreateOutcome::Created)
}

fn commit_tx(tx: &Transaction<'_>, c: Commit) -> Result<(), StoreError> {
    if c.expected_version.checked_add(1) != Some(c.request.version) {
        return Err(StoreError::Other(format!(
            "a commit from version {} must write version {}, not {}",
            c.expected_version,
            c.expected_version.saturating_add(1),
            c.request.version
        )));
    }
    if let Some(v) = &c.vote {
        if v.request_id != c.request.id {
            return Err(StoreError::Other(format!(
                "a vote on {} cannot be committed with request {}",
                v.request_id, c.request.id
            )));
        }
    }
    let row = RequestRow::of(&c.request)?;
    let stored: Option<(String, i64, i64)> = tx
        .query_row("SELECT status, version, expires_at FROM requests WHERE id = ?1", [&row.id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
        .sql()?;
    // A second vote by the same user is reported as such even when the request also changed meanwhile.
    if let Some(v) = &c.vote {
        let voted: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM votes WHERE request_id = ?1 AND user_id = ?2)",
                params![row.id, v.user_id.as_str()],
                |r| r.get(0),
            )
            .sql()?;
        if voted {
            return Err(StoreError::Conflict(Conflict::DuplicateVote));
        }
    }
    let Some((status, version, expires_at)) = stored else {
        return Err(StoreError::Conflict(Conflict::Stale));
    };
    let expected = to_i64(c.expected_version, "expected version")?;
    let pending = status == Status::Pending.as_str();
    let guard_holds = match c.guard {
        Guard::OpenAt(t) => pending && expires_at > t.unix_millis(),
        Guard::ExpiredAt(t) => pending && expires_at <= t.unix_millis(),
        Guard::VersionOnly => true,
    };
    if version != expected || !guard_holds {
        return Err(StoreError::Conflict(Conflict::Stale));
    }
    let changed = tx
        .execute(
            "UPDATE requests SET doc = ?2, status = ?3, version = ?4, expires_at = ?5, principal = ?6,
                 policy = ?7, created_at = ?8, notify_due = ?9
             WHERE id = ?1 AND version = ?10",
            params![
                row.id,
                row.doc,
                row.status,
                row.version,
                row.expires_at,
                row.principal,
                row.policy,
                row.created_at,
                row.notify_due,
                expected,
            ],
        )
        .sql()?;
    if changed != 1 {
        return Err(StoreError::Conflict(Conflict::Stale));
    }
    if let Some(v) = &c.vote {
        tx.execute(
            "INSERT INTO votes (request_id, user_id, doc) VALUES (?1, ?2, ?3)",
            params![row.id, v.user_id.as_str(), to_json(v, "vote")?],
        )
        .sql()?;
    }
    append_tx(tx, c.events)?;
    Ok(())
}

// ---- ports ----

#[async_trait]
impl PolicyStore for EmbeddedStore {
    async fn list_policies(&self) -> Result<Vec<Policy>, StoreError> {
        self.run(|tx| {
            let mut stmt = tx.prepare_cached("SELECT name, doc FROM policies ORDER BY name").sql()?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).sql()?;
            collect(rows, parse_policy)
        })
        .await
    }

    async fn get_policy(&self, name: &PolicyName) -> Result<Option<Policy>, StoreError> {
        let name = name.to_string();
        self.run(move |tx| {
            let doc: Option<String> =
                tx.query_row("SELECT doc FROM policies WHERE name = ?1", [&name], |r| r.get(0)).optional().sql()?;
            doc.map(|d| parse_policy(&name, &d)).transpose()
        })
        .await
    }

    async fn put_policy(&self, policy: &Policy, event: AuditDraft) -> Result<(), StoreError> {
        let name = policy.name.to_string();
        let doc = to_json(policy, "policy")?;
        let version = policy.version();
        self.run(move |tx| {
            tx.execute(
                "INSERT INTO policies (name, doc, version) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET doc = excluded.doc, version = excluded.version",
                params![name, doc, version],
            )
            .sql()?;
            append_tx(tx, vec![event])?;
            Ok(())
        })
        .await
    }

    async fn delete_policy(&self, name: &PolicyName, event: AuditDraft) -> Result<(), StoreError> {
        let name = name.to_string();
        self.run(move |tx| {
            tx.execute("DELETE FROM policies WHERE name = ?1", [&name]).sql()?;
            append_tx(tx, vec![event])?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl RequestStore for EmbeddedStore {
    async fn create_request(
        &self,
        request: &ApprovalRequest,
        events: Vec<AuditDraft>,
        max_pending: u32,
    ) -> Result<CreateOutcome, StoreError> {
        let request = request.clone();
        self.run(move |tx| create_request_tx(tx, &request, events, max_pending)).await
    }

    async fn get_request(&self, id: &RequestId) -> Result<Option<ApprovalRequest>, StoreError> {
        let id = id.to_string();
        self.run(move |tx| get_request_tx(tx, &id)).await
    }

    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        self.run(move |tx| commit_tx(tx, commit)).await
    }

    async fn list_pending(&self, limit_n: usize) -> Result<Vec<ApprovalRequest>, StoreError> {
        self.run(move |tx| {
            query_requests(
                tx,
                "SELECT id, doc FROM requests WHERE status = 'pending'
                 ORDER BY created_at, id LIMIT ?1",
                [limit(limit_n)],
            )
        })
        .await
    }

    async fn list_notification_due(&self, now: Timestamp, limit_n: usize) -> Result<Vec<ApprovalRequest>, StoreError> {
        self.run(move |tx| {
            query_requests(
                tx,
                "SELECT id, doc FROM requests WHERE notify_due IS NOT NULL AND notify_due <= ?1
                 ORDER BY notify_due, id LIMIT ?2",
                [now.unix_millis(), limit(limit_n)],
            )
        })
        .await
    }

    async fn list_by_principal(
        &self,
        principal: &str,
        since: Timestamp,
        limit_n: usize,
    ) -> Result<Vec<ApprovalRequest>, StoreError> {
        let principal = principal.to_string();
        self.run(move |tx| {
            query_requests(
                tx,
                "SELECT id, doc FROM requests WHERE principal = ?1 AND created_at >= ?2
                 ORDER BY created_at DESC, id DESC LIMIT ?3",
                params![principal, since.unix_millis(), limit(limit_n)],
            )
        })
        .await
    }
}

#[async_trait]
impl AuditLog for EmbeddedStore {
    async fn append(&self, events: Vec<AuditDraft>) -> Result<Vec<AuditEvent>, StoreError> {
        self.run(move |tx| append_tx(tx, events)).await
    }

    async fn read_from(&self, from_seq: u64, limit_n: usize) -> Result<Vec<AuditEvent>, StoreError> {
        // Past i64::MAX there is nothing to read.
        let Ok(from) = i64::try_from(from_seq) else {
            return Ok(Vec::new());
        };
        self.run(move |tx| {
            query_audit(tx, "SELECT seq, doc FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2", [from, limit(limit_n)])
        })
        .await
    }

    async fn for_request(&self, id: &RequestId) -> Result<Vec<AuditEvent>, StoreError> {
        let id = id.to_string();
        self.run(move |tx| query_audit(tx, "SELECT seq, doc FROM audit WHERE request_id = ?1 ORDER BY seq", [id])).await
    }

    async fn last(&self) -> Result<Option<AuditEvent>, StoreError> {
        self.run(|tx| Ok(last_audit_tx(tx)?.map(|(_, e)| e))).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::domain::{Actor, AuditKind};

    fn draft(i: u32) -> AuditDraft {
        AuditDraft::new(Timestamp::from_unix_millis(1_000), AuditKind::CallbackRejected, Actor::system("test"), None)
            .with("i", i.to_string())
    }

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

    #[tokio::test]
    async fn unparsable_items_are_corrupt_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let conn = Connection::open(store.db_path()).unwrap();
        conn.execute(
            "INSERT INTO requests (id, doc, status, version, expires_at, principal, policy, created_at)
             VALUES ('req_01JD0000000000000000000000', '{\"id\": 1}', 'pending', 1, 0, 'p', 'x', 0)",
            [],
        )
        .unwrap();
        conn.execute("INSERT INTO audit (seq, doc, request_id, at) VALUES (1, 'not json', NULL, 0)", []).unwrap();
        assert!(matches!(store.list_pending(10).await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.read_from(1, 10).await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.append(vec![draft(1)]).await, Err(StoreError::Corrupt(_))));
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
}
