//! Use cases. Services combine the pure domain with the ports; they never see AWS, HTTP, Lambda or Slack
//! JSON types (a test in tests/integration keeps it so).

pub mod break_glass;
pub mod checkpoints;
pub mod events;
pub mod notify;
pub mod policies;
pub mod receipts;
pub mod refusals;
pub mod replay;
pub mod report;
pub mod requests;
pub mod sweeper;
pub mod votes;

use crate::domain::TransitionError;
use crate::ports::StoreError;

/// Failures of a use case, before any mapping to HTTP or exit codes.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("{0}")]
    Invalid(String),
}
