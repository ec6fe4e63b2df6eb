//! The `countersign` command: workloads request and wait for approvals, operators manage policies and the
//! audit trail, and `countersign dev` runs the whole product locally. See `countersign --help`.
//!
//! The product's crates live under `crates/` (docs/architecture.md).

pub mod cli;
