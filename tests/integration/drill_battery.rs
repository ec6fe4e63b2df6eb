//! `countersign drill --endpoint … --slack-url …` (issue 20 part 1): the attack battery through the real
//! binary. Against `countersign dev` every defence holds and every refusal it provoked is found in the audit
//! trail; against deliberately weak stand-ins (servers in this test, never a switch in the product) exactly
//! the cases they let through fail.

use std::collections::BTreeSet;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use serde_json::Value;

use crate::local_mode::{cli, data_dir, Dev};

async fn finish(child: tokio::process::Child) -> (i32, String, String) {
    let o = child.wait_with_output().await.expect("the CLI runs");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// A server that answers every call with `answer(headers)` (and `{}`), on 127.0.0.1.
async fn stand_in(answer: fn(&HeaderMap) -> StatusCode) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().fallback(any(move |headers: HeaderMap| async move { (answer(&headers), "{}") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (url, tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }))
}

fn failed_cases(report: &Value) -> BTreeSet<String> {
    report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["pass"] == false)
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_against_countersign_dev_passes_and_finds_every_refusal_in_the_audit_trail() {
    let dir = data_dir();
    let dev = Dev::start(dir.path()).await;
    // A request of the drill identity's own, withdrawn: the one case that needs one.
    let request = ["request", "--action", "deploy", "--env", "production", "--reason", "drill", "--output", "json"];
    let (code, out, err) = finish(cli(&dev, &request)).await;
    assert_eq!(code, 0, "{out}{err}");
    let own: Value = serde_json::from_str(out.trim()).unwrap();
    let own = own["id"].as_str().unwrap().to_string();
    assert_eq!(finish(cli(&dev, &["cancel", &own])).await.0, 0);
    let report_file = dir.path().join("drill.json");
    let slack = dev.url("/slack/interactions");
    let data = dir.path().to_str().unwrap().to_string();
    let args = [
        "drill",
        "--slack-url",
        &slack,
        "--own-request",
        &own,
        "--store",
        "local",
        "--data-dir",
        &data,
        "--report",
        report_file.to_str().unwrap(),
    ];
    let (code, out, err) = finish(cli(&dev, &args)).await;
    assert_eq!(code, 0, "every defence holds: {out}{err}");
    assert!(out.contains("21 passed, 0 failed, 0 skipped"), "{out}");
    assert!(out.contains("audit: every refusal is in the audit trail"), "{out}");
    for line in out.lines().filter(|l| l.starts_with("PASS")) {
        assert!(line.contains("expected") && line.contains("got"), "one line per case: {line}");
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    assert_eq!((report["passed"].as_u64(), report["failed"].as_u64()), (Some(21), Some(0)), "{report}");
    for c in report["cases"].as_array().unwrap() {
        for k in ["name", "target", "expected", "actual", "pass"] {
            assert!(c.get(k).is_some(), "{k} in {c}");
        }
    }
    assert_eq!(report["audit"]["checked"], true);
    assert!(failed_cases(&report).is_empty());
    // Nothing new reached reviewers: the only request in the store is the withdrawn one.
    let store = countersign_sqlite::EmbeddedStore::open(dir.path()).unwrap();
    let created: Vec<_> = countersign_core::ports::AuditLog::read_from(&store, 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.as_str() == "request.created")
        .collect();
    assert_eq!(created.len(), 1, "the drill created no request: {created:?}");
    // Without --store the report says the audit trail was not checked; JSON output is the report.
    let (code, out, _) = finish(cli(&dev, &["drill", "--slack-url", &slack, "--output", "json"])).await;
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["audit"]["checked"], false);
    assert_eq!(report["skipped"][0]["name"], "redeem of a non-approved request of its own");
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_against_a_stand_in_that_accepts_everything_fails_every_case() {
    let dir = data_dir();
    let dev = Dev::start(dir.path()).await;
    let (url, task) = stand_in(|_| StatusCode::OK).await;
    let slack = format!("{url}/slack/interactions");
    let child = countersign_testkit::cli::command()
        .args(["drill", "--endpoint", &url, "--region", "us-east-1", "--slack-url", &slack, "--output", "json"])
        .env("AWS_ACCESS_KEY_ID", crate::local_mode::KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", crate::local_mode::SECRET)
        .env_remove("AWS_SESSION_TOKEN")
        .spawn()
        .unwrap();
    let (code, out, err) = finish(child).await;
    assert_eq!(code, 1, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((report["passed"].as_u64(), report["failed"].as_u64()), (Some(0), Some(20)), "{report}");
    task.abort();
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_names_exactly_the_cases_a_stand_in_accepting_unsigned_callbacks_lets_through() {
    let dir = data_dir();
    let dev = Dev::start(dir.path()).await;
    // Verifies signatures "properly" except that it lets a callback without any signature header through.
    let (url, task) = stand_in(|h| {
        if h.get("x-slack-signature").is_none() && h.get("x-slack-request-timestamp").is_none() {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        }
    })
    .await;
    let slack = format!("{url}/slack/interactions");
    let (code, out, err) = finish(cli(&dev, &["drill", "--slack-url", &slack, "--output", "json"])).await;
    assert_eq!(code, 1, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let want: BTreeSet<String> = ["unsigned", "the ssl_check=1&payload=… smuggle"].map(String::from).into();
    assert_eq!(failed_cases(&report), want, "{report}");
    task.abort();
    dev.stop().await;
}
