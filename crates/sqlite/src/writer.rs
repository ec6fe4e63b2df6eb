//! The single writer: one thread owns the only write connection and commits the writes queued to it in
//! groups (group commit). It takes every write waiting in its queue, runs each inside its own `SAVEPOINT`
//! within one `BEGIN IMMEDIATE … COMMIT`, and answers each caller only after that `COMMIT` returned.
//!
//! A write whose condition fails (or that fails in any way, panics included) is rolled back to its savepoint
//! alone and reported to its caller; the others commit. This module must never answer a caller before the
//! transaction holding its write committed, never run a write outside a transaction, and never open a second
//! write connection: one writer is what keeps the writes serialized.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

use countersign_core::ports::StoreError;

use crate::error::Sql;
use crate::EmbeddedStore;

/// At most this many writes share one transaction (and one fsync).
const MAX_BATCH: usize = 128;

/// What a write reports to the writer: whether it succeeded (so its savepoint is released, else rolled
/// back), and how to answer its caller once the outcome of the whole transaction is known (`None`: it
/// committed; `Some(e)`: the transaction did not commit).
pub(crate) struct Ran {
    ok: bool,
    answer: Answer,
}

pub(crate) type Answer = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// One write, waiting for the writer, which runs it on its connection (or, given `None`, only prepares its
/// answer: it will not run). If it panics, its answer is dropped and its caller gets an error.
pub(crate) type Job = Box<dyn FnOnce(Option<&Connection>) -> Ran + Send>;

/// Wraps `f` as a [`Job`]; the receiver gets its answer.
pub(crate) fn job<T, F>(f: F) -> (Job, oneshot::Receiver<Result<T, StoreError>>)
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

/// Starts the writer thread on `conn`; the sender is its queue (dropping every sender stops it).
pub(crate) fn start(conn: Connection) -> Result<(mpsc::Sender<Job>, JoinHandle<()>), StoreError> {
    let (writes, queue) = mpsc::channel::<Job>();
    let writer = std::thread::Builder::new()
        .name("countersign-sqlite-writer".into())
        .spawn(move || write_loop(&conn, &queue))
        .map_err(StoreError::unavailable)?;
    Ok((writes, writer))
}

impl EmbeddedStore {
    /// Runs `f` as one write: in its own savepoint, inside the writer's current transaction. Answers only
    /// after that transaction committed (or with an error if it did not); `f`'s error rolls back `f` alone.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (job, answer) = job(f);
        let stopped = || StoreError::Other("the embedded store's writer has stopped".into());
        self.writes.as_ref().ok_or_else(stopped)?.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| StoreError::Other("the embedded store's writer dropped a write".into()))?
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
        StoreError::Contention(what) => StoreError::Contention(what),
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
pub(crate) fn commit_batch(conn: &Connection, batch: Vec<Job>) -> Vec<Job> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use rusqlite::Connection;
    use tokio::sync::oneshot;

    use countersign_core::domain::request::Governing;
    use countersign_core::domain::{ApprovalRequest, Timestamp};
    use countersign_core::ports::{AuditLog, Commit, Conflict, Guard, RequestStore, StoreError};

    use super::{commit_batch, job};
    use crate::audit::append_tx;
    use crate::requests::commit_tx;
    use crate::schema::connect;
    use crate::test_support::draft;
    use crate::{EmbeddedStore, DB_FILE};

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
        let r = countersign_core::testing::sample_request(2, t0);
        store.create_request(&r, r.creation_events(), 5).await.unwrap();
        let user = countersign_core::domain::SlackUserId::parse("UAPPROVER1").unwrap();
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
        countersign_core::domain::audit::verify_chain(&chain).unwrap();
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
        countersign_core::domain::audit::verify_chain(&chain).unwrap();
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
        countersign_core::domain::audit::verify_chain(&chain).unwrap();
    }
}
