//! The Slack secrets in AWS Secrets Manager.
//!
//! Two secrets (row 28): the signing secret `{"signing_secret": "..."}`, which only the slack-interactions
//! function knows the id of, and the bot token `{"bot_token": "..."}`, which all three functions read. The
//! legacy combined secret `{"bot_token": "...", "signing_secret": "..."}` still works: it is then read once
//! for both.
//!
//! Signing secret: both rotation stages are read (`AWSCURRENT`, then `AWSPREVIOUS` when it exists), but
//! `AWSPREVIOUS` verifies only while the `AWSCURRENT` version is younger than the grace period (row 27),
//! measured from that version's `CreatedDate` against the caller's clock at every call — so a cached previous
//! secret stops verifying on time even when nothing is refetched. A leaked secret dies with the rotation.
//! After the grace period `AWSPREVIOUS` is handed out only as *retired* ([`SigningSecrets::retired`]): it
//! never verifies, it only lets the handler name a callback signed with it (`previous_secret_expired`).
//!
//! Values are cached in-process for a configurable TTL; a forced refresh (after a signature mismatch) happens
//! at most once per [`MIN_REFRESH_INTERVAL`]. Values are never logged; errors carry only the SDK's error kind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_secretsmanager::error::SdkError;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use serde::Deserialize;
use tokio::sync::Mutex;

use countersign_core::domain::Timestamp;
use countersign_core::ports::{SecretError, SecretString, SigningSecrets, SlackSecrets};

/// At most one forced refetch per this interval.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Longest wait for the secret (cache lock and both stages). The SDK has no read timeout by default, so a
/// Secrets Manager that accepts the connection and never answers would hold a callback past Slack's 3 s;
/// after this the callback answers 503 instead.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long after a rotation `AWSPREVIOUS` still verifies, by default (`COUNTERSIGN_SLACK_SECRET_GRACE_SECONDS`).
pub const DEFAULT_PREVIOUS_GRACE: Duration = Duration::from_secs(600);

const CURRENT: &str = "AWSCURRENT";
const PREVIOUS: &str = "AWSPREVIOUS";

#[derive(Deserialize)]
struct SecretJson {
    bot_token: Option<String>,
    signing_secret: Option<String>,
}

/// What a secret must hold: the JSON keys its readers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    SigningSecret,
    BotToken,
    Both,
}

impl Holds {
    fn shape(self) -> &'static str {
        match self {
            Holds::SigningSecret => "{\"signing_secret\"}",
            Holds::BotToken => "{\"bot_token\"}",
            Holds::Both => "{\"bot_token\", \"signing_secret\"}",
        }
    }
}

/// One stage of a secret, as read.
#[derive(Clone)]
struct Version {
    /// `CreatedDate` of the version; `None` if Secrets Manager did not say (then no grace is given).
    created: Option<Timestamp>,
    bot_token: Option<SecretString>,
    signing_secret: Option<SecretString>,
}

#[derive(Clone)]
struct Versions {
    current: Version,
    previous: Option<Version>,
}

/// One secret and its cache.
struct Secret {
    id: String,
    holds: Holds,
    cache: Mutex<Option<(Instant, Versions)>>,
}

impl Secret {
    fn new(id: String, holds: Holds) -> Arc<Self> {
        Arc::new(Self { id, holds, cache: Mutex::new(None) })
    }

    /// Only a secret that verifies callbacks needs its previous version.
    fn wants_previous(&self) -> bool {
        self.holds != Holds::BotToken
    }
}

pub struct SecretsManagerSlackSecrets {
    client: aws_sdk_secretsmanager::Client,
    /// `None`: this function was not told where the signing secret is, and never reads it.
    signing: Option<Arc<Secret>>,
    bot: Arc<Secret>,
    ttl: Duration,
    min_refresh: Duration,
    fetch_timeout: Duration,
    grace: Duration,
}

impl SecretsManagerSlackSecrets {
    /// The legacy combined secret `{"bot_token", "signing_secret"}` for both.
    pub fn new(client: aws_sdk_secretsmanager::Client, secret_id: String, ttl: Duration) -> Self {
        let both = Secret::new(secret_id, Holds::Both);
        Self::with_secrets(client, Some(both.clone()), both, ttl)
    }

    /// The signing secret (when this function verifies callbacks) and the bot token, each in its own secret;
    /// the same id for both means the combined secret, read once.
    pub fn split(
        client: aws_sdk_secretsmanager::Client,
        signing_secret_id: Option<String>,
        bot_token_secret_id: String,
        ttl: Duration,
    ) -> Self {
        match signing_secret_id {
            Some(s) if s == bot_token_secret_id => Self::new(client, s, ttl),
            Some(s) => Self::with_secrets(
                client,
                Some(Secret::new(s, Holds::SigningSecret)),
                Secret::new(bot_token_secret_id, Holds::BotToken),
                ttl,
            ),
            None => Self::with_secrets(client, None, Secret::new(bot_token_secret_id, Holds::BotToken), ttl),
        }
    }

    fn with_secrets(
        client: aws_sdk_secretsmanager::Client,
        signing: Option<Arc<Secret>>,
        bot: Arc<Secret>,
        ttl: Duration,
    ) -> Self {
        Self {
            client,
            signing,
            bot,
            ttl,
            min_refresh: MIN_REFRESH_INTERVAL,
            fetch_timeout: FETCH_TIMEOUT,
            grace: DEFAULT_PREVIOUS_GRACE,
        }
    }

    /// Changes the rate limit on forced refreshes (default [`MIN_REFRESH_INTERVAL`]).
    #[must_use]
    pub fn with_min_refresh_interval(mut self, interval: Duration) -> Self {
        self.min_refresh = interval;
        self
    }

    /// Changes the bound on one read of the secret (default [`FETCH_TIMEOUT`]).
    #[must_use]
    pub fn with_fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Changes how long `AWSPREVIOUS` verifies after the `AWSCURRENT` version was created (default
    /// [`DEFAULT_PREVIOUS_GRACE`]; zero: never).
    #[must_use]
    pub fn with_previous_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    async fn fetch_stage(&self, secret: &Secret, stage: &str) -> Result<Option<Version>, SecretError> {
        let out = self.client.get_secret_value().secret_id(&secret.id).version_stage(stage).send().await;
        let out = match out {
            Ok(o) => o,
            Err(SdkError::ServiceError(e)) if stage != CURRENT && is_not_found(e.err()) => return Ok(None),
            Err(e) => {
                tracing::warn!(stage, kind = %error_kind(&e), "cannot read a Slack secret");
                return Err(SecretError::Unavailable(Box::new(e)));
            }
        };
        let malformed = || SecretError::Malformed(format!("{stage} is not {} JSON", secret.holds.shape()));
        let Some(s) = out.secret_string() else {
            return Err(SecretError::Malformed(format!("{stage} has no SecretString")));
        };
        let j = serde_json::from_str::<SecretJson>(s).map_err(|_| malformed())?;
        let complete = match secret.holds {
            Holds::SigningSecret => j.signing_secret.is_some(),
            Holds::BotToken => j.bot_token.is_some(),
            Holds::Both => j.signing_secret.is_some() && j.bot_token.is_some(),
        };
        if !complete {
            return Err(malformed());
        }
        let created = out.created_date().and_then(|d| d.to_millis().ok()).map(Timestamp::from_unix_millis);
        // Keep only what this secret is read for: a bot-token reader given the legacy combined secret does
        // not hold on to the signing secret it happens to contain.
        let signing_secret = if secret.holds == Holds::BotToken { None } else { j.signing_secret };
        Ok(Some(Version {
            created,
            bot_token: j.bot_token.map(SecretString::new),
            signing_secret: signing_secret.map(SecretString::new),
        }))
    }

    async fn load(&self, secret: &Secret) -> Result<Versions, SecretError> {
        let (current, previous) = if secret.wants_previous() {
            // Both stages at once: one round trip of latency inside the fetch timeout, not two.
            tokio::try_join!(self.fetch_stage(secret, CURRENT), self.fetch_stage(secret, PREVIOUS))?
        } else {
            (self.fetch_stage(secret, CURRENT).await?, None)
        };
        let current = current.ok_or_else(|| SecretError::Malformed("no AWSCURRENT version".into()))?;
        Ok(Versions { current, previous })
    }

    /// The cached versions, or fresh ones; bounded by the fetch timeout (waiting for the lock included).
    async fn versions(&self, secret: &Secret, refresh: bool) -> Result<Versions, SecretError> {
        match tokio::time::timeout(self.fetch_timeout, self.versions_unbounded(secret, refresh)).await {
            Ok(v) => v,
            Err(_) => {
                tracing::warn!(timeout_ms = self.fetch_timeout.as_millis(), "reading a Slack secret timed out");
                Err(SecretError::Unavailable(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the secret store did not answer in time",
                ))))
            }
        }
    }

    async fn versions_unbounded(&self, secret: &Secret, refresh: bool) -> Result<Versions, SecretError> {
        let mut cache = secret.cache.lock().await;
        if let Some((at, v)) = cache.as_ref() {
            let age = at.elapsed();
            let fresh = age < self.ttl;
            let may_refresh = age >= self.min_refresh;
            if fresh && !(refresh && may_refresh) {
                return Ok(v.clone());
            }
        }
        let v = self.load(secret).await?;
        *cache = Some((Instant::now(), v.clone()));
        Ok(v)
    }

    /// Row 27: the previous version verifies only while the current one is younger than the grace period.
    /// A zero grace means never; a current version of unknown age gets no grace (fail closed); one dated in
    /// the future (clock skew) counts as new.
    fn previous_still_valid(&self, current: &Version, now: Timestamp) -> bool {
        if self.grace.is_zero() {
            return false;
        }
        let Some(created) = current.created else { return false };
        let grace_ms = i64::try_from(self.grace.as_millis()).unwrap_or(i64::MAX);
        now.unix_millis().saturating_sub(created.unix_millis()) < grace_ms
    }
}

fn is_not_found(e: &GetSecretValueError) -> bool {
    matches!(e, GetSecretValueError::ResourceNotFoundException(_))
}

fn error_kind<E, R>(e: &SdkError<E, R>) -> &'static str {
    match e {
        SdkError::ConstructionFailure(_) => "construction",
        SdkError::TimeoutError(_) => "timeout",
        SdkError::DispatchFailure(_) => "dispatch",
        SdkError::ResponseError(_) => "response",
        SdkError::ServiceError(_) => "service",
        _ => "other",
    }
}

#[async_trait]
impl SlackSecrets for SecretsManagerSlackSecrets {
    async fn signing_secrets(&self, refresh: bool, now: Timestamp) -> Result<Vec<(String, SecretString)>, SecretError> {
        Ok(self.verification_secrets(refresh, now).await?.accepted)
    }

    async fn verification_secrets(&self, refresh: bool, now: Timestamp) -> Result<SigningSecrets, SecretError> {
        let Some(secret) = &self.signing else {
            // request-api and sweeper: no id, no read, no permission (template.yaml).
            return Err(SecretError::NotConfigured);
        };
        let v = self.versions(secret, refresh).await?;
        let mut out = SigningSecrets::default();
        if let Some(s) = &v.current.signing_secret {
            out.accepted.push((CURRENT.to_string(), s.clone()));
        }
        if let Some(prev) = v.previous.as_ref().and_then(|p| p.signing_secret.as_ref()) {
            if self.previous_still_valid(&v.current, now) {
                out.accepted.push((PREVIOUS.to_string(), prev.clone()));
            } else {
                // Kept only so that a callback signed with it is named as such in the audit trail (a leaked
                // old secret); it never verifies.
                tracing::debug!("AWSPREVIOUS is past its grace period: not accepted");
                out.retired.push((PREVIOUS.to_string(), prev.clone()));
            }
        }
        Ok(out)
    }

    async fn bot_token(&self) -> Result<SecretString, SecretError> {
        // A stale bot token beats none: posting keeps working through a Secrets Manager outage (a revoked
        // token is refused by Slack anyway). Signing secrets never fall back like this.
        let v = match self.versions(&self.bot, false).await {
            Ok(v) => v,
            Err(e) => match self.bot.cache.lock().await.as_ref() {
                Some((_, v)) => v.clone(),
                None => return Err(e),
            },
        };
        v.current.bot_token.ok_or_else(|| SecretError::Malformed("AWSCURRENT has no bot_token".into()))
    }
}
