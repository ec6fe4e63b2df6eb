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
    /// EventBridge (decision events, issue 19): moto delivers `PutEvents` to a rule's SQS targets.
    Events,
    Sqs,
}

impl Service {
    fn variable(self) -> &'static str {
        match self {
            Service::Dynamodb => "AWS_ENDPOINT_URL_DYNAMODB",
            Service::SecretsManager => "AWS_ENDPOINT_URL_SECRETSMANAGER",
            Service::Kms => "AWS_ENDPOINT_URL_KMS",
            Service::S3 => "AWS_ENDPOINT_URL_S3",
            Service::Events => "AWS_ENDPOINT_URL_EVENTBRIDGE",
            Service::Sqs => "AWS_ENDPOINT_URL_SQS",
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

/// The Python the tests run (`COUNTERSIGN_TEST_PYTHON`, else the repository's `.venv`, which `scripts/test`
/// creates). `None`, with a notice naming `skipping`, when it is missing outside CI; a failure under
/// `CI=true`, where nothing may skip.
pub fn test_python(skipping: &str) -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var("COUNTERSIGN_TEST_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    if python.exists() {
        return Some(python);
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but no Python at {python:?}");
    eprintln!("no Python at {python:?} (set COUNTERSIGN_TEST_PYTHON): skipping {skipping}");
    None
}

/// A moto server of a test's own (not the shared one), on a free 127.0.0.1 port; killed when dropped.
pub struct PrivateEmulator {
    child: std::process::Child,
    pub addr: std::net::SocketAddr,
}

impl Drop for PrivateEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrivateEmulator {
    /// Starts `script` (relative to the repository, e.g. `scripts/moto_serial.py`) and waits until it
    /// answers. `None` where [`test_python`] is.
    pub async fn start(script: &str, skipping: &str) -> Option<Self> {
        let python = test_python(skipping)?;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(&python)
            .arg(root.join(script))
            .args(["127.0.0.1", &port.to_string()])
            // The test process's AWS_* settings (scripts/test exports them for the shared emulator) make a
            // fresh emulator refuse our requests' signatures: start it with a clean environment.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::var_os("HOME").unwrap_or_default())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {python:?} {script}: {e}"));
        let emu = Self { child, addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)) };
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if http.get(format!("{}/moto-api/", emu.url())).send().await.is_ok() {
                return Some(emu);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("{script} did not start in 30 s");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
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
