//! The request API's front door in local mode: the SigV4 verifier as an axum middleware, standing where
//! API Gateway's `AWS_IAM` authorizer stands in production.
//!
//! On success it builds the request context API Gateway would (`identity.userArn`, `accountId`, `caller`,
//! `accessKey`, `sourceIp`, `userAgent`) and hands the request, body intact, to the unchanged router. On
//! failure it answers `403` with API Gateway's `{"message": …}` body and `x-amzn-ErrorType`, and the router
//! never runs. Nothing a client sends can put an identity in the context any other way.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lambda_http::aws_lambda_events::apigw::ApiGatewayProxyRequestContext;
use lambda_http::request::RequestContext;
use serde_json::json;

use countersign_core::ports::Clock;

use super::sigv4::{DevIdentity, SigV4Error, SignedRequest, Verifier};

/// API Gateway refuses larger payloads too (10 MB there); the request API itself takes 16 KiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The stage name local mode reports in the request context.
pub const STAGE: &str = "local";

#[derive(Clone)]
pub struct AuthState {
    pub verifier: Arc<Verifier>,
    pub clock: Arc<dyn Clock>,
}

/// API Gateway's answer to an unauthenticated or badly signed request.
pub fn forbidden(e: SigV4Error) -> Response {
    let mut r = (StatusCode::FORBIDDEN, Json(json!({ "message": e.api_gateway_message() }))).into_response();
    r.headers_mut().insert("x-amzn-errortype", HeaderValue::from_static(e.error_type()));
    r
}

/// The context API Gateway's REST API puts on an IAM-authorized request.
fn request_context(id: &DevIdentity, req: &axum::http::request::Parts, now_ms: i64) -> ApiGatewayProxyRequestContext {
    let mut ctx = ApiGatewayProxyRequestContext::default();
    ctx.stage = Some(STAGE.into());
    ctx.request_id = Some(ulid::Ulid::new().to_string());
    ctx.http_method = req.method.clone();
    ctx.path = Some(req.uri.path().to_string());
    ctx.protocol = Some("HTTP/1.1".into());
    ctx.request_time_epoch = now_ms;
    ctx.domain_name = req.headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string);
    ctx.identity.user_arn = Some(id.arn.clone());
    ctx.identity.account_id = Some(id.account_id.clone());
    ctx.identity.caller = Some(id.caller.clone());
    ctx.identity.user = Some(id.caller.clone());
    ctx.identity.access_key = Some(id.access_key_id.clone());
    ctx.identity.source_ip = req.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
    ctx.identity.user_agent = req.headers.get(header::USER_AGENT).and_then(|h| h.to_str().ok()).map(str::to_string);
    ctx
}

/// `axum::middleware::from_fn_with_state(auth_state, require_sigv4)`.
pub async fn require_sigv4(State(st): State<AuthState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY_BYTES).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, Json(json!({ "message": "Request Too Long" }))).into_response();
    };
    let now = st.clock.now();
    let verified = {
        let signed = SignedRequest {
            method: parts.method.as_str(),
            raw_path: parts.uri.path(),
            raw_query: parts.uri.query(),
            headers: &parts.headers,
            body: &bytes,
        };
        st.verifier.verify(&signed, now.unix_seconds()).cloned()
    };
    match verified {
        Ok(id) => {
            let ctx = request_context(&id, &parts, now.unix_millis());
            parts.extensions.insert(RequestContext::ApiGatewayV1(ctx));
            next.run(Request::from_parts(parts, Body::from(bytes))).await
        }
        Err(e) => {
            tracing::warn!(reason = %e, method = %parts.method, path = %parts.uri.path(), "refused by the SigV4 verifier");
            forbidden(e)
        }
    }
}
