//! The embedded store for local mode: one SQLite file, `DIR/countersign.db`, that implements
//! [`PolicyStore`], [`RequestStore`] and [`AuditLog`] with the same guarantees as the DynamoDB store.
//!
//! Writes go to one writer thread that owns the only write connection and commits them in groups: it takes
//! every write waiting in its queue, runs each inside its own `SAVEPOINT` within one `BEGIN IMMEDIATE …
//! COMMIT`, and answers each caller only after that `COMMIT` returned. A write whose condition fails (or that
//! fails in any way) is rolled back to its savepoint alone and reported to its caller; the others commit.
//! So writes stay serialized and all-or-nothing each, and a second process on the same file waits (busy
//! timeout) instead of interleaving, while a burst of concurrent writes costs one fsync instead of one each.
//! The file uses WAL with `synchronous=FULL`: an acknowledged write survives a crash or a power loss.
//!
//! Reads run on a small pool of separate connections, each operation in its own read transaction (WAL lets
//! them run beside the writer). A read that starts after a write was acknowledged sees that write.
//!
//! The `audit` table is append-only: this module contains no statement that updates or deletes its rows,
//! and triggers refuse such statements from any connection. Someone with write access to the file can still
//! drop the triggers and edit it; the hash chain (`domain::audit::verify_chain`) is what detects that.
//!
//! Items are stored as their domain JSON (`doc`) plus the columns the queries need. An item whose JSON no
//! longer parses is reported as [`StoreError::Corrupt`], never skipped.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use crate::domain::audit::seal_after;
use crate::domain::request::NotificationState;
use crate::domain::{ApprovalRequest, AuditDraft, AuditEvent, Policy, PolicyName, RequestId, Status, Timestamp};
use crate::ports::{AuditLog, Commit, Conflict, CreateOutcome, Guard, PolicyStore, RequestStore, SameKind, StoreError};

/// The database file inside the data directory.
pub const DB_FILE: &str = "countersign.db";

/// How long an operation waits for another process holding the write lock before `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations, applied in order; `PRAGMA user_version` is the number applied so far.
/// Never edit a released migration: append a new one.
const MIGRATIONS: &[&str] = &[
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
];

/// At most this many writes share one transaction (and one fsync).
const MAX_BATCH: usize = 128;

/// Idle read connections kept open for reuse.
const MAX_IDLE_READERS: usize = 8;

/// The SQLite-backed store. Share it behind an `Arc`: every clone of the `Arc` uses the one writer thread
/// and the one pool of read connections.
pub struct EmbeddedStore {
    path: PathBuf,
    /// The writer's queue; `None` only while dropping.
    writes: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    readers: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").field("path", &self.path).finish_non_exhaustive()
    }
}

/// What a write reports to the writer: whether it succeeded (so its savepoint is released, else rolled
/// back), and how to answer its caller once the outcome of the whole transaction is known (`None`: it
/// committed; `Some(e)`: the transaction did not commit).
struct Ran {
    ok: bool,
    answer: Answer,
}

type Answer = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// One write, waiting for the writer, which runs it on its connection (or, given `None`, only prepares its
/// answer: it will not run). If it panics, its answer is dropped and its caller gets an error.
type Job = Box<dyn FnOnce(Option<&Connection>) -> Ran + Send>;

/// Wraps `f` as a [`Job`]; the receiver gets its answer.
fn job<T, F>(f: F) -> (Job, oneshot::Receiver<Result<T, StoreError>>)
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    let (reply, answer) = oneshot::channel::<Result<T, StoreError>>();
    let job: Job = Box::new(move |conn| {
        let out = match conn {
            Some(conn) => f(conn),
            None => Err(StoreError::Other("not run".into())),
        };
        Ran {
            ok: out.is_ok(),
            answer: Box::new(move |failed| {
                let _ = reply.send(match failed {
                    None => out,
                    Some(e) => Err(same_error(e)),
                });
            }),
        }
    });
    (job, answer)
}

/// Opens a connection with the settings every connection of the store uses.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).sql()?;
    conn.busy_timeout(BUSY_TIMEOUT).sql()?;
    conn.pragma_update(None, "foreign_keys", "ON").sql()?;
    // Every statement of the store stays prepared (rusqlite keeps 16 by default; the store has ~25).
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl EmbeddedStore {
    /// Opens (creating if needed) `DIR/countersign.db` with WAL, `synchronous=FULL` and a busy timeout, runs
    /// the migrations it has not seen yet and starts the writer thread.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(StoreError::unavailable)?;
        let path = data_dir.join(DB_FILE);
        let mut conn = connect(&path)?;
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).sql()?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Other(format!(
                "{} could not be switched to WAL (journal_mode is {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL").sql()?;
        migrate(&mut conn)?;
        let (writes, queue) = mpsc::channel::<Job>();
        let writer = std::thread::Builder::new()
            .name("countersign-sqlite-writer".into())
            .spawn(move || write_loop(&conn, &queue))
            .map_err(StoreError::unavailable)?;
        Ok(Self { path, writes: Some(writes), writer: Some(writer), readers: Mutex::new(Vec::new()) })
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` as one write: in its own savepoint, inside the writer's current transaction. Answers only
    /// after that transaction committed (or with an error if it did not); `f`'s error rolls back `f` alone.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (job, answer) = job(f);
        let stopped = || StoreError::Other("the embedded store's writer has stopped".into());
        self.writes.as_ref().ok_or_else(stopped)?.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| StoreError::Other("the embedded store's writer dropped a write".into()))?
    }

    /// Runs `f` in one read transaction on a pooled read connection, on a blocking thread.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut conn = match idle {
            Some(c) => c,
            None => {
                let c = connect(&self.path)?;
                c.pragma_update(None, "query_only", "ON").sql()?;
                c
            }
        };
        let (conn, out) = tokio::task::spawn_blocking(move || {
            let out = (|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).sql()?;
                let out = f(&tx)?;
                tx.commit().sql()?;
                Ok(out)
            })();
            (conn, out)
        })
        .await
        .map_err(|e| StoreError::Other(format!("embedded store task failed: {e}")))?;
        if conn.is_autocommit() {
            let mut idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
        }
        out
    }
}

impl Drop for EmbeddedStore {
    /// Lets the writer finish what is queued (its callers are waiting for their answers) and close.
    fn drop(&mut self) {
        drop(self.writes.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// A copy of `e` for each caller of a transaction that did not commit.
fn same_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(src) => StoreError::Unavailable(src.to_string().into()),
        StoreError::Conflict(c) => StoreError::Conflict(*c),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        StoreError::Other(m) => StoreError::Other(m.clone()),
    }
}

/// The writer: waits for a write, then commits everything queued by then as one transaction.
fn write_loop(conn: &Connection, queue: &mpsc::Receiver<Job>) {
    let mut carried: VecDeque<Job> = VecDeque::new();
    loop {
        if carried.is_empty() {
            match queue.recv() {
                Ok(job) => carried.push_back(job),
                Err(_) => return,
            }
        }
        while carried.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => carried.push_back(job),
                Err(_) => break,
            }
        }
        let take = carried.len().min(MAX_BATCH);
        let batch: Vec<Job> = carried.drain(..take).collect();
        let rest = commit_batch(conn, batch);
        // Writes the batch could not run (its transaction was lost) go first into the next one.
        for job in rest.into_iter().rev() {
            carried.push_front(job);
        }
    }
}

/// Runs `batch` in one transaction, each write in its own savepoint, then commits and answers every write
/// that ran. Returns the writes it did not run because the transaction ended under it.
fn commit_batch(conn: &Connection, batch: Vec<Job>) -> Vec<Job> {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE").sql() {
        // Nothing ran: every caller gets the reason (busy: another process held the lock too long).
        for job in batch {
            (job(None).answer)(Some(&e));
        }
        return Vec::new();
    }
    let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    let mut lost: Option<StoreError> = None;
    for job in jobs.by_ref() {
        if let Err(e) = conn.execute_batch("SAVEPOINT write").sql() {
            (job(None).answer)(Some(&e));
            lost = Some(e);
            break;
        }
        let ran = catch_unwind(AssertUnwindSafe(|| job(Some(conn))));
        let ok = matches!(&ran, Ok(r) if r.ok);
        if let Ok(r) = ran {
            answers.push(r.answer);
        }
        let end = if ok { "RELEASE write" } else { "ROLLBACK TO write; RELEASE write" };
        // A failure that ended the whole transaction (SQLite rolls back on some I/O errors) also ends the
        // batch: what ran so far is gone, and nothing more may run outside a transaction.
        if let Err(e) = conn.execute_batch(end).sql() {
            lost = Some(e);
            break;
        }
        if conn.is_autocommit() {
            lost = Some(StoreError::Other("the write transaction was rolled back by SQLite".into()));
            break;
        }
    }
    let rest: Vec<Job> = jobs.collect();
    let outcome = match lost {
        Some(e) => Err(e),
        None => conn.execute_batch("COMMIT").sql(),
    };
    match &outcome {
        Ok(()) => answers.into_iter().for_each(|answer| answer(None)),
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            answers.into_iter().for_each(|answer| answer(Some(e)));
        }
    }
    rest
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
    action: String,
    environment: String,
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
            action: r.action.as_str().to_string(),
            environment: r.environment.as_str().to_string(),
        })
    }
}

// ---- operations inside a transaction ----

fn get_request_tx(tx: &Connection, id: &str) -> Result<Option<ApprovalRequest>, StoreError> {
    let doc: Option<String> = tx
        .prepare_cached("SELECT doc FROM requests WHERE id = ?1")
        .sql()?
        .query_row([id], |r| r.get(0))
        .optional()
        .sql()?;
    doc.map(|d| parse_request(id, &d)).transpose()
}

fn query_requests(
    tx: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<ApprovalRequest>, StoreError> {
    let mut stmt = tx.prepare_cached(sql).sql()?;
    let rows = stmt.query_map(params, |r| Ok((r.get(0)?, r.get(1)?))).sql()?;
    collect(rows, parse_request)
}

fn query_audit(tx: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<AuditEvent>, StoreError> {
    let mut stmt = tx.prepare_cached(sql).sql()?;
    let rows = stmt.query_map(params, |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))).sql()?;
    rows.map(|row| {
        let (position, doc) = row.sql()?;
        parse_audit(position, &doc)
    })
    .collect()
}

fn last_audit_tx(tx: &Connection) -> Result<Option<(i64, AuditEvent)>, StoreError> {
    let row: Option<(i64, String)> = tx
        .prepare_cached("SELECT seq, doc FROM audit ORDER BY seq DESC LIMIT 1")
        .sql()?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .sql()?;
    row.map(|(position, doc)| parse_audit(position, &doc).map(|e| (position, e))).transpose()
}

/// Seals `drafts` after the last record and inserts them. Refuses to extend a chain whose tail record is
/// not at its own position (someone moved it), rather than hide the damage under new records.
fn append_tx(tx: &Connection, drafts: Vec<AuditDraft>) -> Result<Vec<AuditEvent>, StoreError> {
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
    tx: &Connection,
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
            .prepare_cached("SELECT request_id FROM idempotency WHERE principal = ?1 AND idempotency_key = ?2")
            .sql()?
            .query_row(params![row.principal, key.as_str()], |r| r.get(0))
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
            .prepare_cached("SELECT count(*) FROM requests WHERE principal = ?1 AND policy = ?2 AND status = 'pending'")
            .sql()?
            .query_row(params![row.principal, row.policy], |r| r.get(0))
            .sql()?;
        if pending >= i64::from(max_pending) {
            return Ok(CreateOutcome::TooManyPending);
        }
    }
    let taken: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM requests WHERE id = ?1)")
        .sql()?
        .query_row([&row.id], |r| r.get(0))
        .sql()?;
    if taken {
        return Err(StoreError::Other(format!("request id {} already exists", row.id)));
    }
    tx.prepare_cached(
        "INSERT INTO requests (id, doc, status, version, expires_at, principal, policy, created_at, notify_due,
             action, environment)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .sql()?
    .execute(params![
        row.id,
        row.doc,
        row.status,
        row.version,
        row.expires_at,
        row.principal,
        row.policy,
        row.created_at,
        row.notify_due,
        row.action,
        row.environment,
    ])
    .sql()?;
    if let Some(key) = &request.idempotency_key {
        tx.prepare_cached("INSERT INTO idempotency (principal, idempotency_key, request_id) VALUES (?1, ?2, ?3)")
            .sql()?
            .execute(params![row.principal, key.as_str(), row.id])
            .sql()?;
    }
    append_tx(tx, events)?;
    Ok(CreateOutcome::Created)
}

fn commit_tx(tx: &Connection, c: Commit) -> Result<(), StoreError> {
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
        .prepare_cached("SELECT status, version, expires_at FROM requests WHERE id = ?1")
        .sql()?
        .query_row([&row.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .sql()?;
    // A second vote by the same user is reported as such even when the request also changed meanwhile.
    if let Some(v) = &c.vote {
        let voted: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM votes WHERE request_id = ?1 AND user_id = ?2)")
            .sql()?
            .query_row(params![row.id, v.user_id.as_str()], |r| r.get(0))
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
        .prepare_cached(
            "UPDATE requests SET doc = ?2, status = ?3, version = ?4, expires_at = ?5, principal = ?6,
                 policy = ?7, created_at = ?8, notify_due = ?9, action = ?11, environment = ?12
             WHERE id = ?1 AND version = ?10",
        )
        .sql()?
        .execute(params![
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
            row.action,
            row.environment,
        ])
        .sql()?;
    if changed != 1 {
        return Err(StoreError::Conflict(Conflict::Stale));
    }
    if let Some(v) = &c.vote {
        tx.prepare_cached("INSERT INTO votes (request_id, user_id, doc) VALUES (?1, ?2, ?3)")
            .sql()?
            .execute(params![row.id, v.user_id.as_str(), to_json(v, "vote")?])
            .sql()?;
    }
    append_tx(tx, c.events)?;
    Ok(())
}

// ---- ports ----

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

#[async_trait]
impl RequestStore for EmbeddedStore {
    async fn create_request(
        &self,
        request: &ApprovalRequest,
        events: Vec<AuditDraft>,
        max_pending: u32,
    ) -> Result<CreateOutcome, StoreError> {
        let request = request.clone();
        self.write(move |tx| create_request_tx(tx, &request, events, max_pending)).await
    }

    async fn get_request(&self, id: &RequestId) -> Result<Option<ApprovalRequest>, StoreError> {
        let id = id.to_string();
        self.read(move |tx| get_request_tx(tx, &id)).await
    }

    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        self.write(move |tx| commit_tx(tx, commit)).await
    }

    async fn list_pending(&self, limit_n: usize) -> Result<Vec<ApprovalRequest>, StoreError> {
        self.read(move |tx| {
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
        self.read(move |tx| {
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
        self.read(move |tx| {
            query_requests(
                tx,
                "SELECT id, doc FROM requests WHERE principal = ?1 AND created_at >= ?2
                 ORDER BY created_at DESC, id DESC LIMIT ?3",
                params![principal, since.unix_millis(), limit(limit_n)],
            )
        })
        .await
    }

    /// Counted on the indexed columns: no document is parsed but the newest one's.
    async fn earlier_of_same_kind(
        &self,
        r: &ApprovalRequest,
        since: Timestamp,
        limit_n: usize,
    ) -> Result<SameKind, StoreError> {
        let (principal, action, environment) =
            (r.requester.principal.clone(), r.action.as_str().to_string(), r.environment.as_str().to_string());
        let (created_at, id) = (r.created_at.unix_millis(), r.id.to_string());
        self.read(move |c| {
            // Counted inside SQLite over the covering index (no row leaves it), then the newest match picked
            // with one index seek: if any match is among the newest `limit`, the newest match is too.
            let args = params![principal, since.unix_millis(), limit(limit_n), action, environment, created_at, id];
            let count: i64 = c
                .prepare_cached(
                    "SELECT count(*) FROM (
                         SELECT id, created_at, action, environment FROM requests
                         WHERE principal = ?1 AND created_at >= ?2
                         ORDER BY created_at DESC, id DESC LIMIT ?3)
                     WHERE action = ?4 AND environment = ?5 AND (created_at < ?6 OR (created_at = ?6 AND id < ?7))",
                )
                .sql()?
                .query_row(args, |row| row.get(0))
                .sql()?;
            let newest: Option<String> = if count == 0 {
                None
            } else {
                c.prepare_cached(
                    "SELECT id FROM requests
                     WHERE principal = ?1 AND created_at >= ?2 AND action = ?4 AND environment = ?5
                       AND (created_at < ?6 OR (created_at = ?6 AND id < ?7))
                     ORDER BY created_at DESC, id DESC LIMIT min(?3, 1)",
                )
                .sql()?
                .query_row(args, |row| row.get(0))
                .optional()
                .sql()?
            };
            let newest = match newest {
                Some(newest) => Some(
                    get_request_tx(c, &newest)?
                        .ok_or_else(|| StoreError::Other(format!("request {newest} vanished in a read")))?,
                ),
                None => None,
            };
            Ok(SameKind { count: u32::try_from(count).unwrap_or(u32::MAX), newest })
        })
        .await
    }
}

#[async_trait]
impl AuditLog for EmbeddedStore {
    async fn append(&self, events: Vec<AuditDraft>) -> Result<Vec<AuditEvent>, StoreError> {
        self.write(move |tx| append_tx(tx, events)).await
    }

    async fn read_from(&self, from_seq: u64, limit_n: usize) -> Result<Vec<AuditEvent>, StoreError> {
        // Past i64::MAX there is nothing to read.
        let Ok(from) = i64::try_from(from_seq) else {
            return Ok(Vec::new());
        };
        self.read(move |tx| {
            query_audit(tx, "SELECT seq, doc FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2", [from, limit(limit_n)])
        })
        .await
    }

    async fn for_request(&self, id: &RequestId) -> Result<Vec<AuditEvent>, StoreError> {
        let id = id.to_string();
        self.read(move |tx| query_audit(tx, "SELECT seq, doc FROM audit WHERE request_id = ?1 ORDER BY seq", [id]))
            .await
    }

    async fn last(&self) -> Result<Option<AuditEvent>, StoreError> {
        self.read(|tx| Ok(last_audit_tx(tx)?.map(|(_, e)| e))).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::domain::request::Governing;
    use crate::domain::{Actor, AuditKind};
    use crate::ports::{Commit, Guard};

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

    fn answer<T: std::fmt::Debug>(rx: &mut oneshot::Receiver<Result<T, StoreError>>) -> Result<T, StoreError> {
        match rx.try_recv() {
            Ok(r) => r,
            Err(e) => Err(StoreError::Other(format!("no answer: {e}"))),
        }
    }

    #[tokio::test]
    async fn a_batch_commits_its_writes_and_reports_the_one_whose_condition_failed() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let t0 = Timestamp::from_unix_millis(1_795_621_462_000);
        let r = crate::domain::request::tests::sample(2, t0);
        store.create_request(&r, r.creation_events(), 5).await.unwrap();
        let user = crate::domain::SlackUserId::parse("UAPPROVER1").unwrap();
        let now = t0.plus_seconds(1);
        let vote = |r: &ApprovalRequest| {
            let t = r.approve(&user, &Governing::as_stored(r), now).unwrap();
            Commit {
                expected_version: r.version,
                request: t.request,
                vote: t.vote,
                events: t.events,
                guard: Guard::OpenAt(now),
            }
        };
        // The same approver's vote twice in one batch (a double click): exactly one counts.
        let (first, second) = (vote(&r), vote(&r));
        let (j1, mut a1) = job(move |c| commit_tx(c, first));
        let (j2, mut a2) = job(move |c| commit_tx(c, second));
        let (j3, mut a3) = job(move |c| append_tx(c, vec![draft(3)]));
        let conn = connect(store.db_path()).unwrap();
        assert!(commit_batch(&conn, vec![j1, j2, j3]).is_empty());
        answer(&mut a1).unwrap();
        assert!(matches!(answer(&mut a2), Err(StoreError::Conflict(Conflict::DuplicateVote))));
        assert_eq!(answer(&mut a3).unwrap().len(), 1);
        let stored = store.get_request(&r.id).await.unwrap().unwrap();
        assert_eq!((stored.version, stored.approvals.len()), (2, 1));
        let chain = store.read_from(1, 100).await.unwrap();
        crate::domain::audit::verify_chain(&chain).unwrap();
        assert_eq!(chain.len(), r.creation_events().len() + 2, "create, one vote, one draft");
    }

    #[tokio::test]
    async fn a_write_that_fails_or_panics_is_rolled_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let (j1, mut a1) = job(|c| append_tx(c, vec![draft(1)]));
        let (j2, mut a2) = job(|c| -> Result<(), StoreError> {
            append_tx(c, vec![draft(2)])?;
            Err(StoreError::Other("refused after writing".into()))
        });
        let (j3, mut a3) = job(|c| -> Result<(), StoreError> {
            append_tx(c, vec![draft(3)])?;
            panic!("a bug in a write")
        });
        let (j4, mut a4) = job(|c| append_tx(c, vec![draft(4)]));
        let conn = connect(store.db_path()).unwrap();
        assert!(commit_batch(&conn, vec![j1, j2, j3, j4]).is_empty());
        assert!(answer(&mut a1).is_ok() && answer(&mut a4).is_ok());
        assert!(matches!(answer(&mut a2), Err(StoreError::Other(m)) if m.contains("refused")));
        assert!(answer(&mut a3).is_err());
        let chain = store.read_from(1, 100).await.unwrap();
        crate::domain::audit::verify_chain(&chain).unwrap();
        let kept: Vec<&str> = chain.iter().map(|e| e.details["i"].as_str()).collect();
        assert_eq!(kept, ["1", "4"]);
    }

    #[tokio::test]
    async fn when_the_write_lock_cannot_be_had_every_write_of_the_batch_is_unavailable_and_none_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let other = connect(store.db_path()).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let conn = connect(store.db_path()).unwrap();
        conn.busy_timeout(Duration::from_millis(10)).unwrap();
        let (j1, mut a1) = job(|c| append_tx(c, vec![draft(1)]));
        let (j2, mut a2) = job(|c| append_tx(c, vec![draft(2)]));
        assert!(commit_batch(&conn, vec![j1, j2]).is_empty());
        assert!(matches!(answer(&mut a1), Err(StoreError::Unavailable(_))));
        assert!(matches!(answer(&mut a2), Err(StoreError::Unavailable(_))));
        other.execute_batch("ROLLBACK").unwrap();
        assert!(store.read_from(1, 10).await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_acknowledged_writes_are_all_on_disk_without_a_clean_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.append(vec![draft(i)]).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // No drop, no checkpoint: what was acknowledged must already be committed to the file.
        std::mem::forget(store);
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let n: i64 = conn.query_row("SELECT count(*) FROM audit", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 64);
        drop(conn);
        let reopened = EmbeddedStore::open(dir.path()).unwrap();
        let chain = reopened.read_from(1, 100).await.unwrap();
        assert_eq!(chain.len(), 64);
        crate::domain::audit::verify_chain(&chain).unwrap();
    }

    // That the count on the indexed columns equals the default over `list_by_principal` is the conformance
    // test `earlier_of_same_kind_agrees_with_the_listed_requests`, run on both stores.

    #[tokio::test]
    async fn upgrading_from_schema_1_fills_the_history_columns_of_existing_requests() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Timestamp::from_unix_millis(1_795_621_462_000);
        let (old, new) = (
            crate::domain::request::tests::sample(2, t0),
            crate::domain::request::tests::sample(2, t0.plus_seconds(60)),
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
