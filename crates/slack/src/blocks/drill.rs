//! The reveal of a reviewer drill (row 42), once it is decided or expired: "This was a drill", how it ended,
//! and the signs that should have raised suspicion. Until then the message is like any other.

use serde_json::{json, Value};

use countersign_core::domain::{ApprovalRequest, Status};

use super::{escape_mrkdwn, limits, mrkdwn, plain};

/// The reveal blocks for `r` at `status` (its effective status): none while it is pending or not a drill.
pub fn reveal(r: &ApprovalRequest, status: Status) -> Vec<Value> {
    let Some(d) = &r.drill else {
        return vec![];
    };
    let verdict = match status {
        Status::Pending => return vec![],
        Status::Approved => ":x: It was *approved*: a failed drill.",
        Status::Denied => ":white_check_mark: It was *denied*: well caught.",
        Status::Expired => ":hourglass: Nobody decided it before it expired.",
        Status::Cancelled => "It was withdrawn before anyone decided it.",
    };
    let head = format!(
        ":performing_arts: *This was a drill* (scenario `{}`): a deliberately suspicious request, and it can never \
         be used. {verdict}\n*What should have raised suspicion:*",
        escape_mrkdwn(&d.scenario)
    );
    // The signs were written by the drill's sender: plain text, like every requester string.
    let signs: Vec<String> = d.signs.iter().map(|s| format!("• {}", escape_mrkdwn(s))).collect();
    vec![
        json!({ "type": "section", "block_id": "countersign_drill", "text": mrkdwn(head) }),
        json!({ "type": "section", "text": plain(&signs.join("\n"), limits::SECTION_TEXT) }),
    ]
}
