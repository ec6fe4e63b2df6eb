//! Local mode must not be reachable from a web page (threat row 39), against the real `countersign dev`
//! process: requests whose `Host` is not the server's own (DNS rebinding) are `421 misdirected_request`
//! on every route, the simulator keeps its Origin check, and a Slack API base URL that only looks like a
//! loopback URL stops start-up with a clear line.
//!
//! Requests are written by hand on a TCP socket so the `Host` header is exactly what a rebinding browser
//! would send (or missing).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::local_mode::{config_text, data_dir, ALICE};
use countersign_testkit::cli::spawn_dev;

/// A running `countersign dev --config DIR/dev.toml` on a port the system chose.
struct DevProcess {
    child: tokio::process::Child,
    addr: SocketAddr,
    out: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl DevProcess {
    async fn start(dir: &Path, config: &str) -> Self {
        let path = dir.join("dev.toml");
        std::fs::write(&path, config).unwrap();
        let (out, log) = (dir.join("dev.out"), dir.join("dev.log"));
        let child = spawn_dev(&path, &out, &log);
        let mut dev = Self { child, addr: "127.0.0.1:1".parse().unwrap(), out, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let banner = std::fs::read_to_string(&dev.out).unwrap_or_default();
            if let Some(rest) = banner.split("Countersign local mode is running on http://").nth(1) {
                dev.addr = rest.lines().next().unwrap().trim().parse().unwrap();
                break;
            }
            if let Ok(Some(status)) = dev.child.try_wait() {
                panic!("countersign dev exited ({status}): {}", dev.logs());
            }
            assert!(Instant::now() < deadline, "no banner within 60 s: {}", dev.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        dev
    }

    fn logs(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("--- stdout\n{}--- stderr\n{}", read(&self.out), read(&self.log))
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Sends `METHOD PATH` with exactly these header lines (no Host unless given) and a JSON body.
    async fn raw(&self, method: &str, path: &str, headers: &[String], body: &str) -> (u16, Value) {
        raw_http(self.addr, method, path, headers, body).await
    }
}

async fn raw_http(addr: SocketAddr, method: &str, path: &str, headers: &[String], body: &str) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let version = if headers.iter().any(|h| h.to_ascii_lowercase().starts_with("host:")) { "1.1" } else { "1.0" };
    let mut req = format!("{method} {path} HTTP/{version}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(&format!("{h}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.expect("answered").unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status: {text}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// One request per kind of route: health, request API, Slack interactions, simulator page, its JSON API
/// (state and click), the simulated Slack Web API.
const ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/healthz", ""),
    ("POST", "/v1/requests", r#"{"action":"deploy","environment":"production"}"#),
    ("GET", "/v1/requests/req_01JDQ3ZP3M8X9Y7K2W5T4R6V0A", ""),
    ("POST", "/slack/interactions", "{}"),
    ("GET", "/slack/", ""),
    ("GET", "/slack/sim/state?user=UALICE0001", ""),
    ("POST", "/slack/sim/click", "{}"),
    ("POST", "/slack/api/chat.postMessage", "{}"),
];

fn assert_misdirected(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 421, "{what}: {body}");
    assert_eq!(body["error"]["code"], "misdirected_request", "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t39_a_foreign_host_is_misdirected_on_every_route() {
    let dir = data_dir();
    let dev = DevProcess::start(dir.path(), &config_text(dir.path())).await;
    let port = dev.port();
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1:{port}.evil.example"),
        "127.0.0.1".to_string(),
        format!("localhost:{}", port.wrapping_add(1)),
    ] {
        for (method, path, body) in ROUTES {
            let origin = format!("Origin: http://{host}");
            let (status, j) = dev.raw(method, path, &[format!("Host: {host}"), origin], body).await;
            assert_misdirected(status, &j, &format!("{method} {path} Host: {host}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t39_a_request_without_a_host_or_with_two_is_misdirected() {
    let dir = data_dir();
    let dev = DevProcess::start(dir.path(), &config_text(dir.path())).await;
    let port = dev.port();
    for (method, path, body) in ROUTES {
        let (status, j) = dev.raw(method, path, &[], body).await;
        assert_misdirected(status, &j, &format!("{method} {path} without Host"));
    }
    let two = [format!("Host: 127.0.0.1:{port}"), "Host: evil.example".to_string()];
    let (status, j) = dev.raw("GET", "/healthz", &two, "").await;
    assert_misdirected(status, &j, "two Host headers");
    // An absolute-form target naming another host does not get past a good Host header either.
    let (status, j) =
        dev.raw("GET", &format!("http://evil.example:{port}/healthz"), &[format!("Host: 127.0.0.1:{port}")], "").await;
    assert_misdirected(status, &j, "absolute-form target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t39_the_listen_address_and_the_loopback_names_are_answered() {
    let dir = data_dir();
    let dev = DevProcess::start(dir.path(), &config_text(dir.path())).await;
    let port = dev.port();
    for host in
        [dev.addr.to_string(), format!("localhost:{port}"), format!("LocalHost:{port}"), format!("[::1]:{port}")]
    {
        let h = format!("Host: {host}");
        let (status, j) = dev.raw("GET", "/healthz", std::slice::from_ref(&h), "").await;
        assert_eq!((status, &j["ok"]), (200, &Value::Bool(true)), "Host: {host}");
        let (status, j) = dev.raw("GET", &format!("/slack/sim/state?user={ALICE}"), std::slice::from_ref(&h), "").await;
        assert_eq!(status, 200, "Host: {host}: {j}");
        // Past the Host check, each route answers as before: an unsigned API call is API Gateway's 403.
        let (status, _) = dev.raw("POST", "/v1/requests", &[h], "{}").await;
        assert_eq!(status, 403, "Host: {host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t39_the_simulator_keeps_refusing_cross_origin_posts_from_an_allowed_host() {
    let dir = data_dir();
    let dev = DevProcess::start(dir.path(), &config_text(dir.path())).await;
    let host = format!("Host: 127.0.0.1:{}", dev.port());
    let click = r#"{"user":"UALICE0001","channel":"C0APPROVALS","ts":"1.1","action_id":"approve"}"#;
    let (status, j) =
        dev.raw("POST", "/slack/sim/click", &[host.clone(), "Origin: http://evil.example".into()], click).await;
    assert_eq!(status, 403, "{j}");
    assert_eq!(j["error"], "cross-origin requests are refused", "{j}");
}

/// `countersign dev` with this `api_base_url`: (exit code, stderr) once it has stopped.
async fn dev_with_api_base_url(url: &str) -> (Option<i32>, String) {
    let dir = data_dir();
    let config = config_text(dir.path()).replace("[slack]\n", &format!("[slack]\napi_base_url = \"{url}\"\n"));
    let path = dir.path().join("dev.toml");
    std::fs::write(&path, config).unwrap();
    let (out, log) = (dir.path().join("dev.out"), dir.path().join("dev.log"));
    let mut child = spawn_dev(&path, &out, &log);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("start-up fails at once");
    (status.unwrap().code(), std::fs::read_to_string(&log).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t39_a_look_alike_loopback_slack_api_base_url_stops_start_up_with_a_clear_line() {
    for url in ["http://localhost.attacker.example", "http://127.0.0.1.attacker.example/api"] {
        let (code, stderr) = dev_with_api_base_url(url).await;
        assert_eq!(code, Some(1), "{url}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "slack.api_base_url: \"{url}\" is refused: plain http:// is allowed only to the exact hosts \
                 localhost, 127.0.0.1 and [::1]; use https://"
            )),
            "{url}: {stderr}"
        );
    }
    let (code, stderr) = dev_with_api_base_url("http://127.0.0.1@evil.example").await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("slack.api_base_url: \"http://127.0.0.1@evil.example\" is refused: a URL with user info"));
}
