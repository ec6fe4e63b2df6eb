//! The append-only, hash-chained audit trail.
//!
//! Every record carries the hash of the one before it (`prev_hash`) and its own `hash`, SHA-256 over a
//! canonical encoding of every other field, so an edited, deleted or reordered record breaks the chain at a
//! point [`verify_chain`] names. Stores assign `seq` and `prev_hash` when they append; nothing here does I/O.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ids::RequestId;
use super::time::Timestamp;

/// `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened. The string forms are stable: compliance exports and queries depend on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AuditKind {
    #[serde(rename = "request.created")]
    RequestCreated,
    #[serde(rename = "request.refused")]
    RequestRefused,
    #[serde(rename = "request.auto_approved")]
    RequestAutoApproved,
    #[serde(rename = "request.approved")]
    RequestApproved,
    #[serde(rename = "request.denied")]
    RequestDenied,
    #[serde(rename = "request.cancelled")]
    RequestCancelled,
    #[serde(rename = "request.expired")]
    RequestExpired,
    #[serde(rename = "request.redeemed")]
    RequestRedeemed,
    #[serde(rename = "request.unused")]
    RequestUnused,
    #[serde(rename = "request.break_glass")]
    RequestBreakGlass,
    #[serde(rename = "request.reviewed")]
    RequestReviewed,
    #[serde(rename = "request.review_overdue")]
    RequestReviewOverdue,
    #[serde(rename = "vote.approve")]
    VoteApprove,
    #[serde(rename = "vote.deny")]
    VoteDeny,
    #[serde(rename = "vote.duplicate")]
    VoteDuplicate,
    #[serde(rename = "vote.rejected")]
    VoteRejected,
    #[serde(rename = "callback.rejected")]
    CallbackRejected,
    #[serde(rename = "slack.posted")]
    SlackPosted,
    #[serde(rename = "slack.post_failed")]
    SlackPostFailed,
    #[serde(rename = "slack.updated")]
    SlackUpdated,
    #[serde(rename = "slack.reminded")]
    SlackReminded,
    #[serde(rename = "policy.changed")]
    PolicyChanged,
    #[serde(rename = "policy.deleted")]
    PolicyDeleted,
}

impl AuditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestCreated => "request.created",
            Self::RequestRefused => "request.refused",
            Self::RequestAutoApproved => "request.auto_approved",
            Self::RequestApproved => "request.approved",
            Self::RequestDenied => "request.denied",
            Self::RequestCancelled => "request.cancelled",
            Self::RequestExpired => "request.expired",
            Self::RequestRedeemed => "request.redeemed",
            Self::RequestUnused => "request.unused",
            Self::RequestBreakGlass => "request.break_glass",
            Self::RequestReviewed => "request.reviewed",
            Self::RequestReviewOverdue => "request.review_overdue",
            Self::VoteApprove => "vote.approve",
            Self::VoteDeny => "vote.deny",
            Self::VoteDuplicate => "vote.duplicate",
            Self::VoteRejected => "vote.rejected",
            Self::CallbackRejected => "callback.rejected",
            Self::SlackPosted => "slack.posted",
            Self::SlackPostFailed => "slack.post_failed",
            Self::SlackUpdated => "slack.updated",
            Self::SlackReminded => "slack.reminded",
            Self::PolicyChanged => "policy.changed",
            Self::PolicyDeleted => "policy.deleted",
        }
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who caused it: `aws:ARN`, `slack:TEAM/USER`, `system:sweeper`, `cli:ARN-or-local-user`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Actor(pub String);

impl Actor {
    pub fn aws(arn: &str) -> Self {
        Self(format!("aws:{arn}"))
    }
    pub fn slack(user: &str) -> Self {
        Self(format!("slack:{user}"))
    }
    /// A Slack callback whose sender is not known (refused before, or without, naming a user).
    pub fn slack_unknown() -> Self {
        Self("slack:unknown".into())
    }
    pub fn system(component: &str) -> Self {
        Self(format!("system:{component}"))
    }
    pub fn cli(who: &str) -> Self {
        Self(format!("cli:{who}"))
    }
}

/// An event before a store has placed it in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditDraft {
    pub at: Timestamp,
    pub kind: AuditKind,
    pub actor: Actor,
    pub request_id: Option<RequestId>,
    /// Free-form, string-valued details (sorted, so the encoding is canonical).
    pub details: BTreeMap<String, String>,
}

impl AuditDraft {
    pub fn new(at: Timestamp, kind: AuditKind, actor: Actor, request_id: Option<RequestId>) -> Self {
        Self { at, kind, actor, request_id, details: BTreeMap::new() }
    }

    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }

    /// Places the draft at `seq` after a record whose hash is `prev_hash`.
    pub fn seal(self, seq: u64, prev_hash: &str) -> AuditEvent {
        let mut e = AuditEvent {
            seq,
            at: self.at,
            kind: self.kind,
            actor: self.actor,
            request_id: self.request_id,
            details: self.details,
            prev_hash: prev_hash.to_string(),
            hash: String::new(),
        };
        e.hash = e.compute_hash();
        e
    }
}

/// One record of the trail, as stored and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// Position in the chain, from 1, without gaps.
    pub seq: u64,
    pub at: Timestamp,
    pub kind: AuditKind,
    pub actor: Actor,
    pub request_id: Option<RequestId>,
    pub details: BTreeMap<String, String>,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Serialize)]
struct Canonical<'a> {
    actor: &'a str,
    at: String,
    details: &'a BTreeMap<String, String>,
    kind: &'static str,
    prev_hash: &'a str,
    request_id: Option<String>,
    seq: u64,
    v: u8,
}

impl AuditEvent {
    /// The canonical encoding: compact JSON, keys in lexicographic order, times in RFC 3339 with
    /// milliseconds, all strings as UTF-8. Documented in docs/architecture.md so others can re-implement it.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let c = Canonical {
            actor: &self.actor.0,
            at: self.at.to_rfc3339(),
            details: &self.details,
            kind: self.kind.as_str(),
            prev_hash: &self.prev_hash,
            request_id: self.request_id.map(|r| r.to_string()),
            seq: self.seq,
            v: 1,
        };
        // Serializing plain strings, integers and string maps cannot fail.
        serde_json::to_vec(&c).unwrap_or_default()
    }

    pub fn compute_hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_bytes()))
    }
}

/// The first place a chain is broken, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("record seq {seq} was edited: its content no longer matches its hash")]
    Edited { seq: u64 },
    #[error("record seq {expected} is missing (next record found is seq {found})")]
    Missing { expected: u64, found: u64 },
    #[error("record seq {seq} is out of order (it comes after seq {after})")]
    OutOfOrder { seq: u64, after: u64 },
    #[error("record seq {seq} does not link to the record before it (prev_hash differs)")]
    Unlinked { seq: u64 },
}

/// Summary of an intact chain segment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainSummary {
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub first_hash: Option<String>,
    pub last_hash: Option<String>,
}

/// Incremental verifier, so exports of any size stream through in constant memory.
#[derive(Debug, Default)]
pub struct ChainVerifier {
    prev: Option<(u64, String)>,
    summary: ChainSummary,
}

impl ChainVerifier {
    /// Verifies from the genesis record: the first record must be seq 1 with the genesis `prev_hash`.
    pub fn from_genesis() -> Self {
        Self { prev: Some((0, GENESIS_HASH.to_string())), summary: ChainSummary::default() }
    }

    /// Verifies a segment that may start anywhere: the first record is trusted as the anchor.
    pub fn from_any() -> Self {
        Self::default()
    }

    pub fn push(&mut self, e: &AuditEvent) -> Result<(), ChainBreak> {
        if e.compute_hash() != e.hash {
            return Err(ChainBreak::Edited { seq: e.seq });
        }
        if let Some((prev_seq, prev_hash)) = &self.prev {
            if e.seq <= *prev_seq {
                return Err(ChainBreak::OutOfOrder { seq: e.seq, after: *prev_seq });
            }
            if e.seq != prev_seq + 1 {
                return Err(ChainBreak::Missing { expected: prev_seq + 1, found: e.seq });
            }
            if &e.prev_hash != prev_hash {
                return Err(ChainBreak::Unlinked { seq: e.seq });
            }
        }
        self.prev = Some((e.seq, e.hash.clone()));
        let s = &mut self.summary;
        s.records += 1;
        if s.first_seq.is_none() {
            s.first_seq = Some(e.seq);
            s.first_hash = Some(e.hash.clone());
        }
        s.last_seq = Some(e.seq);
        s.last_hash = Some(e.hash.clone());
        Ok(())
    }

    pub fn finish(self) -> ChainSummary {
        self.summary
    }
}

/// The first broken link and the record where it shows.
pub type Broken = Box<(ChainBreak, AuditEvent)>;

/// The one chain verifier, record by record in constant memory (exports of any size stream through it). It
/// tells a moved record (it turns up later) from a deleted one: after a gap it only keeps looking for the
/// missing `seq`.
#[derive(Debug)]
pub struct ChainCheck {
    verifier: ChainVerifier,
    from_genesis: bool,
    broken: Option<(ChainBreak, AuditEvent)>,
    looking_for: Option<(u64, u64)>,
    turned_up: bool,
}

impl ChainCheck {
    /// From the genesis record: the first record must be seq 1 with the genesis `prev_hash`.
    pub fn from_genesis() -> Self {
        Self::with(ChainVerifier::from_genesis(), true)
    }

    /// A segment that may start anywhere (an export with `--since`): its first record is the anchor.
    pub fn from_any() -> Self {
        Self::with(ChainVerifier::from_any(), false)
    }

    fn with(verifier: ChainVerifier, from_genesis: bool) -> Self {
        Self { verifier, from_genesis, broken: None, looking_for: None, turned_up: false }
    }

    /// Whether the first record must be the genesis record.
    pub fn is_from_genesis(&self) -> bool {
        self.from_genesis
    }

    /// Takes the next record; returns false once nothing later can change the verdict.
    pub fn push(&mut self, e: &AuditEvent) -> bool {
        if let Some((expected, _)) = self.looking_for {
            if e.seq == expected {
                self.turned_up = true;
                return false;
            }
            return true;
        }
        if self.broken.is_some() {
            return false;
        }
        match self.verifier.push(e) {
            Ok(()) => true,
            Err(b) => {
                if let ChainBreak::Missing { expected, found } = b {
                    self.looking_for = Some((expected, found));
                }
                self.broken = Some((b, e.clone()));
                self.looking_for.is_some()
            }
        }
    }

    /// The verdict: the summary of an intact chain, or its first break and the record where it shows.
    pub fn finish(self) -> Result<ChainSummary, Broken> {
        match (self.broken, self.looking_for) {
            (Some((_, e)), Some((expected, found))) if self.turned_up => {
                Err(Box::new((ChainBreak::OutOfOrder { seq: expected, after: found }, e)))
            }
            (Some(b), _) => Err(Box::new(b)),
            (None, _) => Ok(self.verifier.finish()),
        }
    }
}

/// Verifies a whole chain from genesis.
pub fn verify_chain(events: &[AuditEvent]) -> Result<ChainSummary, ChainBreak> {
    check_all(ChainCheck::from_genesis(), events)
}

/// Verifies a segment that may start anywhere (an export with `--since`): its first record is the anchor.
pub fn verify_segment(events: &[AuditEvent]) -> Result<ChainSummary, ChainBreak> {
    check_all(ChainCheck::from_any(), events)
}

fn check_all(mut check: ChainCheck, events: &[AuditEvent]) -> Result<ChainSummary, ChainBreak> {
    for e in events {
        if !check.push(e) {
            break;
        }
    }
    check.finish().map_err(|b| b.0)
}

/// Appends drafts after `last` (seq, hash), returning sealed events. Used by every store.
pub fn seal_after(last: Option<(u64, String)>, drafts: Vec<AuditDraft>) -> Vec<AuditEvent> {
    let (mut seq, mut prev) = last.unwrap_or((0, GENESIS_HASH.to_string()));
    drafts
        .into_iter()
        .map(|d| {
            seq += 1;
            let e = d.seal(seq, &prev);
            prev = e.hash.clone();
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Vec<AuditEvent> {
        let drafts = (0..n)
            .map(|i| {
                AuditDraft::new(
                    Timestamp::from_unix_millis(1_000 * i as i64),
                    AuditKind::RequestCreated,
                    Actor::system("test"),
                    None,
                )
                .with("i", i.to_string())
            })
            .collect();
        seal_after(None, drafts)
    }

    #[test]
    fn intact_chain_verifies_with_summary() {
        let c = chain(5);
        let s = verify_chain(&c).unwrap();
        assert_eq!(s.records, 5);
        assert_eq!(s.last_hash.as_deref(), Some(c[4].hash.as_str()));
    }

    #[test]
    fn edit_is_named() {
        let mut c = chain(5);
        c[2].details.insert("i".into(), "99".into());
        assert_eq!(verify_chain(&c), Err(ChainBreak::Edited { seq: 3 }));
    }

    #[test]
    fn edit_with_rehash_is_caught_by_the_next_link() {
        let mut c = chain(5);
        c[2].details.insert("i".into(), "99".into());
        c[2].hash = c[2].compute_hash();
        assert_eq!(verify_chain(&c), Err(ChainBreak::Unlinked { seq: 4 }));
    }

    #[test]
    fn deletion_is_named() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(verify_chain(&c), Err(ChainBreak::Missing { expected: 2, found: 3 }));
    }

    #[test]
    fn reordering_is_named() {
        let mut c = chain(5);
        c.swap(1, 2);
        assert_eq!(verify_chain(&c), Err(ChainBreak::OutOfOrder { seq: 2, after: 3 }));
        let mut c = chain(5);
        c.swap(3, 1);
        assert_eq!(verify_chain(&c), Err(ChainBreak::OutOfOrder { seq: 2, after: 4 }));
        let mut c = chain(3);
        c.swap(1, 2);
        c.insert(1, c[2].clone());
        assert!(verify_chain(&c).is_err());
    }

    #[test]
    fn canonical_encoding_is_stable() {
        let e = AuditDraft::new(Timestamp::from_unix_millis(0), AuditKind::PolicyChanged, Actor::cli("me"), None)
            .with("policy", "p")
            .seal(1, GENESIS_HASH);
        assert_eq!(
            String::from_utf8(e.canonical_bytes()).unwrap(),
            format!(
                r#"{{"actor":"cli:me","at":"1970-01-01T00:00:00.000Z","details":{{"policy":"p"}},"kind":"policy.changed","prev_hash":"{GENESIS_HASH}","request_id":null,"seq":1,"v":1}}"#
            )
        );
    }
}
