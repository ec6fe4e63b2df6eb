//! The Slack simulator: a Slack Web API subset the product's Slack client talks to when no real Slack is
//! configured, and a web page (`/slack/`) where a person reads the channels, picks which Slack user they are
//! acting as, and clicks. Every click becomes an interactivity callback shaped like Slack's, SIGNED with the
//! configured signing secret and POSTed to `/slack/interactions` over HTTP, so the production verification
//! path runs on every click. The page never sees the secret: it calls the small JSON API below and the
//! server signs.
//!
//! - `POST /slack/api/{method}` (bearer bot token): `chat.postMessage` (with `thread_ts` and `metadata`),
//!   `chat.update`, `chat.postEphemeral`, `views.open` (needs a fresh `trigger_id` from a click: 3 s, once),
//!   `usergroups.users.list`, `users.info` (configured users may be `deactivated` or `guest`; users the
//!   page lists are active members of the workspace; anyone else is `user_not_found`),
//!   `conversations.history` (Slack's paging, shared with the fake Slack, so the
//!   relay can adopt a post it never recorded). Slack's documented Block Kit limits are enforced (shared
//!   with the fake Slack).
//! - `POST /slack/response/{id}`: response URLs (30 minutes, at most 5 uses, like Slack's).
//! - `GET /slack/` (+ `app.js`, `app.css`): the page, served from the binary; no build step.
//! - `GET /slack/sim/state?user=U…`, `POST /slack/sim/click`, `POST /slack/sim/submit`,
//!   `POST /slack/sim/close`, `POST /slack/sim/dismiss`: the page's JSON API. POSTs must be JSON from the
//!   same origin (a cross-site form cannot act as an approver).
//!
//! Messages are kept in `DATA_DIR/slack-simulator.json` (a snapshot) and `DATA_DIR/slack-simulator.journal`
//! (one JSON line per message posted, updated or deleted since), so a restart loses nothing: an API call
//! that changes a message answers only once its line is written. One writer thread appends the lines,
//! many at a time, and nothing holds the state's lock while it writes; the journal is folded into the
//! snapshot when the simulator starts. Development machinery: it must never be reachable from a deployed
//! Lambda, and local mode should stay on the loopback.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::adapters::slack::fake::{
    check_message, history_answer, message_metadata, modal_limit_violations, parse_body, slack_err, slack_err_with,
    slack_ok, str_field, users_info_answer, FakeUser,
};
use crate::adapters::slack::signature;
use crate::domain::{Policy, SlackUserId};
use crate::ports::{Clock, SecretString, SystemClock};

use super::config::{SimChannel, SimGroup, SlackConfig};

/// The state file under the data directory: the snapshot of the kept messages.
pub const STATE_FILE: &str = "slack-simulator.json";
/// The changes since the snapshot, one JSON line each, next to it (`slack-simulator.journal`).
pub const JOURNAL_EXTENSION: &str = "journal";
/// Slack lets a `trigger_id` open a view within 3 seconds, once.
pub const TRIGGER_TTL: Duration = Duration::from_secs(3);
/// Slack's response URLs: 30 minutes, 5 uses.
pub const RESPONSE_URL_TTL: Duration = Duration::from_secs(30 * 60);
pub const RESPONSE_URL_MAX_USES: u32 = 5;
/// Slack waits this long for the app to acknowledge a callback.
pub const CALLBACK_TIMEOUT: Duration = Duration::from_secs(3);
const BOT_ID: &str = "B0LOCALBOT";
const BOT_USER: &str = "U0COUNTERSIGN";
const WORKSPACE_DOMAIN: &str = "countersign-local";

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const APP_CSS: &str = include_str!("page/app.css");
const FAVICON: &str = include_str!("page/favicon.svg");

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
}

/// A person you can act as, with what the policies let them do (shown in the picker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    pub id: String,
    pub name: String,
    pub title: Option<String>,
    pub roles: Vec<String>,
    /// `users.info` says `deleted: true` (dev.toml `deactivated = true`).
    pub deactivated: bool,
    /// `users.info` says `is_restricted: true` (dev.toml `guest = true`).
    pub guest: bool,
}

/// Everything the simulator is configured with.
#[derive(Debug, Clone)]
pub struct SimSettings {
    pub bot_token: SecretString,
    pub signing_secret: SecretString,
    pub team_id: String,
    pub app_id: String,
    pub users: Vec<UserInfo>,
    pub groups: Vec<SimGroup>,
    pub channels: Vec<SimChannel>,
    /// Where signed callbacks are sent (`http://127.0.0.1:PORT/slack/interactions`).
    pub interactions_url: String,
    /// `http://127.0.0.1:PORT`: response URLs live here (the Slack client accepts its API origin).
    pub origin: String,
    /// Where messages are kept across restarts; `None` keeps them in memory only.
    pub state_file: Option<PathBuf>,
}

/// The users and channels the page lists: configured ones first, then those the policies name.
pub fn directory(cfg: &SlackConfig, policies: &[Policy]) -> (Vec<UserInfo>, Vec<SimChannel>) {
    let mut users: Vec<UserInfo> = cfg
        .users
        .iter()
        .map(|u| UserInfo {
            id: u.id.to_string(),
            name: u.name.clone(),
            title: u.title.clone(),
            roles: vec![],
            deactivated: u.deactivated,
            guest: u.guest,
        })
        .collect();
    let mut add = |id: &SlackUserId| {
        if !users.iter().any(|u| u.id == id.as_str()) {
            users.push(UserInfo {
                id: id.to_string(),
                name: id.to_string(),
                title: None,
                roles: vec![],
                deactivated: false,
                guest: false,
            });
        }
    };
    for p in policies {
        p.approvers.users.iter().chain(p.owners.iter()).for_each(&mut add);
    }
    cfg.groups.iter().flat_map(|g| g.members.iter()).for_each(&mut add);
    for u in &mut users {
        for p in policies {
            if p.owners.iter().any(|o| o.as_str() == u.id) {
                u.roles.push(format!("owner of {} (cannot approve)", p.name));
                continue;
            }
            if p.approvers.users.iter().any(|a| a.as_str() == u.id) {
                u.roles.push(format!("approver for {}", p.name));
                continue;
            }
            let via = cfg
                .groups
                .iter()
                .find(|g| p.approvers.groups.contains(&g.id) && g.members.iter().any(|m| m.as_str() == u.id));
            if let Some(g) = via {
                u.roles.push(format!("approver for {} via @{}", p.name, g.handle));
            }
        }
    }
    let mut channels = cfg.channels.clone();
    for p in policies {
        if !channels.iter().any(|c| c.id == p.channel) {
            channels.push(SimChannel { id: p.channel.clone(), name: p.channel.as_str().to_lowercase() });
        }
    }
    (users, channels)
}

// ---- state ------------------------------------------------------------------------------------------------

/// A message as the simulator keeps it (and persists it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimMessage {
    pub ts: String,
    pub text: Option<String>,
    pub blocks: Value,
    /// Set on thread replies: the parent's ts.
    pub thread_ts: Option<String>,
    /// How many times `chat.update` changed it.
    #[serde(default)]
    pub updates: u32,
    /// Slack message metadata (`{event_type, event_payload}`), when the app attached some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    /// channel id → messages in posting order.
    channels: BTreeMap<String, Vec<SimMessage>>,
    last_ts_micros: u64,
}

/// One line of the journal. Each names its message by (channel, ts) and carries its whole new state, so
/// applying a line twice (a crash after the snapshot was written, before the journal was emptied) changes
/// nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Change {
    /// The message as it now is: replaces the one with its ts, or is added after the channel's others.
    Put {
        channel: String,
        message: SimMessage,
        last_ts_micros: u64,
    },
    Delete {
        channel: String,
        ts: String,
    },
}

impl Persisted {
    fn apply(&mut self, change: Change) {
        match change {
            Change::Put { channel, message, last_ts_micros } => {
                self.last_ts_micros = self.last_ts_micros.max(last_ts_micros);
                let list = self.channels.entry(channel).or_default();
                match list.iter_mut().find(|m| m.ts == message.ts) {
                    Some(m) => *m = message,
                    None => list.push(message),
                }
            }
            Change::Delete { channel, ts } => {
                if let Some(list) = self.channels.get_mut(&channel) {
                    list.retain(|m| m.ts != ts);
                }
            }
        }
    }

    /// The put that records `channel`'s message `ts` as it now is, if it exists.
    fn put(&self, channel: &str, ts: &str) -> Option<Change> {
        let message = self.channels.get(channel)?.iter().find(|m| m.ts == ts)?.clone();
        Some(Change::Put { channel: channel.to_string(), message, last_ts_micros: self.last_ts_micros })
    }
}

/// The journal's path next to the state file.
pub fn journal_path(state_file: &FsPath) -> PathBuf {
    state_file.with_extension(JOURNAL_EXTENSION)
}

/// Applies the journal's lines to `p`; how many were applied. A last line cut short (the process was
/// killed while writing it: its call was never answered) is ignored; any other line that does not parse
/// is skipped with a warning, and the journal is copied aside first so nothing is lost.
fn replay(p: &mut Persisted, path: &FsPath, bytes: &[u8]) -> usize {
    let mut applied = 0;
    let mut copied_aside = false;
    let mut lines = bytes.split(|b| *b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Change>(line) {
            Ok(c) => {
                p.apply(c);
                applied += 1;
            }
            // Only the last piece can lack its newline: every line is written with one.
            Err(_) if last => tracing::warn!(journal = %path.display(), "ignoring a torn last journal line"),
            Err(e) => {
                if !copied_aside {
                    let aside = path.with_extension("journal.corrupt");
                    let _ = std::fs::write(&aside, bytes);
                    tracing::warn!(error = %e, copied_to = %aside.display(), "simulator journal line unreadable; skipping it");
                    copied_aside = true;
                }
            }
        }
    }
    applied
}

/// Writes the snapshot durably (a temporary file, synced, renamed over the old one).
fn write_snapshot(path: &FsPath, p: &Persisted) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(p).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Makes the rename itself durable; not every platform can open a directory.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// A change on its way to the journal, and who waits for it to be written.
type Pending = (Change, tokio::sync::oneshot::Sender<()>);

/// The journal's writer thread: appends whatever changes are waiting, in the order they were made, in one
/// write, then answers each. Ends when the simulator is dropped.
fn journal_writer(path: PathBuf, mut file: std::fs::File, rx: mpsc::Receiver<Pending>) {
    let mut buf = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        buf.clear();
        for (change, _) in &batch {
            match serde_json::to_writer(&mut buf, change) {
                Ok(()) => buf.push(b'\n'),
                Err(e) => tracing::warn!(error = %e, "cannot serialize a simulator journal line"),
            }
        }
        if let Err(e) = file.write_all(&buf) {
            tracing::warn!(error = %e, journal = %path.display(), "cannot write the simulator journal");
        }
        for (_, done) in batch {
            let _ = done.send(());
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Ephemeral {
    id: u64,
    #[serde(skip)]
    user: String,
    channel: String,
    ts: String,
    text: Option<String>,
    blocks: Value,
}

#[derive(Debug)]
struct Trigger {
    user: String,
    created: Instant,
}

#[derive(Debug)]
struct ResponseUrl {
    user: String,
    channel: String,
    message_ts: String,
    created: Instant,
    uses: u32,
}

#[derive(Debug, Clone, Serialize)]
struct OpenView {
    view_id: String,
    view: Value,
    errors: Option<Value>,
}

#[derive(Debug, Default)]
struct SimState {
    persisted: Persisted,
    /// Bumped by every change the page can see.
    version: u64,
    next_id: u64,
    ephemerals: Vec<Ephemeral>,
    triggers: HashMap<String, Trigger>,
    responses: HashMap<String, ResponseUrl>,
    /// user → the modal open for them.
    views: HashMap<String, OpenView>,
}

impl SimState {
    fn next_ts(&mut self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let t = now.max(self.persisted.last_ts_micros + 1);
        self.persisted.last_ts_micros = t;
        format!("{}.{:06}", t / 1_000_000, t % 1_000_000)
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn message_mut(&mut self, channel: &str, ts: &str) -> Option<&mut SimMessage> {
        self.persisted.channels.get_mut(channel)?.iter_mut().find(|m| m.ts == ts)
    }

    fn message(&self, channel: &str, ts: &str) -> Option<&SimMessage> {
        self.persisted.channels.get(channel)?.iter().find(|m| m.ts == ts)
    }
}

struct Inner {
    settings: SimSettings,
    state: Mutex<SimState>,
    http: reqwest::Client,
    /// To the journal's writer thread; `None` keeps messages in memory only. Sent to while holding the
    /// state's lock, so lines are written in the order the changes were made.
    journal: Option<mpsc::Sender<Pending>>,
}

/// A running simulator; clone freely.
#[derive(Clone)]
pub struct Simulator(Arc<Inner>);

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator").field("interactions_url", &self.0.settings.interactions_url).finish_non_exhaustive()
    }
}

/// Hex ids for triggers, response URLs and view hashes. They only need to be unique and unguessable within
/// this process; should randomness ever fail, the clock still makes them unique.
fn random_token(bytes: usize) -> String {
    super::config::random_hex(bytes).unwrap_or_else(|_| format!("{:x}", SystemClock.now().unix_millis()))
}

fn unix_now() -> i64 {
    SystemClock.now().unix_seconds()
}

impl Simulator {
    /// Loads the kept messages (a file that does not parse is moved aside with a warning, never lost),
    /// folds the journal into the snapshot and starts the journal's writer.
    pub fn new(settings: SimSettings) -> Result<Self, SimError> {
        let mut state = SimState::default();
        let mut journal = None;
        if let Some(path) = &settings.state_file {
            match std::fs::read(path) {
                Ok(bytes) => match serde_json::from_slice::<Persisted>(&bytes) {
                    Ok(p) => state.persisted = p,
                    Err(e) => {
                        let aside = path.with_extension("json.corrupt");
                        tracing::warn!(error = %e, moved_to = %aside.display(), "simulator state unreadable; starting empty");
                        let _ = std::fs::rename(path, &aside);
                        // Its journal only makes sense on top of it: kept aside with it.
                        let journal = journal_path(path);
                        let _ = std::fs::rename(&journal, journal.with_extension("journal.corrupt"));
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the simulator state; starting empty"),
            }
            journal = Self::open_journal(path, &mut state.persisted);
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(CALLBACK_TIMEOUT)
            .build()
            .map_err(SimError::Http)?;
        Ok(Self(Arc::new(Inner { settings, state: Mutex::new(state), http, journal })))
    }

    /// Replays the journal onto `persisted`, writes the result as the new snapshot and empties the
    /// journal, then opens it for appending and starts its writer. `None` (with a warning) when the
    /// journal cannot be opened: the simulator then keeps messages in memory only.
    fn open_journal(state_file: &FsPath, persisted: &mut Persisted) -> Option<mpsc::Sender<Pending>> {
        let path = journal_path(state_file);
        let applied = match std::fs::read(&path) {
            Ok(bytes) => replay(persisted, &path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                tracing::warn!(error = %e, journal = %path.display(), "cannot read the simulator journal");
                0
            }
        };
        let mut truncate = true;
        if applied > 0 {
            if let Err(e) = write_snapshot(state_file, persisted) {
                // Keep the journal: the next start replays it again.
                tracing::warn!(error = %e, "cannot fold the simulator journal into its state file");
                truncate = false;
            }
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).and_then(|f| {
            if truncate {
                f.set_len(0).map(|()| f)
            } else {
                Ok(f)
            }
        });
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, journal = %path.display(), "cannot open the simulator journal; messages will not survive a restart");
                return None;
            }
        };
        let (tx, rx) = mpsc::channel();
        let spawned =
            std::thread::Builder::new().name("slack-sim-journal".into()).spawn(move || journal_writer(path, file, rx));
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the simulator journal's writer; messages will not survive a restart");
                None
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.0.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The top-level messages and replies of a channel, in posting order.
    pub fn messages(&self, channel: &str) -> Vec<SimMessage> {
        self.lock().persisted.channels.get(channel).cloned().unwrap_or_default()
    }

    /// Routes under `/slack/` (not `/slack/interactions`, which is the product's).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/slack", get(|| async { Redirect::permanent("/slack/") }))
            .route("/slack/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
            .route("/slack/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
            .route("/slack/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
            .route("/slack/favicon.svg", get(|| async { asset("image/svg+xml", FAVICON) }))
            .route("/slack/api/{method}", post(api))
            .route("/slack/response/{id}", post(response_url))
            .route("/slack/sim/state", get(page_state))
            .route("/slack/sim/click", post(click))
            .route("/slack/sim/submit", post(submit))
            .route("/slack/sim/close", post(close))
            .route("/slack/sim/dismiss", post(dismiss))
            .with_state(self.clone())
    }

    /// Sends a change to the journal; call it while still holding the state's lock, right after making
    /// the change, so the journal keeps the changes' order. Await the answer with [`Self::changed`].
    fn record(&self, change: Option<Change>) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let (journal, change) = (self.0.journal.as_ref()?, change?);
        let (done, written) = tokio::sync::oneshot::channel();
        journal.send((change, done)).ok()?;
        Some(written)
    }

    /// Marks a visible change and, when it changed kept messages, waits until its journal line is written.
    async fn changed(&self, written: Option<tokio::sync::oneshot::Receiver<()>>) {
        self.lock().version += 1;
        if let Some(w) = written {
            if w.await.is_err() {
                tracing::warn!("the simulator journal's writer stopped");
            }
        }
    }

    fn user(&self, id: &str) -> Option<&UserInfo> {
        self.0.settings.users.iter().find(|u| u.id == id)
    }

    fn channel_name(&self, id: &str) -> String {
        self.0
            .settings
            .channels
            .iter()
            .find(|c| c.id.as_str() == id)
            .map_or_else(|| id.to_lowercase(), |c| c.name.clone())
    }

    /// Signs a callback body as Slack does and POSTs it to the product's interactions endpoint.
    async fn deliver(&self, payload: &Value) -> Value {
        let form =
            format!("payload={}", form_urlencoded::byte_serialize(payload.to_string().as_bytes()).collect::<String>());
        let ts = unix_now().to_string();
        let sig = signature::sign(self.0.settings.signing_secret.expose().as_bytes(), &ts, form.as_bytes());
        let sent = self
            .0
            .http
            .post(&self.0.settings.interactions_url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(signature::TIMESTAMP_HEADER, &ts)
            .header(signature::SIGNATURE_HEADER, sig)
            .body(form)
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                let body = serde_json::from_str::<Value>(&text).unwrap_or(if text.is_empty() {
                    Value::Null
                } else {
                    Value::String(text.chars().take(500).collect())
                });
                json!({ "status": status, "body": body })
            }
            Err(e) if e.is_timeout() => json!({ "status": 0, "error": "the app did not answer within 3 seconds" }),
            Err(e) => json!({ "status": 0, "error": format!("cannot reach the app: {}", e.without_url()) }),
        }
    }

    fn team(&self) -> Value {
        json!({ "id": self.0.settings.team_id, "domain": WORKSPACE_DOMAIN })
    }

    fn user_object(&self, id: &str) -> Value {
        let name = self.user(id).map_or(id, |u| u.name.as_str());
        json!({ "id": id, "username": name, "name": name, "team_id": self.0.settings.team_id })
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    r
}

// ---- the Slack Web API subset ----------------------------------------------------------------------------

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
}

fn channel_ok(c: &str) -> bool {
    crate::domain::SlackChannelId::parse(c).is_ok()
}

async fn api(State(sim): State<Simulator>, Path(method): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let token =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|a| a.strip_prefix("Bearer "));
    match token {
        None => return slack_err("not_authed"),
        Some(t) if t != sim.0.settings.bot_token.expose() => return slack_err("invalid_auth"),
        Some(_) => {}
    }
    let Value::Object(body) = parse_body(content_type(&headers), &body) else {
        return slack_err("invalid_arguments");
    };
    tracing::debug!(method = %method, "simulator: Slack API call");
    match method.as_str() {
        "chat.postMessage" => post_message(&sim, &body).await,
        "chat.update" => update_message(&sim, &body).await,
        "chat.postEphemeral" => post_ephemeral(&sim, &body).await,
        "views.open" => open_view(&sim, &body).await,
        "usergroups.users.list" => usergroup_members(&sim, &body),
        "conversations.history" => history(&sim, &body),
        "users.info" => {
            let json_body = content_type(&headers).is_some_and(|c| c.starts_with("application/json"));
            users_info_answer(json_body, &body, |id| {
                let u = sim.user(id)?;
                let account = FakeUser {
                    team_id: sim.0.settings.team_id.clone(),
                    deleted: u.deactivated,
                    is_restricted: u.guest,
                    ..FakeUser::member()
                };
                Some(account.wire(id))
            })
        }
        _ => slack_err("unknown_method"),
    }
}

async fn post_message(sim: &Simulator, body: &Map<String, Value>) -> Response {
    let Some(channel) = str_field(body, "channel").filter(|c| channel_ok(c)) else {
        return slack_err("channel_not_found");
    };
    if let Some(r) = check_message(body) {
        return r;
    }
    let metadata = match message_metadata(body) {
        Ok(m) => m,
        Err(code) => return slack_err(code),
    };
    let thread_ts = str_field(body, "thread_ts").map(str::to_string);
    let (ts, written) = {
        let mut s = sim.lock();
        if let Some(parent) = &thread_ts {
            if s.message(channel, parent).is_none_or(|m| m.thread_ts.is_some()) {
                return slack_err("thread_not_found");
            }
        }
        let ts = s.next_ts();
        let m = SimMessage {
            ts: ts.clone(),
            text: body.get("text").and_then(Value::as_str).map(str::to_string),
            blocks: body.get("blocks").cloned().unwrap_or(Value::Null),
            thread_ts,
            updates: 0,
            metadata,
        };
        s.persisted.channels.entry(channel.to_string()).or_default().push(m);
        let written = sim.record(s.persisted.put(channel, &ts));
        (ts, written)
    };
    sim.changed(written).await;
    slack_ok(
        json!({ "channel": channel, "ts": ts, "message": { "ts": ts, "text": body.get("text"), "bot_id": BOT_ID } }),
    )
}

async fn update_message(sim: &Simulator, body: &Map<String, Value>) -> Response {
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
    let written = {
        let mut s = sim.lock();
        let Some(m) = s.message_mut(channel, ts) else {
            return slack_err("message_not_found");
        };
        if metadata.is_some() {
            m.metadata = metadata;
        }
        if let Some(t) = body.get("text").and_then(Value::as_str) {
            m.text = Some(t.to_string());
        }
        if let Some(b) = body.get("blocks") {
            m.blocks = b.clone();
        }
        m.updates += 1;
        sim.record(s.persisted.put(channel, ts))
    };
    sim.changed(written).await;
    slack_ok(json!({ "channel": channel, "ts": ts }))
}

async fn post_ephemeral(sim: &Simulator, body: &Map<String, Value>) -> Response {
    let Some(channel) = str_field(body, "channel").filter(|c| channel_ok(c)) else {
        return slack_err("channel_not_found");
    };
    let Some(user) = str_field(body, "user").filter(|u| sim.user(u).is_some()) else {
        return slack_err("user_not_in_channel");
    };
    if let Some(r) = check_message(body) {
        return r;
    }
    let ts = {
        let mut s = sim.lock();
        let ts = s.next_ts();
        let id = s.next_id();
        s.ephemerals.push(Ephemeral {
            id,
            user: user.to_string(),
            channel: channel.to_string(),
            ts: ts.clone(),
            text: body.get("text").and_then(Value::as_str).map(str::to_string),
            blocks: body.get("blocks").cloned().unwrap_or(Value::Null),
        });
        ts
    };
    sim.changed(None).await;
    slack_ok(json!({ "message_ts": ts }))
}

async fn open_view(sim: &Simulator, body: &Map<String, Value>) -> Response {
    let Some(trigger_id) = str_field(body, "trigger_id") else {
        return slack_err("invalid_trigger_id");
    };
    let Some(view) = body.get("view") else {
        return slack_err("invalid_arguments");
    };
    let problems = modal_limit_violations(view);
    if !problems.is_empty() {
        return slack_err_with("invalid_arguments", problems);
    }
    let view_id = {
        let mut s = sim.lock();
        let Some(trigger) = s.triggers.remove(trigger_id) else {
            return slack_err("invalid_trigger_id");
        };
        if trigger.created.elapsed() > TRIGGER_TTL {
            return slack_err("expired_trigger_id");
        }
        let view_id = format!("V0SIM{:06}", s.next_id());
        s.views.insert(trigger.user, OpenView { view_id: view_id.clone(), view: view.clone(), errors: None });
        view_id
    };
    sim.changed(None).await;
    slack_ok(json!({ "view": { "id": view_id, "type": "modal" } }))
}

/// The channel's top-level messages, all posted by the bot (the simulator has no other poster).
fn history(sim: &Simulator, body: &Map<String, Value>) -> Response {
    let Some(channel) = str_field(body, "channel").filter(|c| channel_ok(c)) else {
        return slack_err("channel_not_found");
    };
    let messages = sim
        .lock()
        .persisted
        .channels
        .get(channel)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter(|m| m.thread_ts.is_none())
        .map(|m| {
            let mut o = json!({ "type": "message", "user": BOT_USER, "bot_id": BOT_ID,
                                "app_id": sim.0.settings.app_id, "ts": m.ts, "text": m.text, "blocks": m.blocks });
            if let Some(md) = &m.metadata {
                o["metadata"] = md.clone();
            }
            o
        })
        .collect();
    history_answer(body, messages)
}

fn usergroup_members(sim: &Simulator, body: &Map<String, Value>) -> Response {
    let Some(group) = str_field(body, "usergroup") else {
        return slack_err("invalid_arguments");
    };
    match sim.0.settings.groups.iter().find(|g| g.id.as_str() == group) {
        Some(g) => slack_ok(json!({ "users": g.members.iter().map(|m| m.as_str()).collect::<Vec<_>>() })),
        None => slack_err("no_such_subteam"),
    }
}

async fn response_url(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Value::Object(body) = parse_body(content_type(&headers), &body) else {
        return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
    };
    let written = {
        let mut s = sim.lock();
        let (user, channel, message_ts) = match s.responses.get_mut(&id) {
            Some(r) if r.created.elapsed() <= RESPONSE_URL_TTL && r.uses < RESPONSE_URL_MAX_USES => {
                r.uses += 1;
                (r.user.clone(), r.channel.clone(), r.message_ts.clone())
            }
            _ => return (StatusCode::NOT_FOUND, "expired_url").into_response(),
        };
        let text = body.get("text").and_then(Value::as_str).map(str::to_string);
        let blocks = body.get("blocks").cloned().unwrap_or(Value::Null);
        let flag = |k: &str| body.get(k).is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"));
        if flag("delete_original") {
            let change = Change::Delete { channel: channel.clone(), ts: message_ts.clone() };
            s.persisted.apply(change.clone());
            sim.record(Some(change))
        } else if flag("replace_original") {
            if let Some(m) = s.message_mut(&channel, &message_ts) {
                m.text = text;
                m.blocks = blocks;
                m.updates += 1;
            }
            sim.record(s.persisted.put(&channel, &message_ts))
        } else if body.get("response_type").and_then(Value::as_str) == Some("in_channel") {
            let ts = s.next_ts();
            let m = SimMessage { ts: ts.clone(), text, blocks, thread_ts: None, updates: 0, metadata: None };
            s.persisted.channels.entry(channel.clone()).or_default().push(m);
            sim.record(s.persisted.put(&channel, &ts))
        } else {
            let ts = s.next_ts();
            let id = s.next_id();
            s.ephemerals.push(Ephemeral { id, user, channel, ts, text, blocks });
            None
        }
    };
    sim.changed(written).await;
    Json(json!({ "ok": true })).into_response()
}

// ---- the page's JSON API --------------------------------------------------------------------------------

fn page_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// POSTs from the page must be JSON and same-origin: a cross-site form cannot send JSON without a CORS
/// preflight (which we never answer), and a browser always sends `Origin` on cross-site POSTs.
/// `Some(refusal)` when the request does not qualify.
fn refuse_cross_site(headers: &HeaderMap) -> Option<Response> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("application/json") {
        return Some(page_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send JSON"));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        if origin.to_str().ok() != Some(format!("http://{host}").as_str()) {
            return Some(page_error(StatusCode::FORBIDDEN, "cross-origin requests are refused"));
        }
    }
    None
}

#[derive(Deserialize)]
struct StateQuery {
    user: Option<String>,
}

/// A top-level message as the page shows it, with its thread's replies.
#[derive(Serialize)]
struct PageMessage<'a> {
    ts: &'a str,
    text: &'a Option<String>,
    blocks: &'a Value,
    edited: bool,
    replies: Vec<&'a SimMessage>,
}

#[derive(Serialize)]
struct PageChannel<'a> {
    id: &'a str,
    name: String,
    messages: Vec<PageMessage<'a>>,
}

#[derive(Serialize)]
struct PageState<'a> {
    version: u64,
    workspace: Value,
    users: &'a [UserInfo],
    groups: Vec<Value>,
    channels: Vec<PageChannel<'a>>,
    ephemerals: Vec<&'a Ephemeral>,
    modal: Option<&'a OpenView>,
}

/// Serialized straight from the state (no copy of every message) and once: the lock is held only for that.
async fn page_state(State(sim): State<Simulator>, Query(q): Query<StateQuery>) -> Response {
    let settings = &sim.0.settings;
    let user = q.user.unwrap_or_default();
    let body = {
        let s = sim.lock();
        let mut channel_ids: Vec<&str> = settings.channels.iter().map(|c| c.id.as_str()).collect();
        for id in s.persisted.channels.keys() {
            if !channel_ids.contains(&id.as_str()) {
                channel_ids.push(id);
            }
        }
        let channels: Vec<PageChannel<'_>> = channel_ids
            .iter()
            .map(|&id| {
                let all = s.persisted.channels.get(id).map_or(&[][..], Vec::as_slice);
                let mut replies: HashMap<&str, Vec<&SimMessage>> = HashMap::new();
                for r in all {
                    if let Some(parent) = r.thread_ts.as_deref() {
                        replies.entry(parent).or_default().push(r);
                    }
                }
                let messages = all
                    .iter()
                    .filter(|m| m.thread_ts.is_none())
                    .map(|m| PageMessage {
                        ts: &m.ts,
                        text: &m.text,
                        blocks: &m.blocks,
                        edited: m.updates > 0,
                        replies: replies.remove(m.ts.as_str()).unwrap_or_default(),
                    })
                    .collect();
                PageChannel { id, name: sim.channel_name(id), messages }
            })
            .collect();
        let ephemerals: Vec<&Ephemeral> = s.ephemerals.iter().filter(|e| e.user == user).collect();
        let groups: Vec<Value> =
            settings.groups.iter().map(|g| json!({ "id": g.id, "handle": g.handle, "members": g.members })).collect();
        serde_json::to_vec(&PageState {
            version: s.version,
            workspace: json!({ "team_id": settings.team_id, "domain": WORKSPACE_DOMAIN, "app_id": settings.app_id }),
            users: &settings.users,
            groups,
            channels,
            ephemerals,
            modal: s.views.get(&user),
        })
    };
    match body {
        Ok(b) => ([(header::CONTENT_TYPE, "application/json")], b).into_response(),
        Err(e) => page_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot serialize the state: {e}")),
    }
}

#[derive(Deserialize)]
struct ClickRequest {
    user: String,
    channel: String,
    ts: String,
    action_id: String,
    block_id: String,
}

/// Finds the clicked element in the message, as Slack would only ever send an element that is there.
fn find_element(blocks: &Value, block_id: &str, action_id: &str) -> Option<Value> {
    blocks.as_array()?.iter().find_map(|b| {
        if b.get("type")?.as_str()? != "actions" || b.get("block_id")?.as_str()? != block_id {
            return None;
        }
        b.get("elements")?
            .as_array()?
            .iter()
            .find(|e| e.get("action_id").and_then(Value::as_str) == Some(action_id))
            .cloned()
    })
}

async fn click(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = refuse_cross_site(&headers) {
        return r;
    }
    let Ok(c) = serde_json::from_slice::<ClickRequest>(&body) else {
        return page_error(StatusCode::BAD_REQUEST, "expected {user, channel, ts, action_id, block_id}");
    };
    if sim.user(&c.user).is_none() {
        return page_error(StatusCode::BAD_REQUEST, "unknown user");
    }
    let now_ts = format!("{}.{:06}", unix_now(), 0);
    let (message, element, trigger_id, response_id) = {
        let mut s = sim.lock();
        let Some(m) = s.message(&c.channel, &c.ts).cloned() else {
            return page_error(StatusCode::NOT_FOUND, "no such message");
        };
        let Some(el) = find_element(&m.blocks, &c.block_id, &c.action_id) else {
            return page_error(StatusCode::CONFLICT, "that button is no longer in the message");
        };
        let trigger_id = format!("{}.{}.{}", unix_now(), s.next_id(), random_token(16));
        s.triggers.retain(|_, t| t.created.elapsed() <= TRIGGER_TTL);
        s.triggers.insert(trigger_id.clone(), Trigger { user: c.user.clone(), created: Instant::now() });
        let response_id = random_token(16);
        s.responses.retain(|_, r| r.created.elapsed() <= RESPONSE_URL_TTL);
        s.responses.insert(
            response_id.clone(),
            ResponseUrl {
                user: c.user.clone(),
                channel: c.channel.clone(),
                message_ts: c.ts.clone(),
                created: Instant::now(),
                uses: 0,
            },
        );
        (m, el, trigger_id, response_id)
    };
    let mut action = json!({
        "type": element.get("type").cloned().unwrap_or(Value::Null),
        "action_id": c.action_id,
        "block_id": c.block_id,
        "text": element.get("text").cloned().unwrap_or(Value::Null),
        "action_ts": now_ts,
    });
    for k in ["value", "style"] {
        if let Some(v) = element.get(k) {
            action[k] = v.clone();
        }
    }
    let settings = &sim.0.settings;
    let payload = json!({
        "type": "block_actions",
        "user": sim.user_object(&c.user),
        "api_app_id": settings.app_id,
        "token": "simulator",
        "container": { "type": "message", "message_ts": c.ts, "channel_id": c.channel, "is_ephemeral": false },
        "trigger_id": trigger_id,
        "team": sim.team(),
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": { "id": c.channel, "name": sim.channel_name(&c.channel) },
        "message": {
            "type": "message", "subtype": "bot_message", "bot_id": BOT_ID, "user": BOT_USER,
            "ts": message.ts, "text": message.text, "blocks": message.blocks,
        },
        "state": { "values": {} },
        "response_url": format!("{}/slack/response/{response_id}", settings.origin),
        "actions": [action],
    });
    Json(sim.deliver(&payload).await).into_response()
}

#[derive(Deserialize)]
struct SubmitRequest {
    user: String,
    view_id: String,
    /// block_id → action_id → value.
    #[serde(default)]
    values: BTreeMap<String, BTreeMap<String, String>>,
}

/// `view.state.values` as Slack sends it, for every input block of the view.
fn state_values(view: &Value, given: &BTreeMap<String, BTreeMap<String, String>>) -> Value {
    let mut out = Map::new();
    for b in view.get("blocks").and_then(Value::as_array).map_or(&[][..], Vec::as_slice) {
        let (Some("input"), Some(block_id), Some(el)) =
            (b.get("type").and_then(Value::as_str), b.get("block_id").and_then(Value::as_str), b.get("element"))
        else {
            continue;
        };
        let Some(action_id) = el.get("action_id").and_then(Value::as_str) else { continue };
        let value = given.get(block_id).and_then(|m| m.get(action_id)).cloned();
        let mut inner = Map::new();
        inner.insert(action_id.to_string(), json!({ "type": el.get("type"), "value": value }));
        out.insert(block_id.to_string(), Value::Object(inner));
    }
    Value::Object(out)
}

async fn submit(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = refuse_cross_site(&headers) {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<SubmitRequest>(&body) else {
        return page_error(StatusCode::BAD_REQUEST, "expected {user, view_id, values}");
    };
    let open = sim.lock().views.get(&req.user).filter(|v| v.view_id == req.view_id).cloned();
    let Some(open) = open else {
        return page_error(StatusCode::NOT_FOUND, "that dialog is no longer open");
    };
    let settings = &sim.0.settings;
    let mut view = open.view.clone();
    if let Value::Object(v) = &mut view {
        v.insert("id".into(), Value::String(open.view_id.clone()));
        v.insert("team_id".into(), Value::String(settings.team_id.clone()));
        v.insert("app_id".into(), Value::String(settings.app_id.clone()));
        v.insert("bot_id".into(), Value::String(BOT_ID.into()));
        v.insert("hash".into(), Value::String(random_token(8)));
        v.insert("state".into(), json!({ "values": state_values(&open.view, &req.values) }));
    }
    let payload = json!({
        "type": "view_submission",
        "team": sim.team(),
        "enterprise": null,
        "user": sim.user_object(&req.user),
        "api_app_id": settings.app_id,
        "token": "simulator",
        "trigger_id": format!("{}.{}.{}", unix_now(), 0, random_token(16)),
        "view": view,
        "response_urls": [],
        "is_enterprise_install": false,
    });
    let result = sim.deliver(&payload).await;
    let ok = result.get("status").and_then(Value::as_u64) == Some(200);
    let action = result.get("body").and_then(|b| b.get("response_action")).and_then(Value::as_str);
    let errors = result.get("body").and_then(|b| b.get("errors")).cloned();
    let closed = {
        let mut s = sim.lock();
        match (ok, action) {
            (true, Some("errors")) => {
                if let Some(v) = s.views.get_mut(&req.user).filter(|v| v.view_id == req.view_id) {
                    v.errors = errors;
                }
                false
            }
            (true, _) => {
                if s.views.get(&req.user).is_some_and(|v| v.view_id == req.view_id) {
                    s.views.remove(&req.user);
                }
                true
            }
            (false, _) => false,
        }
    };
    sim.changed(None).await;
    let mut out = result;
    out["closed"] = Value::Bool(closed);
    Json(out).into_response()
}

#[derive(Deserialize)]
struct CloseRequest {
    user: String,
    view_id: String,
}

async fn close(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = refuse_cross_site(&headers) {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<CloseRequest>(&body) else {
        return page_error(StatusCode::BAD_REQUEST, "expected {user, view_id}");
    };
    {
        let mut s = sim.lock();
        if s.views.get(&req.user).is_some_and(|v| v.view_id == req.view_id) {
            s.views.remove(&req.user);
        }
    }
    sim.changed(None).await;
    Json(json!({ "closed": true })).into_response()
}

#[derive(Deserialize)]
struct DismissRequest {
    user: String,
    id: u64,
}

async fn dismiss(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = refuse_cross_site(&headers) {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<DismissRequest>(&body) else {
        return page_error(StatusCode::BAD_REQUEST, "expected {user, id}");
    };
    sim.lock().ephemerals.retain(|e| !(e.id == req.id && e.user == req.user));
    sim.changed(None).await;
    Json(json!({ "dismissed": true })).into_response()
}

#[cfg(test)]
mod tests;
