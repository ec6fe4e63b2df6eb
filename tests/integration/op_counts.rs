//! DynamoDB round trips per approval (issue 18), counted by the emulator itself: one create and two votes
//! through the real routers, on an emulator of this test's own (`benches/moto_counting.py`, so no other
//! test's calls are in the tally), after one warm-up approval (the process's policy cache and audit chain
//! head are warm, as in a running Lambda, and the principal has an earlier request of the same kind, so the
//! message's history line has a newest request to show).
//!
//! Then: no `Scan` on a cold cache (policy apply, first load of the set), nor on the read, redeem, cancel
//! and sweeper paths. Counts, never times. Print the table with
//! `cargo test --test integration op_counts -- --nocapture`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use countersign_aws::dynamodb::{create_tables, DynamoStore, TableNames};
use countersign_core::ports::Stores;
use countersign_testkit::emulator::PrivateEmulator;
use serde_json::json;

use countersign_testkit::app::{api_event, spawn_app_on, AppOptions, TestApp, DEPLOY_ARN};

/// Approvals measured after the warm-up.
const APPROVALS: u32 = 3;
const READS: &[&str] = &["GetItem", "Query", "BatchGetItem", "TransactGetItems", "Scan"];
const WRITES: &[&str] = &["TransactWriteItems", "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"];

/// `benches/moto_counting.py` on a port of its own; killed when dropped.
struct CountingEmulator {
    /// Kept for its lifetime: the server stops when this is dropped.
    _emu: PrivateEmulator,
    url: String,
}

impl CountingEmulator {
    async fn start() -> Option<Self> {
        // Only where the shared emulator runs (scripts/test, CI): the same rule as every DynamoDB test.
        countersign_testkit::stores::emulator_endpoint()?;
        let emu = PrivateEmulator::start("benches/moto_counting.py", "the op counts").await?;
        Some(Self { url: emu.url(), _emu: emu })
    }

    /// The tally so far, by operation (`GetItem`, …), and clears it when `reset`.
    async fn counts(&self, reset: bool) -> BTreeMap<String, u64> {
        let http = reqwest::Client::new();
        let url = format!("{}/bench/counts", self.url);
        let resp = if reset { http.post(url).send().await } else { http.get(url).send().await };
        let all: BTreeMap<String, u64> = resp.expect("tally").json().await.expect("tally is JSON");
        all.into_iter()
            .filter_map(|(k, v)| k.strip_prefix("DynamoDB_20120810.").map(|op| (op.to_string(), v)))
            .collect()
    }
}

fn per_approval(counts: &BTreeMap<String, u64>, ops: &[&str]) -> f64 {
    ops.iter().map(|op| counts.get(*op).copied().unwrap_or(0)).sum::<u64>() as f64 / f64::from(APPROVALS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_round_trips_per_approval_stay_within_the_issue_18_budget() {
    let Some(emu) = CountingEmulator::start().await else { return };
    let config = countersign_testkit::emulator::sdk_config(&emu.url).await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let tables = TableNames::with_prefix("cs-opcount");
    create_tables(&client, &tables).await.expect("create tables");
    let store = Arc::new(DynamoStore::new(client, tables));
    let t = spawn_app_on(Stores::from_one(store), Box::new(()), AppOptions::default()).await;
    one_approval(&t).await;
    // Cold too (the policy apply, the first load of the set, the first read of the chain head): no Scan.
    let cold = emu.counts(false).await;
    assert_eq!(cold.get("Scan"), None, "no Scan while applying policies and on a cold cache: {cold:?}");
    assert!(cold.get("Query").is_some_and(|n| *n > 0), "the set is loaded with a Query: {cold:?}");

    emu.counts(true).await;
    for _ in 0..APPROVALS {
        one_approval(&t).await;
    }
    let counts = emu.counts(false).await;
    let mut table = String::from("\n| operation | per approval |\n|---|---|\n");
    for (op, n) in &counts {
        table.push_str(&format!("| {op} | {:.2} |\n", *n as f64 / f64::from(APPROVALS)));
    }
    let (reads, writes) = (per_approval(&counts, READS), per_approval(&counts, WRITES));
    table.push_str(&format!("| reads (GetItem + Query + BatchGetItem + Scan) | {reads:.2} |\n"));
    table.push_str(&format!("| writes | {writes:.2} |\n"));
    eprintln!("{table}");
    assert_eq!(counts.get("Scan"), None, "no Scan on the create and vote paths: {table}");
    assert!(reads <= 6.0, "at most 6 reads per approval: {table}");
    assert!(writes <= 6.0, "at most 6 writes per approval: {table}");

    // The read, redeem, cancel and sweeper paths send no Scan either.
    emu.counts(true).await;
    let id = one_approval(&t).await;
    let read = t.call_api(api_event("GET", &format!("/v1/requests/{id}"), None, Some(DEPLOY_ARN))).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.json);
    let redeem =
        t.call_api(api_event("POST", &format!("/v1/requests/{id}/redeem"), Some("{}"), Some(DEPLOY_ARN))).await;
    assert_eq!(redeem.status, StatusCode::OK, "{}", redeem.json);
    let body = json!({"action": "deploy", "environment": "production", "reason": "to cancel"});
    let other = t.create(DEPLOY_ARN, &body).await.json["id"].as_str().expect("id").to_string();
    let cancel = t.call_api(api_event("POST", &format!("/v1/requests/{other}/cancel"), None, Some(DEPLOY_ARN))).await;
    assert_eq!(cancel.status, StatusCode::OK, "{}", cancel.json);
    t.clock.advance_seconds(3 * 3600);
    t.app.sweeper().run_once().await.expect("sweeper runs");
    let rest = emu.counts(false).await;
    assert_eq!(rest.get("Scan"), None, "no Scan on the read, redeem, cancel and sweeper paths: {rest:?}");
}

/// Creates a pending 2-of-N request and has two approvers approve it, through the routers only.
async fn one_approval(t: &TestApp) -> String {
    let body = json!({"action": "deploy", "environment": "production", "reason": "release 42"});
    let a = t.create(DEPLOY_ARN, &body).await;
    assert_eq!(a.status, 201, "{}", a.json);
    let id = a.json["id"].as_str().expect("id").to_string();
    approve_twice(t, &id).await;
    id
}

async fn approve_twice(t: &TestApp, id: &str) {
    let ts = message_ts(t, id);
    for user in ["UALICE0001", "UBOB000001"] {
        let a = t.call_slack(t.signed_callback(&t.click(user, "countersign_approve", id, "C0APPROVALS", &ts))).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    }
}

/// The ts of the request's message, from the fake Slack (so the test reads nothing from the store).
fn message_ts(t: &TestApp, id: &str) -> String {
    t.slack
        .messages()
        .into_iter()
        .find(|m| {
            m.thread_ts.is_none() && m.metadata.as_ref().is_some_and(|md| md["event_payload"]["request_id"] == id)
        })
        .map(|m| m.ts)
        .expect("the request's message was posted")
}

/// Cold start (issue 18, target 6): a Lambda reads the end of the audit chain at init
/// (`DynamoStore::warm_chain_head`), so its first answer appends without a read. Another process appending
/// meanwhile makes that head stale: the conditional put refuses the stale position, the head is read again,
/// and the record lands after the other one, with the chain intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warmed_chain_head_spares_the_first_append_its_read_and_a_stale_one_is_read_again() {
    use countersign_core::domain::audit::verify_chain;
    use countersign_core::ports::AuditLog;
    let Some(emu) = CountingEmulator::start().await else { return };
    let config = countersign_testkit::emulator::sdk_config(&emu.url).await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let tables = TableNames::with_prefix("cs-warm");
    create_tables(&client, &tables).await.expect("create tables");
    let (lambda, other) = (DynamoStore::new(client.clone(), tables.clone()), DynamoStore::new(client, tables));
    other.append(crate::conformance::drafts(1, "other-1")).await.unwrap();

    lambda.warm_chain_head().await.unwrap();
    emu.counts(true).await;
    let first = lambda.append(crate::conformance::drafts(1, "lambda-1")).await.unwrap();
    assert_eq!(first[0].seq, 2);
    let counts = emu.counts(false).await;
    emu.counts(true).await;
    assert_eq!(counts.get("Query"), None, "the first append after a warm-up reads nothing: {counts:?}");
    assert_eq!(counts.get("TransactWriteItems"), Some(&1), "{counts:?}");

    // Warming again is a no-op once the process knows its head.
    lambda.warm_chain_head().await.unwrap();
    assert_eq!(emu.counts(false).await.get("Query"), None);

    other.append(crate::conformance::drafts(1, "other-2")).await.unwrap();
    emu.counts(true).await;
    let after = lambda.append(crate::conformance::drafts(1, "lambda-2")).await.unwrap();
    assert_eq!(after[0].seq, 4, "after the other process's record, not over it");
    let counts = emu.counts(false).await;
    emu.counts(true).await;
    assert_eq!(counts.get("TransactWriteItems"), Some(&2), "the stale position is refused once: {counts:?}");
    assert_eq!(counts.get("Query"), Some(&1), "then the head is read again: {counts:?}");

    let chain = lambda.read_from(1, 100).await.unwrap();
    assert_eq!(chain.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    verify_chain(&chain).expect("the chain links");
}
