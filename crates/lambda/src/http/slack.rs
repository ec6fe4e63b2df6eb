//! `POST /slack/interactions`: Slack's interactivity callbacks. The signature is the only proof of origin,
//! so it is checked first, over the exact raw bytes, and nothing else runs when it fails (401) but its
//! audit record: `callback.rejected` by `slack:unknown` with the failed check as `reason`, never anything
//! from the body, rationed per process (`service::refusals`). Then the app and workspace, then the payload;
//! every decision is re-checked and committed by the vote service.
//!
//! Time: Slack wants the answer within 3 s. Everything the handler does on Slack (group lookups, the message
//! update, ephemeral replies, the deny dialog) stops [`ACK_BUDGET`] after the callback arrived, whatever each
//! call's own timeout; a message update that does not fit is left to the sweeper's relay.
//!
//! Status codes by cause: 401 bad signature or oversized body (generic body, audited, even when the audit
//! store is down), 503 signing secret unreadable (never accept; no refusal, we could not check),
//! 403 foreign app or workspace (audited), 400 a signed payload we do not understand (audited), 200
//! otherwise — Slack shows the outcome through an ephemeral reply or the modal.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::LengthLimitError;
use lambda_http::request::RequestContext;
use serde_json::json;

use countersign_core::domain::break_glass::Verdict;
use countersign_core::domain::SlackWorkspaces;
use countersign_core::error::error_chain;
use countersign_core::ports::{Clock, SecretError, SlackSecrets};
use countersign_core::service::break_glass::ReviewRequest;
use countersign_core::service::refusals::{RefusalCode, RefusedCallback};
use countersign_core::service::votes::{Decision, Rejection, VoteOutcome, VoteRequest, VoteService};
use countersign_slack::blocks;
use countersign_slack::client::SlackClient;
use countersign_slack::interaction::{self, ButtonAction, Interaction, Modal};
use countersign_slack::signature::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Time from the callback's arrival after which no more Slack calls are made for it, leaving Slack's 3 s
/// window room for API Gateway, Lambda and the network.
pub const ACK_BUDGET: Duration = Duration::from_millis(2000);

/// Who may call: the Slack app and workspaces (or Enterprise Grid organization) from configuration.
#[derive(Debug, Clone)]
pub struct SlackIdentity {
    pub app_id: String,
    /// `T…` workspace ids and at most one `E…` Enterprise Grid organization id, comma-separated, as
    /// configured (`COUNTERSIGN_SLACK_TEAM_ID`; see [`SlackWorkspaces`]).
    pub team_id: String,
}

impl SlackIdentity {
    /// The configured workspaces; a value that does not parse admits nobody (fail closed; configuration
    /// loading refuses it at start-up anyway).
    pub fn workspaces(&self) -> SlackWorkspaces {
        SlackWorkspaces::parse(&self.team_id).unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct SlackState {
    pub votes: VoteService,
    pub secrets: Arc<dyn SlackSecrets>,
    pub client: Arc<SlackClient>,
    pub clock: Arc<dyn Clock>,
    pub identity: Arc<SlackIdentity>,
    /// Bound on replies to Slack (ephemeral messages, views.open) inside the 3 s budget.
    pub reply_budget: Duration,
}

pub fn router(state: SlackState) -> Router {
    Router::new()
        .route("/slack/interactions", post(interactions))
        // Every answer carries a JSON error code, like the request API's: never axum's empty 404/405.
        .fallback(|| async { status(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            status(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route only takes POST")
        })
        .with_state(state)
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({"error": {"code": "unauthorized", "message": "invalid request signature"}})))
        .into_response()
}

fn status(code: StatusCode, error: &str, message: &str) -> Response {
    (code, Json(json!({"error": {"code": error, "message": message}}))).into_response()
}

fn unavailable() -> Response {
    let mut r = status(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "temporarily unavailable; retry");
    r.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(2));
    r
}

/// Reads one header that must appear at most once; `Err` on duplicates or non-ASCII.
fn header<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, signature::SignatureError> {
    signature::single_header(h.get_all(name).iter().map(|v| v.as_bytes()))
}

/// Why [`verify`] did not authenticate a callback.
enum Unverified {
    /// A refusal (401), with the failed check in stable words for its audit record.
    Refused(&'static str),
    /// The signing secret could not be read: we could not check, so this is no refusal (503).
    Unavailable,
}

/// The audit `reason` of a callback that verifies only with a retired signing secret (`AWSPREVIOUS` after
/// its grace period, row 27): the mark of a leaked old secret, so it is told apart from other mismatches.
pub const PREVIOUS_SECRET_EXPIRED: &str = "previous_secret_expired";

/// Verifies the signature with the current secrets, refreshing them once on a mismatch (rotation).
async fn verify(state: &SlackState, headers: &HeaderMap, body: &[u8]) -> Result<(), Unverified> {
    let (ts, sig) = match (header(headers, TIMESTAMP_HEADER), header(headers, SIGNATURE_HEADER)) {
        (Ok(t), Ok(s)) => (t, s),
        (Err(e), _) | (_, Err(e)) => return Err(Unverified::Refused(e.reason())),
    };
    let now = state.clock.now();
    for refresh in [false, true] {
        // `now` also decides whether AWSPREVIOUS is still inside its grace period (row 27).
        let secrets = match state.secrets.verification_secrets(refresh, now).await {
            Ok(s) => s,
            Err(e) => {
                log_secret_error(&e);
                return Err(Unverified::Unavailable);
            }
        };
        let refs: Vec<(&str, &[u8])> =
            secrets.accepted.iter().map(|(l, s)| (l.as_str(), s.expose().as_bytes())).collect();
        match signature::verify_any(&refs, ts, sig, body, now.unix_seconds()) {
            Ok(stage) => {
                tracing::info!(stage, "slack signature verified");
                return Ok(());
            }
            Err(signature::SignatureError::Mismatch) if !refresh => continue,
            Err(signature::SignatureError::Mismatch) => {
                // Only to name the refusal: a retired secret never authenticates. The MAC is computed whether
                // or not it matches and the answer is the same 401, so this is no oracle (row 7).
                let retired: Vec<(&str, &[u8])> =
                    secrets.retired.iter().map(|(l, s)| (l.as_str(), s.expose().as_bytes())).collect();
                if !retired.is_empty() && signature::verify_any(&retired, ts, sig, body, now.unix_seconds()).is_ok() {
                    tracing::warn!(
                        reason = PREVIOUS_SECRET_EXPIRED,
                        "slack callback refused: signed with the previous signing secret after its grace period \
                         (has the old secret leaked?)"
                    );
                    return Err(Unverified::Refused(PREVIOUS_SECRET_EXPIRED));
                }
                tracing::warn!(reason = %signature::SignatureError::Mismatch, "slack callback refused");
                return Err(Unverified::Refused(signature::SignatureError::Mismatch.reason()));
            }
            Err(e) => {
                tracing::warn!(reason = %e, "slack callback refused");
                return Err(Unverified::Refused(e.reason()));
            }
        }
    }
    Err(Unverified::Refused(signature::SignatureError::Mismatch.reason()))
}

/// Where the connection came from: API Gateway's request context (the REST API as deployed, or the HTTP
/// API shape `cargo lambda watch` sends), or the TCP peer in local mode. Never a header (`X-Forwarded-For`
/// is the sender's to write). A request context without a parseable address names none: it is not
/// replaced by the TCP peer, which behind API Gateway is not the sender.
fn source_ip(parts: &axum::http::request::Parts) -> Option<IpAddr> {
    let from_context = match parts.extensions.get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV1(ctx)) => Some(ctx.identity.source_ip.as_deref()),
        Some(RequestContext::ApiGatewayV2(ctx)) => Some(ctx.http.source_ip.as_deref()),
        Some(_) => Some(None),
        None => None,
    };
    match from_context {
        Some(ip) => ip.and_then(|ip| ip.parse().ok()),
        None => parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()),
    }
}

/// Answers a refused, unauthenticated callback: always the generic 401, whatever the audit does, after a
/// `callback.rejected` record within the process's budget ([`VoteService::audit_refused_callback`], bounded
/// by the callback's deadline, so a slow or failing audit store delays the 401 by at most that).
async fn refuse(state: &SlackState, refused: RefusedCallback) -> Response {
    match state.votes.audit_refused_callback(&refused).await {
        Ok(true) => {}
        Ok(false) => tracing::debug!(reason = refused.reason, "refusal counted, not recorded (audit budget spent)"),
        // A bad signature is never a 5xx: the store's trouble is logged, the answer stays 401.
        Err(e) => {
            log_store_error(&e, "cannot record a refused Slack callback");
        }
    }
    unauthorized()
}

fn log_secret_error(e: &SecretError) {
    tracing::error!(error = %error_chain(e), "cannot read the Slack signing secret");
}

async fn interactions(State(state): State<SlackState>, req: Request) -> Response {
    let deadline = tokio::time::Instant::now() + ACK_BUDGET;
    let state = SlackState { votes: state.votes.clone().until(deadline), ..state };
    let (parts, body) = req.into_parts();
    // Parsed here, at the edge, and printed again: the service records it as it is.
    let ip = source_ip(&parts).map(|ip| ip.to_string());
    let refused = |code, reason, body_bytes| RefusedCallback { code, reason, body_bytes, source_ip: ip.clone() };
    let body: Bytes = match to_bytes(body, interaction::MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = e.into_inner().downcast_ref::<LengthLimitError>().is_some();
            let (code, reason) = if too_large {
                (RefusalCode::BodyTooLarge, "body_too_large")
            } else {
                (RefusalCode::BadSignature, "body_unreadable")
            };
            tracing::warn!(reason, "slack callback refused");
            return refuse(&state, refused(code, reason, None)).await;
        }
    };
    // Slack signs UTF-8 form data; anything else is refused like a bad signature (API Gateway has already
    // decoded an `isBase64Encoded` body, so these are the bytes Slack signed).
    if let Err(e) = signature::decode_body(&body, false) {
        tracing::warn!("slack callback refused: body is not UTF-8");
        return refuse(&state, refused(RefusalCode::BadSignature, e.reason(), Some(body.len()))).await;
    }
    // 1. Signature over the raw bytes, before anything is parsed.
    match verify(&state, &parts.headers, &body).await {
        Ok(()) => {}
        Err(Unverified::Unavailable) => return unavailable(),
        Err(Unverified::Refused(reason)) => {
            return refuse(&state, refused(RefusalCode::BadSignature, reason, Some(body.len()))).await;
        }
    }
    // 2. Only now: the payload.
    let parsed = match interaction::parse(&body) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(reason = %e, "signed callback with an unusable payload");
            if state.votes.audit_rejected_callback(None, "bad_payload", &e.to_string()).await.is_err() {
                return unavailable();
            }
            return status(StatusCode::BAD_REQUEST, "invalid_payload", "unsupported interaction payload");
        }
    };
    // 3. The app and workspace must be ours (row 8).
    let (app, team, enterprise, user, user_team) = match &parsed {
        Interaction::BlockActions(a) => (&a.api_app_id, &a.team_id, &a.enterprise_id, &a.user_id, &a.user_team_id),
        Interaction::ViewSubmission(v) => (&v.api_app_id, &v.team_id, &v.enterprise_id, &v.user_id, &v.user_team_id),
    };
    if let Err(why) = check_workspace(&state.identity, app, team, enterprise.as_deref(), user_team.as_deref()) {
        tracing::warn!(reason = why, "callback from a foreign app or workspace");
        if state.votes.audit_rejected_callback(Some(user.as_str()), "foreign_workspace", why).await.is_err() {
            return unavailable();
        }
        return status(StatusCode::FORBIDDEN, "forbidden", "this app or workspace is not allowed");
    }
    match parsed {
        Interaction::BlockActions(a) => {
            let clicked = (a.channel_id.to_string(), a.message_ts.clone());
            match a.action_id {
                ButtonAction::Approve => {
                    let v = VoteRequest {
                        user: a.user_id.clone(),
                        request_id: a.value,
                        clicked: Some(clicked),
                        decision: Decision::Approve,
                    };
                    match state.votes.vote(v).await {
                        Ok(VoteOutcome::Recorded(_)) => StatusCode::OK.into_response(),
                        Ok(VoteOutcome::Duplicate(_)) => {
                            reply(&state, deadline, &a.response_url, "You have already voted on this request.").await;
                            StatusCode::OK.into_response()
                        }
                        Ok(VoteOutcome::Rejected(why)) => {
                            reply(&state, deadline, &a.response_url, &why.message()).await;
                            StatusCode::OK.into_response()
                        }
                        Err(e) => store_failure(&e),
                    }
                }
                ButtonAction::ReviewOk => {
                    let v = ReviewRequest {
                        user: a.user_id.clone(),
                        request_id: a.value,
                        clicked: Some(clicked),
                        verdict: Verdict::Ok,
                    };
                    match state.votes.review(v).await {
                        Ok(VoteOutcome::Recorded(_) | VoteOutcome::Duplicate(_)) => StatusCode::OK.into_response(),
                        Ok(VoteOutcome::Rejected(why)) => {
                            reply(&state, deadline, &a.response_url, &why.review_message()).await;
                            StatusCode::OK.into_response()
                        }
                        Err(e) => store_failure(&e),
                    }
                }
                ButtonAction::ReviewFlag => {
                    // Rights are checked when the flag is submitted (the modal carries only the id).
                    let view = blocks::break_glass::flag_modal(&a.value);
                    let budget = within(state.reply_budget, deadline);
                    match tokio::time::timeout(budget, state.client.open_view(&a.trigger_id, &view)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "could not open the flag dialog");
                            reply(
                                &state,
                                deadline,
                                &a.response_url,
                                "Could not open the flag dialog; please try again.",
                            )
                            .await;
                        }
                        Err(_) => tracing::warn!("opening the flag dialog timed out"),
                    }
                    StatusCode::OK.into_response()
                }
                ButtonAction::Deny => match state.votes.authorize(&a.user_id, &a.value, Some(&clicked)).await {
                    Ok(Ok((request, _))) => {
                        let view = blocks::deny_modal(&request.id, &request);
                        let budget = within(state.reply_budget, deadline);
                        let open = tokio::time::timeout(budget, state.client.open_view(&a.trigger_id, &view));
                        match open.await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => {
                                tracing::warn!(error = %e, "could not open the deny dialog");
                                reply(
                                    &state,
                                    deadline,
                                    &a.response_url,
                                    "Could not open the deny dialog; please try again.",
                                )
                                .await;
                            }
                            Err(_) => tracing::warn!("opening the deny dialog timed out"),
                        }
                        StatusCode::OK.into_response()
                    }
                    Ok(Err(why)) => {
                        reply(&state, deadline, &a.response_url, &why.message()).await;
                        StatusCode::OK.into_response()
                    }
                    Err(e) => store_failure(&e),
                },
            }
        }
        Interaction::ViewSubmission(v) if v.modal == Modal::Flag => {
            let review = ReviewRequest {
                user: v.user_id.clone(),
                request_id: v.request_id,
                clicked: None,
                verdict: Verdict::Flag { reason: v.reason.clone() },
            };
            match state.votes.review(review).await {
                Ok(VoteOutcome::Recorded(_) | VoteOutcome::Duplicate(_)) => {
                    Json(json!({"response_action": "clear"})).into_response()
                }
                Ok(VoteOutcome::Rejected(why)) => modal_error(&why.review_message()),
                Err(e) => store_failure(&e),
            }
        }
        Interaction::ViewSubmission(v) => {
            let vote = VoteRequest {
                user: v.user_id.clone(),
                request_id: v.request_id,
                clicked: None,
                decision: Decision::Deny { reason: v.reason.clone() },
            };
            match state.votes.vote(vote).await {
                Ok(VoteOutcome::Recorded(_)) => Json(json!({"response_action": "clear"})).into_response(),
                Ok(VoteOutcome::Duplicate(_)) => modal_error("You have already voted on this request."),
                Ok(VoteOutcome::Rejected(why)) => modal_error(&rejection_text(&why)),
                Err(e) => store_failure(&e),
            }
        }
    }
}

fn rejection_text(why: &Rejection) -> String {
    why.message()
}

fn modal_error(message: &str) -> Response {
    let text: String = message.chars().take(150).collect();
    Json(json!({"response_action": "errors", "errors": {blocks::DENY_REASON_BLOCK_ID: text}})).into_response()
}

fn store_failure(e: &countersign_core::ports::StoreError) -> Response {
    log_store_error(e, "store failure while handling a Slack callback");
    unavailable()
}

fn log_store_error(e: &countersign_core::ports::StoreError, what: &str) {
    tracing::error!(error = %error_chain(e), "{what}");
}

/// `max`, or what is left until `deadline` if that is less.
fn within(max: Duration, deadline: tokio::time::Instant) -> Duration {
    max.min(deadline.saturating_duration_since(tokio::time::Instant::now()))
}

/// Sends an ephemeral reply through the callback's `response_url`, bounded in time; failures are logged.
async fn reply(state: &SlackState, deadline: tokio::time::Instant, response_url: &str, text: &str) {
    let body = blocks::ephemeral_text(text);
    let budget = within(state.reply_budget, deadline);
    match tokio::time::timeout(budget, state.client.respond(response_url, &body)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "ephemeral reply failed"),
        Err(_) => tracing::warn!("ephemeral reply timed out"),
    }
}

/// Row 8: the app id must be ours; the workspace (or Enterprise Grid org) must be one of ours; the clicking
/// user must belong to one of ours (a Slack Connect user from another organization is refused). The
/// workspace rule is the domain's ([`SlackWorkspaces::admits_callback`]).
pub fn check_workspace(
    id: &SlackIdentity,
    app: &str,
    team: &str,
    enterprise: Option<&str>,
    user_team: Option<&str>,
) -> Result<(), &'static str> {
    if app != id.app_id {
        return Err("api_app_id does not match");
    }
    id.workspaces().admits_callback(team, enterprise, user_team)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t08_foreign_app_team_enterprise_and_connect_users_are_refused() {
        let id = SlackIdentity { app_id: "A0APP".into(), team_id: "T0TEAM".into() };
        assert!(check_workspace(&id, "A0APP", "T0TEAM", None, Some("T0TEAM")).is_ok());
        assert!(check_workspace(&id, "A0OTHER", "T0TEAM", None, Some("T0TEAM")).is_err());
        assert!(check_workspace(&id, "A0APP", "T0OTHER", None, Some("T0OTHER")).is_err());
        assert!(check_workspace(&id, "A0APP", "T0TEAM", None, Some("T0GUEST")).is_err());
        assert!(check_workspace(&id, "A0APP", "T0TEAM", None, None).is_err());
        let grid = SlackIdentity { app_id: "A0APP".into(), team_id: "E0GRID".into() };
        assert!(check_workspace(&grid, "A0APP", "T0ANY", Some("E0GRID"), Some("T0ANY")).is_ok());
        assert!(check_workspace(&grid, "A0APP", "T0ANY", Some("E0OTHER"), Some("T0ANY")).is_err());
        assert!(check_workspace(&grid, "A0APP", "T0ANY", None, Some("T0ANY")).is_err());
    }
}
