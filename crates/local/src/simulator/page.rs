//! The simulator's browser side: response URLs (the app's answers to clicks) and the page's JSON API
//! (`/slack/sim/…`). POSTs must be JSON from the same origin (a cross-site form cannot act as an approver).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use countersign_slack::emulator::{parse_body, Ephemeral, OpenView};

use super::journal::{Change, Journaled};
use super::{
    content_type, random_token, unix_now, ResponseUrl, SimMessage, Simulator, UserInfo, BOT_ID, BOT_USER,
    RESPONSE_URL_MAX_USES, RESPONSE_URL_TTL, WORKSPACE_DOMAIN,
};

/// Response URLs and the page's JSON API, on the simulator's state.
pub(super) fn routes() -> Router<Simulator> {
    Router::new()
        .route("/slack/response/{id}", post(response_url))
        .route("/slack/sim/state", get(page_state))
        .route("/slack/sim/click", post(click))
        .route("/slack/sim/submit", post(submit))
        .route("/slack/sim/close", post(close))
        .route("/slack/sim/dismiss", post(dismiss))
}

async fn response_url(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Value::Object(body) = parse_body(content_type(&headers), &body) else {
        return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
    };
    let written = {
        let mut s = sim.lock();
        let (user, channel, message_ts) = match s.responses.get_mut(&id) {
            Some(r) if r.created.elapsed() <= RESPONSE_URL_TTL && r.uses < RESPONSE_URL_MAX_USES => {
                r.uses += 1;
                (r.user.clone(), r.channel.clone(), r.message_ts.clone())
            }
            _ => return (StatusCode::NOT_FOUND, "expired_url").into_response(),
        };
        let text = body.get("text").and_then(Value::as_str).map(str::to_string);
        let blocks = body.get("blocks").cloned().unwrap_or(Value::Null);
        let flag = |k: &str| body.get(k).is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"));
        if flag("delete_original") {
            let change = Change::Delete { channel: channel.clone(), ts: message_ts.clone() };
            s.ws.store.apply(change.clone());
            sim.record(&s.ws.store, vec![change])
        } else if flag("replace_original") {
            if let Some(m) = s.ws.message_mut(&channel, &message_ts) {
                m.text = text;
                m.blocks = blocks;
                m.updates += 1;
            }
            sim.kept(&mut s, &channel, &message_ts)
        } else if body.get("response_type").and_then(Value::as_str) == Some("in_channel") {
            let ts = s.ws.next_ts();
            s.ws.push(&channel, SimMessage::new(ts.clone(), text, blocks));
            sim.kept(&mut s, &channel, &ts)
        } else {
            let ts = s.ws.next_ts();
            let id = s.ws.next_id();
            s.ws.ephemerals.push(Ephemeral { id, user, channel, ts, text, blocks });
            sim.trim_ephemerals(&mut s);
            None
        }
    };
    sim.changed(written).await;
    Json(json!({ "ok": true })).into_response()
}

fn page_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// POSTs from the page must be JSON and same-origin: a cross-site form cannot send JSON without a CORS
/// preflight (which we never answer), and a browser always sends `Origin` on cross-site POSTs.
/// `Some(refusal)` when the request does not qualify.
fn refuse_cross_site(headers: &HeaderMap) -> Option<Response> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("application/json") {
        return Some(page_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send JSON"));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        if origin.to_str().ok() != Some(format!("http://{host}").as_str()) {
            return Some(page_error(StatusCode::FORBIDDEN, "cross-origin requests are refused"));
        }
    }
    None
}

#[derive(Deserialize)]
struct StateQuery {
    user: Option<String>,
}

/// A top-level message as the page shows it, with its thread's replies.
#[derive(Serialize)]
struct PageMessage<'a> {
    ts: &'a str,
    text: &'a Option<String>,
    blocks: &'a Value,
    edited: bool,
    replies: Vec<&'a SimMessage>,
}

#[derive(Serialize)]
struct PageChannel<'a> {
    id: &'a str,
    name: String,
    messages: Vec<PageMessage<'a>>,
}

#[derive(Serialize)]
struct PageState<'a> {
    version: u64,
    workspace: Value,
    users: &'a [UserInfo],
    groups: Vec<Value>,
    channels: Vec<PageChannel<'a>>,
    ephemerals: Vec<&'a Ephemeral>,
    modal: Option<&'a OpenView>,
}

/// Serialized straight from the state (no copy of every message) and once: the lock is held only for that.
async fn page_state(State(sim): State<Simulator>, Query(q): Query<StateQuery>) -> Response {
    let settings = &sim.0.settings;
    let user = q.user.unwrap_or_default();
    let body = {
        let s = sim.lock();
        let mut channel_ids: Vec<&str> = settings.channels.iter().map(|c| c.id.as_str()).collect();
        for id in s.ws.store.channels.keys() {
            if !channel_ids.contains(&id.as_str()) {
                channel_ids.push(id);
            }
        }
        let channels: Vec<PageChannel<'_>> = channel_ids
            .iter()
            .map(|&id| {
                let all = s.ws.store.channels.get(id).map_or(&[][..], Vec::as_slice);
                let mut replies: HashMap<&str, Vec<&SimMessage>> = HashMap::new();
                for r in all {
                    if let Some(parent) = r.thread_ts.as_deref() {
                        replies.entry(parent).or_default().push(r);
                    }
                }
                let messages = all
                    .iter()
                    .filter(|m| m.thread_ts.is_none())
                    .map(|m| PageMessage {
                        ts: &m.ts,
                        text: &m.text,
                        blocks: &m.blocks,
                        edited: m.updates > 0,
                        replies: replies.remove(m.ts.as_str()).unwrap_or_default(),
                    })
                    .collect();
                PageChannel { id, name: sim.channel_name(id), messages }
            })
            .collect();
        let ephemerals: Vec<&Ephemeral> = s.ws.ephemerals.iter().filter(|e| e.user == user).collect();
        let groups: Vec<Value> =
            settings.groups.iter().map(|g| json!({ "id": g.id, "handle": g.handle, "members": g.members })).collect();
        serde_json::to_vec(&PageState {
            version: s.version,
            workspace: json!({ "team_id": settings.team_id, "domain": WORKSPACE_DOMAIN, "app_id": settings.app_id }),
            users: &settings.users,
            groups,
            channels,
            ephemerals,
            modal: s.ws.views.get(&user),
        })
    };
    match body {
        Ok(b) => ([(header::CONTENT_TYPE, "application/json")], b).into_response(),
        Err(e) => page_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot serialize the state: {e}")),
    }
}

#[derive(Deserialize)]
struct ClickRequest {
    user: String,
    channel: String,
    ts: String,
    action_id: String,
    block_id: String,
}

/// Finds the clicked element in the message, as Slack would only ever send an element that is there.
pub(super) fn find_element(blocks: &Value, block_id: &str, action_id: &str) -> Option<Value> {
    blocks.as_array()?.iter().find_map(|b| {
        if b.get("type")?.as_str()? != "actions" || b.get("block_id")?.as_str()? != block_id {
            return None;
        }
        b.get("elements")?
            .as_array()?
            .iter()
            .find(|e| e.get("action_id").and_then(Value::as_str) == Some(action_id))
            .cloned()
    })
}

async fn click(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = refuse_cross_site(&headers) {
        return r;
    }
    let Ok(c) = serde_json::from_slice::<ClickRequest>(&body) else {
        return page_error(StatusCode::BAD_REQUEST, "expected {user, channel, ts, action_id, block_id}");
    };
    if sim.user(&c.user).is_none() {
        return page_error(StatusCode::BAD_REQUEST, "unknown user");
    }
    let now_ts = format!("{}.{:06}", unix_now(), 0);
    let (message, element, trigger_id, response_id) = {
        let mut s = sim.lock();
        let Some(m) = s.ws.message(&c.channel, &c.ts).cloned() else {
            return page_error(StatusCode::NOT_FOUND, "no such message");
        };
        let Some(el) = find_element(&m.blocks, &c.block_id, &c.action_id) else {
            return page_error(StatusCode::CONFLICT, "that button is no longer in the message");
        };
        let trigger_id = format!("{}.{}.{}", unix_now(), s.ws.next_id(), random_token(16));
        s.ws.issue_trigger(trigger_id.clone(), c.user.clone());
        let response_id = random_token(16);
        s.responses.retain(|_, r| r.created.elapsed() <= RESPONSE_URL_TTL);
        while s.responses.len() >= sim.0.settings.limits.response_urls.max(1) {
            let Some(oldest) = s.responses.iter().min_by_key(|(_, r)| r.created).map(|(k, _)| k.clone()) else {
                break;
            };
            s.responses.remove(&oldest);
        }
        s.responses.insert(
            response_id.clone(),
            ResponseUrl {
                user: c.user.clone(),
                channel: c.channel.clone(),
                message_ts: c.ts.clone(),
                created: Instant::now(),
                uses: 0,
            },
        );
        (m, el, trigger_id, response_id)
    };
    let mut action = json!({
        "type": element.get("type").cloned().unwrap_or(Value::Null),
        "action_id": c.action_id,
        "block_id": c.block_id,
        "text": element.get("text").cloned().unwrap_or(Value::Null),
        "action_ts": now_ts,
    });
    for k in ["value", "style"] {
        if let Some(v) = element.get(k) {
            action[k] = v.clone();
        }
    }
    let settings = &sim.0.settings;
    let payload = json!({
        "type": "block_actions",
        "user": sim.user_object(&c.user),
        "api_app_id": settings.app_id,
        "token": "simulator",
        "container": { "type": "message", "message_ts": c.ts, "channel_id": c.channel, "is_ephemeral": false },
        "trigger_id": trigger_id,
        "team": sim.team(),
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": { "id": c.channel, "name": sim.channel_name(&c.channel) },
        "message": {
            "type": "message", "subtype": "bot_message", "bot_id": BOT_ID, "user": BOT_USER,
            "ts": message.ts, "text": message.text, "blocks": message.blocks,
        },
        "state": { "values": {} },
        "response_url": format!("{}/slack/response/{response_id}", settings.origin),
        "actions": [action],
    });
    Json(sim.deliver(&payload).await).into_response()
}

#[derive(Deserialize)]
struct SubmitRequest {
    user: String,
    view_id: String,
    /// block_id → action_id → value.
    #[serde(default)]
    values: BTreeMap<String, BTreeMap<String, String>>,
}

/// `view.state.values` as Slack sends it, for every input block of the view.
pub(super) fn state_values(view: &Value, given: &BTreeMap<String, BTreeMap<String, String>>) -> Value {
    let mut out = Map::new();
    for b in view.get("blocks").and_then(Value::as_array).map_or(&[][..], Vec::as_slice) {
        let (Some("input"), Some(block_id), Some(el)) =
            (b.get("type").and_then(Value::as_str), b.get("block_id").and_then(Value::as_str), b.get("element"))
        else {
            continue;
        };
        let Some(action_id) = el.get("action_id").and_then(Value::as_str) else { continue };
        let value = given.get(block_id).and_then(|m| m.get(action_id)).cloned();
        let mut inner = Map::new();
        inner.insert(action_id.to_string(), json!({ "type": el.get("type"), "value": value }));
        out.insert(block_id.to_string(), Value::Object(inner));
    }
    Value::Object(out)
}

async fn submit(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = refuse_cross_site(&headers) {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<SubmitRequest>(&body) else {
        return page_error(StatusCode::BAD_REQUEST, "expected {user, view_id, values}");
    };
    let open = sim.lock().ws.views.get(&req.user).filter(|v| v.view_id == req.view_id).cloned();
    let Some(open) = open else {
        return page_error(StatusCode::NOT_FOUND, "that dialog is no longer open");
    };
    let settings = &sim.0.settings;
    let mut view = open.view.clone();
    if let Value::Object(v) = &mut view {
        v.insert("id".into(), Value::String(open.view_id.clone()));
        v.insert("team_id".into(), Value::String(settings.team_id.clone()));
        v.insert("app_id".into(), Value::String(settings.app_id.clone()));
        v.insert("bot_id".into(), Value::String(BOT_ID.into()));
        v.insert("hash".into(), Value::String(random_token(8)));
        v.insert("state".into(), json!({ "values": state_values(&open.view, &req.values) }));
    }
    let payload = json!({
        "type": "view_submission",
        "team": sim.team(),
        "enterprise": null,
        "user": sim.user_object(&req.user),
        "api_app_id": settings.app_id,
        "token": "simulator",
        "trigger_id": format!("{}.{}.{}", unix_now(), 0, random_token(16)),
        "view": view,
        "response_urls": [],
        "is_enterprise_install": false,
    });
    let result = sim.deliver(&payload).await;
    let ok = result.get("status").and_then(Value::as_u64) == Some(200);
    let action = result.get("body").and_then(|b| b.get("response_action")).and_then(Value::as_str);
    let errors = result.get("body").and_then(|b| b.get("errors")).cloned();
    let closed = {
        let mut s = sim.lock();
        match (ok, action) {
            (true, Some("errors")) => {
                if let Some(v) = s.ws.views.get_mut(&req.user).filter(|v| v.view_id == req.view_id) {
                    v.errors = errors;
                }
                false
            }
            (true, _) => {
                if s.ws.views.get(&req.user).is_some_and(|v| v.view_id == req.view_id) {
                    s.ws.views.remove(&req.user);
                }
                true
            }
            (false, _) => false,
        }
    };
    sim.changed(None).await;
    let mut out = result;
    out["closed"] = Value::Bool(closed);
    Json(out).into_response()
}

#[derive(Deserialize)]
struct CloseRequest {
    user: String,
    view_id: String,
}

async fn close(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = refuse_cross_site(&headers) {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<CloseRequest>(&body) else {
        return page_error(StatusCode::BAD_REQUEST, "expected {user, view_id}");
    };
    {
        let mut s = sim.lock();
        if s.ws.views.get(&req.user).is_some_and(|v| v.view_id == req.view_id) {
            s.ws.views.remove(&req.user);
        }
    }
    sim.changed(None).await;
    Json(json!({ "closed": true })).into_response()
}

#[derive(Deserialize)]
struct DismissRequest {
    user: String,
    id: u64,
}

async fn dismiss(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = refuse_cross_site(&headers) {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<DismissRequest>(&body) else {
        return page_error(StatusCode::BAD_REQUEST, "expected {user, id}");
    };
    sim.lock().ws.ephemerals.retain(|e| !(e.id == req.id && e.user == req.user));
    sim.changed(None).await;
    Json(json!({ "dismissed": true })).into_response()
}
