//! The real `countersign` binary (`CARGO_BIN_EXE_countersign`), run as a pipeline would run it.
//!
//! - Workload commands talk to a stand-in for local mode: the request API router of a `TestApp` served on
//!   127.0.0.1 behind a middleware that checks the CLI's SigV4 signature (by re-signing the received request
//!   with the shared test secret: same library on both sides, so this proves the CLI signs what it sends,
//!   not that aws-sigv4 is right) and injects an API Gateway request context for a fixed identity.
//!   Approvals and denials arrive as signed Slack callbacks; expiry comes from the manual clock and sweeper.
//! - Operator and compliance commands run against the embedded store (`--store local`) and the DynamoDB
//!   emulator (`--store dynamodb`, tables made by `store init`), where the audit table is then tampered with
//!   through the AWS SDK.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_lambda_events::apigw::ApiGatewayProxyRequestContext;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use countersign_aws::dynamodb::{DynamoStore, TableNames};
use countersign_core::domain::{Actor, AuditDraft, AuditEvent, AuditKind, Timestamp};
use countersign_core::ports::{AuditLog, Stores};
use lambda_http::request::RequestContext;
use serde_json::{json, Value};

use countersign_testkit::app::{spawn_app_on, TestApp, APP_ID, DEPLOY_ARN, POLICIES, TEAM_ID};
use countersign_testkit::cli::{self, finish, Ran};
use countersign_testkit::emulator::Service;
use countersign_testkit::stores::{DynamoTamper, SqliteTamper, Tamper};

const AKID: &str = "AKIDCLITEST000000001";
const SECRET: &str = "cli-test-secret-key-not-a-real-one";
const TOKEN: &str = "cli-test-session-token";
const REGION: &str = "us-east-1";

// ---- the stand-in for local mode ----

#[derive(Clone)]
struct StandInState {
    arn: String,
    /// Answer this many calls, after the app has handled them, with a 503 (a lost response).
    lose_responses: Arc<AtomicU32>,
    calls: Arc<AtomicU32>,
}

struct StandIn {
    url: String,
    state: StandInState,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn stand_in(t: &TestApp, caller_arn: &str) -> StandIn {
    let state = StandInState {
        arn: caller_arn.to_string(),
        lose_responses: Arc::new(AtomicU32::new(0)),
        calls: Arc::new(AtomicU32::new(0)),
    };
    let router = t.app.request_api().layer(axum::middleware::from_fn_with_state(state.clone(), check_and_identify));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    StandIn { url: format!("http://{addr}"), state, task }
}

fn api_gateway_denial(kind: &str, message: String) -> Response {
    let mut r = (StatusCode::FORBIDDEN, axum::Json(json!({ "message": message }))).into_response();
    r.headers_mut().insert("x-amzn-errortype", kind.parse().unwrap());
    r
}

async fn check_and_identify(State(s): State<StandInState>, req: Request, next: Next) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    let (mut parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    if let Err(why) = verify_sigv4(&parts, &bytes) {
        return api_gateway_denial("InvalidSignatureException", why);
    }
    let mut ctx = ApiGatewayProxyRequestContext::default();
    ctx.identity.user_arn = Some(s.arn.clone());
    ctx.identity.account_id = s.arn.split(':').nth(4).map(str::to_string);
    ctx.identity.access_key = Some(AKID.to_string());
    parts.extensions.insert(RequestContext::ApiGatewayV1(ctx));
    let resp = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    if s.lose_responses.load(Ordering::SeqCst) > 0 {
        s.lose_responses.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"message": "lost"}))).into_response();
    }
    resp
}

/// Checks the Authorization header the way API Gateway would, for the one test key: scope (key, region,
/// service), freshness, session token, and the signature itself, recomputed over what was received.
fn verify_sigv4(parts: &Parts, body: &[u8]) -> Result<(), String> {
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let auth = header("authorization").ok_or("Missing Authentication Token")?;
    let fields = auth.strip_prefix("AWS4-HMAC-SHA256 ").ok_or("not AWS4-HMAC-SHA256")?;
    let field = |k: &str| {
        fields.split(", ").find_map(|f| f.strip_prefix(&format!("{k}="))).map(str::to_string).ok_or(format!("no {k}"))
    };
    let (credential, signed_headers, signature) = (field("Credential")?, field("SignedHeaders")?, field("Signature")?);
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[0] != AKID || scope[2] != REGION || scope[3] != "execute-api" {
        return Err(format!("credential scope {credential} is not for {AKID}/…/{REGION}/execute-api"));
    }
    if header("x-amz-security-token").as_deref() != Some(TOKEN) {
        return Err("session token missing or wrong".into());
    }
    let date = header("x-amz-date").ok_or("no x-amz-date")?;
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let at = time::PrimitiveDateTime::parse(&date, &fmt).map_err(|e| e.to_string())?.assume_utc();
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(at.unix_timestamp()).unwrap());
    let skew = SystemTime::now().duration_since(at).unwrap_or_else(|e| e.duration());
    if skew > Duration::from_secs(300) {
        return Err("signature expired".into());
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    for required in ["host", "x-amz-date"] {
        if !names.contains(&required) {
            return Err(format!("{required} is not signed"));
        }
    }
    let values: Vec<(String, String)> = names
        .iter()
        .filter(|n| !matches!(**n, "x-amz-date" | "x-amz-security-token"))
        .map(|n| (n.to_string(), header(n).unwrap_or_default()))
        .collect();
    let url = format!("http://{}{}", header("host").ok_or("no host")?, parts.uri);
    let identity = Credentials::new(AKID, SECRET, Some(TOKEN.to_string()), None, "stand-in").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("execute-api")
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        parts.method.as_str(),
        url,
        values.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (_, expected) = sign(signable, &params).map_err(|e| e.to_string())?.into_parts();
    if expected != signature {
        return Err("The request signature we calculated does not match the signature you provided.".into());
    }
    Ok(())
}

// ---- running the binary ----

/// The binary with test credentials and nothing from the developer's AWS setup.
fn countersign() -> tokio::process::Command {
    let mut c = cli::command();
    c.env("AWS_ACCESS_KEY_ID", AKID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_SESSION_TOKEN", TOKEN)
        .env("AWS_REGION", REGION);
    c
}

async fn run_cli(args: &[&str]) -> Ran {
    finish(countersign().args(args).spawn().unwrap()).await
}

fn spawn_cli(args: &[&str]) -> tokio::process::Child {
    countersign().args(args).spawn().unwrap()
}

/// Inserts `--endpoint URL` right after the subcommand (so it stays before a `run` command's `--`).
fn with_endpoint<'a>(api: &'a StandIn, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.splice(1..1, ["--endpoint", api.url.as_str()]);
    v
}

// ---- the app side ----

async fn local_app() -> (TestApp, PathBuf) {
    let (dir, store) = countersign_testkit::stores::embedded();
    let path = dir.path().to_path_buf();
    let t = spawn_app_on(Stores::from_one(store), Box::new(dir), countersign_testkit::app::AppOptions::default()).await;
    (t, path)
}

/// Waits for the CLI's request to exist and be posted to Slack: (id, channel, ts).
async fn posted_request(t: &TestApp) -> (String, String, String) {
    for _ in 0..400 {
        let pending = t.app.stores.requests.list_pending(10).await.unwrap();
        // Clicks are checked against the stored (channel, ts), so wait until the post is recorded too.
        if let Some(r) = pending.last().filter(|r| r.notification.ts.is_some()) {
            if let Some(m) = message_for(t, &r.id.to_string()) {
                return (r.id.to_string(), m.channel, m.ts);
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the CLI's request never showed up");
}

fn message_for(t: &TestApp, id: &str) -> Option<countersign_slack::fake::FakeMessage> {
    t.slack.messages().into_iter().find(|m| m.blocks.to_string().contains(id))
}

async fn approve(t: &TestApp, users: &[&str]) -> String {
    let (id, channel, ts) = posted_request(t).await;
    for user in users {
        let r = t.call_slack(t.signed_callback(&t.click(user, "countersign_approve", &id, &channel, &ts))).await;
        assert_eq!(r.status, 200, "{}", r.json);
    }
    id
}

fn deny_submission(user: &str, request_id: &str, reason: &str) -> Value {
    json!({
        "type": "view_submission",
        "team": {"id": TEAM_ID, "domain": "example"},
        "user": {"id": user, "username": user.to_lowercase(), "name": user.to_lowercase(), "team_id": TEAM_ID},
        "api_app_id": APP_ID,
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "view": {
            "id": "V0DENY0001", "type": "modal", "callback_id": "countersign_deny_modal",
            "private_metadata": request_id, "team_id": TEAM_ID, "app_id": APP_ID,
            "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}}
        },
        "response_urls": [], "is_enterprise_install": false, "enterprise": null
    })
}

const PROD: &[&str] = &["--action", "deploy", "--env", "production", "--reason", "release 42"];

fn args<'a>(head: &[&'a str], tail: &[&'a str]) -> Vec<&'a str> {
    head.iter().chain(tail).copied().collect()
}

// ---- workloads against the stand-in ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_wait_then_two_signed_approvals_exits_0_and_prints_only_the_request_object() {
    let (t, _) = local_app().await;
    let api = stand_in(&t, DEPLOY_ARN).await;
    let child = spawn_cli(&with_endpoint(
        &api,
        &args(
            &["request"],
            &args(PROD, &["--detail", "commit=9f2c1e7", "--wait", "--timeout", "30s", "--output", "json"]),
        ),
    ));
    let id = approve(&t, &["UALICE0001", "UBOB000001"]).await;
    let ran = finish(child).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let obj: Value = serde_json::from_str(ran.stdout.trim()).expect("stdout is exactly one JSON object");
    assert_eq!(obj["id"], id.as_str());
    assert_eq!(obj["status"], "approved");
    assert_eq!(obj["details"]["commit"], "9f2c1e7");
    assert_eq!(obj["requester"]["arn"], DEPLOY_ARN);
    assert_eq!(obj["approvals"].as_array().unwrap().len(), 2);
    assert!(ran.stderr.contains(&format!("{id} pending")), "one line per change on a non-terminal: {ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_wait_then_a_signed_deny_exits_3() {
    let (t, _) = local_app().await;
    let api = stand_in(&t, DEPLOY_ARN).await;
    let child = spawn_cli(&with_endpoint(&api, &args(&["request"], &args(PROD, &["--wait", "--timeout", "30s"]))));
    let (id, _, _) = posted_request(&t).await;
    let r = t.call_slack(t.signed_callback(&deny_submission("UBOB000001", &id, "change freeze"))).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let ran = finish(child).await;
    assert_eq!(ran.code, 3, "{ran:?}");
    assert!(ran.stdout.contains(&format!("{id} denied by UBOB000001")), "{ran:?}");
    assert!(ran.stdout.contains("change freeze"), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_wait_until_expiry_exits_4() {
    let (t, _) = local_app().await;
    let api = stand_in(&t, DEPLOY_ARN).await;
    let child = spawn_cli(&with_endpoint(
        &api,
        &args(&["request"], &args(PROD, &["--ttl", "5m", "--wait", "--timeout", "30s"])),
    ));
    let (id, channel, ts) = posted_request(&t).await;
    // One approval of two, then time runs out.
    let r = t.call_slack(t.signed_callback(&t.click("UALICE0001", "countersign_approve", &id, &channel, &ts))).await;
    assert_eq!(r.status, 200);
    t.clock.advance_seconds(5 * 60 + 1);
    let swept = t.app.sweeper().run_once().await.unwrap();
    assert_eq!(swept.expired, 1);
    let ran = finish(child).await;
    assert_eq!(ran.code, 4, "{ran:?}");
    assert!(ran.stdout.contains(&format!("{id} expired")) && ran.stdout.contains("1/2"), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_a_waiting_request_with_exit_5_and_status_reports_it() {
    let (t, _) = local_app().await;
    let api = stand_in(&t, DEPLOY_ARN).await;
    let child = spawn_cli(&with_endpoint(&api, &args(&["request"], &args(PROD, &["--wait", "--timeout", "30s"]))));
    let (id, _, _) = posted_request(&t).await;
    let status = run_cli(&with_endpoint(&api, &["status", &id])).await;
    assert_eq!(status.code, 6, "pending reads as still pending: {status:?}");
    let cancel = run_cli(&with_endpoint(&api, &["cancel", &id])).await;
    assert_eq!(cancel.code, 0, "{cancel:?}");
    assert!(cancel.stdout.contains(&format!("{id} cancelled")));
    let ran = finish(child).await;
    assert_eq!(ran.code, 5, "{ran:?}");
    let status = run_cli(&with_endpoint(&api, &["status", &id, "--output", "json"])).await;
    assert_eq!(status.code, 5);
    assert_eq!(serde_json::from_str::<Value>(status.stdout.trim()).unwrap()["status"], "cancelled");
    let again = run_cli(&with_endpoint(&api, &["cancel", &id])).await;
    assert_eq!(again.code, 7, "cancelling a decided request is refused: {again:?}");
    assert!(again.stderr.contains("409 already_decided"), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_while_pending_exits_6() {
    let (t, _) = local_app().await;
    let api = stand_in(&t, DEPLOY_ARN).await;
    let started = std::time::Instant::now();
    let ran = run_cli(&with_endpoint(&api, &args(&["request"], &args(PROD, &["--wait", "--timeout", "2s"])))).await;
    assert_eq!(ran.code, 6, "{ran:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(ran.stderr.contains("still pending"), "{ran:?}");
    let status =
        run_cli(&with_endpoint(&api, &["status", ran.stdout.split(' ').next().unwrap(), "--wait", "--timeout", "1s"]))
            .await;
    assert_eq!(status.code, 6, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_exits_7_with_the_api_code_and_message() {
    let (t, _) = local_app().await;
    let api = stand_in(&t, DEPLOY_ARN).await;
    let ran = run_cli(&with_endpoint(&api, &["request", "--action", "deploy", "--env", "qa", "--wait"])).await;
    assert_eq!(ran.code, 7, "{ran:?}");
    assert!(ran.stderr.contains("403 no_matching_policy"), "{ran:?}");
    let ran = run_cli(&with_endpoint(&api, &["request", "--action", "deploy", "--env", "production"])).await;
    assert_eq!(ran.code, 7, "{ran:?}");
    assert!(ran.stderr.contains("400 reason_required"), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_is_refused_by_the_stand_in_with_exit_7() {
    let (t, _) = local_app().await;
    let api = stand_in(&t, DEPLOY_ARN).await;
    let ran = finish(
        countersign()
            .args(with_endpoint(&api, &args(&["request"], PROD)))
            .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(ran.code, 7, "{ran:?}");
    assert!(ran.stderr.contains("403 InvalidSignatureException"), "{ran:?}");
    assert!(t.app.stores.requests.list_pending(10).await.unwrap().is_empty());
    assert!(!ran.stderr.contains("not-the-secret") && !ran.stderr.contains(TOKEN), "no secrets in output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_exits_8_after_retries() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let ran = run_cli(&args(&["request"], &args(PROD, &["--endpoint", &endpoint, "--retries", "2"]))).await;
    assert_eq!(ran.code, 8, "{ran:?}");
    assert!(ran.stderr.contains("unavailable (3 attempt(s))"), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_responses_are_retried_without_creating_a_second_request() {
    let (t, _) = local_app().await;
    let api = stand_in(&t, DEPLOY_ARN).await;
    api.state.lose_responses.store(2, Ordering::SeqCst);
    let ran = run_cli(&with_endpoint(&api, &args(&["request"], PROD))).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(api.state.calls.load(Ordering::SeqCst), 3, "two lost answers, then the answer");
    let pending = t.app.stores.requests.list_pending(10).await.unwrap();
    assert_eq!(pending.len(), 1, "the retries reused the invocation's idempotency key");
    assert!(ran.stdout.starts_with(&format!("{} pending", pending[0].id)), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_runs_the_command_only_when_approved() {
    let (t, _) = local_app().await;
    let api = stand_in(&t, DEPLOY_ARN).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let marker_s = marker.to_str().unwrap();
    let script = r#"printf %s "$COUNTERSIGN_REQUEST_ID" > "$1"; echo deploying; exit 42"#;

    // staging is auto-approved by policy: the command runs, with the request id, and its exit code is ours.
    let ran = run_cli(&with_endpoint(
        &api,
        &["run", "--action", "deploy", "--env", "staging", "--", "sh", "-c", script, "sh", marker_s],
    ))
    .await;
    assert_eq!(ran.code, 42, "{ran:?}");
    assert_eq!(ran.stdout, "deploying\n", "stdout belongs to the command: {ran:?}");
    let id = std::fs::read_to_string(&marker).unwrap();
    assert!(id.starts_with("req_"), "{id}");
    assert!(ran.stderr.contains(&format!("{id} approved")), "{ran:?}");
    std::fs::remove_file(&marker).unwrap();

    // Denied: not run, exit 3.
    let child =
        spawn_cli(&with_endpoint(&api, &args(&["run"], &args(PROD, &["--", "sh", "-c", script, "sh", marker_s]))));
    let (id, _, _) = posted_request(&t).await;
    t.call_slack(t.signed_callback(&deny_submission("UBOB000001", &id, "not today"))).await;
    let ran = finish(child).await;
    assert_eq!(ran.code, 3, "{ran:?}");
    assert!(!marker.exists(), "a denied command must not run");
    assert!(ran.stdout.is_empty() && ran.stderr.contains("not running sh"), "{ran:?}");

    // Still pending at --timeout: not run, exit 6.
    let ran = run_cli(&with_endpoint(
        &api,
        &args(&["run"], &args(PROD, &["--timeout", "1s", "--", "sh", "-c", script, "sh", marker_s])),
    ))
    .await;
    assert_eq!(ran.code, 6, "{ran:?}");
    assert!(!marker.exists());

    // Approved by two: runs.
    let child = spawn_cli(&with_endpoint(
        &api,
        &args(&["run"], &args(PROD, &["--idempotency-key", "run-99", "--", "sh", "-c", script, "sh", marker_s])),
    ));
    // The timed-out request above is still pending too: approve the new one.
    let id = loop {
        let pending = t.app.stores.requests.list_pending(10).await.unwrap();
        if let Some(r) = pending.iter().find(|r| r.idempotency_key.as_ref().is_some_and(|k| k.as_str() == "run-99")) {
            break r.id.to_string();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let msg = loop {
        let stored = t.app.stores.requests.get_request(&id.parse().unwrap()).await.unwrap().unwrap();
        if let Some(m) = message_for(&t, &id).filter(|_| stored.notification.ts.is_some()) {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    for user in ["UALICE0001", "UCAROL0001"] {
        t.call_slack(t.signed_callback(&t.click(user, "countersign_approve", &id, &msg.channel, &msg.ts))).await;
    }
    let ran = finish(child).await;
    assert_eq!(ran.code, 42, "{ran:?}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), id);
}

// ---- audit export and verify on the local store ----

fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p).unwrap().lines().map(str::to_string).collect()
}

fn write_lines(p: &Path, lines: &[String]) {
    std::fs::write(p, lines.join("\n") + "\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_then_verify_passes_and_a_tampered_export_fails_naming_the_record() {
    let (t, data) = local_app().await;
    let api = stand_in(&t, DEPLOY_ARN).await;
    let child = spawn_cli(&with_endpoint(&api, &args(&["request"], &args(PROD, &["--wait", "--timeout", "30s"]))));
    let id = approve(&t, &["UALICE0001", "UBOB000001"]).await;
    assert_eq!(finish(child).await.code, 0);
    let store = ["--store", "local", "--data-dir", data.to_str().unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("audit.jsonl");
    let csv = dir.path().join("audit.csv");

    let ran = run_cli(&args(&["audit", "export", "--format", "jsonl", "--out", jsonl.to_str().unwrap()], &store)).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let lines = read_lines(&jsonl);
    let records: Vec<AuditEvent> = lines[..lines.len() - 1].iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let summary: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    let n = records.len();
    assert!(n >= 6, "policies, creation, Slack post, votes, approval: {n}");
    assert_eq!(records.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=n as u64).collect::<Vec<_>>());
    assert_eq!(summary["summary"]["records"], n);
    assert_eq!(summary["summary"]["last_hash"], records[n - 1].hash.as_str());
    assert_eq!(summary["summary"]["filtered"], false);
    assert!(ran.stderr.contains(&format!("exported {n} record(s), seq 1..{n}, first hash {}", records[0].hash)));

    let ran = run_cli(&args(&["audit", "export", "--format", "csv", "--out", csv.to_str().unwrap()], &store)).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let csv_lines = read_lines(&csv);
    assert_eq!(csv_lines[0], "seq,at,kind,actor,request_id,policy,principal,details,prev_hash,hash");
    assert_eq!(csv_lines.len(), n + 2, "the header, the records and the summary row");
    assert!(csv_lines[n + 1].starts_with("summary,"));
    assert_eq!(run_cli(&["audit", "verify", "--file", csv.to_str().unwrap()]).await.code, 0);

    let ran = run_cli(&args(&["audit", "verify"], &store)).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(
        ran.stdout.starts_with("intact:") && ran.stdout.contains(&format!("{n} record(s), seq 1..{n} (from genesis)"))
    );
    let ran = run_cli(&["audit", "verify", "--file", jsonl.to_str().unwrap()]).await;
    assert_eq!(ran.code, 0, "{ran:?}");

    // A time range is a contiguous segment and verifies on its own.
    let since = records[2].at.to_rfc3339();
    let seg = dir.path().join("segment.jsonl");
    let ran = run_cli(&args(
        &["audit", "export", "--since", &since, "--format", "jsonl", "--out", seg.to_str().unwrap()],
        &store,
    ))
    .await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let seg_first: AuditEvent = serde_json::from_str(&read_lines(&seg)[0]).unwrap();
    assert!(seg_first.at >= records[2].at && seg_first.seq <= 3);
    let ran = run_cli(&["audit", "verify", "--file", seg.to_str().unwrap()]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.contains("segment"), "{ran:?}");
    assert_eq!(run_cli(&args(&["audit", "verify", "--since", &since], &store)).await.code, 0);

    // A filtered view is marked and refused by verify.
    let filtered = dir.path().join("filtered.jsonl");
    let ran = run_cli(&args(
        &["audit", "export", "--request", &id, "--format", "jsonl", "--out", filtered.to_str().unwrap()],
        &store,
    ))
    .await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stderr.contains("filtered view"), "{ran:?}");
    let lines_f = read_lines(&filtered);
    assert!(lines_f[..lines_f.len() - 1].iter().all(|l| l.contains(&id)));
    let ran = run_cli(&["audit", "verify", "--file", filtered.to_str().unwrap()]).await;
    assert_eq!(ran.code, 2, "{ran:?}");
    let by_principal = run_cli(&args(
        &["audit", "export", "--principal", "arn:aws:iam::111122223333:role/github-deploy", "--format", "jsonl"],
        &store,
    ))
    .await;
    assert_eq!(by_principal.code, 0);
    assert!(by_principal.stdout.lines().count() >= 4 && by_principal.stdout.lines().count() < n + 1);

    // Tampered copies of the export.
    let tampered = dir.path().join("tampered.jsonl");
    let verify_tampered = |lines: Vec<String>| {
        write_lines(&tampered, &lines);
        let p = tampered.to_str().unwrap().to_string();
        async move { run_cli(&["audit", "verify", "--file", &p]).await }
    };
    let mut edited = lines.clone();
    edited[3] = edited[3].replacen("\"details\":{", "\"details\":{\"tampered\":\"yes\",", 1);
    let ran = verify_tampered(edited).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stdout.contains("record seq 4 was edited"), "{ran:?}");

    let mut deleted = lines.clone();
    deleted.remove(2);
    let ran = verify_tampered(deleted).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stdout.contains("record seq 3 is missing (next record found is seq 4)"), "{ran:?}");

    let mut swapped = lines.clone();
    swapped.swap(1, 4);
    let ran = verify_tampered(swapped).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stdout.contains("record seq 2 is out of order (it comes after seq 5)"), "{ran:?}");

    let mut cut = lines.clone();
    cut.remove(n - 1);
    let ran = verify_tampered(cut).await;
    assert_eq!(ran.code, 1, "a cut-off end is caught by the summary line: {ran:?}");
    assert!(ran.stdout.contains("does not match its summary line"), "{ran:?}");

    let mut head_cut = lines.clone();
    head_cut.remove(0);
    let ran = verify_tampered(head_cut).await;
    assert_eq!(ran.code, 1, "a full export must start at genesis: {ran:?}");
    assert!(ran.stdout.contains("record seq 1 is missing"), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_apply_without_yes_refuses_off_a_terminal_and_asks_on_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("policies.yaml");
    std::fs::write(&file, POLICIES).unwrap();
    let (f, d) = (file.to_str().unwrap(), data.to_str().unwrap());
    let ran = run_cli(&["policy", "apply", f, "--store", "local", "--data-dir", d]).await;
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(ran.stdout.contains("deploy-production"), "the diff is shown first: {ran:?}");
    assert!(ran.stderr.contains("refusing to apply without --yes"), "{ran:?}");

    // On a terminal (a pty from util-linux `script`), it asks; "n" applies nothing, "y" applies.
    if std::process::Command::new("script").arg("--version").output().is_err() {
        eprintln!("`script` is not installed: skipping the terminal half of this test");
        return;
    }
    let bin = countersign_testkit::workspace_binary("countersign");
    let bin = bin.display();
    let on_tty = |answer: &'static str| {
        let cmd = format!("{bin} policy apply {f} --store local --data-dir {d}");
        async move {
            let mut c = tokio::process::Command::new("script");
            c.args(["-qec", &cmd, "/dev/null"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut child = c.spawn().unwrap();
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().unwrap();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            stdin.write_all(answer.as_bytes()).await.unwrap();
            let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.unwrap().unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let out = on_tty("n\n").await;
    assert!(out.contains("Apply these changes to embedded store") && out.contains("Nothing applied."), "{out}");
    let out = on_tty("y\n").await;
    assert!(out.contains("Applied 2 change(s)"), "{out}");
    let ran = run_cli(&["policy", "diff", f, "--store", "local", "--data-dir", d]).await;
    assert_eq!(ran.code, 0);
    assert!(!ran.stdout.contains("deploy-production"), "nothing left to change: {ran:?}");
}

// ---- the DynamoDB emulator ----

/// The emulator's endpoint, or `None` (with a notice, once) outside CI when it is not configured.
fn emulator() -> Option<String> {
    countersign_testkit::emulator::endpoint(Service::Dynamodb)
}

async fn dynamo_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&countersign_testkit::emulator::sdk_config(endpoint).await)
}

fn prefix() -> String {
    format!("cs-cli-{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// Fresh tables made by `store init`, policies applied by `policy apply`, and `extra` more records.
async fn emulator_chain(endpoint: &str, extra: usize) -> (String, Arc<DynamoStore>, aws_sdk_dynamodb::Client) {
    let p = prefix();
    let ran = run_cli(&["store", "init", "--store", "dynamodb", "--table-prefix", &p]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.yaml");
    std::fs::write(&file, POLICIES).unwrap();
    let ran =
        run_cli(&["policy", "apply", file.to_str().unwrap(), "--store", "dynamodb", "--table-prefix", &p, "--yes"])
            .await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let client = dynamo_client(endpoint).await;
    let store = Arc::new(DynamoStore::new(client.clone(), TableNames::with_prefix(&p)));
    for i in 0..extra {
        let d = AuditDraft::new(
            Timestamp::from_unix_millis(1_795_621_462_000 + i as i64),
            AuditKind::CallbackRejected,
            Actor::system("test"),
            None,
        )
        .with("i", i.to_string());
        store.append(vec![d]).await.unwrap();
    }
    (p, store, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_init_apply_whoami_request_and_audit_round_trip() {
    let Some(endpoint) = emulator() else { return };
    let (p, store, _client) = emulator_chain(&endpoint, 0).await;
    let dyn_store = ["--store", "dynamodb", "--table-prefix", p.as_str()];

    // whoami is sts:GetCallerIdentity (moto's); policy apply recorded that same ARN as the actor.
    let who = run_cli(&["whoami", "--output", "json"]).await;
    assert_eq!(who.code, 0, "{who:?}");
    let arn = serde_json::from_str::<Value>(who.stdout.trim()).unwrap()["arn"].as_str().unwrap().to_string();
    assert!(arn.starts_with("arn:aws:"), "{arn}");
    let text = run_cli(&["whoami"]).await;
    assert!(text.stdout.contains(&format!("arn:       {arn}")), "{text:?}");
    let chain = store.read_from(1, 100).await.unwrap();
    assert_eq!(chain.len(), 2);
    for e in &chain {
        assert_eq!(e.kind, AuditKind::PolicyChanged);
        assert_eq!(e.actor, Actor::aws(&arn), "policy.changed records the STS caller");
    }

    // The request flow on the same tables, through the CLI.
    let t =
        spawn_app_on(Stores::from_one(store.clone()), Box::new(()), countersign_testkit::app::AppOptions::default())
            .await;
    let api = stand_in(&t, DEPLOY_ARN).await;
    let child = spawn_cli(&with_endpoint(&api, &args(&["request"], &args(PROD, &["--wait", "--timeout", "30s"]))));
    approve(&t, &["UALICE0001", "UBOB000001"]).await;
    let ran = finish(child).await;
    assert_eq!(ran.code, 0, "{ran:?}");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit.jsonl");
    let ran =
        run_cli(&args(&["audit", "export", "--format", "jsonl", "--out", out.to_str().unwrap()], &dyn_store)).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let n = read_lines(&out).len() - 1;
    assert_eq!(n, store.read_from(1, 1000).await.unwrap().len());
    let ran = run_cli(&args(&["audit", "verify"], &dyn_store)).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.contains(&format!("{n} record(s)")), "{ran:?}");
    let ran = run_cli(&["audit", "verify", "--file", out.to_str().unwrap()]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
}

async fn emulator_tamper_then_verify(tamper: impl AsyncFnOnce(&DynamoTamper), expect: &str) {
    let Some(endpoint) = emulator() else { return };
    let (p, _store, client) = emulator_chain(&endpoint, 5).await;
    let dyn_store = ["--store", "dynamodb", "--table-prefix", p.as_str()];
    assert_eq!(run_cli(&args(&["audit", "verify"], &dyn_store)).await.code, 0);
    tamper(&DynamoTamper::new(client, TableNames::with_prefix(&p).audit)).await;
    verify_names_the_break(&dyn_store, expect).await;
}

/// `countersign audit verify` on a tampered store exits 1, says `expect`, and `--output json` agrees.
async fn verify_names_the_break(store: &[&str], expect: &str) {
    let ran = run_cli(&args(&["audit", "verify"], store)).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stdout.contains(expect), "expected {expect:?}: {ran:?}");
    let json = run_cli(&args(&["audit", "verify", "--output", "json"], store)).await;
    assert_eq!(json.code, 1);
    assert_eq!(serde_json::from_str::<Value>(json.stdout.trim()).unwrap()["intact"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t25_emulator_audit_verify_names_an_edited_record() {
    emulator_tamper_then_verify(async |t: &DynamoTamper| t.edit_audit(4).await, "record seq 4 was edited").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t25_emulator_audit_verify_names_a_deleted_record() {
    emulator_tamper_then_verify(
        async |t: &DynamoTamper| t.delete_audit(3).await,
        "record seq 3 is missing (next record found is seq 4)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t25_emulator_audit_verify_names_a_moved_record() {
    emulator_tamper_then_verify(
        async |t: &DynamoTamper| t.swap_audit(2, 5).await,
        "record seq 2 is out of order (it comes after seq 5)",
    )
    .await;
}

/// The same on local mode's store: six records in the database file, one edited, deleted or moved with
/// raw SQL (the append-only triggers dropped first, as anyone with write access to the file can).
async fn local_tamper_then_verify(tamper: impl AsyncFnOnce(&SqliteTamper), expect: &str) {
    let (dir, store) = countersign_testkit::stores::embedded();
    store.append(crate::conformance::drafts(6, "t25")).await.unwrap();
    let local = ["--store", "local", "--data-dir", dir.path().to_str().unwrap()];
    let ran = run_cli(&args(&["audit", "verify"], &local)).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    tamper(&SqliteTamper::at(store.db_path())).await;
    verify_names_the_break(&local, expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t25_local_audit_verify_names_an_edited_record() {
    local_tamper_then_verify(async |t: &SqliteTamper| t.edit_audit(4).await, "record seq 4 was edited").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t25_local_audit_verify_names_a_deleted_record() {
    local_tamper_then_verify(
        async |t: &SqliteTamper| t.delete_audit(3).await,
        "record seq 3 is missing (next record found is seq 4)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t25_local_audit_verify_names_a_moved_record() {
    local_tamper_then_verify(
        async |t: &SqliteTamper| t.swap_audit(2, 5).await,
        "record seq 2 is out of order (it comes after seq 5)",
    )
    .await;
}

// ---- receipts (rows 35, 36) ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t35_run_hands_the_command_its_receipt_and_a_replayed_approval_exits_9() {
    let (t, _) = local_app().await;
    // Receipts are checked against the real clock by `receipt verify`.
    t.clock.set(countersign_core::ports::Clock::now(&countersign_core::ports::SystemClock));
    let api = stand_in(&t, DEPLOY_ARN).await;
    let dir = tempfile::tempdir().unwrap();
    let build = dir.path().join("build.zip");
    std::fs::write(&build, b"the reviewed build").unwrap();
    let receipt = dir.path().join("receipt.jwt");
    let (build_s, receipt_s) = (build.to_str().unwrap(), receipt.to_str().unwrap());
    let script = r#"printf %s "$COUNTERSIGN_RECEIPT" > "$1"; exit 42"#;
    let run = |key: &'static str| {
        vec![
            "run",
            "--action",
            "deploy",
            "--env",
            "staging",
            "--idempotency-key",
            key,
            "--artifact-file",
            build_s,
            "--",
            "sh",
            "-c",
            script,
            "sh",
            receipt_s,
        ]
    };
    let ran = run_cli(&with_endpoint(&api, &run("rel-1"))).await;
    assert_eq!(ran.code, 42, "{ran:?}");
    let jws = std::fs::read_to_string(&receipt).unwrap();
    assert_eq!(jws.split('.').count(), 3, "{jws}");
    std::fs::remove_file(&receipt).unwrap();

    // The same idempotency key months later finds the same approved request: redeemed already, exit 9.
    let again = run_cli(&with_endpoint(&api, &run("rel-1"))).await;
    assert_eq!(again.code, 9, "{again:?}");
    assert!(again.stderr.contains("already_redeemed"), "{again:?}");
    assert!(!receipt.exists(), "the command must not run on a replayed approval");

    // The JWKS, then offline verification with expectations.
    let keys = run_cli(&["receipt", "keys", "--endpoint", api.url.as_str()]).await;
    assert_eq!(keys.code, 0, "{keys:?}");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, &keys.stdout).unwrap();
    std::fs::write(&receipt, &jws).unwrap();
    let verify = |extra: &[&str]| {
        let mut v = vec!["receipt", "verify", receipt_s, "--jwks", jwks.to_str().unwrap()];
        v.extend_from_slice(extra);
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let ok = run_cli(
        &verify(&["--artifact-file", build_s, "--action", "deploy", "--env", "staging"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(ok.code, 0, "{ok:?}");
    let principal = "arn:aws:iam::111122223333:role/github-deploy";
    let ok = run_cli(&verify(&["--principal", principal]).iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(ok.code, 0, "{ok:?}");
    let wrong_env = run_cli(&verify(&["--env", "production"]).iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(wrong_env.code, 1, "{wrong_env:?}");
    assert!(wrong_env.stderr.contains("environment"), "{wrong_env:?}");
    let other = format!("sha256:{}", "0".repeat(64));
    let wrong_artifact = run_cli(&verify(&["--artifact", &other]).iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(wrong_artifact.code, 1, "{wrong_artifact:?}");
    assert!(wrong_artifact.stderr.contains("artifact"), "{wrong_artifact:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t36_receipt_verify_refuses_a_changed_claim_or_signature() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    let (t, _) = local_app().await;
    t.clock.set(countersign_core::ports::Clock::now(&countersign_core::ports::SystemClock));
    let api = stand_in(&t, DEPLOY_ARN).await;
    let created =
        run_cli(&with_endpoint(&api, &["request", "--action", "deploy", "--env", "staging", "--output", "json"])).await;
    assert_eq!(created.code, 0, "{created:?}");
    let id = serde_json::from_str::<Value>(created.stdout.trim()).unwrap()["id"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let receipt = dir.path().join("receipt.jwt");
    let receipt_s = receipt.to_str().unwrap();
    let redeemed = run_cli(&with_endpoint(&api, &["redeem", &id, "--out", receipt_s])).await;
    assert_eq!(redeemed.code, 0, "{redeemed:?}");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, run_cli(&["receipt", "keys", "--endpoint", api.url.as_str()]).await.stdout).unwrap();
    let jwks_s = jwks.to_str().unwrap();
    assert_eq!(run_cli(&["receipt", "verify", receipt_s, "--jwks", jwks_s]).await.code, 0);
    let jws = std::fs::read_to_string(&receipt).unwrap().trim().to_string();
    let parts: Vec<&str> = jws.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    claims["environment"] = json!("production");
    let changed_claim = format!("{}.{}.{}", parts[0], B64.encode(claims.to_string()), parts[2]);
    let mut sig = B64.decode(parts[2]).unwrap();
    sig[10] ^= 1;
    let changed_sig = format!("{}.{}.{}", parts[0], parts[1], B64.encode(sig));
    for forged in [changed_claim, changed_sig] {
        std::fs::write(&receipt, &forged).unwrap();
        let ran = run_cli(&["receipt", "verify", receipt_s, "--jwks", jwks_s]).await;
        assert_eq!(ran.code, 1, "{ran:?}");
        assert!(ran.stderr.contains("signature"), "{ran:?}");
    }
    // A second redeem of the same approval: exit 9 with the API's code.
    let second = run_cli(&with_endpoint(&api, &["redeem", &id])).await;
    assert_eq!(second.code, 9, "{second:?}");
    assert!(second.stderr.contains("already_redeemed"), "{second:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_audit_report_counts_match_the_store_and_the_html_is_self_contained() {
    let (t, path) = local_app().await;
    for _ in 0..2 {
        let a = t.create(DEPLOY_ARN, &json!({"action": "deploy", "environment": "staging"})).await;
        assert_eq!(a.status, 201, "{}", a.json);
    }
    let refused = t.create(DEPLOY_ARN, &json!({"action": "deploy", "environment": "nowhere"})).await;
    assert_eq!(refused.status, 403, "{}", refused.json);
    let dir = path.to_str().unwrap();
    let ran = run_cli(&["audit", "report", "--store", "local", "--data-dir", dir, "--format", "json"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let v: Value = serde_json::from_str(&ran.stdout).unwrap();
    let s = &v["report"]["policies"]["staging-auto"];
    assert_eq!((s["requests"].as_u64(), s["auto_approved"].as_u64()), (Some(2), Some(2)), "{v}");
    assert_eq!(v["report"]["refusals"][DEPLOY_ARN]["no_matching_policy"], 1, "{v}");
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("report.html");
    let ran =
        run_cli(&["audit", "report", "--store", "local", "--data-dir", dir, "--out", file.to_str().unwrap()]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(html.contains("<svg") && html.contains("staging-auto"), "{html}");
    assert!(!html.contains("src=") && !html.contains("href="), "no external assets: {html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t42_drill_reviewers_sends_the_named_scenario_and_drill_results_counts_it() {
    let (t, path) = local_app().await;
    let drills = POLICIES.replace("    max_pending: 3\n", "    max_pending: 3\n    drills: true\n");
    t.apply_policies(&drills).await;
    let api = stand_in(&t, DEPLOY_ARN).await;
    let args = ["drill", "--reviewers", "--action", "deploy", "--env", "production"];
    let mut send = with_endpoint(&api, &args);
    send.extend(["--scenario", "unknown-commit-at-3am", "--output", "json"]);
    let ran = run_cli(&send).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let v: Value = serde_json::from_str(ran.stdout.trim()).unwrap();
    assert_eq!(v["scenario"], "unknown-commit-at-3am", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let r = t.request(&id).await;
    assert_eq!(r.drill.as_ref().map(|d| d.scenario.as_str()), Some("unknown-commit-at-3am"));
    assert_eq!(r.details.get("branch").map(String::as_str), Some("fix-tmp"), "the scenario's details were sent");
    // Alice approves it (one of the two approvals it needs): she approved a drill.
    let (channel, ts) = (r.notification.channel.to_string(), r.notification.ts.clone().unwrap());
    let click = t.click("UALICE0001", "countersign_approve", &id, &channel, &ts);
    assert_eq!(t.call_slack(t.signed_callback(&click)).await.status, 200);
    let ran = run_cli(&[
        "drill",
        "results",
        "--store",
        "local",
        "--data-dir",
        path.to_str().unwrap(),
        "--since",
        "2026-01-01",
        "--output",
        "json",
    ])
    .await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let v: Value = serde_json::from_str(ran.stdout.trim()).unwrap();
    assert_eq!(
        (v["drills"].as_u64(), v["failed"].as_u64(), v["undecided"].as_u64()),
        (Some(1), Some(0), Some(1)),
        "{v}"
    );
    let alice = v["reviewers"].as_array().unwrap().iter().find(|r| r["user"] == "UALICE0001").cloned().unwrap();
    assert_eq!(alice["approved"], 1, "{v}");
    let ran = run_cli(&[
        "drill",
        "results",
        "--store",
        "local",
        "--data-dir",
        path.to_str().unwrap(),
        "--since",
        "2026-01-01",
    ])
    .await;
    assert!(ran.stdout.contains("approved a drill") && ran.stdout.contains("UALICE0001"), "{ran:?}");
    // An unknown scenario and a missing --env are usage errors.
    let mut unknown = with_endpoint(&api, &args);
    unknown.extend(["--scenario", "nope"]);
    let ran = run_cli(&unknown).await;
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(ran.stderr.contains("unknown-commit-at-3am"), "the known scenarios are listed: {ran:?}");
    assert_eq!(run_cli(&with_endpoint(&api, &["drill", "--reviewers", "--action", "deploy"])).await.code, 2);
}
