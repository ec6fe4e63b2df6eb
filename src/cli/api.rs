//! The request API client the workload commands use: every call SigV4-signed for `execute-api` with
//! credentials from the standard AWS chain (`aws-config`), retried with backoff on 5xx and network errors.
//!
//! Failures map to the CLI's exit codes here, once: a 4xx is a refusal (exit 7, with the API's code and
//! message), a 5xx or network error that outlives the retries is "unavailable" (exit 8). It never prints or
//! returns credentials or signatures.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use countersign_core::error::error_chain;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, Url};
use serde_json::Value;

use super::{exit, ApiArgs, AwsArgs, CliError};
use countersign_core::domain::text::escape_hidden;
use countersign_core::domain::ArtifactDigest;

/// The SigV4 service name of API Gateway.
pub const SIGNING_SERVICE: &str = "execute-api";
/// The longest `wait` the API accepts on `GET /v1/requests/{id}`.
pub const MAX_WAIT_SECONDS: u64 = 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for an answer beyond the long-poll itself.
const ANSWER_MARGIN: Duration = Duration::from_secs(15);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(20);
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Loads the AWS configuration (credential chain, region, `AWS_ENDPOINT_URL`), with `--region` on top.
pub async fn aws_config(args: &AwsArgs) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(r) = &args.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    loader.load().await
}

/// The region in an API Gateway hostname (`ID.execute-api.REGION.amazonaws.com[.cn]`), if it is one.
pub fn region_of_execute_api_host(host: &str) -> Option<&str> {
    let mut labels = host.split('.');
    let (_id, service, region, domain) = (labels.next()?, labels.next()?, labels.next()?, labels.next()?);
    (service == SIGNING_SERVICE && domain == "amazonaws" && !region.is_empty()).then_some(region)
}

/// Plain `http://` would expose the signed request (and a session token) to the network: loopback only.
fn check_endpoint(endpoint: &str) -> Result<Url, CliError> {
    let usage = |m: String| CliError::new(exit::USAGE, m);
    let url = Url::parse(endpoint).map_err(|e| usage(format!("--endpoint {endpoint:?} is not a URL: {e}")))?;
    let host = url.host_str().unwrap_or("");
    match url.scheme() {
        "https" => {}
        "http" if countersign_lambda::config::is_loopback_host(host) => {}
        "http" => {
            return Err(usage(format!(
                "--endpoint {endpoint:?}: plain http is only allowed to localhost (the signed request would travel \
                 in clear text); use https"
            )))
        }
        s => return Err(usage(format!("--endpoint {endpoint:?}: scheme {s:?} is not http(s)"))),
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(usage(format!("--endpoint {endpoint:?}: give the stage URL only (no query, fragment or user)")));
    }
    Ok(url)
}

pub struct ApiClient {
    http: reqwest::Client,
    /// The stage URL without a trailing slash.
    base: String,
    region: String,
    credentials: SharedCredentialsProvider,
    retries: u32,
}

impl ApiClient {
    pub async fn new(args: &ApiArgs) -> Result<Self, CliError> {
        let url = check_endpoint(&args.endpoint)?;
        let conf = aws_config(&args.aws).await;
        let region = match (&args.aws.region, url.host_str().and_then(region_of_execute_api_host)) {
            (Some(r), _) => r.clone(),
            (None, Some(r)) => r.to_string(),
            (None, None) => conf.region().map(|r| r.as_ref().to_string()).ok_or_else(|| {
                CliError::new(exit::USAGE, "no AWS region to sign for: pass --region or set AWS_REGION")
            })?,
        };
        let credentials = conf.credentials_provider().ok_or_else(|| {
            CliError::new(exit::FAILED, "no AWS credentials provider is configured (the standard chain is empty)")
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // Never carry signed headers to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("countersign-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::failed("cannot build the HTTP client", &e))?;
        Ok(Self {
            http,
            base: url.as_str().trim_end_matches('/').to_string(),
            region,
            credentials,
            retries: args.retries,
        })
    }

    /// `POST /v1/requests`: the request object (201 created, or 200 for a repeated idempotency key).
    pub async fn create(&self, body: &Value) -> Result<Value, CliError> {
        let bytes = serde_json::to_vec(body).map_err(|e| CliError::failed("cannot encode the request", &e))?;
        self.call(Method::POST, "/v1/requests", Some(bytes), Duration::ZERO).await
    }

    /// `GET /v1/requests/{id}?wait=N`: answers when the request is no longer pending, or after N seconds.
    pub async fn get(&self, id: &str, wait_seconds: u64) -> Result<Value, CliError> {
        let wait = wait_seconds.min(MAX_WAIT_SECONDS);
        let path = if wait == 0 { format!("/v1/requests/{id}") } else { format!("/v1/requests/{id}?wait={wait}") };
        self.call(Method::GET, &path, None, Duration::from_secs(wait)).await
    }

    /// `POST /v1/requests/{id}/cancel`.
    pub async fn cancel(&self, id: &str) -> Result<Value, CliError> {
        self.call(Method::POST, &format!("/v1/requests/{id}/cancel"), None, Duration::ZERO).await
    }

    /// `POST /v1/requests/{id}/redeem`: `{"request", "receipt"}`.
    pub async fn redeem(&self, id: &str, artifact: Option<&ArtifactDigest>) -> Result<Value, CliError> {
        let body = match artifact {
            Some(a) => serde_json::json!({ "artifact": a.as_str() }),
            None => serde_json::json!({}),
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| CliError::failed("cannot encode the request", &e))?;
        self.call(Method::POST, &format!("/v1/requests/{id}/redeem"), Some(bytes), Duration::ZERO).await
    }

    /// `GET /v1/keys`: the JWKS.
    pub async fn keys(&self) -> Result<Value, CliError> {
        self.call(Method::GET, "/v1/keys", None, Duration::ZERO).await
    }

    /// `GET /v1/whoami`: the caller as the API identifies it, and the policies that match it.
    pub async fn whoami(&self) -> Result<Value, CliError> {
        self.call(Method::GET, "/v1/whoami", None, Duration::ZERO).await
    }

    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        long_poll: Duration,
    ) -> Result<Value, CliError> {
        let url = format!("{}{path_and_query}", self.base);
        let mut last_error = String::new();
        for attempt in 0..=self.retries {
            let retry_after = match self.attempt(&method, &url, body.as_deref(), long_poll).await? {
                Attempt::Done(v) => return Ok(v),
                Attempt::Retry { error, retry_after } => {
                    last_error = error;
                    retry_after
                }
            };
            if attempt == self.retries {
                break;
            }
            let backoff = backoff(attempt).max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
            tracing::debug!(attempt, ?backoff, error = %last_error, "retrying the request API");
            tokio::time::sleep(backoff).await;
        }
        Err(CliError::new(
            exit::UNAVAILABLE,
            format!(
                "the request API is unavailable ({} attempt(s)): {} {}: {last_error}",
                self.retries + 1,
                method,
                path_and_query
            ),
        ))
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        body: Option<&[u8]>,
        long_poll: Duration,
    ) -> Result<Attempt, CliError> {
        let headers = self.signed_headers(method, url, body, Signing::Proper).await?;
        let mut req = self.http.request(method.clone(), url).headers(headers).timeout(long_poll + ANSWER_MARGIN);
        if let Some(b) = body {
            req = req.body(b.to_vec());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Ok(Attempt::Retry { error: error_chain(&e), retry_after: None }),
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let error_type = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(':').next().unwrap_or(v).to_string());
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Ok(Attempt::Retry { error: error_chain(&e), retry_after: None }),
        };
        let json: Option<Value> =
            if bytes.len() <= MAX_ANSWER_BYTES { serde_json::from_slice(&bytes).ok() } else { None };
        if status.is_success() {
            return json.map(Attempt::Done).ok_or_else(|| {
                CliError::new(exit::FAILED, format!("{method} {url}: {status} with a body that is not JSON"))
            });
        }
        let retry = is_transient(status, json.as_ref());
        let (code, message) = error_of(json.as_ref(), error_type);
        if retry {
            return Ok(Attempt::Retry { error: format!("{status} {code}: {message}"), retry_after });
        }
        if status.is_client_error() {
            return Err(CliError::new(
                exit::REFUSED,
                format!("refused by the API: {} {code}: {message}", status.as_u16()),
            ));
        }
        Err(CliError::new(exit::FAILED, format!("{method} {url}: unexpected {status}")))
    }

    /// One call exactly as `how` says to sign it, never retried: its status and the API's error code, for
    /// `countersign drill` (which expects most of them to be refused).
    pub async fn probe(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        how: Signing,
    ) -> Result<Probed, CliError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url).timeout(ANSWER_MARGIN);
        req = match how {
            Signing::None if body.is_some() => req.header(CONTENT_TYPE, "application/json"),
            Signing::None => req,
            how => req.headers(self.signed_headers(&method, &url, body, how).await?),
        };
        if let Some(b) = body {
            req = req.body(b.to_vec());
        }
        let resp = req.send().await.map_err(|e| CliError::failed(&format!("{method} {path}"), &e))?;
        let status = resp.status().as_u16();
        let error_type = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(':').next().unwrap_or(v).to_string());
        let bytes = resp.bytes().await.unwrap_or_default();
        let json: Option<Value> =
            if bytes.len() <= MAX_ANSWER_BYTES { serde_json::from_slice(&bytes).ok() } else { None };
        let code = if (200..300).contains(&status) { None } else { Some(error_of(json.as_ref(), error_type).0) };
        Ok(Probed { status, code, body: json })
    }

    /// The SigV4 headers (`authorization`, `x-amz-date`, `x-amz-security-token`) plus `content-type`.
    async fn signed_headers(
        &self,
        method: &Method,
        url: &str,
        body: Option<&[u8]>,
        how: Signing,
    ) -> Result<HeaderMap, CliError> {
        let mut creds = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| CliError::failed("cannot load AWS credentials", &e))?;
        let mut time = SystemTime::now();
        match how {
            Signing::WrongSecret => {
                let wrong = format!("{}x", creds.secret_access_key());
                creds = aws_credential_types::Credentials::new(
                    creds.access_key_id(),
                    wrong,
                    creds.session_token().map(str::to_string),
                    None,
                    "countersign-drill",
                );
            }
            Signing::Age(age) => time -= age,
            Signing::Proper | Signing::None => {}
        }
        let identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SIGNING_SERVICE)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| CliError::failed("cannot sign the request", &e))?
            .into();
        // `host` is signed from the URL, as reqwest will send it; content-type is signed too.
        let mut to_sign: Vec<(&str, &str)> = Vec::new();
        if body.is_some() {
            to_sign.push(("content-type", "application/json"));
        }
        let signable = SignableRequest::new(
            method.as_str(),
            url,
            to_sign.iter().copied(),
            SignableBody::Bytes(body.unwrap_or(&[])),
        )
        .map_err(|e| CliError::failed("cannot sign the request", &e))?;
        let (instructions, _signature) =
            sign(signable, &params).map_err(|e| CliError::failed("cannot sign the request", &e))?.into_parts();
        let mut headers = HeaderMap::new();
        if body.is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        for (name, value) in instructions.headers() {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| CliError::failed("cannot sign the request", &e))?;
            let mut value =
                HeaderValue::from_str(value).map_err(|e| CliError::failed("cannot sign the request", &e))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(headers)
    }
}

/// How [`ApiClient::probe`] signs a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    Proper,
    /// No SigV4 headers at all.
    None,
    /// Signed with the right access key id and a wrong secret.
    WrongSecret,
    /// Signed correctly, as of this long ago (`X-Amz-Date` in the past).
    Age(Duration),
}

/// What a probe got back.
#[derive(Debug, Clone)]
pub struct Probed {
    pub status: u16,
    /// The API's error code (or API Gateway's `x-amzn-ErrorType`) when not 2xx.
    pub code: Option<String>,
    pub body: Option<Value>,
}

enum Attempt {
    Done(Value),
    Retry { error: String, retry_after: Option<Duration> },
}

/// Worth retrying: any 5xx, and a 429 from API Gateway's throttling (the API's own 429 `too_many_pending`
/// carries an `error` object and is a refusal: waiting a few seconds will not free a pending slot).
fn is_transient(status: reqwest::StatusCode, json: Option<&Value>) -> bool {
    status.is_server_error()
        || (status == reqwest::StatusCode::TOO_MANY_REQUESTS && json.and_then(|j| j.get("error")).is_none())
}

/// The API's `{"error": {"code", "message"}}`, or API Gateway's own `{"message"}` with `x-amzn-ErrorType`.
/// Printed as received, except that characters row 33 refuses are shown as `{U+202E}`: an endpoint that
/// is not ours must not reorder or hide text in a terminal or a CI log either.
fn error_of(json: Option<&Value>, error_type: Option<String>) -> (String, String) {
    let text =
        |v: Option<&Value>| v.and_then(Value::as_str).map(|s| escape_hidden(&s.chars().take(2000).collect::<String>()));
    let err = json.and_then(|j| j.get("error"));
    let code = text(err.and_then(|e| e.get("code"))).or(error_type).unwrap_or_else(|| "unknown_error".to_string());
    let message = text(err.and_then(|e| e.get("message")))
        .or_else(|| text(json.and_then(|j| j.get("message").or_else(|| j.get("Message")))))
        .unwrap_or_else(|| "(no message)".to_string());
    (code, message)
}

/// 0.5 s, 1 s, 2 s, 4 s, 8 s… with up to 25 % jitter so many pipelines do not retry in step.
fn backoff(attempt: u32) -> Duration {
    let base = FIRST_BACKOFF.saturating_mul(1 << attempt.min(6)).min(MAX_BACKOFF);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

/// The status code a status string maps to: final statuses have their own exit code.
pub fn exit_for_status(status: &str) -> u8 {
    match status {
        "approved" => exit::OK,
        "denied" => exit::DENIED,
        "expired" => exit::EXPIRED,
        "cancelled" => exit::CANCELLED,
        "pending" => exit::STILL_PENDING,
        _ => exit::FAILED,
    }
}

/// Whether a request status is final (anything but `pending`).
pub fn is_final(status: &str) -> bool {
    status != "pending"
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn execute_api_hosts_name_their_region() {
        assert_eq!(region_of_execute_api_host("abc123.execute-api.eu-west-1.amazonaws.com"), Some("eu-west-1"));
        assert_eq!(region_of_execute_api_host("abc.execute-api.cn-north-1.amazonaws.com.cn"), Some("cn-north-1"));
        assert_eq!(region_of_execute_api_host("approvals.example.com"), None);
        assert_eq!(region_of_execute_api_host("127.0.0.1"), None);
    }

    #[test]
    fn plain_http_is_refused_except_to_loopback() {
        assert!(check_endpoint("http://127.0.0.1:8080").is_ok());
        assert!(check_endpoint("http://localhost:8080/").is_ok());
        assert!(check_endpoint("https://abc.execute-api.eu-west-1.amazonaws.com/Prod").is_ok());
        for bad in
            ["http://api.example.com/Prod", "ftp://x", "not a url", "https://u:p@x.example.com", "https://x/?a=1"]
        {
            assert_eq!(check_endpoint(bad).unwrap_err().code, exit::USAGE, "{bad}");
        }
    }

    #[test]
    fn errors_come_from_the_api_or_from_api_gateway() {
        let api = json!({"error": {"code": "no_matching_policy", "message": "no policy allows it"}});
        assert_eq!(error_of(Some(&api), None), ("no_matching_policy".into(), "no policy allows it".into()));
        let gw = json!({"message": "The security token included in the request is invalid."});
        assert_eq!(
            error_of(Some(&gw), Some("UnrecognizedClientException".into())),
            ("UnrecognizedClientException".into(), "The security token included in the request is invalid.".into())
        );
        assert_eq!(error_of(None, None), ("unknown_error".into(), "(no message)".into()));
    }

    #[test]
    fn t33_a_refused_character_is_named_as_the_api_says_and_never_printed_raw() {
        let msg = "resource: contains U+202E (an invisible format character, category Cf) at character 9";
        let api = json!({"error": {"code": "invalid_request", "message": msg, "field": "resource"}});
        assert_eq!(error_of(Some(&api), None), ("invalid_request".into(), msg.into()));
        let hostile = json!({"error": {"code": "x\u{202E}", "message": "ok\u{2028}\u{200B}"}});
        assert_eq!(error_of(Some(&hostile), None), ("x{U+202E}".into(), "ok{U+2028}{U+200B}".into()));
    }

    #[test]
    fn gateway_throttling_and_5xx_are_retried_refusals_are_not() {
        use reqwest::StatusCode as S;
        let api_429 = json!({"error": {"code": "too_many_pending", "message": "m"}});
        let gw_429 = json!({"message": "Too Many Requests"});
        assert!(!is_transient(S::TOO_MANY_REQUESTS, Some(&api_429)));
        assert!(is_transient(S::TOO_MANY_REQUESTS, Some(&gw_429)));
        assert!(is_transient(S::SERVICE_UNAVAILABLE, Some(&json!({"error": {"code": "unavailable"}}))));
        assert!(is_transient(S::GATEWAY_TIMEOUT, None));
        assert!(!is_transient(S::FORBIDDEN, Some(&gw_429)));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) >= Duration::from_millis(500) && backoff(0) < Duration::from_millis(700));
        assert!(backoff(3) >= Duration::from_secs(4));
        assert!(backoff(30) <= MAX_BACKOFF + MAX_BACKOFF / 4);
    }

    #[test]
    fn final_statuses_have_their_exit_codes() {
        assert_eq!(exit_for_status("approved"), 0);
        assert_eq!(exit_for_status("denied"), 3);
        assert_eq!(exit_for_status("expired"), 4);
        assert_eq!(exit_for_status("cancelled"), 5);
        assert_eq!(exit_for_status("pending"), 6);
    }
}
