//! The Slack interactivity Lambda: API Gateway (public, signature-verified) → axum router.

use countersign_lambda::app::App;
use countersign_lambda::config::{Component, LambdaConfig};
use countersign_lambda::telemetry::{init, LogFormat};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init(LogFormat::Json);
    let cfg = match LambdaConfig::from_env(Component::SlackInteractions) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let app = App::from_lambda_config(&cfg).await?;
    lambda_http::run(app.slack_interactions()).await
}
