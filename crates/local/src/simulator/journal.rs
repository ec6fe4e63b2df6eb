//! Keeping the simulator's messages across restarts: a snapshot (`slack-simulator.json`, the emulator's
//! [`MessageStore`]) and a journal next to it (one JSON line per message posted, updated or deleted since),
//! written by one thread, many lines at a time, and folded into the snapshot at start-up and whenever the
//! journal outgrows it (compaction: the disk holds about the kept messages, never every change ever made).

use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use serde::{Deserialize, Serialize};

use countersign_slack::emulator::{Message, MessageStore};

use super::JOURNAL_EXTENSION;

/// The snapshot as kept on disk.
pub(super) type Persisted = MessageStore;

/// One line of the journal. Each names its message by (channel, ts) and carries its whole new state, so
/// applying a line twice (a crash after the snapshot was written, before the journal was emptied) changes
/// nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Change {
    /// The message as it now is: replaces the one with its ts, or is added after the channel's others.
    Put {
        channel: String,
        message: Message,
        last_ts_micros: u64,
    },
    Delete {
        channel: String,
        ts: String,
    },
}

/// Applying journal lines to the snapshot, and the line that records a message as it now is.
pub(super) trait Journaled {
    fn apply(&mut self, change: Change);
    fn put(&self, channel: &str, ts: &str) -> Option<Change>;
}

impl Journaled for Persisted {
    fn apply(&mut self, change: Change) {
        match change {
            Change::Put { channel, message, last_ts_micros } => {
                self.last_ts_micros = self.last_ts_micros.max(last_ts_micros);
                let list = self.channels.entry(channel).or_default();
                match list.iter_mut().find(|m| m.ts == message.ts) {
                    Some(m) => *m = message,
                    None => list.push(message),
                }
            }
            Change::Delete { channel, ts } => {
                if let Some(list) = self.channels.get_mut(&channel) {
                    list.retain(|m| m.ts != ts);
                }
            }
        }
    }

    /// The put that records `channel`'s message `ts` as it now is, if it exists.
    fn put(&self, channel: &str, ts: &str) -> Option<Change> {
        let message = self.channels.get(channel)?.iter().find(|m| m.ts == ts)?.clone();
        Some(Change::Put { channel: channel.to_string(), message, last_ts_micros: self.last_ts_micros })
    }
}

/// The journal's path next to the state file.
pub fn journal_path(state_file: &FsPath) -> PathBuf {
    state_file.with_extension(JOURNAL_EXTENSION)
}

/// Applies the journal's lines to `p`; how many were applied. A last line cut short (the process was
/// killed while writing it: its call was never answered) is ignored; any other line that does not parse
/// is skipped with a warning, and the journal is copied aside first so nothing is lost.
pub(super) fn replay(p: &mut Persisted, path: &FsPath, bytes: &[u8]) -> usize {
    let mut applied = 0;
    let mut copied_aside = false;
    let mut lines = bytes.split(|b| *b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Change>(line) {
            Ok(c) => {
                p.apply(c);
                applied += 1;
            }
            // Only the last piece can lack its newline: every line is written with one.
            Err(_) if last => tracing::warn!(journal = %path.display(), "ignoring a torn last journal line"),
            Err(e) => {
                if !copied_aside {
                    let aside = path.with_extension("journal.corrupt");
                    let _ = std::fs::write(&aside, bytes);
                    tracing::warn!(error = %e, copied_to = %aside.display(), "simulator journal line unreadable; skipping it");
                    copied_aside = true;
                }
            }
        }
    }
    applied
}

/// Writes the snapshot durably (a temporary file, synced, renamed over the old one); its size.
fn write_snapshot(path: &FsPath, p: &Persisted) -> std::io::Result<u64> {
    let bytes = serde_json::to_vec(p).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Makes the rename itself durable; not every platform can open a directory.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(bytes.len() as u64)
}

/// Work for the journal's writer, in the order the changes were made.
pub(super) enum Job {
    /// Lines to append; `done` is answered once they are written.
    Write(Vec<Change>, tokio::sync::oneshot::Sender<()>),
    /// The kept messages as every `Write` sent before it left them: becomes the snapshot, and the journal
    /// starts again empty.
    Compact(Box<Persisted>),
}

/// The way to the journal's writer. Dropping it lets the writer finish what is queued, and waits for it.
pub(super) struct Journal {
    tx: Option<mpsc::Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Set by the writer when the journal has outgrown the snapshot; the next change sends a [`Job::Compact`].
    wants_compaction: Arc<AtomicBool>,
}

impl Journal {
    /// Queues `changes`, and the snapshot of `store` after them when the writer asked for one. Call it while
    /// holding the state's lock, right after making the changes, so the journal keeps their order and the
    /// snapshot holds exactly the changes queued before it. The receiver answers once the lines are written.
    pub(super) fn send(&self, changes: Vec<Change>, store: &Persisted) -> Option<tokio::sync::oneshot::Receiver<()>> {
        if changes.is_empty() {
            return None;
        }
        let (done, written) = tokio::sync::oneshot::channel();
        self.tx.as_ref()?.send(Job::Write(changes, done)).ok()?;
        if self.wants_compaction.swap(false, Ordering::Relaxed) {
            self.compact(store);
        }
        Some(written)
    }

    /// Queues a snapshot of `store` (see [`Job::Compact`]).
    pub(super) fn compact(&self, store: &Persisted) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Job::Compact(Box::new(store.clone())));
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// When the journal is folded into the snapshot: once it is larger than both `min_bytes` and twice the last
/// snapshot, so the disk holds at most about three snapshots' worth.
#[derive(Debug, Clone, Copy)]
pub(super) struct Compaction {
    pub min_bytes: u64,
}

/// The journal's writer thread: appends whatever changes are waiting, in the order they were made, in one
/// write, then answers each; writes the snapshots it is sent and empties the journal behind them. Ends when
/// the simulator is dropped.
fn journal_writer(
    state_file: PathBuf,
    mut file: std::fs::File,
    rx: mpsc::Receiver<Job>,
    wants_compaction: Arc<AtomicBool>,
    policy: Compaction,
    mut snapshot_bytes: u64,
    mut journal_bytes: u64,
) {
    let path = journal_path(&state_file);
    let mut buf = Vec::new();
    let mut asked = false;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        buf.clear();
        let mut answers = Vec::new();
        for job in batch {
            match job {
                Job::Write(changes, done) => {
                    for change in &changes {
                        match serde_json::to_writer(&mut buf, change) {
                            Ok(()) => buf.push(b'\n'),
                            Err(e) => tracing::warn!(error = %e, "cannot serialize a simulator journal line"),
                        }
                    }
                    answers.push(done);
                }
                Job::Compact(p) => {
                    // The lines before the snapshot first: it holds their changes, the journal must too until
                    // the snapshot is on disk.
                    journal_bytes += flush(&mut file, &mut buf, &path);
                    match write_snapshot(&state_file, &p) {
                        Ok(n) => {
                            snapshot_bytes = n;
                            match file.set_len(0) {
                                Ok(()) => journal_bytes = 0,
                                Err(e) => tracing::warn!(error = %e, "cannot empty the simulator journal"),
                            }
                        }
                        // Keep the journal: nothing is lost, and the next compaction tries again.
                        Err(e) => tracing::warn!(error = %e, "cannot compact the simulator journal"),
                    }
                    asked = false;
                }
            }
        }
        journal_bytes += flush(&mut file, &mut buf, &path);
        // Asked before answering: the change after the one that outgrew the limit carries the snapshot.
        if !asked && journal_bytes > policy.min_bytes.max(2 * snapshot_bytes) {
            asked = true;
            wants_compaction.store(true, Ordering::Relaxed);
        }
        for done in answers {
            let _ = done.send(());
        }
    }
}

/// Appends `buf` to the journal and empties it; how many bytes were written.
fn flush(file: &mut std::fs::File, buf: &mut Vec<u8>, path: &FsPath) -> u64 {
    if buf.is_empty() {
        return 0;
    }
    let n = buf.len() as u64;
    let written = file.write_all(buf);
    buf.clear();
    match written {
        Ok(()) => n,
        Err(e) => {
            tracing::warn!(error = %e, journal = %path.display(), "cannot write the simulator journal");
            0
        }
    }
}

/// Loads the kept messages into `store` (a file that does not parse is moved aside with a warning, never
/// lost), folds the journal into the snapshot and starts the journal's writer.
pub(super) fn open(path: &FsPath, store: &mut Persisted, policy: Compaction) -> Option<Journal> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<Persisted>(&bytes) {
            Ok(p) => *store = p,
            Err(e) => {
                let aside = path.with_extension("json.corrupt");
                tracing::warn!(error = %e, moved_to = %aside.display(), "simulator state unreadable; starting empty");
                let _ = std::fs::rename(path, &aside);
                // Its journal only makes sense on top of it: kept aside with it.
                let journal = journal_path(path);
                let _ = std::fs::rename(&journal, journal.with_extension("journal.corrupt"));
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the simulator state; starting empty"),
    }
    open_journal(path, store, policy)
}

/// Replays the journal onto `persisted`, writes the result as the new snapshot and empties the
/// journal, then opens it for appending and starts its writer. `None` (with a warning) when the
/// journal cannot be opened: the simulator then keeps messages in memory only.
fn open_journal(state_file: &FsPath, persisted: &mut Persisted, policy: Compaction) -> Option<Journal> {
    let path = journal_path(state_file);
    let applied = match std::fs::read(&path) {
        Ok(bytes) => replay(persisted, &path, &bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            tracing::warn!(error = %e, journal = %path.display(), "cannot read the simulator journal");
            0
        }
    };
    let mut truncate = true;
    let mut snapshot_bytes = std::fs::metadata(state_file).map_or(0, |m| m.len());
    if applied > 0 {
        match write_snapshot(state_file, persisted) {
            Ok(n) => snapshot_bytes = n,
            Err(e) => {
                // Keep the journal: the next start replays it again.
                tracing::warn!(error = %e, "cannot fold the simulator journal into its state file");
                truncate = false;
            }
        }
    }
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).and_then(|f| {
        if truncate {
            f.set_len(0).map(|()| f)
        } else {
            Ok(f)
        }
    });
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, journal = %path.display(), "cannot open the simulator journal; messages will not survive a restart");
            return None;
        }
    };
    let journal_bytes = file.metadata().map_or(0, |m| m.len());
    let (tx, rx) = mpsc::channel();
    let wants_compaction = Arc::new(AtomicBool::new(false));
    let wants = wants_compaction.clone();
    let state_file = state_file.to_path_buf();
    let spawned = std::thread::Builder::new().name("slack-sim-journal".into()).spawn(move || {
        journal_writer(state_file, file, rx, wants, policy, snapshot_bytes, journal_bytes);
    });
    match spawned {
        Ok(writer) => Some(Journal { tx: Some(tx), writer: Some(writer), wants_compaction }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the simulator journal's writer; messages will not survive a restart");
            None
        }
    }
}
