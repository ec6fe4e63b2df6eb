//! Local mode, black box: `countersign_local::serve_until` on 127.0.0.1:0 with a fresh data directory,
//! called over real HTTP. Requests are signed by the `aws-sigv4` crate exactly as the CLI signs them (and by
//! curl's `--aws-sigv4` where curl supports it); Slack clicks go through the simulator's JSON API, which signs
//! them and posts them to `/slack/interactions`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use countersign_core::domain::audit::verify_chain;
use countersign_core::domain::{AuditKind, RequestId};
use countersign_core::ports::AuditLog;
use countersign_local::{serve_until, DevConfig, LocalError};
use countersign_sqlite::EmbeddedStore;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use countersign_testkit::app::POLICIES;

pub(crate) const KEY_ID: &str = "ASIALOCALTEST0000001";
pub(crate) const SECRET: &str = "dev/Secret+Key0123456789abcdefghijklmnop";
pub(crate) const ARN: &str = "arn:aws:sts::111122223333:assumed-role/github-deploy/run-42";
pub(crate) const SIGNING_SECRET: &str = "0123456789abcdef0123456789abcdef";
pub(crate) const ALICE: &str = "UALICE0001";
pub(crate) const BOB: &str = "UBOB000001";
const OWNER: &str = "U0OWNER001";
pub(crate) const CHANNEL: &str = "C0APPROVALS";

/// A running `countersign dev`; [`Dev::stop`] shuts it down gracefully.
pub(crate) struct Dev {
    addr: SocketAddr,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), LocalError>>,
}

/// The dev config the tests run: the test identity, users and policies file, any free port.
pub(crate) fn config_text(dir: &Path) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
data_dir = "{dir}"
region = "us-east-1"
policies = "{dir}/policies.yaml"
sensitive_environments = []
sweep_interval_seconds = 1

[slack]
bot_token = "xoxb-local-test"
signing_secret = "{SIGNING_SECRET}"
team_id = "T0TEAM0001"
app_id = "A0APP00001"

[[slack.users]]
id = "{ALICE}"
name = "alice"

[[slack.users]]
id = "{BOB}"
name = "bob"

[[slack.users]]
id = "{OWNER}"
name = "owner"

[[identities]]
access_key_id = "{KEY_ID}"
secret_access_key = "{SECRET}"
arn = "{ARN}"
"#,
        dir = dir.display()
    )
}

/// A fresh data directory holding the test policies.
pub(crate) fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("policies.yaml"), POLICIES).expect("write policies");
    dir
}

impl Dev {
    pub(crate) async fn start(dir: &Path) -> Self {
        Self::start_with(&config_text(dir)).await
    }

    pub(crate) async fn start_with(config: &str) -> Self {
        let config = DevConfig::parse(config).expect("test config is valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_until(config, listener, async {
            let _ = rx.await;
        }));
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
        let dev = Self { addr, http, stop: Some(tx), task };
        for _ in 0..100 {
            if let Ok(r) = dev.http.get(dev.url("/healthz")).send().await {
                if r.status() == 200 {
                    return dev;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("countersign dev did not become healthy");
    }

    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let done = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
        done.expect("server stops within 10 s").expect("server task").expect("server ran without error");
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Calls the request API signed by `aws-sigv4` with the given key, secret, region, service and time.
    #[allow(clippy::too_many_arguments)]
    async fn call_signed_as(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        key: &str,
        secret: &str,
        region: &str,
        service: &str,
        time: SystemTime,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        send_signed(&self.http, method, &self.url(path), body, (key, secret, region, service), time).await
    }

    pub(crate) async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (s, j, _) = self
            .call_signed_as(method, path, body, KEY_ID, SECRET, "us-east-1", "execute-api", SystemTime::now())
            .await;
        (s, j)
    }

    pub(crate) async fn create(&self, reason: &str) -> String {
        let body = json!({"action": "deploy", "environment": "production", "reason": reason});
        let (status, j) = self.call("POST", "/v1/requests", Some(&body)).await;
        assert_eq!(status, 201, "{j}");
        j["id"].as_str().expect("id").to_string()
    }

    pub(crate) async fn status_of(&self, id: &str) -> Value {
        let (status, j) = self.call("GET", &format!("/v1/requests/{id}?wait=0"), None).await;
        assert_eq!(status, 200, "{j}");
        j
    }

    async fn sim_state(&self, user: &str) -> Value {
        self.http.get(self.url(&format!("/slack/sim/state?user={user}"))).send().await.unwrap().json().await.unwrap()
    }

    /// The simulator's message for a request (found by its id in the blocks).
    async fn message_for(&self, id: &str) -> Value {
        let state = self.sim_state(ALICE).await;
        let channel =
            state["channels"].as_array().unwrap().iter().find(|c| c["id"] == CHANNEL).expect("channel").clone();
        channel["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["blocks"].to_string().contains(id))
            .cloned()
            .unwrap_or_else(|| panic!("no message for {id} in {channel}"))
    }

    async fn sim_post(&self, path: &str, body: &Value) -> Value {
        let r = self.http.post(self.url(path)).json(body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }

    pub(crate) async fn click(&self, user: &str, id: &str, action: &str) -> Value {
        let ts = self.message_for(id).await["ts"].as_str().unwrap().to_string();
        self.sim_post(
            "/slack/sim/click",
            &json!({"user": user, "channel": CHANNEL, "ts": ts, "action_id": action, "block_id": "countersign_actions"}),
        )
        .await
    }
}

/// Sends a request signed by `aws-sigv4` exactly as the CLI signs: `(key, secret, region, service)`.
async fn send_signed(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    body: Option<&Value>,
    creds: (&str, &str, &str, &str),
    time: SystemTime,
) -> (u16, Value, reqwest::header::HeaderMap) {
    try_send_signed(http, method, url, body, creds, time).await.expect("request sent")
}

/// [`send_signed`], with transport failures (the server is gone, a timeout) returned rather than panicking.
pub(crate) async fn try_send_signed(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    body: Option<&Value>,
    (key, secret, region, service): (&str, &str, &str, &str),
    time: SystemTime,
) -> Result<(u16, Value, reqwest::header::HeaderMap), reqwest::Error> {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let mut headers: Vec<(&str, &str)> = vec![];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let identity = Credentials::new(key, secret, None, None, "local-mode-test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .expect("signing params")
        .into();
    let signable = SignableRequest::new(method, url, headers.iter().copied(), SignableBody::Bytes(&bytes)).unwrap();
    let (instructions, _) = sign(signable, &params).expect("signs").into_parts();
    let mut req = http.request(method.parse().unwrap(), url).body(bytes.clone());
    for (k, v) in &headers {
        req = req.header(*k, *v);
    }
    for (k, v) in instructions.headers() {
        req = req.header(k, v);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let json = resp.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, json, h))
}

/// Posts to `/slack/interactions` what Slack (and the simulator) send for a click on Approve by `user` on the
/// message `ts` of request `id`: a `block_actions` form, signed with `secret`.
pub(crate) async fn post_click(
    http: &reqwest::Client,
    base: &str,
    secret: &[u8],
    user: &str,
    id: &str,
    ts: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    let payload = json!({
        "type": "block_actions", "api_app_id": "A0APP00001", "team": {"id": "T0TEAM0001"},
        "user": {"id": user, "team_id": "T0TEAM0001"},
        "container": {"type": "message", "message_ts": ts, "channel_id": CHANNEL},
        "trigger_id": "1.2.3", "response_url": format!("{base}/slack/response/x"),
        "actions": [{"type": "button", "action_id": "countersign_approve", "block_id": "countersign_actions", "value": id}]
    });
    let form = format!("payload={}", countersign_testkit::app::urlencode(&payload.to_string()));
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs().to_string();
    let signature = countersign_slack::signature::sign(secret, &now, form.as_bytes());
    http.post(format!("{base}/slack/interactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", &now)
        .header("x-slack-signature", signature)
        .body(form)
        .send()
        .await
}

fn has_buttons(message: &Value) -> bool {
    message["blocks"].as_array().unwrap().iter().any(|b| b["type"] == "actions")
}

#[tokio::test]
async fn request_signed_by_aws_sigv4_is_created_201_with_its_iam_identity_and_posted_to_the_simulator() {
    let dir = data_dir();
    let dev = Dev::start(dir.path()).await;
    let id = dev.create("release 42").await;
    let got = dev.status_of(&id).await;
    assert_eq!(got["requester"]["arn"], ARN);
    assert_eq!(got["requester"]["account_id"], "111122223333");
    assert_eq!(got["requester"]["principal"], "arn:aws:iam::111122223333:role/github-deploy");
    assert_eq!(got["status"], "pending");
    assert_eq!(got["notification"], "posted");
    let m = dev.message_for(&id).await;
    assert!(m["blocks"].to_string().contains("Verified by AWS IAM"));
    assert!(has_buttons(&m));
    dev.stop().await;
}

#[tokio::test]
async fn unsigned_tampered_stale_wrong_region_service_key_or_secret_requests_are_403_and_never_reach_the_api() {
    let dir = data_dir();
    let dev = Dev::start(dir.path()).await;
    let body = json!({"action": "deploy", "environment": "production", "reason": "r"});
    let now = SystemTime::now();

    let r = dev.http.post(dev.url("/v1/requests")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-amzn-errortype"], "MissingAuthenticationTokenException");
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "Missing Authentication Token");

    let cases: &[(&str, &str, &str, &str, SystemTime, &str)] = &[
        (KEY_ID, SECRET, "us-east-1", "execute-api", now - Duration::from_secs(600), "InvalidSignatureException"),
        (KEY_ID, SECRET, "us-east-1", "execute-api", now + Duration::from_secs(600), "InvalidSignatureException"),
        (KEY_ID, SECRET, "eu-west-1", "execute-api", now, "InvalidSignatureException"),
        (KEY_ID, SECRET, "us-east-1", "lambda", now, "InvalidSignatureException"),
        ("AKIAUNKNOWN000000001", SECRET, "us-east-1", "execute-api", now, "UnrecognizedClientException"),
        (KEY_ID, "not-the-secret", "us-east-1", "execute-api", now, "InvalidSignatureException"),
    ];
    for (key, secret, region, service, time, kind) in cases {
        let (status, j, h) =
            dev.call_signed_as("POST", "/v1/requests", Some(&body), key, secret, region, service, *time).await;
        assert_eq!(status, 403, "{key} {region} {service}: {j}");
        assert_eq!(h["x-amzn-errortype"], *kind, "{key} {region} {service}");
        assert!(j["message"].is_string());
        let text = j.to_string();
        assert!(!text.contains(SECRET) && !text.contains("Signature="), "{text}");
    }

    // A valid signature over a different body: sign one body, send another.
    let url = dev.url("/v1/requests");
    let signed_body = body.to_string();
    let identity = Credentials::new(KEY_ID, SECRET, None, None, "t").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("execute-api")
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        "POST",
        url.as_str(),
        [("content-type", "application/json")].into_iter(),
        SignableBody::Bytes(signed_body.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = dev.http.post(&url).header("content-type", "application/json");
    for (k, v) in instructions.headers() {
        req = req.header(k, v);
    }
    let tampered = signed_body.replace("production", "staging000");
    let r = req.body(tampered).send().await.unwrap();
    assert_eq!(r.status(), 403, "a body changed after signing is refused");

    // None of them reached the API: nothing was posted, no request exists.
    let state = dev.sim_state(ALICE).await;
    assert!(state["channels"].as_array().unwrap().iter().all(|c| c["messages"].as_array().unwrap().is_empty()));
    dev.stop().await;
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let audit = store.read_from(1, 1000).await.unwrap();
    assert!(audit.iter().all(|e| e.kind == AuditKind::PolicyChanged), "only the policy load was audited");
}

/// Row 40 through local mode's SigV4 verifier: the key a request was signed with reaches the policy's
/// `credentials: temporary` rule, so the ASIA… session key passes and an IAM user's AKIA… key is refused.
#[tokio::test]
async fn t40_local_mode_hands_the_signing_key_to_the_credentials_rule() {
    let dir = tempfile::tempdir().expect("temp dir");
    let user = "arn:aws:iam::111122223333:user/ci-legacy";
    let policies = format!(
        "version: 1\npolicies:\n  - name: deploy-production\n    principals: [{ARN_ROLE}, {user}]\n    actions: [deploy]\n\
         \x20   environments: [production]\n    approvers: {{users: [{ALICE}]}}\n    required_approvals: 1\n\
         \x20   channel: {CHANNEL}\n    max_ttl: 1h\n    credentials: temporary\n",
        ARN_ROLE = "arn:aws:iam::111122223333:role/github-deploy"
    );
    std::fs::write(dir.path().join("policies.yaml"), policies).expect("write policies");
    let long_term = "AKIALOCALTEST0000WXYZ";
    let config = format!(
        "{}\n[[identities]]\naccess_key_id = \"{long_term}\"\nsecret_access_key = \"{SECRET}\"\narn = \"{user}\"\n",
        config_text(dir.path())
    );
    let dev = Dev::start_with(&config).await;
    let body = json!({"action": "deploy", "environment": "production", "reason": "release 42"});
    let (status, j) = dev.call("POST", "/v1/requests", Some(&body)).await;
    assert_eq!(status, 201, "the session key is temporary: {j}");
    let (status, j, _) = dev
        .call_signed_as(
            "POST",
            "/v1/requests",
            Some(&body),
            long_term,
            SECRET,
            "us-east-1",
            "execute-api",
            SystemTime::now(),
        )
        .await;
    assert_eq!(status, 403, "{j}");
    assert_eq!(j["error"]["code"], "long_term_credentials", "{j}");
    assert!(j["error"]["message"].as_str().unwrap().contains("…WXYZ"), "{j}");
    dev.stop().await;
}

#[tokio::test]
async fn healthz_needs_no_signature_and_every_other_path_does() {
    let dir = data_dir();
    let dev = Dev::start(dir.path()).await;
    let r = dev.http.get(dev.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = dev.http.get(dev.url("/v1/nothing-here")).send().await.unwrap();
    assert_eq!(r.status(), 403, "unsigned calls to unknown paths look like API Gateway's");
    let (status, j) = dev.call("GET", "/v1/nothing-here", None).await;
    assert_eq!(status, 404, "{j}");
    assert_eq!(j["error"]["code"], "not_found");
    dev.stop().await;
}

#[tokio::test]
async fn request_signed_by_curl_aws_sigv4_is_accepted() {
    let help = std::process::Command::new("curl").args(["--help", "all"]).output();
    let supported = help.map(|o| String::from_utf8_lossy(&o.stdout).contains("--aws-sigv4")).unwrap_or(false);
    if !supported {
        eprintln!("skipped: this curl has no --aws-sigv4");
        return;
    }
    let dir = data_dir();
    let dev = Dev::start(dir.path()).await;
    let body = json!({"action": "deploy", "environment": "production", "reason": "from curl"}).to_string();
    let url = dev.url("/v1/requests");
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--aws-sigv4", "aws:amz:us-east-1:execute-api", "--user"])
        .arg(format!("{KEY_ID}:{SECRET}"))
        .args(["-H", "content-type: application/json", "-d", &body, &url])
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (json_text, code) = text.rsplit_once('\n').expect("status line");
    assert_eq!(code, "201", "{text}");
    let j: Value = serde_json::from_str(json_text).unwrap();
    assert_eq!(j["requester"]["arn"], ARN);
    let id = j["id"].as_str().unwrap();
    let read = tokio::process::Command::new("curl")
        .args(["-s", "--aws-sigv4", "aws:amz:us-east-1:execute-api", "--user"])
        .arg(format!("{KEY_ID}:{SECRET}"))
        .arg(dev.url(&format!("/v1/requests/{id}?wait=0")))
        .output()
        .await
        .unwrap();
    let j: Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(j["id"], id, "a GET with a query string verifies too");
    dev.stop().await;
}

#[tokio::test]
async fn simulator_clicks_are_signed_callbacks_that_approve_then_deny_through_the_modal() {
    let dir = data_dir();
    let dev = Dev::start(dir.path()).await;

    let id = dev.create("release 42").await;
    for user in [ALICE, BOB] {
        let r = dev.click(user, &id, "countersign_approve").await;
        assert_eq!(r["status"], 200, "{r}");
    }
    let got = dev.status_of(&id).await;
    assert_eq!(got["status"], "approved");
    assert_eq!(got["approvals"].as_array().unwrap().len(), 2);
    let m = dev.message_for(&id).await;
    assert!(!has_buttons(&m), "the final message has no buttons");
    assert!(m["edited"].as_bool().unwrap());
    let gone = json!({"user": ALICE, "channel": CHANNEL, "ts": m["ts"], "action_id": "countersign_approve",
                      "block_id": "countersign_actions"});
    let r = dev.http.post(dev.url("/slack/sim/click")).json(&gone).send().await.unwrap();
    assert_eq!(r.status(), 409, "a button that is gone cannot be clicked");

    let id2 = dev.create("release 43").await;
    let r = dev.click(ALICE, &id2, "countersign_deny").await;
    assert_eq!(r["status"], 200, "{r}");
    let state = dev.sim_state(ALICE).await;
    let modal = &state["modal"];
    assert_eq!(modal["view"]["private_metadata"], id2.as_str(), "views.open showed alice the deny modal");
    assert!(dev.sim_state(BOB).await["modal"].is_null(), "only the clicker sees the modal");
    let view_id = modal["view_id"].as_str().unwrap();
    let r = dev
        .sim_post(
            "/slack/sim/submit",
            &json!({"user": ALICE, "view_id": view_id, "values": {"reason": {"reason": "not during the freeze"}}}),
        )
        .await;
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["closed"], true);
    let got = dev.status_of(&id2).await;
    assert_eq!(got["status"], "denied");
    assert_eq!(got["denial"]["reason"], "not during the freeze");
    assert_eq!(got["denial"]["user_id"], ALICE);
    assert!(dev.sim_state(ALICE).await["modal"].is_null());
    assert!(!has_buttons(&dev.message_for(&id2).await));
    dev.stop().await;
}

#[tokio::test]
async fn owner_and_stranger_clicks_change_nothing_and_get_a_reply_only_they_see() {
    let dir = data_dir();
    let dev = Dev::start(dir.path()).await;
    let id = dev.create("release 42").await;
    let r = dev.click(OWNER, &id, "countersign_approve").await;
    assert_eq!(r["status"], 200, "{r}");
    let owner_view = dev.sim_state(OWNER).await;
    let texts: Vec<String> =
        owner_view["ephemerals"].as_array().unwrap().iter().map(|e| e["text"].as_str().unwrap().to_string()).collect();
    assert!(texts.iter().any(|t| t.contains("you own the identity")), "{texts:?}");
    assert!(dev.sim_state(ALICE).await["ephemerals"].as_array().unwrap().is_empty());
    let got = dev.status_of(&id).await;
    assert_eq!(got["status"], "pending");
    assert!(got["approvals"].as_array().unwrap().is_empty());
    let r = dev
        .http
        .post(dev.url("/slack/sim/click"))
        .json(&json!({"user": "U0NOBODY01", "channel": CHANNEL, "ts": "1.000001", "action_id": "x", "block_id": "y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "only configured users can be acted as");
    dev.stop().await;
}

#[tokio::test]
async fn restart_keeps_the_request_its_votes_audit_chain_and_message_and_the_flow_continues() {
    let dir = data_dir();
    let dev = Dev::start(dir.path()).await;
    let id = dev.create("release 42").await;
    assert_eq!(dev.click(ALICE, &id, "countersign_approve").await["status"], 200);
    dev.stop().await;

    let dev = Dev::start(dir.path()).await;
    let got = dev.status_of(&id).await;
    assert_eq!(got["status"], "pending");
    assert_eq!(got["approvals"][0]["user_id"], ALICE, "the vote survived the restart");
    let m = dev.message_for(&id).await;
    assert!(m["blocks"].to_string().contains("1 of 2 approvals"), "the message survived the restart");
    assert_eq!(dev.click(BOB, &id, "countersign_approve").await["status"], 200);
    assert_eq!(dev.status_of(&id).await["status"], "approved");
    assert!(!has_buttons(&dev.message_for(&id).await), "the restarted server updated the old message");
    dev.stop().await;

    let store = EmbeddedStore::open(dir.path()).unwrap();
    let all = store.read_from(1, 10_000).await.unwrap();
    verify_chain(&all).expect("the audit chain verifies across restarts");
    let policy_loads = all.iter().filter(|e| e.kind == AuditKind::PolicyChanged).count();
    assert_eq!(policy_loads, 2, "an unchanged policy file is not re-applied at the second start");
    let trail: Vec<AuditKind> =
        store.for_request(&RequestId::parse(&id).unwrap()).await.unwrap().iter().map(|e| e.kind).collect();
    for k in [AuditKind::RequestCreated, AuditKind::SlackPosted, AuditKind::VoteApprove, AuditKind::RequestApproved] {
        assert!(trail.contains(&k), "{k} missing from {trail:?}");
    }
    assert_eq!(trail.iter().filter(|k| **k == AuditKind::VoteApprove).count(), 2);
}

#[tokio::test]
async fn a_changed_policy_file_is_applied_at_start_and_audited_as_a_policy_change() {
    let dir = data_dir();
    let dev = Dev::start(dir.path()).await;
    dev.stop().await;
    let one = POLICIES.replacen("required_approvals: 2", "required_approvals: 1", 1);
    std::fs::write(dir.path().join("policies.yaml"), one).unwrap();
    let dev = Dev::start(dir.path()).await;
    let id = dev.create("release 42").await;
    assert_eq!(dev.status_of(&id).await["required_approvals"], 1);
    dev.stop().await;
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let all = store.read_from(1, 10_000).await.unwrap();
    let change = all
        .iter()
        .find(|e| e.kind == AuditKind::PolicyChanged && e.details.get("change").map(String::as_str) == Some("changed"))
        .expect("a policy.changed record for the edit");
    assert_eq!(change.details["policy"], "deploy-production");
    assert!(change.details["fields"].contains("required_approvals"));
}

#[tokio::test]
async fn simulator_page_api_refuses_cross_site_posts_and_its_slack_api_needs_the_bot_token() {
    let dir = data_dir();
    let dev = Dev::start(dir.path()).await;
    let click = json!({"user": ALICE, "channel": CHANNEL, "ts": "1.000001", "action_id": "a", "block_id": "b"});
    let r = dev
        .http
        .post(dev.url("/slack/sim/click"))
        .header("origin", "http://evil.example")
        .json(&click)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = dev
        .http
        .post(dev.url("/slack/sim/click"))
        .header("content-type", "text/plain")
        .body(click.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415, "a plain form post (no CORS preflight) is refused");

    let msg = json!({"channel": CHANNEL, "text": "hi"});
    let r: Value =
        dev.http.post(dev.url("/slack/api/chat.postMessage")).json(&msg).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["error"], "not_authed");
    let r: Value = dev
        .http
        .post(dev.url("/slack/api/chat.postMessage"))
        .bearer_auth("xoxb-wrong")
        .json(&msg)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["error"], "invalid_auth");
    let r: Value = dev
        .http
        .post(dev.url("/slack/api/views.open"))
        .bearer_auth("xoxb-local-test")
        .json(&json!({"trigger_id": "made.up.trigger", "view": {"type": "modal", "title": {"type": "plain_text", "text": "x"}, "blocks": []}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["error"], "invalid_trigger_id", "views.open needs a trigger from a real click");
    dev.stop().await;
}

#[tokio::test]
async fn forged_callbacks_to_slack_interactions_are_401_in_local_mode_too() {
    let dir = data_dir();
    let dev = Dev::start(dir.path()).await;
    let id = dev.create("release 42").await;
    let ts = dev.message_for(&id).await["ts"].as_str().unwrap().to_string();
    let r = post_click(&dev.http, &dev.url(""), b"not-the-signing-secret", ALICE, &id, &ts).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(dev.status_of(&id).await["approvals"].as_array().unwrap().is_empty());
    // A click through the simulator is signed with the configured secret and still counts.
    let r = dev.click(ALICE, &id, "countersign_approve").await;
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(dev.status_of(&id).await["approvals"].as_array().unwrap().len(), 1);
    dev.stop().await;
    // The forged one is audited like in a deployment, with the TCP peer as its source (no API Gateway here).
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let refused: Vec<_> = store
        .read_from(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == AuditKind::CallbackRejected)
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].actor.0, "slack:unknown");
    assert_eq!(refused[0].details["reason"], "signature_mismatch");
    assert_eq!(refused[0].details["source_ip"], "127.0.0.1");
}

#[tokio::test]
async fn a_missing_policy_file_stops_start_up_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = DevConfig::parse(&config_text(dir.path())).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = serve_until(config, listener, async {}).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, LocalError::PolicyFile { .. }), "{text}");
    assert!(text.contains(&PathBuf::from(dir.path()).join("policies.yaml").display().to_string()), "{text}");
}

#[tokio::test]
async fn the_sweeper_runs_in_process_and_posts_a_reminder_in_the_message_thread() {
    // A 60 s request is due its first reminder at a third of its life: 20 s. The sweeper runs every second.
    let dir = data_dir();
    let dev = Dev::start(dir.path()).await;
    let body = json!({"action": "deploy", "environment": "production", "reason": "r", "ttl_seconds": 60});
    let (status, j) = dev.call("POST", "/v1/requests", Some(&body)).await;
    assert_eq!(status, 201, "{j}");
    let id = j["id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let replies = dev.message_for(&id).await["replies"].as_array().map_or(0, Vec::len);
        if replies == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no reminder was posted in the thread within 40 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    dev.stop().await;
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let trail = store.for_request(&RequestId::parse(&id).unwrap()).await.unwrap();
    assert!(trail.iter().any(|e| e.kind == AuditKind::SlackReminded));
}

#[tokio::test]
async fn stopping_with_a_long_poll_in_flight_takes_at_most_the_grace_period() {
    let dir = data_dir();
    let dev = Dev::start(dir.path()).await;
    let id = dev.create("release 42").await;
    let addr = dev.addr;
    let poll = tokio::spawn(async move {
        let url = format!("http://{addr}/v1/requests/{id}?wait=20");
        let creds = (KEY_ID, SECRET, "us-east-1", "execute-api");
        send_signed(&reqwest::Client::new(), "GET", &url, None, creds, SystemTime::now()).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    dev.stop().await;
    let took = started.elapsed();
    assert!(took < countersign_local::SHUTDOWN_GRACE + Duration::from_secs(2), "stopping took {took:?}");
    assert!(took >= countersign_local::SHUTDOWN_GRACE, "the long poll was in flight ({took:?})");
    poll.abort();
}

/// Runs the real `countersign` binary against this local-mode server as the dev identity.
pub(crate) fn cli(dev: &Dev, args: &[&str]) -> tokio::process::Child {
    // Flags go before any `--`, after which everything belongs to the command `run` runs.
    let (head, tail) = match args.iter().position(|a| *a == "--") {
        Some(i) => args.split_at(i),
        None => (args, &[][..]),
    };
    countersign_testkit::cli::command()
        .args(head)
        .args(["--endpoint", &dev.url(""), "--region", "us-east-1"])
        .args(tail)
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env_remove("AWS_SESSION_TOKEN")
        .spawn()
        .expect("the CLI starts")
}

/// The id of the newest request message in the approvals channel, once it has appeared.
async fn newest_request_id(dev: &Dev, not: &[String]) -> String {
    loop {
        let state = dev.sim_state(ALICE).await;
        let channel = state["channels"].as_array().unwrap().iter().find(|c| c["id"] == CHANNEL).cloned();
        if let Some(c) = channel {
            for m in c["messages"].as_array().unwrap().iter().rev() {
                let text = m["blocks"].to_string();
                if let Some(i) = text.find("req_") {
                    let id: String = text[i..].chars().take(30).collect();
                    if !not.contains(&id) {
                        return id;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_waits_on_local_mode_exit_0_when_approved_and_run_skips_the_command_when_denied() {
    let dir = data_dir();
    let dev = Dev::start(dir.path()).await;

    // `request --wait`: two approvals in the simulator → exit 0, the request object on stdout.
    let child = cli(
        &dev,
        &[
            "request",
            "--action",
            "deploy",
            "--env",
            "production",
            "--reason",
            "cli",
            "--wait",
            "--timeout",
            "60s",
            "--output",
            "json",
        ],
    );
    let mut child = child;
    let id = tokio::select! {
        id = newest_request_id(&dev, &[]) => id,
        _ = tokio::time::sleep(Duration::from_secs(8)) => {
            let _ = child.start_kill();
            let out = child.wait_with_output().await.unwrap();
            panic!("no message; CLI said: {} {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        status = child.wait() => {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = e.read_to_string(&mut err).await;
            }
            panic!("the CLI exited early ({status:?}): {err}");
        }
    };
    for user in [ALICE, BOB] {
        let r = dev.click(user, &id, "countersign_approve").await;
        assert_eq!(r["status"], 200, "{r}");
    }
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is the request object");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["status"], "approved");

    // Redeemed once through local mode, signed with the key generated into the data directory (0600).
    let out = cli(&dev, &["redeem", &id]).wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let receipt = dir.path().join("receipt.jwt");
    std::fs::write(&receipt, &out.stdout).unwrap();
    let keys = cli(&dev, &["receipt", "keys"]).wait_with_output().await.unwrap();
    assert_eq!(keys.status.code(), Some(0), "{}", String::from_utf8_lossy(&keys.stderr));
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, &keys.stdout).unwrap();
    let verified = countersign_testkit::cli::command()
        .args(["receipt", "verify", receipt.to_str().unwrap(), "--jwks", jwks.to_str().unwrap(), "--env", "production"])
        .output()
        .await
        .unwrap();
    assert_eq!(verified.status.code(), Some(0), "{}", String::from_utf8_lossy(&verified.stderr));
    {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.path().join(countersign_local::receipt_key::KEY_FILE);
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let again = cli(&dev, &["redeem", &id]).wait_with_output().await.unwrap();
    assert_eq!(again.status.code(), Some(9), "{}", String::from_utf8_lossy(&again.stderr));

    // `run -- COMMAND`: a deny through the modal → exit 3 and the command never runs.
    let marker = dir.path().join("ran");
    let script = format!("touch '{}'", marker.display());
    let child = cli(
        &dev,
        &[
            "run",
            "--action",
            "deploy",
            "--env",
            "production",
            "--reason",
            "cli run",
            "--timeout",
            "60s",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let id2 = tokio::time::timeout(Duration::from_secs(30), newest_request_id(&dev, std::slice::from_ref(&id)))
        .await
        .expect("the run command's request reaches the simulator");
    dev.click(ALICE, &id2, "countersign_deny").await;
    let view_id = dev.sim_state(ALICE).await["modal"]["view_id"].as_str().unwrap().to_string();
    dev.sim_post(
        "/slack/sim/submit",
        &json!({"user": ALICE, "view_id": view_id, "values": {"reason": {"reason": "no"}}}),
    )
    .await;
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!marker.exists(), "a denied request never runs the command");
    dev.stop().await;
}

/// Set by [`acknowledged_writes_survive_sigkill`] for the child process it starts and kills.
const SIGKILL_CHILD_DIR: &str = "COUNTERSIGN_TEST_SIGKILL_CHILD_DIR";

/// The child of [`acknowledged_writes_survive_sigkill`]: 8 concurrent writers append to the embedded store
/// until killed, printing `acked TAG` after each acknowledged write. Does nothing in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_child_writes_until_killed() {
    use countersign_core::domain::{Actor, AuditDraft, Timestamp};
    use std::io::Write;
    let Some(dir) = std::env::var_os(SIGKILL_CHILD_DIR) else { return };
    let store = std::sync::Arc::new(EmbeddedStore::open(Path::new(&dir)).unwrap());
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0u64.. {
                    let tag = format!("{w}-{n}");
                    let d = AuditDraft::new(
                        Timestamp::from_unix_millis(1_000),
                        AuditKind::CallbackRejected,
                        Actor::system("test"),
                        None,
                    )
                    .with("tag", tag.clone());
                    store.append(vec![d]).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "acked {tag}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
}

/// Local mode must lose no acknowledged write when killed: a child process writes through the embedded
/// store (group commit) and is SIGKILLed mid-stream; every write it acknowledged is in the file after.
#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "local_mode::sigkill_child_writes_until_killed", "--nocapture", "--test-threads=1"])
        .env(SIGKILL_CHILD_DIR, dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = std::collections::BTreeSet::new();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.len() < 300 {
        let line = lines.next().expect("the child writes until killed").unwrap();
        if let Some(tag) = line.strip_prefix("acked ") {
            acked.insert(tag.to_string());
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acknowledgements printed before the kill but not yet read count too.
    for line in lines.map_while(Result::ok) {
        if let Some(tag) = line.strip_prefix("acked ") {
            acked.insert(tag.to_string());
        }
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let all = store.read_from(1, 1_000_000).await.unwrap();
    verify_chain(&all).expect("the chain is intact after SIGKILL");
    let stored: std::collections::BTreeSet<String> = all.iter().filter_map(|e| e.details.get("tag").cloned()).collect();
    let lost: Vec<&String> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost after SIGKILL: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_with_endpoint_asks_local_mode_who_the_caller_is_and_which_policies_match() {
    let dir = data_dir();
    let dev = Dev::start(dir.path()).await;
    let ran = countersign_testkit::cli::finish(cli(&dev, &["whoami", "--output", "json"])).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let v: Value = serde_json::from_str(&ran.stdout).expect("JSON");
    assert_eq!(v["arn"], ARN);
    assert_eq!(v["principal"], "arn:aws:iam::111122223333:role/github-deploy");
    assert_eq!((v["account_id"].as_str(), v["session"].as_str()), (Some("111122223333"), Some("run-42")));
    assert_eq!(v["credential"], "temporary", "local mode hands over the signing key's type: {v}");
    let names: Vec<&str> = v["policies"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["deploy-production", "staging-auto"]);
    let ran = countersign_testkit::cli::finish(cli(&dev, &["whoami"])).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.contains("credential: temporary"), "{}", ran.stdout);
    assert!(ran.stdout.contains("deploy-production: actions deploy; environments production"), "{}", ran.stdout);
    dev.stop().await;
}
