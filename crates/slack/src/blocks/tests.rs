#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::*;
use crate::fake::{message_limit_violations, modal_limit_violations};
use countersign_core::domain::request::Governing;
use countersign_core::domain::{Action, Environment, Resource};
use countersign_core::testing::sample_request as sample;

/// 2026-11-25T15:44:22Z
const T0: Timestamp = Timestamp::from_unix_millis(1_795_621_462_000);

fn u(s: &str) -> SlackUserId {
    SlackUserId::parse(s).unwrap()
}

/// The domain's sample request, dressed as the goldens show it.
fn request(required: u32) -> ApprovalRequest {
    let mut r = sample(required, T0);
    r.id = RequestId::from_parts(T0.unix_millis() as u64, 42);
    r.reason = Some("Release 2026.11.3: fixes the refund rounding bug".to_string());
    r.details.insert("commit".to_string(), "9f1c2ab".to_string());
    r.details.insert("pipeline".to_string(), "payments/main #1234".to_string());
    r.requester.access_key_id = Some("ASIAEXAMPLE00001234".to_string());
    r.policy.version = "v1".to_string();
    r
}

fn users() -> Vec<SlackUserId> {
    vec![u("UALICE01"), u("UBOB0001"), u("UCAROL01")]
}

fn groups() -> Vec<SlackGroupId> {
    vec![SlackGroupId::parse("S0SRE0001").unwrap()]
}

fn seen_before() -> History {
    History {
        same_kind_last_30_days: 2,
        last_outcome: Some((Status::Approved, Timestamp::parse_rfc3339("2026-11-20T10:00:00Z").unwrap())),
    }
}

fn first_time() -> History {
    History { same_kind_last_30_days: 0, last_outcome: None }
}

fn render(r: &ApprovalRequest, history: &History, sensitive: bool, now: Timestamp) -> Value {
    let (us, gs) = (users(), groups());
    request_message(&MessageView { request: r, approver_users: &us, approver_groups: &gs, history, sensitive, now })
}

fn golden(name: &str, actual: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden").join(format!("{name}.json"));
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(actual).unwrap() + "\n").unwrap();
        return;
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run the tests with UPDATE_GOLDEN=1 to create it", path.display()));
    let expected: Value = serde_json::from_str(&text).unwrap();
    if &expected != actual {
        let (want, got) =
            (serde_json::to_string_pretty(&expected).unwrap(), serde_json::to_string_pretty(actual).unwrap());
        let line = want
            .lines()
            .zip(got.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| want.lines().count().min(got.lines().count()));
        let around = |s: &str| s.lines().skip(line.saturating_sub(2)).take(5).collect::<Vec<_>>().join("\n");
        panic!(
            "{} differs from line {}:\n--- golden\n{}\n--- rendered\n{}\n\
             If the change is intended, rerun with UPDATE_GOLDEN=1 and review the diff.",
            path.display(),
            line + 1,
            around(&want),
            around(&got)
        );
    }
}

fn blocks_of(msg: &Value) -> &Vec<Value> {
    msg["blocks"].as_array().unwrap()
}

fn actions(msg: &Value) -> Vec<&Value> {
    blocks_of(msg).iter().filter(|b| b["type"] == "actions").collect()
}

/// Every string in the JSON, with its path.
fn strings<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((path, s)),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| strings(x, format!("{path}[{i}]"), out)),
        Value::Object(m) => m.iter().for_each(|(k, x)| strings(x, format!("{path}.{k}"), out)),
        _ => {}
    }
}

fn all_strings(v: &Value) -> Vec<(String, &str)> {
    let mut out = vec![];
    strings(v, String::new(), &mut out);
    out
}

fn has_key(v: &Value, key: &str) -> bool {
    match v {
        Value::Array(a) => a.iter().any(|x| has_key(x, key)),
        Value::Object(m) => m.contains_key(key) || m.values().any(|x| has_key(x, key)),
        _ => false,
    }
}

/// The `<…>` tokens of a mrkdwn string.
fn angle_tokens(s: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = s;
    while let Some(i) = rest.find('<') {
        let tail = &rest[i..];
        let end = tail.find('>').map_or(tail.len(), |j| j + 1);
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn assert_within_limits(msg: &Value) {
    let v = message_limit_violations(msg);
    assert!(v.is_empty(), "limit violations: {v:#?}");
    assert!(!has_key(msg, "link_names"));
}

fn assert_no_split_entities(msg: &Value) {
    for (path, s) in all_strings(msg) {
        for (i, _) in s.match_indices('&') {
            let tail = &s[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;"].iter().any(|e| tail.starts_with(e)),
                "{path}: broken escape at byte {i}: {:?}",
                &tail[..tail.len().min(8)]
            );
        }
    }
}

// --- goldens ------------------------------------------------------------------------------------------------

#[test]
fn golden_pending_with_two_approvals_required() {
    let r =
        request(2).approve(&u("UALICE01"), &Governing::as_stored(&request(2)), T0.plus_seconds(60)).unwrap().request;
    let msg = render(&r, &seen_before(), false, T0.plus_seconds(61));
    assert_within_limits(&msg);
    golden("pending_two_approvals", &msg);
}

#[test]
fn golden_pending_sensitive_has_confirm_dialog() {
    let msg = render(&request(1), &first_time(), true, T0);
    assert_within_limits(&msg);
    golden("pending_sensitive_confirm", &msg);
}

#[test]
fn golden_approved_final() {
    let r =
        request(2).approve(&u("UALICE01"), &Governing::as_stored(&request(2)), T0.plus_seconds(60)).unwrap().request;
    let r = r.approve(&u("UBOB0001"), &Governing::as_stored(&r), T0.plus_seconds(120)).unwrap().request;
    let msg = render(&r, &seen_before(), false, T0.plus_seconds(121));
    assert_within_limits(&msg);
    golden("approved_final", &msg);
}

#[test]
fn golden_denied_final_with_reason() {
    let r = request(2)
        .deny(
            &u("UBOB0001"),
            "Freeze until the incident review <#INC-42> is done",
            &Governing::as_stored(&request(2)),
            T0.plus_seconds(90),
        )
        .unwrap()
        .request;
    let msg = render(&r, &seen_before(), false, T0.plus_seconds(91));
    assert_within_limits(&msg);
    golden("denied_final_with_reason", &msg);
}

#[test]
fn golden_auto_approved() {
    let msg = render(&request(0), &seen_before(), false, T0);
    assert_within_limits(&msg);
    assert!(actions(&msg).is_empty());
    golden("auto_approved", &msg);
}

#[test]
fn golden_expired_final() {
    let r =
        request(2).approve(&u("UALICE01"), &Governing::as_stored(&request(2)), T0.plus_seconds(60)).unwrap().request;
    let r = r.expire(r.expires_at).unwrap().request;
    let msg = render(&r, &seen_before(), false, r.expires_at.plus_seconds(5));
    assert_within_limits(&msg);
    golden("expired_final", &msg);
}

const HOSTILE: &[&str] = &["<!channel>", "<!here>", "<@U123>", "<https://evil.example|Approve>", "<!everyone>"];

fn hostile_request() -> ApprovalRequest {
    let mut r = request(2);
    r.reason = Some("urgent <!channel> <!here> ping <@U123>, click <https://evil.example|Approve> & go".into());
    r.resource = Some(Resource::parse("service/<!channel>").unwrap());
    r.details = BTreeMap::from([
        ("<!here>".to_string(), "<@U123>".to_string()),
        ("link".to_string(), "<https://evil.example|Approve>".to_string()),
        ("everyone".to_string(), "<!everyone> &lt; already escaped".to_string()),
        ("x\n:lock: *Verified by AWS IAM*".to_string(), "fake heading".to_string()),
    ]);
    // Not a valid IAM session name, but the renderer must not rely on upstream validation.
    r.requester.session = Some("<!channel>".into());
    r
}

#[test]
fn t19_mrkdwn_injection_is_escaped() {
    let msg = render(&hostile_request(), &seen_before(), false, T0);
    assert_within_limits(&msg);
    let allowed_user_mentions: Vec<String> = users().iter().map(|u| format!("<@{u}>")).collect();
    for (path, s) in all_strings(&msg) {
        for bad in HOSTILE {
            assert!(!s.contains(bad), "{path} contains {bad}: {s}");
        }
        for tok in angle_tokens(s) {
            let ok = allowed_user_mentions.contains(&tok)
                || tok == "<!subteam^S0SRE0001>"
                || (tok.starts_with("<!date^") && tok.ends_with('>'));
            assert!(ok, "{path}: unexpected token {tok} in {s}");
        }
    }
    let text = msg.to_string();
    assert!(text.contains("&lt;!channel&gt;"), "escaped text is still shown");
    assert!(text.contains("&lt;https://evil.example|Approve&gt;"));
    // Already-escaped input is escaped again, so it shows literally as typed.
    assert!(text.contains("&amp;lt; already escaped"));
    // A detail key cannot start a line of its own, and shows as plain text, not as a bold heading.
    let key = plain_texts(&msg).into_iter().find(|t| t.contains("Verified")).expect("the key is shown");
    assert_eq!(key, "x :lock: *Verified by AWS IAM*");
    golden("injection", &msg);
}

#[test]
fn t19_denial_reason_is_escaped_too() {
    let r = request(1)
        .deny(&u("UBOB0001"), "see <!channel> & <@U123>", &Governing::as_stored(&request(1)), T0)
        .unwrap()
        .request;
    let msg = render(&r, &first_time(), false, T0);
    let s = msg.to_string();
    assert!(!s.contains("<!channel>") && !s.contains("<@U123>"));
    assert!(s.contains("see &lt;!channel&gt; &amp; &lt;@U123&gt;"));
}

#[test]
fn t19_fallback_text_carries_no_requester_text() {
    let msg = render(&hostile_request(), &seen_before(), false, T0);
    let text = msg["text"].as_str().unwrap();
    assert_eq!(text, format!("Approval requested: deploy → production ({})", request(2).id));
}

#[test]
fn t19_mentions_come_only_from_the_policy() {
    let msg = render(&request(1), &first_time(), false, T0);
    let who = msg.to_string();
    for u in users() {
        assert!(who.contains(&format!("<@{u}>")));
    }
    assert!(who.contains("<!subteam^S0SRE0001>"));
    let (us, gs) = (vec![], vec![]);
    let empty = request_message(&MessageView {
        request: &request(1),
        approver_users: &us,
        approver_groups: &gs,
        history: &first_time(),
        sensitive: false,
        now: T0,
    });
    let s = empty.to_string();
    assert!(!s.contains("<@") && !s.contains("<!subteam"));
    assert!(s.contains("nobody: this policy approves nothing"));
}

/// The text of every plain_text object, checking each one keeps `:shortcodes:` literal.
fn plain_texts(v: &Value) -> Vec<String> {
    let mut out = vec![];
    collect_plain(v, &mut out);
    out
}

fn collect_plain(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if m.get("type") == Some(&Value::from("plain_text")) => {
            assert_eq!(m.get("emoji"), Some(&Value::Bool(false)), "plain_text converting emoji: {v}");
            out.push(m["text"].as_str().unwrap().to_string());
        }
        Value::Object(m) => m.values().for_each(|x| collect_plain(x, out)),
        Value::Array(a) => a.iter().for_each(|x| collect_plain(x, out)),
        _ => {}
    }
}

/// The text of every mrkdwn object.
fn mrkdwn_texts(v: &Value) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) if m.get("type") == Some(&Value::from("mrkdwn")) => {
                out.push(m["text"].as_str().unwrap().to_string());
            }
            Value::Object(m) => stack.extend(m.values()),
            Value::Array(a) => stack.extend(a.iter()),
            _ => {}
        }
    }
    out
}

const IMITATION: &str = ":lock: *Verified by AWS IAM* :white_check_mark: _signed_ ~unsigned~ `ok`\n> quoted";

fn imitating_request() -> ApprovalRequest {
    let mut r = request(2);
    r.reason = Some(format!("{IMITATION} & <!here>"));
    r.resource = Some(Resource::parse("service/*Verified by AWS IAM* :white_check_mark:").unwrap());
    r.details = BTreeMap::from([
        ("*Verified by AWS IAM*".to_string(), ":white_check_mark: *Account* `111122223333`".to_string()),
        ("empty".to_string(), String::new()),
    ]);
    r
}

#[test]
fn t33_requester_text_cannot_imitate_our_formatting() {
    let msg = render(&imitating_request(), &seen_before(), false, T0);
    assert_within_limits(&msg);
    // Our own heading is the only mrkdwn that says "Verified by AWS IAM"; no mrkdwn object carries a
    // requester's word (the reason, resource and details all hold "white_check_mark" or "signed").
    for t in mrkdwn_texts(&msg) {
        assert!(!t.contains("Verified by AWS IAM") || t == ":lock: *Verified by AWS IAM*", "mrkdwn: {t}");
        assert!(!t.contains("white_check_mark") || t.starts_with(":white_check_mark: *Approved*"), "mrkdwn: {t}");
        assert!(!t.contains("signed"), "mrkdwn: {t}");
    }
    // The requester's text arrives literally, in plain_text objects that convert no emoji, still escaped.
    let plain = plain_texts(&msg);
    let want_reason = format!("{} &amp; &lt;!here&gt;", IMITATION.replace('>', "&gt;"));
    for want in [
        want_reason.as_str(),
        "service/*Verified by AWS IAM* :white_check_mark:",
        "*Verified by AWS IAM*",
        ":white_check_mark: *Account* `111122223333`",
    ] {
        assert!(plain.iter().any(|t| t == want), "{want:?} not shown literally in {plain:#?}");
    }
    // An empty value is our own marker, never an empty text object.
    assert!(mrkdwn_texts(&msg).iter().any(|t| t == "_(empty)_"));
    golden("imitation", &msg);
}

// --- escaping and truncation ----------------------------------------------------------------------------

#[test]
fn t19_escape_mrkdwn_escapes_the_three_characters() {
    assert_eq!(escape_mrkdwn("a & b < c > d"), "a &amp; b &lt; c &gt; d");
    assert_eq!(escape_mrkdwn("<!channel>"), "&lt;!channel&gt;");
    assert_eq!(escape_mrkdwn("&amp;"), "&amp;amp;");
    assert_eq!(escape_mrkdwn("é*_~`"), "é*_~`");
    assert_eq!(escape_mrkdwn(""), "");
}

#[test]
fn t20_truncate_at_limit_plus_minus_one_with_multibyte_text() {
    let s = "é".repeat(10);
    assert_eq!(truncate_escaped(&s, 11), s);
    assert_eq!(truncate_escaped(&s, 10), s);
    let cut = truncate_escaped(&s, 9);
    assert_eq!(cut, format!("{}…", "é".repeat(8)));
    assert_eq!(cut.chars().count(), 9);
    let emoji = "👍🏽".repeat(5); // 10 scalar values, 4 bytes each
    assert_eq!(truncate_escaped(&emoji, 10), emoji);
    assert_eq!(truncate_escaped(&emoji, 9).chars().count(), 9);
    assert!(truncate_escaped(&emoji, 9).ends_with('…'));
}

#[test]
fn t20_truncate_never_splits_an_escape_sequence() {
    // "aaaa&amp;b" is 10 characters.
    let s = escape_mrkdwn("aaaa&b");
    assert_eq!(s, "aaaa&amp;b");
    assert_eq!(truncate_escaped(&s, 11), s);
    assert_eq!(truncate_escaped(&s, 10), s);
    // Keeping 8 characters would end inside "&amp;": cut before it.
    assert_eq!(truncate_escaped(&s, 9), "aaaa…");
    assert_eq!(truncate_escaped(&s, 6), "aaaa…");
    assert_eq!(truncate_escaped(&s, 5), "aaaa…");
    assert_eq!(truncate_escaped(&s, 4), "aaa…");
    // The entity ends exactly at the cut: kept whole.
    let t = escape_mrkdwn("aaaa&bb");
    assert_eq!(truncate_escaped(&t, 10), "aaaa&amp;…");
    // Multibyte right before an entity.
    let m = escape_mrkdwn("éé<éé");
    assert_eq!(m, "éé&lt;éé");
    assert_eq!(truncate_escaped(&m, 7), "éé&lt;…");
    assert_eq!(truncate_escaped(&m, 6), "éé…");
    assert_eq!(truncate_escaped(&m, 3), "éé…");
}

#[test]
fn t20_truncate_edge_sizes() {
    assert_eq!(truncate_escaped("abc", 0), "");
    assert_eq!(truncate_escaped("abc", 1), "…");
    assert_eq!(truncate_escaped("", 0), "");
    assert_eq!(truncate_escaped("&amp;", 1), "…");
}

#[test]
fn t20_truncate_property_over_every_cut_point() {
    let s = escape_mrkdwn("x&<>é👍 &&a<b>ü");
    let total = s.chars().count();
    for max in 0..=total + 1 {
        let t = truncate_escaped(&s, max);
        assert!(t.chars().count() <= max, "{max}: {t}");
        if max >= total {
            assert_eq!(t, s);
            continue;
        }
        let body = t.strip_suffix('…').unwrap_or(&t);
        assert!(s.starts_with(body), "{max}: {t} is not a prefix");
        for (i, _) in body.match_indices('&') {
            let tail = &body[i..];
            assert!(["&amp;", "&lt;", "&gt;"].iter().any(|e| tail.starts_with(e)), "{max}: split escape in {t}");
        }
    }
}

#[test]
fn t20_maximal_request_stays_within_every_block_kit_limit() {
    let nasty = "&<>é".repeat(125); // 500 characters, 1750 once escaped
    let mut r = request(10);
    r.reason = Some("&<>é".repeat(2000));
    r.resource = Some(Resource::parse(&"<&>é".repeat(64)).unwrap());
    r.requester.session = Some("&<>".repeat(100));
    r.details = (0..20).map(|i| (format!("{i:02}{}", "&<".repeat(60)), nasty.clone())).collect();
    let many_users: Vec<SlackUserId> = (0..300).map(|i| u(&format!("U{i:010}"))).collect();
    let many_groups: Vec<SlackGroupId> = (0..100).map(|i| SlackGroupId::parse(&format!("S{i:010}")).unwrap()).collect();
    let history = seen_before();
    let view = MessageView {
        request: &r,
        approver_users: &many_users,
        approver_groups: &many_groups,
        history: &history,
        sensitive: true,
        now: T0,
    };
    let msg = request_message(&view);
    assert_within_limits(&msg);
    assert_no_split_entities(&msg);
    // The resource and all 20 details are shown: 21 rows of two cells, five rows to a section.
    let detail_sections = blocks_of(&msg)
        .iter()
        .filter(|b| b["type"] == "section" && b.get("text").is_none())
        .filter(|b| !b["fields"][0]["text"].as_str().unwrap().starts_with("*Policy*"))
        .count();
    assert_eq!(detail_sections, 5);
    // The reason was cut to the section limit, visibly.
    let s = msg.to_string();
    assert!(s.contains('…'));
    let who = blocks_of(&msg)
        .iter()
        .flat_map(|b| b["fields"].as_array().into_iter().flatten())
        .find_map(|f| f["text"].as_str().filter(|t| t.starts_with("*Who may approve*")))
        .unwrap();
    assert!(who.ends_with(" more"), "{who}");
    for tok in angle_tokens(who) {
        assert!(tok.ends_with('>'), "cut mention {tok}");
    }
    // The button value stays the bare request id.
    for b in actions(&msg)[0]["elements"].as_array().unwrap() {
        assert_eq!(b["value"], r.id.to_string());
    }

    // More details than can be shown: counted, not shown, still within limits.
    let mut r2 = r.clone();
    r2.details = (0..60).map(|i| (format!("k{i:02}"), nasty.clone())).collect();
    let msg = request_message(&MessageView { request: &r2, ..view });
    assert_within_limits(&msg);
    assert!(msg.to_string().contains("_40 more details not shown_"));
}

#[test]
fn t20_header_is_within_150_characters_for_the_longest_names() {
    let mut r = request(1);
    r.action = Action::parse(&"a".repeat(64)).unwrap();
    r.environment = Environment::parse(&"e".repeat(64)).unwrap();
    let msg = render(&r, &first_time(), true, T0);
    assert_within_limits(&msg);
    assert_eq!(blocks_of(&msg)[0]["type"], "header");
}

// --- structure --------------------------------------------------------------------------------------------

#[test]
fn t11_buttons_carry_only_the_request_id_and_allow_listed_ids() {
    let r = request(2);
    let msg = render(&r, &first_time(), false, T0);
    let acts = actions(&msg);
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0]["block_id"], ACTIONS_BLOCK_ID);
    let els = acts[0]["elements"].as_array().unwrap();
    assert_eq!(els.len(), 2);
    assert_eq!(els[0]["action_id"], APPROVE_ACTION_ID);
    assert_eq!(els[0]["style"], "primary");
    assert_eq!(els[1]["action_id"], DENY_ACTION_ID);
    assert_eq!(els[1]["style"], "danger");
    for e in els {
        assert_eq!(e["value"].as_str().unwrap(), r.id.to_string());
        assert!(e.get("confirm").is_none(), "no confirm unless sensitive");
    }
}

#[test]
fn sensitive_environment_puts_a_confirm_on_approve_only() {
    let msg = render(&request(2), &first_time(), true, T0);
    let acts = actions(&msg);
    let els = acts[0]["elements"].as_array().unwrap();
    assert!(els[0]["confirm"]["title"]["text"].as_str().unwrap().contains("production"));
    assert!(els[1].get("confirm").is_none());
}

#[test]
fn terminal_and_overdue_requests_have_no_buttons() {
    let pending = request(2);
    let approved = pending.approve(&u("UALICE01"), &Governing::as_stored(&pending), T0).unwrap().request;
    let approved = approved.approve(&u("UBOB0001"), &Governing::as_stored(&approved), T0).unwrap().request;
    let denied = pending.deny(&u("UALICE01"), "no", &Governing::as_stored(&pending), T0).unwrap().request;
    let cancelled = pending.cancel(&pending.requester.arn, T0).unwrap().request;
    let expired = pending.expire(pending.expires_at).unwrap().request;
    for (r, word) in [
        (&approved, "*Approved* by <@UALICE01>, <@UBOB0001>"),
        (&denied, "*Denied* by <@UALICE01>"),
        (&cancelled, "*Cancelled*"),
        (&expired, "*Expired*"),
    ] {
        let msg = render(r, &first_time(), true, pending.expires_at.plus_seconds(1));
        assert!(actions(&msg).is_empty(), "{:?} still has buttons", r.status);
        assert!(msg.to_string().contains(word), "{word}");
        assert_within_limits(&msg);
    }
    // Still `pending` in the store but past expiry: rendered as expired, no buttons.
    let msg = render(&pending, &first_time(), false, pending.expires_at);
    assert!(actions(&msg).is_empty());
    assert!(msg.to_string().contains("*Expired*"));
    assert!(msg["text"].as_str().unwrap().starts_with("Expired:"));
    // One millisecond before: buttons.
    let msg = render(&pending, &first_time(), false, pending.expires_at.plus_millis(-1));
    assert_eq!(actions(&msg).len(), 1);
}

#[test]
fn progress_line_counts_approvals_and_mentions_voters() {
    let r = request(2);
    let msg = render(&r, &first_time(), false, T0);
    assert!(msg.to_string().contains("0 of 2 approvals"));
    let r = r.approve(&u("UALICE01"), &Governing::as_stored(&r), T0).unwrap().request;
    let msg = render(&r, &first_time(), false, T0);
    assert!(msg.to_string().contains("1 of 2 approvals: <@UALICE01>"));
}

#[test]
fn t40_the_message_shows_the_credential_type_and_flags_a_long_term_key() {
    let field = |key: Option<&str>| {
        let mut r = request(1);
        r.requester.access_key_id = key.map(str::to_string);
        let msg = render(&r, &first_time(), false, T0);
        let fields = blocks_of(&msg)
            .iter()
            .find(|b| b["text"]["text"].as_str().is_some_and(|t| t.contains("Verified by AWS IAM")))
            .map(|b| b["fields"].clone())
            .unwrap();
        let f = fields.as_array().unwrap().iter().find(|f| f["text"].as_str().unwrap().starts_with("*Access key*"));
        f.unwrap()["text"].as_str().unwrap().to_string()
    };
    assert_eq!(field(Some("ASIAEXAMPLE00001234")), "*Access key*\n`…1234` temporary (STS session)");
    let long = field(Some("AKIAEXAMPLE0000WXYZ"));
    assert_eq!(long, "*Access key*\n`…WXYZ` :warning: *long-term IAM user key*");
    assert!(!long.contains("AKIA"), "never more of the key than its last 4");
    assert_eq!(field(None), "*Access key*\n—");
}

#[test]
fn verified_facts_are_separate_from_stated_ones_and_key_is_masked() {
    let msg = render(&request(1), &first_time(), false, T0);
    let blocks = blocks_of(&msg);
    let pos = |needle: &str| {
        blocks.iter().position(|b| b["text"]["text"].as_str().is_some_and(|t| t.contains(needle))).unwrap()
    };
    let verified = pos("Verified by AWS IAM");
    let stated = pos("Stated by the workload");
    assert!(verified < stated);
    assert!(blocks[verified + 1..stated].iter().any(|b| b["type"] == "divider"));
    let v = blocks[verified].to_string();
    assert!(v.contains("111122223333") && v.contains("github-deploy") && v.contains("run-42"));
    assert!(v.contains("`…1234`"));
    assert!(!msg.to_string().contains("ASIAEXAMPLE"), "full access key id must not be shown");
    // Reason, resource and details are in the stated part only.
    assert!(!v.contains("payments"));
    let end = stated + blocks[stated..].iter().position(|b| b["type"] == "divider").unwrap();
    let part = serde_json::to_string(&blocks[stated..end]).unwrap();
    assert!(part.contains("service/payments") && part.contains("refund rounding") && part.contains("9f1c2ab"));
}

#[test]
fn history_line_flags_first_request_and_counts_others() {
    let first = render(&request(1), &first_time(), false, T0).to_string();
    assert!(first.contains(":warning: *First request of its kind*"));
    let seen = render(&request(1), &seen_before(), false, T0).to_string();
    assert!(seen.contains("3rd request of this kind in 30 days; last one approved 2026-11-20"));
    for (n, want) in [(0, "1st"), (1, "2nd"), (2, "3rd"), (3, "4th"), (10, "11th"), (11, "12th"), (12, "13th")] {
        assert_eq!(ordinal(n + 1), want);
    }
    for (n, want) in [(21, "21st"), (22, "22nd"), (23, "23rd"), (101, "101st"), (111, "111th"), (112, "112th")] {
        assert_eq!(ordinal(n), want);
    }
}

#[test]
fn expiry_is_a_slack_date_token_with_rfc3339_fallback() {
    let r = request(1);
    let msg = render(&r, &first_time(), false, T0).to_string();
    let token =
        format!("<!date^{}^{{date_short_pretty}} {{time}}|{}>", r.expires_at.unix_seconds(), r.expires_at.to_rfc3339());
    assert!(msg.contains(&token), "{msg}");
}

#[test]
fn deny_modal_carries_only_the_request_id() {
    let r = request(2);
    let v = deny_modal(&r.id, &r);
    assert!(modal_limit_violations(&v).is_empty(), "{:?}", modal_limit_violations(&v));
    assert_eq!(v["type"], "modal");
    assert_eq!(v["callback_id"], DENY_MODAL_CALLBACK_ID);
    assert_eq!(v["private_metadata"], r.id.to_string());
    let input = &v["blocks"][1];
    assert_eq!(input["type"], "input");
    assert_eq!(input["block_id"], DENY_REASON_BLOCK_ID);
    assert_eq!(input["optional"], false);
    assert_eq!(input["element"]["type"], "plain_text_input");
    assert_eq!(input["element"]["action_id"], DENY_REASON_ACTION_ID);
    assert_eq!(input["element"]["max_length"], 500);
    golden("deny_modal", &v);
}

#[test]
fn t19_ephemeral_text_is_escaped_and_bounded() {
    let v = ephemeral_text("You are not an approver of <!channel> & co");
    assert_eq!(v["response_type"], "ephemeral");
    assert_eq!(v["replace_original"], false);
    assert_eq!(v["text"], "You are not an approver of &lt;!channel&gt; &amp; co");
    let long = ephemeral_text(&"<".repeat(5000));
    assert!(long["text"].as_str().unwrap().chars().count() <= limits::TEXT_OBJECT);
}

#[test]
fn mention_list_never_cuts_a_mention() {
    let toks: Vec<String> = (0..50).map(|i| format!("<@U{i:08}>")).collect();
    for max in 0..200 {
        let s = mention_list(&toks, max);
        for t in angle_tokens(&s) {
            assert!(toks.contains(&t), "{max}: {t}");
        }
        if max >= 30 {
            assert!(s.chars().count() <= max, "{max}: {s}");
        }
    }
    assert_eq!(mention_list(&toks[..2], 100), "<@U00000000>, <@U00000001>");
}

#[test]
fn t35_message_shows_the_bound_artifact_and_who_used_the_approval() {
    let mut r = sample(0, T0);
    r.artifact =
        Some(countersign_core::domain::ArtifactDigest::parse(&format!("sha256:9f2c{}e1", "0".repeat(58))).unwrap());
    let text = |r: &ApprovalRequest| render(r, &first_time(), false, T0).to_string();
    assert!(text(&r).contains("Bound to artifact sha256:9f2c…e1"), "{}", text(&r));
    r.redeemed_at = Some(T0.plus_seconds(5));
    r.redeemed_by = Some("arn:aws:sts::111122223333:assumed-role/deploy/<!here>".into());
    assert!(text(&r).contains("Used by `arn:aws:sts::111122223333:assumed-role/deploy/"), "{}", text(&r));
    assert!(!text(&r).contains("<!here>"), "the caller-chosen session name cannot mention: {}", text(&r));
    r.redeemed_at = None;
    r.unused_at = Some(T0.plus_seconds(900));
    assert!(text(&r).contains("Approved but not used in time"), "{}", text(&r));
}

// --- break-glass (row 41) -------------------------------------------------------------------------------

fn break_glass_request() -> ApprovalRequest {
    use countersign_core::domain::break_glass::{BreakGlass, BreakGlassPolicy, Notify};
    let mut r = request(2);
    r.status = Status::Approved;
    r.decided_at = Some(T0);
    r.usable_until = Some(T0.plus_seconds(900));
    let policy = BreakGlassPolicy {
        channel: countersign_core::domain::SlackChannelId::parse("C0BREAKGL").unwrap(),
        notify: Notify { users: vec![u("USECLEAD1")], groups: vec![SlackGroupId::parse("S0SECOPS1").unwrap()] },
        max_per_day: 3,
        review_within: 24 * 3600,
    };
    r.break_glass = Some(BreakGlass::new(&policy, T0));
    r
}

#[test]
fn t41_golden_break_glass_shows_the_banner_and_the_review_action_and_no_vote_buttons() {
    let r = break_glass_request();
    let msg = render(&r, &first_time(), false, T0.plus_seconds(1));
    assert_within_limits(&msg);
    let text = serde_json::to_string(&msg).unwrap();
    assert!(text.contains("BREAK-GLASS") && text.contains("<@USECLEAD1>") && text.contains("<!subteam^S0SECOPS1>"));
    let ids: Vec<&str> = actions(&msg)
        .iter()
        .flat_map(|a| a["elements"].as_array().unwrap())
        .map(|e| e["action_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["countersign_review_ok", "countersign_review_flag"]);
    for a in actions(&msg) {
        for e in a["elements"].as_array().unwrap() {
            assert_eq!(e["value"], r.id.to_string(), "the button carries the request id only");
        }
    }
    golden("break_glass_review_pending", &msg);
}

#[test]
fn t41_golden_a_flagged_break_glass_shows_who_flagged_it_and_why_without_buttons() {
    use countersign_core::domain::break_glass::Verdict;
    let r = break_glass_request();
    let flag = Verdict::Flag { reason: "No incident open <!channel>".into() };
    let r = r.review(&u("UALICE01"), &flag, T0.plus_seconds(3600)).unwrap().request;
    let msg = render(&r, &first_time(), false, T0.plus_seconds(3601));
    assert_within_limits(&msg);
    assert!(actions(&msg).is_empty());
    let text = serde_json::to_string(&msg).unwrap();
    assert!(text.contains("Flagged as misuse") && text.contains("&lt;!channel&gt;"), "{text}");
    golden("break_glass_flagged", &msg);
}

#[test]
fn t41_flag_modal_carries_only_the_request_id_and_is_within_limits() {
    let id = request(1).id;
    let v = break_glass::flag_modal(&id);
    assert!(modal_limit_violations(&v).is_empty());
    assert_eq!(v["private_metadata"], id.to_string());
    assert_eq!(v["callback_id"], "countersign_review_flag_modal");
}

#[test]
fn t42_a_drill_is_revealed_only_once_it_is_over_and_its_signs_stay_plain_text() {
    use countersign_core::domain::drill::Drill;
    let mut r = request(1);
    r.drill = Some(Drill::parse("unknown-commit", &["The commit is not on main <!channel> *bold*".into()]).unwrap());
    let pending = serde_json::to_string(&render(&r, &first_time(), false, T0)).unwrap();
    assert!(!pending.to_lowercase().contains("drill"), "a pending drill looks like any request: {pending}");
    let denied = r.deny(&u("UBOB0001"), "no", &Governing::as_stored(&r), T0).unwrap().request;
    let msg = render(&denied, &first_time(), false, T0);
    assert_within_limits(&msg);
    let signs =
        blocks_of(&msg).iter().find(|b| b["text"]["text"].as_str().is_some_and(|t| t.contains("not on main"))).unwrap();
    assert_eq!(signs["text"]["type"], "plain_text", "the sender's signs cannot format or mention");
    assert!(signs["text"]["text"].as_str().unwrap().contains("&lt;!channel&gt;"));
    let text = serde_json::to_string(&msg).unwrap();
    assert!(text.contains("This was a drill") && text.contains("well caught"), "{text}");
    let expired = r.expire(r.expires_at).unwrap().request;
    let text = serde_json::to_string(&render(&expired, &first_time(), false, r.expires_at)).unwrap();
    assert!(text.contains("This was a drill") && text.contains("before it expired"), "{text}");
}
