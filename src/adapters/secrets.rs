//! The Slack secret in AWS Secrets Manager: JSON `{"bot_token": "...", "signing_secret": "..."}`.
//!
//! Both rotation stages are read (`AWSCURRENT`, then `AWSPREVIOUS` when it exists) so a click signed with the
//! old signing secret during a rotation still verifies. Values are cached in-process for a configurable TTL;
//! a forced refresh (after a signature mismatch) happens at most once per [`MIN_REFRESH_INTERVAL`]. Values
//! are never logged; errors carry only the SDK's error kind.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_secretsmanager::error::SdkError;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::ports::{SecretError, SecretString, SlackSecrets};

/// At most one forced refetch per this interval.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Longest wait for the secret (cache lock and both stages). The SDK has no read timeout by default, so a
/// Secrets Manager that accepts the connection and never answers would hold a callback past Slack's 3 s;
/// after this the callback answers 503 instead.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
struct SecretJson {
    bot_token: String,
    signing_secret: String,
}

#[derive(Clone)]
struct Versions {
    /// (stage, bot token, signing secret), AWSCURRENT first.
    stages: Vec<(String, SecretString, SecretString)>,
}

pub struct SecretsManagerSlackSecrets {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    ttl: Duration,
    min_refresh: Duration,
    fetch_timeout: Duration,
    cache: Mutex<Option<(Instant, Versions)>>,
}

impl SecretsManagerSlackSecrets {
    pub fn new(client: aws_sdk_secretsmanager::Client, secret_id: String, ttl: Duration) -> Self {
        Self {
            client,
            secret_id,
            ttl,
            min_refresh: MIN_REFRESH_INTERVAL,
            fetch_timeout: FETCH_TIMEOUT,
            cache: Mutex::new(None),
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

    async fn fetch_stage(&self, stage: &str) -> Result<Option<SecretJson>, SecretError> {
        let out = self.client.get_secret_value().secret_id(&self.secret_id).version_stage(stage).send().await;
        let out = match out {
            Ok(o) => o,
            Err(SdkError::ServiceError(e)) if stage != "AWSCURRENT" && is_not_found(e.err()) => return Ok(None),
            Err(e) => {
                tracing::warn!(stage, kind = %error_kind(&e), "cannot read the Slack secret");
                return Err(SecretError::Unavailable(Box::new(e)));
            }
        };
        let Some(s) = out.secret_string() else {
            return Err(SecretError::Malformed(format!("{stage} has no SecretString")));
        };
        serde_json::from_str::<SecretJson>(s)
            .map(Some)
            .map_err(|_| SecretError::Malformed(format!("{stage} is not {{\"bot_token\", \"signing_secret\"}} JSON")))
    }

    async fn load(&self) -> Result<Versions, SecretError> {
        // Both stages at once: one round trip of latency inside the fetch timeout, not two.
        let (current, previous) = tokio::try_join!(self.fetch_stage("AWSCURRENT"), self.fetch_stage("AWSPREVIOUS"))?;
        let stages = [("AWSCURRENT", current), ("AWSPREVIOUS", previous)]
            .into_iter()
            .filter_map(|(stage, j)| {
                j.map(|j| (stage.to_string(), SecretString::new(j.bot_token), SecretString::new(j.signing_secret)))
            })
            .collect();
        Ok(Versions { stages })
    }

    /// The cached versions, or fresh ones; bounded by the fetch timeout (waiting for the lock included).
    async fn versions(&self, refresh: bool) -> Result<Versions, SecretError> {
        match tokio::time::timeout(self.fetch_timeout, self.versions_unbounded(refresh)).await {
            Ok(v) => v,
            Err(_) => {
                tracing::warn!(timeout_ms = self.fetch_timeout.as_millis(), "reading the Slack secret timed out");
                Err(SecretError::Unavailable(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the secret store did not answer in time",
                ))))
            }
        }
    }

    async fn versions_unbounded(&self, refresh: bool) -> Result<Versions, SecretError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, v)) = cache.as_ref() {
            let age = at.elapsed();
            let fresh = age < self.ttl;
            let may_refresh = age >= self.min_refresh;
            if fresh && !(refresh && may_refresh) {
                return Ok(v.clone());
            }
        }
        let v = self.load().await?;
        *cache = Some((Instant::now(), v.clone()));
        Ok(v)
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
    async fn signing_secrets(&self, refresh: bool) -> Result<Vec<(String, SecretString)>, SecretError> {
        let v = self.versions(refresh).await?;
        Ok(v.stages.into_iter().map(|(stage, _, s)| (stage, s)).collect())
    }

    async fn bot_token(&self) -> Result<SecretString, SecretError> {
        // A stale bot token beats none: posting keeps working through a Secrets Manager outage (a revoked
        // token is refused by Slack anyway). Signing secrets never fall back like this.
        let v = match self.versions(false).await {
            Ok(v) => v,
            Err(e) => match self.cache.lock().await.as_ref() {
                Some((_, v)) => v.clone(),
                None => return Err(e),
            },
        };
        v.stages
            .into_iter()
            .next()
            .map(|(_, t, _)| t)
            .ok_or_else(|| SecretError::Malformed("no AWSCURRENT version".into()))
    }
}
