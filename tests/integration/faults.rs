//! Dependency faults: DynamoDB cut in the middle of a run, Secrets Manager unreachable, Slack failing in every
//! way it can. Nothing a caller was told succeeded may be lost, nothing may be half-written, and every failure
//! must be the documented `503 unavailable` with `Retry-After`.
//!
//! The DynamoDB outage runs against the test's OWN serialized emulator (`scripts/moto_serial.py`, started with
//! the Python in `COUNTERSIGN_TEST_PYTHON`, else `.venv/bin/python`) behind a TCP proxy the test cuts and
//! restores. moto keeps its data in memory, so killing and restarting it would lose everything; cutting the
//! network path is the outage a Lambda sees, and it drops connections mid-request too.
//!
//! Callbacks while Secrets Manager is unreachable answer 503: that is threat row 5's
//! `slack_interactions::t05_secret_fetch_failure_is_503` and `t05_secret_store_hanging_is_503_in_time`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use axum::http::StatusCode;
use countersign_aws::dynamodb::{create_tables, keys, DynamoStore, TableNames};
use countersign_aws::secrets::SecretsManagerSlackSecrets;
use countersign_core::domain::{ApprovalRequest, AuditDraft, RequestId, Status, Timestamp};
use countersign_core::ports::{Commit, CreateOutcome, RequestStore, StoreError, Stores};
use countersign_slack::fake::{Behaviour, FAKE_APP_ID, FAKE_BOT_TOKEN};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use countersign_testkit::emulator::PrivateEmulator;

use countersign_testkit::app::{
    api_event, spawn_app, spawn_app_on, spawn_app_with_secrets, AppOptions, StoreKind, TestApp, DEPLOY_ARN, POLICIES,
    SIGNING_SECRET,
};

const APPROVE: &str = "countersign_approve";

// ---- the emulator and the proxy ------------------------------------------------------------------------

/// A serialized moto server of our own; `None` (with a notice) when no Python with moto is found outside CI.
async fn start_emulator() -> Option<PrivateEmulator> {
    PrivateEmulator::start("scripts/moto_serial.py", "a fault test").await
}

/// A TCP proxy on 127.0.0.1 to `upstream` that can be cut (live connections dropped mid-stream, new ones
/// closed at once) and restored.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let live: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (up2, live2) = (up.clone(), live.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                live2.lock().unwrap().push(h.abort_handle());
            }
        });
        Self { addr, up, live, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for h in self.live.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// SDK config for `endpoint` that fails fast while it is down: short timeouts, two attempts.
async fn fast_failing_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "faults"))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(500))
                .operation_attempt_timeout(Duration::from_secs(3))
                .operation_timeout(Duration::from_secs(6))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(2).with_initial_backoff(Duration::from_millis(20)))
        .load()
        .await
}

/// SDK config for the test's own direct calls to the emulator: generous timeouts (scans of a busy serial
/// emulator are slow).
async fn patient_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "faults"))
        .timeout_config(TimeoutConfig::builder().operation_timeout(Duration::from_secs(60)).build())
        .load()
        .await
}

// ---- (a) DynamoDB cut in the middle of a run of 500 (or COUNTERSIGN_FAULT_RUN) creates ------------------

const BULK_POLICY: &str = r#"
  - name: bulk-migrate
    principals: [arn:aws:iam::111122223333:role/github-deploy]
    actions: [migrate]
    environments: [production]
    approvers:
      users: [UALICE0001]
    required_approvals: 1
    channel: C0APPROVALS
    max_ttl: 1h
    max_pending: 1000
"#;

/// Calls in the run: 500, as the issue asks (`COUNTERSIGN_FAULT_RUN` overrides it). About 4 min in the
/// debug test build on a 2-core machine (2026-12-03: 237 s with the emulator's transactions on an undo log,
/// scripts/moto_undo_log.py, and the store's appends queued per process; 515 s before).
fn run_size() -> usize {
    std::env::var("COUNTERSIGN_FAULT_RUN").ok().and_then(|v| v.parse().ok()).unwrap_or(500)
}
const CONCURRENCY: usize = 8;

fn bulk_body(i: usize) -> String {
    json!({"action": "migrate", "environment": "production", "reason": format!("batch {i}"),
           "idempotency_key": format!("bulk-{i:04}")})
    .to_string()
}

/// Retries the CLI makes by default (`countersign request --retries`).
const CLIENT_RETRIES: u32 = 4;

/// One create through the router: (status, body, Retry-After in seconds).
async fn create_once(router: axum::Router, i: usize) -> (StatusCode, Value, Option<u64>) {
    let req = api_event("POST", "/v1/requests", Some(&bulk_body(i)), Some(DEPLOY_ARN));
    let (parts, body) = req.into_parts();
    let req = axum::http::Request::from_parts(parts, axum::body::Body::from(body.to_vec()));
    let resp = router.oneshot(req).await.expect("router is infallible");
    let status = resp.status();
    let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), retry_after)
}

/// Ids of the requests stored in the requests table, read behind the app's back.
async fn stored_request_ids(client: &aws_sdk_dynamodb::Client, table: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut start = None;
    loop {
        let out = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan the requests table");
        for item in out.items() {
            if item.get(keys::SK).and_then(|v| v.as_s().ok()).map(String::as_str) == Some(keys::REQUEST_SK) {
                let pk = item.get(keys::PK).and_then(|v| v.as_s().ok()).expect("pk");
                ids.insert(pk.clone());
            }
        }
        match out.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_cut_mid_run_loses_nothing_and_half_writes_nothing() {
    let Some(emu) = start_emulator().await else { return };
    let proxy = Proxy::start(emu.addr).await;
    // Tables are made directly on the emulator; the app reaches it only through the proxy.
    let direct = aws_sdk_dynamodb::Client::new(&patient_config(&emu.url()).await);
    let tables = TableNames::with_prefix("cs-faults");
    create_tables(&direct, &tables).await.expect("create tables");
    let via_proxy = aws_sdk_dynamodb::Client::new(&fast_failing_config(&proxy.url()).await);
    let store = Arc::new(DynamoStore::new(via_proxy, tables.clone()));
    let t = spawn_app_on(Stores::from_one(store), Box::new(()), AppOptions::default()).await;
    t.apply_policies(&format!("{POLICIES}{BULK_POLICY}")).await;

    let (run, cut_after) = (run_size(), run_size() * 3 / 10);
    let started = std::time::Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let outage = {
        let (done, up, live) = (done.clone(), proxy.up.clone(), proxy.live.clone());
        tokio::spawn(async move {
            while done.load(Ordering::SeqCst) < cut_after {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            up.store(false, Ordering::SeqCst);
            for h in live.lock().unwrap().drain(..) {
                h.abort();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            up.store(true, Ordering::SeqCst);
        })
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..run {
        let (router, permits, done) = (t.app.request_api(), permits.clone(), done.clone());
        tasks.spawn(async move {
            let _p = permits.acquire_owned().await.unwrap();
            let out = create_once(router, i).await;
            done.fetch_add(1, Ordering::SeqCst);
            (i, out)
        });
    }
    let mut created: BTreeMap<usize, String> = BTreeMap::new();
    let mut unavailable: Vec<usize> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (i, (status, body, retry_after)) = r.unwrap();
        match status {
            // 200: the SDK's retry of a write whose first attempt landed met the idempotency record and
            // answered with the request the first attempt made. Still a success the caller can rely on.
            StatusCode::CREATED | StatusCode::OK => {
                created.insert(i, body["id"].as_str().expect("an id").to_string());
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body["error"]["code"], "unavailable", "call {i}: {body}");
                assert!(retry_after.is_some_and(|s| s > 0), "call {i}: a 503 without Retry-After");
                unavailable.push(i);
            }
            other => panic!("call {i}: {other} is neither 2xx nor 503: {body}"),
        }
    }
    outage.await.unwrap();
    proxy.restore();
    eprintln!(
        "DynamoDB cut after {cut_after} of {run}: {} created, {} unavailable, in {:?}",
        created.len(),
        unavailable.len(),
        started.elapsed()
    );
    assert!(!unavailable.is_empty(), "the outage was never seen: the test proved nothing");
    assert!(created.len() >= cut_after, "calls before the cut must have succeeded");

    // Every 2xx is stored, readable and audited.
    let stored = stored_request_ids(&direct, &tables.requests).await;
    let audit = t.audit().await;
    countersign_core::domain::audit::verify_chain(&audit)
        .expect("the audit chain verifies: no gap, nothing half-written");
    let created_events: BTreeMap<String, usize> =
        audit.iter().filter(|e| e.kind.as_str() == "request.created").fold(BTreeMap::new(), |mut m, e| {
            *m.entry(e.request_id.map(|r| r.to_string()).unwrap_or_default()).or_default() += 1;
            m
        });
    for (i, id) in &created {
        assert!(
            stored.iter().any(|pk| pk.ends_with(id.as_str())),
            "call {i}: {id} was answered 2xx but is not in the table"
        );
        assert_eq!(created_events.get(id), Some(&1), "call {i}: {id} has no (or more than one) request.created");
        let got = t.call_api(api_event("GET", &format!("/v1/requests/{id}"), None, Some(DEPLOY_ARN))).await;
        assert_eq!(got.status, 200, "call {i}: {id} is not readable: {}", got.json);
    }
    // A 503 whose write landed before the connection dropped is the one ambiguity a network cut leaves; the
    // client's retry with the same idempotency key resolves it. Every stored request is a complete one.
    assert_eq!(stored.len(), created_events.len(), "requests and request.created records differ in number");
    // Issue 19: the decision events owed are exactly the event-worthy records of the chain, each with the
    // request it was written with: no change without its outbox entry, no entry without its change.
    let owed = t.app.stores.outbox.due(usize::MAX).await.expect("the outbox reads");
    let eventful: Vec<&countersign_core::domain::AuditEvent> =
        audit.iter().filter(|e| countersign_core::domain::events::event_of(e.kind).is_some()).collect();
    assert_eq!(owed.iter().map(|e| &e.record).collect::<Vec<_>>(), eventful, "outbox entries = eventful records");
    assert!(owed.iter().all(|e| e.record.request_id == Some(e.request.id)));
    // Each 503 is retried as the CLI does (`--retries 4`, honouring Retry-After), CONCURRENCY at a time.
    let mut retries = tokio::task::JoinSet::new();
    for &i in &unavailable {
        let (router, permits) = (t.app.request_api(), permits.clone());
        retries.spawn(async move {
            let _p = permits.acquire_owned().await.unwrap();
            for attempt in 0..=CLIENT_RETRIES {
                let (status, body, retry_after) = create_once(router.clone(), i).await;
                match status {
                    StatusCode::SERVICE_UNAVAILABLE if attempt < CLIENT_RETRIES => {
                        assert_eq!(body["error"]["code"], "unavailable", "retry of call {i}: {body}");
                        let wait = retry_after.expect("a 503 carries Retry-After");
                        tokio::time::sleep(Duration::from_secs(wait)).await;
                    }
                    _ => return (i, attempt, status, body),
                }
            }
            unreachable!("the last attempt returns")
        });
    }
    let (mut landed_anyway, mut retried_again) = (0, 0);
    while let Some(r) = retries.join_next().await {
        let (i, attempt, status, body) = r.unwrap();
        retried_again += usize::from(attempt > 0);
        match status {
            StatusCode::OK => landed_anyway += 1,
            StatusCode::CREATED => {}
            other => panic!("retry of call {i} (attempt {}): {other}: {body}", attempt + 1),
        }
    }
    eprintln!("{retried_again} retries met another 503 and waited out its Retry-After");
    eprintln!(
        "of the {} unavailable calls, {landed_anyway} had landed anyway ({:?})",
        unavailable.len(),
        started.elapsed()
    );
    // A write whose client gave up can still land afterwards (the serialized emulator drains its backlog), so
    // a retry may find a request the scan above did not: never more than there were 503s.
    assert!(landed_anyway <= unavailable.len());
    let stored = stored_request_ids(&direct, &tables.requests).await;
    assert_eq!(stored.len(), run, "after retries every call made exactly one request");
    let audit = t.audit().await;
    countersign_core::domain::audit::verify_chain(&audit).expect("the audit chain verifies after the retries");
    assert_eq!(audit.iter().filter(|e| e.kind.as_str() == "request.created").count(), run);

    // And each request ends with exactly one Slack message: the relay posts what the cut interrupted, and
    // adopts (never re-posts) a message whose post landed but whose (channel, ts) the cut kept from the store.
    let ids: Vec<String> = stored_request_ids(&direct, &tables.requests)
        .await
        .into_iter()
        .map(|pk| pk.rsplit('#').next().unwrap_or(&pk).to_string())
        .collect();
    for _ in 0..20 {
        // Past any post lease or back-off the cut left behind (well inside the requests' 1 h TTL).
        t.clock.advance_seconds(61);
        t.app.sweeper().run_once().await.expect("sweeper runs");
        let mut owed = false;
        for id in &ids {
            let n = t.request(id).await.notification;
            owed |= n.ts.is_none() || n.update_pending;
        }
        if !owed {
            break;
        }
    }
    let per_request = request_messages(&t);
    let total: usize = per_request.values().map(Vec::len).sum();
    let adopted = t
        .audit_of("slack.posted")
        .await
        .iter()
        .filter(|e| e.details.get("adopted").map(String::as_str) == Some("true"))
        .count();
    eprintln!(
        "{total} request messages in Slack for {run} requests, {adopted} adopted by the relay ({:?})",
        started.elapsed()
    );
    for id in &ids {
        let r = t.request(id).await;
        let ts = r.notification.ts.clone().unwrap_or_else(|| panic!("{id} was never posted"));
        assert_eq!(per_request.get(id.as_str()), Some(&vec![ts]), "{id}: not exactly one message, its recorded one");
    }
    assert_eq!(total, run, "exactly one Slack message per request, no orphans");
}

/// The product's top-level messages in the fake Slack, by the request id their metadata names.
fn request_messages(t: &TestApp) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in t.slack.messages() {
        if m.thread_ts.is_some() || m.app_id != FAKE_APP_ID {
            continue;
        }
        let md = m.metadata.as_ref().unwrap_or_else(|| panic!("message {} carries no metadata", m.ts));
        assert_eq!(md["event_type"], "countersign_request", "{md}");
        let id = md["event_payload"]["request_id"].as_str().expect("a request id").to_string();
        out.entry(id).or_default().push(m.ts.clone());
    }
    out
}

// ---- (a') the store fails right after a successful post: the relay adopts that message -----------------

/// A request store that refuses, while `armed`, every write recording a Slack post (the moment between
/// `chat.postMessage` succeeding and its (channel, ts) being stored), as an outage at that instant would.
struct RecordingPostFails {
    inner: Arc<dyn RequestStore>,
    armed: AtomicBool,
}

#[async_trait::async_trait]
impl RequestStore for RecordingPostFails {
    async fn create_request(
        &self,
        request: &ApprovalRequest,
        events: Vec<AuditDraft>,
        max_pending: u32,
    ) -> Result<CreateOutcome, StoreError> {
        self.inner.create_request(request, events, max_pending).await
    }
    async fn get_request(&self, id: &RequestId) -> Result<Option<ApprovalRequest>, StoreError> {
        self.inner.get_request(id).await
    }
    async fn commit(&self, commit: Commit) -> Result<Vec<countersign_core::domain::AuditEvent>, StoreError> {
        if self.armed.load(Ordering::SeqCst) && commit.request.notification.ts.is_some() {
            return Err(StoreError::unavailable(std::io::Error::other("injected: store cut after the post")));
        }
        self.inner.commit(commit).await
    }
    async fn list_pending(&self, limit: usize) -> Result<Vec<ApprovalRequest>, StoreError> {
        self.inner.list_pending(limit).await
    }
    async fn list_notification_due(&self, now: Timestamp, limit: usize) -> Result<Vec<ApprovalRequest>, StoreError> {
        self.inner.list_notification_due(now, limit).await
    }
    async fn list_by_principal(
        &self,
        principal: &str,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<ApprovalRequest>, StoreError> {
        self.inner.list_by_principal(principal, since, limit).await
    }
}

/// The real store of `kind` with its request writes behind [`RecordingPostFails`].
async fn store_cut_after_posts(kind: StoreKind) -> Option<(Stores, Arc<RecordingPostFails>, Box<dyn Send + Sync>)> {
    let (stores, keep): (Stores, Box<dyn Send + Sync>) = match kind {
        StoreKind::Embedded => {
            let (dir, store) = countersign_testkit::stores::embedded();
            (Stores::from_one(store), Box::new(dir))
        }
        StoreKind::Dynamodb => (Stores::from_one(countersign_testkit::stores::dynamo().await?.0), Box::new(())),
    };
    let cut = Arc::new(RecordingPostFails { inner: stores.requests.clone(), armed: AtomicBool::new(false) });
    Some((Stores { requests: cut.clone(), ..stores }, cut, keep))
}

/// Creates a request while the store refuses to record its post: (request id, ts of the unrecorded message).
async fn create_with_the_post_unrecorded(t: &TestApp, cut: &RecordingPostFails) -> (String, String) {
    cut.armed.store(true, Ordering::SeqCst);
    let a = t.create(DEPLOY_ARN, &json!({"action": "deploy", "environment": "production", "reason": "cut"})).await;
    assert_eq!(a.status, 201, "the request is durable, so the caller gets its 201: {}", a.json);
    let id = a.json["id"].as_str().unwrap().to_string();
    cut.armed.store(false, Ordering::SeqCst);
    assert!(t.request(&id).await.notification.ts.is_none(), "the cut kept the post from being recorded");
    let first = request_messages(t);
    assert_eq!(first.get(&id).map(Vec::len), Some(1), "the post itself reached Slack");
    let orphan = first[&id][0].clone();
    (id, orphan)
}

async fn relay_adopts_the_message_a_cut_off_post_left_and_never_posts_twice(kind: StoreKind) {
    let Some((stores, cut, keep)) = store_cut_after_posts(kind).await else { return };
    let t = spawn_app_on(stores, keep, AppOptions::default()).await;
    let (id, orphan) = create_with_the_post_unrecorded(&t, &cut).await;
    // Another app copies our metadata into the channel: never adopted (its message is not ours to update).
    let copycat = json!({"event_type": "countersign_request", "event_payload": {"request_id": id}});
    t.slack.inject_message("C0APPROVALS", "A0OTHERAPP", "copycat", Some(copycat));

    // The relay's search fails once (Slack 500): that is a failed attempt, retried later, never a blind post.
    t.slack.set_behaviour([Behaviour::Status500]);
    t.clock.advance_seconds(61);
    t.app.sweeper().run_once().await.expect("sweeper runs");
    assert_eq!(t.slack.calls_to("chat.postMessage").len(), 1, "no second post while the search could not run");
    assert!(t.request(&id).await.notification.ts.is_none());
    assert_eq!(t.audit_of("slack.post_failed").await.len(), 1);

    relay_until_quiet(&t, std::slice::from_ref(&id)).await;
    let r = t.request(&id).await;
    assert_eq!(r.notification.ts.as_deref(), Some(orphan.as_str()), "the relay adopted the earlier message");
    assert_eq!(request_messages(&t).get(&id), Some(&vec![orphan.clone()]), "exactly one message for the request");
    assert_eq!(t.slack.calls_to("chat.postMessage").len(), 1, "chat.postMessage was called once in all");
    let history = t.slack.calls_to("conversations.history");
    assert_eq!(history.last().unwrap().body["include_all_metadata"], "true");
    let posted = t.audit_of("slack.posted").await;
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(posted[0].details.get("adopted").map(String::as_str), Some("true"));
    assert_eq!(posted[0].details.get("ts"), Some(&orphan));

    // It is the request's message now: updated in place, and its buttons count.
    for user in ["UALICE0001", "UBOB000001"] {
        let a = t.call_slack(t.signed_callback(&t.click(user, APPROVE, &id, "C0APPROVALS", &orphan))).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    }
    relay_until_quiet(&t, std::slice::from_ref(&id)).await;
    assert_eq!(t.request(&id).await.status, Status::Approved);
    let m = t.slack.messages().into_iter().find(|m| m.ts == orphan).unwrap();
    assert!(m.blocks.to_string().contains("*Approved*"), "{}", m.blocks);
    assert_eq!(request_messages(&t).get(&id).map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_relay_adopts_the_message_a_cut_off_post_left_and_never_posts_twice() {
    relay_adopts_the_message_a_cut_off_post_left_and_never_posts_twice(StoreKind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_relay_adopts_the_message_a_cut_off_post_left_and_never_posts_twice() {
    relay_adopts_the_message_a_cut_off_post_left_and_never_posts_twice(StoreKind::Dynamodb).await;
}

/// An install whose token lacks `channels:history` cannot search: the relay chooses availability and posts
/// (a request without a message could never be approved); the orphan's buttons are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_without_the_history_scope_still_posts_and_the_orphan_cannot_vote() {
    let Some((stores, cut, keep)) = store_cut_after_posts(StoreKind::Embedded).await else { return };
    let t = spawn_app_on(stores, keep, AppOptions::default()).await;
    t.slack.set_history_scope(false);
    let (id, orphan) = create_with_the_post_unrecorded(&t, &cut).await;
    relay_until_quiet(&t, std::slice::from_ref(&id)).await;
    let r = t.request(&id).await;
    let ts = r.notification.ts.clone().unwrap();
    assert_ne!(ts, orphan, "posted anew");
    assert_eq!(request_messages(&t)[&id].len(), 2, "the documented cost of a missing scope: one orphan");
    let posted = t.audit_of("slack.posted").await;
    assert_eq!(posted[0].details.get("earlier_post").map(String::as_str), Some("unavailable"));
    let a = t.call_slack(t.signed_callback(&t.click("UALICE0001", APPROVE, &id, "C0APPROVALS", &orphan))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert!(t.request(&id).await.approvals.is_empty(), "a click on the orphan is not a vote");
}

/// A channel too busy to search to the end within the bound (10 pages of 100) is treated like a missing
/// scope: the relay posts rather than hold the request's message back for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_posts_when_the_channel_is_too_busy_to_search_to_the_end() {
    let Some((stores, cut, keep)) = store_cut_after_posts(StoreKind::Embedded).await else { return };
    let t = spawn_app_on(stores, keep, AppOptions::default()).await;
    let (id, orphan) = create_with_the_post_unrecorded(&t, &cut).await;
    for i in 0..1000 {
        t.slack.inject_message("C0APPROVALS", "A0OTHERAPP", &format!("chatter {i}"), None);
    }
    relay_until_quiet(&t, std::slice::from_ref(&id)).await;
    assert_eq!(t.slack.calls_to("conversations.history").len(), 10, "the search is bounded");
    assert_ne!(t.request(&id).await.notification.ts.as_deref(), Some(orphan.as_str()));
    let posted = t.audit_of("slack.posted").await;
    assert_eq!(posted[0].details.get("earlier_post").map(String::as_str), Some("unavailable"));
}

// ---- (b) Secrets Manager unreachable: the request API keeps posting with the cached bot token ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_manager_cut_request_api_still_posts_with_the_cached_token() {
    let Some(emu) = start_emulator().await else { return };
    let proxy = Proxy::start(emu.addr).await;
    let direct = aws_sdk_secretsmanager::Client::new(&fast_failing_config(&emu.url()).await);
    direct
        .create_secret()
        .name("countersign/slack")
        .secret_string(json!({"bot_token": FAKE_BOT_TOKEN, "signing_secret": SIGNING_SECRET}).to_string())
        .send()
        .await
        .expect("create the secret");
    let via_proxy = aws_sdk_secretsmanager::Client::new(&fast_failing_config(&proxy.url()).await);
    // TTL zero: every use wants a fresh read, so only the stale-token fallback can keep posting.
    let secrets = SecretsManagerSlackSecrets::new(via_proxy, "countersign/slack".into(), Duration::ZERO);
    let Some(t) = spawn_app_with_secrets(StoreKind::Embedded, Arc::new(secrets)).await else { return };
    // Warm the cache: one request posted while Secrets Manager answers.
    let warm = t.pending_request().await;
    assert!(!warm.ts.is_empty());

    proxy.cut();
    let a = t.create(DEPLOY_ARN, &json!({"action": "deploy", "environment": "production", "reason": "cut"})).await;
    assert_eq!(a.status, 201, "{}", a.json);
    let id = a.json["id"].as_str().unwrap();
    let r = t.request(id).await;
    assert!(r.notification.ts.is_some(), "the request was not posted with the cached bot token");
    assert_eq!(t.slack.messages().len(), 2);
    // Callbacks, which need the signing secret fresh, answer 503 meanwhile (row 5).
    let click =
        t.click("UALICE0001", APPROVE, id, r.notification.channel.as_str(), r.notification.ts.as_deref().unwrap());
    let answer = t.call_slack(t.signed_callback(&click)).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.json);
    assert!(answer.headers.contains_key("retry-after"));
    proxy.restore();
    let answer = t.call_slack(t.signed_callback(&click)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.json);
}

// ---- (c) Slack 500, 429, hanging, then OK: one message per request, every update applied -------------

async fn slack_failing_every_way_ends_with_one_message_each_and_every_update(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    // Posts: the first three requests meet a 500, a 429 and a hang; the rest of Slack answers.
    t.slack.set_behaviour([Behaviour::Status500, Behaviour::RateLimited(1), Behaviour::Hang]);
    let mut ids = Vec::new();
    for i in 0..3 {
        let body = json!({"action": "deploy", "environment": "production", "reason": format!("r{i}")});
        let a = t.create(DEPLOY_ARN, &body).await;
        assert_eq!(a.status, 201, "{}", a.json);
        ids.push(a.json["id"].as_str().unwrap().to_string());
    }
    // The relay posts what failed. Rate limits and hangs may need more than one pass.
    relay_until_quiet(&t, &ids).await;
    assert_eq!(t.slack.messages().len(), 3, "exactly one message per request");

    // Votes meet the same faults on their message updates. Each approver's first vote reads their account
    // (users.info, row 34; cached after that), which answers.
    t.slack.set_behaviour([
        Behaviour::Ok,
        Behaviour::Status500,
        Behaviour::Ok,
        Behaviour::RateLimited(1),
        Behaviour::Hang,
        Behaviour::Status500,
    ]);
    for id in &ids {
        let r = t.request(id).await;
        let (ch, ts) = (r.notification.channel.to_string(), r.notification.ts.clone().unwrap());
        for user in ["UALICE0001", "UBOB000001"] {
            let a = t.call_slack(t.signed_callback(&t.click(user, APPROVE, id, &ch, &ts))).await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.json);
        }
    }
    relay_until_quiet(&t, &ids).await;
    let messages = t.slack.messages();
    assert_eq!(messages.len(), 3, "still exactly one message per request");
    for id in &ids {
        let r = t.request(id).await;
        assert_eq!(r.status, Status::Approved);
        let m = messages.iter().find(|m| Some(&m.ts) == r.notification.ts.as_ref()).expect("its message");
        let blocks = m.blocks.to_string();
        assert!(!blocks.contains(APPROVE), "{id}: the final update (no buttons) was not applied: {blocks}");
        assert!(blocks.contains("*Approved*"), "{id}: {blocks}");
        assert!(!r.notification.update_pending, "{id}: an update is still owed");
    }
}

/// Runs the sweeper's relay (advancing the clock past any back-off) until nothing is owed.
async fn relay_until_quiet(t: &TestApp, ids: &[String]) {
    for _ in 0..30 {
        t.clock.advance_seconds(61);
        t.app.sweeper().run_once().await.expect("sweeper runs");
        let mut owed = false;
        for id in ids {
            let r = t.request(id).await;
            owed |= r.notification.ts.is_none() || r.notification.update_pending;
        }
        if !owed {
            return;
        }
    }
    panic!("the relay never caught up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_slack_failing_every_way_ends_with_one_message_each_and_every_update() {
    slack_failing_every_way_ends_with_one_message_each_and_every_update(StoreKind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_slack_failing_every_way_ends_with_one_message_each_and_every_update() {
    slack_failing_every_way_ends_with_one_message_each_and_every_update(StoreKind::Dynamodb).await;
}
