//! A fake Slack Web API on 127.0.0.1 that speaks Slack's wire format and enforces its documented limits,
//! so tests fail the way production would. Local mode's Slack simulator grows from it.
//!
//! - `POST /api/{method}` with `Authorization: Bearer TOKEN`: `chat.postMessage` (with `metadata` and
//!   `thread_ts`), `chat.update`, `chat.postEphemeral`, `views.open`, `usergroups.users.list`, `users.info`
//!   (also as `GET ?user=…`, form arguments only, like Slack's read methods; every well-formed user id is an
//!   active member of [`FAKE_TEAM_ID`] unless [`FakeSlack::set_user`] says otherwise),
//!   `conversations.history` (Slack's paging: newest first, `oldest`/`latest`/`inclusive`, `limit` up to
//!   999, opaque `cursor`, `has_more`, `response_metadata.next_cursor`; metadata only with
//!   `include_all_metadata`). Answers `{"ok": true, …}` or `{"ok": false, "error": "…"}` like Slack
//!   (`not_authed`, `invalid_auth`, `invalid_blocks`, `invalid_metadata_format`, `message_not_found`,
//!   `no_such_subteam`, `user_not_found`, `missing_scope`, `invalid_limit`, `invalid_cursor`, `unknown_method`, …).
//! - Message timestamps come from the clock given to [`FakeSlack::start_with_clock`] (the system clock
//!   otherwise), strictly increasing, as Slack's do.
//! - `POST /response/{id}`: stands in for `response_url`s (see [`FakeSlack::response_url`]).
//!
//! Every call is recorded. A queue of [`Behaviour`]s, one consumed per call (API or response URL), makes
//! it answer 500, 429 with `Retry-After`, hang, or answer slowly; when the queue is empty it behaves
//! normally.
//!
//! It is test and development machinery: it must never be reachable from a deployed Lambda. Local mode's
//! simulator (`crate::local::simulator`) shares its wire helpers and limit checks.

use std::collections::{HashMap, VecDeque};
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

use super::blocks::limits;
use super::interaction::parse_form;
use crate::ports::{Clock, SystemClock};

/// The bot token the fake accepts unless started with another.
pub const FAKE_BOT_TOKEN: &str = "xoxb-0000000000-fake-test-token";
/// The app (`app_id`) and bot (`bot_id`) the fake posts as.
pub const FAKE_APP_ID: &str = "A0APP00001";
pub const FAKE_BOT_ID: &str = "B0FAKEBOT1";
/// The workspace the fake's users belong to by default (the tests' configured team).
pub const FAKE_TEAM_ID: &str = "T0TEAM0001";
/// The bot scopes the fake's token has when `conversations.history` is refused (see
/// [`FakeSlack::set_history_scope`]).
const SCOPES_WITHOUT_HISTORY: &str = "chat:write,usergroups:read,users:read";
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

/// How the fake's directory (`users.info`) describes one account; [`FakeUser::member`] is the default for
/// every user id nobody set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeUser {
    pub team_id: String,
    /// Set: an Enterprise Grid account (`enterprise_user`), member of `team_id` in that organization.
    pub enterprise_id: Option<String>,
    pub deleted: bool,
    pub is_bot: bool,
    pub is_app_user: bool,
    pub is_restricted: bool,
    pub is_ultra_restricted: bool,
}

impl FakeUser {
    /// An active, full member of [`FAKE_TEAM_ID`].
    pub fn member() -> Self {
        Self {
            team_id: FAKE_TEAM_ID.to_string(),
            enterprise_id: None,
            deleted: false,
            is_bot: false,
            is_app_user: false,
            is_restricted: false,
            is_ultra_restricted: false,
        }
    }

    /// The user object as Slack's `users.info` sends it. A deactivated account's omits the role flags,
    /// as Slack's does.
    pub fn wire(&self, id: &str) -> Value {
        let mut u = json!({
            "id": id, "team_id": self.team_id, "name": id.to_lowercase(), "real_name": id,
            "deleted": self.deleted, "is_bot": self.is_bot, "is_app_user": self.is_app_user,
            "profile": { "real_name": id, "display_name": id.to_lowercase(), "team": self.team_id },
            "updated": 1_700_000_000,
        });
        if !self.deleted {
            u["is_admin"] = false.into();
            u["is_owner"] = false.into();
            u["is_restricted"] = self.is_restricted.into();
            u["is_ultra_restricted"] = self.is_ultra_restricted.into();
            u["tz"] = "Europe/Amsterdam".into();
        }
        if let Some(e) = &self.enterprise_id {
            u["enterprise_user"] = json!({ "id": id, "enterprise_id": e, "enterprise_name": "Example Org",
                                           "is_admin": false, "is_owner": false, "teams": [self.team_id] });
        }
        u
    }
}

/// Slack's `users.info` over a directory: `user` must be a form (or query) argument; a JSON body's
/// arguments are not read, as Slack's read methods do not. Shared with local mode's simulator.
pub(crate) fn users_info_answer(
    json_body: bool,
    body: &Map<String, Value>,
    lookup: impl FnOnce(&str) -> Option<Value>,
) -> Response {
    let user = if json_body { None } else { str_field(body, "user") };
    match user.and_then(lookup) {
        Some(u) => slack_ok(json!({ "user": u })),
        None => slack_err("user_not_found"),
    }
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

#[derive(Default)]
struct Inner {
    token: String,
    queue: VecDeque<Behaviour>,
    calls: Vec<Call>,
    messages: Vec<FakeMessage>,
    usergroups: HashMap<String, Vec<String>>,
    /// `users.info` overrides: `None` is an unknown user (`user_not_found`).
    users: HashMap<String, Option<FakeUser>>,
    /// The last ts handed out, in microseconds.
    last_ts_micros: i64,
    clock: Option<Arc<dyn Clock>>,
    /// `false`: the token lacks `channels:history` (an install made before it was asked for).
    no_history_scope: bool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").field("messages", &self.messages.len()).finish_non_exhaustive()
    }
}

impl Inner {
    /// A new message ts: the clock's time in microseconds, strictly increasing.
    fn next_ts(&mut self) -> String {
        let now = self.clock.as_ref().map_or_else(|| SystemClock.now(), |c| c.now()).unix_millis() * 1000;
        let t = now.max(self.last_ts_micros + 1);
        self.last_ts_micros = t;
        format!("{}.{:06}", t.div_euclid(1_000_000), t.rem_euclid(1_000_000))
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
        Self::serve(Inner { token: token.to_string(), ..Inner::default() }).await
    }

    /// Like [`Self::start`], with message timestamps taken from `clock` (a test's manual clock), so
    /// `conversations.history`'s `oldest` compares them with the app's own times as Slack's would.
    pub async fn start_with_clock(clock: Arc<dyn Clock>) -> std::io::Result<Self> {
        Self::serve(Inner { token: FAKE_BOT_TOKEN.to_string(), clock: Some(clock), ..Inner::default() }).await
    }

    async fn serve(inner: Inner) -> std::io::Result<Self> {
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
        lock(&self.state).usergroups.insert(group.to_string(), members.iter().map(|m| (*m).to_string()).collect());
    }

    /// How `users.info` describes `user` from now on.
    pub fn set_user(&self, user: &str, account: FakeUser) {
        lock(&self.state).users.insert(user.to_string(), Some(account));
    }

    /// `users.info` answers `user_not_found` for `user` from now on.
    pub fn remove_user(&self, user: &str) {
        lock(&self.state).users.insert(user.to_string(), None);
    }

    /// With `false`, `conversations.history` answers `missing_scope`, as for an install whose token was
    /// granted before `channels:history` was added to the manifest.
    pub fn set_history_scope(&self, granted: bool) {
        lock(&self.state).no_history_scope = !granted;
    }

    /// Puts a top-level message in `channel` as another app would post it (another bot, a copycat), with
    /// `metadata`. Returns its ts.
    pub fn inject_message(&self, channel: &str, app_id: &str, text: &str, metadata: Option<Value>) -> String {
        let mut s = lock(&self.state);
        let ts = s.next_ts();
        s.messages.push(FakeMessage {
            channel: channel.to_string(),
            ts: ts.clone(),
            thread_ts: None,
            app_id: app_id.to_string(),
            metadata,
            text: Some(text.to_string()),
            blocks: Value::Null,
            updates: vec![],
        });
        ts
    }

    /// Every message (top-level and thread replies), in posting order.
    pub fn messages(&self) -> Vec<FakeMessage> {
        lock(&self.state).messages.clone()
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

pub(crate) fn parse_body(content_type: Option<&str>, body: &[u8]) -> Value {
    let is_form = content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        return match parse_form(body) {
            Ok(pairs) => Value::Object(pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect()),
            Err(_) => Value::Null,
        };
    }
    // Slack reads a JSON body only when it is labelled as JSON.
    let is_json = content_type.is_some_and(|c| c.starts_with("application/json"));
    if is_json {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    } else {
        Value::Null
    }
}

pub(crate) fn slack_ok(extra: Value) -> Response {
    let mut body = Map::new();
    body.insert("ok".into(), Value::Bool(true));
    if let Value::Object(m) = extra {
        body.extend(m);
    }
    Json(Value::Object(body)).into_response()
}

pub(crate) fn slack_err(error: &str) -> Response {
    Json(json!({ "ok": false, "error": error })).into_response()
}

pub(crate) fn slack_err_with(error: &str, details: Vec<String>) -> Response {
    Json(json!({ "ok": false, "error": error, "response_metadata": { "messages": details } })).into_response()
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
    {
        let s = lock(&state);
        match auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")) {
            None => return slack_err("not_authed"),
            Some(t) if t != s.token => return slack_err("invalid_auth"),
            Some(_) => {}
        }
    }
    let Value::Object(body) = body else {
        return slack_err("invalid_arguments");
    };
    match method.as_str() {
        "chat.postMessage" => post_message(&state, &body),
        "chat.update" => update_message(&state, &body),
        "chat.postEphemeral" => post_ephemeral(&body),
        "views.open" => open_view(&body),
        "usergroups.users.list" => usergroup_members(&state, &body),
        "conversations.history" => history(&state, &body),
        "users.info" => {
            let json_body =
                header_str(&headers, header::CONTENT_TYPE).is_some_and(|c| c.starts_with("application/json"));
            let s = lock(&state);
            users_info_answer(json_body, &body, |u| match s.users.get(u) {
                Some(Some(account)) => Some(account.wire(u)),
                Some(None) => None,
                None => crate::domain::SlackUserId::parse(u).ok().map(|_| FakeUser::member().wire(u)),
            })
        }
        _ => slack_err("unknown_method"),
    }
}

pub(crate) fn str_field<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Slack's checks on a message body: `Some` is the error response to send.
pub(crate) fn check_message(body: &Map<String, Value>) -> Option<Response> {
    let text = body.get("text").and_then(Value::as_str);
    if text.is_none_or(str::is_empty) && body.get("blocks").is_none() {
        return Some(slack_err("no_text"));
    }
    if text.is_some_and(|t| t.chars().count() > limits::FALLBACK_TEXT) {
        return Some(slack_err("msg_too_long"));
    }
    let problems = message_limit_violations(&Value::Object(body.clone()));
    (!problems.is_empty()).then(|| slack_err_with("invalid_blocks", problems))
}

/// A message's `metadata` as Slack reads it: `Ok(None)` when absent, `Err` (Slack's error code) when it is not
/// `{"event_type": "…", "event_payload": {…}}` (a JSON-encoded string of it is accepted too, as Slack does).
pub(crate) fn message_metadata(body: &Map<String, Value>) -> Result<Option<Value>, &'static str> {
    let Some(raw) = body.get("metadata") else { return Ok(None) };
    let md = match raw {
        Value::String(s) => serde_json::from_str::<Value>(s).unwrap_or(Value::Null),
        other => other.clone(),
    };
    let event_type_ok = md.get("event_type").and_then(Value::as_str).is_some_and(|t| {
        !t.is_empty() && t.len() <= 255 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    });
    if !event_type_ok || !md.get("event_payload").is_some_and(Value::is_object) {
        return Err("invalid_metadata_format");
    }
    Ok(Some(md))
}

/// A ts (`seconds.micros`) as microseconds; `None` when it is not one.
fn ts_micros(ts: &str) -> Option<i64> {
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, ""));
    if secs.is_empty()
        || secs.len() > 12
        || frac.len() > 6
        || !(secs.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let micros: i64 = format!("{frac:0<6}").parse().ok()?;
    Some(secs.parse::<i64>().ok()? * 1_000_000 + micros)
}

fn number(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn flag(v: Option<&Value>) -> bool {
    v.is_some_and(|v| v.as_bool() == Some(true) || matches!(v.as_str(), Some("true" | "1")))
}

/// `conversations.history` over `messages` (the channel's top-level messages as Slack message objects, in
/// any order): Slack's filters and paging. Shared with local mode's simulator.
pub(crate) fn history_answer(body: &Map<String, Value>, mut messages: Vec<Value>) -> Response {
    let limit = match body.get("limit") {
        None => 100,
        Some(v) => match number(v) {
            Some(n) if n >= 1 => n.min(999),
            _ => return slack_err("invalid_limit"),
        },
    };
    let bound = |key: &str, err: &'static str| -> Result<Option<i64>, &'static str> {
        match str_field(body, key) {
            None => Ok(None),
            Some(t) => ts_micros(t).map(Some).ok_or(err),
        }
    };
    let (oldest, latest) = match (bound("oldest", "invalid_ts_oldest"), bound("latest", "invalid_ts_latest")) {
        (Ok(o), Ok(l)) => (o, l),
        (Err(code), _) | (_, Err(code)) => return slack_err(code),
    };
    // The cursor is opaque to callers: here, the hex of "before:<micros>".
    let before = match str_field(body, "cursor") {
        None => None,
        Some(c) => match hex::decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("before:").and_then(|m| m.parse::<i64>().ok()))
        {
            Some(m) => Some(m),
            None => return slack_err("invalid_cursor"),
        },
    };
    let inclusive = flag(body.get("inclusive"));
    let with_metadata = flag(body.get("include_all_metadata"));
    let at = |m: &Value| m.get("ts").and_then(Value::as_str).and_then(ts_micros).unwrap_or(0);
    messages.retain(|m| {
        let t = at(m);
        oldest.is_none_or(|o| if inclusive { t >= o } else { t > o })
            && latest.is_none_or(|l| if inclusive { t <= l } else { t < l })
            && before.is_none_or(|b| t < b)
    });
    messages.sort_by_key(|m| std::cmp::Reverse(at(m)));
    let has_more = messages.len() as u64 > limit;
    messages.truncate(usize::try_from(limit).unwrap_or(999));
    let next_cursor = match messages.last() {
        Some(m) if has_more => hex::encode(format!("before:{}", at(m))),
        _ => String::new(),
    };
    if !with_metadata {
        for m in &mut messages {
            if let Value::Object(o) = m {
                o.remove("metadata");
            }
        }
    }
    slack_ok(json!({
        "messages": messages, "has_more": has_more, "pin_count": 0,
        "response_metadata": { "next_cursor": next_cursor },
    }))
}

fn history(state: &Shared, body: &Map<String, Value>) -> Response {
    let Some(channel) = str_field(body, "channel") else {
        return slack_err("channel_not_found");
    };
    let s = lock(state);
    if s.no_history_scope {
        return Json(json!({ "ok": false, "error": "missing_scope", "needed": "channels:history",
                            "provided": SCOPES_WITHOUT_HISTORY }))
        .into_response();
    }
    let messages = s
        .messages
        .iter()
        .filter(|m| m.channel == channel && m.thread_ts.is_none())
        .map(|m| {
            let mut o = json!({ "type": "message", "user": "U0FAKEBOT1", "bot_id": FAKE_BOT_ID, "app_id": m.app_id,
                                "ts": m.ts, "text": m.text, "blocks": m.blocks });
            if let Some(md) = &m.metadata {
                o["metadata"] = md.clone();
            }
            o
        })
        .collect();
    drop(s);
    history_answer(body, messages)
}

fn post_message(state: &Shared, body: &Map<String, Value>) -> Response {
    let Some(channel) = str_field(body, "channel") else {
        return slack_err("channel_not_found");
    };
    if let Some(r) = check_message(body) {
        return r;
    }
    let metadata = match message_metadata(body) {
        Ok(m) => m,
        Err(code) => return slack_err(code),
    };
    let mut s = lock(state);
    let thread_ts = str_field(body, "thread_ts").map(str::to_string);
    if let Some(parent) = &thread_ts {
        if !s.messages.iter().any(|m| m.channel == channel && &m.ts == parent && m.thread_ts.is_none()) {
            return slack_err("thread_not_found");
        }
    }
    let ts = s.next_ts();
    let message = FakeMessage {
        channel: channel.to_string(),
        ts: ts.clone(),
        thread_ts,
        app_id: FAKE_APP_ID.to_string(),
        metadata,
        text: body.get("text").and_then(Value::as_str).map(str::to_string),
        blocks: body.get("blocks").cloned().unwrap_or(Value::Null),
        updates: vec![],
    };
    s.messages.push(message);
    slack_ok(json!({ "channel": channel, "ts": ts, "message": { "ts": ts, "text": body.get("text") } }))
}

fn update_message(state: &Shared, body: &Map<String, Value>) -> Response {
    let (Some(channel), Some(ts)) = (str_field(body, "channel"), str_field(body, "ts")) else {
        return slack_err("invalid_arguments");
    };
    if let Some(r) = check_message(body) {
        return r;
    }
    let metadata = match message_metadata(body) {
        Ok(m) => m,
        Err(code) => return slack_err(code),
    };
    let mut s = lock(state);
    let Some(m) = s.messages.iter_mut().find(|m| m.channel == channel && m.ts == ts) else {
        return slack_err("message_not_found");
    };
    if m.app_id != FAKE_APP_ID {
        return slack_err("cant_update_message");
    }
    if metadata.is_some() {
        m.metadata = metadata;
    }
    if let Some(t) = body.get("text").and_then(Value::as_str) {
        m.text = Some(t.to_string());
    }
    if let Some(b) = body.get("blocks") {
        m.blocks = b.clone();
    }
    m.updates.push(Value::Object(body.clone()));
    slack_ok(json!({ "channel": channel, "ts": ts }))
}

fn post_ephemeral(body: &Map<String, Value>) -> Response {
    if str_field(body, "channel").is_none() {
        return slack_err("channel_not_found");
    }
    if str_field(body, "user").is_none() {
        return slack_err("user_not_in_channel");
    }
    if let Some(r) = check_message(body) {
        return r;
    }
    slack_ok(json!({ "message_ts": "1700000000.999999" }))
}

fn open_view(body: &Map<String, Value>) -> Response {
    if str_field(body, "trigger_id").is_none() {
        return slack_err("invalid_trigger_id");
    }
    let Some(view) = body.get("view") else {
        return slack_err("invalid_arguments");
    };
    let problems = modal_limit_violations(view);
    if !problems.is_empty() {
        return slack_err_with("invalid_arguments", problems);
    }
    slack_ok(json!({ "view": { "id": "V0FAKEVIEW", "type": "modal" } }))
}

fn usergroup_members(state: &Shared, body: &Map<String, Value>) -> Response {
    let Some(group) = str_field(body, "usergroup") else {
        return slack_err("invalid_arguments");
    };
    match lock(state).usergroups.get(group) {
        Some(users) => slack_ok(json!({ "users": users })),
        None => slack_err("no_such_subteam"),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Limits, as documented for Block Kit. Shared by the fake and by the renderer's tests.

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

fn check_len(out: &mut Vec<String>, path: &str, v: Option<&Value>, max: usize) {
    if let Some(v) = v {
        if !v.is_string() {
            out.push(format!("{path}: not a string"));
        } else if chars(v) > max {
            out.push(format!("{path}: {} characters, limit {max}", chars(v)));
        }
    }
}

/// A text object: `{type: plain_text|mrkdwn, text}` within `max`.
fn check_text(out: &mut Vec<String>, path: &str, t: Option<&Value>, max: usize, plain_only: bool) {
    let Some(t) = t else {
        out.push(format!("{path}: missing text object"));
        return;
    };
    match t.get("type").and_then(Value::as_str) {
        Some("plain_text") => {}
        Some("mrkdwn") if !plain_only => {}
        other => out.push(format!("{path}: text type {other:?} not allowed here")),
    }
    // `emoji` is a boolean that only plain_text takes.
    if let Some(e) = t.get("emoji") {
        if !e.is_boolean() || t.get("type").and_then(Value::as_str) != Some("plain_text") {
            out.push(format!("{path}.emoji: only a boolean on plain_text"));
        }
    }
    match t.get("text") {
        Some(s) if chars(s) == 0 => out.push(format!("{path}: empty text")),
        Some(s) => check_len(out, &format!("{path}.text"), Some(s), max),
        None => out.push(format!("{path}: text object without text")),
    }
}

fn check_confirm(out: &mut Vec<String>, path: &str, c: &Value) {
    check_text(out, &format!("{path}.title"), c.get("title"), limits::CONFIRM_TITLE, true);
    check_text(out, &format!("{path}.text"), c.get("text"), limits::CONFIRM_TEXT, false);
    check_text(out, &format!("{path}.confirm"), c.get("confirm"), limits::CONFIRM_BUTTON, true);
    check_text(out, &format!("{path}.deny"), c.get("deny"), limits::CONFIRM_BUTTON, true);
}

fn check_element(out: &mut Vec<String>, path: &str, e: &Value) {
    check_len(out, &format!("{path}.action_id"), e.get("action_id"), limits::ACTION_ID);
    match e.get("type").and_then(Value::as_str) {
        Some("button") => {
            check_text(out, &format!("{path}.text"), e.get("text"), limits::BUTTON_TEXT, true);
            check_len(out, &format!("{path}.value"), e.get("value"), limits::BUTTON_VALUE);
            if let Some(c) = e.get("confirm") {
                check_confirm(out, &format!("{path}.confirm"), c);
            }
        }
        Some("plain_text_input") => {
            if let Some(m) = e.get("max_length").and_then(Value::as_u64) {
                if m > limits::PLAIN_TEXT_INPUT_MAX_LENGTH as u64 {
                    out.push(format!("{path}.max_length: {m} exceeds 3000"));
                }
            }
        }
        other => out.push(format!("{path}: element type {other:?} not supported by the fake")),
    }
}

fn check_block(out: &mut Vec<String>, path: &str, b: &Value) {
    check_len(out, &format!("{path}.block_id"), b.get("block_id"), limits::BLOCK_ID);
    match b.get("type").and_then(Value::as_str) {
        Some("divider") => {}
        Some("header") => check_text(out, &format!("{path}.text"), b.get("text"), limits::HEADER_TEXT, true),
        Some("section") => {
            let fields = b.get("fields").and_then(Value::as_array);
            if b.get("text").is_none() && fields.is_none() {
                out.push(format!("{path}: section needs text or fields"));
            }
            if b.get("text").is_some() {
                check_text(out, &format!("{path}.text"), b.get("text"), limits::SECTION_TEXT, false);
            }
            if let Some(fields) = fields {
                if fields.is_empty() || fields.len() > limits::MAX_FIELDS {
                    out.push(format!("{path}.fields: {} fields, limit {}", fields.len(), limits::MAX_FIELDS));
                }
                for (i, f) in fields.iter().enumerate() {
                    check_text(out, &format!("{path}.fields[{i}]"), Some(f), limits::FIELD_TEXT, false);
                }
            }
        }
        Some("context") => {
            let elements = b.get("elements").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
            if elements.is_empty() || elements.len() > limits::MAX_CONTEXT_ELEMENTS {
                out.push(format!("{path}.elements: {} elements, limit 10", elements.len()));
            }
            for (i, e) in elements.iter().enumerate() {
                check_text(out, &format!("{path}.elements[{i}]"), Some(e), limits::TEXT_OBJECT, false);
            }
        }
        Some("actions") => {
            let elements = b.get("elements").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
            if elements.is_empty() || elements.len() > limits::MAX_ACTION_ELEMENTS {
                out.push(format!("{path}.elements: {} elements, limit 25", elements.len()));
            }
            for (i, e) in elements.iter().enumerate() {
                check_element(out, &format!("{path}.elements[{i}]"), e);
            }
        }
        Some("input") => {
            check_text(out, &format!("{path}.label"), b.get("label"), limits::INPUT_LABEL, true);
            match b.get("element") {
                Some(e) => check_element(out, &format!("{path}.element"), e),
                None => out.push(format!("{path}: input without element")),
            }
        }
        other => out.push(format!("{path}: block type {other:?} not supported by the fake")),
    }
}

fn check_blocks(out: &mut Vec<String>, blocks: Option<&Value>, max: usize) {
    let Some(blocks) = blocks else { return };
    let Some(list) = blocks.as_array() else {
        out.push("blocks: not an array".into());
        return;
    };
    if list.len() > max {
        out.push(format!("blocks: {} blocks, limit {max}", list.len()));
    }
    for (i, b) in list.iter().enumerate() {
        check_block(out, &format!("blocks[{i}]"), b);
    }
}

/// Every documented limit a message (`{text, blocks, …}`) breaks; empty when it is acceptable.
pub fn message_limit_violations(message: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check_len(&mut out, "text", message.get("text"), limits::FALLBACK_TEXT);
    check_blocks(&mut out, message.get("blocks"), limits::MAX_BLOCKS);
    out
}

/// Every documented limit a modal view breaks; empty when it is acceptable.
pub fn modal_limit_violations(view: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if view.get("type").and_then(Value::as_str) != Some("modal") {
        out.push("view.type: must be modal".into());
    }
    check_text(&mut out, "view.title", view.get("title"), limits::MODAL_TITLE, true);
    for key in ["submit", "close"] {
        if let Some(t) = view.get(key) {
            check_text(&mut out, &format!("view.{key}"), Some(t), limits::MODAL_BUTTON, true);
        }
    }
    check_len(&mut out, "view.private_metadata", view.get("private_metadata"), limits::PRIVATE_METADATA);
    check_len(&mut out, "view.callback_id", view.get("callback_id"), limits::CALLBACK_ID);
    if view.get("blocks").is_none() {
        out.push("view.blocks: missing".into());
    }
    check_blocks(&mut out, view.get("blocks"), limits::MAX_MODAL_BLOCKS);
    out
}
