//! The `Notifier` port on Slack: renders with [`super::blocks`] and calls [`super::client`]. User-group
//! membership and voters' accounts (`users.info`) are cached briefly ([`GROUP_CACHE_TTL`],
//! [`USER_CACHE_TTL`]) so a burst of clicks does not become a burst of lookups; failures are never cached.
//!
//! Every request message carries Slack message metadata (`event_type` [`METADATA_EVENT_TYPE`],
//! `event_payload.request_id`), so a post whose (channel, ts) was never recorded can be found again in
//! `conversations.history` and adopted instead of posted twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::Mutex;

use countersign_core::domain::{ApprovalRequest, SlackAccount, SlackChannelId, SlackGroupId, SlackUserId, Timestamp};
use countersign_core::ports::{Clock, MessageContext, NotifyError, PostedMessage, SlackSecrets, SystemClock};

use countersign_core::domain::break_glass::ReviewStatus;

use super::blocks::{self, break_glass, MessageView};
use super::client::{BotToken, SlackClient, SlackError, TokenProvider};

/// How long a user group's member list is trusted.
pub const GROUP_CACHE_TTL: Duration = Duration::from_secs(60);
/// How long a voter's account (`users.info`) is trusted: a deactivation or a demotion to guest takes
/// effect on votes at most this long after it. Measured on the injected clock (tests move it).
pub const USER_CACHE_TTL: Duration = Duration::from_secs(60);
/// The `metadata.event_type` of every request message.
pub const METADATA_EVENT_TYPE: &str = "countersign_request";
/// `conversations.history` page size (Slack allows up to 999 and recommends at most 200). Small enough
/// that a page of large messages stays under the client's 1 MiB answer bound.
pub const HISTORY_PAGE_SIZE: u32 = 100;
/// Pages read before giving up: a channel with more messages than this since the request is not searched
/// to the end (the caller then decides; see `service::notify`).
pub const HISTORY_MAX_PAGES: usize = 10;

/// The bot token from the [`SlackSecrets`] port (Secrets Manager in Lambda, config in local mode).
pub struct SecretsToken(pub Arc<dyn SlackSecrets>);

#[async_trait]
impl TokenProvider for SecretsToken {
    async fn bot_token(&self) -> Result<BotToken, SlackError> {
        self.0
            .bot_token()
            .await
            .map(|t| BotToken::new(t.expose()))
            .map_err(|e| SlackError::TokenUnavailable(Box::new(e)))
    }
}

pub struct SlackNotifier {
    client: Arc<SlackClient>,
    groups: Mutex<HashMap<SlackGroupId, (Instant, Vec<SlackUserId>)>>,
    users: Mutex<HashMap<SlackUserId, (Timestamp, SlackAccount)>>,
    /// Times the `users` cache.
    clock: Arc<dyn Clock>,
    /// Our Slack app id: only messages posted by it are adopted. `None` (not configured) accepts any app's.
    app_id: Option<String>,
}

impl SlackNotifier {
    pub fn new(client: Arc<SlackClient>) -> Self {
        Self {
            client,
            groups: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            clock: Arc::new(SystemClock),
            app_id: None,
        }
    }

    /// Times the account cache with `clock` (the app's, so tests can move it past [`USER_CACHE_TTL`]).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Adopt only messages posted by this app (`A…`); an empty id is ignored.
    #[must_use]
    pub fn with_app_id(mut self, app_id: &str) -> Self {
        self.app_id = (!app_id.is_empty()).then(|| app_id.to_string());
        self
    }

    pub fn client(&self) -> &Arc<SlackClient> {
        &self.client
    }
}

fn notify_error(e: &SlackError) -> NotifyError {
    NotifyError { retryable: e.retryable(), retry_after: e.retry_after(), message: e.to_string() }
}

/// The message for a post or an update, with its metadata (sent on updates too, so it is never lost).
pub fn render(ctx: &MessageContext<'_>) -> serde_json::Value {
    let (users, groups): (&[SlackUserId], &[SlackGroupId]) = match ctx.policy {
        Some(p) => (&p.approvers.users, &p.approvers.groups),
        None => (&[], &[]),
    };
    let mut msg = blocks::request_message(&MessageView {
        request: ctx.request,
        approver_users: users,
        approver_groups: groups,
        history: ctx.history,
        sensitive: ctx.sensitive,
        now: ctx.now,
    });
    if let Some(m) = msg.as_object_mut() {
        m.insert("metadata".into(), metadata(ctx.request));
    }
    msg
}

/// `{"event_type": "countersign_request", "event_payload": {"request_id": "req_…"}}`: only the id, which
/// channel members already see in the buttons.
pub fn metadata(request: &ApprovalRequest) -> serde_json::Value {
    json!({ "event_type": METADATA_EVENT_TYPE, "event_payload": { "request_id": request.id.to_string() } })
}

/// A Slack timestamp (`seconds.micros`) for a point in time.
pub fn slack_ts(t: Timestamp) -> String {
    let ms = t.unix_millis();
    format!("{}.{:06}", ms.div_euclid(1000), ms.rem_euclid(1000) * 1000)
}

/// The ts of `m` if it is a top-level message of ours carrying `request_id` in its metadata.
fn carries(m: &serde_json::Value, request_id: &str, app_id: Option<&str>) -> Option<String> {
    let md = m.get("metadata")?;
    if md.get("event_type")?.as_str()? != METADATA_EVENT_TYPE
        || md.get("event_payload")?.get("request_id")?.as_str()? != request_id
    {
        return None;
    }
    // Another app in the channel could copy our metadata; its message is not one we can update.
    if app_id.is_some_and(|a| m.get("app_id").and_then(serde_json::Value::as_str) != Some(a)) {
        return None;
    }
    let ts = m.get("ts")?.as_str().filter(|t| !t.is_empty() && t.len() <= 32)?;
    if m.get("thread_ts").and_then(serde_json::Value::as_str).is_some_and(|p| p != ts) {
        return None; // a reply in a thread, never a request message
    }
    Some(ts.to_string())
}

fn channel(posted: &PostedMessage) -> Result<SlackChannelId, NotifyError> {
    SlackChannelId::parse(&posted.channel).map_err(|e| NotifyError {
        retryable: false,
        retry_after: None,
        message: format!("stored channel is invalid: {e}"),
    })
}

#[async_trait]
impl countersign_core::ports::Notifier for SlackNotifier {
    async fn post_request(&self, ctx: &MessageContext<'_>) -> Result<PostedMessage, NotifyError> {
        let msg = render(ctx);
        let p =
            self.client.post_message(&ctx.request.notification.channel, &msg).await.map_err(|e| notify_error(&e))?;
        Ok(PostedMessage { channel: p.channel.to_string(), ts: p.ts })
    }

    async fn find_request_message(
        &self,
        request: &ApprovalRequest,
        since: Timestamp,
    ) -> Result<Option<PostedMessage>, NotifyError> {
        let channel = &request.notification.channel;
        let (oldest, id) = (slack_ts(since), request.id.to_string());
        let mut cursor: Option<String> = None;
        for _ in 0..HISTORY_MAX_PAGES {
            let page = self
                .client
                .conversation_history(channel, &oldest, HISTORY_PAGE_SIZE, cursor.as_deref())
                .await
                .map_err(|e| match e {
                // An answer we cannot read (too large, malformed) will not read better later: retrying
                // it would hold the request's message back for good.
                SlackError::InvalidResponse(_) => NotifyError { retryable: false, ..notify_error(&e) },
                e => notify_error(&e),
            })?;
            if let Some(ts) = page.messages.iter().find_map(|m| carries(m, &id, self.app_id.as_deref())) {
                return Ok(Some(PostedMessage { channel: channel.to_string(), ts }));
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(None),
            }
        }
        Err(NotifyError {
            retryable: false,
            retry_after: None,
            message: format!(
                "more than {} messages in the channel since the request: history not searched to the end",
                HISTORY_MAX_PAGES * HISTORY_PAGE_SIZE as usize
            ),
        })
    }

    async fn update_request(&self, ctx: &MessageContext<'_>, posted: &PostedMessage) -> Result<(), NotifyError> {
        let msg = render(ctx);
        self.client.update_message(&channel(posted)?, &posted.ts, &msg).await.map_err(|e| notify_error(&e))
    }

    async fn remind(&self, ctx: &MessageContext<'_>, posted: &PostedMessage) -> Result<(), NotifyError> {
        let r = ctx.request;
        // A break-glass is reminded of its review, and escalated when it is overdue (row 41).
        let msg = match r.break_glass.as_ref() {
            Some(b) if b.review.status == ReviewStatus::Overdue => {
                let mut m = break_glass::escalation(r, b, None);
                m["thread_ts"] = json!(posted.ts);
                m["reply_broadcast"] = json!(true);
                m
            }
            Some(b) => {
                let approvers = ctx
                    .policy
                    .map(|p| break_glass::mentions(&p.approvers.users, &p.approvers.groups))
                    .unwrap_or_default();
                let mut m = break_glass::reminder(r, b, &approvers);
                m["thread_ts"] = json!(posted.ts);
                m
            }
            None => {
                let missing = r.required_approvals.saturating_sub(u32::try_from(r.approvals.len()).unwrap_or(u32::MAX));
                let text = format!(
                    ":hourglass_flowing_sand: Still waiting: {missing} more approval(s) needed before this request \
                     expires {}.",
                    blocks::date_token(r.expires_at)
                );
                json!({"text": text, "thread_ts": posted.ts})
            }
        };
        self.client.post_message(&channel(posted)?, &msg).await.map(|_| ()).map_err(|e| notify_error(&e))
    }

    async fn group_members(&self, group: &SlackGroupId) -> Result<Vec<SlackUserId>, NotifyError> {
        if let Some((at, members)) = self.groups.lock().await.get(group) {
            if at.elapsed() < GROUP_CACHE_TTL {
                return Ok(members.clone());
            }
        }
        let members = self.client.usergroup_members(group).await.map_err(|e| notify_error(&e))?;
        self.groups.lock().await.insert(group.clone(), (Instant::now(), members.clone()));
        Ok(members)
    }

    async fn user_account(&self, user: &SlackUserId) -> Result<SlackAccount, NotifyError> {
        let now = self.clock.now();
        let ttl = i64::try_from(USER_CACHE_TTL.as_millis()).unwrap_or(i64::MAX);
        if let Some((at, account)) = self.users.lock().await.get(user) {
            // A clock that went backwards does not extend the entry's life.
            let age = now.unix_millis().saturating_sub(at.unix_millis());
            if (0..ttl).contains(&age) {
                return Ok(account.clone());
            }
        }
        let account = self.client.users_info(user).await.map_err(|e| notify_error(&e))?;
        self.users.lock().await.insert(user.clone(), (now, account.clone()));
        Ok(account)
    }
}
