//! End-to-end load, in process: N clients create approval requests through the request API router and M
//! approvers vote on them through signed Slack callbacks on the Slack interactions router — the same routers,
//! services, Slack client and stores the Lambdas run (`countersign_lambda::app::App`), driven with
//! `tower::ServiceExt::oneshot` and API Gateway REST proxy events, as `lambda_http` hands them over. Slack is the
//! fake Web API on 127.0.0.1 (every create posts a message, every vote updates it, over real HTTP).
//!
//!   cargo bench --bench load -- [--store embedded|dynamodb] [--clients N] [--approvers M] [--seconds S]
//!                               [--slack http|instant] [--json PATH]
//!
//! `--slack instant` swaps the Slack notifier for one that renders the Block Kit message (as the real one does
//! before it sends it) and answers at once, with no HTTP: what is left is Countersign's own work per call
//! (SigV4 identity, signature verification, payload parsing, policy selection and authorization, the
//! conditional writes with their audit records, rendering). Only this benchmark does that; every test talks
//! to the fake Slack over real HTTP.
//!
//! `--store dynamodb` needs the emulator (`AWS_ENDPOINT_URL=http://127.0.0.1:PORT`, scripts/moto_serial.py).
//! Without `--bench` (as under `cargo test --benches`) it runs a one-second smoke on the embedded store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use countersign_aws::dynamodb::{create_tables, DynamoStore, TableNames};
use countersign_core::domain::policy::parse_policies;
use countersign_core::domain::{Actor, ApprovalRequest, RequestId, SlackAccount, SlackGroupId, SlackUserId, Timestamp};
use countersign_core::ports::{
    Clock, MessageContext, Notifier, NotifyError, PostedMessage, SecretString, Stores, SystemClock,
};
use countersign_core::service::policies;
use countersign_core::service::requests::RequestSettings;
use countersign_lambda::app::{App, Parts};
use countersign_lambda::http::slack::SlackIdentity;
use countersign_local::StaticSlackSecrets;
use countersign_slack::fake::{FakeSlack, FAKE_BOT_TOKEN};
use countersign_slack::notifier;
use countersign_slack::signature::sign;
use countersign_sqlite::EmbeddedStore;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Mutex};
use tower::ServiceExt;

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const TEAM_ID: &str = "T0TEAM0001";
const APP_ID: &str = "A0APP00001";
const CALLER: &str = "arn:aws:sts::111122223333:assumed-role/github-deploy/load";
const APPROVERS: usize = 16;

struct Opts {
    store: String,
    clients: usize,
    approvers: usize,
    seconds: u64,
    slack: String,
    json: Option<String>,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let get = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let num = |name: &str, d: u64| get(name).map(|v| v.parse().expect("a number")).unwrap_or(d);
    Opts {
        store: get("--store").unwrap_or_else(|| "embedded".into()),
        clients: num("--clients", if bench { 8 } else { 2 }) as usize,
        approvers: (num("--approvers", if bench { 4 } else { 2 }) as usize).clamp(2, APPROVERS),
        seconds: num("--seconds", if bench { 10 } else { 1 }),
        slack: get("--slack").unwrap_or_else(|| "http".into()),
        json: get("--json"),
    }
}

/// Slack that answers at once (see the module docs): renders the message as `SlackNotifier` does, then
/// hands back a fresh ts without sending anything.
#[derive(Default)]
struct InstantSlack {
    next_ts: std::sync::atomic::AtomicU64,
}

impl InstantSlack {
    /// The message exactly as `SlackNotifier` builds it before sending, serialized as it would be sent.
    fn render(ctx: &MessageContext<'_>) -> usize {
        std::hint::black_box(notifier::render(ctx).to_string().len())
    }
}

#[async_trait::async_trait]
impl Notifier for InstantSlack {
    async fn post_request(&self, ctx: &MessageContext<'_>) -> Result<PostedMessage, NotifyError> {
        Self::render(ctx);
        let n = self.next_ts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(PostedMessage { channel: ctx.request.notification.channel.to_string(), ts: format!("1700000000.{n:06}") })
    }
    async fn find_request_message(
        &self,
        _request: &ApprovalRequest,
        _since: Timestamp,
    ) -> Result<Option<PostedMessage>, NotifyError> {
        Ok(None)
    }
    async fn update_request(&self, ctx: &MessageContext<'_>, _posted: &PostedMessage) -> Result<(), NotifyError> {
        Self::render(ctx);
        Ok(())
    }
    async fn remind(&self, _ctx: &MessageContext<'_>, _posted: &PostedMessage) -> Result<(), NotifyError> {
        Ok(())
    }
    async fn group_members(&self, _group: &SlackGroupId) -> Result<Vec<SlackUserId>, NotifyError> {
        Ok(Vec::new())
    }
    /// Every voter is an active member of the bench's workspace (as the fake Slack's default users are).
    async fn user_account(&self, user: &SlackUserId) -> Result<SlackAccount, NotifyError> {
        Ok(SlackAccount { id: user.to_string(), team_id: TEAM_ID.into(), ..SlackAccount::default() })
    }
}

fn policy_yaml() -> String {
    let users: Vec<String> = (0..APPROVERS).map(|i| format!("UAPPR{i:05}")).collect();
    format!(
        "version: 1\npolicies:\n  - name: deploy-production\n    principals: [arn:aws:iam::111122223333:role/github-deploy]\n    \
         actions: [deploy]\n    environments: [production]\n    approvers:\n      users: [{}]\n    \
         required_approvals: 2\n    channel: C0APPROVALS\n    max_ttl: 1h\n    max_pending: 1000\n",
        users.join(", ")
    )
}

async fn stores(kind: &str) -> (Stores, Box<dyn Send + Sync>) {
    match kind {
        "embedded" => {
            let dir = tempfile::tempdir().expect("temporary directory");
            let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open embedded store"));
            (Stores::from_one(store), Box::new(dir))
        }
        "dynamodb" => {
            let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("--store dynamodb needs AWS_ENDPOINT_URL");
            assert!(endpoint.starts_with("http://127.0.0.1"), "the emulator must be on 127.0.0.1");
            let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url(endpoint)
                .region(aws_config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("t", "t", None, None, "bench"))
                .load()
                .await;
            let client = aws_sdk_dynamodb::Client::new(&config);
            let tables = TableNames::with_prefix(&format!("cs-bench-{}", ulid::Ulid::new().to_string().to_lowercase()));
            create_tables(&client, &tables).await.expect("create tables");
            (Stores::from_one(Arc::new(DynamoStore::new(client, tables))), Box::new(()))
        }
        other => panic!("unknown store {other:?}"),
    }
}

/// POST /v1/requests as API Gateway (REST, AWS_IAM) delivers it, converted as `lambda_http::run` does.
fn create_event(fixture: &Value, n: u64) -> Request<Body> {
    let mut ev = fixture.clone();
    ev["httpMethod"] = "POST".into();
    ev["requestContext"]["httpMethod"] = "POST".into();
    ev["path"] = "/v1/requests".into();
    ev["requestContext"]["path"] = "/Prod/v1/requests".into();
    ev["body"] = json!({"action": "deploy", "environment": "production", "reason": format!("load test {n}"),
                        "details": {"commit": "0123456789abcdef", "pipeline": "load"}})
    .to_string()
    .into();
    ev["requestContext"]["identity"]["userArn"] = CALLER.into();
    ev["requestContext"]["identity"]["accountId"] = "111122223333".into();
    let req = lambda_http::request::from_str(&ev.to_string()).expect("a valid API Gateway event");
    let (parts, body) = req.into_parts();
    Request::from_parts(parts, Body::from(body.to_vec()))
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn approve_callback(slack: &FakeSlack, user: &str, id: &str, channel: &str, ts: &str) -> Request<Body> {
    let payload = json!({
        "type": "block_actions", "api_app_id": APP_ID,
        "team": {"id": TEAM_ID, "domain": "example"}, "enterprise": null,
        "user": {"id": user, "username": user.to_lowercase(), "team_id": TEAM_ID},
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": false},
        "channel": {"id": channel, "name": "approvals"},
        "message": {"ts": ts, "type": "message"},
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "response_url": slack.response_url("r1"),
        "actions": [{"type": "button", "action_id": "countersign_approve", "block_id": "countersign_actions",
                     "value": id, "action_ts": "1795621462.000100",
                     "text": {"type": "plain_text", "text": "Approve"}}]
    });
    let form = format!("payload={}", urlencode(&payload.to_string()));
    let ts_header = SystemClock.now().unix_seconds().to_string();
    let sig = sign(SIGNING_SECRET.as_bytes(), &ts_header, form.as_bytes());
    Request::builder()
        .method("POST")
        .uri("/slack/interactions")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts_header)
        .header("x-slack-signature", sig)
        .body(Body::from(form))
        .expect("request builds")
}

#[derive(Default)]
struct Samples {
    create: Vec<Duration>,
    callback: Vec<Duration>,
    errors: Vec<String>,
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let o = opts();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run(o));
}

async fn run(o: Opts) {
    std::env::set_var("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true");
    let (stores, _keep) = stores(&o.store).await;
    let slack = FakeSlack::start().await.expect("fake Slack starts");
    let mut app = App::build(Parts {
        stores,
        clock: Arc::new(SystemClock),
        secrets: Arc::new(StaticSlackSecrets {
            bot_token: SecretString::new(FAKE_BOT_TOKEN),
            signing_secrets: vec![("AWSCURRENT".into(), SecretString::new(SIGNING_SECRET))],
        }),
        slack_api_base_url: slack.base_url(),
        slack_timeout: Duration::from_secs(2),
        settings: RequestSettings::default(),
        slack_identity: SlackIdentity { app_id: APP_ID.into(), team_id: TEAM_ID.into() },
        receipts: countersign_testkit::app::local_receipts(),
    })
    .expect("app builds");
    match o.slack.as_str() {
        "http" => {}
        "instant" => app.notifier = Arc::new(InstantSlack::default()),
        other => panic!("unknown --slack {other:?} (http or instant)"),
    }
    let desired = parse_policies(&policy_yaml()).expect("valid policies");
    let plan = policies::plan(&[], &desired);
    policies::apply(app.stores.policies.as_ref(), &plan, &Actor::cli("bench"), SystemClock.now()).await.unwrap();

    let fixture: Value = serde_json::from_str(include_str!("../tests/fixtures/apigw/rest-iam-request.json")).unwrap();
    let fixture = Arc::new(fixture);
    let api = app.request_api();
    let slack_router = app.slack_interactions();
    let slack = Arc::new(slack);
    let samples = Arc::new(std::sync::Mutex::new(Samples::default()));
    // Bounded: when approvers fall behind, creators wait (outside the timed section), so the rate is sustained.
    let (tx, rx) = mpsc::channel::<(String, String, String)>(64);
    let rx = Arc::new(Mutex::new(rx));
    let started = Instant::now();
    let stop = started + Duration::from_secs(o.seconds);
    let approved = Arc::new(std::sync::atomic::AtomicU64::new(0));

    let mut tasks = Vec::new();
    for c in 0..o.clients {
        let (api, fixture, samples, tx, app) = (api.clone(), fixture.clone(), samples.clone(), tx.clone(), app.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = c as u64 * 1_000_000;
            while Instant::now() < stop {
                n += 1;
                let req = create_event(&fixture, n);
                let t = Instant::now();
                let resp = api.clone().oneshot(req).await.expect("router is infallible");
                let status = resp.status();
                let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap_or_default();
                let took = t.elapsed();
                if status != StatusCode::CREATED {
                    samples.lock().unwrap().errors.push(format!("create {status}: {}", String::from_utf8_lossy(&body)));
                    continue;
                }
                samples.lock().unwrap().create.push(took);
                let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                let id = v["id"].as_str().unwrap_or_default().to_string();
                let stored = app.stores.requests.get_request(&RequestId::parse(&id).unwrap()).await.unwrap().unwrap();
                let Some(ts) = stored.notification.ts.clone() else {
                    samples.lock().unwrap().errors.push("no Slack message posted".into());
                    continue;
                };
                if tx.send((id, stored.notification.channel.to_string(), ts)).await.is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    for a in 0..o.approvers {
        let (router, rx, samples, slack, approved) =
            (slack_router.clone(), rx.clone(), samples.clone(), slack.clone(), approved.clone());
        let m = o.approvers;
        tasks.push(tokio::spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some((id, channel, ts)) = next else { break };
                // Two distinct approvers (the policy requires 2).
                for user in [format!("UAPPR{a:05}"), format!("UAPPR{:05}", (a + 1) % m)] {
                    let req = approve_callback(&slack, &user, &id, &channel, &ts);
                    let t = Instant::now();
                    let resp = router.clone().oneshot(req).await.expect("router is infallible");
                    let status = resp.status();
                    let _ = axum::body::to_bytes(resp.into_body(), 1 << 20).await;
                    let took = t.elapsed();
                    if status == StatusCode::OK {
                        samples.lock().unwrap().callback.push(took);
                    } else {
                        samples.lock().unwrap().errors.push(format!("callback {status}"));
                    }
                }
                approved.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut s = std::mem::take(&mut *samples.lock().unwrap());
    let approved = approved.load(std::sync::atomic::Ordering::Relaxed);
    let http = (s.create.len() + s.callback.len()) as f64 / elapsed;
    let result = json!({
        "store": o.store, "slack": o.slack, "clients": o.clients, "approvers": o.approvers, "seconds": elapsed,
        "creates": s.create.len(), "callbacks": s.callback.len(), "approved": approved,
        "errors": s.errors.len(), "first_errors": s.errors.iter().take(3).collect::<Vec<_>>(),
        "http_per_s": http, "approvals_per_s": approved as f64 / elapsed,
        "create_p50_ms": pct(&mut s.create, 0.50), "create_p99_ms": pct(&mut s.create, 0.99),
        "callback_p50_ms": pct(&mut s.callback, 0.50), "callback_p99_ms": pct(&mut s.callback, 0.99),
        "peak_rss_kib": peak_rss_kib(),
    });
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    if let Some(path) = o.json {
        std::fs::write(path, result.to_string()).expect("write results");
    }
    assert!(s.errors.is_empty(), "errors under load: {:?}", &s.errors[..s.errors.len().min(5)]);
}
