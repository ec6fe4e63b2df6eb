//! Writing audit checkpoints (issue 17, threat row 37): on each sweeper run, when
//! the chain head moved since the newest checkpoint, sign one and put it in the sink. A failure is
//! returned to the sweeper, which logs it and tries again next run; it never blocks approvals.

use std::sync::Arc;

use crate::domain::checkpoint::{CheckpointClaims, CHECKPOINT_TYP};
use crate::domain::receipt::parse_compact;
use crate::ports::{CheckpointSink, Clock, SignError, StoreError, Stores};

use super::receipts::Receipts;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read the chain head or the newest checkpoint")]
    Store(#[from] StoreError),
    #[error("cannot sign the checkpoint")]
    Sign(#[from] SignError),
    #[error("the newest checkpoint does not parse: {0}")]
    Corrupt(String),
    /// The chain is shorter than the newest checkpoint says: records were deleted or an older backup was
    /// restored. Nothing is written (a checkpoint never goes backwards), and the run owes one until the
    /// chain is repaired, so the alarm fires.
    #[error("the chain ends at {head}, but the newest checkpoint says {newest}: records deleted or an older backup restored")]
    Behind { head: u64, newest: u64 },
}

#[derive(Clone)]
pub struct Checkpointer {
    pub stores: Stores,
    pub sink: Arc<dyn CheckpointSink>,
    pub receipts: Receipts,
    pub clock: Arc<dyn Clock>,
}

impl Checkpointer {
    /// Writes one checkpoint if the head moved; returns what it wrote.
    pub async fn run_once(&self) -> Result<Option<CheckpointClaims>, CheckpointError> {
        let prev = match self.sink.latest().await? {
            None => None,
            Some(jws) => {
                let parsed = parse_compact(&jws).map_err(CheckpointError::Corrupt)?;
                let claims: CheckpointClaims =
                    serde_json::from_value(parsed.claims).map_err(|e| CheckpointError::Corrupt(e.to_string()))?;
                Some(claims)
            }
        };
        let head = self.stores.audit.last().await?;
        let newest = prev.as_ref().map_or(0, |p| p.seq);
        let head_seq = head.as_ref().map_or(0, |h| h.seq);
        if head_seq < newest {
            return Err(CheckpointError::Behind { head: head_seq, newest });
        }
        let Some(head) = head else {
            return Ok(None);
        };
        let Some(next) = CheckpointClaims::next(prev.as_ref(), &head, self.clock.now()) else {
            return Ok(None);
        };
        let jws = self.receipts.sign_jws(CHECKPOINT_TYP, &next).await?;
        self.sink.put(next.seq, &jws).await?;
        Ok(Some(next))
    }
}
