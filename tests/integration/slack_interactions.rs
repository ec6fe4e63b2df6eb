//! The Slack interactions Lambda, black-box: signed callbacks through the real router (and through real API
//! Gateway events), the real vote service and store, a fake Slack. Each test is named after the row of
//! docs/security.md (THREATS) it proves; store-touching tests run on both stores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode};
use countersign_aws::secrets::SecretsManagerSlackSecrets;
use countersign_core::domain::{ApprovalRequest, Status};
use countersign_core::service::refusals::REFUSAL_RECORDS_PER_MINUTE;
use countersign_lambda::http::slack::SlackIdentity;
use countersign_slack::client::DEFAULT_TIMEOUT;
use countersign_slack::fake::{Behaviour, FakeUser, FAKE_BOT_TOKEN};
use countersign_slack::signature::{sign, MAX_SKEW_SECONDS};
use serde_json::{json, Value};

use crate::refused_callbacks::{assert_refusal_records, records_since};
use countersign_testkit::app::{
    capture_logs, secretsmanager_client, slack_event, spawn_app, spawn_app_with_options, spawn_app_with_secrets,
    urlencode, Answer, AppOptions, NowTs, Posted, StoreKind, TestApp, APP_ID, SIGNING_SECRET,
};
use countersign_testkit::both_stores;

const APPROVE: &str = "countersign_approve";
const DENY: &str = "countersign_deny";
const TS_HEADER: &str = "x-slack-request-timestamp";
const SIG_HEADER: &str = "x-slack-signature";

// ---- helpers -------------------------------------------------------------------------------------------

/// `payload=<urlencoded JSON>`, the body Slack sends.
fn form(payload: &Value) -> String {
    format!("payload={}", urlencode(&payload.to_string()))
}

fn now_secs(t: &TestApp) -> i64 {
    t.clock.now_ts().unix_seconds()
}

/// A callback with exactly these body bytes and header values (raw bytes, so odd values can be sent).
fn raw(body: &[u8], headers: &[(&str, &[u8])]) -> Request<Body> {
    let mut b = Request::builder()
        .method("POST")
        .uri("/slack/interactions")
        .header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in headers {
        b = b.header(*k, HeaderValue::from_bytes(v).expect("a header value"));
    }
    b.body(Body::from(body.to_vec())).expect("request builds")
}

/// `body` signed with `secret` at `ts`.
fn signed_with(secret: &str, ts: &str, body: &[u8]) -> Request<Body> {
    let sig = sign(secret.as_bytes(), ts, body);
    raw(body, &[(TS_HEADER, ts.as_bytes()), (SIG_HEADER, sig.as_bytes())])
}

/// `payload` signed with the test secret `offset` seconds away from now.
fn signed_at(t: &TestApp, payload: &Value, offset: i64) -> Request<Body> {
    signed_with(SIGNING_SECRET, &(now_secs(t) + offset).to_string(), form(payload).as_bytes())
}

fn assert_generic_401(a: &Answer, what: &str) {
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{what}: {}", a.json);
    assert_eq!(
        a.json,
        json!({"error": {"code": "unauthorized", "message": "invalid request signature"}}),
        "{what}: the body is generic"
    );
}

/// What a refused callback must leave untouched: the request, the audit trail, Slack.
struct Snapshot {
    request: ApprovalRequest,
    audit: usize,
    slack_calls: usize,
}

async fn snapshot(t: &TestApp, id: &str) -> Snapshot {
    Snapshot { request: t.request(id).await, audit: t.audit().await.len(), slack_calls: t.slack.calls().len() }
}

async fn assert_unchanged(t: &TestApp, before: &Snapshot, what: &str) {
    assert_eq!(t.request(&before.request.id.to_string()).await, before.request, "{what}: the request changed");
    assert_eq!(t.audit().await.len(), before.audit, "{what}: audit records were written");
    assert_eq!(t.slack.calls().len(), before.slack_calls, "{what}: Slack was called");
}

/// Refused before authentication: the request and Slack untouched, and nothing written but one
/// `callback.rejected` record per refusal (`code` `bad_signature` unless the reason is `body_too_large`),
/// in order, as long as the process's budget lasts (a fresh app starts with a full one; the clock stands
/// still, so a group longer than the budget is checked up to it).
async fn assert_refused(t: &TestApp, before: &Snapshot, reasons: &[&str], what: &str) {
    assert_eq!(t.request(&before.request.id.to_string()).await, before.request, "{what}: the request changed");
    assert_eq!(t.slack.calls().len(), before.slack_calls, "{what}: Slack was called");
    let budget = usize::try_from(REFUSAL_RECORDS_PER_MINUTE).unwrap();
    let expected: Vec<(&str, &str)> = reasons
        .iter()
        .take(budget)
        .map(|r| (if *r == "body_too_large" { "body_too_large" } else { "bad_signature" }, *r))
        .collect();
    assert_refusal_records(&records_since(t, before.audit).await, &expected, what);
}

/// Texts of the ephemeral replies sent through response URLs.
fn ephemeral_texts(t: &TestApp) -> Vec<String> {
    t.slack.calls_to("response_url").iter().map(|c| c.body["text"].as_str().unwrap_or_default().to_string()).collect()
}

fn approvals(r: &ApprovalRequest) -> Vec<String> {
    r.approvals.iter().map(|a| a.user_id.to_string()).collect()
}

async fn click(t: &TestApp, user: &str, action: &str, p: &Posted) -> Answer {
    t.call_slack(t.signed_callback(&t.click(user, action, &p.id, &p.channel, &p.ts))).await
}

// ---- row 1: forged callbacks ---------------------------------------------------------------------------

async fn t01_forged_callback_is_401_and_changes_nothing(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    let body = form(&t.click("UALICE0001", APPROVE, &p.id, &p.channel, &p.ts)).into_bytes();
    let ts = now_secs(&t).to_string();
    let sig = sign(SIGNING_SECRET.as_bytes(), &ts, &body);
    let mismatch = "signature_mismatch";
    // Each group is refused and audited; between groups the clock moves on 61 s (still inside the window of
    // `ts`), which refills the process's audit budget, so each group's records can be checked in turn.
    let next_group = || t.clock.advance_seconds(61);

    // Every single byte of the body changed (ASCII stays ASCII: a mismatch, never an encoding error).
    let before = snapshot(&t, &p.id).await;
    for i in 0..body.len() {
        let mut b = body.clone();
        b[i] ^= 0x01;
        let a = t.call_slack(raw(&b, &[(TS_HEADER, ts.as_bytes()), (SIG_HEADER, sig.as_bytes())])).await;
        assert_generic_401(&a, &format!("body byte {i}"));
    }
    assert_refused(&t, &before, &vec![mismatch; body.len()], "body bytes").await;
    next_group();
    // The body one byte longer or shorter, or empty.
    let before = snapshot(&t, &p.id).await;
    let mut reasons = vec![];
    for b in [[body.as_slice(), b"&"].concat(), body[..body.len() - 1].to_vec(), vec![]] {
        let a = t.call_slack(raw(&b, &[(TS_HEADER, ts.as_bytes()), (SIG_HEADER, sig.as_bytes())])).await;
        assert_generic_401(&a, "body length");
        reasons.push(mismatch);
    }
    // Every digit of the timestamp changed (the last ones stay inside the window: only the MAC catches them).
    for i in 0..ts.len() {
        let mut d = ts.clone().into_bytes();
        d[i] = if d[i] == b'9' { b'0' } else { d[i] + 1 };
        let a = t.call_slack(raw(&body, &[(TS_HEADER, &d), (SIG_HEADER, sig.as_bytes())])).await;
        assert_generic_401(&a, &format!("timestamp digit {i}"));
        let secs: i64 = std::str::from_utf8(&d).unwrap().parse().unwrap();
        reasons.push(if secs.abs_diff(now_secs(&t)) > MAX_SKEW_SECONDS { "stale_timestamp" } else { mismatch });
    }
    assert_refused(&t, &before, &reasons, "body lengths and timestamp digits").await;
    next_group();
    // Every character of the signature changed.
    let before = snapshot(&t, &p.id).await;
    let mut reasons = vec![];
    for i in 0..sig.len() {
        let mut s = sig.clone().into_bytes();
        s[i] = match s[i] {
            b'0' => b'1',
            b'v' => b'w',
            b'=' => b'-',
            _ => b'0',
        };
        let a = t.call_slack(raw(&body, &[(TS_HEADER, ts.as_bytes()), (SIG_HEADER, &s)])).await;
        assert_generic_401(&a, &format!("signature char {i}"));
        reasons.push(if i < 3 { "malformed_signature" } else { mismatch });
    }
    assert_refused(&t, &before, &reasons, "signature characters").await;
    next_group();
    // Signed with another secret.
    let before = snapshot(&t, &p.id).await;
    let a = t.call_slack(signed_with("another-signing-secret-0000000000", &ts, &body)).await;
    assert_generic_401(&a, "wrong secret");
    assert_refused(&t, &before, &[mismatch], "wrong secret").await;

    // Control: the untouched callback is accepted and counted.
    let a = t.call_slack(raw(&body, &[(TS_HEADER, ts.as_bytes()), (SIG_HEADER, sig.as_bytes())])).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(approvals(&t.request(&p.id).await), ["UALICE0001"]);
}

both_stores!(
    t01_forged_callback_is_401_and_changes_nothing,
    embedded_t01_forged_callback_is_401_and_changes_nothing,
    dynamodb_t01_forged_callback_is_401_and_changes_nothing
);

// ---- row 2: replays ------------------------------------------------------------------------------------

async fn t02_replayed_callback_counts_once(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    let alice = t.click("UALICE0001", APPROVE, &p.id, &p.channel, &p.ts);
    let body = form(&alice).into_bytes();
    let ts = now_secs(&t).to_string();
    let sig = sign(SIGNING_SECRET.as_bytes(), &ts, &body);
    let replay = || raw(&body, &[(TS_HEADER, ts.as_bytes()), (SIG_HEADER, sig.as_bytes())]);

    assert_eq!(t.call_slack(replay()).await.status, 200);
    // The very same bytes again, within the window: accepted by the signature, counted once.
    t.clock.advance_seconds(299);
    assert_eq!(t.call_slack(replay()).await.status, 200);
    let r = t.request(&p.id).await;
    assert_eq!(r.status, Status::Pending);
    assert_eq!(approvals(&r), ["UALICE0001"]);
    assert_eq!(t.audit_of("vote.approve").await.len(), 1);
    let dup = t.audit_of("vote.duplicate").await;
    assert_eq!(dup.len(), 1, "the replay is audited as a duplicate");
    assert_eq!(dup[0].actor.0, "slack:UALICE0001");
    assert!(ephemeral_texts(&t).iter().any(|m| m.contains("already voted")), "{:?}", ephemeral_texts(&t));

    // 301 s from now, in either direction: refused before anything runs.
    let bob = t.click("UBOB000001", APPROVE, &p.id, &p.channel, &p.ts);
    let before = snapshot(&t, &p.id).await;
    for offset in [-301, 301, -100_000, 100_000] {
        assert_generic_401(&t.call_slack(signed_at(&t, &bob, offset)).await, &format!("offset {offset}"));
    }
    assert_refused(&t, &before, &["stale_timestamp"; 4], "stale callbacks").await;
    // 300 s is still inside the window, in both directions.
    let carol = t.click("UCAROL0001", APPROVE, &p.id, &p.channel, &p.ts);
    let a = t.call_slack(signed_at(&t, &bob, 300)).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let r = t.request(&p.id).await;
    assert_eq!(r.status, Status::Approved);
    let a = t.call_slack(signed_at(&t, &carol, -300)).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(t.audit_of("request.approved").await.len(), 1);
}

both_stores!(
    t02_replayed_callback_counts_once,
    embedded_t02_replayed_callback_counts_once,
    dynamodb_t02_replayed_callback_counts_once
);

// ---- row 3: malformed headers --------------------------------------------------------------------------

async fn t03_malformed_headers_are_401_never_5xx(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    let body = form(&t.click("UALICE0001", APPROVE, &p.id, &p.channel, &p.ts)).into_bytes();
    let now = now_secs(&t);
    let ts = now.to_string();
    let good = sign(SIGNING_SECRET.as_bytes(), &ts, &body);
    let before = snapshot(&t, &p.id).await;

    // Odd timestamps, each with a signature that is correct for exactly that timestamp string: only the
    // format rule can refuse them.
    let odd_ts = [
        "abc".to_string(),
        format!("{now}.5"),
        format!(" {now}"),
        format!("{now} "),
        format!("+{now}"),
        format!("-{now}"),
        format!("{now}\t"),
        format!("0x{now:x}"),
        format!("{now}e0"),
        "9".repeat(40),
        format!("{}", i64::MAX),
        String::new(),
    ];
    for odd in &odd_ts {
        let sig = sign(SIGNING_SECRET.as_bytes(), odd, &body);
        let a = t.call_slack(raw(&body, &[(TS_HEADER, odd.as_bytes()), (SIG_HEADER, sig.as_bytes())])).await;
        assert_generic_401(&a, &format!("timestamp {odd:?}"));
    }
    let non_ascii = [b"\xff".as_slice(), ts.as_bytes()].concat();
    let a = t.call_slack(raw(&body, &[(TS_HEADER, &non_ascii), (SIG_HEADER, good.as_bytes())])).await;
    assert_generic_401(&a, "non-ASCII timestamp");

    // Odd signatures (the MAC is right; only its spelling is wrong).
    let hex = &good[3..];
    let odd_sigs = [
        format!("v0={}", hex.to_uppercase()),
        hex.to_string(),
        format!("V0={hex}"),
        format!("v1={hex}"),
        format!(" v0={hex}"),
        format!("v0={hex} "),
        format!("v0= {hex}"),
        format!("v0={}", &hex[..63]),
        format!("v0={hex}0"),
        format!("v0={hex},v0={hex}"),
        "v0=".to_string(),
        String::new(),
    ];
    for odd in &odd_sigs {
        let a = t.call_slack(raw(&body, &[(TS_HEADER, ts.as_bytes()), (SIG_HEADER, odd.as_bytes())])).await;
        assert_generic_401(&a, &format!("signature {odd:?}"));
    }
    let a = t.call_slack(raw(&body, &[(TS_HEADER, ts.as_bytes()), (SIG_HEADER, b"v0=\xc3\xa9")])).await;
    assert_generic_401(&a, "non-ASCII signature");

    // Missing and duplicated headers (duplicates carry the correct values).
    let cases: [Vec<(&str, &[u8])>; 5] = [
        vec![(SIG_HEADER, good.as_bytes())],
        vec![(TS_HEADER, ts.as_bytes())],
        vec![],
        vec![(TS_HEADER, ts.as_bytes()), (SIG_HEADER, good.as_bytes()), (SIG_HEADER, good.as_bytes())],
        vec![(TS_HEADER, ts.as_bytes()), (TS_HEADER, ts.as_bytes()), (SIG_HEADER, good.as_bytes())],
    ];
    for (i, headers) in cases.iter().enumerate() {
        assert_generic_401(&t.call_slack(raw(&body, headers)).await, &format!("header case {i}"));
    }
    // Through API Gateway a repeated header reaches the router as its last value only (lambda_http merges
    // `headers` over `multiValueHeaders`); that one value is what is checked, never "any of them".
    let forged = sign(b"forged-secret", &ts, &body);
    let ev = slack_event(
        &body,
        &[("X-Slack-Request-Timestamp", &ts), ("X-Slack-Signature", &good), ("X-Slack-Signature", &forged)],
        false,
    );
    assert_generic_401(&t.call_slack_event(ev).await, "valid then forged signature through API Gateway");
    // A body over the 1 MiB limit is refused before anything reads it.
    let huge = vec![b'a'; 1024 * 1024 + 1];
    let sig = sign(SIGNING_SECRET.as_bytes(), &ts, &huge);
    let a = t.call_slack(raw(&huge, &[(TS_HEADER, ts.as_bytes()), (SIG_HEADER, sig.as_bytes())])).await;
    assert_generic_401(&a, "oversized body");
    let reasons: Vec<&str> = [vec!["malformed_timestamp"; odd_ts.len()], vec!["non_ascii_header"]]
        .into_iter()
        .chain([vec!["malformed_signature"; odd_sigs.len()], vec!["non_ascii_header"]])
        .chain([vec![
            "missing_timestamp",
            "missing_signature",
            "missing_timestamp",
            "duplicate_header",
            "duplicate_header",
        ]])
        .chain([vec!["signature_mismatch", "body_too_large"]])
        .flatten()
        .collect();
    assert_refused(&t, &before, &reasons, "malformed headers").await;
}

both_stores!(
    t03_malformed_headers_are_401_never_5xx,
    embedded_t03_malformed_headers_are_401_never_5xx,
    dynamodb_t03_malformed_headers_are_401_never_5xx
);

// ---- row 4: encodings ----------------------------------------------------------------------------------

async fn t04_base64_body_verifies_like_plain(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    let ts = now_secs(&t).to_string();
    let event = |user: &str, base64: bool| {
        let body = form(&t.click(user, APPROVE, &p.id, &p.channel, &p.ts)).into_bytes();
        let sig = sign(SIGNING_SECRET.as_bytes(), &ts, &body);
        slack_event(&body, &[("X-Slack-Request-Timestamp", &ts), ("X-Slack-Signature", &sig)], base64)
    };
    // API Gateway hands the body over base64-encoded (isBase64Encoded: true): Slack signed the decoded bytes.
    let a = t.call_slack_event(event("UALICE0001", true)).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(approvals(&t.request(&p.id).await), ["UALICE0001"]);

    // Tampering is still caught after decoding; the encoded text itself is not what was signed.
    let before = snapshot(&t, &p.id).await;
    let body = form(&t.click("UBOB000001", APPROVE, &p.id, &p.channel, &p.ts)).into_bytes();
    let sig = sign(SIGNING_SECRET.as_bytes(), &ts, &body);
    let mut altered = body.clone();
    altered[10] ^= 0x01;
    let ev = slack_event(&altered, &[("X-Slack-Request-Timestamp", &ts), ("X-Slack-Signature", &sig)], true);
    assert_generic_401(&t.call_slack_event(ev).await, "altered base64 body");
    {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
        let sig = sign(SIGNING_SECRET.as_bytes(), &ts, encoded.as_bytes());
        let ev = slack_event(&body, &[("X-Slack-Request-Timestamp", &ts), ("X-Slack-Signature", &sig)], true);
        assert_generic_401(&t.call_slack_event(ev).await, "MAC over the base64 text");
    }
    // Bytes that are not UTF-8 are refused, even correctly signed ones.
    for bad in [b"payload=\xff\xfe".to_vec(), [body.as_slice(), b"\xc3"].concat()] {
        let sig = sign(SIGNING_SECRET.as_bytes(), &ts, &bad);
        let ev = slack_event(&bad, &[("X-Slack-Request-Timestamp", &ts), ("X-Slack-Signature", &sig)], true);
        assert_generic_401(&t.call_slack_event(ev).await, "invalid UTF-8");
    }
    assert_refused(
        &t,
        &before,
        &["signature_mismatch", "signature_mismatch", "body_not_utf8", "body_not_utf8"],
        "altered or non-UTF-8 bodies",
    )
    .await;

    // The plain event verifies the same way.
    let a = t.call_slack_event(event("UBOB000001", false)).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(t.request(&p.id).await.status, Status::Approved);
}

both_stores!(
    t04_base64_body_verifies_like_plain,
    embedded_t04_base64_body_verifies_like_plain,
    dynamodb_t04_base64_body_verifies_like_plain
);

// ---- row 5: no side paths; fail closed -----------------------------------------------------------------

async fn t05_ssl_check_shortcut_is_401(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    let before = snapshot(&t, &p.id).await;
    let payload = urlencode(&t.click("UALICE0001", APPROVE, &p.id, &p.channel, &p.ts).to_string());
    let ts = now_secs(&t).to_string();
    let bodies = [
        "ssl_check=1&token=legacy-verification-token".to_string(),
        format!("ssl_check=1&payload={payload}"),
        format!("payload={payload}&ssl_check=1"),
    ];
    for body in &bodies {
        for headers in [vec![], vec![(TS_HEADER, ts.as_bytes())]] {
            assert_generic_401(&t.call_slack(raw(body.as_bytes(), &headers)).await, body);
        }
        let ev = slack_event(body.as_bytes(), &[], true);
        assert_generic_401(&t.call_slack_event(ev).await, body);
    }
    let get = Request::builder().method("GET").uri("/slack/interactions?ssl_check=1").body(Body::empty()).unwrap();
    let a = t.call_slack(get).await;
    assert!(a.status.is_client_error(), "GET is not a way in: {}", a.status);
    // No way in, and each refusal audited; the GET is no callback (405) and records nothing.
    let per_body = ["missing_timestamp", "missing_signature", "missing_timestamp"];
    assert_refused(&t, &before, &per_body.repeat(bodies.len()), "ssl_check").await;
}

both_stores!(
    t05_ssl_check_shortcut_is_401,
    embedded_t05_ssl_check_shortcut_is_401,
    dynamodb_t05_ssl_check_shortcut_is_401
);

/// A Secrets Manager client for an endpoint that is not the emulator (dummy credentials, one region).
async fn sm_client_at(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await;
    aws_sdk_secretsmanager::Client::new(&config)
}

async fn secret_store_failure_is_503(kind: StoreKind, endpoint: &str) {
    let secrets =
        SecretsManagerSlackSecrets::new(sm_client_at(endpoint).await, "countersign/slack".into(), Duration::ZERO);
    let Some(t) = spawn_app_with_secrets(kind, Arc::new(secrets)).await else { return };
    // The bot token comes from the same place, so the request's message could not be posted.
    let a = t
        .create(
            countersign_testkit::app::DEPLOY_ARN,
            &json!({"action": "deploy", "environment": "production", "reason": "r"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.json);
    let id = a.json["id"].as_str().unwrap().to_string();
    let before = snapshot(&t, &id).await;
    let started = Instant::now();
    let req = t.signed_callback(&t.click("UALICE0001", APPROVE, &id, "C0APPROVALS", "1700000000.000001"));
    let a = tokio::time::timeout(Duration::from_secs(20), t.call_slack(req))
        .await
        .expect("the callback answers at all when the secret store does not");
    let took = started.elapsed();
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.json);
    assert!(a.headers.contains_key("retry-after"));
    assert_eq!(a.json["error"]["code"], "unavailable");
    assert!(took < Duration::from_millis(2500), "a secret store failure answered after {took:?}");
    assert_unchanged(&t, &before, "secret store failure").await;
}

async fn t05_secret_fetch_failure_is_503(kind: StoreKind) {
    // Nothing listens on port 1: every fetch fails.
    secret_store_failure_is_503(kind, "http://127.0.0.1:1").await;
}

both_stores!(
    t05_secret_fetch_failure_is_503,
    embedded_t05_secret_fetch_failure_is_503,
    dynamodb_t05_secret_fetch_failure_is_503
);

/// A Secrets Manager that accepts connections and never answers.
async fn t05_secret_store_hanging_is_503_in_time(kind: StoreKind) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    secret_store_failure_is_503(kind, &format!("http://{addr}")).await;
    hold.abort();
}

both_stores!(
    t05_secret_store_hanging_is_503_in_time,
    embedded_t05_secret_store_hanging_is_503_in_time,
    dynamodb_t05_secret_store_hanging_is_503_in_time
);

// ---- row 6: signing secret rotation, with the real Secrets Manager adapter on the emulator ---------------

fn secret_json(signing_secret: &str) -> String {
    json!({"bot_token": FAKE_BOT_TOKEN, "signing_secret": signing_secret}).to_string()
}

/// Counts the calls a Secrets Manager client makes.
#[derive(Debug, Clone, Default)]
struct CountCalls(Arc<std::sync::atomic::AtomicUsize>);

impl CountCalls {
    fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl aws_sdk_secretsmanager::config::Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "CountCalls"
    }

    fn read_before_execution(
        &self,
        _context: &aws_sdk_secretsmanager::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut aws_sdk_secretsmanager::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

async fn t06_rotation_previous_secret_accepted_until_gone(kind: StoreKind) {
    let Some(sm) = secretsmanager_client().await else { return };
    let name = format!("countersign/slack-{}", ulid::Ulid::new());
    let (s1, s2, s3) =
        ("first-signing-secret-111111111111", "second-signing-secret-22222222222", "third-signing-secret-333333333333");
    sm.create_secret().name(&name).secret_string(secret_json(s1)).send().await.unwrap();
    // TTL 0: every callback reads Secrets Manager again, so each rotation step is seen at once.
    let adapter = SecretsManagerSlackSecrets::new(sm.clone(), name.clone(), Duration::ZERO);
    let Some(t) = spawn_app_with_secrets(kind, Arc::new(adapter)).await else { return };
    let (buf, _guard) = capture_logs();
    let p = t.pending_request().await;
    let second = t.pending_request().await;
    let ts = now_secs(&t).to_string();
    let body = |user: &str, p: &Posted| form(&t.click(user, APPROVE, &p.id, &p.channel, &p.ts)).into_bytes();

    // Only AWSCURRENT exists (no AWSPREVIOUS yet): it verifies.
    let a = t.call_slack(signed_with(s1, &ts, &body("UALICE0001", &p))).await;
    assert_eq!(a.status, 200, "{}", a.json);

    // Rotate: s2 is AWSCURRENT, s1 AWSPREVIOUS. Both verify.
    sm.put_secret_value().secret_id(&name).secret_string(secret_json(s2)).send().await.unwrap();
    let a = t.call_slack(signed_with(s1, &ts, &body("UBOB000001", &p))).await;
    assert_eq!(a.status, 200, "old secret while AWSPREVIOUS: {}", a.json);
    assert_eq!(t.request(&p.id).await.status, Status::Approved);
    let logs = buf.text();
    assert!(
        logs.lines().any(|l| l.contains("slack signature verified") && l.contains("AWSPREVIOUS")),
        "the matching stage is logged:\n{logs}"
    );
    let a = t.call_slack(signed_with(s2, &ts, &body("UALICE0001", &second))).await;
    assert_eq!(a.status, 200, "{}", a.json);

    // Rotate again: s3 is AWSCURRENT, s2 AWSPREVIOUS, s1 is gone.
    sm.put_secret_value().secret_id(&name).secret_string(secret_json(s3)).send().await.unwrap();
    let before = snapshot(&t, &second.id).await;
    let a = t.call_slack(signed_with(s1, &ts, &body("UBOB000001", &second))).await;
    assert_generic_401(&a, "a secret older than AWSPREVIOUS");
    assert_refused(&t, &before, &["signature_mismatch"], "retired secret").await;
    let a = t.call_slack(signed_with(s2, &ts, &body("UBOB000001", &second))).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(t.request(&second.id).await.status, Status::Approved);
    for s in [s1, s2, s3] {
        assert!(!buf.text().contains(s), "a signing secret was logged");
    }
}

both_stores!(
    t06_rotation_previous_secret_accepted_until_gone,
    embedded_t06_rotation_previous_secret_accepted_until_gone,
    dynamodb_t06_rotation_previous_secret_accepted_until_gone
);

/// With a long cache, a mismatch refetches the secret once (so a rotation is picked up at once), and
/// refetches are rate-limited: a flood of forged callbacks cannot turn into a flood of Secrets Manager calls.
#[tokio::test]
async fn t06_mismatch_refetches_once_and_refetches_are_rate_limited() {
    let Some(sm) = secretsmanager_client().await else { return };
    let counter = CountCalls::default();
    let sm = aws_sdk_secretsmanager::Client::from_conf(sm.config().to_builder().interceptor(counter.clone()).build());
    let name = format!("countersign/slack-{}", ulid::Ulid::new());
    let (s1, s2) = ("first-signing-secret-111111111111", "second-signing-secret-22222222222");
    sm.create_secret().name(&name).secret_string(secret_json(s1)).send().await.unwrap();
    let hour = Duration::from_secs(3600);

    // Refetching allowed at once: the rotation is seen by the first callback signed with the new secret.
    let adapter =
        SecretsManagerSlackSecrets::new(sm.clone(), name.clone(), hour).with_min_refresh_interval(Duration::ZERO);
    let Some(t) = spawn_app_with_secrets(StoreKind::Embedded, Arc::new(adapter)).await else { return };
    let p = t.pending_request().await;
    let ts = now_secs(&t).to_string();
    let body = |user: &str| form(&t.click(user, APPROVE, &p.id, &p.channel, &p.ts)).into_bytes();
    assert_eq!(t.call_slack(signed_with(s1, &ts, &body("UALICE0001"))).await.status, 200);
    sm.put_secret_value().secret_id(&name).secret_string(secret_json(s2)).send().await.unwrap();
    let n = counter.get();
    assert_eq!(t.call_slack(signed_with(s2, &ts, &body("UBOB000001"))).await.status, 200);
    assert_eq!(counter.get() - n, 2, "one refetch (AWSCURRENT and AWSPREVIOUS) after the mismatch");
    // A forged callback costs exactly one refetch, not more.
    let n = counter.get();
    assert_generic_401(&t.call_slack(signed_with("forged", &ts, &body("UCAROL0001"))).await, "forged");
    assert_eq!(counter.get() - n, 2, "one refetch per mismatch");

    // The default rate limit (one refetch per 30 s): twenty forged callbacks right after a load cost nothing.
    let sm_name = name.clone();
    let adapter = SecretsManagerSlackSecrets::new(sm.clone(), sm_name, hour);
    let Some(t) = spawn_app_with_secrets(StoreKind::Embedded, Arc::new(adapter)).await else { return };
    let p = t.pending_request().await; // loads the secret (the bot token)
    let n = counter.get();
    for i in 0..20 {
        let body = form(&t.click("UALICE0001", APPROVE, &p.id, &p.channel, &p.ts)).into_bytes();
        assert_generic_401(&t.call_slack(signed_with("forged", &ts, &body)).await, &format!("forged {i}"));
    }
    assert_eq!(counter.get(), n, "forged callbacks made Secrets Manager calls");
}

// ---- row 7: no oracle, no leak -------------------------------------------------------------------------

async fn t07_failed_verification_leaks_no_secret_or_mac(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    let (buf, guard) = capture_logs();
    let body = form(&t.click("UALICE0001", APPROVE, &p.id, &p.channel, &p.ts)).into_bytes();
    let now = now_secs(&t);
    let mut altered = body.clone();
    altered[20] ^= 0x01;
    let forged = sign(b"attacker-guess-0000000000000000", &now.to_string(), &body);
    // (body, timestamp, signature sent)
    let cases: Vec<(Vec<u8>, String, String)> = vec![
        (body.clone(), now.to_string(), forged.clone()),
        (altered.clone(), now.to_string(), sign(SIGNING_SECRET.as_bytes(), &now.to_string(), &body)),
        (body.clone(), (now - 301).to_string(), sign(SIGNING_SECRET.as_bytes(), &(now - 301).to_string(), &body)),
        (body.clone(), now.to_string(), forged.to_uppercase()),
        (body.clone(), format!("{now}.0"), forged.clone()),
    ];
    let mut answers = Vec::new();
    let mut macs = Vec::new();
    for (b, ts, sig) in &cases {
        // The MAC the server computes for what it received, and the one for the untouched body.
        macs.push(sign(SIGNING_SECRET.as_bytes(), ts, b)[3..].to_string());
        macs.push(sign(SIGNING_SECRET.as_bytes(), ts, &body)[3..].to_string());
        let a = t.call_slack(raw(b, &[(TS_HEADER, ts.as_bytes()), (SIG_HEADER, sig.as_bytes())])).await;
        assert_generic_401(&a, ts);
        answers.push(a.json.to_string());
    }
    drop(guard);
    let logs = buf.text();
    assert!(logs.contains("slack callback refused"), "logs were captured:\n{logs}");
    for text in answers.iter().chain(std::iter::once(&logs)) {
        assert!(!text.contains(SIGNING_SECRET), "the signing secret leaked");
        assert!(!text.contains(FAKE_BOT_TOKEN), "the bot token leaked");
        for mac in &macs {
            assert!(!text.to_lowercase().contains(mac), "a computed MAC leaked");
        }
        assert!(!text.to_lowercase().contains(&forged[3..]), "the received signature was echoed");
    }
}

#[tokio::test]
async fn embedded_t07_failed_verification_leaks_no_secret_or_mac() {
    t07_failed_verification_leaks_no_secret_or_mac(StoreKind::Embedded).await;
}

#[tokio::test]
async fn dynamodb_t07_failed_verification_leaks_no_secret_or_mac() {
    t07_failed_verification_leaks_no_secret_or_mac(StoreKind::Dynamodb).await;
}

// ---- row 8: foreign app, workspace, Slack Connect ------------------------------------------------------

async fn t08_foreign_app_team_enterprise_connect_user_rejected_and_audited(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    let base = t.click("UALICE0001", APPROVE, &p.id, &p.channel, &p.ts);
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut v = base.clone();
    v["api_app_id"] = "A0FOREIGN1".into();
    cases.push(("foreign app", v));
    let mut v = base.clone();
    v["team"]["id"] = "T0FOREIGN1".into();
    v["user"]["team_id"] = "T0FOREIGN1".into();
    cases.push(("foreign team", v));
    let mut v = base.clone();
    v["user"]["team_id"] = "T0PARTNER9".into();
    cases.push(("Slack Connect user from another workspace", v));
    let mut v = base.clone();
    v["user"]["team_id"] = "E0ACMEGRID".into();
    cases.push(("user team is an enterprise id", v));
    let mut v = base.clone();
    v["user"]["team_id"] = Value::Null;
    cases.push(("null user team", v));
    let mut v = base.clone();
    v["user"].as_object_mut().unwrap().remove("team_id");
    cases.push(("no user team", v));
    let mut v = t.deny_submission("UALICE0001", &p.id, "no");
    v["api_app_id"] = "A0FOREIGN1".into();
    cases.push(("foreign app modal", v));
    let mut v = t.deny_submission("UALICE0001", &p.id, "no");
    v["user"]["team_id"] = "T0PARTNER9".into();
    cases.push(("Slack Connect modal", v));

    for (what, payload) in &cases {
        let before = snapshot(&t, &p.id).await;
        let a = t.call_slack(t.signed_callback(payload)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{what}: {}", a.json);
        assert_eq!(t.request(&p.id).await, before.request, "{what}: the request changed");
        assert_eq!(t.slack.calls().len(), before.slack_calls, "{what}: Slack was called");
        let audit = t.audit().await;
        assert_eq!(audit.len(), before.audit + 1, "{what}: one audit record");
        let last = audit.last().unwrap();
        assert_eq!(last.kind.as_str(), "callback.rejected", "{what}");
        assert_eq!(last.actor.0, "slack:UALICE0001", "{what}");
        assert_eq!(last.details.get("code").map(String::as_str), Some("foreign_workspace"), "{what}");
    }
    // A team id where an enterprise id belongs is not even a valid payload: refused and audited.
    let mut v = base.clone();
    v["team"]["id"] = "E0ACMEGRID".into();
    let before = snapshot(&t, &p.id).await;
    let a = t.call_slack(t.signed_callback(&v)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.json);
    assert_eq!(t.request(&p.id).await, before.request);
    assert_eq!(t.audit().await.last().unwrap().kind.as_str(), "callback.rejected");
    assert_eq!(approvals(&t.request(&p.id).await), Vec::<String>::new());
}

both_stores!(
    t08_foreign_app_team_enterprise_connect_user_rejected_and_audited,
    embedded_t08_foreign_app_team_enterprise_connect_user_rejected_and_audited,
    dynamodb_t08_foreign_app_team_enterprise_connect_user_rejected_and_audited
);

/// An Enterprise Grid installation: the organization id must match; members of any of its workspaces vote.
async fn t08_enterprise_grid_org_must_match(kind: StoreKind) {
    let opts = AppOptions {
        slack_identity: SlackIdentity { app_id: APP_ID.into(), team_id: "E0GRID0001".into() },
        ..AppOptions::default()
    };
    let Some(t) = spawn_app_with_options(kind, opts).await else { return };
    let p = t.pending_request().await;
    let grid = |enterprise: Value, user_team: Value| {
        let mut v = t.click("UALICE0001", APPROVE, &p.id, &p.channel, &p.ts);
        v["enterprise"] = enterprise;
        v["user"]["team_id"] = user_team;
        v
    };
    for (what, v) in [
        ("other org", grid(json!({"id": "E0OTHER001"}), "T0TEAM0001".into())),
        ("no org", grid(Value::Null, "T0TEAM0001".into())),
        ("no user team", grid(json!({"id": "E0GRID0001"}), Value::Null)),
    ] {
        let a = t.call_slack(t.signed_callback(&v)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{what}: {}", a.json);
        assert_eq!(t.audit().await.last().unwrap().kind.as_str(), "callback.rejected", "{what}");
    }
    assert!(t.request(&p.id).await.approvals.is_empty());
    // Slack's directory agrees: a member of a workspace of that organization (row 34).
    let member =
        FakeUser { team_id: "T0TEAM0002".into(), enterprise_id: Some("E0GRID0001".into()), ..FakeUser::member() };
    t.slack.set_user("UALICE0001", member);
    let a = t.call_slack(t.signed_callback(&grid(json!({"id": "E0GRID0001"}), "T0TEAM0002".into()))).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(approvals(&t.request(&p.id).await), ["UALICE0001"]);
}

both_stores!(
    t08_enterprise_grid_org_must_match,
    embedded_t08_enterprise_grid_org_must_match,
    dynamodb_t08_enterprise_grid_org_must_match
);

// ---- row 9: unauthorized clickers ----------------------------------------------------------------------

async fn t09_non_approver_click_changes_nothing_and_gets_ephemeral(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    t.slack.set_usergroup("S0SRE00001", &["USRE000001"]);
    let p = t.pending_request().await;
    for action in [APPROVE, DENY] {
        let before = snapshot(&t, &p.id).await;
        let a = click(&t, "UMALLORY01", action, &p).await;
        assert_eq!(a.status, 200, "{}", a.json);
        assert_eq!(t.request(&p.id).await, before.request, "{action}: the request changed");
        assert!(t.slack.calls_to("views.open").is_empty(), "{action}: a non-approver got the deny dialog");
        let replies = ephemeral_texts(&t);
        assert!(replies.last().is_some_and(|m| m.contains("not an approver")), "{action}: {replies:?}");
        let reply = t.slack.calls_to("response_url").pop().unwrap();
        assert_eq!(reply.body["response_type"], "ephemeral", "{}", reply.body);
        assert!(reply.authorization.is_none(), "the bot token went to a response_url");
        let rejected = t.audit_of("vote.rejected").await;
        let last = rejected.last().unwrap();
        assert_eq!(last.actor.0, "slack:UMALLORY01");
        assert_eq!(last.request_id.map(|r| r.to_string()), Some(p.id.clone()));
        assert_eq!(last.details.get("code").map(String::as_str), Some("not_approver"));
        assert_eq!(t.audit().await.len(), before.audit + 1, "{action}: one audit record");
        assert!(t.slack.messages()[0].updates.is_empty(), "{action}: the message was updated");
    }
    assert_eq!(t.audit_of("vote.rejected").await.len(), 2);
    // A group member is an approver (control).
    assert_eq!(click(&t, "USRE000001", APPROVE, &p).await.status, 200);
    assert_eq!(approvals(&t.request(&p.id).await), ["USRE000001"]);
}

both_stores!(
    t09_non_approver_click_changes_nothing_and_gets_ephemeral,
    embedded_t09_non_approver_click_changes_nothing_and_gets_ephemeral,
    dynamodb_t09_non_approver_click_changes_nothing_and_gets_ephemeral
);

/// A policy whose approvers cannot be resolved (Slack does not know the group) approves nothing.
async fn t09_unresolvable_group_approves_nothing(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await; // S0SRE00001 was never defined in the fake: no_such_subteam
    let before = snapshot(&t, &p.id).await;
    let a = click(&t, "USRE000001", APPROVE, &p).await;
    assert_eq!(a.status, 200);
    assert_eq!(t.request(&p.id).await, before.request);
    assert!(ephemeral_texts(&t).last().is_some_and(|m| m.contains("try again")), "{:?}", ephemeral_texts(&t));
}

both_stores!(
    t09_unresolvable_group_approves_nothing,
    embedded_t09_unresolvable_group_approves_nothing,
    dynamodb_t09_unresolvable_group_approves_nothing
);

// ---- row 10: self-approval -----------------------------------------------------------------------------

async fn t10_owner_in_approver_group_cannot_approve(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    t.slack.set_usergroup("S0SRE00001", &["U0OWNER001", "USRE000001"]);
    let p = t.pending_request().await;
    let before = snapshot(&t, &p.id).await;
    for action in [APPROVE, DENY] {
        assert_eq!(click(&t, "U0OWNER001", action, &p).await.status, 200);
    }
    let a = t.call_slack(t.signed_callback(&t.deny_submission("U0OWNER001", &p.id, "mine"))).await;
    assert_eq!(a.json["response_action"], "errors", "{}", a.json);
    assert_eq!(t.request(&p.id).await, before.request, "the owner changed the request");
    assert!(t.slack.calls_to("views.open").is_empty());
    let rejected = t.audit_of("vote.rejected").await;
    assert_eq!(rejected.len(), 3);
    assert!(rejected.iter().all(|e| e.actor.0 == "slack:U0OWNER001"));
    assert!(ephemeral_texts(&t).iter().all(|m| m.contains("own the identity")), "{:?}", ephemeral_texts(&t));
}

both_stores!(
    t10_owner_in_approver_group_cannot_approve,
    embedded_t10_owner_in_approver_group_cannot_approve,
    dynamodb_t10_owner_in_approver_group_cannot_approve
);

// ---- row 11: button tampering --------------------------------------------------------------------------

async fn t11_button_tampering_rejected(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    let other = t.pending_request().await;
    let unknown = countersign_core::domain::RequestId::generate().to_string();

    // Well-formed clicks that point elsewhere: 200 with an ephemeral refusal, audited, nothing changes.
    let refused = [
        ("unknown request id", t.click("UALICE0001", APPROVE, &unknown, &p.channel, &p.ts), "does not exist"),
        ("another message's ts", t.click("UALICE0001", APPROVE, &p.id, &p.channel, &other.ts), "not the one"),
        ("another channel", t.click("UALICE0001", APPROVE, &p.id, "C0ELSEWHERE", &p.ts), "not the one"),
        ("deny on another message", t.click("UALICE0001", DENY, &p.id, &p.channel, &other.ts), "not the one"),
    ];
    for (what, payload, reply) in &refused {
        let before = snapshot(&t, &p.id).await;
        let before_other = t.request(&other.id).await;
        let a = t.call_slack(t.signed_callback(payload)).await;
        assert_eq!(a.status, 200, "{what}: {}", a.json);
        assert_eq!(t.request(&p.id).await, before.request, "{what}");
        assert_eq!(t.request(&other.id).await, before_other, "{what}");
        assert!(ephemeral_texts(&t).last().is_some_and(|m| m.contains(reply)), "{what}: {:?}", ephemeral_texts(&t));
        let last = t.audit().await.pop().unwrap();
        assert_eq!(last.kind.as_str(), "vote.rejected", "{what}");
        assert_eq!(t.audit().await.len(), before.audit + 1, "{what}");
    }
    assert!(t.slack.calls_to("views.open").is_empty());

    // Shapes we never send: refused as bad payloads (400), audited, nothing changes.
    let base = t.click("UALICE0001", APPROVE, &p.id, &p.channel, &p.ts);
    let mut bad = Vec::new();
    let mut v = base.clone();
    v["actions"][0]["action_id"] = "countersign_approve_all".into();
    bad.push(("unknown action id", v));
    let mut v = base.clone();
    v["actions"][0]["block_id"] = "someone_elses_block".into();
    bad.push(("unknown block id", v));
    let mut v = base.clone();
    let second = v["actions"][0].clone();
    v["actions"].as_array_mut().unwrap().push(second);
    bad.push(("two actions", v));
    let mut v = base.clone();
    let mut deny = v["actions"][0].clone();
    deny["action_id"] = DENY.into();
    v["actions"].as_array_mut().unwrap().push(deny);
    bad.push(("approve and deny", v));
    let mut v = base.clone();
    v["actions"] = json!([]);
    bad.push(("no action", v));
    let mut v = base.clone();
    v["actions"][0]["value"] = json!(format!("{} UBOB000001", p.id));
    bad.push(("value with more than an id", v));
    let mut v = base.clone();
    v["actions"][0]["value"] = json!({"id": p.id, "approvals": 2});
    bad.push(("value as an object", v));
    let mut v = base.clone();
    v["message"]["ts"] = other.ts.clone().into();
    bad.push(("message and container disagree", v));
    let mut v = base.clone();
    v["type"] = "interactive_message".into();
    bad.push(("legacy interactive message", v));
    for (what, payload) in &bad {
        let before = snapshot(&t, &p.id).await;
        let a = t.call_slack(t.signed_callback(payload)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{what}: {}", a.json);
        assert_eq!(t.request(&p.id).await, before.request, "{what}");
        assert_eq!(t.slack.calls().len(), before.slack_calls, "{what}");
        let audit = t.audit().await;
        assert_eq!(audit.len(), before.audit + 1, "{what}");
        assert_eq!(audit.last().unwrap().kind.as_str(), "callback.rejected", "{what}");
    }
    // Control: the genuine click still counts.
    assert_eq!(t.call_slack(t.signed_callback(&base)).await.status, 200);
    assert_eq!(approvals(&t.request(&p.id).await), ["UALICE0001"]);
}

both_stores!(
    t11_button_tampering_rejected,
    embedded_t11_button_tampering_rejected,
    dynamodb_t11_button_tampering_rejected
);

// ---- row 12: races -------------------------------------------------------------------------------------

async fn t12_fifty_concurrent_approvals_one_transition(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let users: Vec<String> = (0..50).map(|i| format!("UAPPR{i:05}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    t.slack.set_usergroup("S0SRE00001", &refs);
    let p = t.pending_request().await;
    let requests: Vec<Request<Body>> =
        users.iter().map(|u| t.signed_callback(&t.click(u, APPROVE, &p.id, &p.channel, &p.ts))).collect();
    let mut tasks = tokio::task::JoinSet::new();
    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len()));
    for req in requests {
        let router = t.app.slack_interactions();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            use tower::ServiceExt;
            barrier.wait().await;
            router.oneshot(req).await.unwrap().status()
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    let r = t.request(&p.id).await;
    assert_eq!(r.status, Status::Approved);
    assert_eq!(r.approvals.len(), 2, "exactly the quorum was counted: {:?}", approvals(&r));
    let approved = t.audit_of("request.approved").await;
    assert_eq!(approved.len(), 1, "exactly one approved transition");
    assert_eq!(approved[0].request_id.map(|i| i.to_string()), Some(p.id.clone()));
    assert_eq!(t.audit_of("vote.approve").await.len(), 2);
    assert_eq!(t.audit_of("vote.rejected").await.len(), 48, "every other click is refused and audited");
    countersign_core::domain::audit::verify_chain(&t.audit().await).expect("the audit chain is intact");
    // The message ends approved, without buttons (under this load, possibly through the sweeper's relay).
    t.app.sweeper().run_once().await.unwrap();
    let m = &t.slack.messages()[0];
    assert!(!m.blocks.to_string().contains(APPROVE), "buttons remain: {}", m.blocks);
    assert!(!t.request(&p.id).await.notification.update_pending);
}

both_stores!(
    multi_thread: t12_fifty_concurrent_approvals_one_transition,
    embedded_t12_fifty_concurrent_approvals_one_transition,
    dynamodb_t12_fifty_concurrent_approvals_one_transition
);

// ---- row 13: quorum counting ---------------------------------------------------------------------------

async fn t13_same_approver_three_clicks_still_pending(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    // Three clicks at once, then one more later.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let req = t.signed_callback(&t.click("UALICE0001", APPROVE, &p.id, &p.channel, &p.ts));
        let router = t.app.slack_interactions();
        tasks.spawn(async move {
            use tower::ServiceExt;
            router.oneshot(req).await.unwrap().status()
        });
    }
    while let Some(s) = tasks.join_next().await {
        assert_eq!(s.unwrap(), StatusCode::OK);
    }
    assert_eq!(click(&t, "UALICE0001", APPROVE, &p).await.status, 200);
    let r = t.request(&p.id).await;
    assert_eq!(r.status, Status::Pending, "one approver cannot make a quorum of two");
    assert_eq!(approvals(&r), ["UALICE0001"]);
    assert_eq!(t.audit_of("vote.approve").await.len(), 1);
    assert_eq!(t.audit_of("vote.duplicate").await.len(), 3);
    assert!(t.audit_of("request.approved").await.is_empty());
    // An approver who approved cannot then deny either.
    let a = t.call_slack(t.signed_callback(&t.deny_submission("UALICE0001", &p.id, "changed my mind"))).await;
    assert_eq!(a.json["response_action"], "errors", "{}", a.json);
    assert_eq!(t.request(&p.id).await.status, Status::Pending);
    // A second approver completes it.
    assert_eq!(click(&t, "UBOB000001", APPROVE, &p).await.status, 200);
    assert_eq!(t.request(&p.id).await.status, Status::Approved);
}

both_stores!(
    multi_thread: t13_same_approver_three_clicks_still_pending,
    embedded_t13_same_approver_three_clicks_still_pending,
    dynamodb_t13_same_approver_three_clicks_still_pending
);

// ---- row 14: policy changed after posting --------------------------------------------------------------

async fn t14_approver_removed_after_posting_is_rejected(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    t.slack.set_usergroup("S0SRE00001", &["USRE000001"]);
    let p = t.pending_request().await;
    t.apply_policies(
        &countersign_testkit::app::POLICIES.replace("[UALICE0001, UBOB000001, UCAROL0001]", "[UALICE0001, UCAROL0001]"),
    )
    .await;
    let before = snapshot(&t, &p.id).await;
    assert_eq!(click(&t, "UBOB000001", APPROVE, &p).await.status, 200);
    assert_eq!(click(&t, "UBOB000001", DENY, &p).await.status, 200);
    let a = t.call_slack(t.signed_callback(&t.deny_submission("UBOB000001", &p.id, "no"))).await;
    assert_eq!(a.json["response_action"], "errors", "{}", a.json);
    assert_eq!(t.request(&p.id).await, before.request);
    assert!(t.slack.calls_to("views.open").is_empty());
    assert_eq!(t.audit_of("vote.rejected").await.len(), 3);
    assert!(ephemeral_texts(&t).iter().all(|m| m.contains("not an approver")), "{:?}", ephemeral_texts(&t));
    // Still-listed approvers vote.
    assert_eq!(click(&t, "UALICE0001", APPROVE, &p).await.status, 200);
    assert_eq!(approvals(&t.request(&p.id).await), ["UALICE0001"]);

    // The policy removed altogether: nobody can approve any more.
    let staging_only = countersign_testkit::app::POLICIES.split("  - name: staging-auto").nth(1).unwrap();
    t.apply_policies(&format!("version: 1\npolicies:\n  - name: staging-auto{staging_only}")).await;
    assert_eq!(t.app.stores.policies.list_policies().await.unwrap().len(), 1);
    let before = snapshot(&t, &p.id).await;
    assert_eq!(click(&t, "UCAROL0001", APPROVE, &p).await.status, 200);
    assert_eq!(t.request(&p.id).await, before.request);
    let last = t.audit_of("vote.rejected").await.pop().unwrap();
    assert_eq!(last.details.get("code").map(String::as_str), Some("no_matching_policy"));
    assert!(ephemeral_texts(&t).last().is_some_and(|m| m.contains("nobody can approve")));
}

both_stores!(
    t14_approver_removed_after_posting_is_rejected,
    embedded_t14_approver_removed_after_posting_is_rejected,
    dynamodb_t14_approver_removed_after_posting_is_rejected
);

// ---- row 22: the deny modal ----------------------------------------------------------------------------

async fn t22_non_approver_modal_submission_gets_modal_error(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    t.slack.set_usergroup("S0SRE00001", &["USRE000001"]);
    let p = t.pending_request().await;

    // An approver's Deny click opens the modal with the click's trigger_id; it carries only the request id.
    assert_eq!(click(&t, "UALICE0001", DENY, &p).await.status, 200);
    let opens = t.slack.calls_to("views.open");
    assert_eq!(opens.len(), 1);
    assert_eq!(opens[0].body["trigger_id"], "13345224609.738474920.8088930838d88f008e0");
    assert_eq!(opens[0].body["view"]["private_metadata"], p.id.as_str());
    assert_eq!(t.request(&p.id).await.status, Status::Pending, "opening the dialog decides nothing");

    // A non-approver's submission: a modal error, nothing changes, audited.
    let before = snapshot(&t, &p.id).await;
    let a = t.call_slack(t.signed_callback(&t.deny_submission("UMALLORY01", &p.id, "because"))).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json["response_action"], "errors", "{}", a.json);
    assert!(a.json["errors"]["reason"].as_str().is_some_and(|m| m.contains("not an approver")), "{}", a.json);
    assert_eq!(t.request(&p.id).await, before.request);
    assert_eq!(t.audit().await.len(), before.audit + 1);
    assert_eq!(t.audit_of("vote.rejected").await.pop().unwrap().actor.0, "slack:UMALLORY01");

    // Unsigned or forged submissions never reach it.
    let body = form(&t.deny_submission("UALICE0001", &p.id, "forged"));
    assert_generic_401(&t.call_slack(raw(body.as_bytes(), &[])).await, "unsigned modal");
    // A submission for a request that does not exist, and one whose metadata is more than an id.
    let unknown = countersign_core::domain::RequestId::generate().to_string();
    let a = t.call_slack(t.signed_callback(&t.deny_submission("UALICE0001", &unknown, "no"))).await;
    assert_eq!(a.json["response_action"], "errors", "{}", a.json);
    let mut v = t.deny_submission("UALICE0001", &p.id, "no");
    v["view"]["private_metadata"] = json!({"id": p.id, "user": "UBOB000001"}).to_string().into();
    assert_eq!(t.call_slack(t.signed_callback(&v)).await.status, StatusCode::BAD_REQUEST);
    // A reason is required (the dialog enforces 1 to 500 characters; blank or longer is refused here too).
    for reason in ["   ".to_string(), "x".repeat(501)] {
        let a = t.call_slack(t.signed_callback(&t.deny_submission("UALICE0001", &p.id, &reason))).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.json);
    }
    assert_eq!(t.request(&p.id).await.status, Status::Pending);

    // The approver's submission denies, with the reason recorded.
    let a = t.call_slack(t.signed_callback(&t.deny_submission("UALICE0001", &p.id, "  change freeze  "))).await;
    assert_eq!(a.json, json!({"response_action": "clear"}));
    let r = t.request(&p.id).await;
    assert_eq!(r.status, Status::Denied);
    let denial = r.denial.unwrap();
    assert_eq!((denial.user_id.as_str(), denial.reason.as_str()), ("UALICE0001", "change freeze"));
    let denied = t.audit_of("request.denied").await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].details.get("reason").map(String::as_str), Some("change freeze"));
    // The message shows the outcome, without buttons.
    let m = &t.slack.messages()[0];
    assert!(m.blocks.to_string().contains("change freeze"), "{}", m.blocks);
    assert!(!m.blocks.to_string().contains(APPROVE), "{}", m.blocks);
    // Once decided, further submissions get a modal error.
    let a = t.call_slack(t.signed_callback(&t.deny_submission("UBOB000001", &p.id, "me too"))).await;
    assert_eq!(a.json["response_action"], "errors", "{}", a.json);
    assert_eq!(t.audit_of("request.denied").await.len(), 1);
}

both_stores!(
    t22_non_approver_modal_submission_gets_modal_error,
    embedded_t22_non_approver_modal_submission_gets_modal_error,
    dynamodb_t22_non_approver_modal_submission_gets_modal_error
);

// ---- progress updates ----------------------------------------------------------------------------------

async fn each_accepted_vote_updates_the_message(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    assert_eq!(click(&t, "UALICE0001", APPROVE, &p).await.status, 200);
    let m = t.slack.messages().remove(0);
    assert_eq!(m.updates.len(), 1);
    assert!(m.blocks.to_string().contains("1 of 2 approvals"), "{}", m.blocks);
    assert!(m.blocks.to_string().contains(APPROVE), "buttons stay while pending");
    assert!(!t.request(&p.id).await.notification.update_pending);
    assert_eq!(click(&t, "UBOB000001", APPROVE, &p).await.status, 200);
    let m = t.slack.messages().remove(0);
    assert_eq!(m.updates.len(), 2);
    assert!(!m.blocks.to_string().contains(APPROVE), "no buttons once decided: {}", m.blocks);
    assert!(!m.blocks.to_string().contains(DENY));
    assert!(m.blocks.to_string().to_lowercase().contains("approved"), "{}", m.blocks);
    assert!(!t.request(&p.id).await.notification.update_pending);
}

both_stores!(
    each_accepted_vote_updates_the_message,
    embedded_each_accepted_vote_updates_the_message,
    dynamodb_each_accepted_vote_updates_the_message
);

// ---- row 24: slow Slack --------------------------------------------------------------------------------

async fn t24_slack_hanging_callback_still_answers_fast_and_update_lands_later(kind: StoreKind) {
    // The production per-call timeout, so the bound below is the real one.
    let opts = AppOptions { slack_timeout: DEFAULT_TIMEOUT, ..AppOptions::default() };
    let Some(t) = spawn_app_with_options(kind, opts).await else { return };
    t.slack.set_usergroup("S0SRE00001", &["USRE000001"]);
    let p = t.pending_request().await;

    // users.info answers, chat.update hangs: the vote is recorded and acknowledged in time; the update is owed.
    t.slack.set_behaviour([Behaviour::Ok, Behaviour::Hang]);
    let started = Instant::now();
    let a = click(&t, "UALICE0001", APPROVE, &p).await;
    let took = started.elapsed();
    assert_eq!(a.status, 200, "{}", a.json);
    assert!(took < Duration::from_millis(2500), "the callback took {took:?}");
    let r = t.request(&p.id).await;
    assert_eq!(approvals(&r), ["UALICE0001"]);
    assert!(r.notification.update_pending, "the missed update is queued");
    assert!(t.slack.messages()[0].updates.is_empty());

    // Slack hangs on everything (group lookup, response_url, views.open): still answered in time.
    for (user, action) in [("USRE000001", APPROVE), ("USRE000001", DENY), ("UMALLORY01", APPROVE)] {
        t.slack.set_behaviour([Behaviour::Hang, Behaviour::Hang, Behaviour::Hang]);
        let started = Instant::now();
        let a = click(&t, user, action, &p).await;
        let took = started.elapsed();
        assert_eq!(a.status, 200, "{}", a.json);
        assert!(took < Duration::from_millis(2500), "{user} {action}: the callback took {took:?}");
    }
    t.slack.set_behaviour([]);

    // The sweeper lands the update once it is due.
    let due = t.request(&p.id).await.notification.next_attempt_at;
    if let Some(due) = due {
        t.clock.set(due);
    }
    let rep = t.app.sweeper().run_once().await.unwrap();
    assert_eq!(rep.relayed, 1, "{rep:?}");
    let m = t.slack.messages().remove(0);
    assert_eq!(m.updates.len(), 1);
    assert!(m.blocks.to_string().contains("1 of 2 approvals"), "{}", m.blocks);
    assert!(!t.request(&p.id).await.notification.update_pending);
}

both_stores!(
    t24_slack_hanging_callback_still_answers_fast_and_update_lands_later,
    embedded_t24_slack_hanging_callback_still_answers_fast_and_update_lands_later,
    dynamodb_t24_slack_hanging_callback_still_answers_fast_and_update_lands_later
);

// ---- row 26: no token or secret in the logs of a whole run ---------------------------------------------

async fn t26_full_run_logs_contain_no_token_or_secret(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let (buf, guard) = capture_logs();
    t.slack.set_usergroup("S0SRE00001", &["USRE000001"]);
    let p = t.pending_request().await;
    let q = t.pending_request().await;
    let mut answers: Vec<Value> = Vec::new();
    // Failures of every kind, then the happy paths, then the sweeper.
    answers.push(t.call_slack(signed_with("forged-secret", &now_secs(&t).to_string(), b"payload=%7B%7D")).await.json);
    answers.push(click(&t, "UMALLORY01", APPROVE, &p).await.json);
    t.slack.set_behaviour([Behaviour::Status500]);
    answers.push(click(&t, "UALICE0001", APPROVE, &p).await.json);
    t.slack.set_behaviour([Behaviour::RateLimited(1)]);
    answers.push(click(&t, "USRE000001", APPROVE, &p).await.json);
    answers.push(click(&t, "UALICE0001", DENY, &q).await.json);
    answers.push(t.call_slack(t.signed_callback(&t.deny_submission("UALICE0001", &q.id, "not today"))).await.json);
    let r = t.pending_request().await;
    t.clock.advance_seconds(3600);
    t.app.sweeper().run_once().await.unwrap();
    assert_eq!(t.request(&r.id).await.status, Status::Expired);
    drop(guard);

    let logs = buf.text();
    assert!(logs.contains("slack"), "logs were captured:\n{logs}");
    let audit = serde_json::to_string(&t.audit().await).unwrap();
    let response_url = t.slack.response_url("r1");
    for (what, text) in [("logs", logs.as_str()), ("audit", audit.as_str()), ("answers", &json!(answers).to_string())] {
        assert!(!text.contains("xoxb-"), "{what} contain a bot token");
        assert!(!text.contains(FAKE_BOT_TOKEN), "{what} contain the bot token");
        assert!(!text.contains(SIGNING_SECRET), "{what} contain the signing secret");
        assert!(!text.contains(&response_url), "{what} contain a response_url (a credential)");
    }
}

#[tokio::test]
async fn embedded_t26_full_run_logs_contain_no_token_or_secret() {
    t26_full_run_logs_contain_no_token_or_secret(StoreKind::Embedded).await;
}

#[tokio::test]
async fn dynamodb_t26_full_run_logs_contain_no_token_or_secret() {
    t26_full_run_logs_contain_no_token_or_secret(StoreKind::Dynamodb).await;
}
