//! The caller, as API Gateway's IAM authorizer (or local mode's SigV4 verifier) put it in the request
//! context. Nothing else — no header, no body field — can say who is calling.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use lambda_http::request::RequestContext;

use countersign_core::service::requests::Caller;

/// Extracts the [`Caller`]; a request without an IAM context yields an empty caller, which the service
/// refuses as `401 unauthenticated` (and audits).
pub struct Identity(pub Caller);

pub fn caller_from_context(ctx: Option<&RequestContext>) -> Caller {
    match ctx {
        Some(RequestContext::ApiGatewayV1(c)) => {
            let id = &c.identity;
            let org = id
                .other
                .get("principalOrgId")
                .or_else(|| id.other.get("principalOrgID"))
                .and_then(|v| v.as_str())
                .map(str::to_string);
            Caller {
                user_arn: id.user_arn.clone(),
                account_id: id.account_id.clone(),
                access_key: id.access_key.clone(),
                principal_org_id: org,
            }
        }
        _ => Caller::default(),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(caller_from_context(parts.extensions.get::<RequestContext>())))
    }
}
