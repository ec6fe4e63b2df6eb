//! Test scaffolding, written once: used by the integration tests, the benches and the conformance suite.
//! Never a dependency of what ships (`publish = false`; the crate graph test keeps it out of the Lambdas).
//!
//! - [`app`]: `TestApp` / `spawn_app`, the real application graph on a fresh store with the Slack emulator,
//!   a manual clock and fixed secrets; API Gateway events and signed Slack callbacks; the store matrix
//!   macros [`on_both_stores!`] and [`both_stores!`].
//! - [`stores`]: fresh embedded databases and fresh DynamoDB tables, and raw-access tampering of each.
//! - [`emulator`]: the one lookup of the AWS emulator (loopback only, parsed), and SDK configs for it.
//! - [`cli`]: the one way tests run the `countersign` binary, isolated from the developer's AWS setup.
//! - [`workspace_binary`]: where `cargo test` put the workspace's binaries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

pub mod app;
pub mod cli;
pub mod emulator;
pub mod stores;

/// The path of one of the workspace's binaries (`request-api`, `slack-interactions`, `sweeper`, `countersign`),
/// built by the same `cargo test` that built the calling test binary. Cargo sets `CARGO_BIN_EXE_*` only for
/// the test's own package, and the Lambda binaries live in `countersign-lambda`; they sit beside the test
/// binary's `deps/` directory. Panics, saying how to build them, when they are not there.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("the test binary sits in target/<profile>/deps");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is not built: run the tests from the workspace root (`cargo test`, `scripts/test`), which builds every \
         member's binaries, or `cargo build --bins` first",
        path.display()
    );
    path
}
