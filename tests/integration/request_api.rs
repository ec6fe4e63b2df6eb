//! Black-box tests of the request API (`POST /v1/requests`, `GET /v1/requests/{id}[?wait=N]`,
//! `POST /v1/requests/{id}/cancel`) through the real router, services, Slack client and fake Slack, on both
//! stores. Each scenario is one `async fn(StoreKind)`; `on_both_stores!` instantiates it as
//! `request_api::embedded::NAME` and `request_api::dynamodb::NAME`.
//!
//! Tests named `tNN_…` protect threat row NN of the threat model (docs/security.md lists them).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, Request};
use countersign_core::domain::policy::parse_policies;
use countersign_core::domain::request::NotificationState;
use countersign_core::domain::{Actor, AuditEvent, AuditKind, RequestId, Status, Timestamp};
use countersign_core::ports::{ManualClock, SecretString, Stores};
use countersign_core::service::policies;
use countersign_core::service::requests::RequestSettings;
use countersign_lambda::app::{App, Parts};
use countersign_lambda::http::slack::SlackIdentity;
use countersign_local::StaticSlackSecrets;
use countersign_slack::fake::{Behaviour, FakeMessage, FakeSlack, FAKE_BOT_TOKEN};
use lambda_http::request::RequestContext;
use serde_json::{json, Value};
use tower::ServiceExt;

use countersign_testkit::app::{
    api_event, spawn_app, spawn_app_with, Answer, NowTs, Rng, StoreKind, TestApp, APP_ID, DEPLOY_ARN, POLICIES, T0,
    TEAM_ID,
};
use countersign_testkit::on_both_stores;

on_both_stores!(
    workers = 2;
    request_object_has_every_contract_field,
    auto_approved_request_is_approved_at_once_audited_and_posted_without_buttons,
    invalid_bodies_are_400_with_the_field_named_and_audited,
    unauthenticated_calls_are_401_and_audited,
    reason_is_required_when_the_policy_says_so,
    wrong_content_type_is_415_and_audited,
    unknown_foreign_or_malformed_ids_are_404_and_audited,
    unknown_routes_and_methods_answer_json_errors,
    no_caller_input_gets_a_5xx_or_an_error_of_another_shape,
    wait_returns_as_soon_as_the_request_is_decided,
    wait_returns_pending_after_n_seconds_and_bounds_n,
    cancel_by_owner_updates_the_message_others_get_404_twice_is_409,
    cancel_while_slack_fails_is_still_cancelled_and_the_update_is_relayed,
    history_line_counts_this_principals_earlier_requests_of_the_same_kind,
    store_unavailable_is_503_with_retry_after,
    slack_ok_false_leaves_the_request_pending_and_retrying,
    t16_requester_spoofing_through_session_name_is_refused,
    t17_unlisted_account_is_refused_and_audited,
    t18_pending_cap_and_idempotency_collapse_retries,
    t18_concurrent_retries_with_one_key_make_one_request_and_one_message,
    t19_mrkdwn_injection_is_escaped_end_to_end,
    t20_limits_at_plus_minus_one,
    t20_worst_case_text_stays_within_block_kit_limits,
    t21_body_cannot_choose_channel_or_approvers,
    t23_slack_failure_then_recovery_posts_exactly_one_message,
    t23_cancel_during_a_slow_relay_post_still_makes_one_message,
);

// ---------------------------------------------------------------------------------------------------------
// Fixtures and helpers

/// The same role as [`DEPLOY_ARN`] in another session: the same principal.
const SAME_ROLE_OTHER_SESSION: &str = "arn:aws:sts::111122223333:assumed-role/github-deploy/run-43";
/// Another role of the same account: another principal.
const OTHER_ROLE_ARN: &str = "arn:aws:sts::111122223333:assumed-role/other-deploy/run-7";
/// The same role name in another account.
const FOREIGN_ARN: &str = "arn:aws:sts::444455556666:assumed-role/github-deploy/run-42";

/// Added to [`POLICIES`]: a 1-of-N policy with a high pending cap (for boundary tests) that another role
/// may use too.
const MIGRATE_POLICY: &str = r#"
  - name: migrate-bulk
    principals: [arn:aws:iam::111122223333:role/github-deploy, arn:aws:iam::111122223333:role/other-deploy]
    actions: [migrate]
    environments: [production]
    approvers:
      users: [UALICE0001, UBOB000001]
    required_approvals: 1
    channel: C0APPROVALS
    max_ttl: 1h
    max_pending: 100
"#;

/// Added to [`POLICIES`]: lets the other account's role deploy, so a refusal can only be the allow-list's.
const FOREIGN_POLICY: &str = r#"
  - name: foreign-deploy
    principals: [arn:aws:iam::444455556666:role/github-deploy]
    actions: [deploy]
    environments: [production]
    approvers:
      users: [UALICE0001]
    required_approvals: 1
    channel: C0APPROVALS
    max_ttl: 1h
"#;

fn deploy(reason: &str) -> Value {
    json!({"action": "deploy", "environment": "production", "reason": reason})
}

/// A `migrate` request (policy `migrate-bulk`) with `extra` fields merged in.
fn migrate(extra: Value) -> Value {
    let mut body = json!({"action": "migrate", "environment": "production"});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            body[k] = v;
        }
    }
    body
}

async fn with_migrate_policy(t: &TestApp) {
    t.apply_policies(&format!("{POLICIES}{MIGRATE_POLICY}")).await;
}

fn id_of(a: &Answer) -> String {
    a.json["id"].as_str().unwrap_or_else(|| panic!("no id in {}", a.json)).to_string()
}

async fn get(t: &TestApp, path_rest: &str, caller: Option<&str>) -> Answer {
    t.call_api(api_event("GET", &format!("/v1/requests/{path_rest}"), None, caller)).await
}

async fn cancel(t: &TestApp, id: &str, caller: Option<&str>) -> Answer {
    t.call_api(api_event("POST", &format!("/v1/requests/{id}/cancel"), None, caller)).await
}

/// `POST /v1/requests` with raw body bytes and the given `Content-Type` (None removes the header).
async fn post_raw(t: &TestApp, body: Vec<u8>, content_type: Option<&str>, caller: Option<&str>) -> Answer {
    let mut req = api_event("POST", "/v1/requests", Some("{}"), caller);
    set_content_type(&mut req, content_type);
    let (parts, _) = req.into_parts();
    t.call_api(Request::from_parts(parts, lambda_http::Body::Binary(body))).await
}

fn set_content_type(req: &mut Request<lambda_http::Body>, content_type: Option<&str>) {
    req.headers_mut().remove(header::CONTENT_TYPE);
    if let Some(ct) = content_type {
        req.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
    }
}

async fn audit(t: &TestApp) -> Vec<AuditEvent> {
    t.app.stores.audit.read_from(1, 1000).await.unwrap()
}

async fn audit_kinds_for(t: &TestApp, id: &str) -> Vec<AuditKind> {
    let id = RequestId::parse(id).unwrap();
    t.app.stores.audit.for_request(&id).await.unwrap().iter().map(|e| e.kind).collect()
}

fn count(kinds: &[AuditKind], kind: AuditKind) -> usize {
    kinds.iter().filter(|k| **k == kind).count()
}

/// Asserts an error answer (status, code, field or its absence, a message) and that the newest audit
/// record is the `request.refused` of that code.
async fn assert_refused(t: &TestApp, a: &Answer, status: u16, code: &str, field: Option<&str>) {
    assert_eq!(a.status, status, "{}", a.json);
    assert_eq!(a.json["error"]["code"], code, "{}", a.json);
    assert!(a.json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", a.json);
    match field {
        Some(f) => assert_eq!(a.json["error"]["field"], f, "{}", a.json),
        None => assert!(a.json["error"].get("field").is_none(), "no field expected: {}", a.json),
    }
    let last = t.app.stores.audit.last().await.unwrap().expect("an audit record");
    assert_eq!(last.kind, AuditKind::RequestRefused, "the refusal is audited: {last:?}");
    assert_eq!(last.details.get("code").map(String::as_str), Some(code), "{last:?}");
}

fn blocks_of(m: &FakeMessage) -> Vec<Value> {
    m.blocks.as_array().cloned().unwrap_or_default()
}

fn has_buttons(m: &FakeMessage) -> bool {
    blocks_of(m).iter().any(|b| b["type"] == "actions")
}

/// The history context line of a message.
fn history_line(m: &FakeMessage) -> String {
    blocks_of(m)
        .iter()
        .filter(|b| b["type"] == "context")
        .filter_map(|b| b["elements"][0]["text"].as_str())
        .find(|t| t.contains("request of this kind") || t.contains("First request of its kind"))
        .unwrap_or_else(|| panic!("no history line in {}", m.blocks))
        .to_string()
}

/// Every string inside a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// Converts lambda_http's request into the router's (as `lambda_http::run` does), for concurrent calls.
fn to_axum(req: Request<lambda_http::Body>) -> Request<Body> {
    let (parts, body) = req.into_parts();
    Request::from_parts(parts, Body::from(body.to_vec()))
}

async fn to_answer(resp: axum::response::Response) -> Answer {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
    Answer { status, headers, json }
}

/// Two approvals, as signed clicks on the request's message.
async fn approve_twice(t: &TestApp, id: &str) {
    let m = t.slack.messages().into_iter().find(|m| serde_json::to_string(&m.blocks).unwrap().contains(id));
    let m = m.expect("the request's message");
    for user in ["UALICE0001", "UBOB000001"] {
        let r = t.call_slack(t.signed_callback(&t.click(user, "countersign_approve", id, &m.channel, &m.ts))).await;
        assert_eq!(r.status, 200, "{}", r.json);
    }
}

/// An app on custom stores and Slack credentials, for failures `spawn_app` cannot stage.
struct Rig {
    app: App,
    slack: FakeSlack,
    clock: Arc<ManualClock>,
    _keep: Box<dyn Send + Sync>,
}

impl Rig {
    async fn new(stores: Stores, keep: Box<dyn Send + Sync>, bot_token: &str) -> Self {
        std::env::set_var("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true");
        let slack = FakeSlack::start().await.unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let app = App::build(Parts {
            stores,
            clock: clock.clone(),
            secrets: Arc::new(StaticSlackSecrets {
                bot_token: SecretString::new(bot_token),
                signing_secrets: vec![("AWSCURRENT".into(), SecretString::new("unused-signing-secret"))],
            }),
            slack_api_base_url: slack.base_url(),
            slack_timeout: Duration::from_millis(500),
            settings: RequestSettings::default(),
            slack_identity: SlackIdentity { app_id: APP_ID.into(), team_id: TEAM_ID.into() },
            receipts: countersign_testkit::app::local_receipts(),
        })
        .unwrap();
        Self { app, slack, clock, _keep: keep }
    }

    /// A rig on fresh storage of `kind` (None: no emulator configured), with [`POLICIES`] applied.
    async fn on(kind: StoreKind, bot_token: &str) -> Option<Self> {
        let (stores, keep): (Stores, Box<dyn Send + Sync>) = match kind {
            StoreKind::Embedded => {
                let (dir, store) = countersign_testkit::stores::embedded();
                (Stores::from_one(store), Box::new(dir))
            }
            StoreKind::Dynamodb => {
                let (store, _, _) = countersign_testkit::stores::dynamo().await?;
                (Stores::from_one(store), Box::new(()))
            }
        };
        let rig = Self::new(stores, keep, bot_token).await;
        rig.apply_policies(POLICIES).await;
        Some(rig)
    }

    async fn apply_policies(&self, yaml: &str) {
        let desired = parse_policies(yaml).unwrap();
        let current = self.app.stores.policies.list_policies().await.unwrap();
        let plan = policies::plan(&current, &desired);
        policies::apply(self.app.stores.policies.as_ref(), &plan, &Actor::cli("test"), self.clock.now_ts())
            .await
            .unwrap();
    }

    async fn call(&self, req: Request<lambda_http::Body>) -> Answer {
        to_answer(self.app.request_api().oneshot(to_axum(req)).await.unwrap()).await
    }

    async fn create(&self, body: &Value) -> Answer {
        self.call(api_event("POST", "/v1/requests", Some(&body.to_string()), Some(DEPLOY_ARN))).await
    }
}

fn assert_unavailable(a: &Answer) {
    assert_eq!(a.status, 503, "{}", a.json);
    assert_eq!(a.json["error"]["code"], "unavailable", "{}", a.json);
    let retry_after = a.headers.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok());
    assert!(retry_after.and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s >= 1), "Retry-After: {retry_after:?}");
    let message = a.json["error"]["message"].as_str().unwrap_or("");
    assert!(!message.contains("DynamoDB") && !message.contains("sqlite"), "the cause stays in the logs: {message}");
}

// ---------------------------------------------------------------------------------------------------------
// The request object, auto-approval, validation, identity, errors

async fn request_object_has_every_contract_field(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let body = json!({
        "action": "deploy", "environment": "production", "resource": "service/payments",
        "reason": "Release 2026.11.25", "details": {"commit": "9f2c1e7"}
    });
    let a = t.create(DEPLOY_ARN, &body).await;
    assert_eq!(a.status, 201, "{}", a.json);
    assert!(a.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/json"));
    let keys: BTreeSet<&str> = a.json.as_object().unwrap().keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = [
        "id",
        "status",
        "action",
        "environment",
        "resource",
        "reason",
        "details",
        "requester",
        "policy",
        "required_approvals",
        "approvals",
        "denial",
        "created_at",
        "expires_at",
        "decided_at",
        "notification",
        "artifact",
        "usable_until",
        "redeemed_at",
        "redeemed_by",
        "break_glass",
        "review",
    ]
    .into();
    assert_eq!(keys, want, "exactly the contract's fields (no version, body hash or access key)");
    let j = &a.json;
    assert!(RequestId::parse(j["id"].as_str().unwrap()).is_ok());
    assert_eq!(j["status"], "pending");
    assert_eq!((j["break_glass"].as_bool(), j["review"].is_null()), (Some(false), true));
    assert_eq!((j["action"].as_str(), j["environment"].as_str()), (Some("deploy"), Some("production")));
    assert_eq!(j["resource"], "service/payments");
    assert_eq!(j["reason"], "Release 2026.11.25");
    assert_eq!(j["details"], json!({"commit": "9f2c1e7"}));
    assert_eq!(
        j["requester"],
        json!({
            "arn": DEPLOY_ARN, "account_id": "111122223333",
            "principal": "arn:aws:iam::111122223333:role/github-deploy", "session": "run-42"
        })
    );
    assert_eq!(j["policy"]["name"], "deploy-production");
    let version = j["policy"]["version"].as_str().unwrap();
    assert!(version.len() == 16 && version.bytes().all(|b| b.is_ascii_hexdigit()), "{version}");
    assert_eq!(j["required_approvals"], 2);
    assert_eq!(j["approvals"], json!([]));
    assert_eq!(j["denial"], Value::Null);
    assert_eq!(j["decided_at"], Value::Null);
    assert_eq!(j["notification"], "posted");
    assert_eq!(j["created_at"], "2026-11-25T15:44:22.000Z", "RFC 3339 UTC with milliseconds");
    assert_eq!(j["expires_at"], T0.plus_seconds(3600).to_rfc3339(), "default ttl is the policy's max_ttl");
    for k in ["created_at", "expires_at"] {
        assert!(Timestamp::parse_rfc3339(j[k].as_str().unwrap()).is_ok());
    }

    let got = get(&t, &id_of(&a), Some(DEPLOY_ARN)).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json, a.json, "GET shows the same object");

    let kinds = audit_kinds_for(&t, &id_of(&a)).await;
    assert_eq!(kinds, vec![AuditKind::RequestCreated, AuditKind::SlackPosted]);
    let created = t.app.stores.audit.for_request(&RequestId::parse(&id_of(&a)).unwrap()).await.unwrap();
    assert_eq!(created[0].actor, Actor::aws(DEPLOY_ARN));
    let stored = t.app.stores.requests.get_request(&RequestId::parse(&id_of(&a)).unwrap()).await.unwrap().unwrap();
    let m = &t.slack.messages()[0];
    assert_eq!((m.channel.as_str(), Some(m.ts.as_str())), ("C0APPROVALS", stored.notification.ts.as_deref()));
    assert!(has_buttons(m));
}

async fn auto_approved_request_is_approved_at_once_audited_and_posted_without_buttons(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let a = t.create(DEPLOY_ARN, &json!({"action": "deploy", "environment": "staging"})).await;
    assert_eq!(a.status, 201, "{}", a.json);
    assert_eq!(a.json["status"], "approved");
    assert_eq!(a.json["required_approvals"], 0);
    assert_eq!(a.json["decided_at"], a.json["created_at"]);
    assert_eq!(a.json["policy"]["name"], "staging-auto");
    assert_eq!(a.json["notification"], "posted");
    let id = id_of(&a);
    let kinds = audit_kinds_for(&t, &id).await;
    assert_eq!(kinds, vec![AuditKind::RequestCreated, AuditKind::RequestAutoApproved, AuditKind::SlackPosted]);
    let msgs = t.slack.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].channel, "C0DEPLOYS");
    assert!(!has_buttons(&msgs[0]), "informational: no buttons");
    assert!(serde_json::to_string(&msgs[0].blocks).unwrap().contains("Approved automatically by policy"));
    // Nothing left to cancel.
    assert_refused(&t, &cancel(&t, &id, Some(DEPLOY_ARN)).await, 409, "already_decided", None).await;
}

async fn invalid_bodies_are_400_with_the_field_named_and_audited(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let long_nesting = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
        (b"not json".to_vec(), None),
        (b"".to_vec(), None),
        (b"[1, 2]".to_vec(), None),
        (b"null".to_vec(), None),
        (b"\"deploy\"".to_vec(), None),
        (long_nesting.into_bytes(), None),
        (b"{\"action\": \"deploy\", \"environment\": \"production\", \"reason\": \"\xff\xfe\"}".to_vec(), None),
        (br#"{"action":"deploy","environment":"production","reason":"x","foo":1}"#.to_vec(), None),
        (br#"{"environment":"production"}"#.to_vec(), Some("action")),
        (br#"{"action":null,"environment":"production"}"#.to_vec(), Some("action")),
        (br#"{"action":7,"environment":"production"}"#.to_vec(), Some("action")),
        (br#"{"action":"Deploy","environment":"production"}"#.to_vec(), Some("action")),
        (br#"{"action":"deploy"}"#.to_vec(), Some("environment")),
        (br#"{"action":"deploy","environment":"prod uction"}"#.to_vec(), Some("environment")),
        (br#"{"action":"deploy","environment":"production","reason":5}"#.to_vec(), Some("reason")),
        (br#"{"action":"deploy","environment":"production","reason":"a\u0007b"}"#.to_vec(), Some("reason")),
        (br#"{"action":"deploy","environment":"production","resource":""}"#.to_vec(), Some("resource")),
        (br#"{"action":"deploy","environment":"production","resource":"a\nb"}"#.to_vec(), Some("resource")),
        (br#"{"action":"deploy","environment":"production","resource":["x"]}"#.to_vec(), Some("resource")),
        (br#"{"action":"deploy","environment":"production","details":["x"]}"#.to_vec(), Some("details")),
        (br#"{"action":"deploy","environment":"production","details":{"k":1}}"#.to_vec(), Some("details")),
        (br#"{"action":"deploy","environment":"production","details":{"":"v"}}"#.to_vec(), Some("details")),
        (br#"{"action":"deploy","environment":"production","details":{"k":"a\u0000b"}}"#.to_vec(), Some("details")),
        (br#"{"action":"deploy","environment":"production","idempotency_key":""}"#.to_vec(), Some("idempotency_key")),
        (
            br#"{"action":"deploy","environment":"production","idempotency_key":"a b"}"#.to_vec(),
            Some("idempotency_key"),
        ),
        (br#"{"action":"deploy","environment":"production","idempotency_key":5}"#.to_vec(), Some("idempotency_key")),
        (br#"{"action":"deploy","environment":"production","ttl_seconds":-1}"#.to_vec(), Some("ttl_seconds")),
        (br#"{"action":"deploy","environment":"production","ttl_seconds":90.5}"#.to_vec(), Some("ttl_seconds")),
        (br#"{"action":"deploy","environment":"production","ttl_seconds":"90"}"#.to_vec(), Some("ttl_seconds")),
        (br#"{"action":"deploy","environment":"production","ttl_seconds":1e30}"#.to_vec(), Some("ttl_seconds")),
    ];
    for (body, field) in cases {
        let shown = String::from_utf8_lossy(&body).chars().take(80).collect::<String>();
        let a = post_raw(&t, body, Some("application/json"), Some(DEPLOY_ARN)).await;
        assert_eq!(a.status, 400, "{shown}: {}", a.json);
        assert_refused(&t, &a, 400, "invalid_request", field).await;
    }
    let a = post_raw(
        &t,
        br#"{"action":"deploy","environment":"production","colour":"red"}"#.to_vec(),
        Some("application/json"),
        Some(DEPLOY_ARN),
    )
    .await;
    assert!(a.json["error"]["message"].as_str().unwrap().contains("colour"), "the unknown field is named");
    assert!(t.slack.calls().is_empty(), "nothing invalid reaches Slack");
    assert!(audit(&t).await.iter().all(|e| e.kind != AuditKind::RequestCreated));
}

async fn unauthenticated_calls_are_401_and_audited(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let created = t.create(DEPLOY_ARN, &deploy("release")).await;
    let id = id_of(&created);
    let a = create_anonymous(&t, &deploy("release")).await;
    assert_refused(&t, &a, 401, "unauthenticated", None).await;
    let last = t.app.stores.audit.last().await.unwrap().unwrap();
    assert_eq!(last.actor, Actor("anonymous".into()));
    // Identity comes first: an unauthenticated caller learns nothing about bodies or content types.
    let a = post_raw(&t, b"not json".to_vec(), Some("text/plain"), None).await;
    assert_refused(&t, &a, 401, "unauthenticated", None).await;
    for arn in ["", "not-an-arn", "arn:aws-iso:sts::111122223333:assumed-role/github-deploy/run-42"] {
        let a = t.create(arn, &deploy("release")).await;
        assert_refused(&t, &a, 401, "unauthenticated", None).await;
    }
    assert_refused(&t, &get(&t, &id, None).await, 401, "unauthenticated", None).await;
    assert_refused(&t, &cancel(&t, &id, None).await, 401, "unauthenticated", None).await;
    assert_eq!(t.slack.messages().len(), 1);
}

async fn reason_is_required_when_the_policy_says_so(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    with_migrate_policy(&t).await;
    let a = t.create(DEPLOY_ARN, &json!({"action": "deploy", "environment": "production"})).await;
    assert_refused(&t, &a, 400, "reason_required", Some("reason")).await;
    let a = t.create(DEPLOY_ARN, &deploy(" \n\t ")).await;
    assert_refused(&t, &a, 400, "reason_required", Some("reason")).await;
    let a = t.create(DEPLOY_ARN, &deploy("release 42")).await;
    assert_eq!(a.status, 201, "{}", a.json);
    let a = t.create(DEPLOY_ARN, &migrate(json!({}))).await;
    assert_eq!(a.status, 201, "a policy without require_reason needs none: {}", a.json);
    assert_eq!(a.json["reason"], Value::Null);
}

async fn wrong_content_type_is_415_and_audited(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    with_migrate_policy(&t).await;
    let body = migrate(json!({})).to_string().into_bytes();
    for ct in [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("application/jsonx")] {
        let a = post_raw(&t, body.clone(), ct, Some(DEPLOY_ARN)).await;
        assert_refused(&t, &a, 415, "unsupported_media_type", None).await;
    }
    for ct in ["application/json; charset=utf-8", "Application/JSON"] {
        let a = post_raw(&t, body.clone(), Some(ct), Some(DEPLOY_ARN)).await;
        assert_eq!(a.status, 201, "{ct}: {}", a.json);
    }
}

async fn unknown_foreign_or_malformed_ids_are_404_and_audited(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    with_migrate_policy(&t).await;
    let mine = id_of(&t.create(DEPLOY_ARN, &deploy("release")).await);
    let unknown = RequestId::generate().to_string();
    let foreign = get(&t, &mine, Some(OTHER_ROLE_ARN)).await;
    assert_refused(&t, &foreign, 404, "not_found", None).await;
    let missing = get(&t, &unknown, Some(OTHER_ROLE_ARN)).await;
    assert_refused(&t, &missing, 404, "not_found", None).await;
    assert_eq!(foreign.json, missing.json, "someone else's request looks exactly like a missing one");
    for bad in ["garbage", "req_", "req_01jd0000000000000000000000x", "%E2%82%AC", "%ZZ", "..%2F..%2Fhealthz"] {
        let a = get(&t, bad, Some(DEPLOY_ARN)).await;
        assert_refused(&t, &a, 404, "not_found", None).await;
        let a = cancel(&t, bad, Some(DEPLOY_ARN)).await;
        assert_refused(&t, &a, 404, "not_found", None).await;
    }
    let a = cancel(&t, &unknown, Some(DEPLOY_ARN)).await;
    assert_refused(&t, &a, 404, "not_found", None).await;
    let got = get(&t, &mine, Some(SAME_ROLE_OTHER_SESSION)).await;
    assert_eq!(got.status, 200, "the same role in another session is the same principal: {}", got.json);
}

async fn unknown_routes_and_methods_answer_json_errors(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let a = t.call_api(api_event("GET", "/v1/nothing", None, Some(DEPLOY_ARN))).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json["error"]["code"], "not_found");
    for (method, path) in [("PUT", "/v1/requests"), ("DELETE", "/v1/requests/req_01JD0000000000000000000000")] {
        let a = t.call_api(api_event(method, path, None, Some(DEPLOY_ARN))).await;
        assert_eq!(a.status, 405, "{method} {path}");
        assert_eq!(a.json["error"]["code"], "method_not_allowed", "{method} {path}: {}", a.json);
    }
    let a = t.call_api(api_event("GET", "/healthz", None, None)).await;
    assert_eq!((a.status.as_u16(), &a.json), (200, &json!({"ok": true})));
}

async fn no_caller_input_gets_a_5xx_or_an_error_of_another_shape(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let valid = json!({"action": "deploy", "environment": "production", "reason": "r", "resource": "svc/a",
        "details": {"k": "v"}, "idempotency_key": "key-1", "ttl_seconds": 600})
    .to_string();
    let splices: &[&str] = &[
        "\"",
        "\\",
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "null",
        "-1",
        "1e400",
        "18446744073709551616",
        "\\u0000",
        "\\ud800",
        "é",
        "\u{10FFFF}",
        "\u{202E}",
        "<!channel>",
        "&amp;",
        "\n",
        "\t",
        " ",
        "true",
        "\"channel\":1,",
    ];
    let paths: &[&str] = &[
        "/v1/requests",
        "/v1/requests/",
        "/v1/requests/req_01JD0000000000000000000000",
        "/v1/requests/%00",
        "/v1/requests/%C3%28",
        "/v1/requests/a/b/c",
        "/v1/requests//cancel",
        "/v1//requests",
        "/V1/REQUESTS",
        "/v1/requests/req_01JD0000000000000000000000/cancel/x",
        "/healthz/x",
        "/",
    ];
    let queries: &[&str] = &["", "?wait=1", "?wait=", "?wait=%32", "?wait=-0", "?wait=0&wait=99", "?x", "?wait=1e3"];
    let content_types: &[Option<&str>] =
        &[Some("application/json"), Some("application/json; charset=latin1"), Some(""), None, Some("*/*")];
    let callers: &[Option<&str>] = &[Some(DEPLOY_ARN), Some(DEPLOY_ARN), None, Some("arn:aws:iam::111122223333:root")];
    for i in 0..200 {
        let mut body = valid.clone().into_bytes();
        for _ in 0..=rng.below(4) {
            match rng.below(3) {
                0 if !body.is_empty() => {
                    let at = rng.below(body.len());
                    body.truncate(at);
                }
                1 if !body.is_empty() => {
                    let at = rng.below(body.len());
                    body[at] = u8::try_from(rng.below(256)).unwrap();
                }
                _ => {
                    let at = rng.below(body.len() + 1);
                    let s = rng.pick(splices).as_bytes().to_vec();
                    body.splice(at..at, s);
                }
            }
        }
        // Mostly mutated bodies for POST /v1/requests; otherwise any method, path and query.
        let (method, path, content_type) = if rng.below(10) < 7 {
            ("POST", "/v1/requests".to_string(), Some("application/json"))
        } else {
            let method = *rng.pick(&["POST", "GET", "PUT", "DELETE", "PATCH"]);
            (method, format!("{}{}", rng.pick(paths), rng.pick(queries)), *rng.pick(content_types))
        };
        let mut req = api_event(method, &path, Some("{}"), *rng.pick(callers));
        set_content_type(&mut req, content_type);
        let (parts, _) = req.into_parts();
        let shown = format!("#{i} {method} {path} {}", String::from_utf8_lossy(&body));
        let a = t.call_api(Request::from_parts(parts, lambda_http::Body::Binary(body))).await;
        assert!(a.status.as_u16() < 500, "{shown}: {} {}", a.status, a.json);
        if a.status.as_u16() >= 400 {
            let code = a.json["error"]["code"].as_str().unwrap_or_else(|| panic!("{shown}: {}", a.json));
            assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{shown}: {code}");
            assert!(a.json["error"]["message"].is_string(), "{shown}: {}", a.json);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Long polling and cancel

async fn wait_returns_as_soon_as_the_request_is_decided(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let id = id_of(&t.create(DEPLOY_ARN, &deploy("release")).await);
    let m = t.slack.messages()[0].clone();
    // Signed now; sent by another task while the GET waits (the manual clock does not move tokio's time).
    let clicks: Vec<Request<Body>> = ["UALICE0001", "UBOB000001"]
        .iter()
        .map(|u| t.signed_callback(&t.click(u, "countersign_approve", &id, &m.channel, &m.ts)))
        .collect();
    let slack = t.app.slack_interactions();
    let approver = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        for c in clicks {
            let r = slack.clone().oneshot(c).await.unwrap();
            assert_eq!(r.status(), 200);
        }
    });
    let started = Instant::now();
    let a = get(&t, &format!("{id}?wait=15"), Some(DEPLOY_ARN)).await;
    let took = started.elapsed();
    approver.await.unwrap();
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["status"], "approved", "{}", a.json);
    assert_eq!(a.json["approvals"].as_array().unwrap().len(), 2);
    assert!(took >= Duration::from_millis(400), "it did wait: {took:?}");
    assert!(took < Duration::from_secs(8), "it answered soon after the decision, not at the deadline: {took:?}");
    // A decided request answers at once, whatever the wait.
    let started = Instant::now();
    let a = get(&t, &format!("{id}?wait=20"), Some(DEPLOY_ARN)).await;
    assert_eq!((a.status.as_u16(), a.json["status"].as_str()), (200, Some("approved")));
    assert!(started.elapsed() < Duration::from_secs(2));
}

async fn wait_returns_pending_after_n_seconds_and_bounds_n(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let id = id_of(&t.create(DEPLOY_ARN, &deploy("release")).await);
    let started = Instant::now();
    let a = get(&t, &format!("{id}?wait=1"), Some(DEPLOY_ARN)).await;
    let took = started.elapsed();
    assert_eq!((a.status.as_u16(), a.json["status"].as_str()), (200, Some("pending")), "{}", a.json);
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(4), "{took:?}");
    for bad in ["21", "-1", "abc", "1.5", "99999999999999999999999"] {
        let a = get(&t, &format!("{id}?wait={bad}"), Some(DEPLOY_ARN)).await;
        assert_refused(&t, &a, 400, "invalid_request", Some("wait")).await;
    }
    let a = get(&t, &format!("{id}?wait=0"), Some(DEPLOY_ARN)).await;
    assert_eq!(a.status, 200);
    // Past its expiry a pending request reads expired, even before the sweeper.
    t.clock.advance_seconds(3600);
    let a = get(&t, &format!("{id}?wait=5"), Some(DEPLOY_ARN)).await;
    assert_eq!(a.json["status"], "expired");
}

async fn cancel_by_owner_updates_the_message_others_get_404_twice_is_409(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let id = id_of(&t.create(DEPLOY_ARN, &deploy("release")).await);
    assert_refused(&t, &cancel(&t, &id, Some(OTHER_ROLE_ARN)).await, 404, "not_found", None).await;
    assert_eq!(get(&t, &id, Some(DEPLOY_ARN)).await.json["status"], "pending", "a stranger cannot cancel it");

    t.clock.advance_seconds(5);
    let a = cancel(&t, &id, Some(SAME_ROLE_OTHER_SESSION)).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["status"], "cancelled");
    assert_eq!(a.json["decided_at"], T0.plus_seconds(5).to_rfc3339());
    assert_eq!(a.json["notification"], "posted");
    let msgs = t.slack.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].updates.len(), 1, "the message was updated once");
    assert!(!has_buttons(&msgs[0]), "no buttons once cancelled");
    assert!(serde_json::to_string(&msgs[0].blocks).unwrap().contains("Cancelled"));
    let events = t.app.stores.audit.for_request(&RequestId::parse(&id).unwrap()).await.unwrap();
    let cancelled: Vec<_> = events.iter().filter(|e| e.kind == AuditKind::RequestCancelled).collect();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].actor, Actor::aws(SAME_ROLE_OTHER_SESSION));

    assert_refused(&t, &cancel(&t, &id, Some(DEPLOY_ARN)).await, 409, "already_decided", None).await;
    assert_eq!(t.slack.messages()[0].updates.len(), 1, "a refused cancel changes nothing");
    assert_eq!(get(&t, &id, Some(DEPLOY_ARN)).await.json["status"], "cancelled");

    // An expired request cannot be cancelled either.
    let short = id_of(
        &t.create(
            DEPLOY_ARN,
            &json!({"action": "deploy", "environment": "production",
        "reason": "short", "ttl_seconds": 60}),
        )
        .await,
    );
    t.clock.advance_seconds(60);
    assert_refused(&t, &cancel(&t, &short, Some(DEPLOY_ARN)).await, 409, "already_decided", None).await;
    assert_eq!(get(&t, &short, Some(DEPLOY_ARN)).await.json["status"], "expired");
}

async fn cancel_while_slack_fails_is_still_cancelled_and_the_update_is_relayed(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let id = id_of(&t.create(DEPLOY_ARN, &deploy("release")).await);
    t.slack.set_behaviour([Behaviour::Status500]);
    let a = cancel(&t, &id, Some(DEPLOY_ARN)).await;
    assert_eq!((a.status.as_u16(), a.json["status"].as_str()), (200, Some("cancelled")), "{}", a.json);
    let m = &t.slack.messages()[0];
    assert!(m.updates.is_empty() && has_buttons(m), "Slack refused the update");
    let r = t.app.stores.requests.get_request(&RequestId::parse(&id).unwrap()).await.unwrap().unwrap();
    assert!(r.notification.update_pending, "the update is still owed");
    t.clock.set(r.notification.next_attempt_at.unwrap());
    t.app.sweeper().run_once().await.unwrap();
    let m = &t.slack.messages()[0];
    assert_eq!(m.updates.len(), 1, "the relay updated the message");
    assert!(!has_buttons(m));
    assert_eq!(t.slack.messages().len(), 1);
}

// ---------------------------------------------------------------------------------------------------------
// The history line

async fn history_line_counts_this_principals_earlier_requests_of_the_same_kind(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    with_migrate_policy(&t).await;
    let first = id_of(&t.create(DEPLOY_ARN, &deploy("one")).await);
    assert_eq!(history_line(&t.slack.messages()[0]), ":warning: *First request of its kind* in the last 30 days");

    // In the same millisecond: creation order still decides which one is earlier.
    let second = id_of(&t.create(DEPLOY_ARN, &deploy("two")).await);
    assert_eq!(
        history_line(&t.slack.messages()[1]),
        "2nd request of this kind in 30 days; last one still pending since 2026-11-25"
    );

    // Other kinds and other principals do not count.
    t.clock.advance_seconds(1);
    t.create(DEPLOY_ARN, &json!({"action": "deploy", "environment": "staging"})).await;
    t.create(DEPLOY_ARN, &migrate(json!({}))).await;
    t.create(OTHER_ROLE_ARN, &migrate(json!({}))).await;
    for i in 2..5 {
        assert!(history_line(&t.slack.messages()[i]).contains("First request of its kind"), "message {i}");
    }

    // Re-rendering the first message (cancel) still shows it as the first: later requests do not count.
    t.clock.advance_seconds(1);
    assert_eq!(cancel(&t, &second, Some(DEPLOY_ARN)).await.status, 200);
    assert_eq!(cancel(&t, &first, Some(DEPLOY_ARN)).await.status, 200);
    assert!(history_line(&t.slack.messages()[0]).contains("First request of its kind"));
    assert!(history_line(&t.slack.messages()[1]).starts_with("2nd request"));

    t.clock.advance_seconds(1);
    t.create(DEPLOY_ARN, &deploy("three")).await;
    assert_eq!(
        history_line(&t.slack.messages()[5]),
        "3rd request of this kind in 30 days; last one cancelled 2026-11-25"
    );

    // 31 days later the old ones have aged out.
    t.clock.advance_seconds(31 * 86_400);
    t.app.sweeper().run_once().await.unwrap();
    t.create(DEPLOY_ARN, &deploy("four")).await;
    assert!(history_line(t.slack.messages().last().unwrap()).contains("First request of its kind"));
}

// ---------------------------------------------------------------------------------------------------------
// Dependencies failing

async fn store_unavailable_is_503_with_retry_after(kind: StoreKind) {
    match kind {
        StoreKind::Embedded => {
            // Another process holds the database's write lock past the busy timeout.
            let (dir, store) = countersign_testkit::stores::embedded();
            let path = store.db_path().to_path_buf();
            let rig = Rig::new(Stores::from_one(store), Box::new(dir), FAKE_BOT_TOKEN).await;
            rig.apply_policies(POLICIES).await;
            let locker = rusqlite::Connection::open(&path).unwrap();
            locker.execute_batch("BEGIN IMMEDIATE").unwrap();
            let a = rig.create(&deploy("release")).await;
            assert_unavailable(&a);
            locker.execute_batch("ROLLBACK").unwrap();
            let a = rig.create(&deploy("release")).await;
            assert_eq!(a.status, 201, "retrying later works: {}", a.json);
        }
        StoreKind::Dynamodb => {
            // DynamoDB that never answers: nothing listens on port 1.
            let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url("http://127.0.0.1:1")
                .region(aws_config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "dead"))
                .retry_config(aws_config::retry::RetryConfig::disabled())
                .timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .connect_timeout(Duration::from_millis(500))
                        .operation_timeout(Duration::from_secs(2))
                        .build(),
                )
                .load()
                .await;
            let tables = countersign_aws::dynamodb::TableNames::with_prefix("cs-dead");
            let store = countersign_aws::dynamodb::DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), tables);
            let rig = Rig::new(Stores::from_one(Arc::new(store)), Box::new(()), FAKE_BOT_TOKEN).await;
            assert_unavailable(&rig.create(&deploy("release")).await);
            let id = RequestId::generate().to_string();
            for path in [format!("/v1/requests/{id}"), format!("/v1/requests/{id}?wait=2")] {
                assert_unavailable(&rig.call(api_event("GET", &path, None, Some(DEPLOY_ARN))).await);
            }
            let path = format!("/v1/requests/{id}/cancel");
            assert_unavailable(&rig.call(api_event("POST", &path, None, Some(DEPLOY_ARN))).await);
            // A refusal that cannot be audited is not answered as a refusal.
            let bad = api_event("POST", "/v1/requests", Some("not json"), Some(DEPLOY_ARN));
            assert_unavailable(&rig.call(bad).await);
            assert!(rig.slack.calls().is_empty());
        }
    }
}

async fn slack_ok_false_leaves_the_request_pending_and_retrying(kind: StoreKind) {
    // A bot token Slack does not accept: every call answers `{"ok": false, "error": "invalid_auth"}`.
    let Some(rig) = Rig::on(kind, "xoxb-0000000000-revoked-token").await else { return };
    let a = rig.create(&deploy("release")).await;
    assert_eq!(a.status, 201, "{}", a.json);
    assert_eq!((a.json["status"].as_str(), a.json["notification"].as_str()), (Some("pending"), Some("retrying")));
    let id = RequestId::parse(&id_of(&a)).unwrap();
    let events = rig.app.stores.audit.for_request(&id).await.unwrap();
    let failed: Vec<_> = events.iter().filter(|e| e.kind == AuditKind::SlackPostFailed).collect();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].details["error"].contains("invalid_auth"), "{:?}", failed[0].details);
    assert!(!failed[0].details.values().any(|v| v.contains("xoxb-")), "no token in the audit trail");
    rig.clock.advance_seconds(3600 - 1);
    rig.app.sweeper().run_once().await.unwrap();
    let r = rig.app.stores.requests.get_request(&id).await.unwrap().unwrap();
    assert_eq!((r.status, r.notification.state), (Status::Pending, NotificationState::Retrying));
    assert!(r.notification.attempts >= 2);
    assert!(rig.slack.messages().is_empty());
}

// ---------------------------------------------------------------------------------------------------------
// Threat rows

async fn t16_requester_spoofing_through_session_name_is_refused(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let role = "arn:aws:iam::111122223333:role/github-deploy";
    // (caller ARN, Ok(expected principal) or Err((status, code)))
    type Case<'a> = (&'a str, Result<&'a str, (u16, &'a str)>);
    let cases: &[Case] = &[
        // The policy's role, through a role ARN with a path: IAM names are unique whatever the path.
        ("arn:aws:iam::111122223333:role/ci/github-deploy", Ok(role)),
        // The policy's role in any session.
        ("arn:aws:sts::111122223333:assumed-role/github-deploy/anything-goes", Ok(role)),
        // Another role whose session is named after the policy's role.
        ("arn:aws:sts::111122223333:assumed-role/intern-role/github-deploy", Err((403, "no_matching_policy"))),
        // An SSO role, session named after the policy's role.
        (
            "arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_AdminAccess_0123456789abcdef/github-deploy",
            Err((403, "no_matching_policy")),
        ),
        // An IAM user with the role's name.
        ("arn:aws:iam::111122223333:user/github-deploy", Err((403, "no_matching_policy"))),
        ("arn:aws:iam::111122223333:user/ci/github-deploy", Err((403, "no_matching_policy"))),
        // Root and federated users are never requesters.
        ("arn:aws:iam::111122223333:root", Err((403, "no_matching_policy"))),
        ("arn:aws:sts::111122223333:federated-user/github-deploy", Err((403, "no_matching_policy"))),
        // The same role name in another account or partition.
        (FOREIGN_ARN, Err((403, "no_matching_policy"))),
        ("arn:aws-cn:sts::111122223333:assumed-role/github-deploy/run-42", Err((403, "no_matching_policy"))),
        ("arn:aws-us-gov:iam::111122223333:role/github-deploy", Err((403, "no_matching_policy"))),
        // Not a usable identity at all.
        ("arn:aws-iso:sts::111122223333:assumed-role/github-deploy/run-42", Err((401, "unauthenticated"))),
        ("arn:aws:sts::111122223333:assumed-role/github-deploy", Err((401, "unauthenticated"))),
        ("arn:aws:iam::111122223333:role/github-deploy\n", Err((401, "unauthenticated"))),
        ("github-deploy", Err((401, "unauthenticated"))),
    ];
    let mut created = vec![];
    for (arn, want) in cases {
        let a = t.create(arn, &deploy("release")).await;
        match want {
            Ok(principal) => {
                assert_eq!(a.status, 201, "{arn}: {}", a.json);
                assert_eq!(a.json["requester"]["principal"], *principal, "{arn}");
                assert_eq!(a.json["requester"]["arn"], *arn, "{arn}: the ARN is shown as verified");
                created.push(id_of(&a));
            }
            Err((status, code)) => {
                assert_eq!(a.status, *status, "{arn}: {}", a.json);
                assert_refused(&t, &a, *status, code, None).await;
            }
        }
    }
    assert_eq!(t.slack.messages().len(), created.len(), "only accepted requests reach Slack");
    // The session is shown as chosen by the caller, never as the identity.
    let m = &t.slack.messages()[1];
    let shown = serde_json::to_string(&m.blocks).unwrap();
    assert!(shown.contains("Session name (chosen by the caller)*\\n`anything-goes`"), "{shown}");
    // The role's other sessions see its requests; a session-name spoofer does not.
    for id in &created {
        assert_eq!(get(&t, id, Some(DEPLOY_ARN)).await.status, 200);
        let spoofer = "arn:aws:sts::111122223333:assumed-role/intern-role/github-deploy";
        assert_refused(&t, &get(&t, id, Some(spoofer)).await, 404, "not_found", None).await;
        assert_refused(&t, &cancel(&t, id, Some(spoofer)).await, 404, "not_found", None).await;
    }
    // No body field can claim an identity.
    let body = json!({"action": "deploy", "environment": "production", "reason": "r",
        "requester": {"arn": "arn:aws:sts::111122223333:assumed-role/github-deploy/x"}});
    let a = t.create("arn:aws:sts::111122223333:assumed-role/intern-role/x1", &body).await;
    assert_refused(&t, &a, 400, "invalid_request", None).await;
}

async fn t17_unlisted_account_is_refused_and_audited(kind: StoreKind) {
    let listed = RequestSettings { allowed_accounts: ["111122223333".to_string()].into(), ..Default::default() };
    let Some(t) = spawn_app_with(kind, listed).await else { return };
    t.apply_policies(&format!("{POLICIES}{FOREIGN_POLICY}")).await;
    let mine = id_of(&t.create(DEPLOY_ARN, &deploy("release")).await);
    let a = t.create(FOREIGN_ARN, &deploy("release")).await;
    assert_refused(&t, &a, 403, "account_not_allowed", None).await;
    let last = t.app.stores.audit.last().await.unwrap().unwrap();
    assert_eq!(last.actor, Actor::aws(FOREIGN_ARN));
    // Even a bad body from an unlisted account is refused for the account, before anything else.
    let a = post_raw(&t, b"{".to_vec(), Some("text/plain"), Some(FOREIGN_ARN)).await;
    assert_refused(&t, &a, 403, "account_not_allowed", None).await;
    assert_refused(&t, &get(&t, &mine, Some(FOREIGN_ARN)).await, 403, "account_not_allowed", None).await;
    assert_refused(&t, &cancel(&t, &mine, Some(FOREIGN_ARN)).await, 403, "account_not_allowed", None).await;
    assert_eq!(t.slack.messages().len(), 1, "no post for the unlisted account");

    // Without the allow-list, the same call would have been accepted (the policy allows it).
    let Some(open) = spawn_app(kind).await else { return };
    open.apply_policies(&format!("{POLICIES}{FOREIGN_POLICY}")).await;
    let a = open.create(FOREIGN_ARN, &deploy("release")).await;
    assert_eq!((a.status.as_u16(), a.json["policy"]["name"].as_str()), (201, Some("foreign-deploy")), "{}", a.json);

    // The organization check: API Gateway reports `principalOrgId`; it must be the configured one.
    let org = RequestSettings { allowed_org_id: Some("o-exampleorg1".into()), ..Default::default() };
    let Some(t) = spawn_app_with(kind, org).await else { return };
    let a = t.create(DEPLOY_ARN, &deploy("release")).await;
    assert_eq!(a.status, 201, "the fixture's organization is the allowed one: {}", a.json);
    for org in [Some("o-evil000001"), Some(""), None] {
        let mut req = api_event("POST", "/v1/requests", Some(&deploy("release").to_string()), Some(DEPLOY_ARN));
        let Some(RequestContext::ApiGatewayV1(ctx)) = req.extensions_mut().get_mut::<RequestContext>() else {
            panic!("an API Gateway REST context")
        };
        ctx.identity.other.remove("principalOrgId");
        if let Some(o) = org {
            ctx.identity.other.insert("principalOrgId".into(), json!(o));
        }
        let a = t.call_api(req).await;
        assert_refused(&t, &a, 403, "account_not_allowed", None).await;
    }
}

async fn t18_pending_cap_and_idempotency_collapse_retries(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    with_migrate_policy(&t).await;
    // Same key, same body: the same request, and still one message.
    let body = json!({"action": "deploy", "environment": "production", "reason": "release 42",
        "details": {"a": "1", "b": "2"}, "idempotency_key": "ci-run-42-deploy", "ttl_seconds": 900});
    let first = t.create(DEPLOY_ARN, &body).await;
    assert_eq!(first.status, 201, "{}", first.json);
    let again = t.create(DEPLOY_ARN, &body).await;
    assert_eq!(again.status, 200, "{}", again.json);
    assert_eq!(again.json, first.json, "the same object");
    // The same JSON written differently (key order) is the same body; another session is the same principal.
    let reordered = r#"{"ttl_seconds": 900, "idempotency_key": "ci-run-42-deploy", "details": {"b": "2", "a": "1"},
        "reason": "release 42", "environment": "production", "action": "deploy"}"#;
    let a = t.call_api(api_event("POST", "/v1/requests", Some(reordered), Some(SAME_ROLE_OTHER_SESSION))).await;
    assert_eq!((a.status.as_u16(), id_of(&a)), (200, id_of(&first)), "{}", a.json);
    assert_eq!(t.slack.messages().len(), 1);
    assert_eq!(t.slack.calls_to("chat.postMessage").len(), 1, "one request, one message");
    // Same key, another body: a conflict, nothing new.
    for changed in [json!({"reason": "release 43"}), json!({"ttl_seconds": 901}), json!({"details": {"a": "1"}})] {
        let mut b = body.clone();
        for (k, v) in changed.as_object().unwrap() {
            b[k] = v.clone();
        }
        let a = t.create(DEPLOY_ARN, &b).await;
        assert_refused(&t, &a, 409, "idempotency_conflict", None).await;
    }
    // Keys are scoped to the principal: another role's identical key is its own request.
    let k = json!({"idempotency_key": "shared-key"});
    let mine = t.create(DEPLOY_ARN, &migrate(k.clone())).await;
    let theirs = t.create(OTHER_ROLE_ARN, &migrate(k.clone())).await;
    assert_eq!((mine.status.as_u16(), theirs.status.as_u16()), (201, 201));
    assert_ne!(id_of(&mine), id_of(&theirs));
    let posts_before_cap = t.slack.calls_to("chat.postMessage").len();

    // The pending cap (max_pending 3 for deploy-production): the 4th is refused and never posted.
    let second = t.create(DEPLOY_ARN, &deploy("two")).await;
    let third = t.create(DEPLOY_ARN, &deploy("three")).await;
    assert_eq!((second.status.as_u16(), third.status.as_u16()), (201, 201));
    let posts = t.slack.calls_to("chat.postMessage").len();
    assert_eq!(posts, posts_before_cap + 2);
    let a = t.create(DEPLOY_ARN, &deploy("four")).await;
    assert_refused(&t, &a, 429, "too_many_pending", None).await;
    let a = t.create(SAME_ROLE_OTHER_SESSION, &deploy("four")).await;
    assert_refused(&t, &a, 429, "too_many_pending", None).await;
    assert_eq!(t.slack.calls_to("chat.postMessage").len(), posts, "no Slack post over the cap");
    // At the cap, a retry of an existing request still gets it back.
    let a = t.create(DEPLOY_ARN, &body).await;
    assert_eq!((a.status.as_u16(), id_of(&a)), (200, id_of(&first)), "{}", a.json);
    // The cap is per policy: other policies are unaffected; freeing a slot lets the next one in.
    assert_eq!(t.create(DEPLOY_ARN, &migrate(json!({}))).await.status, 201);
    assert_eq!(cancel(&t, &id_of(&second), Some(DEPLOY_ARN)).await.status, 200);
    assert_eq!(t.create(DEPLOY_ARN, &deploy("four")).await.status, 201);
    let kinds: Vec<AuditKind> = audit(&t).await.iter().map(|e| e.kind).collect();
    assert_eq!(count(&kinds, AuditKind::RequestCreated), 7);
}

async fn t18_concurrent_retries_with_one_key_make_one_request_and_one_message(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let body = json!({"action": "deploy", "environment": "production", "reason": "r",
        "idempotency_key": "ci-run-7"})
    .to_string();
    let api = t.app.request_api();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let req = to_axum(api_event("POST", "/v1/requests", Some(&body), Some(DEPLOY_ARN)));
            let api = api.clone();
            tokio::spawn(async move { to_answer(api.oneshot(req).await.unwrap()).await })
        })
        .collect();
    let mut answers = vec![];
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 7, "{statuses:?}");
    let ids: BTreeSet<String> = answers.iter().map(id_of).collect();
    assert_eq!(ids.len(), 1);
    t.app.sweeper().run_once().await.unwrap();
    t.clock.advance_seconds(120);
    t.app.sweeper().run_once().await.unwrap();
    assert_eq!(t.slack.calls_to("chat.postMessage").len(), 1, "one message, also after the relay ran");

    // Six different requests at once with two pending slots left (max_pending 3): exactly two get in.
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let body = deploy(&format!("burst {i}")).to_string();
            let req = to_axum(api_event("POST", "/v1/requests", Some(&body), Some(DEPLOY_ARN)));
            let api = api.clone();
            tokio::spawn(async move { to_answer(api.oneshot(req).await.unwrap()).await })
        })
        .collect();
    let mut statuses = vec![];
    for task in tasks {
        statuses.push(task.await.unwrap().status.as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec![201, 201, 429, 429, 429, 429]);
    assert_eq!(t.slack.calls_to("chat.postMessage").len(), 3, "no post for the refused ones");
}

async fn t19_mrkdwn_injection_is_escaped_end_to_end(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let reason = "Deploy <!channel> <!here> <@U123> <https://evil.example|Approve> & <!subteam^S0SRE00001>";
    let body = json!({
        "action": "deploy", "environment": "production", "reason": reason, "resource": "svc/<!here>",
        "details": {"<!channel>": "<https://evil.example|Approve>", "note": "<@U123> *bold* `code`"}
    });
    let a = t.create(DEPLOY_ARN, &body).await;
    assert_eq!(a.status, 201, "{}", a.json);
    assert_eq!(a.json["reason"], reason, "the API returns what was sent; escaping is Slack's concern");
    let call = &t.slack.calls_to("chat.postMessage")[0];
    assert!(call.body.get("link_names").is_none_or(|v| v == &json!(false)), "{}", call.body);
    assert!(call.body.get("parse").is_none_or(|v| v != &json!("full")), "{}", call.body);
    let check = |blocks: &Value, text: &str| {
        let s = serde_json::to_string(blocks).unwrap();
        for raw in ["<!channel>", "<!here>", "<@U123>", "<https://evil.example"] {
            assert!(!s.contains(raw), "{raw} reached Slack unescaped: {s}");
        }
        for escaped in [
            "&lt;!channel&gt;",
            "&lt;!here&gt;",
            "&lt;@U123&gt;",
            "&lt;https://evil.example|Approve&gt;",
            "&amp; &lt;!subteam^S0SRE00001&gt;",
        ] {
            assert!(s.contains(escaped), "{escaped} missing: {s}");
        }
        assert_eq!(s.matches("<!subteam^S0SRE00001>").count(), 1, "mentions come from the policy only");
        assert!(!text.contains("channel") && !text.contains("evil"), "fallback text: {text}");
    };
    let m = &t.slack.messages()[0];
    check(&m.blocks, m.text.as_deref().unwrap_or(""));
    // The update after a cancel is escaped the same way.
    assert_eq!(cancel(&t, &id_of(&a), Some(DEPLOY_ARN)).await.status, 200);
    let m = &t.slack.messages()[0];
    assert_eq!(m.updates.len(), 1);
    check(&m.updates[0]["blocks"], m.updates[0]["text"].as_str().unwrap_or(""));
}

async fn t20_limits_at_plus_minus_one(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    with_migrate_policy(&t).await;
    let e = |n: usize| "é".repeat(n); // two bytes, one character
    let details = |n: usize| -> Value { (0..n).map(|i| (format!("k{i:02}"), json!("v"))).collect() };
    // (extra fields, Ok or Err(field))
    let cases: Vec<(Value, Result<(), &str>)> = vec![
        (json!({"details": details(20)}), Ok(())),
        (json!({"details": details(21)}), Err("details")),
        (json!({"details": {e(64): "v"}}), Ok(())),
        (json!({"details": {e(65): "v"}}), Err("details")),
        (json!({"details": {"k": e(500)}}), Ok(())),
        (json!({"details": {"k": e(501)}}), Err("details")),
        (json!({"idempotency_key": "k".repeat(128)}), Ok(())),
        (json!({"idempotency_key": "k".repeat(129)}), Err("idempotency_key")),
        (json!({"idempotency_key": "clé"}), Err("idempotency_key")),
        (json!({"resource": e(256)}), Ok(())),
        (json!({"resource": e(257)}), Err("resource")),
        (json!({"reason": e(1000)}), Ok(())),
        (json!({"reason": e(1001)}), Err("reason")),
        (json!({"ttl_seconds": 59}), Err("ttl_seconds")),
        (json!({"ttl_seconds": 60}), Ok(())),
        (json!({"ttl_seconds": 3600}), Ok(())),
        (json!({"ttl_seconds": 3601}), Err("ttl_seconds")),
        (json!({"ttl_seconds": 0}), Err("ttl_seconds")),
    ];
    for (extra, want) in cases {
        let shown = extra.to_string().chars().take(60).collect::<String>();
        let a = t.create(DEPLOY_ARN, &migrate(extra.clone())).await;
        match want {
            Ok(()) => {
                assert_eq!(a.status, 201, "{shown}: {}", a.json);
                assert_eq!(a.json["notification"], "posted", "{shown}: Slack accepted the message");
                if let Some(ttl) = extra.get("ttl_seconds").and_then(Value::as_i64) {
                    assert_eq!(a.json["expires_at"], t.clock.now_ts().plus_seconds(ttl).to_rfc3339());
                }
                for k in ["details", "resource", "reason"] {
                    if let Some(v) = extra.get(k) {
                        assert_eq!(&a.json[k], v, "{shown}: stored as sent");
                    }
                }
            }
            Err(field) => assert_refused(&t, &a, 400, "invalid_request", Some(field)).await,
        }
    }
    // The body: 16 KiB exactly is read, one byte more is refused before parsing.
    let base = migrate(json!({"reason": "padded"})).to_string();
    let exact = format!("{base}{}", " ".repeat(16 * 1024 - base.len()));
    assert_eq!(exact.len(), 16 * 1024);
    let a = post_raw(&t, exact.clone().into_bytes(), Some("application/json"), Some(DEPLOY_ARN)).await;
    assert_eq!(a.status, 201, "{}", a.json);
    let a = post_raw(&t, format!("{exact} ").into_bytes(), Some("application/json"), Some(DEPLOY_ARN)).await;
    assert_refused(&t, &a, 413, "payload_too_large", None).await;
    let a = post_raw(&t, vec![b' '; 1 << 20], Some("application/json"), Some(DEPLOY_ARN)).await;
    assert_refused(&t, &a, 413, "payload_too_large", None).await;
}

async fn t20_worst_case_text_stays_within_block_kit_limits(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    with_migrate_policy(&t).await;
    // Every requester string at its limit, made of characters that grow when escaped, with multibyte
    // characters and escapes at every possible cut.
    let details: serde_json::Map<String, Value> = (0..20)
        .map(|i| {
            let key = format!("{i:02}{}", "<é".repeat(31));
            let value = if i < 8 { "é&".repeat(250) } else { "&".repeat(500) };
            (key, json!(value))
        })
        .collect();
    let body = migrate(json!({
        "reason": "&é<".repeat(333) + "&",
        "resource": ">".repeat(256),
        "details": details,
    }));
    assert!(body.to_string().len() <= 16 * 1024);
    let a = t.create(DEPLOY_ARN, &body).await;
    assert_eq!(a.status, 201, "{}", a.json);
    assert_eq!(a.json["notification"], "posted", "the fake Slack, which enforces Block Kit's limits, accepted it");
    let m = &t.slack.messages()[0];
    let mut texts = vec![];
    strings(&m.blocks, &mut texts);
    for s in &texts {
        for (i, _) in s.match_indices('&') {
            assert!(["&amp;", "&lt;", "&gt;"].iter().any(|esc| s[i..].starts_with(esc)), "a cut split an escape: {s}");
        }
    }
    assert!(texts.iter().any(|s| s.ends_with('…')), "long text is visibly cut");
    // The same holds for the update after a cancel.
    assert_eq!(cancel(&t, &id_of(&a), Some(DEPLOY_ARN)).await.status, 200);
    assert_eq!(t.slack.messages()[0].updates.len(), 1, "the update was accepted too");
}

async fn t21_body_cannot_choose_channel_or_approvers(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    for (field, value) in [
        ("channel", json!("C0EVIL0001")),
        ("approvers", json!(["U0ATTACKER"])),
        ("approvers", json!({"users": ["U0ATTACKER"]})),
        ("required_approvals", json!(0)),
        ("policy", json!("staging-auto")),
        ("owners", json!([])),
        ("status", json!("approved")),
    ] {
        let mut body = deploy("release");
        body[field] = value;
        let a = t.create(DEPLOY_ARN, &body).await;
        assert_refused(&t, &a, 400, "invalid_request", None).await;
        let message = a.json["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("unknown field \"{field}\"")), "{message}");
    }
    assert!(t.slack.calls().is_empty(), "nothing was posted anywhere");
    // Without them, the policy decides: its channel, its approvers, its quorum.
    let a = t.create(DEPLOY_ARN, &deploy("release")).await;
    assert_eq!((a.status.as_u16(), a.json["required_approvals"].as_u64()), (201, Some(2)));
    let m = &t.slack.messages()[0];
    assert_eq!(m.channel, "C0APPROVALS");
    let shown = serde_json::to_string(&m.blocks).unwrap();
    assert!(shown.contains("<@UALICE0001>") && !shown.contains("U0ATTACKER"), "{shown}");
}

async fn t23_slack_failure_then_recovery_posts_exactly_one_message(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    // 500, then 429 with Retry-After: 3, then a call that hangs past the client's timeout (500 ms).
    t.slack.set_behaviour([Behaviour::Status500, Behaviour::RateLimited(3), Behaviour::Hang]);
    let a = t.create(DEPLOY_ARN, &deploy("release")).await;
    assert_eq!(a.status, 201, "the request is stored even though Slack failed: {}", a.json);
    assert_eq!((a.json["status"].as_str(), a.json["notification"].as_str()), (Some("pending"), Some("retrying")));
    let id = RequestId::parse(&id_of(&a)).unwrap();
    let stored = || async { t.app.stores.requests.get_request(&id).await.unwrap().unwrap() };

    // (seconds the relay must wait after this failure, Slack's behaviour on the next try)
    let waits = [5, 3, 20];
    for (attempt, wait) in waits.iter().enumerate() {
        let r = stored().await;
        assert_eq!((r.status, r.notification.state), (Status::Pending, NotificationState::Retrying));
        assert_eq!(r.notification.attempts as usize, attempt + 1);
        let due = r.notification.next_attempt_at.unwrap();
        assert_eq!(due, t.clock.now_ts().plus_seconds(*wait), "attempt {}: backoff / Retry-After", attempt + 1);
        // Not before it is due.
        t.clock.set(due.plus_millis(-1));
        t.app.sweeper().run_once().await.unwrap();
        assert_eq!(t.post_attempts(), attempt + 1, "no call before next_attempt_at");
        t.clock.set(due);
        t.app.sweeper().run_once().await.unwrap();
        assert_eq!(t.post_attempts(), attempt + 2);
        let got = get(&t, &id.to_string(), Some(DEPLOY_ARN)).await;
        assert_eq!(got.json["status"], "pending", "pending throughout");
    }
    let r = stored().await;
    assert_eq!((r.status, r.notification.state), (Status::Pending, NotificationState::Posted));
    let msgs = t.slack.messages();
    assert_eq!(msgs.len(), 1, "exactly one message");
    assert_eq!((Some(msgs[0].ts.as_str()), msgs[0].channel.as_str()), (r.notification.ts.as_deref(), "C0APPROVALS"));
    assert_eq!(get(&t, &id.to_string(), Some(DEPLOY_ARN)).await.json["notification"], "posted");

    // Later relay runs change nothing; the relayed message works like any other.
    t.clock.advance_seconds(120);
    t.app.sweeper().run_once().await.unwrap();
    assert_eq!(t.post_attempts(), 4);
    approve_twice(&t, &id.to_string()).await;
    assert_eq!(get(&t, &id.to_string(), Some(DEPLOY_ARN)).await.json["status"], "approved");
    assert_eq!(t.slack.messages().len(), 1);

    let kinds = audit_kinds_for(&t, &id.to_string()).await;
    assert_eq!(count(&kinds, AuditKind::SlackPostFailed), 3, "{kinds:?}");
    assert_eq!(count(&kinds, AuditKind::SlackPosted), 1, "{kinds:?}");
}

async fn t23_cancel_during_a_slow_relay_post_still_makes_one_message(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    t.slack.set_behaviour([Behaviour::Status500]);
    let a = t.create(DEPLOY_ARN, &deploy("release")).await;
    assert_eq!(a.json["notification"], "retrying", "{}", a.json);
    let id = id_of(&a);
    // The relay's post is slow (but within the client's timeout); the requester cancels meanwhile.
    t.clock.advance_seconds(5);
    t.slack.set_behaviour([Behaviour::Delay(400)]);
    let sweeper = t.app.sweeper();
    let relay = tokio::spawn(async move { sweeper.run_once().await.unwrap() });
    let started = Instant::now();
    while t.slack.calls_to("chat.postMessage").len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "the relay never called Slack");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let c = cancel(&t, &id, Some(DEPLOY_ARN)).await;
    assert_eq!((c.status.as_u16(), c.json["status"].as_str()), (200, Some("cancelled")), "{}", c.json);
    relay.await.unwrap();
    t.clock.advance_seconds(120);
    t.app.sweeper().run_once().await.unwrap();
    let msgs = t.slack.messages();
    assert_eq!(msgs.len(), 1, "the cancel must not post a second message while the relay's post is in flight");
    assert!(serde_json::to_string(&msgs[0].blocks).unwrap().contains("Cancelled"), "the message ends up current");
    assert!(!has_buttons(&msgs[0]));
    let kinds = audit_kinds_for(&t, &id).await;
    assert_eq!(count(&kinds, AuditKind::SlackPosted), 1, "{kinds:?}");
}

// ---------------------------------------------------------------------------------------------------------
// The contract document

#[test]
fn openapi_paths_match_the_router() {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(include_str!("../../docs/openapi.yaml")).expect("docs/openapi.yaml is YAML");
    let paths = doc["paths"].as_mapping().expect("paths");
    let methods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        let path = path.as_str().expect("path is a string");
        for (method, _) in item.as_mapping().expect("path item") {
            let method = method.as_str().expect("method is a string");
            if methods.contains(&method) {
                documented.insert((method.to_string(), path.to_string()));
            }
        }
    }
    let served: BTreeSet<(String, String)> =
        countersign_lambda::http::api::ROUTES.iter().map(|(m, p)| ((*m).to_string(), (*p).to_string())).collect();
    assert_eq!(documented, served);
    // Every error code the API answers is in the documented enum.
    let codes = &doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"];
    let codes: BTreeSet<&str> =
        codes.as_sequence().expect("error code enum").iter().filter_map(|c| c.as_str()).collect();
    for code in [
        "invalid_request",
        "unauthenticated",
        "account_not_allowed",
        "no_matching_policy",
        "reason_required",
        "payload_too_large",
        "unsupported_media_type",
        "too_many_pending",
        "not_found",
        "method_not_allowed",
        "idempotency_conflict",
        "already_decided",
        "unavailable",
    ] {
        assert!(codes.contains(code), "{code} is not documented in openapi.yaml");
    }
}

/// `POST /v1/requests` without any IAM identity in the request context.
async fn create_anonymous(t: &TestApp, body: &Value) -> Answer {
    t.call_api(api_event("POST", "/v1/requests", Some(&body.to_string()), None)).await
}
