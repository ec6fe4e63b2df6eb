//! The rule of the house: the domain and the services never use AWS SDKs, Lambda, HTTP frameworks, HTTP
//! clients or Slack's JSON; adapters never use each other. This test fails the build when that slips.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out
}

fn offenders(dir: &str, forbidden: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut found = Vec::new();
    for f in rust_files(&root) {
        let src = std::fs::read_to_string(&f).unwrap();
        for (n, line) in src.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for bad in forbidden {
                if code.contains(bad) {
                    found.push(format!("{}:{}: uses {bad}", f.display(), n + 1));
                }
            }
        }
    }
    found
}

const OUTSIDE_WORLD: &[&str] = &[
    "aws_sdk_",
    "aws_config",
    "lambda_http",
    "lambda_runtime",
    "axum",
    "reqwest",
    "rusqlite",
    "crate::adapters",
    "crate::http",
    "tokio::net",
    "std::fs",
    "std::net",
];

#[test]
fn domain_uses_nothing_from_the_outside_world() {
    let mut forbidden = OUTSIDE_WORLD.to_vec();
    forbidden.extend(["tokio", "crate::service", "crate::ports"]);
    let found = offenders("src/domain", &forbidden);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn services_use_only_the_domain_and_the_ports() {
    let found = offenders("src/service", OUTSIDE_WORLD);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn adapters_do_not_use_each_other() {
    for (dir, others) in [
        ("src/adapters/dynamodb", &["adapters::embedded", "adapters::slack", "adapters::secrets"][..]),
        ("src/adapters/slack", &["adapters::embedded", "adapters::dynamodb", "adapters::secrets"][..]),
    ] {
        let found = offenders(dir, others);
        assert!(found.is_empty(), "{found:#?}");
    }
    let embedded =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/adapters/embedded.rs")).unwrap();
    assert!(!embedded.contains("adapters::dynamodb") && !embedded.contains("adapters::slack"));
}
