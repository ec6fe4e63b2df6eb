//! Policy files that say less than they do, through the real `countersign` binary and local mode's policy
//! load: principal patterns broader than they read are refused (threat row 29), and policies that shadow
//! each other are warned about, or refused with `--strict` (row 32). `policy apply` runs against the
//! embedded store and fresh DynamoDB tables on the emulator (`store init`).

use std::path::Path;

use countersign_local::{DevConfig, LocalServer};

use countersign_testkit::app::StoreKind;
use countersign_testkit::cli::{self, Ran};
use countersign_testkit::on_both_stores;

/// Runs `countersign ARGS` with nothing from the developer's AWS setup but the emulator's variables.
async fn countersign(args: &[&str]) -> Ran {
    let mut c = cli::command();
    c.args(args);
    cli::run(c).await
}

/// A policy file in a fresh directory (kept alive with the returned guard).
fn policy_file(yaml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("policies.yaml");
    std::fs::write(&f, yaml).unwrap();
    (dir, f.to_str().unwrap().to_string())
}

/// A store `policy apply` can write to: `--store local --data-dir D`, or fresh DynamoDB tables made by
/// `store init` (`None` when the emulator is not configured, outside CI).
async fn store_args(kind: StoreKind, dir: &Path) -> Option<Vec<String>> {
    match kind {
        StoreKind::Embedded => Some(vec![
            "--store".into(),
            "local".into(),
            "--data-dir".into(),
            dir.join("data").to_str().unwrap().to_string(),
        ]),
        StoreKind::Dynamodb => {
            countersign_testkit::stores::emulator_endpoint()?;
            let prefix = format!("cs-lint-{}", ulid::Ulid::new().to_string().to_lowercase());
            let args = vec!["--store".to_string(), "dynamodb".into(), "--table-prefix".into(), prefix];
            let init: Vec<&str> = ["store", "init"].into_iter().chain(args.iter().map(String::as_str)).collect();
            let ran = countersign(&init).await;
            assert_eq!(ran.code, 0, "{ran:?}");
            Some(args)
        }
    }
}

async fn run_with(head: &[&str], store: &[String]) -> Ran {
    let args: Vec<&str> = head.iter().copied().chain(store.iter().map(String::as_str)).collect();
    countersign(&args).await
}

/// One policy per principal pattern, otherwise valid.
fn with_principals(patterns: &[&str]) -> String {
    let mut y = String::from("version: 1\npolicies:\n");
    for (i, p) in patterns.iter().enumerate() {
        y.push_str(&format!(
            "  - name: p{i}\n    principals: [\"{p}\"]\n    actions: [deploy]\n    environments: [production]\n    \
             approvers: {{users: [UALICE0001]}}\n    required_approvals: 1\n    channel: C0APPROVALS\n    max_ttl: 1h\n"
        ));
    }
    y
}

const BROAD: &[&str] = &[
    "arn:aws:iam::111122223333:role/ci/*",
    "arn:aws:iam::111122223333:role/*",
    "arn:aws:iam::111122223333:user/*",
    "arn:aws:iam::111122223333:role/*/deploy",
];

// ---- row 29: principal patterns broader than they read --------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t29_policy_validate_refuses_broad_principal_patterns_saying_why() {
    let (_dir, f) = policy_file(&with_principals(BROAD));
    let ran = countersign(&["policy", "validate", &f]).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stderr.contains("is not valid (4 problem(s))"), "{ran:?}");
    for (i, p) in BROAD.iter().enumerate() {
        assert!(ran.stderr.contains(&format!("policy \"p{i}\", field principals: \"{p}\"")), "{p}: {ran:?}");
    }
    assert!(ran.stderr.contains("the path /ci/ is ignored (assumed-role ARNs carry no path"), "{ran:?}");
    assert!(ran.stderr.contains("would match every role in account 111122223333"), "{ran:?}");
    assert!(ran.stderr.contains("would match every user in account 111122223333"), "{ran:?}");
    assert!(ran.stderr.contains("a wildcard in the IAM path (/*/) cannot be matched"), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t29_named_prefixes_and_paths_without_wildcards_still_validate() {
    let ok = ["arn:aws:iam::111122223333:role/ci-*", "arn:aws:iam::111122223333:role/service-role/deployer"];
    let (_dir, f) = policy_file(&with_principals(&ok));
    let ran = countersign(&["policy", "validate", &f]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.contains("valid, 2 policies"), "{ran:?}");
}

async fn t29_policy_apply_refuses_a_broad_pattern_and_changes_nothing(kind: StoreKind) {
    let (dir, f) = policy_file(&with_principals(&["arn:aws:iam::111122223333:role/ci/*"]));
    let Some(store) = store_args(kind, dir.path()).await else { return };
    let ran = run_with(&["policy", "apply", &f, "--yes"], &store).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stderr.contains("would match every role in account 111122223333"), "{ran:?}");
    let good = with_principals(&["arn:aws:iam::111122223333:role/ci-*"]);
    std::fs::write(&f, good).unwrap();
    let ran = run_with(&["policy", "diff", &f], &store).await;
    assert!(ran.stdout.contains("+ p0 (new"), "nothing was applied: {ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t29_local_mode_refuses_to_start_on_a_broad_pattern() {
    let dir = crate::local_mode::data_dir();
    let yaml = with_principals(&["arn:aws:iam::111122223333:role/ci/*"]);
    std::fs::write(dir.path().join("policies.yaml"), yaml).unwrap();
    let config = DevConfig::parse(&crate::local_mode::config_text(dir.path())).unwrap();
    let addr = "127.0.0.1:1".parse().unwrap();
    let Err(e) = LocalServer::build(&config, addr).await else { panic!("local mode started on role/ci/*") };
    let shown = e.to_string();
    assert!(shown.contains("is not valid") && shown.contains("the path /ci/ is ignored"), "{shown}");
}

// ---- row 32: policies that shadow each other --------------------------------------------------------------

/// `strict-prod` (2 approvals, SRE) and `team-deploys` (1 approval, the team, another channel) both match
/// `role/ci-deploy` deploying to production: strict-prod wins, team-deploys never governs those requests.
const SHADOWING: &str = r#"
version: 1
policies:
  - name: team-deploys
    principals: [arn:aws:iam::111122223333:role/ci-deploy]
    actions: [deploy]
    environments: ["prod*"]
    approvers: {users: [UMALLORY01]}
    required_approvals: 1
    channel: C0TEAM0001
    max_ttl: 1h
  - name: strict-prod
    principals: [arn:aws:iam::111122223333:role/ci-*]
    actions: ["*"]
    environments: [production]
    resources: ["service/*"]
    approvers: {users: [UALICE0001, UBOB000001]}
    required_approvals: 2
    channel: C0APPROVALS
    max_ttl: 1h
"#;

const WARNING: &str = "policies \"team-deploys\" and \"strict-prod\" can match the same request (for example \
                       principal arn:aws:iam::111122223333:role/ci-deploy, action deploy, environment production, \
                       resource service/*) but differ in approvers, channel: \"strict-prod\" wins";

fn disjoint() -> String {
    SHADOWING.replace("environments: [\"prod*\"]", "environments: [staging]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t32_policy_validate_warns_about_shadowing_policies_naming_both_and_the_winner() {
    let (_dir, f) = policy_file(SHADOWING);
    let ran = countersign(&["policy", "validate", &f]).await;
    assert_eq!(ran.code, 0, "a warning, not an error: {ran:?}");
    assert!(ran.stderr.contains(&format!("warning: {f}: {WARNING}")), "{ran:?}");
    assert!(ran.stderr.contains("so \"team-deploys\" never governs such a request"), "{ran:?}");
    assert_eq!(ran.stderr.matches("warning:").count(), 1, "{ran:?}");
    assert!(ran.stdout.contains("valid, 2 policies"), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t32_policy_validate_strict_fails_on_shadowing_policies() {
    let (_dir, f) = policy_file(SHADOWING);
    let ran = countersign(&["policy", "validate", "--strict", &f]).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stderr.contains("1 pair(s) of policies shadow each other (--strict)"), "{ran:?}");
    assert!(ran.stderr.contains(WARNING), "{ran:?}");
    assert!(!ran.stdout.contains("valid"), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t32_policy_validate_is_quiet_about_policies_that_cannot_match_the_same_request() {
    let (_dir, f) = policy_file(&disjoint());
    for strict in [false, true] {
        let args: Vec<&str> =
            ["policy", "validate"].into_iter().chain(strict.then_some("--strict")).chain([f.as_str()]).collect();
        let ran = countersign(&args).await;
        assert_eq!(ran.code, 0, "{ran:?}");
        assert!(!ran.stderr.contains("warning") && !ran.stderr.contains("shadow"), "{ran:?}");
    }
    let (_dir, example) = policy_file(include_str!("../../infra/policies.example.yaml"));
    let ran = countersign(&["policy", "validate", "--strict", &example]).await;
    assert_eq!(ran.code, 0, "the example policies do not shadow each other: {ran:?}");
}

async fn t32_policy_apply_warns_and_applies_but_strict_refuses_and_changes_nothing(kind: StoreKind) {
    let (dir, f) = policy_file(SHADOWING);
    let Some(store) = store_args(kind, dir.path()).await else { return };
    let ran = run_with(&["policy", "apply", &f, "--yes", "--strict"], &store).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stderr.contains("shadow each other (--strict)") && ran.stderr.contains(WARNING), "{ran:?}");
    let ran = run_with(&["policy", "diff", &f], &store).await;
    assert!(ran.stdout.contains("2 to add"), "--strict applied nothing: {ran:?}");

    let ran = run_with(&["policy", "apply", &f, "--yes"], &store).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stderr.contains(&format!("warning: {f}: {WARNING}")), "{ran:?}");
    assert!(ran.stdout.contains("Applied 2 change(s)"), "{ran:?}");

    std::fs::write(&f, disjoint()).unwrap();
    let ran = run_with(&["policy", "apply", &f, "--yes", "--strict"], &store).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(!ran.stderr.contains("warning"), "{ran:?}");
    assert!(ran.stdout.contains("Applied 1 change(s)"), "{ran:?}");
}

on_both_stores!(workers = 2;
    t29_policy_apply_refuses_a_broad_pattern_and_changes_nothing,
    t32_policy_apply_warns_and_applies_but_strict_refuses_and_changes_nothing,
);
