//! Block Kit for approval messages, the deny modal and ephemeral replies, as pure functions.
//!
//! The same inputs always give the same JSON (golden tests in `tests/golden/`). Nothing here performs
//! I/O.
//!
//! Invariants:
//! - Every string the requester chose (resource, reason, detail keys and values, session name) and every
//!   deny reason is escaped for mrkdwn (`&`, `<`, `>`) before it is placed in a `mrkdwn` object, so
//!   `<!channel>`, `<@U…>` or `<https://evil|Approve>` render as text. Mentions come only from the policy
//!   (`approver_users`, `approver_groups`) and from recorded votes. `link_names` is never set.
//! - Requester text (reason, resource, detail keys and values) is placed only in `plain_text` objects with
//!   `"emoji": false` (threat row 33): `*bold*`, `_italic_`, `~strike~`, `` `code` ``, `> quote` and
//!   `:shortcode:` stay literal, so a reason cannot draw Countersign's own headings. Slack mrkdwn has no
//!   escape for those characters, hence plain_text. It is escaped for `&`, `<`, `>` all the same: Slack
//!   decodes those three entities in every text object, so escaped text shows exactly as sent.
//!   No plain_text object of ours turns `:shortcodes:` into emoji either.
//! - What AWS IAM verified is shown apart from what the workload merely stated (divider + own heading).
//! - Buttons exist only while the request is pending; their `value` is the request id and nothing else.
//! - Every documented Block Kit limit holds; text is cut after escaping, never inside an escape sequence or
//!   a UTF-8 character, and marked with `…`.

use serde_json::{json, Value};

use countersign_core::domain::credentials::key_suffix;
use countersign_core::domain::{
    ApprovalRequest, CredentialType, RequestId, SlackGroupId, SlackUserId, Status, Timestamp,
};

pub mod break_glass;
pub mod drill;

pub const ACTIONS_BLOCK_ID: &str = "countersign_actions";
pub const APPROVE_ACTION_ID: &str = "countersign_approve";
pub const DENY_ACTION_ID: &str = "countersign_deny";
pub const DENY_MODAL_CALLBACK_ID: &str = "countersign_deny_modal";
pub const DENY_REASON_BLOCK_ID: &str = "reason";
pub const DENY_REASON_ACTION_ID: &str = "reason";
pub const DENY_REASON_MAX_CHARS: usize = 500;

/// Documented Block Kit limits, in characters.
pub mod limits {
    pub const MAX_BLOCKS: usize = 50;
    pub const MAX_MODAL_BLOCKS: usize = 100;
    pub const SECTION_TEXT: usize = 3000;
    pub const FIELD_TEXT: usize = 2000;
    pub const MAX_FIELDS: usize = 10;
    pub const HEADER_TEXT: usize = 150;
    pub const BUTTON_TEXT: usize = 75;
    pub const BUTTON_VALUE: usize = 2000;
    pub const MAX_ACTION_ELEMENTS: usize = 25;
    pub const MAX_CONTEXT_ELEMENTS: usize = 10;
    /// A text object anywhere (context elements included).
    pub const TEXT_OBJECT: usize = 3000;
    pub const FALLBACK_TEXT: usize = 40_000;
    pub const BLOCK_ID: usize = 255;
    pub const ACTION_ID: usize = 255;
    pub const CONFIRM_TITLE: usize = 100;
    pub const CONFIRM_TEXT: usize = 300;
    pub const CONFIRM_BUTTON: usize = 30;
    pub const MODAL_TITLE: usize = 24;
    pub const MODAL_BUTTON: usize = 24;
    pub const PRIVATE_METADATA: usize = 3000;
    pub const CALLBACK_ID: usize = 255;
    pub const INPUT_LABEL: usize = 2000;
    pub const PLAIN_TEXT_INPUT_MAX_LENGTH: usize = 3000;
}

/// Details shown at most (two sections of ten fields); the rest are counted, not shown.
pub const MAX_DETAILS_SHOWN: usize = 2 * limits::MAX_FIELDS;
const DETAIL_KEY_CHARS: usize = 100;

pub use countersign_core::domain::History;

/// Everything the approval message shows.
#[derive(Debug, Clone, Copy)]
pub struct MessageView<'a> {
    pub request: &'a ApprovalRequest,
    /// From the policy, never from the request.
    pub approver_users: &'a [SlackUserId],
    pub approver_groups: &'a [SlackGroupId],
    pub history: &'a History,
    /// The environment is listed as sensitive: Approve asks for confirmation.
    pub sensitive: bool,
    pub now: Timestamp,
}

/// Escapes the three characters Slack's mrkdwn gives meaning to.
pub fn escape_mrkdwn(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Cuts already-escaped text to at most `max_chars` characters (Unicode scalar values), ending with `…`
/// when cut. Never splits a UTF-8 character or an `&amp;` / `&lt;` / `&gt;` sequence.
pub fn truncate_escaped(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_string();
    }
    if max_chars == 0 {
        return String::new();
    }
    let end = s.char_indices().nth(max_chars - 1).map_or(s.len(), |(i, _)| i);
    let mut cut = &s[..end];
    if let Some(amp) = cut.rfind('&') {
        let tail = &s[amp..];
        if ["&amp;", "&lt;", "&gt;"].iter().any(|e| tail.starts_with(e) && amp + e.len() > end) {
            cut = &cut[..amp];
        }
    }
    format!("{cut}…")
}

/// Labels are one line: a key with line breaks could otherwise draw its own headings.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Escapes then truncates: the form every requester-supplied string takes in mrkdwn.
fn safe(s: &str, max_chars: usize) -> String {
    truncate_escaped(&escape_mrkdwn(s), max_chars)
}

fn mrkdwn(text: impl Into<String>) -> Value {
    json!({ "type": "mrkdwn", "text": text.into() })
}

/// A plain_text object of already-escaped text; `emoji: false` keeps `:shortcodes:` literal.
fn plain(text: &str, max_chars: usize) -> Value {
    json!({ "type": "plain_text", "text": truncate_escaped(text, max_chars), "emoji": false })
}

/// Requester text as it is shown: escaped, cut, plain_text without emoji conversion (rows 19, 20, 33).
/// Slack refuses an empty text object, so blank text (a detail value may be `""`) shows as our own
/// `(empty)` marker, in italics, which plain requester text cannot imitate.
fn stated(s: &str, max_chars: usize) -> Value {
    if s.trim().is_empty() {
        return mrkdwn("_(empty)_");
    }
    plain(&escape_mrkdwn(s), max_chars)
}

/// `*label*\nvalue` within the field limit; `value` must already be escaped (or be our own tokens).
fn field(label: &str, value_escaped: &str) -> Value {
    let head = format!("*{label}*\n");
    let room = limits::FIELD_TEXT.saturating_sub(head.chars().count());
    mrkdwn(format!("{head}{}", truncate_escaped(value_escaped, room)))
}

/// A Slack date token: readers see their own time zone; clients that cannot render it show RFC 3339.
pub fn date_token(t: Timestamp) -> String {
    format!("<!date^{}^{{date_short_pretty}} {{time}}|{}>", t.unix_seconds(), t.to_rfc3339())
}

fn day(t: Timestamp) -> String {
    let s = t.to_rfc3339();
    s.get(..10).unwrap_or(&s).to_string()
}

fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn user_mention(u: &SlackUserId) -> String {
    format!("<@{u}>")
}

fn group_mention(g: &SlackGroupId) -> String {
    format!("<!subteam^{g}>")
}

/// Joins mention tokens within `max_chars`, never cutting one: the rest become "and N more".
fn mention_list(tokens: &[String], max_chars: usize) -> String {
    let mut out = String::new();
    for (i, t) in tokens.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let rest = tokens.len() - i - 1;
        let more = if rest > 0 { format!(" and {rest} more") } else { String::new() };
        if out.chars().count() + sep.len() + t.chars().count() + more.len() > max_chars {
            let left = tokens.len() - i;
            return format!("{out} and {left} more");
        }
        out.push_str(sep);
        out.push_str(t);
    }
    out
}

fn is_auto_approved(r: &ApprovalRequest) -> bool {
    r.required_approvals == 0
}

fn fallback_text(r: &ApprovalRequest, status: Status) -> String {
    let what = format!("{} → {}", r.action, r.environment);
    let lead = if r.break_glass.is_some() {
        "BREAK-GLASS (approved at once, review needed)"
    } else if is_auto_approved(r) {
        "Approved automatically by policy"
    } else {
        match status {
            Status::Pending => "Approval requested",
            Status::Approved => "Approved",
            Status::Denied => "Denied",
            Status::Expired => "Expired",
            Status::Cancelled => "Cancelled",
        }
    };
    // Only token-grammar values and our own id: nothing the requester wrote reaches notifications.
    truncate_escaped(&format!("{lead}: {what} ({})", r.id), 300)
}

fn approvals_by(r: &ApprovalRequest) -> String {
    let tokens: Vec<String> = r.approvals.iter().map(|a| user_mention(&a.user_id)).collect();
    mention_list(&tokens, 1000)
}

fn status_section(r: &ApprovalRequest, status: Status) -> Value {
    let have = r.approvals.len();
    let need = r.required_approvals;
    let text = if r.break_glass.is_some() {
        break_glass::status_text(r, &use_line(r))
    } else if is_auto_approved(r) {
        format!(
            ":robot_face: *Approved automatically by policy* `{}`: it requires no approvals. \
             Shown for the record; nothing to do.{}",
            r.policy.name,
            use_line(r)
        )
    } else {
        match status {
            Status::Pending => {
                let by = if have == 0 { String::new() } else { format!(": {}", approvals_by(r)) };
                let noun = if need == 1 { "approval" } else { "approvals" };
                format!(":hourglass_flowing_sand: *Waiting for approval*\n{have} of {need} {noun}{by}")
            }
            Status::Approved => {
                let when = r.decided_at.map(date_token).unwrap_or_default();
                format!(":white_check_mark: *Approved* by {} · {when}{}", approvals_by(r), use_line(r))
            }
            Status::Denied => match &r.denial {
                Some(d) => {
                    let head = format!(
                        ":no_entry: *Denied* by {} · {}\n*Reason:* ",
                        user_mention(&d.user_id),
                        date_token(d.at)
                    );
                    let room = limits::SECTION_TEXT.saturating_sub(head.chars().count());
                    format!("{head}{}", safe(&d.reason, room))
                }
                None => {
                    let when = r.decided_at.map(date_token).unwrap_or_default();
                    format!(":no_entry: *Denied* · {when}")
                }
            },
            Status::Expired => {
                let noun = if need == 1 { "approval" } else { "approvals" };
                format!(":hourglass: *Expired* {} with {have} of {need} {noun}", date_token(r.expires_at))
            }
            Status::Cancelled => {
                let when = r.decided_at.map(date_token).unwrap_or_default();
                format!(":heavy_multiplication_x: *Cancelled* by the requester · {when}")
            }
        }
    };
    json!({ "type": "section", "text": mrkdwn(text) })
}

fn history_context(h: &History) -> Value {
    let text = if h.same_kind_last_30_days == 0 {
        ":warning: *First request of its kind* in the last 30 days".to_string()
    } else {
        let nth = ordinal(u64::from(h.same_kind_last_30_days) + 1);
        let last = match h.last_outcome {
            Some((Status::Pending, t)) => format!("; last one still pending since {}", day(t)),
            Some((s, t)) => format!("; last one {} {}", s.as_str(), day(t)),
            None => String::new(),
        };
        format!("{nth} request of this kind in 30 days{last}")
    };
    json!({ "type": "context", "elements": [mrkdwn(text)] })
}

/// `arn:…:iam::ACCOUNT:role/NAME` → ("Role", "NAME").
fn principal_kind_and_name(identity: &str) -> (&'static str, &str) {
    let resource = identity.splitn(6, ':').nth(5).unwrap_or(identity);
    match resource.split_once('/') {
        Some(("user", name)) => ("User", name),
        Some(("role", name)) => ("Role", name),
        _ => ("Principal", resource),
    }
}

/// What became of an approval (row 35): used once, not used in time, or still usable until when.
fn use_line(r: &ApprovalRequest) -> String {
    match (r.redeemed_at, &r.redeemed_by, r.unused_at, r.usable_until) {
        (Some(at), by, _, _) => {
            let by = by.as_deref().unwrap_or("—");
            format!("\n:ticket: Used by `{}` at {}", safe(by, 300), date_token(at))
        }
        (None, _, Some(_), _) => "\n:hourglass: Approved but not used in time".into(),
        (None, _, None, Some(until)) => format!("\nUsable once, until {}", date_token(until)),
        _ => String::new(),
    }
}

/// The artifact a request is bound to, as reviewers see it (its digest is validated hex: nothing to escape).
fn artifact_context(r: &ApprovalRequest) -> Option<Value> {
    let a = r.artifact.as_ref()?;
    Some(json!({ "type": "context", "elements": [mrkdwn(format!(":package: Bound to artifact {}", a.short()))] }))
}

fn verified_section(r: &ApprovalRequest) -> Value {
    let q = &r.requester;
    let (kind, name) = principal_kind_and_name(&q.principal);
    let session = q.session.as_deref().map_or_else(|| "—".to_string(), |s| format!("`{}`", safe(s, 200)));
    // Row 40: the credential type sits next to the key, and a long-term key is flagged.
    let key = q.access_key_id.as_deref().map_or_else(
        || "—".to_string(),
        |k| {
            let kind = match CredentialType::of(Some(k)) {
                CredentialType::LongTerm => format!(":warning: *{}*", CredentialType::LongTerm.describe()),
                other => other.describe().to_string(),
            };
            format!("`…{}` {kind}", escape_mrkdwn(&key_suffix(k)))
        },
    );
    json!({
        "type": "section",
        "text": mrkdwn(":lock: *Verified by AWS IAM*"),
        "fields": [
            field("Account", &format!("`{}`", escape_mrkdwn(&q.account_id))),
            field(kind, &format!("`{}`", safe(name, 200))),
            field("Session name (chosen by the caller)", &session),
            field("Access key", &key),
        ],
    })
}

/// The workload's own words: one heading of ours, the reason as a plain_text section, then a two-column
/// table of plain_text rows (resource first, then details), five rows to a section.
fn stated_blocks(r: &ApprovalRequest) -> Vec<Value> {
    let mut text = ":speech_balloon: *Stated by the workload* _(not verified)_".to_string();
    if r.reason.is_some() {
        text.push_str("\n*Reason:*");
    } else if r.resource.is_none() && r.details.is_empty() {
        text.push_str("\n_Nothing stated._");
    }
    let mut blocks = vec![json!({ "type": "section", "text": mrkdwn(text) })];
    if let Some(reason) = &r.reason {
        blocks.push(json!({ "type": "section", "text": stated(reason, limits::SECTION_TEXT) }));
    }
    let mut cells: Vec<Value> = vec![];
    if let Some(res) = &r.resource {
        cells.push(mrkdwn("*Resource*"));
        cells.push(stated(res.as_str(), limits::FIELD_TEXT));
    }
    for (k, v) in r.details.iter().take(MAX_DETAILS_SHOWN) {
        cells.push(stated(&one_line(k), DETAIL_KEY_CHARS));
        cells.push(stated(v, limits::FIELD_TEXT));
    }
    for chunk in cells.chunks(limits::MAX_FIELDS) {
        blocks.push(json!({ "type": "section", "fields": chunk }));
    }
    let hidden = r.details.len().saturating_sub(MAX_DETAILS_SHOWN);
    if hidden > 0 {
        blocks.push(json!({
            "type": "context",
            "elements": [mrkdwn(format!("_{hidden} more details not shown_"))],
        }));
    }
    blocks
}

fn policy_section(v: &MessageView<'_>) -> Value {
    let r = v.request;
    let mut tokens: Vec<String> = v.approver_users.iter().map(user_mention).collect();
    tokens.extend(v.approver_groups.iter().map(group_mention));
    let who = if tokens.is_empty() {
        "_nobody: this policy approves nothing_".to_string()
    } else {
        mention_list(&tokens, limits::FIELD_TEXT - 40)
    };
    json!({
        "type": "section",
        "fields": [
            field("Policy", &format!("`{}`", r.policy.name)),
            field("Approvals required", &r.required_approvals.to_string()),
            field("Who may approve", &who),
            field("Expires", &date_token(r.expires_at)),
        ],
    })
}

fn confirm_dialog(r: &ApprovalRequest) -> Value {
    let text = format!(
        "*{}* is a sensitive environment. You are approving *{}* for `{}`.",
        r.environment,
        r.action,
        escape_mrkdwn(&r.requester.principal)
    );
    json!({
        "title": plain(&format!("Approve in {}?", r.environment), limits::CONFIRM_TITLE),
        "text": mrkdwn(truncate_escaped(&text, limits::CONFIRM_TEXT)),
        "confirm": plain("Approve", limits::CONFIRM_BUTTON),
        "deny": plain("Go back", limits::CONFIRM_BUTTON),
        "style": "primary",
    })
}

fn actions_block(r: &ApprovalRequest, sensitive: bool) -> Value {
    let id = r.id.to_string();
    let mut approve = json!({
        "type": "button",
        "action_id": APPROVE_ACTION_ID,
        "text": plain("Approve", limits::BUTTON_TEXT),
        "style": "primary",
        "value": id,
    });
    if sensitive {
        approve["confirm"] = confirm_dialog(r);
    }
    let deny = json!({
        "type": "button",
        "action_id": DENY_ACTION_ID,
        "text": plain("Deny", limits::BUTTON_TEXT),
        "style": "danger",
        "value": id,
    });
    json!({ "type": "actions", "block_id": ACTIONS_BLOCK_ID, "elements": [approve, deny] })
}

/// The approval message: `{"text": fallback, "blocks": [...]}`. Buttons only while pending (by
/// `effective_status(now)`, so an overdue request shows as expired even before the sweeper runs).
pub fn request_message(view: &MessageView<'_>) -> Value {
    let r = view.request;
    let status = r.effective_status(view.now);
    let mut blocks = vec![json!({
        "type": "header",
        "text": plain(&format!("{} → {}", r.action, r.environment), limits::HEADER_TEXT),
    })];
    blocks.extend(r.break_glass.as_ref().map(break_glass::banner));
    blocks.extend(drill::reveal(r, status));
    blocks.extend([
        status_section(r, status),
        history_context(view.history),
        json!({ "type": "divider" }),
        verified_section(r),
        json!({ "type": "divider" }),
    ]);
    blocks.extend(artifact_context(r));
    blocks.extend(stated_blocks(r));
    blocks.push(json!({ "type": "divider" }));
    blocks.push(policy_section(view));
    if status == Status::Pending && !is_auto_approved(r) {
        blocks.push(actions_block(r, view.sensitive));
    }
    if let Some(b) = &r.break_glass {
        blocks.extend(break_glass::review_blocks(r, b));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [mrkdwn(format!("`{}` · requested {}", r.id, date_token(r.created_at)))],
    }));
    blocks.truncate(limits::MAX_BLOCKS);
    json!({ "text": fallback_text(r, status), "blocks": blocks })
}

/// A short reply only the clicker sees (for `response_url` or `chat.postEphemeral`).
pub fn ephemeral_text(reason: &str) -> Value {
    json!({
        "response_type": "ephemeral",
        "replace_original": false,
        "text": safe(reason, limits::TEXT_OBJECT),
    })
}

/// The "deny with a reason" modal. `private_metadata` carries the request id and nothing else.
pub fn deny_modal(request_id: &RequestId, request: &ApprovalRequest) -> Value {
    json!({
        "type": "modal",
        "callback_id": DENY_MODAL_CALLBACK_ID,
        "private_metadata": request_id.to_string(),
        "title": plain("Deny request", limits::MODAL_TITLE),
        "submit": plain("Deny", limits::MODAL_BUTTON),
        "close": plain("Cancel", limits::MODAL_BUTTON),
        "blocks": [
            {
                "type": "section",
                "text": mrkdwn(format!(
                    "Deny *{}* → *{}* (`{request_id}`)? The reason is shown in the channel and recorded \
                     in the audit log.",
                    request.action, request.environment
                )),
            },
            {
                "type": "input",
                "block_id": DENY_REASON_BLOCK_ID,
                "optional": false,
                "label": plain("Reason", limits::INPUT_LABEL),
                "element": {
                    "type": "plain_text_input",
                    "action_id": DENY_REASON_ACTION_ID,
                    "multiline": true,
                    "min_length": 1,
                    "max_length": DENY_REASON_MAX_CHARS,
                },
            },
        ],
    })
}

#[cfg(test)]
mod tests;
