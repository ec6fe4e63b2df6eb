//! Adapters: everything that talks to the outside world (DynamoDB, the embedded database, Slack, Secrets
//! Manager) behind the ports of `crate::ports`. Adapters never call each other.

pub mod dynamodb;
pub mod embedded;
pub mod secrets;
pub mod slack;
