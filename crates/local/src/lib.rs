//! Local mode (`countersign dev`): the whole product on one machine, one HTTP server.
//!
//! - `/v1/...`: the request API router, behind [`sigv4`]'s verifier ([`auth`]) standing in for API
//!   Gateway's `AWS_IAM` authorizer. Callers are the dev identities of the config.
//! - `/slack/interactions`: the Slack interactions router, unchanged (signature checked first, as deployed).
//! - `/slack/...`: the [`simulator`] (Slack Web API subset + a page in the browser), unless a real Slack is
//!   configured.
//! - `GET /healthz`: liveness, no signature needed.
//!
//! Every route answers `421 misdirected_request` unless the `Host` header names this server ([`host`]):
//! a web page that rebinds its DNS name to 127.0.0.1 cannot drive it.
//!
//! The embedded store lives under the data directory, so stopping and starting loses nothing; the sweeper
//! runs in-process on a timer; the configured policy file is applied at start (audited as policy changes).
//! Everything is wired through [`countersign_lambda::app::App`], the same graph the Lambda functions run.
//!
//! Development machinery: bind it to the loopback (the default). Anyone who reaches the port can act as any
//! simulated Slack user.

pub mod auth;
pub mod checkpoints;
pub mod config;
pub mod events;
pub mod host;
pub mod receipt_key;
pub mod secrets;
pub mod sigv4;
pub mod simulator;

use std::future::{Future, IntoFuture};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use countersign_core::domain::policy::{parse_policies, PolicyErrors, MAX_POLICY_FILE_BYTES};
use countersign_core::domain::receipt::DEFAULT_ISSUER;
use countersign_core::domain::{Actor, Policy};
use countersign_core::ports::{Clock, StoreError, Stores, SystemClock};
use countersign_core::service::policies::{self, render_plan};
use countersign_core::service::receipts::Receipts;
use countersign_core::service::requests::RequestSettings;
use countersign_core::service::ServiceError;
use countersign_lambda::app::{App, Parts};
use countersign_lambda::http::slack::SlackIdentity;
use countersign_slack::client::SlackError;
use countersign_sqlite::EmbeddedStore;

pub use config::DevConfig;
pub use secrets::StaticSlackSecrets;

use self::auth::AuthState;
use self::sigv4::Verifier;
use self::simulator::{SimError, SimSettings, Simulator};

/// Time each Slack API call may take (the simulator answers in microseconds; real Slack within 2 s).
pub const SLACK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long in-flight requests may run on after Ctrl-C.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot open the embedded store in {dir}")]
    Store {
        dir: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot read the policy file {path} (run from the repository root, or set `policies` in the config)")]
    PolicyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the policy file {path} is not valid:\n{errors}")]
    PolicyInvalid { path: String, errors: PolicyErrors },
    #[error("cannot load the policies into the store")]
    PolicyApply(#[source] ServiceError),
    #[error("cannot build the application")]
    App(#[source] SlackError),
    #[error("cannot start the Slack simulator")]
    Simulator(#[source] SimError),
    #[error("the server failed")]
    Io(#[source] std::io::Error),
    #[error("cannot build the events webhook client")]
    Events(#[source] reqwest::Error),
    #[error("cannot use the receipt key")]
    ReceiptKey(#[source] receipt_key::KeyError),
}

/// What start-up did, for the banner.
#[derive(Debug, Clone)]
pub struct StartSummary {
    /// `http://127.0.0.1:PORT`: the base URL clients use.
    pub origin: String,
    /// Where the product's Slack client posts.
    pub slack_api_base_url: String,
    /// `Some(url)` when the simulator page is served.
    pub simulator_url: Option<String>,
    pub policies_loaded: usize,
    /// The applied changes as `policy diff` shows them (empty when the store already matched).
    pub policy_changes: String,
}

/// A built server, ready to run.
pub struct LocalServer {
    router: Router,
    app: App,
    sweep_interval: Duration,
    pub summary: StartSummary,
}

/// `0.0.0.0:P` → `127.0.0.1:P` (and `[::]` → `[::1]`): the address this process uses to reach itself.
pub fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port()),
        _ => addr,
    }
}

fn read_policies(path: &Path) -> Result<Vec<Policy>, LocalError> {
    let shown = path.display().to_string();
    let file_err = |source| LocalError::PolicyFile { path: shown.clone(), source };
    let meta = std::fs::metadata(path).map_err(file_err)?;
    if meta.len() > MAX_POLICY_FILE_BYTES as u64 {
        let source = std::io::Error::new(std::io::ErrorKind::InvalidData, "larger than 4 MiB");
        return Err(LocalError::PolicyFile { path: shown, source });
    }
    let src = std::fs::read_to_string(path).map_err(file_err)?;
    parse_policies(&src).map_err(|errors| LocalError::PolicyInvalid { path: shown, errors })
}

/// Makes the store's policies match the file, one audited change per policy (as `policy apply` does).
async fn load_policies(
    stores: &Stores,
    path: &Path,
    now: countersign_core::domain::Timestamp,
) -> Result<String, LocalError> {
    let desired = read_policies(path)?;
    let current = stores.policies.list_policies().await.map_err(|e| LocalError::PolicyApply(e.into()))?;
    let changes = policies::plan(&current, &desired);
    if changes.is_empty() {
        return Ok(String::new());
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let actor = Actor::cli(&format!("local:{user}"));
    policies::apply(stores.policies.as_ref(), &changes, &actor, now).await.map_err(LocalError::PolicyApply)?;
    Ok(render_plan(&changes))
}

async fn healthz() -> Response {
    Json(serde_json::json!({ "ok": true })).into_response()
}

fn simulator_off(api: String) -> Response {
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>Countersign local mode</title>\
         <p>The Slack simulator is off: <code>slack.api_base_url</code> points Slack calls at <code>{}</code>.</p>",
        api.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
    );
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r
}

impl LocalServer {
    /// Opens the store, applies the policy file, builds the app, the verifier and the simulator for a server
    /// listening on `addr`.
    pub async fn build(config: &DevConfig, addr: SocketAddr) -> Result<Self, LocalError> {
        let origin = format!("http://{}", loopback(addr));
        let store = EmbeddedStore::open(&config.data_dir)
            .map_err(|source| LocalError::Store { dir: config.data_dir.display().to_string(), source })?;
        let stores = Stores::from_one(Arc::new(store));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let policy_changes = match &config.policies {
            Some(path) => load_policies(&stores, path, clock.now()).await?,
            None => String::new(),
        };
        let loaded = stores.policies.list_policies().await.map_err(|e| LocalError::PolicyApply(e.into()))?;

        let slack_api_base_url = config.slack.api_base_url.clone().unwrap_or_else(|| format!("{origin}/slack/api"));
        let app = App::build(Parts {
            stores,
            clock: clock.clone(),
            secrets: Arc::new(StaticSlackSecrets {
                bot_token: config.slack.bot_token.clone(),
                signing_secrets: vec![("local".into(), config.slack.signing_secret.clone())],
            }),
            slack_api_base_url: slack_api_base_url.clone(),
            slack_timeout: SLACK_TIMEOUT,
            settings: RequestSettings {
                allowed_accounts: config.allowed_accounts.clone(),
                allowed_org_id: None,
                sensitive_environments: config.sensitive_environments.clone(),
            },
            slack_identity: SlackIdentity {
                app_id: config.slack.app_id.clone(),
                team_id: config.slack.team_id.clone(),
            },
            receipts: Receipts {
                signer: Arc::new(
                    receipt_key::LocalKeySigner::load_or_generate(&config.data_dir).map_err(LocalError::ReceiptKey)?,
                ),
                issuer: DEFAULT_ISSUER.to_string(),
            },
        })
        .map_err(LocalError::App)?;
        let mut app = app;
        // The same checkpoint files as the S3 bucket, in the data directory (issue 17).
        app.checkpoints = Some(Arc::new(checkpoints::DirSink { root: config.data_dir.clone() }));
        // Decision events (issue 19): events.jsonl in the data directory, and the webhook when configured.
        let events =
            events::LocalEvents::new(&config.data_dir, &config.events, clock.clone()).map_err(LocalError::Events)?;
        app.events = Some(Arc::new(events));

        let verifier = Arc::new(Verifier::new(&config.region, config.identities.iter().cloned()));
        let api = app
            .request_api()
            .layer(axum::middleware::from_fn_with_state(AuthState { verifier, clock }, auth::require_sigv4));
        let mut router = Router::new().route("/healthz", get(healthz)).merge(app.slack_interactions());
        let simulator_url = if config.uses_simulator() {
            let (users, channels) = simulator::directory(&config.slack, &loaded);
            let sim = Simulator::new(SimSettings {
                bot_token: config.slack.bot_token.clone(),
                signing_secret: config.slack.signing_secret.clone(),
                team_id: config.simulator_team_id(),
                app_id: config.slack.app_id.clone(),
                users,
                groups: config.slack.groups.clone(),
                channels,
                interactions_url: format!("{origin}/slack/interactions"),
                origin: origin.clone(),
                state_file: Some(config.data_dir.join(simulator::STATE_FILE)),
                limits: simulator::SimLimits::default(),
            })
            .map_err(LocalError::Simulator)?;
            router = router.merge(sim.router());
            Some(format!("{origin}/slack/"))
        } else {
            let api = slack_api_base_url.clone();
            router = router.route("/slack/", get(move || async move { simulator_off(api) }));
            None
        };
        let router = router.fallback_service(api).layer(axum::middleware::from_fn_with_state(
            host::AllowedHosts::for_listener(addr),
            host::require_local_host,
        ));
        Ok(Self {
            router,
            app,
            sweep_interval: config.sweep_interval,
            summary: StartSummary {
                origin,
                slack_api_base_url,
                simulator_url,
                policies_loaded: loaded.len(),
                policy_changes,
            },
        })
    }

    /// Serves until `shutdown` resolves, with the sweeper running on its timer.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), LocalError> {
        let sweeper = self.app.sweeper();
        let every = self.sweep_interval;
        let sweeping = AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match sweeper.run_once().await {
                    Ok(r) if r != countersign_core::service::sweeper::SweepReport::default() => tracing::info!(
                        expired = r.expired,
                        relayed = r.relayed,
                        reminded = r.reminded,
                        published = r.published,
                        events_owed = r.events_owed,
                        errors = r.errors,
                        "sweeper ran"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "sweeper failed; will retry"),
                }
            }
        }));
        // In-flight requests get SHUTDOWN_GRACE to finish (a `?wait=20` long poll would otherwise hold Ctrl-C).
        let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
        let mut graceful = stopping.clone();
        let mut deadline = stopping;
        let server = axum::serve(listener, self.router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = graceful.wait_for(|s| *s).await;
            })
            .into_future();
        let trigger = async move {
            shutdown.await;
            let _ = stopping_tx.send(true);
            std::future::pending::<()>().await;
        };
        let cut_off = async move {
            let _ = deadline.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        let served = tokio::select! {
            r = server => r,
            () = trigger => Ok(()),
            () = cut_off => {
                tracing::warn!("requests still in flight after {} s were cut off", SHUTDOWN_GRACE.as_secs());
                Ok(())
            }
        };
        drop(sweeping);
        served.map_err(LocalError::Io)
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Serves `config` on `listener` until Ctrl-C or SIGTERM.
pub async fn serve(config: DevConfig, listener: TcpListener) -> Result<(), LocalError> {
    serve_until(config, listener, shutdown_signal()).await
}

/// Serves `config` on `listener` until `shutdown` resolves (tests stop and restart it this way).
pub async fn serve_until(
    config: DevConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), LocalError> {
    let addr = listener.local_addr().map_err(LocalError::Io)?;
    LocalServer::build(&config, addr).await?.run(listener, shutdown).await
}

/// The config file `countersign dev` uses when none is given: `DATA_DIR/dev.toml`.
pub fn default_config_path(data_dir: &Path) -> PathBuf {
    data_dir.join(config::CONFIG_FILE_NAME)
}
