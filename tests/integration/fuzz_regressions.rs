//! Replays every input kept in fuzz/regressions/<target>/ (crashes the fuzzers found, and seeds) through the
//! same function the cargo-fuzz target runs (fuzz/targets.rs), so a fixed crash stays fixed in the normal
//! `cargo test`, without nightly.

use std::path::PathBuf;

#[path = "../../fuzz/targets.rs"]
mod targets;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in [root.join("regressions").join(target), root.join("seeds").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                let data = std::fs::read(&path).unwrap();
                if std::panic::catch_unwind(|| run(&data)).is_err() {
                    panic!("{target}: {} panics", path.display());
                }
                n += 1;
            }
        }
    }
    n
}

#[test]
fn slack_signature_regressions_replay_without_panic() {
    assert!(replay("slack_signature", targets::slack_signature) > 0);
}

#[test]
fn slack_interaction_regressions_replay_without_panic() {
    assert!(replay("slack_interaction", targets::slack_interaction) > 0);
}

#[test]
fn policy_yaml_regressions_replay_without_panic() {
    assert!(replay("policy_yaml", targets::policy_yaml) > 0);
}

#[test]
fn api_body_regressions_replay_without_panic() {
    assert!(replay("api_body", targets::api_body) > 0);
}
