//! The one Slack Web API emulator: a workspace's state and the seven Web API methods the product calls,
//! in Slack's wire format and within Slack's documented limits. Two hosts serve it over HTTP:
//! [`crate::fake::FakeSlack`] (tests: plus injected failures, delays and recorded calls) and local mode's
//! simulator (`countersign_local::simulator`: plus a browser page, its click API and persistence).
//!
//! - [`Workspace::call`]: `chat.postMessage` (with `metadata` and `thread_ts`), `chat.update`,
//!   `chat.postEphemeral`, `views.open`, `usergroups.users.list`, `users.info` (form or query arguments
//!   only, like Slack's read methods), `conversations.history` (Slack's paging: newest first,
//!   `oldest`/`latest`/`inclusive`, `limit` up to 999, opaque `cursor`, `has_more`,
//!   `response_metadata.next_cursor`; metadata only with `include_all_metadata`). Answers `{"ok": true, …}`
//!   or `{"ok": false, "error": "…"}` like Slack.
//! - Message timestamps are strictly increasing, as Slack's are: from the given clock (milliseconds), or the
//!   system time in microseconds.
//! - [`Profile`] says how strict the workspace is: the fake accepts any channel and any `trigger_id`;
//!   the simulator wants well-formed ids, known users and triggers its page issued.
//!
//! Test and development machinery: it must never be reachable from a deployed Lambda.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use countersign_core::ports::Clock;

mod limits;
mod methods;
mod wire;

pub use limits::{check_message, message_limit_violations, message_metadata, modal_limit_violations};
pub use methods::{history_answer, users_info_answer};
pub use wire::{parse_body, slack_err, slack_err_with, slack_ok, str_field};

/// The workspace the fake's users belong to by default (the tests' configured team).
pub const FAKE_TEAM_ID: &str = "T0TEAM0001";
/// Slack lets a `trigger_id` open a view within 3 seconds, once.
pub const TRIGGER_TTL: Duration = Duration::from_secs(3);

/// How the emulated workspace posts and how strictly it reads its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The app (`app_id`), bot (`bot_id`) and bot user (`user`) the workspace's own posts carry.
    pub app_id: String,
    pub bot_id: String,
    pub bot_user: String,
    /// Channel ids must be well-formed (`channel_not_found` otherwise) and `chat.postEphemeral`'s user must
    /// be in the directory (`user_not_in_channel` otherwise).
    pub well_formed_ids: bool,
    /// `views.open` needs a `trigger_id` from [`Workspace::issue_trigger`] ([`TRIGGER_TTL`], once) and keeps
    /// the view open for the clicking user; otherwise any `trigger_id` opens a view nobody keeps.
    pub issued_triggers: bool,
    /// How `users.info` describes a well-formed user id nobody set; `None`: `user_not_found`.
    pub default_user: Option<FakeUser>,
    /// Keep the body of every `chat.update` applied to a message ([`Message::update_bodies`]).
    pub keep_update_bodies: bool,
}

/// How the directory (`users.info`) describes one account; [`FakeUser::member`] is the fake's default for
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

/// A message as the workspace keeps it (local mode persists it in this shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
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
    /// Set when another app posted it; `None`: the workspace's own app ([`Profile::app_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// The bodies of the `chat.update` calls applied, oldest first ([`Profile::keep_update_bodies`]).
    #[serde(skip)]
    pub update_bodies: Vec<Value>,
}

impl Message {
    /// A new top-level message of the workspace's own app.
    pub fn new(ts: String, text: Option<String>, blocks: Value) -> Self {
        Self { ts, text, blocks, thread_ts: None, updates: 0, metadata: None, app_id: None, update_bodies: vec![] }
    }

    /// The app that posted it.
    pub fn app<'a>(&'a self, profile: &'a Profile) -> &'a str {
        self.app_id.as_deref().unwrap_or(&profile.app_id)
    }
}

/// Every channel's messages, in posting order, and the last ts handed out (local mode's snapshot format).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageStore {
    /// channel id → messages in posting order.
    pub channels: BTreeMap<String, Vec<Message>>,
    /// In microseconds.
    pub last_ts_micros: u64,
}

/// An ephemeral message, shown to one user until dismissed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ephemeral {
    pub id: u64,
    #[serde(skip)]
    pub user: String,
    pub channel: String,
    pub ts: String,
    pub text: Option<String>,
    pub blocks: Value,
}

/// A modal open for a user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenView {
    pub view_id: String,
    pub view: Value,
    /// The app's `response_action: errors`, shown under the inputs.
    pub errors: Option<Value>,
}

#[derive(Debug)]
struct Trigger {
    user: String,
    created: Instant,
}

/// What a call changed, for hosts that show or keep state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing (a read, or a refusal).
    None,
    /// This message was posted or updated.
    Message { channel: String, ts: String },
    /// An ephemeral message or a view appeared.
    Shown,
}

/// One emulated workspace: messages, directory, user groups, ephemerals, views and triggers.
pub struct Workspace {
    profile: Profile,
    token: String,
    clock: Option<Arc<dyn Clock>>,
    /// The messages; a host that persists them reads and replaces this.
    pub store: MessageStore,
    usergroups: HashMap<String, Vec<String>>,
    /// `users.info` entries: `None` is an unknown user (`user_not_found`).
    users: HashMap<String, Option<FakeUser>>,
    /// `false`: the token lacks `channels:history` (an install made before it was asked for).
    no_history_scope: bool,
    /// Ephemeral messages not yet dismissed, oldest first.
    pub ephemerals: Vec<Ephemeral>,
    triggers: HashMap<String, Trigger>,
    /// user → the modal open for them.
    pub views: HashMap<String, OpenView>,
    next_id: u64,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("app_id", &self.profile.app_id)
            .field("channels", &self.store.channels.len())
            .finish_non_exhaustive()
    }
}

impl Workspace {
    /// A workspace that accepts `token`, with timestamps from `clock` (`None`: the system time).
    pub fn new(profile: Profile, token: &str, clock: Option<Arc<dyn Clock>>) -> Self {
        Self {
            profile,
            token: token.to_string(),
            clock,
            store: MessageStore::default(),
            usergroups: HashMap::new(),
            users: HashMap::new(),
            no_history_scope: false,
            ephemerals: vec![],
            triggers: HashMap::new(),
            views: HashMap::new(),
            next_id: 0,
        }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// A new message ts: the clock's time (or the system time in microseconds), strictly increasing.
    pub fn next_ts(&mut self) -> String {
        let now = match &self.clock {
            Some(c) => u64::try_from(c.now().unix_millis().saturating_mul(1000)).unwrap_or(0),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        };
        let t = now.max(self.store.last_ts_micros + 1);
        self.store.last_ts_micros = t;
        format!("{}.{:06}", t / 1_000_000, t % 1_000_000)
    }

    /// A new id for ephemerals, views and whatever else the host numbers.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn message(&self, channel: &str, ts: &str) -> Option<&Message> {
        self.store.channels.get(channel)?.iter().find(|m| m.ts == ts)
    }

    pub fn message_mut(&mut self, channel: &str, ts: &str) -> Option<&mut Message> {
        self.store.channels.get_mut(channel)?.iter_mut().find(|m| m.ts == ts)
    }

    /// Adds `message` after the channel's others.
    pub fn push(&mut self, channel: &str, message: Message) {
        self.store.channels.entry(channel.to_string()).or_default().push(message);
    }

    /// Every message of every channel (top-level and replies), in posting order.
    pub fn all_messages(&self) -> Vec<(&str, &Message)> {
        let mut all: Vec<(&str, &Message)> =
            self.store.channels.iter().flat_map(|(c, ms)| ms.iter().map(move |m| (c.as_str(), m))).collect();
        all.sort_by_key(|(_, m)| wire::ts_micros(&m.ts).unwrap_or(0));
        all
    }

    /// Members returned by `usergroups.users.list` for `group`.
    pub fn set_usergroup(&mut self, group: &str, members: Vec<String>) {
        self.usergroups.insert(group.to_string(), members);
    }

    /// How `users.info` describes `user` from now on; `None`: `user_not_found`.
    pub fn set_user(&mut self, user: &str, account: Option<FakeUser>) {
        self.users.insert(user.to_string(), account);
    }

    /// The directory's entry for `user`: set ones first, then [`Profile::default_user`] for well-formed ids.
    pub fn user(&self, user: &str) -> Option<FakeUser> {
        match self.users.get(user) {
            Some(account) => account.clone(),
            None => {
                self.profile.default_user.clone().filter(|_| countersign_core::domain::SlackUserId::parse(user).is_ok())
            }
        }
    }

    /// With `false`, `conversations.history` answers `missing_scope`.
    pub fn set_history_scope(&mut self, granted: bool) {
        self.no_history_scope = !granted;
    }

    /// Lets `trigger_id` open one view for `user` within [`TRIGGER_TTL`]; forgets expired triggers.
    pub fn issue_trigger(&mut self, trigger_id: String, user: String) {
        self.triggers.retain(|_, t| t.created.elapsed() <= TRIGGER_TTL);
        self.triggers.insert(trigger_id, Trigger { user, created: Instant::now() });
    }
}

#[cfg(test)]
mod tests;
