//! Local mode as users run it: the real `countersign dev` binary (this build's, release), started on a free
//! 127.0.0.1 port with a throw-away config and data directory, driven over HTTP. Every create is SigV4-signed
//! by `aws-sigv4` with a dev identity's keys (as the CLI signs), every vote is a Slack `block_actions`
//! callback signed as Slack signs (v0 HMAC-SHA256 over `v0:{ts}:{body}` with the dev signing secret, computed
//! here with `hmac`, not with the product's own signer). The Slack side is the simulator inside the server:
//! each create posts a message to it and each vote updates that message, over HTTP, with its journal on disk.
//!
//!   cargo bench --bench local -- [--approvals N] [--clients C] [--json PATH] [--keep DIR]
//!
//! One approval is a create, one `conversations.history` call (the bench plays Slack's client: it finds the
//! message the create posted, by the request id in its metadata, as a person finds it in the channel), and two
//! approving votes (the bench policy needs 2). Each of the C clients runs approvals one after another until N
//! have been made. Reported: HTTP requests/s (creates and callbacks; the lookups are listed apart), latencies,
//! and the server's RSS (`/proc/PID/status` VmRSS and VmHWM) after the N approvals, with the simulator's files.
//! Every 100th approval is read back (`GET /v1/requests/{id}`, untimed) and must say `approved`.
//!
//! Without `--bench` (as under `cargo test --benches`) it runs a short smoke of 20 approvals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};

const TEAM_ID: &str = "T0BENCH01";
const APP_ID: &str = "A0BENCH01";
const BOT_TOKEN: &str = "xoxb-local-bench";
const CHANNEL: &str = "C0APPROVALS";
const ARN: &str = "arn:aws:sts::111122223333:assumed-role/github-deploy/bench";
const APPROVERS: usize = 16;
const REGION: &str = "us-east-1";

struct Opts {
    approvals: u64,
    clients: usize,
    json: Option<String>,
    keep: Option<PathBuf>,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let get = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let num = |name: &str, d: u64| get(name).map(|v| v.parse().expect("a number")).unwrap_or(d);
    Opts {
        approvals: num("--approvals", if bench { 10_000 } else { 20 }),
        clients: num("--clients", if bench { 8 } else { 2 }) as usize,
        json: get("--json"),
        keep: get("--keep").map(PathBuf::from),
    }
}

fn approver(i: usize) -> String {
    format!("UAPPR{:05}", i % APPROVERS)
}

/// A throw-away `dev.toml` (as scripts/browser-test writes one) and a bench policy needing 2 approvals.
fn write_config(dir: &Path, port: u16, key: &str, secret: &str, signing: &str) -> PathBuf {
    let users: Vec<String> = (0..APPROVERS).map(approver).collect();
    let policy = format!(
        "version: 1\npolicies:\n  - name: deploy-production\n    principals: [arn:aws:iam::111122223333:role/github-deploy]\n    \
         actions: [deploy]\n    environments: [production]\n    approvers:\n      users: [{}]\n    \
         required_approvals: 2\n    channel: {CHANNEL}\n    max_ttl: 1h\n    max_pending: 1000\n",
        users.join(", ")
    );
    std::fs::write(dir.join("policies.yaml"), policy).unwrap();
    let mut toml = format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{data}\"\nregion = \"{REGION}\"\npolicies = \"{pol}\"\n\
         sensitive_environments = []\n\n[slack]\nbot_token = \"{BOT_TOKEN}\"\nsigning_secret = \"{signing}\"\n\
         team_id = \"{TEAM_ID}\"\napp_id = \"{APP_ID}\"\n\n[[slack.channels]]\nid = \"{CHANNEL}\"\nname = \"deploy-approvals\"\n",
        data = dir.join("data").display(),
        pol = dir.join("policies.yaml").display(),
    );
    for u in &users {
        toml.push_str(&format!("\n[[slack.users]]\nid = \"{u}\"\nname = \"{}\"\n", u.to_lowercase()));
    }
    toml.push_str(&format!(
        "\n[[identities]]\naccess_key_id = \"{key}\"\nsecret_access_key = \"{secret}\"\narn = \"{ARN}\"\n"
    ));
    let path = dir.join("dev.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The server, stopped (SIGKILL: nothing to keep) when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Client {
    http: reqwest::Client,
    origin: String,
    credentials: Credentials,
    signing_secret: String,
}

impl Client {
    /// SigV4 (execute-api) as the CLI signs: `host` from the URL, `content-type` and the body's hash.
    fn signed(&self, method: &str, path: &str, body: &[u8]) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.origin);
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name("execute-api")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let headers = [("content-type", "application/json")];
        let signable = SignableRequest::new(method, &url, headers.into_iter(), SignableBody::Bytes(body)).unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut req = self
            .http
            .request(method.parse().unwrap(), &url)
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in instructions.headers() {
            req = req.header(name, value);
        }
        req
    }

    async fn create(&self, n: u64) -> Result<String, String> {
        let body = json!({"action": "deploy", "environment": "production", "resource": "service/payments",
                          "reason": format!("local bench {n}"), "details": {"commit": "0123456789abcdef"}})
        .to_string();
        let resp = self.signed("POST", "/v1/requests", body.as_bytes()).send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        if status != reqwest::StatusCode::CREATED {
            return Err(format!("create {status}: {}", text.chars().take(200).collect::<String>()));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        v["id"].as_str().map(str::to_string).ok_or_else(|| "create answered no id".into())
    }

    /// The ts of the message carrying `id`, posted after `oldest_micros`.
    async fn find_message(&self, id: &str, oldest_micros: u128, window: usize) -> Result<String, String> {
        let oldest = format!("{}.{:06}", oldest_micros / 1_000_000, oldest_micros % 1_000_000);
        let form = format!("channel={CHANNEL}&oldest={oldest}&limit={window}&include_all_metadata=true");
        let resp = self
            .http
            .post(format!("{}/slack/api/conversations.history", self.origin))
            .bearer_auth(BOT_TOKEN)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = resp.json().await.map_err(|e| e.to_string())?;
        v["messages"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["metadata"]["event_payload"]["request_id"].as_str() == Some(id)))
            .and_then(|m| m["ts"].as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("no message for {id} in the channel: {}", v["error"]))
    }

    /// An Approve click as Slack delivers it, signed as Slack signs.
    async fn vote(&self, user: &str, id: &str, ts: &str) -> Result<(), String> {
        let payload = json!({
            "type": "block_actions", "api_app_id": APP_ID,
            "team": {"id": TEAM_ID, "domain": "countersign-local"}, "enterprise": null,
            "user": {"id": user, "username": user.to_lowercase(), "team_id": TEAM_ID},
            "container": {"type": "message", "message_ts": ts, "channel_id": CHANNEL, "is_ephemeral": false},
            "channel": {"id": CHANNEL, "name": "deploy-approvals"},
            "message": {"ts": ts, "type": "message"},
            "trigger_id": "13345224609.738474920.8088930838d88f008e0",
            "response_url": format!("{}/slack/response/bench", self.origin),
            "actions": [{"type": "button", "action_id": "countersign_approve", "block_id": "countersign_actions",
                         "value": id, "action_ts": "1795621462.000100",
                         "text": {"type": "plain_text", "text": "Approve"}}]
        });
        let form = format!("payload={}", urlencode(&payload.to_string()));
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs().to_string();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(self.signing_secret.as_bytes()).unwrap();
        mac.update(format!("v0:{now}:{form}").as_bytes());
        let sig = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
        let resp = self
            .http
            .post(format!("{}/slack/interactions", self.origin))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", now)
            .header("x-slack-signature", sig)
            .body(form)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let _ = resp.bytes().await;
        if status != reqwest::StatusCode::OK {
            return Err(format!("callback {status}"));
        }
        Ok(())
    }

    async fn status(&self, id: &str) -> Result<String, String> {
        let resp = self.signed("GET", &format!("/v1/requests/{id}"), b"").send().await.map_err(|e| e.to_string())?;
        let v: Value = resp.json().await.map_err(|e| e.to_string())?;
        Ok(v["status"].as_str().unwrap_or("?").to_string())
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[derive(Default)]
struct Samples {
    create: Vec<Duration>,
    lookup: Vec<Duration>,
    callback: Vec<Duration>,
    errors: Vec<String>,
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

/// CPU time (user + system) `pid` has used, in milliseconds (`/proc/PID/stat`, clock ticks of 10 ms).
fn cpu_ms(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) * 10.0
}

fn file_kib(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len() / 1024).unwrap_or(0)
}

fn main() {
    let o = opts();
    // The client's runtime: one worker thread, so most of the two cores are left to the server.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    rt.block_on(run(o));
}

async fn run(o: Opts) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = o.keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let key = format!("ASIA{}", ulid::Ulid::new());
    let secret = ulid::Ulid::new().to_string().to_lowercase() + &ulid::Ulid::new().to_string();
    let signing = ulid::Ulid::new().to_string().to_lowercase();
    let config = write_config(&dir, port, &key, &secret, &signing);
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let bin = env!("CARGO_BIN_EXE_countersign");
    let child = Command::new(bin)
        .args(["dev", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        // As users run it: the default log level (scripts/bench sets RUST_LOG for the Lambda cold starts).
        .env_remove("RUST_LOG")
        .env_remove("COUNTERSIGN_LOG_LEVEL")
        .spawn()
        .expect("countersign dev starts");
    let server = Server(child);
    let pid = server.0.id();
    let origin = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(64).build().unwrap();
    let ready = Instant::now();
    loop {
        if http.get(format!("{origin}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(ready.elapsed() < Duration::from_secs(30), "countersign dev did not start; see {}", dir.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (rss_start, _) = rss_kib(pid);
    let client = Arc::new(Client {
        http,
        origin,
        credentials: Credentials::new(&key, &secret, None, None, "bench"),
        signing_secret: signing,
    });
    let samples = Arc::new(Mutex::new(Samples::default()));
    let next = Arc::new(AtomicU64::new(0));
    let approved = Arc::new(AtomicU64::new(0));
    let (server_cpu0, own_cpu0) = (cpu_ms(&pid.to_string()), cpu_ms("self"));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..o.clients {
        let (client, samples, next, approved) = (client.clone(), samples.clone(), next.clone(), approved.clone());
        let (total, window) = (o.approvals, 4 * o.clients);
        tasks.push(tokio::spawn(async move {
            let fail = |e: String| samples.lock().unwrap().errors.push(e);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let before = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_micros();
                let t = Instant::now();
                let id = match client.create(n).await {
                    Ok(id) => id,
                    Err(e) => {
                        fail(e);
                        continue;
                    }
                };
                let took = t.elapsed();
                samples.lock().unwrap().create.push(took);
                let t = Instant::now();
                let ts = match client.find_message(&id, before.saturating_sub(1), window).await {
                    Ok(ts) => ts,
                    Err(e) => {
                        fail(e);
                        continue;
                    }
                };
                let took = t.elapsed();
                samples.lock().unwrap().lookup.push(took);
                for user in [approver(2 * c), approver(2 * c + 1)] {
                    let t = Instant::now();
                    match client.vote(&user, &id, &ts).await {
                        Ok(()) => {
                            let took = t.elapsed();
                            samples.lock().unwrap().callback.push(took);
                        }
                        Err(e) => fail(e),
                    }
                }
                if n % 100 == 99 {
                    match client.status(&id).await {
                        Ok(s) if s == "approved" => {}
                        Ok(s) => fail(format!("{id} is {s} after two approvals")),
                        Err(e) => fail(e),
                    }
                }
                approved.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (rss, hwm) = rss_kib(pid);
    let (server_cpu, own_cpu) = (cpu_ms(&pid.to_string()) - server_cpu0, cpu_ms("self") - own_cpu0);
    drop(server);
    let data = dir.join("data");
    let mut s = std::mem::take(&mut *samples.lock().unwrap());
    let approved = approved.load(Ordering::Relaxed);
    let signed = (s.create.len() + s.callback.len()) as f64;
    let result = json!({
        "clients": o.clients, "approvals_target": o.approvals, "seconds": elapsed,
        "creates": s.create.len(), "lookups": s.lookup.len(), "callbacks": s.callback.len(), "approved": approved,
        "errors": s.errors.len(), "first_errors": s.errors.iter().take(3).collect::<Vec<_>>(),
        "http_per_s": signed / elapsed, "all_http_per_s": (signed + s.lookup.len() as f64) / elapsed,
        "approvals_per_s": approved as f64 / elapsed,
        "create_p50_ms": pct(&mut s.create, 0.50), "create_p99_ms": pct(&mut s.create, 0.99),
        "lookup_p50_ms": pct(&mut s.lookup, 0.50), "lookup_p99_ms": pct(&mut s.lookup, 0.99),
        "callback_p50_ms": pct(&mut s.callback, 0.50), "callback_p99_ms": pct(&mut s.callback, 0.99),
        // CPU per approval: stable when the machine is busy, unlike the rates.
        "server_cpu_ms_per_approval": server_cpu / approved.max(1) as f64,
        "bench_cpu_ms_per_approval": own_cpu / approved.max(1) as f64,
        "rss_start_kib": rss_start, "rss_kib": rss, "hwm_kib": hwm,
        "sim_snapshot_kib": file_kib(&data.join("slack-simulator.json")),
        "sim_journal_kib": file_kib(&data.join("slack-simulator.journal")),
    });
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    if let Some(path) = o.json {
        std::fs::write(path, result.to_string()).expect("write results");
    }
    assert!(s.errors.is_empty(), "errors: {:?}", &s.errors[..s.errors.len().min(5)]);
}
