//! Fixed Slack secrets: what `countersign dev` (and tests that build the app by hand) use instead of Secrets
//! Manager. Lives here, not in core: the Lambda functions never link it.

use async_trait::async_trait;
use countersign_core::domain::Timestamp;
use countersign_core::ports::{SecretError, SecretString, SlackSecrets};

/// Fixed secrets (local mode, tests).
#[derive(Debug, Clone)]
pub struct StaticSlackSecrets {
    pub bot_token: SecretString,
    pub signing_secrets: Vec<(String, SecretString)>,
}

#[async_trait]
impl SlackSecrets for StaticSlackSecrets {
    async fn signing_secrets(
        &self,
        _refresh: bool,
        _now: Timestamp,
    ) -> Result<Vec<(String, SecretString)>, SecretError> {
        Ok(self.signing_secrets.clone())
    }
    async fn bot_token(&self) -> Result<SecretString, SecretError> {
        Ok(self.bot_token.clone())
    }
}
