//! The operator side of the `countersign` binary, run for real (`CARGO_BIN_EXE_countersign`): policy
//! validation, store set-up and policy apply on the embedded store and on the DynamoDB emulator.

use std::path::Path;
use std::process::Output;

use countersign_aws::dynamodb::{DynamoStore, TableNames};
use countersign_core::domain::audit::verify_chain;
use countersign_core::domain::AuditKind;
use countersign_core::ports::{AuditLog, PolicyStore};
use countersign_sqlite::EmbeddedStore;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/infra/policies.example.yaml");

pub(crate) fn countersign(args: &[&str]) -> Output {
    countersign_testkit::cli::std_command().args(args).output().expect("the binary runs")
}

pub(crate) fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn policy_validate_accepts_the_example_and_exits_0() {
    let o = countersign(&["policy", "validate", EXAMPLE]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("valid, 4 policies"), "{}", text(&o));
}

#[test]
fn policy_validate_reports_every_problem_with_policy_field_and_line_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let src = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replace("max_ttl: 1h", "max_ttl: 1 hour")
        .replace("channel: C0SECURITY", "channel: security");
    std::fs::write(&bad, src).unwrap();
    let o = countersign(&["policy", "validate", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("policy \"deploy-production\", field max_ttl"), "{out}");
    assert!(out.contains("policy \"rotate-secrets\", field channel"), "{out}");
    assert!(out.contains("line 8:") && out.contains("line 36:"), "{out}");
}

#[test]
fn policy_validate_on_a_missing_file_fails_cleanly() {
    let o = countersign(&["policy", "validate", "/nonexistent/policies.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("cannot read"), "{}", text(&o));
}

fn data_dir_args(dir: &Path) -> Vec<String> {
    vec!["--store".into(), "local".into(), "--data-dir".into(), dir.to_string_lossy().into_owned()]
}

#[tokio::test]
async fn local_store_init_and_policy_apply_are_audited_and_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store_args = data_dir_args(dir.path());
    let mut init = vec!["store", "init"];
    init.extend(store_args.iter().map(String::as_str));
    let o = countersign(&init);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let mut apply = vec!["policy", "apply", EXAMPLE];
    apply.extend(store_args.iter().map(String::as_str));
    let without_yes = countersign(&apply);
    assert_eq!(without_yes.status.code(), Some(2), "no terminal, no --yes: {}", text(&without_yes));
    apply.push("--yes");
    let o = countersign(&apply);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("4 to add, 0 to change, 0 to remove"), "{}", text(&o));
    let again = countersign(&apply);
    assert!(text(&again).contains("No changes"), "{}", text(&again));

    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.list_policies().await.unwrap().len(), 4);
    let audit = store.read_from(1, 100).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.kind == AuditKind::PolicyChanged).count(), 4);
    verify_chain(&audit).unwrap();
}

#[tokio::test]
async fn dynamodb_store_init_and_policy_apply_record_the_sts_caller() {
    let Some(endpoint) = countersign_testkit::stores::emulator_endpoint() else { return };
    let prefix = format!("cs-cli-{}", ulid::Ulid::new().to_string().to_lowercase());
    let o = countersign(&["store", "init", "--store", "dynamodb", "--table-prefix", &prefix]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let again = countersign(&["store", "init", "--store", "dynamodb", "--table-prefix", &prefix]);
    assert_eq!(again.status.code(), Some(0), "store init is safe to repeat: {}", text(&again));
    let o = countersign(&["policy", "apply", EXAMPLE, "--store", "dynamodb", "--table-prefix", &prefix, "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest()).endpoint_url(endpoint).load().await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&conf), TableNames::with_prefix(&prefix));
    assert_eq!(store.list_policies().await.unwrap().len(), 4);
    let audit = store.read_from(1, 100).await.unwrap();
    let changed: Vec<_> = audit.iter().filter(|e| e.kind == AuditKind::PolicyChanged).collect();
    assert_eq!(changed.len(), 4);
    assert!(
        changed.iter().all(|e| e.actor.0.starts_with("aws:arn:aws:")),
        "actor is the STS caller: {:?}",
        changed[0].actor
    );
    verify_chain(&audit).unwrap();
}

#[test]
fn t37_policy_history_lists_each_version_and_replays_the_set_at_an_instant() {
    let dir = tempfile::tempdir().unwrap();
    let store_args = data_dir_args(dir.path());
    let with_store = |head: &[&str]| -> Vec<String> {
        head.iter().map(|s| s.to_string()).chain(store_args.iter().cloned()).collect()
    };
    let run = |args: Vec<String>| countersign(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(run(with_store(&["store", "init"])).status.code(), Some(0));
    assert_eq!(run(with_store(&["policy", "apply", EXAMPLE, "--yes"])).status.code(), Some(0));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let between = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let tightened = dir.path().join("tightened.yaml");
    let src = std::fs::read_to_string(EXAMPLE).unwrap();
    let changed = src.replacen("required_approvals: 2", "required_approvals: 3", 1);
    assert_ne!(src, changed, "the example has a policy with 2 approvals");
    std::fs::write(&tightened, changed).unwrap();
    let o = run(with_store(&["policy", "apply", tightened.to_str().unwrap(), "--yes"]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let o = run(with_store(&["policy", "history"]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert_eq!(out.lines().filter(|l| l.contains(" added ")).count(), 4, "{out}");
    assert!(out.lines().any(|l| l.contains("changed (required_approvals)")), "{out}");

    let o = run(with_store(&["policy", "history", "--at", &between]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let then: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let now_o = run(with_store(&["policy", "history", "--at", "2100-01-01"]));
    let now: serde_json::Value = serde_json::from_slice(&now_o.stdout).unwrap();
    let quorum = |v: &serde_json::Value| -> Vec<u64> {
        v.as_array().unwrap().iter().map(|p| p["required_approvals"].as_u64().unwrap()).collect()
    };
    assert!(quorum(&then).contains(&2) && !quorum(&then).contains(&3), "{then}");
    assert!(quorum(&now).contains(&3), "{now}");
}
