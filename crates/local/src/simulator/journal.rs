//! Keeping the simulator's messages across restarts: a snapshot (`slack-simulator.json`, the emulator's
//! [`MessageStore`]) and a journal next to it (one JSON line per message posted, updated or deleted since),
//! written by one thread, many lines at a time, and folded into the snapshot at start-up.

use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::mpsc;

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

/// Writes the snapshot durably (a temporary file, synced, renamed over the old one).
fn write_snapshot(path: &FsPath, p: &Persisted) -> std::io::Result<()> {
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
    Ok(())
}

/// A change on its way to the journal, and who waits for it to be written.
pub(super) type Pending = (Change, tokio::sync::oneshot::Sender<()>);

/// The journal's writer thread: appends whatever changes are waiting, in the order they were made, in one
/// write, then answers each. Ends when the simulator is dropped.
fn journal_writer(path: PathBuf, mut file: std::fs::File, rx: mpsc::Receiver<Pending>) {
    let mut buf = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        buf.clear();
        for (change, _) in &batch {
            match serde_json::to_writer(&mut buf, change) {
                Ok(()) => buf.push(b'\n'),
                Err(e) => tracing::warn!(error = %e, "cannot serialize a simulator journal line"),
            }
        }
        if let Err(e) = file.write_all(&buf) {
            tracing::warn!(error = %e, journal = %path.display(), "cannot write the simulator journal");
        }
        for (_, done) in batch {
            let _ = done.send(());
        }
    }
}

/// Loads the kept messages into `store` (a file that does not parse is moved aside with a warning, never
/// lost), folds the journal into the snapshot and starts the journal's writer.
pub(super) fn open(path: &FsPath, store: &mut Persisted) -> Option<mpsc::Sender<Pending>> {
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
    open_journal(path, store)
}

/// Replays the journal onto `persisted`, writes the result as the new snapshot and empties the
/// journal, then opens it for appending and starts its writer. `None` (with a warning) when the
/// journal cannot be opened: the simulator then keeps messages in memory only.
fn open_journal(state_file: &FsPath, persisted: &mut Persisted) -> Option<mpsc::Sender<Pending>> {
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
    if applied > 0 {
        if let Err(e) = write_snapshot(state_file, persisted) {
            // Keep the journal: the next start replays it again.
            tracing::warn!(error = %e, "cannot fold the simulator journal into its state file");
            truncate = false;
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
    let (tx, rx) = mpsc::channel();
    let spawned =
        std::thread::Builder::new().name("slack-sim-journal".into()).spawn(move || journal_writer(path, file, rx));
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the simulator journal's writer; messages will not survive a restart");
            None
        }
    }
}
