//! `TestApp`: the real application graph (services, routers, Slack client) on a fresh store — the embedded
//! database or fresh DynamoDB tables on the emulator — with a fake Slack on 127.0.0.1, a manual clock and
//! fixed Slack secrets. Tests drive the routers with realistic API Gateway REST proxy events and properly
//! signed Slack callbacks, through `tower::ServiceExt::oneshot`, exactly as Lambda would.
//!
//! Logs are off unless `TEST_LOG` is set.

use countersign_core::service::receipts::Receipts;
use std::sync::{Arc, Once};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use countersign_core::domain::policy::parse_policies;
use countersign_core::domain::{Actor, ApprovalRequest, AuditEvent, Environment, RequestId, Timestamp};
use countersign_core::ports::{ManualClock, SecretString, SlackSecrets, Stores};
use countersign_core::service::policies;
use countersign_core::service::requests::RequestSettings;
use countersign_lambda::app::{App, Parts};
use countersign_lambda::http::slack::SlackIdentity;
use countersign_local::StaticSlackSecrets;
use countersign_slack::fake::{Behaviour, FakeSlack, FAKE_APP_ID, FAKE_BOT_TOKEN, FAKE_TEAM_ID};
use countersign_slack::signature::sign;
use serde_json::Value;
use tower::ServiceExt;

pub const T0: Timestamp = Timestamp::from_unix_millis(1_795_621_462_000);
pub const DEPLOY_ARN: &str = "arn:aws:sts::111122223333:assumed-role/github-deploy/run-42";
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
/// Our workspace: the one the fake Slack's users belong to by default.
pub const TEAM_ID: &str = FAKE_TEAM_ID;
/// Our Slack app: the one the fake Slack posts as.
pub const APP_ID: &str = FAKE_APP_ID;

/// Policies most tests use: 2-of-N production deploys, an auto-approved staging policy.
pub const POLICIES: &str = r#"
version: 1
policies:
  - name: deploy-production
    principals: [arn:aws:iam::111122223333:role/github-deploy]
    actions: [deploy]
    environments: [production]
    approvers:
      users: [UALICE0001, UBOB000001, UCAROL0001]
      groups: [S0SRE00001]
    required_approvals: 2
    owners: [U0OWNER001]
    channel: C0APPROVALS
    max_ttl: 1h
    require_reason: true
    max_pending: 3
  - name: staging-auto
    principals: [arn:aws:iam::111122223333:role/github-deploy]
    actions: [deploy]
    environments: [staging]
    required_approvals: 0
    channel: C0DEPLOYS
    max_ttl: 15m
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Embedded,
    Dynamodb,
}

pub struct TestApp {
    pub app: App,
    pub slack: FakeSlack,
    pub clock: Arc<ManualClock>,
    _keep: Box<dyn Send + Sync>,
}

fn init_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // API Gateway REST events carry the stage; the deployed functions set this too (template.yaml).
        std::env::set_var("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true");
        if std::env::var_os("TEST_LOG").is_some() {
            countersign_lambda::telemetry::init(countersign_lambda::telemetry::LogFormat::Text);
        }
    });
}

/// A fresh app on the given store, or `None` when DynamoDB was asked for and no emulator is configured
/// (outside CI; under `CI=true` that is a failure, see `harness::dynamo`).
pub async fn spawn_app(kind: StoreKind) -> Option<TestApp> {
    spawn_app_with_options(kind, AppOptions::default()).await
}

pub async fn spawn_app_with(kind: StoreKind, settings: RequestSettings) -> Option<TestApp> {
    spawn_app_with_options(kind, AppOptions { settings, ..AppOptions::default() }).await
}

/// A fresh app whose Slack secrets come from `secrets` (e.g. the real Secrets Manager adapter on the emulator).
pub async fn spawn_app_with_secrets(kind: StoreKind, secrets: Arc<dyn SlackSecrets>) -> Option<TestApp> {
    spawn_app_with_options(kind, AppOptions { secrets: Some(secrets), ..AppOptions::default() }).await
}

/// What a test may change about the app it gets; `Default` is what `spawn_app` builds.
pub struct AppOptions {
    pub settings: RequestSettings,
    /// `None`: fixed secrets (the fake's bot token, [`SIGNING_SECRET`] as `AWSCURRENT`).
    pub secrets: Option<Arc<dyn SlackSecrets>>,
    /// Per-call bound on Slack calls (production default: 2 s).
    pub slack_timeout: Duration,
    pub slack_identity: SlackIdentity,
    /// `None`: a fresh local P-256 key ([`local_receipts`]).
    pub receipts: Option<Receipts>,
}

/// Receipts signed by a fresh in-memory P-256 key, issuer `countersign`.
pub fn local_receipts() -> Receipts {
    Receipts {
        signer: Arc::new(countersign_local::receipt_key::LocalKeySigner::ephemeral().expect("a receipt key")),
        issuer: countersign_core::domain::receipt::DEFAULT_ISSUER.to_string(),
    }
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            settings: RequestSettings::default(),
            secrets: None,
            slack_timeout: Duration::from_millis(500),
            slack_identity: SlackIdentity { app_id: APP_ID.into(), team_id: TEAM_ID.into() },
            receipts: None,
        }
    }
}

pub async fn spawn_app_with_options(kind: StoreKind, opts: AppOptions) -> Option<TestApp> {
    init_once();
    let (stores, keep): (Stores, Box<dyn Send + Sync>) = match kind {
        StoreKind::Embedded => {
            let (dir, store) = crate::stores::embedded();
            (Stores::from_one(store), Box::new(dir))
        }
        StoreKind::Dynamodb => {
            let (store, _client, _tables) = crate::stores::dynamo().await?;
            (Stores::from_one(store), Box::new(()))
        }
    };
    Some(spawn_app_on(stores, keep, opts).await)
}

/// A fresh app on stores the test built itself (so it knows where they live, e.g. to point the CLI at them).
pub async fn spawn_app_on(stores: Stores, keep: Box<dyn Send + Sync>, opts: AppOptions) -> TestApp {
    init_once();
    let clock = Arc::new(ManualClock::new(T0));
    // Slack's message timestamps follow the same (manual) time as the app's.
    let slack = FakeSlack::start_with_clock(clock.clone()).await.expect("fake Slack starts");
    let secrets = opts.secrets.unwrap_or_else(|| {
        Arc::new(StaticSlackSecrets {
            bot_token: SecretString::new(FAKE_BOT_TOKEN),
            signing_secrets: vec![("AWSCURRENT".into(), SecretString::new(SIGNING_SECRET))],
        })
    });
    let mut settings = opts.settings;
    if settings.sensitive_environments.is_empty() {
        settings.sensitive_environments.insert(Environment::parse("production").expect("valid"));
    }
    let app = App::build(Parts {
        stores,
        clock: clock.clone(),
        secrets,
        slack_api_base_url: slack.base_url(),
        slack_timeout: opts.slack_timeout,
        settings,
        slack_identity: opts.slack_identity,
        receipts: opts.receipts.unwrap_or_else(local_receipts),
    })
    .expect("app builds");
    let t = TestApp { app, slack, clock, _keep: keep };
    t.apply_policies(POLICIES).await;
    t
}

/// A Secrets Manager client on the emulator at `AWS_ENDPOINT_URL` (dummy credentials). `None` when no emulator is
/// configured, except under `CI=true`, where that is a failure (as for the DynamoDB tests).
pub async fn secretsmanager_client() -> Option<aws_sdk_secretsmanager::Client> {
    let endpoint = crate::emulator::endpoint(crate::emulator::Service::SecretsManager)?;
    Some(aws_sdk_secretsmanager::Client::new(&crate::emulator::sdk_config(&endpoint).await))
}

/// An API Gateway REST proxy event (tests/fixtures/apigw/rest-iam-request.json) turned into the request
/// lambda_http hands the router. `caller` replaces `requestContext.identity.userArn` (None removes the
/// identity, as a call without IAM auth would have).
pub fn api_event(
    method: &str,
    path_and_query: &str,
    body: Option<&str>,
    caller: Option<&str>,
) -> Request<lambda_http::Body> {
    let mut ev: Value = serde_json::from_str(include_str!("../../../tests/fixtures/apigw/rest-iam-request.json"))
        .expect("fixture is JSON");
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    ev["httpMethod"] = method.into();
    ev["requestContext"]["httpMethod"] = method.into();
    ev["path"] = path.into();
    ev["requestContext"]["path"] = format!("/Prod{path}").into();
    if !query.is_empty() {
        let mut q = serde_json::Map::new();
        let mut mq = serde_json::Map::new();
        for kv in query.split('&') {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            q.insert(k.into(), v.into());
            mq.insert(k.into(), Value::Array(vec![v.into()]));
        }
        ev["queryStringParameters"] = Value::Object(q);
        ev["multiValueQueryStringParameters"] = Value::Object(mq);
    }
    ev["body"] = body.map_or(Value::Null, Value::from);
    match caller {
        Some(arn) => {
            ev["requestContext"]["identity"]["userArn"] = arn.into();
            if let Some(acct) = arn.split(':').nth(4) {
                ev["requestContext"]["identity"]["accountId"] = acct.into();
            }
        }
        None => {
            for k in ["userArn", "accountId", "caller", "accessKey", "user"] {
                ev["requestContext"]["identity"][k] = Value::Null;
            }
        }
    }
    lambda_http::request::from_str(&ev.to_string()).expect("a valid API Gateway event")
}

/// An API Gateway REST proxy event for the Slack interactions endpoint, as API Gateway delivers it: the
/// Slack headers given, no IAM identity, and the body base64-encoded (`isBase64Encoded: true`) when `base64`.
pub fn slack_event(body: &[u8], headers: &[(&str, &str)], base64: bool) -> Request<lambda_http::Body> {
    use base64::Engine as _;
    let mut ev: Value = serde_json::from_str(include_str!("../../../tests/fixtures/apigw/rest-iam-request.json"))
        .expect("fixture is JSON");
    ev["path"] = "/slack/interactions".into();
    ev["resource"] = "/slack/interactions".into();
    ev["requestContext"]["path"] = "/Prod/slack/interactions".into();
    ev["requestContext"]["resourcePath"] = "/slack/interactions".into();
    for k in ["userArn", "accountId", "caller", "accessKey", "user", "principalOrgId"] {
        ev["requestContext"]["identity"][k] = Value::Null;
    }
    let mut h = serde_json::Map::new();
    h.insert("Content-Type".into(), "application/x-www-form-urlencoded".into());
    h.insert("Host".into(), "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com".into());
    h.insert("User-Agent".into(), "Slackbot 1.0 (+https://api.slack.com/robots)".into());
    let mut mh = serde_json::Map::new();
    for (k, v) in headers {
        match mh.get_mut(*k) {
            Some(Value::Array(vs)) => vs.push((*v).into()),
            _ => {
                mh.insert((*k).to_string(), Value::Array(vec![(*v).into()]));
            }
        }
    }
    for (k, v) in &h {
        mh.entry(k.clone()).or_insert_with(|| Value::Array(vec![v.clone()]));
    }
    // API Gateway fills `headers` with the last value of each header and `multiValueHeaders` with all.
    for (k, v) in headers {
        h.insert((*k).to_string(), (*v).into());
    }
    ev["headers"] = Value::Object(h);
    ev["multiValueHeaders"] = Value::Object(mh);
    if base64 {
        ev["body"] = base64::engine::general_purpose::STANDARD.encode(body).into();
        ev["isBase64Encoded"] = true.into();
    } else {
        ev["body"] = String::from_utf8(body.to_vec()).expect("a plain event body is text").into();
        ev["isBase64Encoded"] = false.into();
    }
    lambda_http::request::from_str(&ev.to_string()).expect("a valid API Gateway event")
}

/// Converts lambda_http's request into the axum one the router takes (the same conversion
/// `lambda_http::run` does).
pub fn into_axum(req: Request<lambda_http::Body>) -> Request<Body> {
    let (parts, body) = req.into_parts();
    Request::from_parts(parts, Body::from(body.to_vec()))
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
}

impl TestApp {
    pub async fn apply_policies(&self, yaml: &str) {
        let desired = parse_policies(yaml).expect("test policies are valid");
        let current = self.app.stores.policies.list_policies().await.expect("list policies");
        let plan = policies::plan(&current, &desired);
        policies::apply(self.app.stores.policies.as_ref(), &plan, &Actor::cli("test"), self.clock.now_ts())
            .await
            .expect("apply policies");
    }

    pub async fn call_api(&self, req: Request<lambda_http::Body>) -> Answer {
        let resp = self.app.request_api().oneshot(into_axum(req)).await.expect("router is infallible");
        answer(resp).await
    }

    /// POST /v1/requests as `caller` with a JSON body.
    pub async fn create(&self, caller: &str, body: &Value) -> Answer {
        self.call_api(api_event("POST", "/v1/requests", Some(&body.to_string()), Some(caller))).await
    }

    /// POST /v1/requests as `caller`, signed with the access key `access_key` (`requestContext.identity.accessKey`).
    pub async fn create_with_key(&self, caller: &str, access_key: &str, body: &Value) -> Answer {
        let mut req = api_event("POST", "/v1/requests", Some(&body.to_string()), Some(caller));
        if let Some(lambda_http::request::RequestContext::ApiGatewayV1(ctx)) = req.extensions_mut().get_mut() {
            ctx.identity.access_key = Some(access_key.to_string());
        }
        self.call_api(req).await
    }

    /// A Slack interactivity callback carrying `payload`, signed now with the test signing secret.
    pub fn signed_callback(&self, payload: &Value) -> Request<Body> {
        let form = format!("payload={}", urlencode(&payload.to_string()));
        let ts = self.clock.now_ts().unix_seconds().to_string();
        let sig = sign(SIGNING_SECRET.as_bytes(), &ts, form.as_bytes());
        Request::builder()
            .method("POST")
            .uri("/slack/interactions")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts)
            .header("x-slack-signature", sig)
            .body(Body::from(form))
            .expect("request builds")
    }

    /// Drives the Slack router with a request as lambda_http builds it from an API Gateway event.
    pub async fn call_slack_event(&self, req: Request<lambda_http::Body>) -> Answer {
        self.call_slack(into_axum(req)).await
    }

    pub async fn call_slack(&self, req: Request<Body>) -> Answer {
        let resp = self.app.slack_interactions().oneshot(req).await.expect("router is infallible");
        answer(resp).await
    }

    /// A `block_actions` payload for a click on our message for `request_id`, shaped like Slack's.
    pub fn click(&self, user: &str, action_id: &str, request_id: &str, channel: &str, ts: &str) -> Value {
        serde_json::json!({
            "type": "block_actions",
            "api_app_id": APP_ID,
            "team": {"id": TEAM_ID, "domain": "example"},
            "enterprise": null,
            "user": {"id": user, "username": user.to_lowercase(), "team_id": TEAM_ID},
            "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": false},
            "channel": {"id": channel, "name": "approvals"},
            "message": {"ts": ts, "type": "message"},
            "trigger_id": "13345224609.738474920.8088930838d88f008e0",
            "response_url": self.slack.response_url("r1"),
            "actions": [{
                "type": "button", "action_id": action_id, "block_id": "countersign_actions",
                "value": request_id, "action_ts": "1795621462.000100",
                "text": {"type": "plain_text", "text": "Approve"}
            }]
        })
    }
}

/// A pending request and where its Slack message is.
#[derive(Debug, Clone)]
pub struct Posted {
    pub id: String,
    pub channel: String,
    pub ts: String,
}

impl TestApp {
    /// Creates a pending 2-approval production request through the API and returns it with its message.
    pub async fn pending_request(&self) -> Posted {
        let body = serde_json::json!({"action": "deploy", "environment": "production", "reason": "release 42"});
        let a = self.create(DEPLOY_ARN, &body).await;
        assert_eq!(a.status, 201, "{}", a.json);
        assert_eq!(a.json["status"], "pending", "{}", a.json);
        let id = a.json["id"].as_str().expect("id").to_string();
        let r = self.request(&id).await;
        let ts = r.notification.ts.clone().expect("the request's message was posted");
        Posted { id, channel: r.notification.channel.to_string(), ts }
    }

    /// Attempts at a first post that reached Slack: the creating call's `chat.postMessage`, and each retry,
    /// which begins with `conversations.history` (looking for an earlier post) and posts only after it.
    /// Thread replies (reminders) are not attempts.
    pub fn post_attempts(&self) -> usize {
        let mut n = 0;
        // Whether the last first-post call was a search (a post right after one belongs to its attempt).
        let mut after_search = false;
        for c in self.slack.calls() {
            let reply = c.body.get("thread_ts").is_some();
            match c.method.as_str() {
                "conversations.history" => {
                    n += usize::from(!after_search);
                    // A search the fake failed on purpose ends its attempt; one that answered leads to a post.
                    after_search = matches!(c.behaviour, Behaviour::Ok | Behaviour::Delay(_));
                }
                "chat.postMessage" if !reply => {
                    n += usize::from(!after_search);
                    after_search = false;
                }
                _ => {}
            }
        }
        n
    }

    /// The request as stored.
    pub async fn request(&self, id: &str) -> ApprovalRequest {
        let rid = RequestId::parse(id).expect("a request id");
        self.app.stores.requests.get_request(&rid).await.expect("store answers").expect("request exists")
    }

    /// The whole audit chain.
    pub async fn audit(&self) -> Vec<AuditEvent> {
        self.app.stores.audit.read_from(0, 100_000).await.expect("audit reads")
    }

    /// Audit records of one kind (`vote.rejected`, …).
    pub async fn audit_of(&self, kind: &str) -> Vec<AuditEvent> {
        self.audit().await.into_iter().filter(|e| e.kind.as_str() == kind).collect()
    }

    /// A `view_submission` of the deny modal for `request_id` with `reason`, shaped like Slack's.
    pub fn deny_submission(&self, user: &str, request_id: &str, reason: &str) -> Value {
        serde_json::json!({
            "type": "view_submission",
            "api_app_id": APP_ID,
            "team": {"id": TEAM_ID, "domain": "example"},
            "enterprise": null,
            "user": {"id": user, "username": user.to_lowercase(), "team_id": TEAM_ID},
            "trigger_id": "13345224609.738474920.8088930838d88f008e1",
            "view": {
                "id": "V0DENY0001", "type": "modal", "callback_id": "countersign_deny_modal",
                "private_metadata": request_id, "team_id": TEAM_ID, "app_id": APP_ID,
                "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}}
            },
            "response_urls": []
        })
    }
}

/// Log lines captured by [`capture_logs`].
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl LogBuffer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every log event of this thread, at every level, until the guard drops. Use it in a
/// current-thread test so the code under test logs on this thread.
pub fn capture_logs() -> (LogBuffer, tracing::subscriber::DefaultGuard) {
    let buf = LogBuffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

/// Reads the clock as a domain timestamp.
pub trait NowTs {
    fn now_ts(&self) -> Timestamp;
}

impl NowTs for ManualClock {
    fn now_ts(&self) -> Timestamp {
        countersign_core::ports::Clock::now(self)
    }
}

pub async fn answer(resp: axum::response::Response) -> Answer {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body reads");
    let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
    Answer { status, headers, json }
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A small deterministic generator (xorshift64*), so a failure replays from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % n as u64).unwrap()
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// One test body, run on both stores: `both_stores!(generic_fn, embedded_name, dynamodb_name)`; prefix
/// `multi_thread:` for a 4-worker runtime. Use it from any test module: `use countersign_testkit::both_stores;`.
#[macro_export]
macro_rules! both_stores {
    ($generic:ident, $embedded:ident, $dynamodb:ident) => {
        #[tokio::test]
        async fn $embedded() {
            $generic($crate::app::StoreKind::Embedded).await;
        }

        #[tokio::test]
        async fn $dynamodb() {
            $generic($crate::app::StoreKind::Dynamodb).await;
        }
    };
    (multi_thread: $generic:ident, $embedded:ident, $dynamodb:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $embedded() {
            $generic($crate::app::StoreKind::Embedded).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $dynamodb() {
            $generic($crate::app::StoreKind::Dynamodb).await;
        }
    };
}

/// Instantiates each `async fn NAME(StoreKind)` of the calling module as `embedded::NAME` and
/// `dynamodb::NAME`: `on_both_stores!(a, b)`, or `on_both_stores!(workers = 4; a, b)` for a multi-threaded
/// runtime with that many workers. Use it from any test module: `use countersign_testkit::on_both_stores;`.
#[macro_export]
macro_rules! on_both_stores {
    (workers = $n:literal; $($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = $n)]
                async fn $name() {
                    super::$name($crate::app::StoreKind::Embedded).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = $n)]
                async fn $name() {
                    super::$name($crate::app::StoreKind::Dynamodb).await;
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::app::StoreKind::Embedded).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::app::StoreKind::Dynamodb).await;
                }
            )*
        }
    };
}
pub use on_both_stores;
