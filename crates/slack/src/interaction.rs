//! Parses a verified interactivity callback body into a typed, allow-listed [`Interaction`].
//!
//! Call only after `signature::verify` accepted the exact bytes. The body must be
//! `application/x-www-form-urlencoded` with exactly one field, `payload`, holding JSON; anything else is
//! refused. Only two shapes are accepted: a click on our Approve/Deny or break-glass Review buttons
//! (`block_actions`, exactly one action, allow-listed `action_id` and its own `block_id`, value = a request
//! id) and the submission of our deny or flag modal (`view_submission`). Sizes are bounded; nothing here panics on any input.
//!
//! Errors never echo payload content (it may be large or hostile); they name the rule that failed.

use serde::Deserialize;

use super::blocks::break_glass::{FLAG_MODAL_CALLBACK_ID, REVIEW_BLOCK_ID, REVIEW_FLAG_ACTION_ID, REVIEW_OK_ACTION_ID};
use super::blocks::{
    ACTIONS_BLOCK_ID, APPROVE_ACTION_ID, DENY_ACTION_ID, DENY_MODAL_CALLBACK_ID, DENY_REASON_ACTION_ID,
    DENY_REASON_BLOCK_ID, DENY_REASON_MAX_CHARS,
};
use countersign_core::domain::{RequestId, SlackChannelId, SlackUserId};

/// Largest body accepted. A `block_actions` payload carries the whole clicked message (≤ 50 blocks),
/// URL-encoded; 1 MiB leaves room and still bounds the work.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
const MAX_ID_CHARS: usize = 32;
const MAX_URL_CHARS: usize = 2048;
const MAX_TRIGGER_CHARS: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InteractionError {
    #[error("body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("body is not valid UTF-8")]
    NotUtf8,
    #[error("body is not a form with exactly one `payload` field: {0}")]
    BadForm(&'static str),
    #[error("payload is not valid JSON of the expected shape (line {line}, column {column})")]
    BadJson { line: usize, column: usize },
    #[error("unsupported interaction type")]
    UnsupportedType,
    #[error("missing or invalid field: {0}")]
    Field(&'static str),
    #[error("expected exactly one action, got {0}")]
    ActionCount(usize),
    #[error("unknown action_id")]
    UnknownAction,
    #[error("unknown block_id")]
    UnknownBlock,
    #[error("unknown callback_id")]
    UnknownCallback,
    #[error("the value is not a request id")]
    BadRequestId,
    #[error("channel or message in the payload disagree")]
    Inconsistent,
    #[error("the deny reason is empty")]
    EmptyReason,
    #[error("the deny reason is longer than {DENY_REASON_MAX_CHARS} characters")]
    ReasonTooLong,
}

/// Which button was clicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonAction {
    Approve,
    Deny,
    /// Row 41: "Reviewed — OK" on a break-glass.
    ReviewOk,
    /// Row 41: "Flag as misuse" on a break-glass (opens the flag modal).
    ReviewFlag,
}

impl ButtonAction {
    pub fn action_id(self) -> &'static str {
        match self {
            Self::Approve => APPROVE_ACTION_ID,
            Self::Deny => DENY_ACTION_ID,
            Self::ReviewOk => REVIEW_OK_ACTION_ID,
            Self::ReviewFlag => REVIEW_FLAG_ACTION_ID,
        }
    }

    /// The actions block this button must come from.
    pub fn block_id(self) -> &'static str {
        match self {
            Self::Approve | Self::Deny => ACTIONS_BLOCK_ID,
            Self::ReviewOk | Self::ReviewFlag => REVIEW_BLOCK_ID,
        }
    }
}

/// Which modal was submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modal {
    Deny,
    /// Row 41: the break-glass flag modal.
    Flag,
}

/// A click on Approve or Deny in one of our messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockActions {
    pub team_id: String,
    pub enterprise_id: Option<String>,
    pub api_app_id: String,
    pub user_id: SlackUserId,
    /// The clicker's own workspace (differs from `team_id` for Slack Connect users).
    pub user_team_id: Option<String>,
    pub action_id: ButtonAction,
    /// [`ButtonAction::block_id`]; kept for the audit record.
    pub block_id: String,
    /// The button value: the request id.
    pub value: RequestId,
    pub channel_id: SlackChannelId,
    pub message_ts: String,
    pub response_url: String,
    pub trigger_id: String,
}

/// The deny modal submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewSubmission {
    pub team_id: String,
    pub enterprise_id: Option<String>,
    pub api_app_id: String,
    pub user_id: SlackUserId,
    pub user_team_id: Option<String>,
    /// [`DENY_MODAL_CALLBACK_ID`] or [`FLAG_MODAL_CALLBACK_ID`].
    pub callback_id: String,
    pub modal: Modal,
    /// From `private_metadata`.
    pub request_id: RequestId,
    /// Trimmed, 1 to 500 characters.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interaction {
    BlockActions(BlockActions),
    ViewSubmission(ViewSubmission),
}

// --- wire shapes: only the fields we read; unknown fields are ignored ------------------------------------

#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    kind: String,
    team: Option<WireId>,
    enterprise: Option<WireId>,
    user: Option<WireUser>,
    api_app_id: Option<String>,
    container: Option<WireContainer>,
    channel: Option<WireId>,
    message: Option<WireMessage>,
    response_url: Option<String>,
    trigger_id: Option<String>,
    actions: Option<Vec<WireAction>>,
    view: Option<WireView>,
}

#[derive(Deserialize)]
struct WireId {
    id: Option<String>,
}

#[derive(Deserialize)]
struct WireUser {
    id: Option<String>,
    team_id: Option<String>,
}

#[derive(Deserialize)]
struct WireContainer {
    #[serde(rename = "type")]
    kind: Option<String>,
    message_ts: Option<String>,
    channel_id: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    ts: Option<String>,
}

#[derive(Deserialize)]
struct WireAction {
    #[serde(rename = "type")]
    kind: Option<String>,
    action_id: Option<String>,
    block_id: Option<String>,
    value: Option<String>,
}

#[derive(Deserialize)]
struct WireView {
    #[serde(rename = "type")]
    kind: Option<String>,
    callback_id: Option<String>,
    private_metadata: Option<String>,
    state: Option<WireState>,
}

#[derive(Deserialize)]
struct WireState {
    values: std::collections::BTreeMap<String, std::collections::BTreeMap<String, WireInput>>,
}

#[derive(Deserialize)]
struct WireInput {
    value: Option<String>,
}

// --- form decoding ----------------------------------------------------------------------------------------

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Strict `application/x-www-form-urlencoded` decoding of one component: `+` is a space, `%XX` a byte;
/// a stray `%` or a result that is not UTF-8 is an error (lenient decoders silently keep them).
fn decode_component(s: &[u8]) -> Result<String, InteractionError> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let (Some(h), Some(l)) =
                    (s.get(i + 1).copied().and_then(hex_val), s.get(i + 2).copied().and_then(hex_val))
                else {
                    return Err(InteractionError::BadForm("bad percent-encoding"));
                };
                out.push(h << 4 | l);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| InteractionError::NotUtf8)
}

/// Decodes a whole form body into (name, value) pairs, in order, duplicates kept.
pub(crate) fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, InteractionError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(InteractionError::TooLarge);
    }
    if body.is_empty() {
        return Err(InteractionError::BadForm("empty body"));
    }
    body.split(|b| *b == b'&')
        .map(|pair| {
            let (k, v) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            Ok((decode_component(k)?, decode_component(v)?))
        })
        .collect()
}

// --- validation helpers -----------------------------------------------------------------------------------

/// A Slack workspace/enterprise/app id: a known prefix, then upper-case letters and digits.
fn slack_id(v: Option<String>, prefixes: &[char], what: &'static str) -> Result<String, InteractionError> {
    let s = v.ok_or(InteractionError::Field(what))?;
    let ok = s.len() >= 3
        && s.len() <= MAX_ID_CHARS
        && s.starts_with(prefixes)
        && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if ok {
        Ok(s)
    } else {
        Err(InteractionError::Field(what))
    }
}

fn opt_slack_id(v: Option<String>, prefixes: &[char], what: &'static str) -> Result<Option<String>, InteractionError> {
    match v {
        None => Ok(None),
        Some(s) => slack_id(Some(s), prefixes, what).map(Some),
    }
}

fn bounded_ascii(v: Option<String>, max: usize, what: &'static str) -> Result<String, InteractionError> {
    let s = v.ok_or(InteractionError::Field(what))?;
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InteractionError::Field(what));
    }
    Ok(s)
}

/// Message timestamps look like `1548261231.000200`.
fn message_ts(v: Option<String>) -> Result<String, InteractionError> {
    let s = v.ok_or(InteractionError::Field("container.message_ts"))?;
    let ok = s.split_once('.').is_some_and(|(a, b)| {
        (1..=12).contains(&a.len())
            && (1..=9).contains(&b.len())
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    });
    if ok {
        Ok(s)
    } else {
        Err(InteractionError::Field("container.message_ts"))
    }
}

struct Who {
    team_id: String,
    enterprise_id: Option<String>,
    api_app_id: String,
    user_id: SlackUserId,
    user_team_id: Option<String>,
}

fn who(w: &mut Wire) -> Result<Who, InteractionError> {
    let team_id = slack_id(w.team.take().and_then(|t| t.id), &['T'], "team.id")?;
    let enterprise_id = opt_slack_id(w.enterprise.take().and_then(|e| e.id), &['E'], "enterprise.id")?;
    let api_app_id = slack_id(w.api_app_id.take(), &['A'], "api_app_id")?;
    let user = w.user.take().ok_or(InteractionError::Field("user"))?;
    let user_id =
        user.id.as_deref().and_then(|u| SlackUserId::parse(u).ok()).ok_or(InteractionError::Field("user.id"))?;
    let user_team_id = opt_slack_id(user.team_id, &['T', 'E'], "user.team_id")?;
    Ok(Who { team_id, enterprise_id, api_app_id, user_id, user_team_id })
}

fn block_actions(mut w: Wire) -> Result<BlockActions, InteractionError> {
    let who = who(&mut w)?;
    let mut actions = w.actions.take().ok_or(InteractionError::ActionCount(0))?;
    if actions.len() != 1 {
        return Err(InteractionError::ActionCount(actions.len()));
    }
    let action = actions.pop().ok_or(InteractionError::ActionCount(0))?;
    if action.kind.as_deref() != Some("button") {
        return Err(InteractionError::UnknownAction);
    }
    let action_id = match action.action_id.as_deref() {
        Some(APPROVE_ACTION_ID) => ButtonAction::Approve,
        Some(DENY_ACTION_ID) => ButtonAction::Deny,
        Some(REVIEW_OK_ACTION_ID) => ButtonAction::ReviewOk,
        Some(REVIEW_FLAG_ACTION_ID) => ButtonAction::ReviewFlag,
        _ => return Err(InteractionError::UnknownAction),
    };
    if action.block_id.as_deref() != Some(action_id.block_id()) {
        return Err(InteractionError::UnknownBlock);
    }
    let value = action.value.as_deref().and_then(|v| RequestId::parse(v).ok()).ok_or(InteractionError::BadRequestId)?;

    let container = w.container.take().ok_or(InteractionError::Field("container"))?;
    if container.kind.as_deref() != Some("message") {
        return Err(InteractionError::Field("container.type"));
    }
    let channel_id = container
        .channel_id
        .as_deref()
        .and_then(|c| SlackChannelId::parse(c).ok())
        .ok_or(InteractionError::Field("container.channel_id"))?;
    let message_ts = message_ts(container.message_ts)?;
    // When Slack also sends `channel` and `message`, they must name the same message.
    if let Some(id) = w.channel.take().and_then(|c| c.id) {
        if id != channel_id.as_str() {
            return Err(InteractionError::Inconsistent);
        }
    }
    if let Some(ts) = w.message.take().and_then(|m| m.ts) {
        if ts != message_ts {
            return Err(InteractionError::Inconsistent);
        }
    }
    let response_url = w.response_url.take().ok_or(InteractionError::Field("response_url"))?;
    if response_url.is_empty() || response_url.len() > MAX_URL_CHARS || !response_url.is_ascii() {
        return Err(InteractionError::Field("response_url"));
    }
    let trigger_id = bounded_ascii(w.trigger_id.take(), MAX_TRIGGER_CHARS, "trigger_id")?;
    Ok(BlockActions {
        team_id: who.team_id,
        enterprise_id: who.enterprise_id,
        api_app_id: who.api_app_id,
        user_id: who.user_id,
        user_team_id: who.user_team_id,
        action_id,
        block_id: action_id.block_id().to_string(),
        value,
        channel_id,
        message_ts,
        response_url,
        trigger_id,
    })
}

fn view_submission(mut w: Wire) -> Result<ViewSubmission, InteractionError> {
    let who = who(&mut w)?;
    let view = w.view.take().ok_or(InteractionError::Field("view"))?;
    if view.kind.as_deref() != Some("modal") {
        return Err(InteractionError::Field("view.type"));
    }
    let (modal, callback_id) = match view.callback_id.as_deref() {
        Some(DENY_MODAL_CALLBACK_ID) => (Modal::Deny, DENY_MODAL_CALLBACK_ID),
        Some(FLAG_MODAL_CALLBACK_ID) => (Modal::Flag, FLAG_MODAL_CALLBACK_ID),
        _ => return Err(InteractionError::UnknownCallback),
    };
    let request_id = view
        .private_metadata
        .as_deref()
        .and_then(|m| RequestId::parse(m).ok())
        .ok_or(InteractionError::BadRequestId)?;
    let mut state = view.state.ok_or(InteractionError::Field("view.state"))?;
    let raw = state
        .values
        .remove(DENY_REASON_BLOCK_ID)
        .and_then(|mut b| b.remove(DENY_REASON_ACTION_ID))
        .ok_or(InteractionError::Field("view.state.values.reason"))?
        .value
        .unwrap_or_default();
    let reason = raw.trim();
    if reason.is_empty() {
        return Err(InteractionError::EmptyReason);
    }
    if reason.chars().count() > DENY_REASON_MAX_CHARS {
        return Err(InteractionError::ReasonTooLong);
    }
    Ok(ViewSubmission {
        team_id: who.team_id,
        enterprise_id: who.enterprise_id,
        api_app_id: who.api_app_id,
        user_id: who.user_id,
        user_team_id: who.user_team_id,
        callback_id: callback_id.to_string(),
        modal,
        request_id,
        reason: reason.to_string(),
    })
}

/// Parses the verified raw body of an interactivity callback.
pub fn parse(body: &[u8]) -> Result<Interaction, InteractionError> {
    let pairs = parse_form(body)?;
    let [(name, payload)] = pairs.as_slice() else {
        return Err(InteractionError::BadForm("expected exactly one field"));
    };
    if name != "payload" {
        return Err(InteractionError::BadForm("the field is not `payload`"));
    }
    let wire: Wire =
        serde_json::from_str(payload).map_err(|e| InteractionError::BadJson { line: e.line(), column: e.column() })?;
    match wire.kind.as_str() {
        "block_actions" => block_actions(wire).map(Interaction::BlockActions),
        "view_submission" => view_submission(wire).map(Interaction::ViewSubmission),
        _ => Err(InteractionError::UnsupportedType),
    }
}

#[cfg(test)]
mod tests;
