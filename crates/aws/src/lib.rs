//! Countersign's AWS adapters, behind the ports of `countersign_core::ports`: the DynamoDB store, the Slack
//! secrets in Secrets Manager, the receipt signer in KMS and the audit checkpoints in an S3 Object Lock bucket.
//! Depends on core only; never on another adapter.

pub mod checkpoints;
pub mod dynamodb;
pub mod kms;
pub mod secrets;
