//! The Slack Web API client: post and update approval messages, open the deny modal, list user group
//! members, read a user's account (`users.info`), answer `response_url`s.
//!
//! Every call is bounded by a timeout (default 2 s), so a slow Slack never holds a callback past Slack's
//! 3 s budget; failures are classified ([`SlackError`]) so the outbox relay knows what to retry and when.
//!
//! Must never: put the bot token in an error, a log line or a `Debug` output; send the token to a
//! `response_url`; call a `response_url` outside `https://hooks.slack.com` or the configured API origin
//! (a forged URL must not make us call arbitrary hosts); follow redirects.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{StatusCode, Url};
use serde_json::{Map, Value};

use countersign_core::domain::{SlackAccount, SlackChannelId, SlackGroupId, SlackUserId};

pub const DEFAULT_BASE_URL: &str = "https://slack.com/api";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Host that serves `response_url`s.
pub const RESPONSE_URL_HOST: &str = "hooks.slack.com";
/// Largest response body read from Slack.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// `Retry-After` when Slack sends 429 without a usable one; and the most we will honour.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// A bot token (`xoxb-…`). `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct BotToken(String);

impl BotToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The secret itself: only for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BotToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BotToken(<redacted>)")
    }
}

/// Where the bot token comes from (Secrets Manager, with its own cache; local config).
#[async_trait]
pub trait TokenProvider: Send + Sync {
    async fn bot_token(&self) -> Result<BotToken, SlackError>;
}

/// A fixed token, for this crate's tests and the emulator's users (never linked into a Lambda).
#[cfg(any(test, feature = "emulator"))]
#[derive(Debug, Clone)]
pub struct StaticToken(pub BotToken);

#[cfg(any(test, feature = "emulator"))]
#[async_trait]
impl TokenProvider for StaticToken {
    async fn bot_token(&self) -> Result<BotToken, SlackError> {
        Ok(self.0.clone())
    }
}

/// Why a Slack call failed. Never contains the token, a request body or a `response_url`.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    #[error("Slack rate-limited the call; retry after {} s", retry_after.as_secs())]
    RateLimited { retry_after: Duration },
    #[error("Slack did not answer within the timeout")]
    Timeout,
    #[error("Slack answered HTTP {0}")]
    Http(u16),
    /// Slack's `error` code from `{"ok": false, "error": "…"}`.
    #[error("Slack API error: {0}")]
    Api(String),
    #[error("network error talking to Slack")]
    Network(#[source] reqwest::Error),
    #[error("Slack's answer could not be read: {0}")]
    InvalidResponse(&'static str),
    #[error("refused to call a response_url outside hooks.slack.com and the API origin")]
    ForbiddenUrl,
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    #[error("the bot token is unavailable")]
    TokenUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Slack error codes that describe a transient condition on Slack's side.
const RETRYABLE_API_ERRORS: &[&str] =
    &["internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited", "team_added_to_org"];

impl SlackError {
    /// Whether trying the same call later may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Timeout | Self::Network(_) | Self::TokenUnavailable(_) => true,
            Self::Http(s) => *s >= 500 || *s == 408,
            Self::Api(code) => RETRYABLE_API_ERRORS.contains(&code.as_str()),
            Self::InvalidResponse(_) => true,
            Self::ForbiddenUrl | Self::InvalidRequest(_) => false,
        }
    }

    /// How long Slack asked us to wait, when it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Where a message landed: keep both to update it later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedMessage {
    pub channel: SlackChannelId,
    pub ts: String,
}

/// One page of `conversations.history`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryPage {
    /// Message objects as Slack sends them, newest first.
    pub messages: Vec<Value>,
    /// Where the next (older) page starts, when there is one.
    pub next_cursor: Option<String>,
}

#[derive(Clone)]
pub struct SlackClient {
    http: reqwest::Client,
    base_url: Url,
    token: Arc<dyn TokenProvider>,
    timeout: Duration,
}

impl fmt::Debug for SlackClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackClient")
            .field("base_url", &self.base_url.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn parse_base(url: &str) -> Result<Url, SlackError> {
    let mut u = Url::parse(url).map_err(|_| SlackError::InvalidRequest("base URL is not a URL"))?;
    if !matches!(u.scheme(), "https" | "http") || u.host_str().is_none() {
        return Err(SlackError::InvalidRequest("base URL must be http(s)://host/…"));
    }
    if !u.username().is_empty() || u.password().is_some() || u.query().is_some() {
        return Err(SlackError::InvalidRequest("base URL must not carry credentials or a query"));
    }
    // A trailing slash makes `join("chat.postMessage")` append instead of replacing the last segment.
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    Ok(u)
}

/// Slack error codes are short snake_case words; anything else is replaced so it cannot smuggle data.
fn sanitize_code(code: &str) -> String {
    if !code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        code.to_string()
    } else {
        "unrecognized_error".to_string()
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(DEFAULT_RETRY_AFTER, |s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

fn network(e: reqwest::Error) -> SlackError {
    if e.is_timeout() {
        SlackError::Timeout
    } else {
        // The URL may be a response_url, which is itself a credential: drop it.
        SlackError::Network(e.without_url())
    }
}

async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, SlackError> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(network)? {
        if buf.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(SlackError::InvalidResponse("response too large"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Classifies an HTTP answer: 429 → rate limited, other non-2xx → `Http`, then Slack's `ok` flag.
async fn classify(resp: reqwest::Response, require_json: bool) -> Result<Value, SlackError> {
    let status = resp.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(SlackError::RateLimited { retry_after: retry_after(resp.headers()) });
    }
    if !status.is_success() {
        return Err(SlackError::Http(status.as_u16()));
    }
    let body = read_limited(resp).await?;
    let json: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        // response_url endpoints historically answer a bare `ok`.
        Err(_) if !require_json => return Ok(Value::Null),
        Err(_) => return Err(SlackError::InvalidResponse("not JSON")),
    };
    match json.get("ok").and_then(Value::as_bool) {
        Some(true) => Ok(json),
        Some(false) => {
            let code = json.get("error").and_then(Value::as_str).unwrap_or("");
            Err(SlackError::Api(sanitize_code(code)))
        }
        None if !require_json => Ok(json),
        None => Err(SlackError::InvalidResponse("no ok field")),
    }
}

fn object(v: &Value, what: &'static str) -> Result<Map<String, Value>, SlackError> {
    v.as_object().cloned().ok_or(SlackError::InvalidRequest(what))
}

impl SlackClient {
    /// A client for `https://slack.com/api` with a 2 s per-call timeout.
    pub fn new(token: Arc<dyn TokenProvider>) -> Result<Self, SlackError> {
        Self::with_http(token, Self::http_client()?)
    }

    /// The HTTP client [`Self::new`] uses. Building it loads and parses the system's root certificates (a few
    /// ms, all CPU): a Lambda instead builds it with [`Self::http_client_with_tls`] and the one TLS
    /// configuration the process shares with the AWS SDK (docs/performance.md, "Cold start").
    pub fn http_client() -> Result<reqwest::Client, SlackError> {
        Self::http_client_builder().build().map_err(network)
    }

    /// [`Self::http_client`] with a TLS configuration built elsewhere: a `rustls::ClientConfig` of the
    /// rustls version reqwest uses (anything else fails here, never later).
    pub fn http_client_with_tls(tls: impl std::any::Any) -> Result<reqwest::Client, SlackError> {
        Self::http_client_builder().tls_backend_preconfigured(tls).build().map_err(network)
    }

    fn http_client_builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
    }

    /// [`Self::new`] with an HTTP client from [`Self::http_client`].
    pub fn with_http(token: Arc<dyn TokenProvider>, http: reqwest::Client) -> Result<Self, SlackError> {
        Ok(Self { http, base_url: parse_base(DEFAULT_BASE_URL)?, token, timeout: DEFAULT_TIMEOUT })
    }

    /// Points the client at another API root (the fake Slack, a proxy).
    pub fn with_base_url(mut self, base_url: &str) -> Result<Self, SlackError> {
        self.base_url = parse_base(base_url)?;
        Ok(self)
    }

    /// The bound on each whole call (token fetch, connect, send, read).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn base_url(&self) -> &str {
        self.base_url.as_str()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn bounded<T>(&self, fut: impl std::future::Future<Output = Result<T, SlackError>>) -> Result<T, SlackError> {
        tokio::time::timeout(self.timeout, fut).await.unwrap_or(Err(SlackError::Timeout))
    }

    /// POSTs to a Web API method with the bearer token. `body` is JSON unless `form` is given.
    async fn call(&self, method: &'static str, body: ApiBody) -> Result<Value, SlackError> {
        let url = self.base_url.join(method).map_err(|_| SlackError::InvalidRequest("method name"))?;
        self.bounded(async {
            let token = self.token.bot_token().await?;
            let req = self.http.post(url).bearer_auth(token.expose()).timeout(self.timeout);
            let req = match body {
                ApiBody::Json(v) => req.json(&v),
                ApiBody::Form(f) => {
                    req.header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(f)
                }
            };
            tracing::debug!(method, "calling Slack");
            let resp = req.send().await.map_err(network)?;
            classify(resp, true).await
        })
        .await
        .inspect_err(|e| tracing::debug!(method, error = %e, "Slack call failed"))
    }

    /// `chat.postMessage`: `message` is `{"text", "blocks"}` (see `blocks::request_message`).
    pub async fn post_message(&self, channel: &SlackChannelId, message: &Value) -> Result<PostedMessage, SlackError> {
        let mut body = object(message, "message must be a JSON object")?;
        body.insert("channel".into(), channel.as_str().into());
        body.insert("unfurl_links".into(), false.into());
        body.insert("unfurl_media".into(), false.into());
        let answer = self.call("chat.postMessage", ApiBody::Json(Value::Object(body))).await?;
        let ts = answer
            .get("ts")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && t.len() <= 32)
            .ok_or(SlackError::InvalidResponse("no ts"))?;
        let channel = answer
            .get("channel")
            .and_then(Value::as_str)
            .and_then(|c| SlackChannelId::parse(c).ok())
            .unwrap_or_else(|| channel.clone());
        Ok(PostedMessage { channel, ts: ts.to_string() })
    }

    /// One page of `conversations.history` for `channel`: messages after `oldest` (a Slack timestamp,
    /// exclusive), newest first, with their metadata (`include_all_metadata`). Needs `channels:history`
    /// (`groups:history` for private channels); without it Slack answers `missing_scope`.
    pub async fn conversation_history(
        &self,
        channel: &SlackChannelId,
        oldest: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<HistoryPage, SlackError> {
        // A read method: form data, like usergroups.users.list.
        let form = {
            let mut f = form_urlencoded::Serializer::new(String::new());
            f.append_pair("channel", channel.as_str())
                .append_pair("oldest", oldest)
                .append_pair("limit", &limit.to_string())
                .append_pair("include_all_metadata", "true");
            if let Some(c) = cursor {
                f.append_pair("cursor", c);
            }
            f.finish()
        };
        let answer = self.call("conversations.history", ApiBody::Form(form)).await?;
        let messages =
            answer.get("messages").and_then(Value::as_array).ok_or(SlackError::InvalidResponse("no messages"))?.clone();
        let has_more = answer.get("has_more").and_then(Value::as_bool).unwrap_or(false);
        let next_cursor = answer
            .get("response_metadata")
            .and_then(|m| m.get("next_cursor"))
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_string);
        if has_more && next_cursor.is_none() {
            return Err(SlackError::InvalidResponse("has_more without a next_cursor"));
        }
        Ok(HistoryPage { messages, next_cursor: next_cursor.filter(|_| has_more) })
    }

    /// `chat.update` of a message we posted.
    pub async fn update_message(&self, channel: &SlackChannelId, ts: &str, message: &Value) -> Result<(), SlackError> {
        let mut body = object(message, "message must be a JSON object")?;
        body.insert("channel".into(), channel.as_str().into());
        body.insert("ts".into(), ts.into());
        self.call("chat.update", ApiBody::Json(Value::Object(body))).await.map(|_| ())
    }

    /// `chat.postEphemeral`: a message only `user` sees.
    pub async fn post_ephemeral(
        &self,
        channel: &SlackChannelId,
        user: &SlackUserId,
        message: &Value,
    ) -> Result<(), SlackError> {
        let mut body = object(message, "message must be a JSON object")?;
        // `response_type` / `replace_original` belong to response_url answers, not to this method.
        body.remove("response_type");
        body.remove("replace_original");
        body.insert("channel".into(), channel.as_str().into());
        body.insert("user".into(), user.as_str().into());
        self.call("chat.postEphemeral", ApiBody::Json(Value::Object(body))).await.map(|_| ())
    }

    /// `views.open`: shows a modal (the deny dialog) to the user whose click gave `trigger_id`.
    pub async fn open_view(&self, trigger_id: &str, view: &Value) -> Result<(), SlackError> {
        if trigger_id.is_empty() || trigger_id.len() > 255 {
            return Err(SlackError::InvalidRequest("trigger_id"));
        }
        let body = serde_json::json!({ "trigger_id": trigger_id, "view": view });
        self.call("views.open", ApiBody::Json(body)).await.map(|_| ())
    }

    /// `usergroups.users.list`: the members of a user group. Ids that do not parse are dropped (they can
    /// match no clicker).
    pub async fn usergroup_members(&self, group: &SlackGroupId) -> Result<Vec<SlackUserId>, SlackError> {
        // Group ids are [A-Z0-9]: nothing to percent-encode. This read method takes form data.
        let form = format!("usergroup={}&include_disabled=false", group.as_str());
        let answer = self.call("usergroups.users.list", ApiBody::Form(form)).await?;
        let users = answer.get("users").and_then(Value::as_array).ok_or(SlackError::InvalidResponse("no users"))?;
        Ok(users.iter().filter_map(Value::as_str).filter_map(|u| SlackUserId::parse(u).ok()).collect())
    }

    /// `users.info` (scope `users:read`, rate-limit Tier 4): the account as Slack's directory has it now.
    /// A 429 is [`SlackError::RateLimited`] like any other call; the caller refuses the vote then.
    pub async fn users_info(&self, user: &SlackUserId) -> Result<SlackAccount, SlackError> {
        // User ids are [A-Z0-9]: nothing to percent-encode. A read method: form data.
        let form = format!("user={}", user.as_str());
        let answer = self.call("users.info", ApiBody::Form(form)).await?;
        parse_account(answer.get("user").ok_or(SlackError::InvalidResponse("no user"))?)
    }

    /// Whether `url` may be called as a response URL: `https://hooks.slack.com/…` or under the configured
    /// API origin (the fake Slack in tests and local mode).
    pub fn response_url_allowed(&self, url: &str) -> Option<Url> {
        let u = Url::parse(url).ok()?;
        if !u.username().is_empty() || u.password().is_some() {
            return None;
        }
        let slack_hooks =
            u.scheme() == "https" && u.host_str() == Some(RESPONSE_URL_HOST) && u.port_or_known_default() == Some(443);
        let same_origin = u.origin() == self.base_url.origin();
        (slack_hooks || same_origin).then_some(u)
    }

    /// POSTs `body` to a `response_url` from a verified callback, without the bot token.
    pub async fn respond(&self, response_url: &str, body: &Value) -> Result<(), SlackError> {
        let url = self.response_url_allowed(response_url).ok_or(SlackError::ForbiddenUrl)?;
        self.bounded(async {
            let resp = self.http.post(url).timeout(self.timeout).json(body).send().await.map_err(network)?;
            classify(resp, false).await.map(|_| ())
        })
        .await
        .inspect_err(|e| tracing::debug!(error = %e, "response_url call failed"))
    }
}

/// Slack's user object as a [`SlackAccount`]. `id`, `team_id` and `deleted` must be there (a deactivated
/// account's object omits most other fields); an absent flag is `false`, a flag that is not a boolean makes
/// the answer unreadable (refused, never read as `false`).
fn parse_account(u: &Value) -> Result<SlackAccount, SlackError> {
    let id_field = |key: &'static str, what: &'static str| -> Result<String, SlackError> {
        u.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 32)
            .map(str::to_string)
            .ok_or(SlackError::InvalidResponse(what))
    };
    let flag = |key: &'static str| -> Result<bool, SlackError> {
        match u.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(SlackError::InvalidResponse("a user flag is not a boolean")),
        }
    };
    let deleted = u.get("deleted").and_then(Value::as_bool).ok_or(SlackError::InvalidResponse("no deleted flag"))?;
    let grid = u.get("enterprise_user");
    let enterprise_id = grid.and_then(|g| g.get("enterprise_id")).and_then(Value::as_str).map(str::to_string);
    let enterprise_teams = grid
        .and_then(|g| g.get("teams"))
        .and_then(Value::as_array)
        .map(|ts| ts.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    Ok(SlackAccount {
        id: id_field("id", "no user id")?,
        team_id: id_field("team_id", "no team_id")?,
        enterprise_id,
        enterprise_teams,
        deleted,
        is_bot: flag("is_bot")?,
        is_app_user: flag("is_app_user")?,
        is_restricted: flag("is_restricted")?,
        is_ultra_restricted: flag("is_ultra_restricted")?,
    })
}

enum ApiBody {
    Json(Value),
    Form(String),
}

#[cfg(test)]
mod tests;
