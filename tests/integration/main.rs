//! The one integration test binary: black-box tests of the library through its public API.
//!
//! - `conformance`: the store contract, written once and run against every store.
//! - `cli`: the `countersign` binary against a stand-in request API and the DynamoDB emulator.
//! - `dynamodb_store`: DynamoDB-specific behaviour (keys, indexes, pagination, transactions) on the emulator.
//! - `request_api`: the request API's contract and threat rows 16–21 and 23, end to end on both stores.
//! - `requester_text`: threat row 33 (invisible, bidirectional and look-alike text) through the request API.
//! - `refused_callbacks`: callbacks refused before authentication are audited (`callback.rejected` by
//!   `slack:unknown`, rationed per process) with nothing of the body, and the 401 goes out even when the audit
//!   store is down (threat rows 1, 4, 7 and 27).
//! - `receipts_kms`: receipts signed by a KMS key through the real adapter on the emulator, verified with
//!   RustCrypto's `p256` against the published JWK; keys of the wrong kind or missing are refused (row 36).
//! - `checkpoints_s3`: audit checkpoints through the real S3 adapter on the emulator, in a bucket with Object
//!   Lock: written once, listed in chain order, and a stored version cannot be deleted (row 37).
//! - `secret_rotation`: the Slack secrets through the real Secrets Manager adapter on the emulator: the previous
//!   signing secret's grace period (row 27), each function reading only its own secret (row 28).
//! - `slack_interactions`, `sweeper`: the Slack callback handler and the scheduled sweeper, threat rows 1–15,
//!   22, 24 and 26.
//! - `policy_cache`: the policy set a process keeps is never older than the last finished `policy apply`
//!   (issue 18; row 14 with a warm cache), in one process and across two, on both stores.
//! - `policy_drift`: policies that overlap or change under a pending request (threat rows 30 and 31).
//! - `local_mode`: `countersign dev` over real HTTP: SigV4 (aws-sigv4 and curl), the Slack simulator, restarts.
//! - `local_hardening`: the real `countersign dev` refuses DNS-rebinding `Host`s with 421 on every route and
//!   look-alike loopback Slack API URLs at start-up (threat row 39).
//! - `load`: the real `countersign dev` process under 32 concurrent clients, and killed with SIGKILL mid-load:
//!   nothing acknowledged is lost and `countersign audit verify` passes.
//! - `policy_lint`: policy files broader than they read (threat row 29) and policies that shadow each other
//!   (row 32), through the real binary's `policy validate` / `apply` and local mode's policy load.
//! - `checkpoints_cli`: threat row 37 through the real binary: `audit verify --checkpoints` names a rewritten,
//!   re-hashed suffix, deleted newest records, an older backup restored, a forged or deleted checkpoint.
//! - `checkpoints_dynamo`: the same matrix on the DynamoDB store with the checkpoints in the emulator's S3
//!   (Object Lock), signed by a KMS key, through `--checkpoints s3://BUCKET/PREFIX` (row 37).
//! - `jws`: what the product signs (receipts, checkpoints) checked with RustCrypto's `p256` directly, not with
//!   the product's verifier; the KMS key that signs in AWS; a forger with an unpublished key.
//! - `operator_cli`, `layering`, `template`, `smoke`: operator commands, the layering rule, the SAM template's
//!   security posture, and one end-to-end flow.
//! - `op_counts`: DynamoDB round trips per approval (issue 18), from the emulator's own tally: no Scan, at
//!   most 6 reads and 6 writes for a create and two votes.
//! - `credentials`: threat row 40: `credentials: temporary` refuses long-term IAM user keys (`AKIA…`) with
//!   `403 long_term_credentials`, audited by the key's last 4 characters; votes re-check it.
//! - `voter_eligibility`: threat row 34: only active, full members of our workspaces vote (`users.info` at
//!   vote time, fail closed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod break_glass;
mod checkpoints;
mod checkpoints_cli;
mod checkpoints_dynamo;
mod checkpoints_s3;
mod cli;
mod conformance;
mod credentials;
mod drill_battery;
mod drills;
mod dynamodb_store;
mod events;
mod faults;
mod fuzz_regressions;
mod hostile;
mod jws;
mod layering;
mod load;
mod local_events;
mod local_hardening;
mod local_mode;
mod op_counts;
mod operator_cli;
mod policy_cache;
mod policy_drift;
mod policy_lint;
mod policy_replay;
mod policy_tools;
mod races;
mod receipts;
mod receipts_kms;
mod refused_callbacks;
mod request_api;
mod requester_text;
mod secret_rotation;
mod slack_interactions;
mod smoke;
mod sweeper;
mod template;
mod voter_eligibility;
mod whoami;
