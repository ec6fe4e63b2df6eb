//! The pure domain: principals, policies, requests and their state machine, votes, the audit chain.
//!
//! Nothing in here performs I/O or knows about Lambda, HTTP, AWS SDKs or Slack's JSON. A test in
//! `tests/integration/layering.rs` keeps it so.

pub mod audit;
pub mod break_glass;
pub mod checkpoint;
pub mod credentials;
pub mod drill;
pub mod events;
pub mod ids;
pub mod policy;
pub mod principal;
pub mod receipt;
pub mod request;
pub mod text;
pub mod time;
pub mod view;
pub mod voter;

pub use audit::{Actor, AuditDraft, AuditEvent, AuditKind, ChainBreak};
pub use credentials::{check_credentials, CredentialRule, CredentialType, LongTermCredentials};
pub use ids::*;
pub use policy::Policy;
pub use principal::{Principal, PrincipalError};
pub use request::{ApprovalRequest, History, RedeemRefusal, Status, Transition, TransitionError, Vote};
pub use time::Timestamp;
pub use voter::{Ineligible, SlackAccount, SlackWorkspaces};
