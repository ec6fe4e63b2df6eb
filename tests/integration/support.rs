//! `TestApp`: the real application graph (services, routers, Slack client) on a fresh store — the embedded
//! database or fresh DynamoDB tables on the emulator — with a fake Slack on 127.0.0.1, a manual clock and
//! fixed Slack secrets. Tests drive the routers with realistic API Gateway REST proxy events and properly
//! signed Slack callbacks, through `tower::ServiceExt::oneshot`, exactly as Lambda would.
//!
//! Logs are off unless `TEST_LOG` is set.

use std::sync::{Arc, Once};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use countersign::adapters::slack::fake::{FakeSlack, FAKE_BOT_TOKEN};
use countersign::adapters::slack::signature::sign;
use countersign::app::{App, Parts};
use countersign::domain::policy::parse_policies;
use countersign::domain::{Actor, Environment, Timestamp};
use countersign::http::slack::SlackIdentity;
use countersign::ports::{ManualClock, SecretString, StaticSlackSecrets, Stores};
use countersign::service::policies;
use countersign::service::requests::RequestSettings;
use serde_json::Value;
use tower::ServiceExt;

pub const T0: Timestamp = Timestamp::from_unix_millis(1_795_621_462_000);
pub const DEPLOY_ARN: &str = "arn:aws:sts::111122223333:assumed-role/github-deploy/run-42";
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const TEAM_ID: &str = "T0TEAM0001";
pub const APP_ID: &str = "A0APP00001";

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
            countersign::telemetry::init(countersign::telemetry::LogFormat::Text);
        }
    });
}

/// A fresh app on the given store, or `None` when DynamoDB was asked for and no emulator is configured
/// (outside CI; under `CI=true` that is a failure, see `harness::dynamo`).
pub async fn spawn_app(kind: StoreKind) -> Option<TestApp> {
    spawn_app_with(kind, RequestSettings::default()).await
}

pub async fn spawn_app_with(kind: StoreKind, settings: RequestSettings) -> Option<TestApp> {
    init_once();
    let (stores, keep): (Stores, Box<dyn Send + Sync>) = match kind {
        StoreKind::Embedded => {
            let (dir, store) = crate::harness::embedded();
            (Stores::from_one(store), Box::new(dir))
        }
        StoreKind::Dynamodb => {
            let (store, _client, _tables) = crate::harness::dynamo().await?;
            (Stores::from_one(store), Box::new(()))
        }
    };
    Some(spawn_app_on(stores, keep, settings).await)
}

/// A fresh app on stores the test built itself (so it knows where they live, e.g. to point the CLI at them).
pub async fn spawn_app_on(stores: Stores, keep: Box<dyn Send + Sync>, settings: RequestSettings) -> TestApp {
    init_once();
    let slack = FakeSlack::start().await.expect("fake Slack starts");
    let clock = Arc::new(ManualClock::new(T0));
    let secrets = Arc::new(StaticSlackSecrets {
        bot_token: SecretString::new(FAKE_BOT_TOKEN),
        signing_secrets: vec![("AWSCURRENT".into(), SecretString::new(SIGNING_SECRET))],
    });
    let mut settings = settings;
    if settings.sensitive_environments.is_empty() {
        settings.sensitive_environments.insert(Environment::parse("production").expect("valid"));
    }
    let app = App::build(Parts {
        stores,
        clock: clock.clone(),
        secrets,
        slack_api_base_url: slack.base_url(),
        slack_timeout: Duration::from_millis(500),
        settings,
        slack_identity: SlackIdentity { app_id: APP_ID.into(), team_id: TEAM_ID.into() },
    })
    .expect("app builds");
    let t = TestApp { app, slack, clock, _keep: keep };
    t.apply_policies(POLICIES).await;
    t
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
    let mut ev: Value =
        serde_json::from_str(include_str!("../fixtures/apigw/rest-iam-request.json")).expect("fixture is JSON");
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

/// Converts lambda_http's request into the axum one the router takes (the same conversion
/// `lambda_http::run` does).
fn into_axum(req: Request<lambda_http::Body>) -> Request<Body> {
    let (parts, body) = req.into_parts();
    Request::from_parts(parts, Body::from(body.to_vec()))
}

#[allow(dead_code)] // fields are used by some test modules only
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

/// Reads the clock as a domain timestamp.
pub trait NowTs {
    fn now_ts(&self) -> Timestamp;
}

impl NowTs for ManualClock {
    fn now_ts(&self) -> Timestamp {
        countersign::ports::Clock::now(self)
    }
}

async fn answer(resp: axum::response::Response) -> Answer {
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
