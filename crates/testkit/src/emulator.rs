//! The AWS emulator (moto's server, started by `scripts/test`): the one place tests find it.
//!
//! The endpoint comes from `AWS_ENDPOINT_URL_<SERVICE>` or `AWS_ENDPOINT_URL`. It is parsed as a URL and must
//! be plain HTTP(S) to exactly `127.0.0.1`, `localhost` or `[::1]`, with no user info: tests never reach a
//! real account. When it is unset:
//! - under `CI=true` (which `scripts/test` exports) the test fails: the emulator tests can never skip there;
//! - otherwise the test returns early, and the process prints once why the emulator variants were skipped.

use std::io::Write;
use std::sync::Once;

use reqwest::Url;

/// A service the tests use on the emulator; its name picks `AWS_ENDPOINT_URL_<NAME>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Dynamodb,
    SecretsManager,
    Kms,
    /// S3 on moto needs path-style addressing (`force_path_style(true)`): no bucket subdomains on loopback.
    S3,
}

impl Service {
    fn variable(self) -> &'static str {
        match self {
            Service::Dynamodb => "AWS_ENDPOINT_URL_DYNAMODB",
            Service::SecretsManager => "AWS_ENDPOINT_URL_SECRETSMANAGER",
            Service::Kms => "AWS_ENDPOINT_URL_KMS",
            Service::S3 => "AWS_ENDPOINT_URL_S3",
        }
    }
}

const REGION: &str = "us-east-1";

static SKIPPED: Once = Once::new();

/// The emulator's endpoint for `service`, or `None` when none is configured outside CI.
pub fn endpoint(service: Service) -> Option<String> {
    let configured = std::env::var(service.variable())
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .ok()
        .filter(|e| !e.trim().is_empty());
    let Some(endpoint) = configured else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but AWS_ENDPOINT_URL is unset: the tests that need the AWS emulator must run against it \
             (scripts/test starts it)"
        );
        // Written to stderr directly, not with `eprintln!`: the test harness captures the macros' output of
        // passing tests, and this line must be seen (once per test process) in a plain `cargo test`.
        SKIPPED.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "\nnote: AWS_ENDPOINT_URL is unset, so the tests on the AWS emulator (every `dynamodb::` variant, \
                 Secrets Manager, the CLI on DynamoDB) pass without running here. Run scripts/test, which starts \
                 the emulator and sets CI=true so that they cannot skip.\n"
            );
        });
        return None;
    };
    if let Err(why) = check_loopback(&endpoint) {
        panic!("refusing to run tests against {endpoint:?}: {why}; only a local emulator is allowed");
    }
    Some(endpoint)
}

/// Ok when `endpoint` is an http(s) URL to exactly a loopback name, without user info.
pub fn check_loopback(endpoint: &str) -> Result<(), String> {
    let url = Url::parse(endpoint).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {} is not http or https", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a URL with user info".into());
    }
    match url.host_str() {
        Some("127.0.0.1" | "localhost" | "[::1]") => Ok(()),
        Some(h) => Err(format!("host {h} is not a loopback name")),
        None => Err("no host".into()),
    }
}

/// An SDK configuration for the emulator: its endpoint, dummy credentials, a fixed region.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(std::env::var("AWS_REGION").unwrap_or_else(|_| REGION.to_string())))
        .credentials_provider(aws_credential_types::Credentials::new("test", "test", None, None, "countersign-tests"))
        .load()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_accepted_parsed_not_prefix_matched() {
        for ok in ["http://127.0.0.1:5000", "http://localhost:1234/", "http://[::1]:9", "https://localhost"] {
            assert_eq!(check_loopback(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://127.0.0.1.attacker.example:5000",
            "http://localhost.attacker.example",
            "http://127.0.0.1@attacker.example",
            "http://user:pw@localhost:5000",
            "http://dynamodb.us-east-1.amazonaws.com",
            "ftp://localhost",
            "127.0.0.1:5000",
        ] {
            assert!(check_loopback(bad).is_err(), "{bad} was accepted");
        }
    }
}
