//! Keeping the simulator's memory bounded however long `countersign dev` runs: a channel keeps its newest
//! messages (the latest state of each: an update replaces the message it names), a user their newest
//! ephemeral messages, and the page at most so many live response URLs. What is dropped is journaled like
//! any other deletion, so the files on disk hold no more than memory does. Slack keeps everything; a
//! development simulator that must stay small keeps what a person can still read and click.

use std::collections::HashMap;

use countersign_slack::emulator::{Ephemeral, Message, MessageStore};

use super::journal::Change;

/// How much the simulator keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimLimits {
    /// Top-level messages per channel (each with its thread's replies). Beyond it the oldest decided message
    /// (no buttons left) goes first, else the oldest.
    pub messages_per_channel: usize,
    /// Ephemeral messages per user, newest kept.
    pub ephemerals_per_user: usize,
    /// Live response URLs (each also expires after 30 minutes), newest kept.
    pub response_urls: usize,
    /// The journal is folded into the snapshot once it is larger than this and than twice the snapshot.
    pub compact_journal_bytes: u64,
}

impl Default for SimLimits {
    fn default() -> Self {
        Self {
            messages_per_channel: 200,
            ephemerals_per_user: 20,
            response_urls: 1_000,
            compact_journal_bytes: 4 << 20,
        }
    }
}

fn has_buttons(m: &Message) -> bool {
    m.blocks.as_array().is_some_and(|bs| bs.iter().any(|b| b.get("type").and_then(|t| t.as_str()) == Some("actions")))
}

/// Drops `channel`'s oldest top-level messages, with their replies, until at most `max` are left; the
/// deletions, one per message, for the journal.
pub(super) fn trim_channel(store: &mut MessageStore, channel: &str, max: usize) -> Vec<Change> {
    let Some(list) = store.channels.get_mut(channel) else {
        return Vec::new();
    };
    let mut top_level = list.iter().filter(|m| m.thread_ts.is_none()).count();
    let mut changes = Vec::new();
    while top_level > max {
        let victim = list
            .iter()
            .find(|m| m.thread_ts.is_none() && !has_buttons(m))
            .or_else(|| list.iter().find(|m| m.thread_ts.is_none()))
            .map(|m| m.ts.clone());
        let Some(ts) = victim else { break };
        let goes = |m: &Message| m.ts == ts || m.thread_ts.as_deref() == Some(ts.as_str());
        changes.extend(
            list.iter().filter(|m| goes(m)).map(|m| Change::Delete { channel: channel.to_string(), ts: m.ts.clone() }),
        );
        list.retain(|m| !goes(m));
        top_level -= 1;
    }
    changes
}

/// Every channel trimmed to `max` (a snapshot kept under larger limits); the deletions.
pub(super) fn trim_all(store: &mut MessageStore, max: usize) -> Vec<Change> {
    let channels: Vec<String> = store.channels.keys().cloned().collect();
    channels.iter().flat_map(|c| trim_channel(store, c, max)).collect()
}

/// Keeps each user's newest `max` ephemeral messages.
pub(super) fn trim_ephemerals(list: &mut Vec<Ephemeral>, max: usize) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut keep = vec![true; list.len()];
    for (i, e) in list.iter().enumerate().rev() {
        let n = seen.entry(e.user.as_str()).or_default();
        *n += 1;
        keep[i] = *n <= max;
    }
    let mut keep = keep.into_iter();
    list.retain(|_| keep.next().unwrap_or(true));
}
