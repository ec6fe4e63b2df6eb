//! Slack's wire format as the emulator speaks it: request bodies in, `{"ok": …}` answers out.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::interaction::parse_form;

/// A request body as Slack reads it: a form when labelled as one, JSON when labelled as JSON, else nothing
/// (`null`; a form that does not parse is `null` too).
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Value {
    let is_form = content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        return match parse_form(body) {
            Ok(pairs) => Value::Object(pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect()),
            Err(_) => Value::Null,
        };
    }
    // Slack reads a JSON body only when it is labelled as JSON.
    let is_json = content_type.is_some_and(|c| c.starts_with("application/json"));
    if is_json {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    } else {
        Value::Null
    }
}

pub fn slack_ok(extra: Value) -> Response {
    let mut body = Map::new();
    body.insert("ok".into(), Value::Bool(true));
    if let Value::Object(m) = extra {
        body.extend(m);
    }
    Json(Value::Object(body)).into_response()
}

pub fn slack_err(error: &str) -> Response {
    Json(json!({ "ok": false, "error": error })).into_response()
}

pub fn slack_err_with(error: &str, details: Vec<String>) -> Response {
    Json(json!({ "ok": false, "error": error, "response_metadata": { "messages": details } })).into_response()
}

pub fn str_field<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A ts (`seconds.micros`) as microseconds; `None` when it is not one.
pub(crate) fn ts_micros(ts: &str) -> Option<i64> {
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, ""));
    if secs.is_empty()
        || secs.len() > 12
        || frac.len() > 6
        || !(secs.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let micros: i64 = format!("{frac:0<6}").parse().ok()?;
    Some(secs.parse::<i64>().ok()? * 1_000_000 + micros)
}

pub(crate) fn number(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

pub(crate) fn flag(v: Option<&Value>) -> bool {
    v.is_some_and(|v| v.as_bool() == Some(true) || matches!(v.as_str(), Some("true" | "1")))
}
