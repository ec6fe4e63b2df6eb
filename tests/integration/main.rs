//! The one integration test binary: black-box tests of the library through its public API.
//!
//! - `harness`: builds the stores under test (a fresh embedded database or fresh DynamoDB tables per test)
//!   and their raw-access tampering.
//! - `conformance`: the store contract, written once and run against every store.
//! - `dynamodb_store`: DynamoDB-specific behaviour (keys, indexes, pagination, transactions) on the emulator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;
mod dynamodb_store;
mod harness;
mod slack_interactions;
mod smoke;
mod support;
mod sweeper;
