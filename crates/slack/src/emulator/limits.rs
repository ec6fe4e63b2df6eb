//! Slack's documented limits: the Block Kit checks (shared with the renderer's tests) and the checks
//! Slack makes on a message body before it posts or updates anything.

use axum::response::Response;
use serde_json::{Map, Value};

use super::wire::{slack_err, slack_err_with};
use crate::blocks::limits;

/// Slack's checks on a message body: `Some` is the error response to send.
pub fn check_message(body: &Map<String, Value>) -> Option<Response> {
    let text = body.get("text").and_then(Value::as_str);
    if text.is_none_or(str::is_empty) && body.get("blocks").is_none() {
        return Some(slack_err("no_text"));
    }
    if text.is_some_and(|t| t.chars().count() > limits::FALLBACK_TEXT) {
        return Some(slack_err("msg_too_long"));
    }
    let problems = message_limit_violations(&Value::Object(body.clone()));
    (!problems.is_empty()).then(|| slack_err_with("invalid_blocks", problems))
}

/// A message's `metadata` as Slack reads it: `Ok(None)` when absent, `Err` (Slack's error code) when it is not
/// `{"event_type": "…", "event_payload": {…}}` (a JSON-encoded string of it is accepted too, as Slack does).
pub fn message_metadata(body: &Map<String, Value>) -> Result<Option<Value>, &'static str> {
    let Some(raw) = body.get("metadata") else { return Ok(None) };
    let md = match raw {
        Value::String(s) => serde_json::from_str::<Value>(s).unwrap_or(Value::Null),
        other => other.clone(),
    };
    let event_type_ok = md.get("event_type").and_then(Value::as_str).is_some_and(|t| {
        !t.is_empty() && t.len() <= 255 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    });
    if !event_type_ok || !md.get("event_payload").is_some_and(Value::is_object) {
        return Err("invalid_metadata_format");
    }
    Ok(Some(md))
}

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

fn check_len(out: &mut Vec<String>, path: &str, v: Option<&Value>, max: usize) {
    if let Some(v) = v {
        if !v.is_string() {
            out.push(format!("{path}: not a string"));
        } else if chars(v) > max {
            out.push(format!("{path}: {} characters, limit {max}", chars(v)));
        }
    }
}

/// A text object: `{type: plain_text|mrkdwn, text}` within `max`.
fn check_text(out: &mut Vec<String>, path: &str, t: Option<&Value>, max: usize, plain_only: bool) {
    let Some(t) = t else {
        out.push(format!("{path}: missing text object"));
        return;
    };
    match t.get("type").and_then(Value::as_str) {
        Some("plain_text") => {}
        Some("mrkdwn") if !plain_only => {}
        other => out.push(format!("{path}: text type {other:?} not allowed here")),
    }
    // `emoji` is a boolean that only plain_text takes.
    if let Some(e) = t.get("emoji") {
        if !e.is_boolean() || t.get("type").and_then(Value::as_str) != Some("plain_text") {
            out.push(format!("{path}.emoji: only a boolean on plain_text"));
        }
    }
    match t.get("text") {
        Some(s) if chars(s) == 0 => out.push(format!("{path}: empty text")),
        Some(s) => check_len(out, &format!("{path}.text"), Some(s), max),
        None => out.push(format!("{path}: text object without text")),
    }
}

fn check_confirm(out: &mut Vec<String>, path: &str, c: &Value) {
    check_text(out, &format!("{path}.title"), c.get("title"), limits::CONFIRM_TITLE, true);
    check_text(out, &format!("{path}.text"), c.get("text"), limits::CONFIRM_TEXT, false);
    check_text(out, &format!("{path}.confirm"), c.get("confirm"), limits::CONFIRM_BUTTON, true);
    check_text(out, &format!("{path}.deny"), c.get("deny"), limits::CONFIRM_BUTTON, true);
}

fn check_element(out: &mut Vec<String>, path: &str, e: &Value) {
    check_len(out, &format!("{path}.action_id"), e.get("action_id"), limits::ACTION_ID);
    match e.get("type").and_then(Value::as_str) {
        Some("button") => {
            check_text(out, &format!("{path}.text"), e.get("text"), limits::BUTTON_TEXT, true);
            check_len(out, &format!("{path}.value"), e.get("value"), limits::BUTTON_VALUE);
            if let Some(c) = e.get("confirm") {
                check_confirm(out, &format!("{path}.confirm"), c);
            }
        }
        Some("plain_text_input") => {
            if let Some(m) = e.get("max_length").and_then(Value::as_u64) {
                if m > limits::PLAIN_TEXT_INPUT_MAX_LENGTH as u64 {
                    out.push(format!("{path}.max_length: {m} exceeds 3000"));
                }
            }
        }
        other => out.push(format!("{path}: element type {other:?} not supported by the fake")),
    }
}

fn check_block(out: &mut Vec<String>, path: &str, b: &Value) {
    check_len(out, &format!("{path}.block_id"), b.get("block_id"), limits::BLOCK_ID);
    match b.get("type").and_then(Value::as_str) {
        Some("divider") => {}
        Some("header") => check_text(out, &format!("{path}.text"), b.get("text"), limits::HEADER_TEXT, true),
        Some("section") => {
            let fields = b.get("fields").and_then(Value::as_array);
            if b.get("text").is_none() && fields.is_none() {
                out.push(format!("{path}: section needs text or fields"));
            }
            if b.get("text").is_some() {
                check_text(out, &format!("{path}.text"), b.get("text"), limits::SECTION_TEXT, false);
            }
            if let Some(fields) = fields {
                if fields.is_empty() || fields.len() > limits::MAX_FIELDS {
                    out.push(format!("{path}.fields: {} fields, limit {}", fields.len(), limits::MAX_FIELDS));
                }
                for (i, f) in fields.iter().enumerate() {
                    check_text(out, &format!("{path}.fields[{i}]"), Some(f), limits::FIELD_TEXT, false);
                }
            }
        }
        Some("context") => {
            let elements = b.get("elements").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
            if elements.is_empty() || elements.len() > limits::MAX_CONTEXT_ELEMENTS {
                out.push(format!("{path}.elements: {} elements, limit 10", elements.len()));
            }
            for (i, e) in elements.iter().enumerate() {
                check_text(out, &format!("{path}.elements[{i}]"), Some(e), limits::TEXT_OBJECT, false);
            }
        }
        Some("actions") => {
            let elements = b.get("elements").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
            if elements.is_empty() || elements.len() > limits::MAX_ACTION_ELEMENTS {
                out.push(format!("{path}.elements: {} elements, limit 25", elements.len()));
            }
            for (i, e) in elements.iter().enumerate() {
                check_element(out, &format!("{path}.elements[{i}]"), e);
            }
        }
        Some("input") => {
            check_text(out, &format!("{path}.label"), b.get("label"), limits::INPUT_LABEL, true);
            match b.get("element") {
                Some(e) => check_element(out, &format!("{path}.element"), e),
                None => out.push(format!("{path}: input without element")),
            }
        }
        other => out.push(format!("{path}: block type {other:?} not supported by the fake")),
    }
}

fn check_blocks(out: &mut Vec<String>, blocks: Option<&Value>, max: usize) {
    let Some(blocks) = blocks else { return };
    let Some(list) = blocks.as_array() else {
        out.push("blocks: not an array".into());
        return;
    };
    if list.len() > max {
        out.push(format!("blocks: {} blocks, limit {max}", list.len()));
    }
    for (i, b) in list.iter().enumerate() {
        check_block(out, &format!("blocks[{i}]"), b);
    }
}

/// Every documented limit a message (`{text, blocks, …}`) breaks; empty when it is acceptable.
pub fn message_limit_violations(message: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check_len(&mut out, "text", message.get("text"), limits::FALLBACK_TEXT);
    check_blocks(&mut out, message.get("blocks"), limits::MAX_BLOCKS);
    out
}

/// Every documented limit a modal view breaks; empty when it is acceptable.
pub fn modal_limit_violations(view: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if view.get("type").and_then(Value::as_str) != Some("modal") {
        out.push("view.type: must be modal".into());
    }
    check_text(&mut out, "view.title", view.get("title"), limits::MODAL_TITLE, true);
    for key in ["submit", "close"] {
        if let Some(t) = view.get(key) {
            check_text(&mut out, &format!("view.{key}"), Some(t), limits::MODAL_BUTTON, true);
        }
    }
    check_len(&mut out, "view.private_metadata", view.get("private_metadata"), limits::PRIVATE_METADATA);
    check_len(&mut out, "view.callback_id", view.get("callback_id"), limits::CALLBACK_ID);
    if view.get("blocks").is_none() {
        out.push("view.blocks: missing".into());
    }
    check_blocks(&mut out, view.get("blocks"), limits::MAX_MODAL_BLOCKS);
    out
}
