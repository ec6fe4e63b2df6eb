#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

use super::*;
use crate::config::DevConfig;
use countersign_core::domain::policy::parse_policies;

const BOT: &str = "xoxb-sim-test";

fn settings(state_file: Option<PathBuf>) -> SimSettings {
    SimSettings {
        bot_token: SecretString::new(BOT),
        signing_secret: SecretString::new("secret"),
        team_id: "T0LOCAL01".into(),
        app_id: "A0LOCAL01".into(),
        users: vec![UserInfo {
            id: "U012AB3CD".into(),
            name: "alice".into(),
            title: None,
            roles: vec![],
            deactivated: false,
            guest: false,
        }],
        groups: vec![],
        channels: vec![],
        // Nothing listens here: these tests never click.
        interactions_url: "http://127.0.0.1:9/slack/interactions".into(),
        origin: "http://127.0.0.1:9".into(),
        state_file,
        limits: SimLimits::default(),
    }
}

async fn call(sim: &Simulator, method: &str, body: Value) -> Value {
    let req = Request::post(format!("/slack/api/{method}"))
        .header("authorization", format!("Bearer {BOT}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = sim.router().oneshot(req).await.unwrap();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn directory_lists_configured_users_then_policy_users_with_what_each_may_do() {
    let cfg = DevConfig::parse(&crate::config::generate(std::path::Path::new(".countersign")).unwrap()).unwrap();
    let policies = parse_policies(countersign_core::testing::EXAMPLE_POLICIES).unwrap();
    let (users, channels) = directory(&cfg.slack, &policies);
    let roles = |id: &str| users.iter().find(|u| u.id == id).unwrap().roles.clone();
    assert_eq!(users[0].name, "alice");
    assert_eq!(roles("U012AB3CD"), vec!["approver for deploy-production"]);
    assert_eq!(roles("U0SRE0001"), vec!["approver for deploy-production via @sre-oncall"]);
    assert_eq!(roles("U0OWNER01"), vec!["owner of deploy-production (cannot approve)"]);
    assert_eq!(roles("U0SEC0001"), vec!["approver for rotate-secrets via @security"]);
    assert!(roles("U0VISITOR").is_empty());
    assert!(users.iter().any(|u| u.id == "U0DBA0001"), "users named only by a policy are listed too");
    assert!(channels.iter().any(|c| c.id.as_str() == "C0APPROVALS" && c.name == "deploy-approvals"));
}

#[tokio::test]
async fn messages_are_checked_against_block_kit_limits_and_threads_attach_to_their_parent() {
    let sim = Simulator::new(settings(None)).unwrap();
    let too_long = "x".repeat(151);
    let r = call(
        &sim,
        "chat.postMessage",
        json!({"channel": "C0APPROVALS", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": too_long}}]}),
    )
    .await;
    assert_eq!(r["error"], "invalid_blocks", "{r}");
    let r = call(&sim, "chat.postMessage", json!({"channel": "D0DIRECT", "text": "hi"})).await;
    assert_eq!(r["error"], "channel_not_found");
    let r = call(&sim, "chat.postMessage", json!({"channel": "C0APPROVALS", "text": "parent"})).await;
    let ts = r["ts"].as_str().unwrap().to_string();
    let r = call(&sim, "chat.postMessage", json!({"channel": "C0APPROVALS", "text": "reply", "thread_ts": ts})).await;
    assert_eq!(r["ok"], true);
    let r =
        call(&sim, "chat.postMessage", json!({"channel": "C0APPROVALS", "text": "x", "thread_ts": "1.000001"})).await;
    assert_eq!(r["error"], "thread_not_found");
    let msgs = sim.messages("C0APPROVALS");
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1].thread_ts.as_deref(), Some(ts.as_str()));
    assert!(msgs[0].ts < msgs[1].ts, "timestamps increase");
    let r = call(&sim, "chat.update", json!({"channel": "C0APPROVALS", "ts": "9.000001", "text": "y"})).await;
    assert_eq!(r["error"], "message_not_found");
}

#[tokio::test]
async fn messages_survive_a_new_simulator_on_the_same_state_file_and_a_corrupt_file_is_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(STATE_FILE);
    let sim = Simulator::new(settings(Some(file.clone()))).unwrap();
    call(&sim, "chat.postMessage", json!({"channel": "C0APPROVALS", "text": "kept"})).await;
    let again = Simulator::new(settings(Some(file.clone()))).unwrap();
    assert_eq!(again.messages("C0APPROVALS")[0].text.as_deref(), Some("kept"));
    let r = call(&again, "chat.postMessage", json!({"channel": "C0APPROVALS", "text": "later"})).await;
    assert!(r["ts"].as_str().unwrap() > again.messages("C0APPROVALS")[0].ts.as_str());

    std::fs::write(&file, b"{not json").unwrap();
    let fresh = Simulator::new(settings(Some(file.clone()))).unwrap();
    assert!(fresh.messages("C0APPROVALS").is_empty());
    assert_eq!(std::fs::read(file.with_extension("json.corrupt")).unwrap(), b"{not json");
    let journal_aside = std::fs::read_to_string(journal_path(&file).with_extension("journal.corrupt")).unwrap();
    assert!(journal_aside.contains("later"), "its journal is kept aside with it: {journal_aside}");
}

#[test]
fn clicked_elements_come_from_the_message_and_modal_state_from_its_input_blocks() {
    let blocks = json!([
        {"type": "section", "text": {"type": "mrkdwn", "text": "x"}},
        {"type": "actions", "block_id": "countersign_actions", "elements": [
            {"type": "button", "action_id": "countersign_approve", "value": "req_1", "style": "primary"}
        ]}
    ]);
    assert_eq!(find_element(&blocks, "countersign_actions", "countersign_approve").unwrap()["value"], "req_1");
    assert!(find_element(&blocks, "countersign_actions", "countersign_deny").is_none());
    assert!(find_element(&blocks, "other_block", "countersign_approve").is_none());

    let view = json!({"blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": "x"}},
        {"type": "input", "block_id": "reason", "element": {"type": "plain_text_input", "action_id": "reason"}}
    ]});
    let given = BTreeMap::from([("reason".to_string(), BTreeMap::from([("reason".to_string(), "why".to_string())]))]);
    assert_eq!(
        state_values(&view, &given),
        json!({"reason": {"reason": {"type": "plain_text_input", "value": "why"}}})
    );
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_content_security_policy() {
    let sim = Simulator::new(settings(None)).unwrap();
    for (path, kind) in [("/slack/", "text/html"), ("/slack/app.js", "text/javascript"), ("/slack/app.css", "text/css")]
    {
        let resp = sim.router().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        assert!(h["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    }
    // The page builds DOM nodes; it never parses message text as HTML.
    assert!(!APP_JS.contains("innerHTML") && !APP_JS.contains("insertAdjacentHTML") && !APP_JS.contains("eval("));
}

#[tokio::test]
async fn history_pages_newest_first_and_returns_metadata_only_when_asked() {
    let sim = Simulator::new(settings(None)).unwrap();
    let md = json!({"event_type": "countersign_request", "event_payload": {"request_id": "req_1"}});
    let first = call(&sim, "chat.postMessage", json!({"channel": "C0APPROVALS", "text": "a", "metadata": md})).await;
    let oldest = first["ts"].as_str().unwrap().to_string();
    for text in ["b", "c"] {
        call(&sim, "chat.postMessage", json!({"channel": "C0APPROVALS", "text": text})).await;
    }
    let bad = json!({"event_type": "countersign_request"});
    let r = call(&sim, "chat.postMessage", json!({"channel": "C0APPROVALS", "text": "d", "metadata": bad})).await;
    assert_eq!(r["error"], "invalid_metadata_format");

    let page = call(&sim, "conversations.history", json!({"channel": "C0APPROVALS", "limit": 2})).await;
    let texts: Vec<&str> = page["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["c", "b"], "{page}");
    assert_eq!(page["has_more"], true);
    let cursor = page["response_metadata"]["next_cursor"].as_str().unwrap().to_string();
    let page = call(
        &sim,
        "conversations.history",
        json!({"channel": "C0APPROVALS", "limit": 2, "cursor": cursor, "include_all_metadata": true}),
    )
    .await;
    assert_eq!(page["messages"][0]["text"], "a");
    assert_eq!(page["messages"][0]["metadata"], md);
    assert_eq!(page["messages"][0]["app_id"], "A0LOCAL01");
    assert_eq!(page["has_more"], false);
    assert_eq!(page["response_metadata"]["next_cursor"], "");
    let page = call(&sim, "conversations.history", json!({"channel": "C0APPROVALS", "oldest": oldest})).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 2, "oldest is exclusive");
    assert!(page["messages"][0].get("metadata").is_none());
    let r = call(&sim, "conversations.history", json!({"channel": "C0APPROVALS", "limit": 0})).await;
    assert_eq!(r["error"], "invalid_limit");
    let r = call(&sim, "conversations.history", json!({"channel": "C0APPROVALS", "cursor": "zz"})).await;
    assert_eq!(r["error"], "invalid_cursor");
}

#[tokio::test]
async fn changes_are_journaled_and_survive_a_reopen_and_a_torn_last_line_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(STATE_FILE);
    let journal = journal_path(&file);
    let sim = Simulator::new(settings(Some(file.clone()))).unwrap();
    let mut posted = vec![];
    for i in 0..40 {
        let r = call(&sim, "chat.postMessage", json!({"channel": "C0APPROVALS", "text": format!("m{i}")})).await;
        posted.push(r["ts"].as_str().unwrap().to_string());
    }
    for ts in posted.iter().step_by(2) {
        let r = call(&sim, "chat.update", json!({"channel": "C0APPROVALS", "ts": ts, "text": "edited"})).await;
        assert_eq!(r["ok"], true, "{r}");
    }
    let r = call(&sim, "chat.postMessage", json!({"channel": "C0APPROVALS", "text": "reply", "thread_ts": posted[0]}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let before = sim.messages("C0APPROVALS");
    // Every answered call is in the journal already; the snapshot is not rewritten on the request path.
    let lines = std::fs::read_to_string(&journal).unwrap().lines().count();
    assert_eq!(lines, 40 + 20 + 1);
    assert!(!file.exists(), "no snapshot until the journal is folded in at start-up");

    // A process killed mid-write leaves a torn last line: ignored, not fatal.
    let mut torn = std::fs::OpenOptions::new().append(true).open(&journal).unwrap();
    torn.write_all(br#"{"op":"put","channel":"C0APPROVALS","message":{"ts":"99"#).unwrap();
    drop(torn);
    let again = Simulator::new(settings(Some(file.clone()))).unwrap();
    assert_eq!(again.messages("C0APPROVALS"), before);
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0, "folded into the snapshot at start-up");
    let r = call(&again, "chat.postMessage", json!({"channel": "C0APPROVALS", "text": "later"})).await;
    let later = r["ts"].as_str().unwrap().to_string();
    assert!(before.iter().all(|m| m.ts < later), "ts keep growing across restarts");
    drop((sim, again));

    // Replaying lines the snapshot already holds (a crash between folding and emptying) changes nothing.
    let snapshot: Persisted = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let mut replayed: Persisted = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let mut lines = String::new();
    for m in &before {
        let change = Change::Put { channel: "C0APPROVALS".into(), message: m.clone(), last_ts_micros: 1 };
        lines.push_str(&serde_json::to_string(&change).unwrap());
        lines.push('\n');
    }
    assert_eq!(replay(&mut replayed, &journal, lines.as_bytes()), before.len());
    assert_eq!(replayed.channels, snapshot.channels);
    assert_eq!(replayed.last_ts_micros, snapshot.last_ts_micros);

    let third = Simulator::new(settings(Some(file.clone()))).unwrap();
    let kept = third.messages("C0APPROVALS");
    assert_eq!(kept.len(), before.len() + 1);
    assert_eq!(kept[..before.len()], before[..]);
    assert_eq!(kept[2].text.as_deref(), Some("edited"));
    assert_eq!(kept[1].text.as_deref(), Some("m1"));
    assert_eq!(kept.last().unwrap().ts, later);
}

#[tokio::test]
async fn t34_users_info_says_what_dev_toml_says_about_each_user() {
    let mut s = settings(None);
    let user = |id: &str, deactivated: bool, guest: bool| UserInfo {
        id: id.into(),
        name: id.to_lowercase(),
        title: None,
        roles: vec![],
        deactivated,
        guest,
    };
    s.users = vec![user("U0ALICE01", false, false), user("U0GONE001", true, false), user("U0GUEST01", false, true)];
    let sim = Simulator::new(s).unwrap();
    let info = |auth: &str, ct: &str, body: String| {
        let req = Request::post("/slack/api/users.info")
            .header("authorization", format!("Bearer {auth}"))
            .header("content-type", ct)
            .body(Body::from(body))
            .unwrap();
        let router = sim.router();
        async move {
            let resp = router.oneshot(req).await.unwrap();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
            serde_json::from_slice::<Value>(&bytes).unwrap()
        }
    };
    let form = "application/x-www-form-urlencoded";
    let alice = info(BOT, form, "user=U0ALICE01".into()).await;
    assert_eq!(alice["ok"], true, "{alice}");
    assert_eq!(alice["user"]["team_id"], "T0LOCAL01");
    assert_eq!(alice["user"]["deleted"], false);
    assert_eq!(alice["user"]["is_restricted"], false);
    assert_eq!(info(BOT, form, "user=U0GONE001".into()).await["user"]["deleted"], true);
    assert_eq!(info(BOT, form, "user=U0GUEST01".into()).await["user"]["is_restricted"], true);
    assert_eq!(info(BOT, form, "user=U0NOBODY1".into()).await["error"], "user_not_found");
    assert_eq!(info("xoxb-wrong", form, "user=U0ALICE01".into()).await["error"], "invalid_auth");
    let json = info(BOT, "application/json", r#"{"user":"U0ALICE01"}"#.into()).await;
    assert_eq!(json["error"], "user_not_found", "JSON arguments are not read: {json}");
}

#[tokio::test]
async fn a_channel_keeps_its_newest_messages_and_drops_decided_ones_first() {
    let mut s = settings(None);
    s.limits.messages_per_channel = 5;
    let sim = Simulator::new(s).unwrap();
    let buttons = json!([{"type": "actions", "block_id": "countersign_actions", "elements": [
        {"type": "button", "action_id": "countersign_approve", "text": {"type": "plain_text", "text": "Approve"}}
    ]}]);
    let pending =
        call(&sim, "chat.postMessage", json!({"channel": "C0APPROVALS", "text": "p", "blocks": buttons})).await;
    let pending = pending["ts"].as_str().unwrap().to_string();
    let first = call(&sim, "chat.postMessage", json!({"channel": "C0APPROVALS", "text": "m0"})).await;
    let first = first["ts"].as_str().unwrap().to_string();
    call(&sim, "chat.postMessage", json!({"channel": "C0APPROVALS", "text": "reply", "thread_ts": first})).await;
    for i in 1..10 {
        call(&sim, "chat.postMessage", json!({"channel": "C0APPROVALS", "text": format!("m{i}")})).await;
    }
    let kept = sim.messages("C0APPROVALS");
    let texts: Vec<&str> = kept.iter().map(|m| m.text.as_deref().unwrap()).collect();
    assert_eq!(texts, ["p", "m6", "m7", "m8", "m9"], "the message with buttons outlives older decided ones");
    let r = call(&sim, "chat.update", json!({"channel": "C0APPROVALS", "ts": pending, "text": "decided"})).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = call(&sim, "chat.update", json!({"channel": "C0APPROVALS", "ts": first, "text": "x"})).await;
    assert_eq!(r["error"], "message_not_found", "a dropped message is gone, with its replies");

    // Ephemerals: each user keeps their newest.
    for i in 0..25 {
        let r = call(
            &sim,
            "chat.postEphemeral",
            json!({"channel": "C0APPROVALS", "user": "U012AB3CD", "text": format!("e{i}")}),
        )
        .await;
        assert_eq!(r["ok"], true, "{r}");
    }
    let eph: Vec<String> = sim.lock().ws.ephemerals.iter().filter_map(|e| e.text.clone()).collect();
    assert_eq!(eph.len(), SimLimits::default().ephemerals_per_user);
    assert_eq!(eph.first().map(String::as_str), Some("e5"));
    assert_eq!(eph.last().map(String::as_str), Some("e24"));
}

#[tokio::test]
async fn the_journal_is_compacted_into_the_snapshot_while_running_and_a_reopen_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(STATE_FILE);
    let journal = journal_path(&file);
    let mut s = settings(Some(file.clone()));
    s.limits.messages_per_channel = 10;
    s.limits.compact_journal_bytes = 1;
    let sim = Simulator::new(s.clone()).unwrap();
    let mut changes = 0;
    let mut longest = 0;
    for i in 0..60 {
        let r = call(&sim, "chat.postMessage", json!({"channel": "C0APPROVALS", "text": format!("m{i}")})).await;
        let ts = r["ts"].as_str().unwrap().to_string();
        let r = call(&sim, "chat.update", json!({"channel": "C0APPROVALS", "ts": ts, "text": format!("u{i}")})).await;
        assert_eq!(r["ok"], true, "{r}");
        changes += 2;
        longest = longest.max(std::fs::read_to_string(&journal).unwrap().lines().count());
    }
    assert!(file.exists(), "compacted while running");
    assert!(longest < changes / 2, "the journal never held every change: {longest} of {changes} lines");
    let before = sim.messages("C0APPROVALS");
    assert_eq!(before.len(), 10);
    assert_eq!(before.last().unwrap().text.as_deref(), Some("u59"));
    drop(sim);
    let snapshot: Persisted = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(snapshot.channels["C0APPROVALS"].len() <= 11, "the snapshot holds what memory holds, not every change");
    let again = Simulator::new(s).unwrap();
    assert_eq!(again.messages("C0APPROVALS"), before);

    // A snapshot kept under a larger limit is cut down at start-up, the newest kept.
    drop(again);
    let mut smaller = settings(Some(file.clone()));
    smaller.limits.messages_per_channel = 3;
    let third = Simulator::new(smaller).unwrap();
    assert_eq!(third.messages("C0APPROVALS"), before[7..]);
}
