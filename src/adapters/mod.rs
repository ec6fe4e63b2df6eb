//! Adapters: the outside world behind the ports (DynamoDB, the embedded store, Slack, Secrets Manager).
//! Adapters never use each other.

pub mod slack;
