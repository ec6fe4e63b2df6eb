//! Audit checkpoints (row 37, issue 17): signed, chained statements
//! "the chain's head was record `seq` with `hash`", written outside the table (S3 Object Lock in AWS, a
//! directory in local mode), so a rewritten suffix, deleted newest records or an older backup are detected.
//! This module is the format and the comparison with the chain; signing and storage are behind ports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::audit::AuditEvent;
use super::receipt::ChainPoint;
use super::time::Timestamp;

/// The JWS `typ` of a checkpoint.
pub const CHECKPOINT_TYP: &str = "countersign-checkpoint+jwt";

/// Where checkpoint `seq` is stored: `checkpoints/{seq, 20 digits}.jwt` (lexical order is chain order).
pub fn object_key(seq: u64) -> String {
    format!("checkpoints/{seq:020}.jwt")
}

/// The claims of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointClaims {
    /// The chain head at `at`.
    pub seq: u64,
    pub hash: String,
    pub at: Timestamp,
    /// The previous checkpoint, `None` for the first.
    pub prev: Option<ChainPoint>,
    /// Records since `prev` (since genesis for the first).
    pub count: u64,
}

impl CheckpointClaims {
    /// The checkpoint to write after `prev` for the chain head `head`, or `None` when the head did not move.
    pub fn next(prev: Option<&CheckpointClaims>, head: &AuditEvent, at: Timestamp) -> Option<Self> {
        let since = prev.map_or(0, |p| p.seq);
        (head.seq > since).then(|| Self {
            seq: head.seq,
            hash: head.hash.clone(),
            at,
            prev: prev.map(|p| ChainPoint { seq: p.seq, hash: p.hash.clone() }),
            count: head.seq - since,
        })
    }
}

/// What a checkpoint proves the chain is not, named as `audit verify --checkpoints` prints it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointBreak {
    #[error("record {0} differs from checkpoint {0}")]
    Differs(u64),
    #[error("chain ends at {ends}, checkpoint says {says}")]
    Truncated { ends: u64, says: u64 },
    #[error("checkpoint {0}: bad signature")]
    BadSignature(u64),
    #[error("checkpoint {0}: prev does not link")]
    Unlinked(u64),
}

/// Checks signature-verified checkpoints against the chain as it is read, record by record.
#[derive(Debug, Default)]
pub struct CheckpointCheck {
    expected: BTreeMap<u64, String>,
    newest: u64,
    last_seen: u64,
}

impl CheckpointCheck {
    /// `checkpoints` in any order, each already signature-checked; their `prev` links are checked here.
    pub fn new(mut checkpoints: Vec<CheckpointClaims>) -> Result<Self, CheckpointBreak> {
        checkpoints.sort_by_key(|c| c.seq);
        let mut prev: Option<&CheckpointClaims> = None;
        for c in &checkpoints {
            let links = match (&c.prev, prev) {
                (None, None) => c.count == c.seq,
                (Some(p), Some(q)) => p.seq == q.seq && p.hash == q.hash && c.count == c.seq - q.seq,
                _ => false,
            };
            if !links {
                return Err(CheckpointBreak::Unlinked(c.seq));
            }
            prev = Some(c);
        }
        Ok(Self {
            newest: checkpoints.last().map_or(0, |c| c.seq),
            expected: checkpoints.into_iter().map(|c| (c.seq, c.hash)).collect(),
            last_seen: 0,
        })
    }

    /// One record of the chain, in order.
    pub fn observe(&mut self, e: &AuditEvent) -> Result<(), CheckpointBreak> {
        self.last_seen = e.seq;
        match self.expected.get(&e.seq) {
            Some(h) if *h != e.hash => Err(CheckpointBreak::Differs(e.seq)),
            _ => Ok(()),
        }
    }

    /// The seq of the last record observed (0 before the first).
    pub fn last_seen(&self) -> u64 {
        self.last_seen
    }

    /// After the last record: the chain must reach the newest checkpoint.
    pub fn finish(&self) -> Result<(), CheckpointBreak> {
        if self.last_seen < self.newest {
            return Err(CheckpointBreak::Truncated { ends: self.last_seen, says: self.newest });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::domain::audit::{seal_after, Actor, AuditDraft, AuditKind};

    fn chain(n: u64) -> Vec<AuditEvent> {
        let drafts = (0..n)
            .map(|i| {
                AuditDraft::new(Timestamp::from_unix_millis(i as i64), AuditKind::SlackPosted, Actor::system("t"), None)
            })
            .collect();
        seal_after(None, drafts)
    }

    fn checkpoints(c: &[AuditEvent], at: &[u64]) -> Vec<CheckpointClaims> {
        let mut out: Vec<CheckpointClaims> = Vec::new();
        for s in at {
            let head = &c[usize::try_from(*s).unwrap() - 1];
            let next = CheckpointClaims::next(out.last(), head, Timestamp::from_unix_millis(0)).unwrap();
            out.push(next);
        }
        out
    }

    fn check(c: &[AuditEvent], cps: Vec<CheckpointClaims>) -> Result<(), CheckpointBreak> {
        let mut k = CheckpointCheck::new(cps)?;
        for e in c {
            k.observe(e)?;
        }
        k.finish()
    }

    #[test]
    fn an_intact_chain_passes_and_an_unmoved_head_writes_nothing() {
        let c = chain(6);
        let cps = checkpoints(&c, &[2, 5]);
        assert_eq!(cps[1].count, 3);
        assert!(CheckpointClaims::next(cps.last(), &c[4], Timestamp::from_unix_millis(0)).is_none());
        assert_eq!(check(&c, cps), Ok(()));
    }

    #[test]
    fn t37_rewritten_suffix_truncation_and_broken_links_are_named() {
        let c = chain(6);
        let cps = checkpoints(&c, &[2, 5]);
        let mut rewritten = c.clone();
        rewritten[4].hash = "f".repeat(64);
        assert_eq!(check(&rewritten, cps.clone()).unwrap_err().to_string(), "record 5 differs from checkpoint 5");
        assert_eq!(check(&c[..3], cps.clone()).unwrap_err().to_string(), "chain ends at 3, checkpoint says 5");
        let mut forged = cps.clone();
        forged[1].prev = None;
        assert_eq!(check(&c, forged).unwrap_err().to_string(), "checkpoint 5: prev does not link");
        assert_eq!(object_key(5), "checkpoints/00000000000000000005.jwt");
    }
}
