//! Decision events in local mode (issue 19): `countersign dev` with `[events] webhook_url` pointing at a
//! listener of this test. `events.jsonl` gets every event once, in chain order; the webhook gets the same
//! bodies, each signature checked by an independent HMAC (Python's `hmac`, running the verification function
//! of docs/events.md as written there). The first POST is refused: the event stays owed, is POSTed again on
//! the next sweep, and its line is not written twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;

use crate::local_mode::{config_text, data_dir, Dev, ALICE, BOB};

const WEBHOOK_SECRET: &str = "whsec-local-test-0123456789";

#[derive(Default)]
struct Hook {
    /// (signature header, body) of every POST answered 200.
    accepted: Mutex<Vec<(String, Vec<u8>)>>,
    /// POSTs still to refuse with a 503.
    refuse: AtomicUsize,
    refused: AtomicUsize,
}

async fn receive(State(hook): State<Arc<Hook>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if hook.refuse.load(Ordering::SeqCst) > 0 {
        hook.refuse.fetch_sub(1, Ordering::SeqCst);
        hook.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let sig = headers.get("countersign-signature").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    hook.accepted.lock().unwrap().push((sig, body.to_vec()));
    StatusCode::OK
}

/// The verification function of docs/events.md, as written there.
fn docs_snippet() -> String {
    let doc = include_str!("../../docs/events.md");
    let after = doc.split("<!-- verify-snippet -->").nth(1).expect("docs/events.md marks its verification snippet");
    let code = after.split("```python").nth(1).expect("a python block").split("```").next().unwrap();
    code.to_string()
}

/// Runs the docs' `verify` in Python on one delivery: true when it accepts it.
fn python_verifies(python: &std::path::Path, secret: &str, header: &str, body: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let body_file = dir.path().join("body");
    std::fs::write(&body_file, body).unwrap();
    let script = format!(
        "{}\nimport sys\nsys.exit(0 if verify(sys.argv[1].encode(), sys.argv[2], open(sys.argv[3], 'rb').read()) else 3)\n",
        docs_snippet()
    );
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(secret)
        .arg(header)
        .arg(&body_file)
        .output()
        .expect("python runs");
    match out.status.code() {
        Some(0) => true,
        Some(3) => false,
        _ => panic!("the snippet failed: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_appends_events_to_events_jsonl_and_posts_each_signed_to_the_webhook() {
    let Some(python) = countersign_testkit::emulator::test_python("the webhook signature check") else { return };
    let hook = Arc::new(Hook { refuse: AtomicUsize::new(1), ..Hook::default() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    let router = axum::Router::new().route("/hook", post(receive)).with_state(hook.clone());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let dir = data_dir();
    let config = format!(
        "{}\n[events]\nwebhook_url = \"{hook_url}\"\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n",
        config_text(dir.path())
    );
    let dev = Dev::start_with(&config).await;
    let id = dev.create("release 42").await;
    for user in [ALICE, BOB] {
        assert_eq!(dev.click(user, &id, "countersign_approve").await["status"], 200);
    }
    let cancelled = dev.create("release 43").await;
    let (status, j) = dev.call("POST", &format!("/v1/requests/{cancelled}/cancel"), None).await;
    assert_eq!(status, 200, "{j}");

    // created, approved, created, cancelled; the sweeper runs every second.
    let mut waited = 0;
    while hook.accepted.lock().unwrap().len() < 4 {
        assert!(waited < 200, "the webhook got {} of 4 events", hook.accepted.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    dev.stop().await;
    server.abort();

    let lines: Vec<Value> = std::fs::read_to_string(dir.path().join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = lines.iter().map(|l| l["detail"]["event"].as_str().unwrap()).collect();
    assert_eq!(names, ["request.created", "request.approved", "request.created", "request.cancelled"]);
    let seqs: Vec<u64> = lines.iter().map(|l| l["detail"]["audit"]["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "chain order, each once: {seqs:?}");
    assert_eq!(lines[1]["detail-type"], "Countersign Request Approved");
    assert_eq!(lines[1]["source"], "countersign");
    assert_eq!(lines[1]["detail"]["id"], id.as_str());
    assert_eq!(lines[1]["detail"]["event_id"], lines[1]["detail"]["audit"]["hash"]);

    assert_eq!(hook.refused.load(Ordering::SeqCst), 1, "the first POST was refused and retried");
    let accepted = hook.accepted.lock().unwrap().clone();
    let bodies: Vec<Value> = accepted.iter().map(|(_, b)| serde_json::from_slice(b).unwrap()).collect();
    assert_eq!(bodies, lines, "the webhook got the same events, in order, each once after the retry");
    for (sig, body) in &accepted {
        assert!(sig.starts_with("t=") && sig.contains(",v1="), "{sig}");
        assert!(python_verifies(&python, WEBHOOK_SECRET, sig, body), "Python's hmac accepts {sig}");
    }
    // The check is not vacuous: another body, another secret or an old timestamp is refused.
    let (sig, body) = &accepted[0];
    let mut tampered = body.clone();
    tampered[body.len() / 2] ^= 1;
    assert!(!python_verifies(&python, WEBHOOK_SECRET, sig, &tampered));
    assert!(!python_verifies(&python, "another-secret-0123456789", sig, body));
    let old = countersign_local::events::signature(
        &countersign_core::ports::SecretString::new(WEBHOOK_SECRET),
        1_700_000_000,
        body,
    );
    assert!(!python_verifies(&python, WEBHOOK_SECRET, &old, body), "a replay outside the window");
}
