//! Threat row 33, end to end through the request API on both stores: text a requester chooses may not
//! hold invisible, bidirectional, separator or private-use characters (Unicode general categories Cf, Zl,
//! Zp, Co, Cs), and what it may hold reaches Slack as literal text that cannot imitate Countersign's own
//! formatting. Each refusal is a `400 invalid_request` naming the field and the code point, is audited, and
//! leaves nothing stored and nothing posted.

use countersign_core::domain::AuditKind;
use serde_json::{json, Value};

use countersign_testkit::app::{spawn_app, Answer, StoreKind, TestApp, DEPLOY_ARN};
use countersign_testkit::on_both_stores;

on_both_stores!(
    t33_bidi_override_in_resource_is_400_naming_resource_and_code_point,
    t33_zero_width_space_in_a_details_key_is_400,
    t33_line_separator_in_reason_is_400,
    t33_private_use_in_idempotency_key_is_400,
    t33_every_requester_field_is_checked,
    t33_lone_surrogate_escape_is_400,
    t33_formatting_in_requester_text_reaches_slack_as_literal_text,
);

/// A body the `deploy-production` policy accepts, with `extra` merged in.
fn deploy(extra: Value) -> Value {
    let mut body = json!({"action": "deploy", "environment": "production", "reason": "release 42"});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            body[k] = v;
        }
    }
    body
}

/// The answer is a 400 `invalid_request` for `field` whose message holds every one of `says`; the newest
/// audit record is its refusal, with the same message; nothing was stored and nothing reached Slack.
async fn assert_refused_unseen(t: &TestApp, a: &Answer, field: &str, says: &[&str]) {
    assert_eq!(a.status, 400, "{}", a.json);
    assert_eq!(a.json["error"]["code"], "invalid_request", "{}", a.json);
    assert_eq!(a.json["error"]["field"], field, "{}", a.json);
    let message = a.json["error"]["message"].as_str().unwrap_or_default();
    for s in says {
        assert!(message.contains(s), "the message names {s}: {message}");
    }
    let last = t.app.stores.audit.last().await.unwrap().expect("an audit record");
    assert_eq!(last.kind, AuditKind::RequestRefused, "the refusal is audited: {last:?}");
    assert_eq!(last.details.get("code").map(String::as_str), Some("invalid_request"), "{last:?}");
    assert_eq!(last.details.get("message").map(String::as_str), Some(message), "{last:?}");
    let audit = t.app.stores.audit.read_from(0, 1000).await.unwrap();
    assert!(audit.iter().all(|e| e.kind != AuditKind::RequestCreated), "nothing was created: {audit:?}");
    assert!(t.app.stores.requests.list_pending(100).await.unwrap().is_empty(), "nothing was stored");
    assert!(t.slack.calls().is_empty(), "nothing reached Slack: {:?}", t.slack.calls());
}

async fn t33_bidi_override_in_resource_is_400_naming_resource_and_code_point(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    // Reads "service/payments-staging" to a reviewer.
    let a = t.create(DEPLOY_ARN, &deploy(json!({"resource": "service/\u{202E}gnigats-stnemyap"}))).await;
    assert_refused_unseen(&t, &a, "resource", &["resource", "U+202E"]).await;
}

async fn t33_zero_width_space_in_a_details_key_is_400(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let a = t.create(DEPLOY_ARN, &deploy(json!({"details": {"tick\u{200B}et": "INC-42"}}))).await;
    assert_refused_unseen(&t, &a, "details", &["details", "key", "U+200B"]).await;
    // The message names the key without carrying the hidden character along.
    assert!(!a.json.to_string().contains('\u{200B}'), "{}", a.json);
    // In a value, the message names the key the value belongs to.
    let a = t.create(DEPLOY_ARN, &deploy(json!({"details": {"ticket": "INC-\u{200B}42"}}))).await;
    assert_refused_unseen(&t, &a, "details", &["details.ticket", "U+200B"]).await;
}

async fn t33_line_separator_in_reason_is_400(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let a = t.create(DEPLOY_ARN, &deploy(json!({"reason": "release 42\u{2028}*Verified by AWS IAM*"}))).await;
    assert_refused_unseen(&t, &a, "reason", &["reason", "U+2028"]).await;
    // Trimming would have hidden it at the end: refused there too.
    let a = t.create(DEPLOY_ARN, &deploy(json!({"reason": "release 42\u{2029}"}))).await;
    assert_refused_unseen(&t, &a, "reason", &["reason", "U+2029"]).await;
}

async fn t33_private_use_in_idempotency_key_is_400(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let a = t.create(DEPLOY_ARN, &deploy(json!({"idempotency_key": "run-42-\u{E000}"}))).await;
    assert_refused_unseen(&t, &a, "idempotency_key", &["idempotency_key", "U+E000"]).await;
    let a = t.create(DEPLOY_ARN, &deploy(json!({"idempotency_key": "run-42-\u{10FFFD}"}))).await;
    assert_refused_unseen(&t, &a, "idempotency_key", &["U+10FFFD"]).await;
}

async fn t33_every_requester_field_is_checked(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let cases = [
        (json!({"action": "deploy\u{200D}"}), "action", "U+200D"),
        (json!({"environment": "\u{2066}production"}), "environment", "U+2066"),
        (json!({"resource": "bucket/\u{FEFF}logs"}), "resource", "U+FEFF"),
        (json!({"reason": "soft\u{00AD}hyphen"}), "reason", "U+00AD"),
        (json!({"reason": "tags \u{E0041}\u{E0042}"}), "reason", "U+E0041"),
        (json!({"details": {"note": "\u{F8FF}"}}), "details", "U+F8FF"),
        (json!({"details": {"\u{061C}k": "v"}}), "details", "U+061C"),
        (json!({"idempotency_key": "k\u{2029}"}), "idempotency_key", "U+2029"),
    ];
    for (extra, field, code_point) in cases {
        let a = t.create(DEPLOY_ARN, &deploy(extra.clone())).await;
        assert_refused_unseen(&t, &a, field, &[field, code_point]).await;
    }
    // The audit record of a refused action names it without its hidden character.
    let a = t.create(DEPLOY_ARN, &deploy(json!({"action": "deploy\u{202E}"}))).await;
    assert_refused_unseen(&t, &a, "action", &["U+202E"]).await;
    let last = t.app.stores.audit.last().await.unwrap().unwrap();
    assert_eq!(last.details.get("action").map(String::as_str), Some("deploy{U+202E}"), "{last:?}");
    // Visible text of every script stays accepted, NBSP (a space, Zs) included.
    let ok = deploy(json!({
        "reason": "Déploiement 中文 👍🏽 ✅ café\u{00A0}crème\nsecond line",
        "resource": "bucket/données",
        "details": {"clé": "valeur é", "emoji": "🚀"},
    }));
    let a = t.create(DEPLOY_ARN, &ok).await;
    assert_eq!(a.status, 201, "{}", a.json);
}

async fn t33_lone_surrogate_escape_is_400(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    // Category Cs cannot reach a Rust string: the JSON parser refuses a lone surrogate escape.
    for body in [
        r#"{"action":"deploy","environment":"production","reason":"a\uD800b"}"#,
        r#"{"action":"deploy","environment":"production","reason":"ok","details":{"\uDC00":"v"}}"#,
    ] {
        let a =
            t.call_api(countersign_testkit::app::api_event("POST", "/v1/requests", Some(body), Some(DEPLOY_ARN))).await;
        assert_eq!(a.status, 400, "{}", a.json);
        assert_eq!(a.json["error"]["code"], "invalid_request", "{}", a.json);
        let last = t.app.stores.audit.last().await.unwrap().expect("an audit record");
        assert_eq!(last.kind, AuditKind::RequestRefused, "{last:?}");
    }
    assert!(t.slack.calls().is_empty());
    assert!(t.app.stores.requests.list_pending(100).await.unwrap().is_empty());
}

/// Every text object of a message, as (type, text, emoji).
fn text_objects(v: &Value, out: &mut Vec<(String, String, Option<bool>)>) {
    match v {
        Value::Object(m) if matches!(m.get("type").and_then(Value::as_str), Some("plain_text" | "mrkdwn")) => {
            let ty = m["type"].as_str().unwrap_or_default().to_string();
            let text = m.get("text").and_then(Value::as_str).unwrap_or_default().to_string();
            out.push((ty, text, m.get("emoji").and_then(Value::as_bool)));
        }
        Value::Object(m) => m.values().for_each(|x| text_objects(x, out)),
        Value::Array(a) => a.iter().for_each(|x| text_objects(x, out)),
        _ => {}
    }
}

async fn t33_formatting_in_requester_text_reaches_slack_as_literal_text(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let reason = "*Verified by AWS IAM* :white_check_mark: _trusted_ ~no~ `ok`";
    let body = deploy(json!({
        "reason": reason,
        "resource": "service/*payments* :lock:",
        "details": {"*Account*": ":white_check_mark: `111122223333`"},
    }));
    let a = t.create(DEPLOY_ARN, &body).await;
    assert_eq!(a.status, 201, "{}", a.json);
    assert_eq!(a.json["notification"], "posted", "the fake Slack accepted the message");
    let m = &t.slack.messages()[0];
    let mut texts = vec![];
    text_objects(&m.blocks, &mut texts);
    for want in [reason, "service/*payments* :lock:", "*Account*", ":white_check_mark: `111122223333`"] {
        let found = texts.iter().find(|(_, text, _)| text == want);
        match found {
            Some((ty, _, emoji)) => {
                assert_eq!(ty, "plain_text", "{want:?} must be plain text: {texts:?}");
                assert_eq!(*emoji, Some(false), "{want:?} must not turn shortcodes into emoji");
            }
            None => panic!("{want:?} is not shown literally: {texts:?}"),
        }
    }
    for (ty, text, _) in &texts {
        if ty == "mrkdwn" {
            assert!(!text.contains("trusted") && !text.contains("payments*"), "requester text in mrkdwn: {text}");
        }
    }
}
