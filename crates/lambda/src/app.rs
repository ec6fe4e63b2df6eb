//! Wiring: builds the services and routers from their parts, once per execution environment. The Lambda
//! `main`s, local mode and the tests all go through here, so they run the same graph.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::config::LambdaConfig;
use crate::http::slack::{SlackIdentity, SlackState};
use crate::transport::{SdkHttpClient, TlsError};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use countersign_aws::dynamodb::{DynamoStore, TableNames};
use countersign_aws::secrets::SecretsManagerSlackSecrets;
use countersign_core::domain::Environment;
use countersign_core::ports::{
    CheckpointSink, Clock, EventPublisher, Notifier, Signer, SlackSecrets, Stores, SystemClock,
};
use countersign_core::service::checkpoints::Checkpointer;
use countersign_core::service::events::EventRelay;
use countersign_core::service::notify::Dispatcher;
use countersign_core::service::receipts::{NoReceiptKey, Receipts};
use countersign_core::service::refusals::RefusalBudget;
use countersign_core::service::requests::{RequestService, RequestSettings};
use countersign_core::service::sweeper::Sweeper;
use countersign_core::service::votes::VoteService;
use countersign_slack::client::{SlackClient, SlackError};
use countersign_slack::notifier::{SecretsToken, SlackNotifier};

/// Everything the routers and the sweeper need.
#[derive(Clone)]
pub struct App {
    pub stores: Stores,
    pub clock: Arc<dyn Clock>,
    pub secrets: Arc<dyn SlackSecrets>,
    pub slack: Arc<SlackClient>,
    pub notifier: Arc<dyn Notifier>,
    pub settings: Arc<RequestSettings>,
    pub slack_identity: Arc<SlackIdentity>,
    /// Time the Slack handler may spend on message updates and replies inside Slack's 3 s.
    pub slack_budget: Duration,
    /// The one audit budget of this process for refused, unauthenticated callbacks.
    pub refusals: Arc<RefusalBudget>,
    pub receipts: Receipts,
    /// Where the sweeper writes audit checkpoints (issue 17); `None`: it writes none.
    pub checkpoints: Option<Arc<dyn CheckpointSink>>,
    /// Where the sweeper publishes decision events (issue 19); `None`: it deletes the outbox unpublished.
    pub events: Option<Arc<dyn EventPublisher>>,
}

/// Why a Lambda could not build its [`App`]: it then fails its init, and Lambda retries it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot build the Slack client: {0}")]
    Slack(#[from] SlackError),
}

/// The parts an [`App`] is built from.
pub struct Parts {
    pub stores: Stores,
    pub clock: Arc<dyn Clock>,
    pub secrets: Arc<dyn SlackSecrets>,
    pub slack_api_base_url: String,
    pub slack_timeout: Duration,
    pub settings: RequestSettings,
    pub slack_identity: SlackIdentity,
    /// The receipt signer (KMS in AWS, a local key in local mode) and issuer.
    pub receipts: Receipts,
}

/// The Slack secrets a function reads, from its configuration: request-api and sweeper get no signing
/// secret id, so they can never fetch it (row 28).
pub fn slack_secrets(client: aws_sdk_secretsmanager::Client, cfg: &LambdaConfig) -> SecretsManagerSlackSecrets {
    SecretsManagerSlackSecrets::split(
        client,
        cfg.slack_secrets.signing_secret.clone(),
        cfg.slack_secrets.bot_token.clone(),
        cfg.secret_cache_ttl,
    )
    .with_previous_grace(cfg.slack_secret_grace)
}

/// Starts the first event's reads at init, while the rest of init runs and the runtime polls for the event
/// (docs/performance.md, "Cold start"): the end of the audit chain, which every function's first answer is
/// appended after (refusals included), and the signing secret where callbacks are verified (request-api and
/// the sweeper have none configured: no call). Each fills the cache its first use locks, so nothing is read
/// twice; a failure is only logged, and the first use reads again and answers for it.
fn warm_up(store: &Arc<DynamoStore>, secrets: &Arc<SecretsManagerSlackSecrets>) {
    let store = store.clone();
    tokio::spawn(async move {
        if let Err(e) = store.warm_chain_head().await {
            tracing::warn!(error = %e, "cannot read the end of the audit chain at start; the first append will");
        }
    });
    let secrets = secrets.clone();
    tokio::spawn(async move {
        match secrets.verification_secrets(false, SystemClock.now()).await {
            Ok(_) | Err(countersign_core::ports::SecretError::NotConfigured) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the signing secret at start; the first callback will"),
        }
    });
}

/// The receipt signer of a function, from its configuration: the KMS key when it has one. Nothing is
/// called here: the key is read (and checked) at the first redemption or JWKS request.
pub fn receipts(aws: &aws_config::SdkConfig, cfg: &LambdaConfig) -> Receipts {
    let signer: Arc<dyn Signer> = match &cfg.receipt_key_id {
        Some(key_id) => Arc::new(countersign_aws::kms::KmsSigner::new(
            aws_sdk_kms::Client::new(aws),
            key_id.clone(),
            cfg.receipt_previous_key_ids.clone(),
        )),
        None => Arc::new(NoReceiptKey),
    };
    Receipts { signer, issuer: cfg.receipt_issuer.clone() }
}

impl App {
    pub fn build(p: Parts) -> Result<Self, SlackError> {
        Self::build_with_http(p, SlackClient::http_client()?)
    }

    /// [`Self::build`] with the Slack client's HTTP client already built.
    fn build_with_http(p: Parts, http: reqwest::Client) -> Result<Self, SlackError> {
        let client = SlackClient::with_http(Arc::new(SecretsToken(p.secrets.clone())), http)?
            .with_base_url(&p.slack_api_base_url)?
            .with_timeout(p.slack_timeout);
        let client = Arc::new(client);
        let notifier: Arc<dyn Notifier> = Arc::new(
            SlackNotifier::new(client.clone()).with_app_id(&p.slack_identity.app_id).with_clock(p.clock.clone()),
        );
        Ok(Self {
            stores: p.stores,
            clock: p.clock,
            secrets: p.secrets,
            slack: client,
            notifier,
            settings: Arc::new(p.settings),
            slack_identity: Arc::new(p.slack_identity),
            slack_budget: p.slack_timeout.min(Duration::from_millis(1500)),
            refusals: Arc::new(RefusalBudget::default()),
            receipts: p.receipts,
            checkpoints: None,
            events: None,
        })
    }

    /// The Lambda graph: DynamoDB, Secrets Manager, Slack's Web API, the system clock (request-api,
    /// slack-interactions). It never builds an S3 or EventBridge client, so those binaries do not link them.
    pub async fn from_lambda_config(cfg: &LambdaConfig) -> Result<Self, StartError> {
        Ok(Self::lambda_graph(cfg).await?.0)
    }

    /// [`Self::from_lambda_config`] and what only the sweeper uses: the checkpoint bucket (S3) and the
    /// decision-event bus (EventBridge), when configured.
    pub async fn for_sweeper(cfg: &LambdaConfig) -> Result<Self, StartError> {
        let (mut app, aws) = Self::lambda_graph(cfg).await?;
        if let Some(bucket) = &cfg.checkpoint_bucket {
            let sink = countersign_aws::checkpoints::S3Sink::new(aws_sdk_s3::Client::new(&aws), bucket.clone(), "");
            app.checkpoints = Some(Arc::new(sink));
        }
        if let Some(bus) = &cfg.event_bus {
            let client = aws_sdk_eventbridge::Client::new(&aws);
            app.events = Some(Arc::new(countersign_aws::events::EventBridgePublisher { client, bus: bus.clone() }));
        }
        Ok(app)
    }

    async fn lambda_graph(cfg: &LambdaConfig) -> Result<(Self, aws_config::SdkConfig), StartError> {
        // The system's root certificates are read and parsed once, for Slack's client and the SDK's: each
        // parsing them on its own was about half of a cold start (crate::transport, docs/performance.md).
        let tls = Arc::new(crate::transport::system_tls()?);
        let slack_http = SlackClient::http_client_with_tls(rustls::ClientConfig::clone(&tls))?;
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(SharedHttpClient::new(SdkHttpClient::new(tls)))
            .load()
            .await;
        let tables = TableNames {
            policies: cfg.tables.policies.clone(),
            requests: cfg.tables.requests.clone(),
            audit: cfg.tables.audit.clone(),
        };
        let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), tables));
        for w in &cfg.warnings {
            tracing::warn!("{w}");
        }
        let secrets = Arc::new(slack_secrets(aws_sdk_secretsmanager::Client::new(&aws), cfg));
        warm_up(&store, &secrets);
        let parts = Parts {
            stores: Stores::from_one(store),
            clock: Arc::new(SystemClock),
            secrets,
            slack_api_base_url: cfg.slack_api_base_url.clone(),
            slack_timeout: cfg.slack_timeout,
            settings: RequestSettings {
                allowed_accounts: cfg.allowed_accounts.clone(),
                allowed_org_id: cfg.allowed_org_id.clone(),
                sensitive_environments: cfg.sensitive_environments.clone(),
            },
            slack_identity: SlackIdentity {
                app_id: cfg.slack_app_id.clone().unwrap_or_default(),
                team_id: cfg.slack_team_id.clone().unwrap_or_default(),
            },
            receipts: receipts(&aws, cfg),
        };
        Ok((Self::build_with_http(parts, slack_http)?, aws))
    }

    pub fn dispatcher(&self) -> Dispatcher {
        let sensitive: BTreeSet<Environment> = self.settings.sensitive_environments.clone();
        Dispatcher {
            stores: self.stores.clone(),
            notifier: self.notifier.clone(),
            clock: self.clock.clone(),
            sensitive_environments: Arc::new(sensitive),
        }
    }

    pub fn request_service(&self) -> RequestService {
        RequestService {
            stores: self.stores.clone(),
            clock: self.clock.clone(),
            dispatcher: self.dispatcher(),
            settings: self.settings.clone(),
            receipts: self.receipts.clone(),
        }
    }

    pub fn vote_service(&self) -> VoteService {
        VoteService {
            stores: self.stores.clone(),
            clock: self.clock.clone(),
            dispatcher: self.dispatcher(),
            update_budget: self.slack_budget,
            deadline: None,
            workspaces: Arc::new(self.slack_identity.workspaces()),
            refusals: self.refusals.clone(),
        }
    }

    pub fn sweeper(&self) -> Sweeper {
        let checkpoints = self.checkpoints.clone().map(|sink| Checkpointer {
            stores: self.stores.clone(),
            sink,
            receipts: self.receipts.clone(),
            clock: self.clock.clone(),
        });
        let events = Some(EventRelay { outbox: self.stores.outbox.clone(), publisher: self.events.clone() });
        Sweeper {
            stores: self.stores.clone(),
            clock: self.clock.clone(),
            dispatcher: self.dispatcher(),
            checkpoints,
            events,
        }
    }

    /// The request API router (`/v1/...`, `/healthz`).
    pub fn request_api(&self) -> Router {
        crate::http::api::router(self.request_service())
    }

    /// The Slack interactions router (`/slack/interactions`).
    pub fn slack_interactions(&self) -> Router {
        crate::http::slack::router(SlackState {
            votes: self.vote_service(),
            secrets: self.secrets.clone(),
            client: self.slack.clone(),
            clock: self.clock.clone(),
            identity: self.slack_identity.clone(),
            reply_budget: self.slack_budget,
        })
    }
}
