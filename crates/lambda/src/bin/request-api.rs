//! The request API Lambda: API Gateway (REST, AWS_IAM) → axum router. Configuration: docs/configuration.md.

use countersign_lambda::app::App;
use countersign_lambda::config::{Component, LambdaConfig};
use countersign_lambda::telemetry::{init, LogFormat};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init(LogFormat::Json);
    let cfg = match LambdaConfig::from_env(Component::RequestApi) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let app = App::from_lambda_config(&cfg).await?;
    lambda_http::run(app.request_api()).await
}
