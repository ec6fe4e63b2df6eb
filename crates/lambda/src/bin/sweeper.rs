//! The scheduled sweeper Lambda (EventBridge, every minute): expiry, Slack relay, reminders, checkpoints.

use countersign_lambda::app::App;
use countersign_lambda::config::{Component, LambdaConfig};
use countersign_lambda::sweep::handle;
use countersign_lambda::telemetry::{init, LogFormat};
use lambda_http::lambda_runtime::{self, service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init(LogFormat::Json);
    let cfg = match LambdaConfig::from_env(Component::Sweeper) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let sweeper = App::for_sweeper(&cfg).await?.sweeper();
    lambda_runtime::run(service_fn(|_: LambdaEvent<serde_json::Value>| {
        let sweeper = sweeper.clone();
        async move { handle(&sweeper).await }
    }))
    .await
}
