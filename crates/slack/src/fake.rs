//! A fake Slack Web API on 127.0.0.1 for tests: the one emulator ([`crate::emulator`]) behind a loopback
//! server, plus the knobs tests need to make it fail the way production would.
//!
//! - `POST /api/{method}` with `Authorization: Bearer TOKEN`: the emulator's methods (see
//!   [`crate::emulator`]); `users.info` also as `GET ?user=…`. Every well-formed user id is an active member
//!   of [`FAKE_TEAM_ID`] unless [`FakeSlack::set_user`] says otherwise; any channel and any `trigger_id`
//!   are accepted. Errors as Slack's (`not_authed`, `invalid_auth`, `invalid_blocks`,
//!   `invalid_metadata_format`, `message_not_found`, `no_such_subteam`, `user_not_found`, `missing_scope`,
//!   `invalid_limit`, `invalid_cursor`, `unknown_method`, …).
//! - Message timestamps come from the clock given to [`FakeSlack::start_with_clock`] (the system clock
//!   otherwise), strictly increasing, as Slack's do.
//! - `POST /response/{id}`: stands in for `response_url`s (see [`FakeSlack::response_url`]).
//!
//! Every call is recorded. A queue of [`Behaviour`]s, one consumed per call (API or response URL), makes
//! it answer 500, 429 with `Retry-After`, hang, or answer slowly; when the queue is empty it behaves
//! normally.
//!
//! It is test and development machinery: it must never be reachable from a deployed Lambda.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::emulator::{Message, Profile, Workspace};
use countersign_core::ports::{Clock, SystemClock};

pub use crate::emulator::{
    check_message, history_answer, message_limit_violations, message_metadata, modal_limit_violations, parse_body,
    slack_err, slack_err_with, slack_ok, str_field, users_info_answer, FakeUser, FAKE_TEAM_ID,
};

/// The bot token the fake accepts unless started with another.
pub const FAKE_BOT_TOKEN: &str = "xoxb-0000000000-fake-test-token";
/// The app (`app_id`) and bot (`bot_id`) the fake posts as.
pub const FAKE_APP_ID: &str = "A0APP00001";
pub const FAKE_BOT_ID: &str = "B0FAKEBOT1";
/// The bot user the fake's posts carry.
const FAKE_BOT_USER: &str = "U0FAKEBOT1";
/// How long [`Behaviour::Hang`] holds a call before answering 503 without effect.
pub const HANG_FOR: Duration = Duration::from_secs(30);

/// How the fake answers one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Handle the call as Slack would.
    Ok,
    /// HTTP 500, no effect.
    Status500,
    /// HTTP 429 with `Retry-After: n`, no effect.
    RateLimited(u64),
    /// Hold the call for [`HANG_FOR`], then 503, no effect.
    Hang,
    /// Hold the call this many milliseconds, then handle it as Slack would (a slow success).
    Delay(u64),
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// `chat.postMessage`, …, or `response_url` for response URL calls.
    pub method: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    /// The body as JSON (form bodies become an object of strings; unparsable ones `null`).
    pub body: Value,
    pub behaviour: Behaviour,
}

/// A message as the fake holds it, with every `chat.update` applied to it.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeMessage {
    pub channel: String,
    pub ts: String,
    /// Set on thread replies (reminders): the parent's ts.
    pub thread_ts: Option<String>,
    /// The app that posted it ([`FAKE_APP_ID`] for the product's posts).
    pub app_id: String,
    /// Slack message metadata (`{event_type, event_payload}`), as last posted or updated.
    pub metadata: Option<Value>,
    pub text: Option<String>,
    pub blocks: Value,
    /// The bodies of the `chat.update` calls applied, oldest first.
    pub updates: Vec<Value>,
}

struct Inner {
    ws: Workspace,
    queue: VecDeque<Behaviour>,
    calls: Vec<Call>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").field("ws", &self.ws).field("calls", &self.calls.len()).finish_non_exhaustive()
    }
}

/// The fake's workspace: lenient ids, any trigger, every update's body kept.
fn profile() -> Profile {
    Profile {
        app_id: FAKE_APP_ID.to_string(),
        bot_id: FAKE_BOT_ID.to_string(),
        bot_user: FAKE_BOT_USER.to_string(),
        well_formed_ids: false,
        issued_triggers: false,
        default_user: Some(FakeUser::member()),
        keep_update_bodies: true,
    }
}

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running fake; the server stops when this is dropped.
#[derive(Debug)]
pub struct FakeSlack {
    addr: SocketAddr,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeSlack {
    /// Binds 127.0.0.1 on a free port and serves until dropped. Accepts [`FAKE_BOT_TOKEN`].
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with_token(FAKE_BOT_TOKEN).await
    }

    pub async fn start_with_token(token: &str) -> std::io::Result<Self> {
        Self::serve(token, Arc::new(SystemClock)).await
    }

    /// Like [`Self::start`], with message timestamps taken from `clock` (a test's manual clock), so
    /// `conversations.history`'s `oldest` compares them with the app's own times as Slack's would.
    pub async fn start_with_clock(clock: Arc<dyn Clock>) -> std::io::Result<Self> {
        Self::serve(FAKE_BOT_TOKEN, clock).await
    }

    async fn serve(token: &str, clock: Arc<dyn Clock>) -> std::io::Result<Self> {
        let inner = Inner { ws: Workspace::new(profile(), token, Some(clock)), queue: VecDeque::new(), calls: vec![] };
        let state: Shared = Arc::new(Mutex::new(inner));
        let app = Router::new()
            .route("/api/{method}", post(api).get(api_get))
            .route("/response/{id}", post(response_url))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "fake Slack stopped");
            }
        });
        Ok(Self { addr, state, task })
    }

    /// `http://127.0.0.1:PORT/api`: give this to `SlackClient::with_base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// A response URL served by this fake (same origin as [`Self::base_url`]).
    pub fn response_url(&self, id: &str) -> String {
        format!("http://{}/response/{id}", self.addr)
    }

    /// Replaces the queue of behaviours; one is consumed per call, then the fake answers normally.
    pub fn set_behaviour(&self, queue: impl IntoIterator<Item = Behaviour>) {
        lock(&self.state).queue = queue.into_iter().collect();
    }

    /// Members returned by `usergroups.users.list` for `group`.
    pub fn set_usergroup(&self, group: &str, members: &[&str]) {
        lock(&self.state).ws.set_usergroup(group, members.iter().map(|m| (*m).to_string()).collect());
    }

    /// How `users.info` describes `user` from now on.
    pub fn set_user(&self, user: &str, account: FakeUser) {
        lock(&self.state).ws.set_user(user, Some(account));
    }

    /// `users.info` answers `user_not_found` for `user` from now on.
    pub fn remove_user(&self, user: &str) {
        lock(&self.state).ws.set_user(user, None);
    }

    /// With `false`, `conversations.history` answers `missing_scope`, as for an install whose token was
    /// granted before `channels:history` was added to the manifest.
    pub fn set_history_scope(&self, granted: bool) {
        lock(&self.state).ws.set_history_scope(granted);
    }

    /// Puts a top-level message in `channel` as another app would post it (another bot, a copycat), with
    /// `metadata`. Returns its ts.
    pub fn inject_message(&self, channel: &str, app_id: &str, text: &str, metadata: Option<Value>) -> String {
        let mut s = lock(&self.state);
        let ts = s.ws.next_ts();
        let message = Message {
            metadata,
            app_id: Some(app_id.to_string()),
            ..Message::new(ts.clone(), Some(text.to_string()), Value::Null)
        };
        s.ws.push(channel, message);
        ts
    }

    /// Every message (top-level and thread replies), in posting order.
    pub fn messages(&self) -> Vec<FakeMessage> {
        let s = lock(&self.state);
        let profile = s.ws.profile();
        s.ws.all_messages()
            .into_iter()
            .map(|(channel, m)| FakeMessage {
                channel: channel.to_string(),
                ts: m.ts.clone(),
                thread_ts: m.thread_ts.clone(),
                app_id: m.app(profile).to_string(),
                metadata: m.metadata.clone(),
                text: m.text.clone(),
                blocks: m.blocks.clone(),
                updates: m.update_bodies.clone(),
            })
            .collect()
    }

    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state).calls.clone()
    }

    /// Recorded calls of one method (`views.open`, `chat.postEphemeral`, `response_url`, …).
    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        lock(&self.state).calls.iter().filter(|c| c.method == method).cloned().collect()
    }
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Records the call and returns the behaviour to apply.
fn record(state: &Shared, method: &str, headers: &HeaderMap, body: &[u8]) -> (Behaviour, Value) {
    let content_type = header_str(headers, header::CONTENT_TYPE);
    let parsed = parse_body(content_type.as_deref(), body);
    record_parsed(state, method, headers, content_type, parsed)
}

fn record_parsed(
    state: &Shared,
    method: &str,
    headers: &HeaderMap,
    content_type: Option<String>,
    parsed: Value,
) -> (Behaviour, Value) {
    let mut s = lock(state);
    let behaviour = s.queue.pop_front().unwrap_or(Behaviour::Ok);
    s.calls.push(Call {
        method: method.to_string(),
        authorization: header_str(headers, header::AUTHORIZATION),
        content_type,
        body: parsed.clone(),
        behaviour,
    });
    (behaviour, parsed)
}

/// The failure a behaviour injects, or `None` to proceed normally.
async fn injected(behaviour: Behaviour) -> Option<Response> {
    match behaviour {
        Behaviour::Ok => None,
        Behaviour::Delay(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            None
        }
        Behaviour::Status500 => Some((StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()),
        Behaviour::RateLimited(secs) => Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, secs.to_string())],
                Json(json!({ "ok": false, "error": "ratelimited" })),
            )
                .into_response(),
        ),
        Behaviour::Hang => {
            tokio::time::sleep(HANG_FOR).await;
            Some((StatusCode::SERVICE_UNAVAILABLE, "gave up").into_response())
        }
    }
}

async fn response_url(
    State(state): State<Shared>,
    Path(_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (behaviour, _) = record(&state, "response_url", &headers, &body);
    if let Some(r) = injected(behaviour).await {
        return r;
    }
    slack_ok(json!({}))
}

/// `GET /api/{method}?args`: Slack takes read methods' arguments from the query string too.
async fn api_get(
    State(state): State<Shared>,
    Path(method): Path<String>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let args = if query.is_empty() {
        Value::Object(Map::new())
    } else {
        parse_body(Some("application/x-www-form-urlencoded"), query.as_bytes())
    };
    let (behaviour, args) = record_parsed(&state, &method, &headers, None, args);
    answer(state, method, headers, behaviour, args).await
}

async fn api(State(state): State<Shared>, Path(method): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let (behaviour, body) = record(&state, &method, &headers, &body);
    answer(state, method, headers, behaviour, body).await
}

async fn answer(state: Shared, method: String, headers: HeaderMap, behaviour: Behaviour, body: Value) -> Response {
    if let Some(r) = injected(behaviour).await {
        return r;
    }
    let auth = header_str(&headers, header::AUTHORIZATION);
    let json_body = header_str(&headers, header::CONTENT_TYPE).is_some_and(|c| c.starts_with("application/json"));
    lock(&state).ws.call(&method, auth.as_deref(), json_body, body).0
}
