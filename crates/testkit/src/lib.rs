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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub mod app;
pub mod cli;
pub mod emulator;
pub mod stores;

/// The path of one of the workspace's binaries (`request-api`, `slack-interactions`, `sweeper`, `countersign`),
/// up to date. Cargo builds a package's binaries only for that package's own integration tests (and sets
/// `CARGO_BIN_EXE_*` only there), and the Lambda binaries live in `countersign-lambda`; so the first call in a
/// test process runs `cargo build --bins` at the workspace root, with this test binary's profile and target
/// directory (a no-op when `scripts/test` built them already: cargo does not hold its lock while tests run).
pub fn workspace_binary(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("the test binary sits in target/<profile>/deps");
    BUILT.call_once(|| build_bins(dir));
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.is_file(), "{} is not built: `cargo build --bins` at the workspace root builds it", path.display());
    path
}

/// `cargo build --bins` for the profile directory `dir` (`target/debug` → the dev profile).
fn build_bins(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let target_dir = dir.parent().expect("target/<profile>");
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(&root).args(["build", "--quiet", "--bins", "--target-dir"]).arg(target_dir);
    if profile != "debug" {
        c.args(["--profile", profile]);
    }
    let mut child = c.spawn().expect("cargo starts");
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if let Some(status) = child.try_wait().expect("wait for cargo") {
            assert!(status.success(), "`cargo build --bins` failed: {status}");
            return;
        }
        assert!(Instant::now() < deadline, "`cargo build --bins` took more than 15 minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
}
