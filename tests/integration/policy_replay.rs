//! `countersign policy replay` through the real binary on a store seeded through the request API, on both
//! stores: a candidate file lists the requests it would decide otherwise (newly denied, newly allowed,
//! another policy, another quorum, approvers added and removed) with counts per policy, and
//! `--fail-on-change` exits 1; the file in force replays with no change and exits 0.

use serde_json::{json, Value};

use countersign_core::ports::Stores;
use countersign_testkit::app::{on_both_stores, spawn_app_on, AppOptions, StoreKind, TestApp, DEPLOY_ARN, POLICIES};
use countersign_testkit::cli::{self, Ran};

use super::whoami::MIGRATIONS;

const MIGRATOR_ARN: &str = "arn:aws:sts::111122223333:assumed-role/migrator/flyway-7";

/// In force besides [`POLICIES`]: hotfixes to production with one approval.
const HOTFIX: &str = r#"
  - name: hotfix
    principals: [arn:aws:iam::111122223333:role/github-deploy]
    actions: [hotfix]
    environments: [production]
    approvers: {users: [UALICE0001]}
    required_approvals: 1
    channel: C0APPROVALS
    max_ttl: 1h
"#;

/// The candidate: deploy-production needs 3 (CAROL out, DAVE in); staging goes to a reviewed policy that
/// refuses long-term keys; hotfix is gone; the migrator gets a policy.
fn candidate() -> String {
    let edits = [
        ("users: [UALICE0001, UBOB000001, UCAROL0001]", "users: [UALICE0001, UBOB000001, UDAVE00001]"),
        ("required_approvals: 2", "required_approvals: 3"),
        ("name: staging-auto", "name: staging-reviewed"),
        (
            "required_approvals: 0",
            "approvers: {users: [UBOB000001]}\n    required_approvals: 1\n    credentials: temporary",
        ),
    ];
    let mut text = POLICIES.to_string();
    for (from, to) in edits {
        assert_eq!(text.matches(from).count(), 1, "{from:?} once in the test policies");
        text = text.replace(from, to);
    }
    format!("{text}{MIGRATIONS}")
}

/// An app on a store the CLI can open too, and the flags that point `countersign` at it.
async fn app_and_store_flags(kind: StoreKind) -> Option<(TestApp, Vec<(String, String)>, Vec<String>)> {
    match kind {
        StoreKind::Embedded => {
            let (dir, store) = countersign_testkit::stores::embedded();
            let flags = vec!["--store".into(), "local".into(), "--data-dir".into(), dir.path().display().to_string()];
            let t = spawn_app_on(Stores::from_one(store), Box::new(dir), AppOptions::default()).await;
            Some((t, Vec::new(), flags))
        }
        StoreKind::Dynamodb => {
            let (store, _client, tables) = countersign_testkit::stores::dynamo().await?;
            let env = vec![
                ("COUNTERSIGN_POLICIES_TABLE".to_string(), tables.policies.clone()),
                ("COUNTERSIGN_REQUESTS_TABLE".to_string(), tables.requests.clone()),
                ("COUNTERSIGN_AUDIT_TABLE".to_string(), tables.audit.clone()),
            ];
            let t = spawn_app_on(Stores::from_one(store), Box::new(()), AppOptions::default()).await;
            Some((t, env, vec!["--store".into(), "dynamodb".into()]))
        }
    }
}

/// Seeds the requests every replay below decides again, through the request API.
async fn seed(t: &TestApp) {
    t.apply_policies(&format!("{POLICIES}{HOTFIX}")).await;
    let create = |caller: &'static str, action: &str, env: &str| {
        let body = json!({"action": action, "environment": env, "reason": "release 42"});
        async move { t.create(caller, &body).await }
    };
    assert_eq!(create(DEPLOY_ARN, "deploy", "production").await.status, 201);
    assert_eq!(create(DEPLOY_ARN, "deploy", "staging").await.status, 201);
    assert_eq!(create(DEPLOY_ARN, "hotfix", "production").await.status, 201);
    assert_eq!(create(MIGRATOR_ARN, "db:migrate", "production").await.status, 403);
    let body = json!({"action": "deploy", "environment": "staging"});
    assert_eq!(t.create_with_key(DEPLOY_ARN, "AKIAEXAMPLE0000WXYZ", &body).await.status, 201);
}

async fn replay(env: &[(String, String)], store: &[String], file: &str, extra: &[&str]) -> Ran {
    let mut c = cli::command();
    c.args(["policy", "replay", file, "--since", "2000-01-01"]).args(store).args(extra);
    for (k, v) in env {
        c.env(k, v);
    }
    cli::run(c).await
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let f = dir.path().join(name);
    std::fs::write(&f, text).unwrap();
    f.display().to_string()
}

async fn policy_replay_lists_changed_outcomes_with_counts_per_policy_and_fails_on_change(kind: StoreKind) {
    let Some((t, env, store)) = app_and_store_flags(kind).await else { return };
    seed(&t).await;
    let dir = tempfile::tempdir().unwrap();
    let in_force = write(&dir, "in-force.yaml", &format!("{POLICIES}{HOTFIX}"));
    let candidate = write(&dir, "candidate.yaml", &candidate());

    let ran = replay(&env, &store, &in_force, &["--fail-on-change"]).await;
    assert_eq!(ran.code, 0, "the policies in force change nothing: {ran:?}");
    assert!(ran.stdout.contains("replayed 5 request(s)") && ran.stdout.contains("0 would change"), "{ran:?}");

    let ran = replay(&env, &store, &candidate, &[]).await;
    assert_eq!(ran.code, 0, "without --fail-on-change a change is a report: {ran:?}");
    let out = &ran.stdout;
    for line in [
        "another quorum: 2 → 3 approval(s)",
        "approvers added: UDAVE00001",
        "approvers removed: UCAROL0001",
        "another policy: staging-auto → staging-reviewed",
        "newly denied (long_term_credentials)",
        "newly allowed (under migrations)",
        "newly denied (no_matching_policy)",
    ] {
        assert!(out.contains(line), "{line:?} in {out}");
    }
    assert!(out.contains("5 would change"), "{out}");
    assert!(out.contains(&format!("{MIGRATOR_ARN} asked for db:migrate in production")), "{out}");

    let ran = replay(&env, &store, &candidate, &["--fail-on-change", "--output", "json"]).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    let v: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!((v["replayed"].as_u64(), v["changed"].as_array().map(Vec::len)), (Some(5), Some(5)), "{v}");
    let counts = |name: &str| {
        let c = &v["policies"][name];
        (c["before"].as_u64().unwrap(), c["after"].as_u64().unwrap(), c["changed"].as_u64().unwrap())
    };
    assert_eq!(counts("deploy-production"), (1, 1, 1));
    assert_eq!(counts("staging-auto"), (2, 0, 2));
    assert_eq!(counts("staging-reviewed"), (0, 1, 1));
    assert_eq!(counts("hotfix"), (1, 0, 1));
    assert_eq!(counts("migrations"), (0, 1, 1));
    assert_eq!(counts("(denied)"), (1, 2, 3));
    let prod = v["changed"].as_array().unwrap().iter().find(|c| c["before"]["policy"] == "deploy-production").unwrap();
    assert_eq!(
        prod["changes"],
        json!([
            {"change": "another_quorum", "from": 2, "to": 3},
            {"change": "approvers_added", "approvers": ["UDAVE00001"]},
            {"change": "approvers_removed", "approvers": ["UCAROL0001"]},
        ])
    );
    assert!(prod["request"].as_str().unwrap().starts_with("req_"));

    // An invalid candidate is refused before the store is read.
    let bad = write(&dir, "bad.yaml", "version: 1\npolicies:\n  - name: x\n");
    let ran = replay(&env, &store, &bad, &["--fail-on-change"]).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stderr.contains("bad.yaml is not valid"), "{ran:?}");
}

async fn policy_replay_of_a_period_without_requests_changes_nothing(kind: StoreKind) {
    let Some((t, env, store)) = app_and_store_flags(kind).await else { return };
    seed(&t).await;
    let dir = tempfile::tempdir().unwrap();
    let candidate = write(&dir, "candidate.yaml", &candidate());
    let mut c = cli::command();
    c.args(["policy", "replay", &candidate, "--since", "2999-01-01", "--fail-on-change"]).args(&store);
    for (k, v) in &env {
        c.env(k, v);
    }
    let ran = cli::run(c).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.contains("replayed 0 request(s)"), "{ran:?}");
}

on_both_stores!(
    policy_replay_lists_changed_outcomes_with_counts_per_policy_and_fails_on_change,
    policy_replay_of_a_period_without_requests_changes_nothing,
);
