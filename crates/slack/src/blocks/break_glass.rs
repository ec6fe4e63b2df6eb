//! The break-glass parts of a request's message (row 41): the banner, the Review action, the review's
//! outcome, the flag modal, and the notices (the announcement in the break-glass channel, the reminder, the
//! escalation). Mentions come only from the policy (`notify`, approvers) and recorded reviews.

use serde_json::{json, Value};

use countersign_core::domain::break_glass::{BreakGlass, ReviewStatus};
use countersign_core::domain::{ApprovalRequest, RequestId};

use countersign_core::domain::{SlackGroupId, SlackUserId};

use super::{date_token, group_mention, limits, mrkdwn, plain, safe, user_mention};

pub const REVIEW_BLOCK_ID: &str = "countersign_review";
pub const REVIEW_OK_ACTION_ID: &str = "countersign_review_ok";
pub const REVIEW_FLAG_ACTION_ID: &str = "countersign_review_flag";
pub const FLAG_MODAL_CALLBACK_ID: &str = "countersign_review_flag_modal";
pub const FLAG_REASON_BLOCK_ID: &str = "reason";
pub const FLAG_REASON_ACTION_ID: &str = "reason";
pub const FLAG_REASON_MAX_CHARS: usize = 500;

/// Mentions of `users` and `groups` (`<@U…>`, `<!subteam^S…>`), space-separated: the ones a break-glass's
/// `notify` names, or a policy's approvers.
pub fn mentions(users: &[SlackUserId], groups: &[SlackGroupId]) -> String {
    users.iter().map(user_mention).chain(groups.iter().map(group_mention)).collect::<Vec<_>>().join(" ")
}

/// The banner right under the header: unmistakable, and it names who was told.
pub fn banner(b: &BreakGlass) -> Value {
    let mentions = mentions(&b.notify.users, &b.notify.groups);
    let cc = if mentions.is_empty() { String::new() } else { format!("\ncc {mentions}") };
    let text = format!(
        ":rotating_light: *BREAK-GLASS* :rotating_light: This request was *approved at once, without a vote*, \
         under the policy's break-glass rule. An approver must review it by {}.{cc}",
        date_token(b.review_due_at)
    );
    json!({ "type": "section", "block_id": "countersign_break_glass", "text": mrkdwn(text) })
}

/// The status line of a break-glass (it has no approvals to list).
pub fn status_text(r: &ApprovalRequest, use_line: &str) -> String {
    let when = r.decided_at.map(date_token).unwrap_or_default();
    format!(":rotating_light: *Approved by break-glass* · {when}{use_line}")
}

/// Where the review stands: the Review action while it is open, its outcome once given.
pub fn review_blocks(r: &ApprovalRequest, b: &BreakGlass) -> Vec<Value> {
    let rv = &b.review;
    let by = rv.by.as_ref().map(user_mention).unwrap_or_default();
    let at = rv.at.map(date_token).unwrap_or_default();
    match rv.status {
        ReviewStatus::Pending | ReviewStatus::Overdue => {
            let head = if rv.status == ReviewStatus::Overdue {
                format!(":alarm_clock: *Review overdue* since {}", date_token(b.review_due_at))
            } else {
                format!(":mag: *Review needed* by {}", date_token(b.review_due_at))
            };
            let text = format!("{head}: an approver of this policy (owners excluded) confirms or flags it.");
            vec![json!({ "type": "section", "text": mrkdwn(text) }), review_actions(&r.id)]
        }
        ReviewStatus::Ok => {
            vec![
                json!({ "type": "section", "text": mrkdwn(format!(":white_check_mark: *Reviewed — OK* by {by} · {at}")) }),
            ]
        }
        ReviewStatus::Flagged => {
            let head = format!(":triangular_flag_on_post: *Flagged as misuse* by {by} · {at}\n*Reason:* ");
            let room = limits::SECTION_TEXT.saturating_sub(head.chars().count());
            let reason = safe(rv.reason.as_deref().unwrap_or(""), room);
            vec![json!({ "type": "section", "text": mrkdwn(format!("{head}{reason}")) })]
        }
    }
}

fn review_actions(id: &RequestId) -> Value {
    let id = id.to_string();
    json!({
        "type": "actions",
        "block_id": REVIEW_BLOCK_ID,
        "elements": [
            {
                "type": "button",
                "action_id": REVIEW_OK_ACTION_ID,
                "text": plain("Reviewed — OK", limits::BUTTON_TEXT),
                "style": "primary",
                "value": id,
            },
            {
                "type": "button",
                "action_id": REVIEW_FLAG_ACTION_ID,
                "text": plain("Flag as misuse", limits::BUTTON_TEXT),
                "style": "danger",
                "value": id,
            },
        ],
    })
}

/// The "flag as misuse" modal. `private_metadata` carries the request id and nothing else.
pub fn flag_modal(request_id: &RequestId) -> Value {
    json!({
        "type": "modal",
        "callback_id": FLAG_MODAL_CALLBACK_ID,
        "private_metadata": request_id.to_string(),
        "title": plain("Flag as misuse", limits::MODAL_TITLE),
        "submit": plain("Flag", limits::MODAL_BUTTON),
        "close": plain("Cancel", limits::MODAL_BUTTON),
        "blocks": [
            {
                "type": "section",
                "text": mrkdwn(format!(
                    "Flag the break-glass `{request_id}` as misuse? What you write is shown in the channel and \
                     recorded in the audit log."
                )),
            },
            {
                "type": "input",
                "block_id": FLAG_REASON_BLOCK_ID,
                "optional": false,
                "label": plain("What was wrong", limits::INPUT_LABEL),
                "element": {
                    "type": "plain_text_input",
                    "action_id": FLAG_REASON_ACTION_ID,
                    "multiline": true,
                    "min_length": 1,
                    "max_length": FLAG_REASON_MAX_CHARS,
                },
            },
        ],
    })
}

/// The reminder in the message's thread at half the review window.
pub fn reminder(r: &ApprovalRequest, b: &BreakGlass, approvers: &str) -> Value {
    let text = format!(
        ":mag: Reminder: the break-glass `{}` ({} → {}) still needs a review by {}. {approvers}",
        r.id,
        r.action,
        r.environment,
        date_token(b.review_due_at)
    );
    json!({ "text": truncate_plain(&text), "blocks": [{ "type": "section", "text": mrkdwn(text) }] })
}

/// The escalation at the end of the window, mentioning `notify`.
pub fn escalation(r: &ApprovalRequest, b: &BreakGlass, link: Option<&str>) -> Value {
    let mentions = mentions(&b.notify.users, &b.notify.groups);
    let see = link.map(|l| format!(" <{l}|See the request.>")).unwrap_or_default();
    let text = format!(
        ":alarm_clock: *Break-glass review overdue* {mentions}\nNobody reviewed the break-glass `{}` ({} → {}, \
         `{}`) by {}.{see}",
        r.id,
        r.action,
        r.environment,
        safe(&r.requester.principal, 300),
        date_token(b.review_due_at)
    );
    json!({ "text": truncate_plain(&format!("Break-glass review overdue: {}", r.id)), "blocks": [{ "type": "section", "text": mrkdwn(text) }] })
}

fn truncate_plain(s: &str) -> String {
    s.chars().take(300).collect()
}
