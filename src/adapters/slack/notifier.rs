//! The `Notifier` port on Slack: renders with [`super::blocks`] and calls [`super::client`]. User-group
//! membership is cached briefly so a burst of clicks does not become a burst of `usergroups.users.list`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::Mutex;

use crate::domain::{SlackChannelId, SlackGroupId, SlackUserId};
use crate::ports::{MessageContext, NotifyError, PostedMessage, SlackSecrets};

use super::blocks::{self, MessageView};
use super::client::{BotToken, SlackClient, SlackError, TokenProvider};

/// How long a user group's member list is trusted.
pub const GROUP_CACHE_TTL: Duration = Duration::from_secs(60);

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
}

impl SlackNotifier {
    pub fn new(client: Arc<SlackClient>) -> Self {
        Self { client, groups: Mutex::new(HashMap::new()) }
    }

    pub fn client(&self) -> &Arc<SlackClient> {
        &self.client
    }
}

fn notify_error(e: &SlackError) -> NotifyError {
    NotifyError { retryable: e.retryable(), retry_after: e.retry_after(), message: e.to_string() }
}

fn render(ctx: &MessageContext<'_>) -> serde_json::Value {
    let (users, groups): (&[SlackUserId], &[SlackGroupId]) = match ctx.policy {
        Some(p) => (&p.approvers.users, &p.approvers.groups),
        None => (&[], &[]),
    };
    blocks::request_message(&MessageView {
        request: ctx.request,
        approver_users: users,
        approver_groups: groups,
        history: ctx.history,
        sensitive: ctx.sensitive,
        now: ctx.now,
    })
}

fn channel(posted: &PostedMessage) -> Result<SlackChannelId, NotifyError> {
    SlackChannelId::parse(&posted.channel).map_err(|e| NotifyError {
        retryable: false,
        retry_after: None,
        message: format!("stored channel is invalid: {e}"),
    })
}

#[async_trait]
impl crate::ports::Notifier for SlackNotifier {
    async fn post_request(&self, ctx: &MessageContext<'_>) -> Result<PostedMessage, NotifyError> {
        let msg = render(ctx);
        let p =
            self.client.post_message(&ctx.request.notification.channel, &msg).await.map_err(|e| notify_error(&e))?;
        Ok(PostedMessage { channel: p.channel.to_string(), ts: p.ts })
    }

    async fn update_request(&self, ctx: &MessageContext<'_>, posted: &PostedMessage) -> Result<(), NotifyError> {
        let msg = render(ctx);
        self.client.update_message(&channel(posted)?, &posted.ts, &msg).await.map_err(|e| notify_error(&e))
    }

    async fn remind(&self, ctx: &MessageContext<'_>, posted: &PostedMessage) -> Result<(), NotifyError> {
        let r = ctx.request;
        let missing = r.required_approvals.saturating_sub(u32::try_from(r.approvals.len()).unwrap_or(u32::MAX));
        let text = format!(
            ":hourglass_flowing_sand: Still waiting: {missing} more approval(s) needed before this request expires {}.",
            blocks::date_token(r.expires_at)
        );
        let msg = json!({"text": text, "thread_ts": posted.ts});
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
}
