//! The Web API methods over a [`Workspace`]: one dispatcher, shared by every host.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::limits::{check_message, message_metadata, modal_limit_violations};
use super::wire::{flag, number, slack_err, slack_err_with, slack_ok, str_field, ts_micros};
use super::{Effect, Ephemeral, Message, OpenView, Workspace, TRIGGER_TTL};

/// The bot scopes the token has when `conversations.history` is refused (see
/// [`Workspace::set_history_scope`]).
const SCOPES_WITHOUT_HISTORY: &str = "chat:write,usergroups:read,users:read";

impl Workspace {
    /// Answers one Web API call: `authorization` is the request's `Authorization` header, `json_body` whether
    /// the arguments came as JSON (read methods ignore those), `body` the parsed arguments.
    pub fn call(
        &mut self,
        method: &str,
        authorization: Option<&str>,
        json_body: bool,
        body: Value,
    ) -> (Response, Effect) {
        match authorization.and_then(|a| a.strip_prefix("Bearer ")) {
            None => return (slack_err("not_authed"), Effect::None),
            Some(t) if t != self.token => return (slack_err("invalid_auth"), Effect::None),
            Some(_) => {}
        }
        let Value::Object(body) = body else {
            return (slack_err("invalid_arguments"), Effect::None);
        };
        let answer = match method {
            "chat.postMessage" => self.post_message(&body),
            "chat.update" => self.update_message(&body),
            "chat.postEphemeral" => self.post_ephemeral(&body),
            "views.open" => self.open_view(&body),
            // Reads: they change nothing.
            "usergroups.users.list" => Ok((self.usergroup_members(&body), Effect::None)),
            "conversations.history" => Ok((self.history(&body), Effect::None)),
            "users.info" => {
                Ok((users_info_answer(json_body, &body, |u| self.user(u).map(|a| a.wire(u))), Effect::None))
            }
            _ => Err(refused("unknown_method")),
        };
        match answer {
            Ok(done) => done,
            Err(refusal) => (*refusal, Effect::None),
        }
    }

    /// A channel argument the workspace accepts.
    fn channel<'a>(&self, body: &'a Map<String, Value>) -> Option<&'a str> {
        str_field(body, "channel")
            .filter(|c| !self.profile.well_formed_ids || countersign_core::domain::SlackChannelId::parse(c).is_ok())
    }

    fn post_message(&mut self, body: &Map<String, Value>) -> Result<(Response, Effect), Refused> {
        let channel = self.channel(body).ok_or_else(|| refused("channel_not_found"))?;
        refuse(check_message(body))?;
        let metadata = message_metadata(body).map_err(refused)?;
        let thread_ts = str_field(body, "thread_ts").map(str::to_string);
        if let Some(parent) = &thread_ts {
            if self.message(channel, parent).is_none_or(|m| m.thread_ts.is_some()) {
                return Err(refused("thread_not_found"));
            }
        }
        let ts = self.next_ts();
        let text = body.get("text").and_then(Value::as_str).map(str::to_string);
        let blocks = body.get("blocks").cloned().unwrap_or(Value::Null);
        self.push(channel, Message { thread_ts, metadata, ..Message::new(ts.clone(), text, blocks) });
        let answer = slack_ok(json!({ "channel": channel, "ts": ts,
                                      "message": { "ts": ts, "text": body.get("text"), "bot_id": self.profile.bot_id } }));
        Ok((answer, Effect::Message { channel: channel.to_string(), ts }))
    }

    fn update_message(&mut self, body: &Map<String, Value>) -> Result<(Response, Effect), Refused> {
        let (Some(channel), Some(ts)) = (str_field(body, "channel"), str_field(body, "ts")) else {
            return Err(refused("invalid_arguments"));
        };
        refuse(check_message(body))?;
        let metadata = message_metadata(body).map_err(refused)?;
        let keep_body = self.profile.keep_update_bodies;
        let own_app = self.profile.app_id.clone();
        let m = self.message_mut(channel, ts).ok_or_else(|| refused("message_not_found"))?;
        if m.app_id.as_ref().is_some_and(|a| *a != own_app) {
            return Err(refused("cant_update_message"));
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
        m.updates += 1;
        if keep_body {
            m.update_bodies.push(Value::Object(body.clone()));
        }
        let effect = Effect::Message { channel: channel.to_string(), ts: ts.to_string() };
        Ok((slack_ok(json!({ "channel": channel, "ts": ts })), effect))
    }

    fn post_ephemeral(&mut self, body: &Map<String, Value>) -> Result<(Response, Effect), Refused> {
        let channel = self.channel(body).ok_or_else(|| refused("channel_not_found"))?;
        let user = str_field(body, "user")
            .filter(|u| !self.profile.well_formed_ids || self.user(u).is_some())
            .ok_or_else(|| refused("user_not_in_channel"))?;
        refuse(check_message(body))?;
        let ts = self.next_ts();
        let id = self.next_id();
        self.ephemerals.push(Ephemeral {
            id,
            user: user.to_string(),
            channel: channel.to_string(),
            ts: ts.clone(),
            text: body.get("text").and_then(Value::as_str).map(str::to_string),
            blocks: body.get("blocks").cloned().unwrap_or(Value::Null),
        });
        Ok((slack_ok(json!({ "message_ts": ts })), Effect::Shown))
    }

    fn open_view(&mut self, body: &Map<String, Value>) -> Result<(Response, Effect), Refused> {
        let trigger_id = str_field(body, "trigger_id").ok_or_else(|| refused("invalid_trigger_id"))?;
        let view = body.get("view").ok_or_else(|| refused("invalid_arguments"))?;
        let problems = modal_limit_violations(view);
        if !problems.is_empty() {
            return Err(Box::new(slack_err_with("invalid_arguments", problems)));
        }
        if !self.profile.issued_triggers {
            return Ok((slack_ok(json!({ "view": { "id": "V0FAKEVIEW", "type": "modal" } })), Effect::None));
        }
        let trigger = self.triggers.remove(trigger_id).ok_or_else(|| refused("invalid_trigger_id"))?;
        if trigger.created.elapsed() > TRIGGER_TTL {
            return Err(refused("expired_trigger_id"));
        }
        let view_id = format!("V0SIM{:06}", self.next_id());
        self.views.insert(trigger.user, OpenView { view_id: view_id.clone(), view: view.clone(), errors: None });
        Ok((slack_ok(json!({ "view": { "id": view_id, "type": "modal" } })), Effect::Shown))
    }

    fn usergroup_members(&self, body: &Map<String, Value>) -> Response {
        let Some(group) = str_field(body, "usergroup") else {
            return slack_err("invalid_arguments");
        };
        match self.usergroups.get(group) {
            Some(users) => slack_ok(json!({ "users": users })),
            None => slack_err("no_such_subteam"),
        }
    }

    /// The channel's top-level messages as Slack message objects, paged as Slack pages them.
    fn history(&self, body: &Map<String, Value>) -> Response {
        let Some(channel) = self.channel(body) else {
            return slack_err("channel_not_found");
        };
        if self.no_history_scope {
            return Json(json!({ "ok": false, "error": "missing_scope", "needed": "channels:history",
                                "provided": SCOPES_WITHOUT_HISTORY }))
            .into_response();
        }
        let p = &self.profile;
        // Filtered and paged on the ts alone: only the page's messages are rendered (a long channel is not
        // copied on every call).
        let top_level: Vec<&Message> = self
            .store
            .channels
            .get(channel)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter(|m| m.thread_ts.is_none())
            .collect();
        let render = |m: &Message| {
            let mut o = json!({ "type": "message", "user": p.bot_user, "bot_id": p.bot_id, "app_id": m.app(p),
                                "ts": m.ts, "text": m.text, "blocks": m.blocks });
            if let Some(md) = &m.metadata {
                o["metadata"] = md.clone();
            }
            o
        };
        history_page(body, top_level, |m| ts_micros(&m.ts).unwrap_or(0), render)
    }
}

/// A refused call's answer (boxed: a `Response` is large).
type Refused = Box<Response>;

fn refused(error: &str) -> Refused {
    Box::new(slack_err(error))
}

/// A check's refusal as an early return.
fn refuse(refusal: Option<Response>) -> Result<(), Refused> {
    refusal.map_or(Ok(()), |r| Err(Box::new(r)))
}

/// Slack's `users.info` over a directory: `user` must be a form (or query) argument; a JSON body's
/// arguments are not read, as Slack's read methods do not.
pub fn users_info_answer(
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

/// `conversations.history` over `messages` (the channel's top-level messages as Slack message objects, in
/// any order): Slack's filters and paging.
pub fn history_answer(body: &Map<String, Value>, messages: Vec<Value>) -> Response {
    let at = |m: &Value| m.get("ts").and_then(Value::as_str).and_then(ts_micros).unwrap_or(0);
    history_page(body, messages, at, |m| m)
}

/// Slack's filters and paging over `items` (any order), each placed by `at` (its ts in microseconds) and
/// rendered as a Slack message object by `render` only when it is on the page.
fn history_page<T>(
    body: &Map<String, Value>,
    mut items: Vec<T>,
    at: impl Fn(&T) -> i64,
    render: impl Fn(T) -> Value,
) -> Response {
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
    items.retain(|m| {
        let t = at(m);
        oldest.is_none_or(|o| if inclusive { t >= o } else { t > o })
            && latest.is_none_or(|l| if inclusive { t <= l } else { t < l })
            && before.is_none_or(|b| t < b)
    });
    items.sort_by_key(|m| std::cmp::Reverse(at(m)));
    let has_more = items.len() as u64 > limit;
    items.truncate(usize::try_from(limit).unwrap_or(999));
    let next_cursor = match items.last() {
        Some(m) if has_more => hex::encode(format!("before:{}", at(m))),
        _ => String::new(),
    };
    let mut messages: Vec<Value> = items.into_iter().map(render).collect();
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
