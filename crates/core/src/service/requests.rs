//! Submitting, reading, waiting for and cancelling approval requests (the request API's use cases), and
//! who the caller is to the API ([`whoami`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::domain::policy::select;
use crate::domain::request::{Notification, NotificationState, PolicyRef, Requester};
use crate::domain::{
    check_credentials, Action, Actor, ApprovalRequest, ArtifactDigest, AuditDraft, AuditKind, Environment,
    IdempotencyKey, LongTermCredentials, Principal, PrincipalError, RedeemRefusal, RequestId, Resource, SlackChannelId,
    Status, TransitionError,
};
use crate::ports::{Clock, Commit, Conflict, CreateOutcome, Guard, Notifier, SignError, StoreError, Stores};

use crate::domain::text::{check_visible, escape_hidden};

use super::notify::Dispatcher;
use super::receipts::Receipts;

mod whoami;
pub use whoami::{PolicySummary, WhoAmI};

/// Input limits (also documented in docs/api.md).
pub const MAX_DETAILS: usize = 20;
pub const MAX_DETAIL_KEY_CHARS: usize = 64;
pub const MAX_DETAIL_VALUE_CHARS: usize = 500;
pub const MAX_REASON_CHARS: usize = 1000;
pub const MIN_TTL_SECONDS: u64 = 60;
pub const MAX_WAIT_SECONDS: u64 = 20;
/// How long the creating invocation owns the first Slack post before the relay may take over.
pub const FIRST_POST_LEASE_SECONDS: i64 = 30;

/// Who is calling, exactly as the IAM authorizer reported it.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub user_arn: Option<String>,
    pub account_id: Option<String>,
    pub access_key: Option<String>,
    pub principal_org_id: Option<String>,
}

/// A request body as received, before validation (strings are checked here, not in the HTTP layer).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NewRequest {
    pub action: String,
    pub environment: String,
    pub resource: Option<String>,
    pub reason: Option<String>,
    pub details: BTreeMap<String, String>,
    pub idempotency_key: Option<String>,
    pub ttl_seconds: Option<u64>,
    /// Left out of the body hash when absent, so retries of bodies sent before it existed still match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    /// Row 41: approve at once, announce, and review afterwards (the policy must allow it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
    /// Row 42: a reviewer drill (the policy must say `drills: true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill: Option<NewDrill>,
}

/// The `drill` object of a request body, before validation.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NewDrill {
    pub scenario: String,
    pub signs: Vec<String>,
}

/// Why a call was refused. Each maps to one HTTP status and stable code in the HTTP layer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{message}")]
    Invalid { field: Option<&'static str>, message: String },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    AccountNotAllowed(String),
    #[error("{0}")]
    NoMatchingPolicy(String),
    /// Row 40: a matching policy says `credentials: temporary` and the call was signed otherwise.
    #[error("{0}")]
    LongTermCredentials(#[from] LongTermCredentials),
    #[error("policy {policy:?} requires a reason")]
    ReasonRequired { policy: String },
    /// Row 41: a break-glass must say why, at some length.
    #[error("a break-glass request needs a reason of at least {min} characters")]
    BreakGlassReason { min: usize },
    #[error("{0}")]
    BreakGlassNotAllowed(String),
    #[error("{0}")]
    DrillsNotAllowed(String),
    /// Row 42: redemption of a reviewer drill.
    #[error("{0}")]
    Drill(String),
    #[error("{principal} already broke the glass {max} time(s) today (UTC) under policy {policy:?}")]
    BreakGlassLimit { principal: String, policy: String, max: u32 },
    #[error("{principal} already has {max} pending request(s) under policy {policy:?}")]
    TooManyPending { principal: String, policy: String, max: u32 },
    #[error("no such request")]
    NotFound,
    #[error("idempotency_key was already used with a different request body")]
    IdempotencyConflict,
    #[error("the request is already {0}")]
    AlreadyDecided(&'static str),
    #[error("body must be at most {max} bytes")]
    PayloadTooLarge { max: usize },
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("{0}")]
    SessionMismatch(String),
    #[error("{0}")]
    NotApproved(String),
    #[error("{0}")]
    AlreadyRedeemed(String),
    #[error("{0}")]
    ApprovalExpired(String),
    #[error("{0}")]
    ArtifactMismatch(String),
    #[error("a dependency is unavailable")]
    Unavailable(#[source] StoreError),
    #[error("the receipt signing key is unavailable")]
    SigningUnavailable(#[source] SignError),
}

impl RequestError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid_request",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::AccountNotAllowed(_) => "account_not_allowed",
            Self::NoMatchingPolicy(_) => "no_matching_policy",
            Self::LongTermCredentials(_) => "long_term_credentials",
            Self::ReasonRequired { .. } | Self::BreakGlassReason { .. } => "reason_required",
            Self::BreakGlassNotAllowed(_) => "break_glass_not_allowed",
            Self::BreakGlassLimit { .. } => "break_glass_limit",
            Self::DrillsNotAllowed(_) => "drills_not_allowed",
            Self::Drill(_) => "drill",
            Self::TooManyPending { .. } => "too_many_pending",
            Self::NotFound => "not_found",
            Self::IdempotencyConflict => "idempotency_conflict",
            Self::AlreadyDecided(_) => "already_decided",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::SessionMismatch(_) => "session_mismatch",
            Self::NotApproved(_) => "not_approved",
            Self::AlreadyRedeemed(_) => "already_redeemed",
            Self::ApprovalExpired(_) => "approval_expired",
            Self::ArtifactMismatch(_) => "artifact_mismatch",
            Self::Unavailable(_) | Self::SigningUnavailable(_) => "unavailable",
        }
    }

    /// A failure of ours or of a dependency, worth retrying: never audited as a refusal.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::SigningUnavailable(_))
    }

    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Invalid { field, .. } => *field,
            Self::ReasonRequired { .. } | Self::BreakGlassReason { .. } => Some("reason"),
            Self::BreakGlassNotAllowed(_) => Some("break_glass"),
            Self::DrillsNotAllowed(_) => Some("drill"),
            Self::ArtifactMismatch(_) => Some("artifact"),
            _ => None,
        }
    }
}

impl From<RedeemRefusal> for RequestError {
    fn from(e: RedeemRefusal) -> Self {
        let message = e.to_string();
        match e {
            RedeemRefusal::Drill => Self::Drill(message),
            RedeemRefusal::SessionMismatch { .. } => Self::SessionMismatch(message),
            RedeemRefusal::NotApproved(_) => Self::NotApproved(message),
            RedeemRefusal::AlreadyRedeemed { .. } => Self::AlreadyRedeemed(message),
            RedeemRefusal::ApprovalExpired(_) => Self::ApprovalExpired(message),
            RedeemRefusal::ArtifactMismatch { .. } => Self::ArtifactMismatch(message),
        }
    }
}

impl From<StoreError> for RequestError {
    fn from(e: StoreError) -> Self {
        Self::Unavailable(e)
    }
}

pub(super) fn invalid(field: &'static str, message: impl Into<String>) -> RequestError {
    RequestError::Invalid { field: Some(field), message: format!("{field}: {}", message.into()) }
}

/// Settings of the request API (from `LambdaConfig` or local mode's config).
#[derive(Debug, Clone, Default)]
pub struct RequestSettings {
    pub allowed_accounts: BTreeSet<String>,
    pub allowed_org_id: Option<String>,
    pub sensitive_environments: BTreeSet<Environment>,
}

/// The result of a submit: the request and whether this call created it.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub request: ApprovalRequest,
    pub created: bool,
}

#[derive(Clone)]
pub struct RequestService {
    pub stores: Stores,
    pub clock: Arc<dyn Clock>,
    pub dispatcher: Dispatcher,
    pub settings: Arc<RequestSettings>,
    pub receipts: Receipts,
}

struct Validated {
    action: Action,
    environment: Environment,
    resource: Option<Resource>,
    reason: Option<String>,
    details: BTreeMap<String, String>,
    idempotency_key: Option<IdempotencyKey>,
    artifact: Option<ArtifactDigest>,
    drill: Option<crate::domain::drill::Drill>,
}

fn validate(input: &NewRequest) -> Result<Validated, RequestError> {
    let action = Action::parse(&input.action).map_err(|e| invalid("action", e.problem))?;
    let environment = Environment::parse(&input.environment).map_err(|e| invalid("environment", e.problem))?;
    let resource =
        input.resource.as_deref().map(Resource::parse).transpose().map_err(|e| invalid("resource", e.problem))?;
    // Row 33 before any other rule, so the message names the code point (the rule: domain::text).
    if let Some(r) = &input.reason {
        check_visible(r).map_err(|h| invalid("reason", h.to_string()))?;
    }
    for (k, v) in &input.details {
        check_visible(k).map_err(|h| {
            invalid("details", format!("the key {:?} {h}", escape_hidden(&truncate(k, MAX_DETAIL_KEY_CHARS))))
        })?;
        check_visible(v).map_err(|h| RequestError::Invalid {
            field: Some("details"),
            message: format!("{}: {h}", detail_path(k)),
        })?;
    }
    let reason = match input.reason.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(r) if r.chars().count() > MAX_REASON_CHARS => {
            return Err(invalid("reason", format!("must be at most {MAX_REASON_CHARS} characters")))
        }
        Some(r) if r.chars().any(|c| c.is_control() && c != '\n') => {
            return Err(invalid("reason", "must not contain control characters"))
        }
        Some(r) => Some(r.to_string()),
    };
    if input.details.len() > MAX_DETAILS {
        return Err(invalid("details", format!("at most {MAX_DETAILS} entries")));
    }
    for (k, v) in &input.details {
        if k.is_empty() || k.chars().count() > MAX_DETAIL_KEY_CHARS || k.chars().any(char::is_control) {
            return Err(invalid("details", format!("keys must be 1 to {MAX_DETAIL_KEY_CHARS} printable characters")));
        }
        if v.chars().count() > MAX_DETAIL_VALUE_CHARS || v.chars().any(char::is_control) {
            return Err(invalid(
                "details",
                format!("value of {k:?} must be at most {MAX_DETAIL_VALUE_CHARS} printable characters"),
            ));
        }
    }
    let idempotency_key = input
        .idempotency_key
        .as_deref()
        .map(IdempotencyKey::parse)
        .transpose()
        .map_err(|e| invalid("idempotency_key", e.problem))?;
    let artifact =
        input.artifact.as_deref().map(ArtifactDigest::parse).transpose().map_err(|e| invalid("artifact", e.problem))?;
    let drill = match &input.drill {
        None => None,
        Some(_) if input.break_glass => return Err(invalid("drill", "a drill cannot also be a break-glass")),
        Some(d) => Some(crate::domain::drill::Drill::parse(&d.scenario, &d.signs).map_err(|e| invalid("drill", e))?),
    };
    Ok(Validated {
        action,
        environment,
        resource,
        reason,
        details: input.details.clone(),
        idempotency_key,
        artifact,
        drill,
    })
}

/// How a message names one detail: `details.ticket`, or `details["two words"]` when the key is not a
/// plain name. Only for keys that passed `check_visible`.
fn detail_path(key: &str) -> String {
    let plain = !key.is_empty()
        && key.chars().count() <= MAX_DETAIL_KEY_CHARS
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if plain {
        format!("details.{key}")
    } else {
        format!("details[{:?}]", truncate(key, MAX_DETAIL_KEY_CHARS))
    }
}

/// SHA-256 over the canonical JSON of the body (sorted details): equal bodies, equal hashes.
fn body_hash(input: &NewRequest) -> String {
    hex::encode(Sha256::digest(serde_json::to_vec(input).unwrap_or_default()))
}

impl RequestService {
    pub(super) fn now(&self) -> crate::domain::Timestamp {
        self.clock.now()
    }

    /// Records a refusal and returns it (or `Unavailable` if even the audit record cannot be written).
    /// `request` is the id a `GET` or cancel named, as given (truncated).
    pub(super) async fn refuse(
        &self,
        caller: &Caller,
        input: Option<&NewRequest>,
        request: Option<&str>,
        e: RequestError,
    ) -> RequestError {
        if e.is_retryable() {
            return e;
        }
        let actor =
            caller.user_arn.as_deref().map_or_else(|| Actor("anonymous".into()), |a| Actor::aws(&truncate(a, 2048)));
        let mut d = AuditDraft::new(self.now(), AuditKind::RequestRefused, actor, None)
            .with("code", e.code())
            .with("message", e.to_string());
        if let Some(i) = input {
            // A refused action may hold the very characters row 33 refuses: recorded as `{U+202E}`.
            d = d
                .with("action", escape_hidden(&truncate(&i.action, 64)))
                .with("environment", escape_hidden(&truncate(&i.environment, 64)));
        }
        if let Some(id) = request {
            d = d.with("request", truncate(id, 64));
        }
        if let RequestError::BreakGlassLimit { max, .. } = &e {
            d = d.with("break_glass", "true").with("max_per_day", max.to_string());
        }
        if let RequestError::LongTermCredentials(l) = &e {
            // The key id's last 4 characters only (row 40), as the message names it.
            d = d.with("credential", l.credential.as_str());
            if let Some(k) = &l.key_suffix {
                d = d.with("access_key_last4", k.as_str());
            }
        }
        match self.stores.audit.append(vec![d]).await {
            Ok(_) => e,
            Err(se) => RequestError::Unavailable(se),
        }
    }

    /// Audits a refusal found before the body could be parsed (identity, media type, size, syntax) and
    /// returns the error to answer: the refusal, or `Unavailable` when even the audit record cannot be
    /// written (the caller then gets a retryable 503 instead of an unaudited refusal).
    pub async fn refuse_unparsed(&self, caller: &Caller, e: RequestError) -> RequestError {
        self.refuse(caller, None, None, e).await
    }

    /// Identity and account checks shared by every route.
    pub fn identify(&self, caller: &Caller) -> Result<Principal, RequestError> {
        let arn = caller
            .user_arn
            .as_deref()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| RequestError::Unauthenticated("no IAM identity in the request context".into()))?;
        let p = Principal::parse(arn).map_err(|e| match e {
            PrincipalError::Root | PrincipalError::FederatedUser => RequestError::NoMatchingPolicy(e.to_string()),
            other => RequestError::Unauthenticated(format!("caller identity not usable: {other}")),
        })?;
        let s = &self.settings;
        if !s.allowed_accounts.is_empty() && !s.allowed_accounts.contains(&p.account) {
            return Err(RequestError::AccountNotAllowed(format!(
                "account {} is not allowed to call this API",
                p.account
            )));
        }
        if let Some(org) = &s.allowed_org_id {
            if caller.principal_org_id.as_deref() != Some(org.as_str()) {
                return Err(RequestError::AccountNotAllowed(
                    "the caller is not in the allowed AWS organization".into(),
                ));
            }
        }
        Ok(p)
    }

    pub async fn submit(&self, caller: &Caller, input: NewRequest) -> Result<Submitted, RequestError> {
        match self.try_submit(caller, &input).await {
            Ok(s) => Ok(s),
            Err(e @ RequestError::Unavailable(_)) => Err(e),
            Err(e) => Err(self.refuse(caller, Some(&input), None, e).await),
        }
    }

    async fn try_submit(&self, caller: &Caller, input: &NewRequest) -> Result<Submitted, RequestError> {
        let principal = self.identify(caller)?;
        let v = validate(input)?;
        let set = self.stores.current_policies().await?;
        let policy =
            select(&set.policies, &principal, &v.action, &v.environment, v.resource.as_ref()).ok_or_else(|| {
                RequestError::NoMatchingPolicy(format!(
                    "no policy allows {} to request {} in {}{}",
                    principal.identity(),
                    v.action,
                    v.environment,
                    v.resource.as_ref().map(|r| format!(" on {r}")).unwrap_or_default()
                ))
            })?;
        check_credentials(
            &set.policies,
            &principal,
            &v.action,
            &v.environment,
            v.resource.as_ref(),
            caller.access_key.as_deref(),
        )?;
        if v.drill.is_some() && !policy.drills {
            return Err(RequestError::DrillsNotAllowed(format!(
                "policy {:?} does not allow reviewer drills (it does not say drills: true)",
                policy.name.as_str()
            )));
        }
        let break_glass = if input.break_glass { Some(break_glass_terms(policy, v.reason.as_deref())?) } else { None };
        if policy.require_reason && v.reason.is_none() {
            return Err(RequestError::ReasonRequired { policy: policy.name.to_string() });
        }
        let ttl = match input.ttl_seconds {
            None => policy.max_ttl,
            Some(t) if (MIN_TTL_SECONDS..=policy.max_ttl).contains(&t) => t,
            Some(t) => {
                return Err(invalid(
                    "ttl_seconds",
                    format!("{t} is outside {MIN_TTL_SECONDS}..={} (policy {})", policy.max_ttl, policy.name),
                ))
            }
        };
        let now = self.now();
        let auto = policy.required_approvals == 0 || break_glass.is_some();
        let channel = SlackChannelId::parse(policy.channel.as_str())
            .map_err(|e| RequestError::Invalid { field: None, message: e.to_string() })?;
        let request = ApprovalRequest {
            id: RequestId::generate(),
            status: if auto { Status::Approved } else { Status::Pending },
            action: v.action,
            environment: v.environment,
            resource: v.resource,
            reason: v.reason,
            details: v.details,
            requester: Requester::from_principal(&principal, caller.access_key.clone()),
            policy: PolicyRef { name: policy.name.clone(), version: policy.version() },
            required_approvals: policy.required_approvals,
            approvals: vec![],
            denial: None,
            created_at: now,
            expires_at: now.plus_seconds(i64::try_from(ttl).unwrap_or(i64::MAX)),
            decided_at: auto.then_some(now),
            notification: Notification {
                state: NotificationState::Pending,
                channel,
                ts: None,
                attempts: 0,
                next_attempt_at: Some(now.plus_seconds(FIRST_POST_LEASE_SECONDS)),
                update_pending: false,
                reminders_sent: 0,
            },
            idempotency_key: v.idempotency_key,
            body_hash: Some(body_hash(input)),
            version: 1,
            artifact: v.artifact,
            use_within: policy.use_within,
            bind_session: policy.bind_session,
            usable_until: None,
            redeemed_at: None,
            redeemed_by: None,
            unused_at: None,
            break_glass: break_glass.map(|b| crate::domain::break_glass::BreakGlass::new(b, now)),
            drill: v.drill,
        };
        let mut request = request;
        if auto {
            request.open_use_window(now);
        }
        let events = request.creation_events();
        match self.stores.requests.create_request(&request, events, policy.max_pending).await? {
            CreateOutcome::Created => {}
            CreateOutcome::Existing(existing) => {
                if existing.body_hash == request.body_hash {
                    let existing = self.show(existing);
                    return Ok(Submitted { request: existing, created: false });
                }
                return Err(RequestError::IdempotencyConflict);
            }
            CreateOutcome::TooManyPending => {
                return Err(RequestError::TooManyPending {
                    principal: principal.identity(),
                    policy: policy.name.to_string(),
                    max: policy.max_pending,
                })
            }
            CreateOutcome::BreakGlassLimit => {
                return Err(RequestError::BreakGlassLimit {
                    principal: principal.identity(),
                    policy: policy.name.to_string(),
                    max: request.break_glass.as_ref().map_or(0, |b| b.max_per_day),
                })
            }
        }
        // Durable first; the post happens after. A failed post leaves the request pending and queued.
        // This call holds the first-post lease written with the request (FIRST_POST_LEASE_SECONDS).
        let mut after = self.dispatcher.deliver_created(request.clone(), Some(set.clone())).await.unwrap_or(None);
        if request.break_glass.is_some() {
            // Row 41: announced in the break-glass channel too, under the lease written with the request.
            let posted = after.clone().unwrap_or_else(|| request.clone());
            after = self.dispatcher.deliver_alert(&posted, true).await.unwrap_or(Some(posted));
        }
        Ok(Submitted { request: self.show(after.unwrap_or(request)), created: true })
    }

    /// What a reader sees: a pending request past its expiry reads `expired`.
    pub(super) fn show(&self, mut r: ApprovalRequest) -> ApprovalRequest {
        r.status = r.effective_status(self.now());
        r
    }

    pub(super) async fn owned(&self, principal: &Principal, id: &str) -> Result<ApprovalRequest, RequestError> {
        let id = RequestId::parse(id).map_err(|_| RequestError::NotFound)?;
        match self.stores.requests.get_request(&id).await? {
            Some(r) if r.requester.principal == principal.identity() => Ok(r),
            _ => Err(RequestError::NotFound),
        }
    }

    /// Reads a request; with `wait`, answers as soon as it is no longer pending or after `wait` seconds.
    /// Refusals (including `not_found`) are audited.
    pub async fn get(&self, caller: &Caller, id: &str, wait: Option<u64>) -> Result<ApprovalRequest, RequestError> {
        match self.try_get(caller, id, wait).await {
            Ok(r) => Ok(r),
            Err(e) => Err(self.refuse(caller, None, Some(id), e).await),
        }
    }

    async fn try_get(&self, caller: &Caller, id: &str, wait: Option<u64>) -> Result<ApprovalRequest, RequestError> {
        let principal = self.identify(caller)?;
        let wait = wait.unwrap_or(0);
        if wait > MAX_WAIT_SECONDS {
            return Err(invalid("wait", format!("must be 0 to {MAX_WAIT_SECONDS} seconds")));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        let mut delay = Duration::from_millis(100);
        loop {
            let r = self.show(self.owned(&principal, id).await?);
            if r.status != Status::Pending || tokio::time::Instant::now() >= deadline {
                return Ok(r);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(delay.min(left)).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// The requesting principal cancels its pending request. Refusals are audited.
    pub async fn cancel(&self, caller: &Caller, id: &str) -> Result<ApprovalRequest, RequestError> {
        match self.try_cancel(caller, id).await {
            Ok(r) => Ok(r),
            Err(e) => Err(self.refuse(caller, None, Some(id), e).await),
        }
    }

    async fn try_cancel(&self, caller: &Caller, id: &str) -> Result<ApprovalRequest, RequestError> {
        let principal = self.identify(caller)?;
        let arn = caller.user_arn.clone().unwrap_or_default();
        for _ in 0..50 {
            let r = self.owned(&principal, id).await?;
            let now = self.now();
            let t = match r.cancel(&arn, now) {
                Ok(t) => t,
                Err(TransitionError::Expired) => return Err(RequestError::AlreadyDecided("expired")),
                Err(TransitionError::AlreadyDecided(s)) => return Err(RequestError::AlreadyDecided(s.as_str())),
                Err(e) => return Err(RequestError::Invalid { field: None, message: e.to_string() }),
            };
            let commit = Commit {
                expected_version: r.version,
                request: t.request.clone(),
                vote: None,
                events: t.events,
                guard: Guard::OpenAt(now),
            };
            match self.stores.requests.commit(commit).await {
                Ok(_) => {
                    let after = self.dispatcher.deliver_written(t.request.clone(), None).await.unwrap_or(None);
                    return Ok(self.show(after.unwrap_or(t.request)));
                }
                Err(StoreError::Conflict(Conflict::Stale)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RequestError::Unavailable(StoreError::Contention("this request")))
    }

    /// Is `env` configured as sensitive (Approve asks for confirmation)?
    pub fn is_sensitive(&self, env: &Environment) -> bool {
        self.settings.sensitive_environments.contains(env)
    }

    pub fn notifier(&self) -> &Arc<dyn Notifier> {
        &self.dispatcher.notifier
    }
}

/// Row 41: the break-glass terms of the winning policy, when it allows one and the reason is long enough.
fn break_glass_terms<'p>(
    policy: &'p crate::domain::Policy,
    reason: Option<&str>,
) -> Result<&'p crate::domain::break_glass::BreakGlassPolicy, RequestError> {
    use crate::domain::break_glass::MIN_REASON_CHARS;
    let Some(terms) = &policy.break_glass else {
        return Err(RequestError::BreakGlassNotAllowed(format!(
            "policy {:?} does not allow break-glass (it has no break_glass section)",
            policy.name.as_str()
        )));
    };
    if reason.map_or(0, |r| r.chars().count()) < MIN_REASON_CHARS {
        return Err(RequestError::BreakGlassReason { min: MIN_REASON_CHARS });
    }
    Ok(terms)
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn body_hash_ignores_nothing_but_is_stable() {
        let mut a = NewRequest { action: "deploy".into(), environment: "production".into(), ..Default::default() };
        let h1 = body_hash(&a);
        assert_eq!(h1, body_hash(&a.clone()));
        a.reason = Some("x".into());
        assert_ne!(h1, body_hash(&a));
    }

    #[test]
    fn validation_names_the_field() {
        let mut i = NewRequest { action: "deploy".into(), environment: "production".into(), ..Default::default() };
        i.details = (0..21).map(|n| (format!("k{n}"), "v".to_string())).collect();
        assert_eq!(validate(&i).err().unwrap().field(), Some("details"));
        i.details.clear();
        i.details.insert("k".into(), "é".repeat(501));
        assert_eq!(validate(&i).err().unwrap().field(), Some("details"));
        i.details.insert("k".into(), "é".repeat(500));
        assert!(validate(&i).is_ok());
        i.action = "Deploy".into();
        assert_eq!(validate(&i).err().unwrap().field(), Some("action"));
    }
}
