//! The process's one TLS set-up and the AWS SDK's HTTP client on top of it.
//!
//! Every TLS client of a Lambda (Slack's Web API client and the AWS SDK's) used to load and parse the
//! system's root certificates on its own, and that parsing was most of a cold start (docs/performance.md,
//! "Cold start"). Here they are read and parsed once, into one `rustls` configuration: Slack's client takes
//! it through reqwest's public `tls_backend_preconfigured`, and the SDK gets [`SdkHttpClient`], an
//! implementation of the SDK's public `HttpClient` trait over reqwest with that same configuration. One
//! trust store, one connection pool implementation, one parse.
//!
//! The trust store is the system's, from the same files the SDK and reqwest read before
//! (`rustls-native-certs`' paths), decoded by [`crate::roots`] without the constant-time base64 that made it
//! slow. Certificates are always verified: nothing here can turn verification off or add a root.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

/// Why no TLS configuration could be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no usable root certificate was found in the system's trust store")]
    NoRoots,
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The system's root certificates, read and parsed once, in a client configuration with the aws-lc-rs
/// provider (what reqwest and the SDK used already) and rustls's safe default protocol versions.
pub fn system_tls() -> Result<rustls::ClientConfig, TlsError> {
    let found = crate::roots::load_system_roots();
    for e in &found.errors {
        tracing::warn!(error = %e, "cannot load a system root certificate");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (_, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::warn!(ignored, "system root certificates that do not parse were ignored");
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The AWS SDK's HTTP client: reqwest with the shared TLS configuration. One reqwest client per distinct
/// pair of SDK timeouts (the trait asks the client to apply them and to cache connectors), each with its
/// own pool; building one copies the configuration's `Arc`s, it parses nothing.
#[derive(Debug, Clone)]
pub struct SdkHttpClient {
    tls: Arc<rustls::ClientConfig>,
    connectors: Arc<Mutex<HashMap<Timeouts, SharedHttpConnector>>>,
}

/// The SDK's (connect, read) timeouts a connector applies.
type Timeouts = (Option<Duration>, Option<Duration>);

impl SdkHttpClient {
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        Self { tls, connectors: Arc::default() }
    }

    fn build(&self, connect: Option<Duration>, read: Option<Duration>) -> Result<reqwest::Client, reqwest::Error> {
        // As the SDK's own client: no proxy, no redirects (the SDK sees every answer), no idle limit change.
        let mut b = reqwest::Client::builder()
            .tls_backend_preconfigured(rustls::ClientConfig::clone(&self.tls))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true);
        if let Some(d) = connect {
            b = b.connect_timeout(d);
        }
        if let Some(d) = read {
            b = b.read_timeout(d);
        }
        b.build()
    }
}

impl HttpClient for SdkHttpClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        self.connector(settings)
    }
}

impl SdkHttpClient {
    fn connector(&self, settings: &HttpConnectorSettings) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        let mut cache = self.connectors.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .entry(key)
            .or_insert_with(|| {
                SharedHttpConnector::new(match self.build(key.0, key.1) {
                    Ok(client) => Connector::Ready(client),
                    // Only a TLS configuration reqwest does not take fails here: every call says so.
                    Err(e) => Connector::Failed(Arc::new(e.to_string())),
                })
            })
            .clone()
    }
}

#[derive(Debug)]
enum Connector {
    Ready(reqwest::Client),
    Failed(Arc<String>),
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = match self {
            Self::Ready(c) => c.clone(),
            Self::Failed(why) => {
                let why = why.clone();
                return HttpConnectorFuture::new(async move { Err(ConnectorError::other(why.as_str().into(), None)) });
            }
        };
        HttpConnectorFuture::new(async move {
            let request = request.try_into_http1x().map_err(|e| ConnectorError::user(e.into()))?;
            let (parts, body) = request.into_parts();
            let body = match body.bytes() {
                Some(bytes) => reqwest::Body::from(bytes.to_vec()),
                None => reqwest::Body::wrap(body),
            };
            let request = reqwest::Request::try_from(http::Request::from_parts(parts, body))
                .map_err(|e| ConnectorError::user(e.into()))?;
            let response = client.execute(request).await.map_err(connector_error)?;
            let response = http::Response::<reqwest::Body>::from(response).map(SdkBody::from_body_1_x);
            HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// The SDK retries timeouts and I/O errors as transient: tell them apart as its own client does.
fn connector_error(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::timeout(e.into())
    } else if e.is_connect() || e.is_request() || e.is_body() {
        ConnectorError::io(e.into())
    } else {
        ConnectorError::other(e.into(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_system_trust_store_is_parsed_and_reqwest_takes_the_configuration() {
        let tls = system_tls().expect("this machine has system root certificates");
        countersign_slack::client::SlackClient::http_client_with_tls(tls).expect("reqwest accepts it");
        // Anything but a rustls configuration of reqwest's version is refused when the client is built.
        assert!(countersign_slack::client::SlackClient::http_client_with_tls(42u8).is_err());
    }

    #[tokio::test]
    async fn sdk_requests_and_answers_go_through_unchanged_and_connectors_are_cached_per_timeouts() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&seen).contains("{\"q\":1}") {
                let n = sock.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            sock.write_all(b"HTTP/1.1 418 I'm a teapot\r\ncontent-length: 5\r\nx-amz-id: 7\r\n\r\nshort")
                .await
                .unwrap();
            String::from_utf8_lossy(&seen).into_owned()
        });
        let client = SdkHttpClient::new(Arc::new(system_tls().unwrap()));
        let settings = HttpConnectorSettings::builder().connect_timeout(Duration::from_secs(2)).build();
        let connector = client.connector(&settings);
        let mut request = HttpRequest::new(SdkBody::from("{\"q\":1}"));
        request.set_uri(format!("http://{addr}/x?y=1")).unwrap();
        request.set_method("POST").unwrap();
        request.headers_mut().insert("x-amz-target", "DynamoDB_20120810.Query");
        let response = connector.call(request).await.unwrap();
        assert_eq!(response.status().as_u16(), 418);
        assert_eq!(response.headers().get("x-amz-id"), Some("7"));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"short");
        let seen = server.await.unwrap();
        assert!(seen.starts_with("POST /x?y=1 HTTP/1.1\r\n"), "{seen}");
        assert!(seen.to_ascii_lowercase().contains("x-amz-target: dynamodb_20120810.query"), "{seen}");
        assert_eq!(client.connectors.lock().unwrap().len(), 1);
        client.connector(&settings);
        assert_eq!(client.connectors.lock().unwrap().len(), 1, "same timeouts, same connector");
        client.connector(&HttpConnectorSettings::builder().read_timeout(Duration::from_secs(1)).build());
        assert_eq!(client.connectors.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_io_error_the_sdk_retries() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = SdkHttpClient::new(Arc::new(system_tls().unwrap()));
        let connector = client.connector(&HttpConnectorSettings::builder().build());
        let mut request = HttpRequest::new(SdkBody::empty());
        request.set_uri(format!("http://127.0.0.1:{port}/")).unwrap();
        let e = connector.call(request).await.unwrap_err();
        assert!(e.is_io(), "{e:?}");
    }

    /// The SDK as the Lambdas build it (`App::from_lambda_config`): this client, the emulator's endpoint.
    /// `None` without an emulator, except under `CI=true`, where nothing may skip.
    async fn lambda_sdk_config() -> Option<aws_config::SdkConfig> {
        let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") else {
            assert!(std::env::var("CI").is_err(), "CI=true: AWS_ENDPOINT_URL (the emulator) must be set");
            eprintln!("skipping: no AWS_ENDPOINT_URL (run through scripts/test)");
            return None;
        };
        let http = SdkHttpClient::new(Arc::new(system_tls().unwrap()));
        Some(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .http_client(aws_smithy_runtime_api::client::http::SharedHttpClient::new(http))
                .endpoint_url(endpoint)
                .region(aws_config::Region::new("us-east-1"))
                .load()
                .await,
        )
    }

    #[tokio::test]
    async fn dynamodb_s3_and_secrets_manager_work_through_the_lambdas_http_client_bodies_streamed_both_ways() {
        let Some(cfg) = lambda_sdk_config().await else { return };
        let tag = format!("cs-transport-{}", std::process::id());
        // S3: a 3 MiB object sent from a file (a streaming body, not bytes in memory) and read back.
        let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&cfg).force_path_style(true).build());
        s3.create_bucket().bucket(&tag).send().await.unwrap();
        let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &data).unwrap();
        let body = aws_sdk_s3::primitives::ByteStream::from_path(file.path()).await.unwrap();
        s3.put_object().bucket(&tag).key("big").body(body).send().await.unwrap();
        let got = s3.get_object().bucket(&tag).key("big").send().await.unwrap();
        let got = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(got.len(), data.len());
        assert!(got[..] == data[..], "the object comes back byte for byte");
        // DynamoDB and Secrets Manager, as the request API and the Slack handler call them.
        let ddb = aws_sdk_dynamodb::Client::new(&cfg);
        let tables = ddb.list_tables().send().await.unwrap();
        assert!(tables.table_names().iter().all(|t| !t.is_empty()));
        let sm = aws_sdk_secretsmanager::Client::new(&cfg);
        sm.create_secret().name(&tag).secret_string("{\"signing_secret\":\"s\"}").send().await.unwrap();
        let v = sm.get_secret_value().secret_id(&tag).send().await.unwrap();
        assert_eq!(v.secret_string(), Some("{\"signing_secret\":\"s\"}"));
    }

    #[tokio::test]
    async fn the_sdk_retries_a_500_and_a_dropped_connection_through_the_lambdas_http_client() {
        // A loopback DynamoDB: the first connection is dropped unanswered, the second gets a 500, the third
        // the answer. The SDK's standard retry policy (3 attempts) must get through.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for attempt in 0..3 {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !String::from_utf8_lossy(&seen).contains("\r\n\r\n{}") {
                    let n = sock.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                let (status, body) = match attempt {
                    0 => continue, // dropped: the socket closes without an answer
                    1 => (
                        "500 Internal Server Error",
                        r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"x"}"#,
                    ),
                    _ => ("200 OK", r#"{"TableNames":["retried"]}"#),
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                sock.write_all(answer.as_bytes()).await.unwrap();
                sock.shutdown().await.ok();
            }
        });
        let http = SdkHttpClient::new(Arc::new(system_tls().unwrap()));
        let cfg = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(aws_smithy_runtime_api::client::http::SharedHttpClient::new(http))
            .endpoint_url(format!("http://{addr}"))
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("a", "b", None, None, "test"))
            .retry_config(aws_config::retry::RetryConfig::standard().with_initial_backoff(Duration::from_millis(1)))
            .load()
            .await;
        let out = aws_sdk_dynamodb::Client::new(&cfg).list_tables().send().await.expect("retried to success");
        assert_eq!(out.table_names(), ["retried".to_string()]);
        server.await.unwrap();
    }
}
