//! Countersign's AWS adapters, behind the ports of `countersign_core::ports`: the DynamoDB store, the Slack
//! secrets in Secrets Manager, the receipt signer in KMS, the audit checkpoints in an S3 Object Lock bucket and the decision events on
//! EventBridge.
//! Depends on core only; never on another adapter.

pub mod checkpoints;
pub mod dynamodb;
pub mod events;
pub mod kms;
pub mod secrets;
