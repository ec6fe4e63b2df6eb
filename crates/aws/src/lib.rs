//! Countersign's AWS adapters, behind the ports of `countersign_core::ports`: the DynamoDB store, the Slack
//! secrets in Secrets Manager and the receipt signer in KMS. Depends on core only; never on another adapter.

pub mod dynamodb;
pub mod kms;
pub mod secrets;
