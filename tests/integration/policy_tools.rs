//! `countersign policy test` and `policy explain` through the real binary, on crafted policy sets: a
//! wrong expectation fails naming the case and exits 1, the shipped example cases pass, explain shows the
//! strictest-wins order, the owner exclusion and the shadowing warnings.

use countersign_testkit::cli::{self, Ran};

async fn countersign(args: &[&str]) -> Ran {
    let mut c = cli::command();
    c.args(args);
    cli::run(c).await
}

/// Files in a fresh directory (kept alive with the returned guard).
fn files(named: &[(&str, &str)]) -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let paths = named
        .iter()
        .map(|(name, text)| {
            let f = dir.path().join(name);
            std::fs::write(&f, text).unwrap();
            f.to_str().unwrap().to_string()
        })
        .collect();
    (dir, paths)
}

/// Three policies that all match ci-deploy's production deploys: `tight` wins on max_ttl over `platform`,
/// both win on approvals over `team`; `team` makes U0OWNER an owner, `platform` lists U0OWNER as an approver.
pub const SHADOWING_SET: &str = r#"version: 1
policies:
  - name: team
    principals: ["arn:aws:iam::111122223333:role/ci-deploy"]
    actions: [deploy]
    environments: [production]
    approvers: {users: [U0ALICE]}
    required_approvals: 1
    owners: [U0OWNER]
    channel: C0TEAM
    max_ttl: 1h
  - name: platform
    principals: ["arn:aws:iam::111122223333:role/ci-*"]
    actions: ["*"]
    environments: ["*"]
    approvers: {users: [U0BOB, U0OWNER], groups: [S0PLATFORM]}
    required_approvals: 2
    channel: C0PLATFORM
    max_ttl: 1h
  - name: tight
    principals: ["arn:aws:iam::111122223333:role/ci-deploy"]
    actions: [deploy]
    environments: [production]
    approvers: {users: [U0CAROL, U0DAVE]}
    required_approvals: 2
    channel: C0PLATFORM
    max_ttl: 30m
    credentials: temporary
"#;

const CASES: &str = r#"version: 1
cases:
  - name: production goes to tight
    principal: arn:aws:sts::111122223333:assumed-role/ci-deploy/run-1
    action: deploy
    environment: production
    expect: {policy: tight, required_approvals: 2, approvers_include: [U0CAROL], owners_include: [U0OWNER]}
  - name: staging goes to platform, and its owner cannot approve
    principal: arn:aws:sts::111122223333:assumed-role/ci-deploy/run-1
    action: deploy
    environment: staging
    expect: {policy: platform, approvers_include: [U0OWNER]}
  - name: a long-term key in production
    principal: arn:aws:iam::111122223333:role/ci-deploy
    action: deploy
    environment: production
    credential: long_term
    expect: deny
  - name: someone else
    principal: arn:aws:iam::111122223333:role/intruder
    action: deploy
    environment: production
    expect: {policy: team}
"#;

#[tokio::test]
async fn policy_test_fails_a_case_whose_winner_differs_and_exits_1() {
    let (_d, f) = files(&[("p.yaml", SHADOWING_SET), ("cases.yaml", CASES)]);
    let ran = countersign(&["policy", "test", &f[0], "--cases", &f[1]]).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    let out = &ran.stdout;
    assert!(out.contains("PASS    production goes to tight"), "{out}");
    assert!(out.contains("PASS    a long-term key in production"), "{out}");
    assert!(out.contains("FAIL    staging goes to platform"), "{out}");
    assert!(out.contains("U0OWNER cannot approve (listed, but an owner of this identity)"), "{out}");
    assert!(out.contains("FAIL    someone else"), "{out}");
    assert!(out.contains("cases.yaml:19: expected policy team"), "names the case's file and line: {out}");
    assert!(out.contains("denied (no_matching_policy)"), "{out}");
    assert!(out.contains("2 passed, 2 failed"), "{out}");

    let ran = countersign(&["policy", "test", &f[0], "--cases", &f[1], "--output", "json"]).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    let v: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!((v["passed"].as_u64(), v["failed"].as_u64()), (Some(2), Some(2)));
    assert_eq!(v["cases"][3]["name"], "someone else");
    assert_eq!(v["cases"][3]["pass"], false);
}

#[tokio::test]
async fn policy_test_passes_the_shipped_example_cases() {
    let root = env!("CARGO_MANIFEST_DIR");
    let ran = countersign(&[
        "policy",
        "test",
        &format!("{root}/infra/policies.example.yaml"),
        "--cases",
        &format!("{root}/infra/policies.test.yaml"),
    ])
    .await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.contains(" 0 failed"), "{}", ran.stdout);
    assert!(!ran.stdout.contains("FAIL"), "{}", ran.stdout);
}

#[tokio::test]
async fn policy_test_refuses_an_invalid_cases_file_naming_case_field_and_line() {
    let bad = "version: 1\ncases:\n  - name: typo\n    principal: arn:aws:iam::111122223333:role/ci-deploy\n    \
               action: deploy\n    environment: production\n    expect: {policy: tight, approvers: [U0CAROL]}\n";
    let (_d, f) = files(&[("p.yaml", SHADOWING_SET), ("cases.yaml", bad), ("empty.yaml", "version: 1\ncases: []\n")]);
    let ran = countersign(&["policy", "test", &f[0], "--cases", &f[1]]).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stderr.contains("cases.yaml"), "{}", ran.stderr);
    assert!(ran.stderr.contains("approvers"), "names the unknown field: {}", ran.stderr);
    assert!(ran.stderr.contains("line 7"), "{}", ran.stderr);
    let ran = countersign(&["policy", "test", &f[0], "--cases", &f[2]]).await;
    assert_eq!(ran.code, 1, "an empty cases file tests nothing: {ran:?}");
    // An invalid policy file is reported as `validate` reports it.
    let ran = countersign(&["policy", "test", &f[1], "--cases", &f[1]]).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stderr.contains("is not valid"), "{}", ran.stderr);
    let ran = countersign(&["policy", "test", &f[0]]).await;
    assert_eq!(ran.code, 2, "--cases is required: {ran:?}");
}

/// `policy explain FILE --principal ci-deploy/run-1 --action deploy --env ENV EXTRA…`.
async fn explain(file: &str, env: &str, extra: &[&str]) -> Ran {
    let principal = "arn:aws:sts::111122223333:assumed-role/ci-deploy/run-1";
    let head = ["policy", "explain", file, "--principal", principal, "--action", "deploy", "--env", env];
    countersign(&head.iter().chain(extra).copied().collect::<Vec<_>>()).await
}

#[tokio::test]
async fn policy_explain_shows_strictest_wins_order_owner_exclusion_and_shadowing() {
    let (_d, f) = files(&[("p.yaml", SHADOWING_SET)]);
    let ran = explain(&f[0], "production", &[]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let out = &ran.stdout;
    let (t, p, m) = (out.find("1. tight").unwrap(), out.find("2. platform").unwrap(), out.find("3. team").unwrap());
    assert!(t < p && p < m, "{out}");
    assert!(out.contains("1. tight  (2 approval(s), max_ttl 30m)  governs"), "{out}");
    assert!(out.contains("tight wins: same approvals (2), shorter max_ttl (30m < 1h)"), "{out}");
    assert!(out.contains("tight wins: more approvals (2 > 1)"), "{out}");
    assert!(out.contains("who can approve: U0CAROL, U0DAVE"), "{out}");
    assert!(out.contains("owners of this identity (never approve): U0OWNER"), "{out}");
    assert!(out.contains("shadowing warnings:\n  - policies \"team\" and \"platform\""), "{out}");

    // Staging: only platform matches; its listed approver U0OWNER is excluded as an owner.
    let ran = explain(&f[0], "staging", &["--output", "json"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let v: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(v["outcome"]["policy"], "platform");
    assert_eq!(v["approvers"], serde_json::json!(["U0BOB", "S0PLATFORM"]));
    assert_eq!(v["excluded_owners"], serde_json::json!(["U0OWNER"]));
    assert_eq!(v["shadowing"], serde_json::json!([]));

    // A long-term key: the winner matches, and the credential rule of a matching policy refuses it.
    let ran = explain(&f[0], "production", &["--credential", "long_term"]).await;
    assert!(ran.stdout.contains("decision: denied, 403 long_term_credentials"), "{ran:?}");
    let root =
        ["policy", "explain", &f[0], "--principal", "arn:aws:iam::111122223333:root", "--action", "d", "--env", "p"];
    let ran = countersign(&root).await;
    assert_eq!(ran.code, 2, "a principal the API refuses is a usage error: {ran:?}");
}
