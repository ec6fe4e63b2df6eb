#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use serde_json::{json, Value};

use super::*;

const RID: &str = "req_01JDQ7Z8W6G5T9ZC3X4Y5N8K2M";

fn fixture(name: &str) -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/slack").join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `application/x-www-form-urlencoded`, spaces as `+`, as Slack sends it.
fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn body_of(payload: &Value) -> Vec<u8> {
    format!("payload={}", form_encode(&payload.to_string())).into_bytes()
}

fn parse_value(payload: &Value) -> Result<Interaction, InteractionError> {
    parse(&body_of(payload))
}

fn click(payload: &Value) -> BlockActions {
    match parse_value(payload).unwrap() {
        Interaction::BlockActions(b) => b,
        other => panic!("expected block_actions, got {other:?}"),
    }
}

fn submission(payload: &Value) -> ViewSubmission {
    match parse_value(payload).unwrap() {
        Interaction::ViewSubmission(v) => v,
        other => panic!("expected view_submission, got {other:?}"),
    }
}

#[test]
fn parses_the_approve_click_fixture() {
    let b = click(&fixture("block_actions_approve"));
    assert_eq!(
        b,
        BlockActions {
            team_id: "T0CSIGN01".into(),
            enterprise_id: None,
            api_app_id: "A0CSIGN001".into(),
            user_id: SlackUserId::parse("UALICE01").unwrap(),
            user_team_id: Some("T0CSIGN01".into()),
            action_id: ButtonAction::Approve,
            block_id: "countersign_actions".into(),
            value: RequestId::parse(RID).unwrap(),
            channel_id: SlackChannelId::parse("C0APPROVALS").unwrap(),
            message_ts: "1795621463.000200".into(),
            response_url: "https://hooks.slack.com/actions/T0CSIGN01/7982215450000/AbCdEfGhIjKlMnOpQrStUvWx".into(),
            trigger_id: "7982215451111.1234567890123.0a1b2c3d4e5f67890a1b2c3d4e5f6789".into(),
        }
    );
}

#[test]
fn parses_the_deny_click_fixture() {
    let b = click(&fixture("block_actions_deny"));
    assert_eq!(b.action_id, ButtonAction::Deny);
    assert_eq!(b.user_id.as_str(), "UBOB0001");
}

#[test]
fn parses_enterprise_and_slack_connect_ids_for_the_caller_to_check() {
    let b = click(&fixture("block_actions_enterprise_connect"));
    assert_eq!(b.enterprise_id.as_deref(), Some("E0ACMEGRID"));
    assert_eq!(b.user_team_id.as_deref(), Some("T0PARTNER9"));
    assert_eq!(b.user_id.as_str(), "W0CONNECT1");
}

#[test]
fn parses_the_deny_modal_submission_fixture() {
    let v = submission(&fixture("view_submission_deny"));
    assert_eq!(
        v,
        ViewSubmission {
            team_id: "T0CSIGN01".into(),
            enterprise_id: None,
            api_app_id: "A0CSIGN001".into(),
            user_id: SlackUserId::parse("UBOB0001").unwrap(),
            user_team_id: Some("T0CSIGN01".into()),
            callback_id: "countersign_deny_modal".into(),
            modal: Modal::Deny,
            request_id: RequestId::parse(RID).unwrap(),
            reason: "Change freeze until Monday; see <#C0INCIDENT|incident>".into(),
        }
    );
}

// --- t11: button tampering ----------------------------------------------------------------------------------

#[test]
fn t11_unknown_action_id_is_rejected() {
    for id in ["countersign_approve_all", "approve", "", "COUNTERSIGN_APPROVE"] {
        let mut p = fixture("block_actions_approve");
        p["actions"][0]["action_id"] = json!(id);
        assert_eq!(parse_value(&p), Err(InteractionError::UnknownAction), "{id}");
    }
    let mut p = fixture("block_actions_approve");
    p["actions"][0].as_object_mut().unwrap().remove("action_id");
    assert_eq!(parse_value(&p), Err(InteractionError::UnknownAction));
}

#[test]
fn t11_unknown_block_id_is_rejected() {
    let mut p = fixture("block_actions_approve");
    p["actions"][0]["block_id"] = json!("other_block");
    assert_eq!(parse_value(&p), Err(InteractionError::UnknownBlock));
}

#[test]
fn t11_extra_or_missing_actions_are_rejected() {
    let mut p = fixture("block_actions_approve");
    let a = p["actions"][0].clone();
    p["actions"] = json!([a.clone(), a]);
    assert_eq!(parse_value(&p), Err(InteractionError::ActionCount(2)));
    p["actions"] = json!([]);
    assert_eq!(parse_value(&p), Err(InteractionError::ActionCount(0)));
    p.as_object_mut().unwrap().remove("actions");
    assert_eq!(parse_value(&p), Err(InteractionError::ActionCount(0)));
}

#[test]
fn t11_value_must_be_exactly_a_request_id() {
    let wrong = [
        "req_01JDQ7Z8W6G5T9ZC3X4Y5N8K2M ",
        "req_01JDQ7Z8W6G5T9ZC3X4Y5N8K2M,req_01JDQ7Z8W6G5T9ZC3X4Y5N8K2N",
        "{\"id\":\"req_01JDQ7Z8W6G5T9ZC3X4Y5N8K2M\"}",
        "01JDQ7Z8W6G5T9ZC3X4Y5N8K2M",
        "req_../../admin",
        "",
    ];
    for v in wrong {
        let mut p = fixture("block_actions_approve");
        p["actions"][0]["value"] = json!(v);
        assert_eq!(parse_value(&p), Err(InteractionError::BadRequestId), "{v:?}");
    }
    let mut p = fixture("block_actions_approve");
    p["actions"][0]["value"] = json!(42);
    assert!(matches!(parse_value(&p), Err(InteractionError::BadJson { .. })));
}

#[test]
fn t11_other_element_types_are_rejected() {
    let mut p = fixture("block_actions_approve");
    p["actions"][0]["type"] = json!("static_select");
    assert_eq!(parse_value(&p), Err(InteractionError::UnknownAction));
}

#[test]
fn t11_channel_and_message_must_agree_with_the_container() {
    let mut p = fixture("block_actions_approve");
    p["channel"]["id"] = json!("C0OTHER01");
    assert_eq!(parse_value(&p), Err(InteractionError::Inconsistent));
    let mut p = fixture("block_actions_approve");
    p["message"]["ts"] = json!("1795621463.000999");
    assert_eq!(parse_value(&p), Err(InteractionError::Inconsistent));
    let mut p = fixture("block_actions_approve");
    p["container"]["type"] = json!("view");
    assert_eq!(parse_value(&p), Err(InteractionError::Field("container.type")));
    let mut p = fixture("block_actions_approve");
    p["container"]["message_ts"] = json!("yesterday");
    assert_eq!(parse_value(&p), Err(InteractionError::Field("container.message_ts")));
}

// --- identity fields (checked against configuration by the caller, t08) ------------------------------------

#[test]
fn missing_or_malformed_identity_fields_are_rejected() {
    let cases: [(&str, Value, InteractionError); 7] = [
        ("team", Value::Null, InteractionError::Field("team.id")),
        ("team", json!({"id": "E0NOTATEAM"}), InteractionError::Field("team.id")),
        ("api_app_id", Value::Null, InteractionError::Field("api_app_id")),
        ("api_app_id", json!("a0lower"), InteractionError::Field("api_app_id")),
        ("enterprise", json!({"id": "T0NOTENT1"}), InteractionError::Field("enterprise.id")),
        ("user", json!({"id": "C0NOTAUSER"}), InteractionError::Field("user.id")),
        ("user", Value::Null, InteractionError::Field("user")),
    ];
    for (key, value, want) in cases {
        let mut p = fixture("block_actions_approve");
        p[key] = value;
        assert_eq!(parse_value(&p), Err(want.clone()), "{key}");
    }
}

// --- form shape -----------------------------------------------------------------------------------------------

#[test]
fn only_a_single_payload_field_is_accepted() {
    let good = body_of(&fixture("block_actions_approve"));
    let good = std::str::from_utf8(&good).unwrap();
    let cases = [
        format!("ssl_check=1&{good}"),
        format!("{good}&ssl_check=1"),
        format!("{good}&{good}"),
        good.replacen("payload=", "payloads=", 1),
        good.replacen("payload=", "", 1),
        "payload".to_string(),
        "token=abc&team_id=T1".to_string(),
    ];
    for body in cases {
        assert!(
            matches!(parse(body.as_bytes()), Err(InteractionError::BadForm(_) | InteractionError::BadJson { .. })),
            "{}",
            &body[..body.len().min(40)]
        );
    }
    assert_eq!(parse(b""), Err(InteractionError::BadForm("empty body")));
}

#[test]
fn t04_bad_percent_encoding_and_non_utf8_are_rejected() {
    assert_eq!(parse(b"payload=%7"), Err(InteractionError::BadForm("bad percent-encoding")));
    assert_eq!(parse(b"payload=%zz"), Err(InteractionError::BadForm("bad percent-encoding")));
    assert_eq!(parse(b"payload=%FF%FE"), Err(InteractionError::NotUtf8));
    assert_eq!(parse(b"payload=\xff"), Err(InteractionError::NotUtf8));
}

#[test]
fn oversized_bodies_are_rejected_before_parsing() {
    let big = vec![b'a'; MAX_BODY_BYTES + 1];
    assert_eq!(parse(&big), Err(InteractionError::TooLarge));
}

#[test]
fn unknown_interaction_types_are_rejected() {
    for kind in ["view_closed", "message_action", "shortcut", "interactive_message", "block_suggestion"] {
        let mut p = fixture("block_actions_approve");
        p["type"] = json!(kind);
        assert_eq!(parse_value(&p), Err(InteractionError::UnsupportedType), "{kind}");
    }
    for payload in ["[]", "null", "\"block_actions\"", "{}", "{\"type\":1}", "not json"] {
        let body = format!("payload={}", form_encode(payload));
        assert!(matches!(parse(body.as_bytes()), Err(InteractionError::BadJson { .. })), "{payload}");
    }
}

// --- view submissions ---------------------------------------------------------------------------------------------

#[test]
fn view_submission_needs_our_callback_and_a_bare_request_id() {
    let mut p = fixture("view_submission_deny");
    p["view"]["callback_id"] = json!("someone_elses_modal");
    assert_eq!(parse_value(&p), Err(InteractionError::UnknownCallback));
    let mut p = fixture("view_submission_deny");
    p["view"]["private_metadata"] = json!(format!("{RID};approve"));
    assert_eq!(parse_value(&p), Err(InteractionError::BadRequestId));
    let mut p = fixture("view_submission_deny");
    p["view"]["state"]["values"] = json!({});
    assert_eq!(parse_value(&p), Err(InteractionError::Field("view.state.values.reason")));
}

#[test]
fn deny_reason_is_trimmed_required_and_bounded_in_characters() {
    let with_reason = |r: &str| {
        let mut p = fixture("view_submission_deny");
        p["view"]["state"]["values"]["reason"]["reason"]["value"] = json!(r);
        parse_value(&p)
    };
    assert_eq!(with_reason("   \n "), Err(InteractionError::EmptyReason));
    let mut p = fixture("view_submission_deny");
    p["view"]["state"]["values"]["reason"]["reason"]["value"] = Value::Null;
    assert_eq!(parse_value(&p), Err(InteractionError::EmptyReason));
    let max = "é".repeat(500);
    match with_reason(&max).unwrap() {
        Interaction::ViewSubmission(v) => assert_eq!(v.reason, max),
        other => panic!("{other:?}"),
    }
    assert_eq!(with_reason(&"é".repeat(501)), Err(InteractionError::ReasonTooLong));
}

// --- robustness -------------------------------------------------------------------------------------------------------

#[test]
fn t03_truncated_or_mangled_bodies_never_panic() {
    let body = body_of(&fixture("block_actions_approve"));
    for n in 0..body.len() {
        let _ = parse(&body[..n]);
    }
    for i in (0..body.len()).step_by(7) {
        for flip in [0x01u8, 0x20, 0x80] {
            let mut b = body.clone();
            b[i] ^= flip;
            let _ = parse(&b);
        }
    }
    // Deep nesting is refused by serde_json's recursion limit, not by a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let body = format!("payload={}", form_encode(&deep));
    assert!(matches!(parse(body.as_bytes()), Err(InteractionError::BadJson { .. })));
}

#[test]
fn errors_do_not_echo_payload_content() {
    let secret_ish = "xoxb-should-never-be-echoed";
    let payloads = [
        format!("{{\"type\":\"{secret_ish}\"}}"),
        format!("{{\"type\":\"block_actions\",\"team\":\"{secret_ish}\"}}"),
        format!("{{\"type\":\"block_actions\",\"team\":{{\"id\":\"{secret_ish}\"}}}}"),
    ];
    for p in payloads {
        let e = parse(format!("payload={}", form_encode(&p)).as_bytes()).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(secret_ish), "{shown}");
    }
}
