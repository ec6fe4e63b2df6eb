//! The Slack simulator: a Slack Web API subset the product's Slack client talks to when no real Slack is
//! configured, and a web page (`/slack/`) where a person reads the channels, picks which Slack user they are
//! acting as, and clicks. Every click becomes an interactivity callback shaped like Slack's, SIGNED with the
//! configured signing secret and POSTed to `/slack/interactions` over HTTP, so the production verification
//! path runs on every click. The page never sees the secret: it calls the small JSON API below and the
//! server signs.
//!
//! - `POST /slack/api/{method}` (bearer bot token): the one Slack emulator's methods
//!   ([`countersign_slack::emulator`], the same core the tests' fake Slack serves), strict: channel ids
//!   must be well-formed, `views.open` needs a fresh `trigger_id` from a click (3 s, once), `users.info`
//!   knows the users the page lists (configured ones may be `deactivated` or `guest`) and nobody else.
//!   `conversations.history` pages as Slack's does, so the relay can adopt a post it never recorded.
//! - `POST /slack/response/{id}`: response URLs (30 minutes, at most 5 uses, like Slack's).
//! - `GET /slack/` (+ `app.js`, `app.css`): the page, served from the binary; no build step.
//! - `GET /slack/sim/state?user=U…`, `POST /slack/sim/click`, `POST /slack/sim/submit`,
//!   `POST /slack/sim/close`, `POST /slack/sim/dismiss`: the page's JSON API ([`page`]). POSTs must be JSON
//!   from the same origin (a cross-site form cannot act as an approver).
//!
//! Messages are kept in `DATA_DIR/slack-simulator.json` (a snapshot) and `DATA_DIR/slack-simulator.journal`
//! (one JSON line per message posted, updated or deleted since), so a restart loses nothing: an API call
//! that changes a message answers only once its line is written. One writer thread appends the lines,
//! many at a time, and nothing holds the state's lock while it writes; the journal is folded into the
//! snapshot when the simulator starts and whenever it outgrows the snapshot.
//!
//! Memory and disk are bounded ([`SimLimits`], [`bounds`]): each channel keeps its newest messages (the
//! latest state of each), each user their newest ephemerals, the page its newest response URLs. Development
//! machinery: it must never be reachable from a deployed Lambda, and local mode should stay on the loopback.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use serde_json::{json, Value};

use countersign_core::domain::{Policy, SlackUserId};
use countersign_core::ports::{Clock, SecretString, SystemClock};
use countersign_slack::emulator::{parse_body, Effect, FakeUser, Profile, Workspace};
use countersign_slack::signature;

use super::config::{SimChannel, SimGroup, SlackConfig};

mod bounds;
mod journal;
mod page;

pub use bounds::SimLimits;

pub use countersign_slack::emulator::{Message as SimMessage, TRIGGER_TTL};
pub use journal::journal_path;

#[cfg(test)]
use journal::{replay, Persisted};
use journal::{Change, Compaction, Journal, Journaled, Persisted as Store};
#[cfg(test)]
use page::{find_element, state_values};

/// The state file under the data directory: the snapshot of the kept messages.
pub const STATE_FILE: &str = "slack-simulator.json";
/// The changes since the snapshot, one JSON line each, next to it (`slack-simulator.journal`).
pub const JOURNAL_EXTENSION: &str = "journal";
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
    /// How much is kept, in memory and on disk.
    pub limits: SimLimits,
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

#[derive(Debug)]
struct ResponseUrl {
    user: String,
    channel: String,
    message_ts: String,
    created: Instant,
    uses: u32,
}

/// The emulated workspace, with what only the page needs.
#[derive(Debug)]
struct SimState {
    ws: Workspace,
    /// Bumped by every change the page can see.
    version: u64,
    responses: HashMap<String, ResponseUrl>,
}

struct Inner {
    settings: SimSettings,
    state: Mutex<SimState>,
    http: reqwest::Client,
    /// To the journal's writer thread; `None` keeps messages in memory only. Sent to while holding the
    /// state's lock, so lines are written in the order the changes were made.
    journal: Option<Journal>,
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
        let profile = Profile {
            app_id: settings.app_id.clone(),
            bot_id: BOT_ID.to_string(),
            bot_user: BOT_USER.to_string(),
            well_formed_ids: true,
            issued_triggers: true,
            default_user: None,
            keep_update_bodies: false,
        };
        let mut ws = Workspace::new(profile, settings.bot_token.expose(), None);
        // The page's users, as `users.info` describes them; the first entry for an id wins.
        for u in settings.users.iter().rev() {
            let account = FakeUser {
                team_id: settings.team_id.clone(),
                deleted: u.deactivated,
                is_restricted: u.guest,
                ..FakeUser::member()
            };
            ws.set_user(&u.id, Some(account));
        }
        for g in settings.groups.iter().rev() {
            ws.set_usergroup(g.id.as_str(), g.members.iter().map(|m| m.as_str().to_string()).collect());
        }
        let compaction = Compaction { min_bytes: settings.limits.compact_journal_bytes };
        let journal = settings.state_file.as_deref().and_then(|path| journal::open(path, &mut ws.store, compaction));
        // A snapshot kept under larger limits is cut down now, and on disk with the next snapshot.
        if !bounds::trim_all(&mut ws.store, settings.limits.messages_per_channel).is_empty() {
            if let Some(j) = &journal {
                j.compact(&ws.store);
            }
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(CALLBACK_TIMEOUT)
            .build()
            .map_err(SimError::Http)?;
        let state = SimState { ws, version: 0, responses: HashMap::new() };
        Ok(Self(Arc::new(Inner { settings, state: Mutex::new(state), http, journal })))
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.0.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The top-level messages and replies of a channel, in posting order.
    pub fn messages(&self, channel: &str) -> Vec<SimMessage> {
        self.lock().ws.store.channels.get(channel).cloned().unwrap_or_default()
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
            .merge(page::routes())
            .with_state(self.clone())
    }

    /// Sends changes to the journal (and, when it asked for one, the snapshot after them); call it while
    /// still holding the state's lock, right after making the changes, so the journal keeps their order.
    /// Await the answer with [`Self::changed`].
    fn record(&self, store: &Store, changes: Vec<Change>) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.0.journal.as_ref()?.send(changes, store)
    }

    /// After a message was posted or changed in `channel`: the change and what the channel's limit drops.
    fn kept(&self, s: &mut SimState, channel: &str, ts: &str) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let mut changes: Vec<Change> = s.ws.store.put(channel, ts).into_iter().collect();
        changes.extend(bounds::trim_channel(&mut s.ws.store, channel, self.0.settings.limits.messages_per_channel));
        self.record(&s.ws.store, changes)
    }

    /// After an ephemeral message appeared: each user keeps their newest.
    fn trim_ephemerals(&self, s: &mut SimState) {
        bounds::trim_ephemerals(&mut s.ws.ephemerals, self.0.settings.limits.ephemerals_per_user);
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

// ---- the Slack Web API ----------------------------------------------------------------------------------

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
}

/// The emulator answers; a change to a kept message is journaled before the answer goes out, and the page
/// is told about anything it shows.
async fn api(State(sim): State<Simulator>, Path(method): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let json_body = content_type(&headers).is_some_and(|c| c.starts_with("application/json"));
    let body = parse_body(content_type(&headers), &body);
    tracing::debug!(method = %method, "simulator: Slack API call");
    let (answer, visible, written) = {
        let mut s = sim.lock();
        let (answer, effect) = s.ws.call(&method, authorization, json_body, body);
        match effect {
            Effect::None => (answer, false, None),
            Effect::Shown => {
                sim.trim_ephemerals(&mut s);
                (answer, true, None)
            }
            Effect::Message { channel, ts } => {
                let written = sim.kept(&mut s, &channel, &ts);
                (answer, true, written)
            }
        }
    };
    if visible {
        sim.changed(written).await;
    }
    answer
}

#[cfg(test)]
mod tests;
