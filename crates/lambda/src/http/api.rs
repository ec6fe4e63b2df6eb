//! The request API router: `POST /v1/requests`, `GET /v1/requests/{id}`, `POST /v1/requests/{id}/cancel`,
//! `POST /v1/requests/{id}/redeem`, `GET /v1/keys`, `GET /v1/whoami`, `GET /healthz`. Contract: docs/api.md and docs/openapi.yaml (a test keeps the paths in step).

use std::collections::BTreeMap;

use axum::body::to_bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use countersign_core::domain::ApprovalRequest;
use countersign_core::service::receipts::RedeemInput;
use countersign_core::service::requests::{Caller, NewDrill, NewRequest, RequestError, RequestService, WhoAmI};

use super::error::ApiError;
use super::identity::Identity;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The routes this router serves, as (method, path) — checked against docs/openapi.yaml by a test.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/requests"),
    ("get", "/v1/requests/{id}"),
    ("post", "/v1/requests/{id}/cancel"),
    ("post", "/v1/requests/{id}/redeem"),
    ("get", "/v1/keys"),
    ("get", "/v1/whoami"),
    ("get", "/healthz"),
];

pub fn router(service: RequestService) -> Router {
    Router::new()
        .route("/v1/requests", post(create))
        .route("/v1/requests/{id}", get(read))
        .route("/v1/requests/{id}/cancel", post(cancel))
        .route("/v1/requests/{id}/redeem", post(redeem))
        .route("/v1/keys", get(keys))
        .route("/v1/whoami", get(whoami))
        .route("/healthz", get(|| async { Json(serde_json::json!({"ok": true})) }))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
        })
        .with_state(service)
}

/// The request object of the API: defined once, in the domain, because decision events (issue 19) carry it
/// too.
pub use countersign_core::domain::view::{
    ApprovalView, DenialView, PolicyView, RequestView, RequesterView, ReviewView,
};

fn view(status: StatusCode, r: &ApprovalRequest) -> Response {
    (status, Json(RequestView::from(r))).into_response()
}

const FIELDS: &[&str] = &[
    "action",
    "environment",
    "resource",
    "reason",
    "details",
    "idempotency_key",
    "ttl_seconds",
    "artifact",
    "break_glass",
    "drill",
];

/// Refuses the first field of `obj` not in `known`, naming it (at most 64 characters of it).
fn refuse_unknown_fields(obj: &serde_json::Map<String, Value>, known: &[&str]) -> Result<(), ApiError> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => {
            let shown: String = k.chars().take(64).collect();
            Err(ApiError::invalid(None, format!("unknown field {shown:?}")))
        }
        None => Ok(()),
    }
}

/// Parses the body by hand so every error names its field, and unknown fields (such as `channel` or
/// `approvers`, which only policies may set) are refused.
pub fn parse_body(bytes: &[u8]) -> Result<NewRequest, ApiError> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(None, format!("body is not valid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(ApiError::invalid(None, "body must be a JSON object"));
    };
    refuse_unknown_fields(&obj, FIELDS)?;
    let string = |name: &'static str, required: bool| -> Result<Option<String>, ApiError> {
        match obj.get(name) {
            None | Some(Value::Null) if !required => Ok(None),
            None | Some(Value::Null) => Err(ApiError::invalid(Some(name), format!("{name} is required"))),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid(Some(name), format!("{name} must be a string"))),
        }
    };
    let details = match obj.get("details") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    _ => return Err(ApiError::invalid(Some("details"), "details values must be strings")),
                }
            }
            out
        }
        Some(_) => return Err(ApiError::invalid(Some("details"), "details must be an object of strings")),
    };
    let ttl_seconds =
        match obj.get("ttl_seconds") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(n.as_u64().ok_or_else(|| {
                ApiError::invalid(Some("ttl_seconds"), "ttl_seconds must be a whole number of seconds")
            })?),
            Some(_) => return Err(ApiError::invalid(Some("ttl_seconds"), "ttl_seconds must be a number")),
        };
    Ok(NewRequest {
        action: string("action", true)?.unwrap_or_default(),
        environment: string("environment", true)?.unwrap_or_default(),
        resource: string("resource", false)?,
        reason: string("reason", false)?,
        details,
        idempotency_key: string("idempotency_key", false)?,
        ttl_seconds,
        artifact: string("artifact", false)?,
        break_glass: match obj.get("break_glass") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ApiError::invalid(Some("break_glass"), "break_glass must be true or false")),
        },
        drill: parse_drill(obj.get("drill"))?,
    })
}

/// `"drill": {"scenario": "…", "signs": ["…", …]}` (row 42), every other shape refused naming the field.
fn parse_drill(v: Option<&Value>) -> Result<Option<NewDrill>, ApiError> {
    let bad = |m: &str| ApiError::invalid(Some("drill"), format!("drill: {m}"));
    let obj = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(bad("must be an object {\"scenario\": …, \"signs\": […]}")),
    };
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "scenario" | "signs")) {
        return Err(bad(&format!("unknown field {:?}", k.chars().take(64).collect::<String>())));
    }
    let scenario = obj.get("scenario").and_then(Value::as_str).ok_or_else(|| bad("scenario must be a string"))?;
    let signs = match obj.get("signs") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().map(str::to_string).ok_or_else(|| bad("signs must be strings")))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(bad("signs must be an array of strings")),
    };
    Ok(Some(NewDrill { scenario: scenario.to_string(), signs }))
}

/// The redeem body: `{"artifact": "sha256:…"}`, `{}` or empty. Anything else is refused, naming the field.
pub fn parse_redeem_body(bytes: &[u8]) -> Result<RedeemInput, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(RedeemInput::default());
    }
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(None, format!("body is not valid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(ApiError::invalid(None, "body must be a JSON object"));
    };
    refuse_unknown_fields(&obj, &["artifact"])?;
    match obj.get("artifact") {
        None | Some(Value::Null) => Ok(RedeemInput { artifact: None }),
        Some(Value::String(s)) => Ok(RedeemInput { artifact: Some(s.clone()) }),
        Some(_) => Err(ApiError::invalid(Some("artifact"), "artifact must be a string")),
    }
}

/// Answers a refusal found in the HTTP layer (media type, size, syntax, query, path), audited like the
/// service's own. Identity comes first: a caller who is unauthenticated or not allowed learns only that.
async fn refused(svc: &RequestService, caller: &Caller, e: RequestError) -> Response {
    let e = match svc.identify(caller) {
        Err(not_allowed) => not_allowed,
        Ok(_) => e,
    };
    ApiError::from(svc.refuse_unparsed(caller, e).await).into_response()
}

async fn create(State(svc): State<RequestService>, Identity(caller): Identity, req: Request) -> Response {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"))
        .unwrap_or(false);
    if !is_json {
        return refused(&svc, &caller, RequestError::UnsupportedMediaType).await;
    }
    let Ok(bytes) = to_bytes(req.into_body(), MAX_BODY_BYTES).await else {
        return refused(&svc, &caller, RequestError::PayloadTooLarge { max: MAX_BODY_BYTES }).await;
    };
    let input = match parse_body(&bytes) {
        Ok(i) => i,
        Err(e) => return refused(&svc, &caller, RequestError::Invalid { field: e.field, message: e.message }).await,
    };
    match svc.submit(&caller, input).await {
        Ok(s) => view(if s.created { StatusCode::CREATED } else { StatusCode::OK }, &s.request),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The `{id}` path segment; one that does not even decode names no request of the caller's.
fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, RequestError> {
    path.map(|Path(id)| id).map_err(|_| RequestError::NotFound)
}

async fn read(
    State(svc): State<RequestService>,
    Identity(caller): Identity,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    let id = match path_id(path) {
        Ok(id) => id,
        Err(e) => return refused(&svc, &caller, e).await,
    };
    let wait_param = query.as_deref().unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("wait="));
    let wait = match wait_param {
        None => None,
        Some(w) => match w.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                let e = RequestError::Invalid {
                    field: Some("wait"),
                    message: "wait must be a whole number of seconds (0 to 20)".into(),
                };
                return refused(&svc, &caller, e).await;
            }
        },
    };
    match svc.get(&caller, &id, wait).await {
        Ok(r) => view(StatusCode::OK, &r),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn cancel(
    State(svc): State<RequestService>,
    Identity(caller): Identity,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match path_id(path) {
        Ok(id) => id,
        Err(e) => return refused(&svc, &caller, e).await,
    };
    match svc.cancel(&caller, &id).await {
        Ok(r) => view(StatusCode::OK, &r),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn redeem(
    State(svc): State<RequestService>,
    Identity(caller): Identity,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let id = match path_id(path) {
        Ok(id) => id,
        Err(e) => return refused(&svc, &caller, e).await,
    };
    let Ok(bytes) = to_bytes(req.into_body(), MAX_BODY_BYTES).await else {
        return refused(&svc, &caller, RequestError::PayloadTooLarge { max: MAX_BODY_BYTES }).await;
    };
    let input = match parse_redeem_body(&bytes) {
        Ok(i) => i,
        Err(e) => return refused(&svc, &caller, RequestError::Invalid { field: e.field, message: e.message }).await,
    };
    match svc.redeem(&caller, &id, input).await {
        Ok(r) => Json(RedeemView { request: RequestView::from(&r.request), receipt: r.receipt }).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `200 {"request": {…}, "receipt": "<JWS>"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RedeemView {
    pub request: RequestView,
    pub receipt: String,
}

async fn keys(State(svc): State<RequestService>, Identity(caller): Identity) -> Response {
    match svc.keys(&caller).await {
        Ok(jwks) => Json(jwks).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `GET /v1/whoami`: the caller as the API identifies it, with the names, actions and environments of the
/// policies that match its principal. The identity fields are named as the request object's `requester`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WhoamiView {
    pub arn: String,
    pub principal: String,
    pub account_id: String,
    pub session: Option<String>,
    /// `temporary`, `long_term` or `unknown` (row 40).
    pub credential: String,
    pub policies: Vec<WhoamiPolicyView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WhoamiPolicyView {
    pub name: String,
    pub actions: Vec<String>,
    pub environments: Vec<String>,
}

impl From<WhoAmI> for WhoamiView {
    fn from(w: WhoAmI) -> Self {
        Self {
            arn: w.requester.arn,
            principal: w.requester.principal,
            account_id: w.requester.account_id,
            session: w.requester.session,
            credential: w.credential.as_str().to_string(),
            policies: w
                .policies
                .into_iter()
                .map(|p| WhoamiPolicyView { name: p.name, actions: p.actions, environments: p.environments })
                .collect(),
        }
    }
}

async fn whoami(State(svc): State<RequestService>, Identity(caller): Identity) -> Response {
    match svc.whoami(&caller).await {
        Ok(w) => Json(WhoamiView::from(w)).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn body_parser_names_the_field_at_fault() {
        let e = parse_body(br#"{"action": "deploy"}"#).unwrap_err();
        assert_eq!(e.field, Some("environment"));
        let e = parse_body(br#"{"action": "deploy", "environment": "p", "channel": "C1"}"#).unwrap_err();
        assert!(e.message.contains("unknown field \"channel\""));
        let e = parse_body(br#"{"action": 1, "environment": "p"}"#).unwrap_err();
        assert_eq!(e.field, Some("action"));
        let e = parse_body(br#"{"action": "d", "environment": "p", "ttl_seconds": -5}"#).unwrap_err();
        assert_eq!(e.field, Some("ttl_seconds"));
        let e = parse_body(br#"[1]"#).unwrap_err();
        assert_eq!(e.code, "invalid_request");
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(parse_body(deep.as_bytes()).unwrap_err().code, "invalid_request");
    }
}
