#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const TOKEN: &str = "xoxb-emulator-test";

fn profile(strict: bool) -> Profile {
    Profile {
        app_id: "A0EMU0001".into(),
        bot_id: "B0EMU0001".into(),
        bot_user: "U0EMUBOT1".into(),
        well_formed_ids: strict,
        issued_triggers: strict,
        default_user: (!strict).then(FakeUser::member),
        keep_update_bodies: !strict,
    }
}

fn call(ws: &mut Workspace, method: &str, body: Value) -> (Value, Effect) {
    let (r, effect) = ws.call(method, Some(&format!("Bearer {TOKEN}")), false, body);
    let bytes = body_bytes(r);
    (serde_json::from_slice(&bytes).unwrap(), effect)
}

fn body_bytes(r: axum::response::Response) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(axum::body::to_bytes(r.into_body(), 1 << 20)).unwrap().to_vec()
}

#[test]
fn the_strict_profile_wants_well_formed_ids_known_users_and_issued_triggers() {
    let view = json!({"type": "modal", "title": {"type": "plain_text", "text": "Deny"}, "blocks": []});
    let mut lenient = Workspace::new(profile(false), TOKEN, None);
    let mut strict = Workspace::new(profile(true), TOKEN, None);
    let post = json!({"channel": "general", "text": "hi"});
    assert_eq!(call(&mut lenient, "chat.postMessage", post.clone()).0["ok"], true);
    assert_eq!(call(&mut strict, "chat.postMessage", post).0["error"], "channel_not_found");
    let open = json!({"trigger_id": "123.456", "view": view});
    assert_eq!(call(&mut lenient, "views.open", open.clone()).0["ok"], true);
    assert_eq!(call(&mut strict, "views.open", open.clone()).0["error"], "invalid_trigger_id");
    strict.issue_trigger("123.456".into(), "U012AB3CD".into());
    let (r, effect) = call(&mut strict, "views.open", open.clone());
    assert_eq!((r["ok"].clone(), effect), (json!(true), Effect::Shown));
    assert!(strict.views.contains_key("U012AB3CD"), "kept open for the user who clicked");
    assert_eq!(call(&mut strict, "views.open", open).0["error"], "invalid_trigger_id", "a trigger opens once");
    let info = json!({"user": "U012AB3CD"});
    assert_eq!(call(&mut lenient, "users.info", info.clone()).0["user"]["team_id"], FAKE_TEAM_ID);
    assert_eq!(call(&mut strict, "users.info", info).0["error"], "user_not_found");
}

#[test]
fn updates_change_the_message_and_report_what_changed_and_history_pages_newest_first() {
    let mut ws = Workspace::new(profile(false), TOKEN, None);
    let mut posted = vec![];
    for i in 0..3 {
        let (r, effect) = call(&mut ws, "chat.postMessage", json!({"channel": "C0APPROVALS", "text": format!("m{i}")}));
        let ts = r["ts"].as_str().unwrap().to_string();
        assert_eq!(effect, Effect::Message { channel: "C0APPROVALS".into(), ts: ts.clone() });
        posted.push(ts);
    }
    let (r, _) = call(&mut ws, "chat.update", json!({"channel": "C0APPROVALS", "ts": posted[0], "text": "edited"}));
    assert_eq!(r["ok"], true);
    let first = ws.message("C0APPROVALS", &posted[0]).unwrap();
    assert_eq!((first.text.as_deref(), first.updates, first.update_bodies.len()), (Some("edited"), 1, 1));
    let (page, _) = call(&mut ws, "conversations.history", json!({"channel": "C0APPROVALS", "limit": "2"}));
    assert_eq!(page["messages"][0]["ts"], posted[2].as_str());
    assert_eq!(page["has_more"], true);
    let cursor = page["response_metadata"]["next_cursor"].clone();
    let (rest, _) = call(&mut ws, "conversations.history", json!({"channel": "C0APPROVALS", "cursor": cursor}));
    assert_eq!(rest["messages"][0]["text"], "edited");
    assert_eq!(rest["has_more"], false);
    let (r, effect) = ws.call("chat.postMessage", Some("Bearer wrong"), false, json!({"channel": "C0A", "text": "x"}));
    let r: Value = serde_json::from_slice(&body_bytes(r)).unwrap();
    assert_eq!((r["error"].clone(), effect), (json!("invalid_auth"), Effect::None));
}
