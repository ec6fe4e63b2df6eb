//! The rule of the house is the crate graph (docs/architecture.md): these tests read it from cargo, not from
//! the source text, and fail when it slips.
//!
//! - core (domain, ports, services) depends on no AWS, HTTP, Slack, SQLite or Lambda crate, and on no other
//!   crate of ours;
//! - the adapters (aws, slack, sqlite) depend on core only, never on each other or on lambda/local;
//! - what the three Lambda binaries link (the normal dependency tree of `countersign-lambda`) holds no
//!   `rusqlite`, `clap`, `indicatif` or `toml`, neither the Slack emulator nor core's `testing` feature, and
//!   no crate of ours depends on `aws-sigv4` (signing calls to the request API is the CLI's). The AWS SDK
//!   itself signs its own calls with `aws-sigv4` (`aws-runtime` → `aws-sigv4`), so the crate is in the tree
//!   under the SDK, and only there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    c
}

fn run(c: &mut Command) -> String {
    let out = c.output().expect("run cargo");
    assert!(out.status.success(), "{c:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("cargo prints UTF-8")
}

/// Each workspace crate → its direct normal (not dev, not build) dependencies.
fn normal_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let meta: Value =
        serde_json::from_str(&run(cargo().args(["metadata", "--format-version", "1", "--no-deps", "--offline"])))
            .expect("cargo metadata is JSON");
    let mut graph = BTreeMap::new();
    for p in meta["packages"].as_array().expect("packages") {
        let deps = p["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().expect("name").to_owned())
            .collect();
        graph.insert(p["name"].as_str().expect("name").to_owned(), deps);
    }
    graph
}

const OUTSIDE_WORLD: &[&str] = &[
    "aws-config",
    "aws-sdk-dynamodb",
    "aws-sdk-secretsmanager",
    "aws-sdk-sts",
    "aws-sdk-kms",
    "aws-sdk-s3",
    "aws-sdk-eventbridge",
    "aws-sdk-sqs",
    "aws-sigv4",
    "aws-credential-types",
    "aws-types",
    "lambda_http",
    "aws_lambda_events",
    "axum",
    "tower",
    "http-body-util",
    "reqwest",
    "rusqlite",
    "hmac",
    // (base64 is allowed: the receipt's compact JWS encoding is part of the domain's receipt format)
    "clap",
    "indicatif",
    "toml",
];

fn ours(graph: &BTreeMap<String, BTreeSet<String>>, krate: &str) -> BTreeSet<String> {
    graph[krate].iter().filter(|d| d.starts_with("countersign")).cloned().collect()
}

#[test]
fn core_depends_on_nothing_from_the_outside_world_nor_on_our_other_crates() {
    let graph = normal_dependencies();
    let core = &graph["countersign-core"];
    let bad: Vec<_> = core.iter().filter(|d| OUTSIDE_WORLD.contains(&d.as_str())).collect();
    assert!(bad.is_empty(), "countersign-core depends on {bad:?}");
    assert!(ours(&graph, "countersign-core").is_empty(), "{:?}", ours(&graph, "countersign-core"));
}

#[test]
fn adapters_depend_on_core_only_never_on_each_other_or_on_lambda_or_local() {
    let graph = normal_dependencies();
    for adapter in ["countersign-aws", "countersign-slack", "countersign-sqlite"] {
        let deps = ours(&graph, adapter);
        assert_eq!(deps, BTreeSet::from(["countersign-core".to_owned()]), "{adapter} depends on {deps:?}");
    }
    assert!(
        !graph["countersign-aws"].contains("rusqlite") && !graph["countersign-sqlite"].contains("aws-sdk-dynamodb")
    );
    let lambda = ours(&graph, "countersign-lambda");
    assert!(!lambda.contains("countersign-local") && !lambda.contains("countersign-sqlite"), "{lambda:?}");
    assert!(!lambda.contains("countersign-testkit"), "{lambda:?}");
}

/// Package names (with their enabled features) in the normal dependency tree of what the Lambdas link.
fn lambda_tree() -> Vec<(String, String)> {
    let out = run(cargo().args([
        "tree",
        "--offline",
        "-p",
        "countersign-lambda",
        "-e",
        "normal",
        "--prefix",
        "none",
        "--format",
        "{p}|{f}",
    ]));
    out.lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(p, f)| (p.split_whitespace().next().unwrap_or("").to_owned(), f.trim().to_owned()))
        .collect()
}

#[test]
fn lambda_binaries_link_no_cli_local_mode_or_test_machinery() {
    let tree = lambda_tree();
    assert!(tree.iter().any(|(p, _)| p == "countersign-core"), "cargo tree printed no core: {tree:?}");
    for banned in
        ["rusqlite", "clap", "indicatif", "toml", "countersign-local", "countersign-sqlite", "countersign-testkit"]
    {
        assert!(!tree.iter().any(|(p, _)| p == banned), "the Lambda binaries link {banned}");
    }
    let graph = normal_dependencies();
    for krate in ["countersign-core", "countersign-aws", "countersign-slack", "countersign-lambda"] {
        assert!(!graph[krate].contains("aws-sigv4"), "{krate} depends on aws-sigv4: signing is the CLI's");
    }
    for (krate, feature) in [("countersign-slack", "emulator"), ("countersign-core", "testing")] {
        let features: Vec<_> = tree.iter().filter(|(p, _)| p == krate).map(|(_, f)| f.as_str()).collect();
        assert!(!features.iter().any(|f| f.split(',').any(|x| x == feature)), "{krate} is built with `{feature}`");
    }
}

// ---- the rooms: size, thin binaries, rules written once ---------------------------------------------------

/// Every `.rs` file of the product (the CLI's `src/` and each crate's `src/`), with its path.
fn product_sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("read a source directory") {
            let p = entry.expect("a directory entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push((p.display().to_string(), std::fs::read_to_string(&p).expect("read a source file")));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    walk(&root.join("src"), &mut out);
    for krate in std::fs::read_dir(root.join("crates")).expect("crates/") {
        walk(&krate.expect("a crate").path().join("src"), &mut out);
    }
    out
}

/// The lines of a file before its unit tests (`#[cfg(test)]` at the start of a line); test files count 0.
fn code_lines(path: &str, src: &str) -> usize {
    if path.ends_with("/tests.rs") || path.contains("/tests/") {
        return 0;
    }
    src.lines().take_while(|l| !l.starts_with("#[cfg(test)]")).count()
}

#[test]
fn no_source_file_passes_700_lines_of_code_and_every_bin_is_30_lines_or_fewer() {
    let mut big = Vec::new();
    for (path, src) in product_sources() {
        let n = code_lines(&path, &src);
        if n > 700 {
            big.push(format!("{path}: {n} lines"));
        }
        if path.contains("/src/bin/") {
            assert!(src.lines().count() <= 30, "{path} has {} lines: a bin only wires", src.lines().count());
        }
    }
    assert!(big.is_empty(), "rooms that want splitting: {big:#?}");
}

/// How many product files (tests excluded) contain `needle` outside comments.
fn files_with(needle: &str) -> Vec<String> {
    product_sources()
        .into_iter()
        .filter(|(path, src)| {
            let code: String = src
                .lines()
                .take_while(|l| !l.starts_with("#[cfg(test)]"))
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            code_lines(path, src) > 0 && code.contains(needle)
        })
        .map(|(path, _)| path)
        .collect()
}

#[test]
fn rules_and_helpers_are_written_once() {
    // The cause-chain loop: countersign_core::error::error_chain.
    assert_eq!(files_with(".source();").len(), 1, "{:?}", files_with(".source();"));
    // When the relay owes Slack a post or an update: ApprovalRequest::notification_due_at.
    assert_eq!(files_with("fn notification_due").len(), 1, "{:?}", files_with("fn notification_due"));
    // Contention is typed (StoreError::Contention), never a string.
    assert!(files_with("contention\"").is_empty() && files_with("contention on this").is_empty());
    // One Slack Web API emulator: the methods are dispatched in one place, for the tests and the simulator.
    for method in ["\"users.info\" =>", "\"chat.postMessage\" =>", "\"chat.update\" =>"] {
        assert_eq!(files_with(method).len(), 1, "{method} {:?}", files_with(method));
    }
    // The audit chain is verified by the domain's ChainCheck only.
    assert_eq!(files_with("ChainVerifier::from_").len(), 1, "{:?}", files_with("ChainVerifier::from_"));
}
