//! The Slack secrets as deployed: the real Secrets Manager adapter on the emulator, built from each
//! function's configuration exactly as the Lambda wiring builds it (`countersign_lambda::app::slack_secrets`).
//!
//! - Row 27: after a rotation the previous signing secret verifies only for the grace period, counted from
//!   the new `AWSCURRENT` version's `CreatedDate` on the app's (pinned) clock; after it, a callback signed
//!   with the old secret is refused like any bad signature (generic 401, a warning in the log) and audited
//!   as one `callback.rejected` record whose `reason` is `previous_secret_expired`, cached or not (the
//!   refusal's own tests are in `refused_callbacks`).
//! - Row 28: request-api and sweeper are configured with the bot-token secret only and never fetch the
//!   signing secret; the legacy combined secret still starts every function, with one warning line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use countersign_aws::secrets::SecretsManagerSlackSecrets;
use countersign_core::domain::{Status, Timestamp};
use countersign_lambda::app::slack_secrets;
use countersign_lambda::config::{Component, LambdaConfig};
use countersign_slack::fake::FAKE_BOT_TOKEN;
use countersign_slack::signature::sign;
use serde_json::{json, Value};

use crate::refused_callbacks::{assert_refusal_records, records_since};
use countersign_testkit::app::{
    capture_logs, on_both_stores, secretsmanager_client, spawn_app_with_secrets, urlencode, Answer, NowTs, Posted,
    StoreKind, TestApp,
};

const APPROVE: &str = "countersign_approve";
pub(crate) const OLD: &str = "old-signing-secret-1111111111111111";
pub(crate) const NEW: &str = "new-signing-secret-2222222222222222";

// ---- helpers -------------------------------------------------------------------------------------------

/// A Secrets Manager client on the emulator that records the secret id of every `GetSecretValue`.
#[derive(Debug, Clone, Default)]
struct Reads(Arc<Mutex<Vec<String>>>);

impl Reads {
    fn ids(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl aws_sdk_secretsmanager::config::Intercept for Reads {
    fn name(&self) -> &'static str {
        "Reads"
    }

    fn read_before_execution(
        &self,
        context: &aws_sdk_secretsmanager::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut aws_sdk_secretsmanager::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueInput;
        let id = context.input().downcast_ref::<GetSecretValueInput>().and_then(|i| i.secret_id().map(str::to_string));
        self.0.lock().unwrap().push(id.unwrap_or_else(|| "<not GetSecretValue>".into()));
        Ok(())
    }
}

async fn recording_client() -> Option<(aws_sdk_secretsmanager::Client, Reads)> {
    let sm = secretsmanager_client().await?;
    let reads = Reads::default();
    let conf = sm.config().to_builder().interceptor(reads.clone()).build();
    Some((aws_sdk_secretsmanager::Client::from_conf(conf), reads))
}

/// Two fresh secrets as the template creates them: `(signing secret id, bot token id)`.
pub(crate) async fn create_split_secrets(
    sm: &aws_sdk_secretsmanager::Client,
    signing_secret: &str,
) -> (String, String) {
    let run = ulid::Ulid::new();
    let (signing, bot) =
        (format!("countersign/slack-signing-secret-{run}"), format!("countersign/slack-bot-token-{run}"));
    sm.create_secret()
        .name(&signing)
        .secret_string(json!({"signing_secret": signing_secret}).to_string())
        .send()
        .await
        .unwrap();
    sm.create_secret().name(&bot).secret_string(json!({"bot_token": FAKE_BOT_TOKEN}).to_string()).send().await.unwrap();
    (signing, bot)
}

/// A function's configuration from the environment the template gives it, plus `extra`.
fn config(component: Component, vars: &[(&str, &str)]) -> LambdaConfig {
    let mut env: HashMap<String, String> = [
        ("COUNTERSIGN_POLICIES_TABLE", "cs-policies"),
        ("COUNTERSIGN_REQUESTS_TABLE", "cs-requests"),
        ("COUNTERSIGN_AUDIT_TABLE", "cs-audit"),
        ("COUNTERSIGN_RECEIPT_KEY_ID", "alias/countersign-receipts"),
        ("COUNTERSIGN_SLACK_TEAM_ID", countersign_testkit::app::TEAM_ID),
        ("COUNTERSIGN_SLACK_APP_ID", countersign_testkit::app::APP_ID),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    LambdaConfig::from_lookup(component, |k| env.get(k).cloned()).expect("configuration loads")
}

/// The interactions function's secrets, from its configuration, as the Lambda wiring builds them.
pub(crate) fn interactions_secrets(
    sm: &aws_sdk_secretsmanager::Client,
    signing: &str,
    bot: &str,
    vars: &[(&str, &str)],
) -> SecretsManagerSlackSecrets {
    let mut all =
        vec![("COUNTERSIGN_SLACK_SIGNING_SECRET_ID", signing), ("COUNTERSIGN_SLACK_BOT_TOKEN_SECRET_ID", bot)];
    all.extend_from_slice(vars);
    slack_secrets(sm.clone(), &config(Component::SlackInteractions, &all))
}

/// Puts a new signing secret (it becomes `AWSCURRENT`, the old one `AWSPREVIOUS`) and returns the new
/// version's `CreatedDate`, which is where the grace period starts.
pub(crate) async fn rotate(sm: &aws_sdk_secretsmanager::Client, id: &str, signing_secret: &str) -> Timestamp {
    sm.put_secret_value()
        .secret_id(id)
        .secret_string(json!({"signing_secret": signing_secret}).to_string())
        .send()
        .await
        .unwrap();
    let current = sm.get_secret_value().secret_id(id).version_stage("AWSCURRENT").send().await.unwrap();
    assert!(current.secret_string().unwrap().contains(signing_secret));
    let created = current.created_date().expect("GetSecretValue returns CreatedDate");
    Timestamp::from_unix_millis(created.to_millis().unwrap())
}

/// A click on `p`'s Approve button by `user`, signed with `secret` at the app's current time.
pub(crate) fn click_signed_with(t: &TestApp, secret: &str, user: &str, p: &Posted) -> Request<Body> {
    let form = format!("payload={}", urlencode(&t.click(user, APPROVE, &p.id, &p.channel, &p.ts).to_string()));
    let ts = t.clock.now_ts().unix_seconds().to_string();
    Request::builder()
        .method("POST")
        .uri("/slack/interactions")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", &ts)
        .header("x-slack-signature", sign(secret.as_bytes(), &ts, form.as_bytes()))
        .body(Body::from(form))
        .unwrap()
}

pub(crate) fn assert_generic_401(a: &Answer, what: &str) {
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{what}: {}", a.json);
    assert_eq!(a.json, json!({"error": {"code": "unauthorized", "message": "invalid request signature"}}), "{what}");
}

/// Refused exactly like any bad signature: generic 401, no Slack call, the request untouched, and one
/// `callback.rejected` record that names the old secret (`previous_secret_expired`).
async fn assert_refused_like_a_bad_signature(t: &TestApp, req: Request<Body>, p: &Posted, what: &str) {
    let (request, audit, calls) = (t.request(&p.id).await, t.audit().await.len(), t.slack.calls().len());
    let a = t.call_slack(req).await;
    assert_generic_401(&a, what);
    assert_eq!(t.request(&p.id).await, request, "{what}: the request changed");
    let written = records_since(t, audit).await;
    assert_refusal_records(&written, &[("bad_signature", "previous_secret_expired")], what);
    assert_eq!(t.slack.calls().len(), calls, "{what}: Slack was called");
}

// ---- row 27: the previous signing secret dies with the grace period ------------------------------------

/// TTL 0: every callback reads Secrets Manager again, so this is the adapter's decision on fresh data.
async fn t27_old_secret_verifies_inside_the_grace_and_is_401_after_it(kind: StoreKind) {
    let Some(sm) = secretsmanager_client().await else { return };
    let (signing, bot) = create_split_secrets(&sm, OLD).await;
    let adapter = interactions_secrets(&sm, &signing, &bot, &[("COUNTERSIGN_SECRET_CACHE_TTL_SECONDS", "0")]);
    let Some(t) = spawn_app_with_secrets(kind, Arc::new(adapter)).await else { return };
    let (buf, _guard) = capture_logs();
    let created = rotate(&sm, &signing, NEW).await;

    // Just after the rotation and one second before the default 600 s run out: the old secret verifies.
    t.clock.set(created.plus_seconds(1));
    let p = t.pending_request().await;
    let a = t.call_slack(click_signed_with(&t, OLD, "UALICE0001", &p)).await;
    assert_eq!(a.status, 200, "old secret just after the rotation: {}", a.json);
    t.clock.set(created.plus_seconds(599));
    let a = t.call_slack(click_signed_with(&t, OLD, "UBOB000001", &p)).await;
    assert_eq!(a.status, 200, "old secret at 599 s: {}", a.json);
    assert_eq!(t.request(&p.id).await.status, Status::Approved);

    // At 600 s it is a bad signature like any other; the new one keeps working.
    t.clock.set(created.plus_seconds(600));
    let q = t.pending_request().await;
    assert_refused_like_a_bad_signature(&t, click_signed_with(&t, OLD, "UALICE0001", &q), &q, "old at 600 s").await;
    t.clock.set(created.plus_seconds(3600));
    assert_refused_like_a_bad_signature(&t, click_signed_with(&t, OLD, "UALICE0001", &q), &q, "old at 1 h").await;
    let a = t.call_slack(click_signed_with(&t, NEW, "UALICE0001", &q)).await;
    assert_eq!(a.status, 200, "new secret: {}", a.json);
    assert_eq!(t.request(&q.id).await.approvals.len(), 1);
    for s in [OLD, NEW] {
        assert!(!buf.text().contains(s), "a signing secret was logged");
    }
}

/// A long cache and no refetch allowed: the previous secret cached before the grace ran out stops verifying
/// when it runs out, without any call to Secrets Manager.
async fn t27_cached_previous_secret_expires_without_a_refetch(kind: StoreKind) {
    let Some((sm, reads)) = recording_client().await else { return };
    let (signing, bot) = create_split_secrets(&sm, OLD).await;
    let adapter = interactions_secrets(&sm, &signing, &bot, &[("COUNTERSIGN_SECRET_CACHE_TTL_SECONDS", "3600")])
        .with_min_refresh_interval(Duration::from_secs(3600));
    let Some(t) = spawn_app_with_secrets(kind, Arc::new(adapter)).await else { return };
    let created = rotate(&sm, &signing, NEW).await;
    t.clock.set(created.plus_seconds(10));
    let p = t.pending_request().await;
    let a = t.call_slack(click_signed_with(&t, OLD, "UALICE0001", &p)).await;
    assert_eq!(a.status, 200, "old secret inside the grace (loads the cache): {}", a.json);
    let loaded = reads.ids().len();

    t.clock.set(created.plus_seconds(600));
    assert_refused_like_a_bad_signature(&t, click_signed_with(&t, OLD, "UBOB000001", &p), &p, "cached old").await;
    assert_eq!(reads.ids().len(), loaded, "decided from the cache: no Secrets Manager call");
    let a = t.call_slack(click_signed_with(&t, NEW, "UBOB000001", &p)).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(t.request(&p.id).await.status, Status::Approved);
}

/// `COUNTERSIGN_SLACK_SECRET_GRACE_SECONDS=0`: the previous secret never verifies, even at the instant of
/// the rotation.
async fn t27_grace_zero_never_accepts_the_previous_secret(kind: StoreKind) {
    let Some(sm) = secretsmanager_client().await else { return };
    let (signing, bot) = create_split_secrets(&sm, OLD).await;
    let vars = [("COUNTERSIGN_SECRET_CACHE_TTL_SECONDS", "0"), ("COUNTERSIGN_SLACK_SECRET_GRACE_SECONDS", "0")];
    let adapter = interactions_secrets(&sm, &signing, &bot, &vars);
    let Some(t) = spawn_app_with_secrets(kind, Arc::new(adapter)).await else { return };
    let created = rotate(&sm, &signing, NEW).await;
    for at in [-5, 0, 1] {
        t.clock.set(created.plus_seconds(at));
        let p = t.pending_request().await;
        assert_refused_like_a_bad_signature(&t, click_signed_with(&t, OLD, "UALICE0001", &p), &p, &format!("{at}"))
            .await;
        let a = t.call_slack(click_signed_with(&t, NEW, "UALICE0001", &p)).await;
        assert_eq!(a.status, 200, "new secret at {at} s: {}", a.json);
    }
}

// ---- row 28: each function starts with only its secret -------------------------------------------------

/// request-api and sweeper, configured as the template configures them (both new variables set even, in
/// case an operator copies the interactions function's environment): the bot token is read, the signing
/// secret never — and a validly signed callback routed to such a function is refused (503), not verified.
async fn t28_request_api_and_sweeper_never_fetch_the_signing_secret(kind: StoreKind) {
    let Some((sm, reads)) = recording_client().await else { return };
    let (signing, bot) = create_split_secrets(&sm, OLD).await;
    let vars =
        [("COUNTERSIGN_SLACK_SIGNING_SECRET_ID", signing.as_str()), ("COUNTERSIGN_SLACK_BOT_TOKEN_SECRET_ID", &bot)];
    for component in [Component::RequestApi, Component::Sweeper] {
        let cfg = config(component, &vars);
        assert_eq!(cfg.slack_secrets.signing_secret, None, "{component:?}");
        let Some(t) = spawn_app_with_secrets(kind, Arc::new(slack_secrets(sm.clone(), &cfg))).await else { return };
        // Posting (request-api) and relaying (sweeper) read the bot token.
        let p = t.pending_request().await;
        t.app.sweeper().run_once().await.unwrap();
        let a = t.call_slack(click_signed_with(&t, OLD, "UALICE0001", &p)).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{component:?}: {}", a.json);
        assert_eq!(t.request(&p.id).await.status, Status::Pending);
        let ids = reads.ids();
        assert!(ids.contains(&bot), "{component:?}: the bot token was read: {ids:?}");
        assert!(!ids.contains(&signing), "{component:?} fetched the signing secret: {ids:?}");
    }
    // The interactions function reads both.
    let Some(t) = spawn_app_with_secrets(kind, Arc::new(interactions_secrets(&sm, &signing, &bot, &[]))).await else {
        return;
    };
    let p = t.pending_request().await;
    let a = t.call_slack(click_signed_with(&t, OLD, "UALICE0001", &p)).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert!(reads.ids().contains(&signing));
}

/// Runs a Lambda binary with `vars` (and no Lambda runtime to talk to, so it stops right after start-up);
/// returns its stderr, where the functions log.
async fn start_up(bin: &str, vars: &[(&str, &str)]) -> String {
    let mut c = tokio::process::Command::new(countersign_testkit::workspace_binary(bin));
    c.env_clear()
        .envs([
            ("COUNTERSIGN_POLICIES_TABLE", "cs-policies"),
            ("COUNTERSIGN_REQUESTS_TABLE", "cs-requests"),
            ("COUNTERSIGN_AUDIT_TABLE", "cs-audit"),
            ("COUNTERSIGN_RECEIPT_KEY_ID", "alias/countersign-receipts"),
            ("COUNTERSIGN_SLACK_TEAM_ID", countersign_testkit::app::TEAM_ID),
            ("COUNTERSIGN_SLACK_APP_ID", countersign_testkit::app::APP_ID),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            // What Lambda sets; nothing listens at the runtime API, so the function stops at its first poll.
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:1"),
            ("AWS_LAMBDA_FUNCTION_NAME", "countersign-test"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "countersign-test"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "countersign-test"),
        ])
        .envs(vars.iter().copied())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), c.output())
        .await
        .unwrap_or_else(|_| panic!("{bin} did not stop"))
        .unwrap_or_else(|e| panic!("run {bin}: {e}"));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const LAMBDAS: [(Component, &str); 3] = [
    (Component::RequestApi, "request-api"),
    (Component::SlackInteractions, "slack-interactions"),
    (Component::Sweeper, "sweeper"),
];

/// The legacy combined secret still starts every function: one warning line at start-up naming the
/// replacement (never, for request-api and sweeper, the signing secret's variable).
#[tokio::test]
async fn t28_legacy_combined_secret_starts_each_function_with_one_warning() {
    for (component, bin) in LAMBDAS {
        let logs = start_up(bin, &[("COUNTERSIGN_SLACK_SECRET_ID", "countersign/slack")]).await;
        assert!(!logs.contains("configuration error"), "{component:?}:\n{logs}");
        let lines: Vec<&str> = logs.lines().filter(|l| l.contains("COUNTERSIGN_SLACK_SECRET_ID")).collect();
        assert_eq!(lines.len(), 1, "{component:?}: exactly one line:\n{logs}");
        let line: Value = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{component:?}: {e}: {}", lines[0]));
        assert_eq!(line["level"], "WARN", "{component:?}: {line}");
        let message = line["message"].as_str().unwrap();
        assert!(message.contains("COUNTERSIGN_SLACK_BOT_TOKEN_SECRET_ID"), "{component:?}: {message}");
        let names_signing = message.contains("COUNTERSIGN_SLACK_SIGNING_SECRET_ID");
        assert_eq!(names_signing, component == Component::SlackInteractions, "{component:?}: {message}");

        // With the new variables: no warning.
        let logs = start_up(
            bin,
            &[
                ("COUNTERSIGN_SLACK_SIGNING_SECRET_ID", "countersign/slack-signing-secret"),
                ("COUNTERSIGN_SLACK_BOT_TOKEN_SECRET_ID", "countersign/slack-bot-token"),
            ],
        )
        .await;
        assert!(!logs.contains("configuration error") && !logs.contains("deprecated"), "{component:?}:\n{logs}");
    }
}

/// A bad grace period stops start-up with one line naming the variable.
#[tokio::test]
async fn t27_bad_grace_period_stops_start_up_naming_the_variable() {
    let (_, bin) = LAMBDAS[1];
    let logs = start_up(
        bin,
        &[("COUNTERSIGN_SLACK_SECRET_ID", "countersign/slack"), ("COUNTERSIGN_SLACK_SECRET_GRACE_SECONDS", "10m")],
    )
    .await;
    assert_eq!(
        logs.trim(),
        "configuration error: COUNTERSIGN_SLACK_SECRET_GRACE_SECONDS: \"10m\" is not a whole number of seconds from 0 to 3600"
    );
}

on_both_stores!(
    t27_old_secret_verifies_inside_the_grace_and_is_401_after_it,
    t27_cached_previous_secret_expires_without_a_refetch,
    t27_grace_zero_never_accepts_the_previous_secret,
    t28_request_api_and_sweeper_never_fetch_the_signing_secret,
);
