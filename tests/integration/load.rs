//! Local mode under load, as a user runs it (issue #9, "load" and "restart"): the real `countersign dev`
//! binary in a child process on a fresh data directory, 32 concurrent clients over real HTTP — creates
//! signed by `aws-sigv4` as the CLI signs them, and reviewers' clicks as Slack and the simulator deliver
//! them: a `block_actions` form signed with the signing secret, posted to `/slack/interactions`, for the
//! message the reviewer sees in the simulator's channel — then the real `countersign audit verify` and
//! `audit export` on the data directory, and the store read back.
//!
//! The clicks go to `/slack/interactions` directly rather than through the simulator's click API because
//! the simulator, like Slack, gives up after 3 s: a click it gave up on may or may not have counted, and
//! the count would no longer be exact. How long the acknowledgements took is printed instead (Slack's 3 s
//! budget itself is threat row 24's test).
//!
//! Every request needs two approvals (the test policies' `deploy-production`), so each is one create and
//! two votes, and leaves exactly five audit records: `request.created`, `slack.posted`, two `vote.approve`
//! and `request.approved`. `COUNTERSIGN_LOAD_REQUESTS` changes the number of requests for a quicker look;
//! the test command runs the 2,000.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use countersign_core::domain::{ApprovalRequest, Status, Timestamp};
use countersign_core::ports::RequestStore;
use countersign_sqlite::EmbeddedStore;
use serde_json::{json, Value};

use crate::local_mode::{
    config_text, data_dir, post_click, try_send_signed, ALICE, BOB, CHANNEL, KEY_ID, SECRET, SIGNING_SECRET,
};
use crate::operator_cli::{countersign, text};
use countersign_testkit::app::POLICIES;

/// Concurrent clients, each creating a request and casting its two votes before the next.
const CLIENTS: usize = 32;
/// The approvers who vote on every request, in order.
const VOTERS: [&str; 2] = [ALICE, BOB];
/// The principal of the test identity (`local_mode::ARN`'s role), as requests store it.
const PRINCIPAL: &str = "arn:aws:iam::111122223333:role/github-deploy";

/// The 2,000, unless `COUNTERSIGN_LOAD_REQUESTS` asks for another number.
fn requests_to_make() -> usize {
    std::env::var("COUNTERSIGN_LOAD_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

/// A data directory whose policies let one principal hold a pending request per client (the test
/// policies allow 3, which 32 clients would hit at once).
fn load_data_dir() -> tempfile::TempDir {
    let dir = data_dir();
    let policies = POLICIES.replacen("max_pending: 3", &format!("max_pending: {}", CLIENTS * 2), 1);
    assert_ne!(policies, POLICIES, "the test policies still set max_pending: 3");
    std::fs::write(dir.path().join("policies.yaml"), policies).expect("write policies");
    dir
}

/// `countersign dev` running as a child process: the binary a user runs, killable for real.
struct DevProcess {
    child: tokio::process::Child,
    base: String,
    http: reqwest::Client,
    log: PathBuf,
}

impl DevProcess {
    /// Starts `countersign dev --config DIR/dev.toml` on a free port and waits until it is healthy.
    async fn start(dir: &Path) -> Self {
        let config = dir.join("dev.toml");
        std::fs::write(&config, config_text(dir)).expect("write the dev config");
        let n = (0..).find(|n| !dir.join(format!("dev-{n}.out")).exists()).unwrap_or(0);
        let out = dir.join(format!("dev-{n}.out"));
        let log = dir.join(format!("dev-{n}.log"));
        let child = countersign_testkit::cli::spawn_dev(&config, &out, &log);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(CLIENTS)
            .build()
            .expect("client");
        let mut dev = Self { child, base: String::new(), http, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        // The banner names the address, the port being chosen by the system (`listen = "127.0.0.1:0"`).
        while dev.base.is_empty() {
            let banner = std::fs::read_to_string(&out).unwrap_or_default();
            if let Some(rest) = banner.split("Countersign local mode is running on ").nth(1) {
                dev.base = rest.lines().next().unwrap_or_default().trim().to_string();
                break;
            }
            if let Ok(Some(status)) = dev.child.try_wait() {
                panic!("countersign dev exited ({status}): {}", dev.logs());
            }
            assert!(Instant::now() < deadline, "no banner within 60 s: {}", dev.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        loop {
            if let Ok(r) = dev.http.get(dev.url("/healthz")).send().await {
                if r.status() == 200 {
                    return dev;
                }
            }
            assert!(Instant::now() < deadline, "countersign dev did not become healthy: {}", dev.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, as Ctrl-C would stop it, and waits for it to exit 0.
    async fn stop(mut self) {
        let pid = self.child.id().expect("still running").to_string();
        let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("countersign dev stops within 15 s of SIGTERM")
            .expect("wait");
        assert!(status.success(), "countersign dev exited with {status}: {}", self.logs());
    }

    /// SIGKILL, while clients may still be calling: no shutdown code runs, whatever was in flight is cut off.
    fn kill9(&self) {
        let pid = self.child.id().expect("still running").to_string();
        let sent = std::process::Command::new("kill").args(["-KILL", &pid]).status().expect("kill runs");
        assert!(sent.success());
    }

    /// Reaps a process that was killed.
    async fn reap(mut self) {
        let status = self.child.wait().await.expect("wait");
        assert!(!status.success(), "killed, not exited: {status}");
    }

    /// `POST /v1/requests` signed as the test identity: on 201 the new id and whether its message is posted.
    async fn create(&self, n: usize) -> Result<(String, bool), String> {
        let body = json!({"action": "deploy", "environment": "production", "reason": format!("load {n}"),
                          "idempotency_key": format!("load-{n}")});
        let creds = (KEY_ID, SECRET, "us-east-1", "execute-api");
        let url = self.url("/v1/requests");
        match try_send_signed(&self.http, "POST", &url, Some(&body), creds, SystemTime::now()).await {
            Ok((201, j, _)) => match j["id"].as_str() {
                Some(id) => Ok((id.to_string(), j["notification"] == "posted")),
                None => Err(format!("no id in {j}")),
            },
            Ok((status, j, _)) => Err(format!("create {n}: {status} {j}")),
            Err(e) => Err(format!("create {n}: {e}")),
        }
    }

    /// `GET /v1/requests/{id}` signed as the test identity.
    async fn read(&self, id: &str) -> Result<Value, String> {
        let creds = (KEY_ID, SECRET, "us-east-1", "execute-api");
        let url = self.url(&format!("/v1/requests/{id}?wait=0"));
        match try_send_signed(&self.http, "GET", &url, None, creds, SystemTime::now()).await {
            Ok((200, j, _)) => Ok(j),
            Ok((status, j, _)) => Err(format!("read {id}: {status} {j}")),
            Err(e) => Err(format!("read {id}: {e}")),
        }
    }

    /// A reviewer's click on Approve, signed as Slack signs it; `Ok` when `/slack/interactions` answered 200.
    async fn approve(&self, user: &str, id: &str, ts: &str) -> Result<(), String> {
        let r = post_click(&self.http, &self.base, SIGNING_SECRET.as_bytes(), user, id, ts)
            .await
            .map_err(|e| format!("click by {user} on {id}: {e}"))?;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        // A recorded vote is a bare 200; a refused one also answers 200 (its reply goes to the
        // `response_url`), which the read-back and the audit counts catch.
        if status == 200 && body.is_empty() {
            Ok(())
        } else {
            Err(format!("click by {user} on {id}: {status} {body}"))
        }
    }

    /// Waits until the request's message is posted (a post that timed out under load is retried by the
    /// sweeper), so that the message a reviewer then finds is the one the request points at.
    async fn posted(&self, id: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.read(id).await?["notification"] == "posted" {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{id} was not posted within 60 s"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Where each request's message is in the approvals channel, as a reviewer finds it. Each look reads the
/// simulator's whole channel, so clients waiting at the same time share one look.
#[derive(Default)]
struct Messages {
    ts: Mutex<HashMap<String, String>>,
    looking: tokio::sync::Mutex<()>,
}

impl Messages {
    fn known(&self, id: &str) -> Option<String> {
        self.ts.lock().unwrap().get(id).cloned()
    }

    /// The ts of the request's message; `fresh` skips what earlier looks found (a post that timed out
    /// under load can still have landed: the relay then adopts that message through
    /// `conversations.history`, so a fresh look finds the one the request stores).
    async fn ts_of(&self, dev: &DevProcess, id: &str, fresh: bool) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut use_known = !fresh;
        loop {
            if use_known {
                if let Some(ts) = self.known(id) {
                    return Ok(ts);
                }
            }
            let _one_look = self.looking.lock().await;
            if use_known {
                if let Some(ts) = self.known(id) {
                    return Ok(ts);
                }
            }
            let r = dev.http.get(dev.url("/slack/sim/state")).send().await.map_err(|e| e.to_string())?;
            let state: Value = r.json().await.map_err(|e| e.to_string())?;
            use_known = true;
            let found = {
                let mut known = self.ts.lock().unwrap();
                known.extend(message_ids(&state));
                known.contains_key(id)
            };
            if found {
                continue;
            }
            if Instant::now() > deadline {
                return Err(format!("no message for {id} in the simulator within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Request id → message ts of the approvals channel's messages that still have their buttons, oldest
/// first (so that, collected into a map, a request's newest message wins).
fn message_ids(state: &Value) -> Vec<(String, String)> {
    let channels = state["channels"].as_array().map_or(&[][..], Vec::as_slice);
    let Some(channel) = channels.iter().find(|c| c["id"] == CHANNEL) else {
        return vec![];
    };
    let mut out = vec![];
    for m in channel["messages"].as_array().map_or(&[][..], Vec::as_slice) {
        let blocks = m["blocks"].as_array().map_or(&[][..], Vec::as_slice);
        let button = blocks
            .iter()
            .filter(|b| b["type"] == "actions")
            .flat_map(|b| b["elements"].as_array().map_or(&[][..], Vec::as_slice))
            .find_map(|e| e["value"].as_str());
        if let (Some(id), Some(ts)) = (button, m["ts"].as_str()) {
            out.push((id.to_string(), ts.to_string()));
        }
    }
    out
}

/// What the server acknowledged (a 2xx reached the client): request ids and (request id, voter) votes.
#[derive(Default)]
struct Acked {
    requests: Mutex<Vec<String>>,
    votes: Mutex<Vec<(String, String)>>,
    /// How long each create and each click took to be answered.
    latencies: Mutex<Vec<Duration>>,
}

impl Acked {
    fn ack(&self, took: Duration) {
        self.latencies.lock().unwrap().push(took);
    }

    /// "p50 …, p99 …, max …" of the answers' latencies.
    fn latency_summary(&self) -> String {
        let mut l = self.latencies.lock().unwrap().clone();
        l.sort();
        let at = |q: f64| l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1))).copied();
        format!("p50 {:.0?}, p99 {:.0?}, max {:.0?}", at(0.5), at(0.99), l.last())
    }
}

/// One client: takes the next request number, creates it, finds its message, approves it as each voter;
/// until `total` requests are taken, `stop` is set, or a call fails (returned).
async fn client(
    dev: Arc<DevProcess>,
    messages: Arc<Messages>,
    acked: Arc<Acked>,
    next: Arc<AtomicUsize>,
    total: usize,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    loop {
        let n = next.fetch_add(1, Ordering::SeqCst);
        if n >= total || stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let t = Instant::now();
        let (id, posted) = dev.create(n).await?;
        acked.ack(t.elapsed());
        acked.requests.lock().unwrap().push(id.clone());
        if !posted {
            dev.posted(&id).await?;
        }
        let ts = messages.ts_of(&dev, &id, !posted).await?;
        for user in VOTERS {
            let t = Instant::now();
            dev.approve(user, &id, &ts).await?;
            acked.ack(t.elapsed());
            acked.votes.lock().unwrap().push((id.clone(), user.to_string()));
        }
    }
}

/// Runs `CLIENTS` clients until `total` requests are taken or `stop` is set; the clients' results.
fn start_clients(
    dev: &Arc<DevProcess>,
    acked: &Arc<Acked>,
    total: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Result<(), String>>> {
    let messages = Arc::new(Messages::default());
    let next = Arc::new(AtomicUsize::new(0));
    (0..CLIENTS)
        .map(|_| {
            let (dev, messages, acked, next, stop) =
                (dev.clone(), messages.clone(), acked.clone(), next.clone(), stop.clone());
            tokio::spawn(client(dev, messages, acked, next, total, stop))
        })
        .collect()
}

fn store_args(dir: &Path) -> Vec<String> {
    vec!["--store".into(), "local".into(), "--data-dir".into(), dir.to_string_lossy().into_owned()]
}

/// `countersign audit verify --store local --data-dir DIR --output json`: the number of records verified.
fn cli_verify(dir: &Path) -> u64 {
    let mut args = vec!["audit".to_string(), "verify".into()];
    args.extend(store_args(dir));
    args.extend(["--output".into(), "json".into()]);
    let o = countersign(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0), "audit verify: {}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("verify --output json prints one object");
    assert_eq!(v["intact"], true, "{v}");
    assert_eq!(v["from_genesis"], true, "{v}");
    v["records"].as_u64().expect("records")
}

/// `countersign audit export --store local --data-dir DIR --format jsonl`: the records (summary line off).
fn cli_export(dir: &Path) -> Vec<Value> {
    let file = dir.join("audit.jsonl");
    let mut args = vec!["audit".to_string(), "export".into()];
    args.extend(store_args(dir));
    args.extend(["--format".into(), "jsonl".into(), "--out".into(), file.to_string_lossy().into_owned()]);
    let o = countersign(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0), "audit export: {}", text(&o));
    let body = std::fs::read_to_string(&file).expect("the export");
    let mut lines: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).expect("JSON lines")).collect();
    let summary = lines.pop().expect("a summary line");
    assert_eq!(summary["summary"]["records"].as_u64(), Some(lines.len() as u64), "{summary}");
    lines
}

fn count_by_kind(records: &[Value]) -> BTreeMap<String, usize> {
    let mut by_kind = BTreeMap::new();
    for r in records {
        *by_kind.entry(r["kind"].as_str().expect("kind").to_string()).or_insert(0) += 1;
    }
    by_kind
}

/// The test identity's requests in the store, read after the server stopped.
async fn stored_requests(dir: &Path) -> Vec<ApprovalRequest> {
    let store = EmbeddedStore::open(dir).expect("the store opens");
    store.list_by_principal(PRINCIPAL, Timestamp::from_unix_millis(0), usize::MAX).await.expect("list")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_requests_with_votes_at_concurrency_32_lose_nothing_and_the_chain_verifies() {
    let total = requests_to_make();
    let dir = load_data_dir();
    let dev = Arc::new(DevProcess::start(dir.path()).await);
    let acked = Arc::new(Acked::default());
    let started = Instant::now();
    let clients = start_clients(&dev, &acked, total, &Arc::new(AtomicBool::new(false)));
    for c in clients {
        c.await.expect("client task").unwrap_or_else(|e| panic!("{e}\n{}", dev.logs()));
    }
    let took = started.elapsed();
    eprintln!(
        "{total} requests, {} votes by {CLIENTS} clients in {took:.1?}; answers: {}",
        total * VOTERS.len(),
        acked.latency_summary()
    );

    let acked_requests = acked.requests.lock().unwrap().clone();
    let acked_votes = acked.votes.lock().unwrap().len();
    assert_eq!(acked_requests.len(), total);
    assert_eq!(acked_votes, total * VOTERS.len());
    assert_eq!(acked_requests.iter().collect::<HashSet<_>>().len(), total, "every create made a new request");
    // Read back through the API: each is approved by exactly the two voters.
    for id in acked_requests.iter().step_by(total.div_ceil(200).max(1)) {
        let r = dev.read(id).await.unwrap();
        assert_eq!(r["status"], "approved", "{r}");
        let by: Vec<&str> = r["approvals"].as_array().unwrap().iter().map(|a| a["user_id"].as_str().unwrap()).collect();
        assert_eq!(by.len(), 2, "{r}");
        assert!(VOTERS.iter().all(|v| by.contains(v)), "{r}");
    }
    let dev = Arc::into_inner(dev).expect("the clients are done");
    dev.stop().await;

    let stored = stored_requests(dir.path()).await;
    assert_eq!(stored.len(), total, "requests in the store");
    assert!(stored.iter().all(|r| r.status == Status::Approved), "every stored request is approved");
    let votes: usize = stored.iter().map(|r| r.approvals.len()).sum();
    assert_eq!(votes, total * VOTERS.len(), "votes in the store");
    let stored_ids: HashSet<String> = stored.iter().map(|r| r.id.to_string()).collect();
    assert!(acked_requests.iter().all(|id| stored_ids.contains(id)));

    let verified = cli_verify(dir.path());
    let records = cli_export(dir.path());
    let mut by_kind = count_by_kind(&records);
    // Under load a post can outlast the 2 s Slack timeout: audited as `slack.post_failed`, then the relay
    // posts it (and `slack.posted` stays one per request). Nothing else may appear.
    let failed_posts = by_kind.remove("slack.post_failed").unwrap_or(0);
    let expected: BTreeMap<String, usize> = [
        ("policy.changed", 2),
        ("request.created", total),
        ("slack.posted", total),
        ("vote.approve", total * VOTERS.len()),
        ("request.approved", total),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(by_kind, expected, "audit records by kind");
    let size = |f: &str| std::fs::metadata(dir.path().join(f)).map_or(0, |m| m.len()) / 1024;
    eprintln!(
        "audit: {} records, {failed_posts} slack.post_failed; {} KiB store, {} KiB simulator state + {} KiB journal (folded in at the next start)",
        records.len(),
        size(countersign_sqlite::DB_FILE),
        size(countersign_local::simulator::STATE_FILE),
        size(&format!("slack-simulator.{}", countersign_local::simulator::JOURNAL_EXTENSION)),
    );
    assert_eq!(verified, records.len() as u64, "verify read the whole export's worth of records");
    assert_eq!(verified, 2 + 5 * total as u64 + failed_posts as u64);
}

/// How many acknowledged requests the restart test waits for before it kills the server.
const KILL_AFTER: usize = 80;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_load_loses_no_acknowledged_request_or_vote() {
    let dir = load_data_dir();
    let dev = Arc::new(DevProcess::start(dir.path()).await);
    let acked = Arc::new(Acked::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_clients(&dev, &acked, usize::MAX, &stop);
    let deadline = Instant::now() + Duration::from_secs(180);
    while acked.requests.lock().unwrap().len() < KILL_AFTER {
        assert!(Instant::now() < deadline, "{KILL_AFTER} requests were not acknowledged within 180 s");
        if clients.iter().any(|c| c.is_finished()) {
            stop.store(true, Ordering::SeqCst);
            let mut errors = vec![];
            for c in clients {
                if let Err(e) = c.await.expect("client task") {
                    errors.push(e);
                }
            }
            panic!("a client stopped before the kill: {errors:?}\n{}", dev.logs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // All 32 clients are mid-flow: creating, looking for a message or voting.
    dev.kill9();
    stop.store(true, Ordering::SeqCst);
    let mut cut_off = 0;
    for c in clients {
        if c.await.expect("client task").is_err() {
            cut_off += 1;
        }
    }
    Arc::into_inner(dev).expect("the clients are done").reap().await;
    let requests = acked.requests.lock().unwrap().clone();
    let votes = acked.votes.lock().unwrap().clone();
    eprintln!(
        "killed after {} acknowledged requests and {} votes; {cut_off} clients cut off",
        requests.len(),
        votes.len()
    );
    assert!(cut_off > 0, "the kill cut no call off: it did not happen during load");

    // Restarted on the same data directory: each acknowledged request and vote reads back through the API.
    let dev = DevProcess::start(dir.path()).await;
    for id in &requests {
        let r = dev.read(id).await.unwrap_or_else(|e| panic!("acknowledged request lost: {e}"));
        let by: Vec<&str> = r["approvals"].as_array().unwrap().iter().map(|a| a["user_id"].as_str().unwrap()).collect();
        for (_, user) in votes.iter().filter(|(v, _)| v == id) {
            assert!(by.contains(&user.as_str()), "acknowledged vote by {user} on {id} lost: {r}");
        }
        let status = if by.len() == VOTERS.len() { "approved" } else { "pending" };
        assert_eq!(r["status"], status, "{r}");
    }
    // The flow continues: a new request is created, found in the simulator and approved.
    let (id, posted) = dev.create(usize::MAX).await.unwrap();
    if !posted {
        dev.posted(&id).await.unwrap();
    }
    let ts = Messages::default().ts_of(&dev, &id, true).await.unwrap();
    for user in VOTERS {
        dev.approve(user, &id, &ts).await.unwrap();
    }
    assert_eq!(dev.read(&id).await.unwrap()["status"], "approved");
    dev.stop().await;

    // The audit trail: intact, and it holds every acknowledged request and vote, each exactly once, as it
    // holds every request and vote the store has (no state change without its record, none twice).
    let verified = cli_verify(dir.path());
    let records = cli_export(dir.path());
    assert_eq!(verified, records.len() as u64);
    let mut trail: HashMap<(String, String), usize> = HashMap::new();
    for r in &records {
        let request = r["request_id"].as_str().unwrap_or_default().to_string();
        let what = match r["kind"].as_str().unwrap() {
            "vote.approve" => r["actor"].as_str().unwrap().trim_start_matches("slack:").to_string(),
            other => other.to_string(),
        };
        *trail.entry((request, what)).or_insert(0) += 1;
    }
    let once = |request: &str, what: &str| trail.get(&(request.to_string(), what.to_string())).copied() == Some(1);
    for id in &requests {
        assert!(once(id, "request.created"), "{id} has not exactly one request.created");
    }
    for (id, user) in &votes {
        assert!(once(id, user), "the vote by {user} on {id} has not exactly one vote.approve");
    }
    let stored = stored_requests(dir.path()).await;
    for r in &stored {
        let id = r.id.to_string();
        assert!(once(&id, "request.created"), "stored {id} has not exactly one request.created");
        for a in &r.approvals {
            assert!(once(&id, a.user_id.as_str()), "stored vote by {} on {id} is not audited once", a.user_id);
        }
        let decided = usize::from(r.status == Status::Approved);
        assert_eq!(trail.get(&(id.clone(), "request.approved".into())).copied().unwrap_or(0), decided, "{id}");
    }
    let created = records.iter().filter(|r| r["kind"] == "request.created").count();
    let voted = records.iter().filter(|r| r["kind"] == "vote.approve").count();
    assert_eq!(created, stored.len(), "request.created records and stored requests");
    assert_eq!(voted, stored.iter().map(|r| r.approvals.len()).sum::<usize>(), "vote.approve records and stored votes");
}
