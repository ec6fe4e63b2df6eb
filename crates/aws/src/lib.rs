//! Countersign's AWS adapters, behind the ports of `countersign_core::ports`: the DynamoDB store and the Slack
//! secrets in Secrets Manager. Depends on core only; never on another adapter.

pub mod dynamodb;
pub mod secrets;
