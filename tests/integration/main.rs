//! The one integration test binary: black-box tests of the library through its public API.
//!
//! - `harness`: builds the stores under test (a fresh embedded database or fresh DynamoDB tables per test)
//!   and their raw-access tampering.
//! - `conformance`: the store contract, written once and run against every store.
//! - `cli`: the `countersign` binary against a stand-in request API and the DynamoDB emulator.
//! - `dynamodb_store`: DynamoDB-specific behaviour (keys, indexes, pagination, transactions) on the emulator.
//! - `request_api`: the request API's contract and threat rows 16–21 and 23, end to end on both stores.
//! - `slack_interactions`, `sweeper`: the Slack callback handler and the scheduled sweeper, threat rows 1–15,
//!   22, 24 and 26.
//! - `local_mode`: `countersign dev` over real HTTP: SigV4 (aws-sigv4 and curl), the Slack simulator, restarts.
//! - `local_hardening`: the real `countersign dev` refuses DNS-rebinding `Host`s with 421 on every route and
//!   look-alike loopback Slack API URLs at start-up (threat row 39).
//! - `load`: the real `countersign dev` process under 32 concurrent clients, and killed with SIGKILL mid-load:
//!   nothing acknowledged is lost and `countersign audit verify` passes.
//! - `policy_lint`: policy files broader than they read (threat row 29) and policies that shadow each other
//!   (row 32), through the real binary's `policy validate` / `apply` and local mode's policy load.
//! - `operator_cli`, `layering`, `template`, `smoke`: operator commands, the layering rule, the SAM template's
//!   security posture, and one end-to-end flow.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod conformance;
mod dynamodb_store;
mod faults;
mod fuzz_regressions;
mod harness;
mod hostile;
mod layering;
mod load;
mod local_hardening;
mod local_mode;
mod operator_cli;
mod policy_lint;
mod races;
mod request_api;
mod slack_interactions;
mod smoke;
mod support;
mod sweeper;
mod template;
