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
//! The `audit` table is append-only: this crate contains no statement that updates or deletes its rows,
//! and triggers refuse such statements from any connection. Someone with write access to the file can still
//! drop the triggers and edit it; the hash chain (`domain::audit::verify_chain`) is what detects that.
//!
//! Items are stored as their domain JSON (`doc`) plus the columns the queries need. An item whose JSON no
//! longer parses is reported as [`StoreError::Corrupt`], never skipped.
//!
//! Where things live: `writer` (the writer thread and group commit), `readers` (the read
//! pool), `schema` (migrations, pragmas, opening a connection), `rows` (documents and columns), `error`
//! (SQLite errors as [`StoreError`]), and the port impls in `policies`, `requests`, `audit` and `outbox` (decision events owed). This file
//! only opens the store; it must never hold SQL of its own.
//!
//! [`PolicyStore`]: countersign_core::ports::PolicyStore
//! [`RequestStore`]: countersign_core::ports::RequestStore
//! [`AuditLog`]: countersign_core::ports::AuditLog

mod audit;
mod error;
mod outbox;
mod policies;
mod readers;
mod requests;
mod rows;
mod schema;
mod writer;

#[cfg(test)]
mod test_support;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;

use countersign_core::ports::StoreError;

/// The database file inside the data directory.
pub const DB_FILE: &str = "countersign.db";

/// The SQLite-backed store. Share it behind an `Arc`: every clone of the `Arc` uses the one writer thread
/// and the one pool of read connections.
pub struct EmbeddedStore {
    path: PathBuf,
    /// The writer's queue; `None` only while dropping.
    writes: Option<mpsc::Sender<writer::Job>>,
    writer: Option<JoinHandle<()>>,
    readers: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) `DIR/countersign.db` with WAL, `synchronous=FULL` and a busy timeout, runs
    /// the migrations it has not seen yet and starts the writer thread.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(StoreError::unavailable)?;
        let path = data_dir.join(DB_FILE);
        let conn = schema::open_for_writing(&path)?;
        let (writes, writer) = writer::start(conn)?;
        Ok(Self { path, writes: Some(writes), writer: Some(writer), readers: Mutex::new(Vec::new()) })
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.path
    }
}
