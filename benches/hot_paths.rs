//! Micro-benchmarks of the per-callback and per-request hot paths (criterion, text output only).
//!
//!   cargo bench --bench hot_paths                 # full run (scripts/bench does this)
//!   cargo bench --bench hot_paths -- --quick      # a shorter run
//!   cargo test --benches                          # CI smoke: each benchmark runs once, in test mode
//!
//! Inputs are the largest the API accepts where size matters: 20 details of 500 characters, a 1000-character
//! reason, a Slack payload shaped like Slack's (≈2 KB).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;

use countersign_core::domain::audit::GENESIS_HASH;
use countersign_core::domain::policy::{parse_policies, select};
use countersign_core::domain::request::{Approval, NotificationState};
use countersign_core::domain::{
    Action, Actor, ApprovalRequest, AuditDraft, AuditKind, Environment, History, Principal, RequestId, Resource,
    SlackUserId, Status, Timestamp,
};
use countersign_slack::blocks::{request_message, MessageView};
use countersign_slack::interaction;
use countersign_slack::signature::{sign, verify_any};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const T0: Timestamp = Timestamp::from_unix_millis(1_795_621_462_000);
const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
const ARN: &str = "arn:aws:sts::111122223333:assumed-role/github-deploy/run-42";

/// A `block_actions` callback body as Slack sends it (form-encoded `payload=`).
pub fn callback_body(request_id: &str) -> Vec<u8> {
    let payload = serde_json::json!({
        "type": "block_actions",
        "api_app_id": "A0APP00001",
        "team": {"id": "T0TEAM0001", "domain": "example"},
        "enterprise": null,
        "user": {"id": "UALICE0001", "username": "alice", "name": "alice", "team_id": "T0TEAM0001"},
        "container": {"type": "message", "message_ts": "1795621462.000100", "channel_id": "C0APPROVALS",
                      "is_ephemeral": false},
        "channel": {"id": "C0APPROVALS", "name": "approvals"},
        "message": {"ts": "1795621462.000100", "type": "message", "text": "Approval requested",
                    "blocks": [{"type": "section", "block_id": "countersign_header",
                                "text": {"type": "mrkdwn", "text": "*deploy* to *production* requested"}}]},
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "response_url": "https://hooks.slack.com/actions/T0TEAM0001/1234567890/abcdefghijklmnopqrstuvwx",
        "state": {"values": {}},
        "actions": [{
            "type": "button", "action_id": "countersign_approve", "block_id": "countersign_actions",
            "value": request_id, "action_ts": "1795621462.000100",
            "text": {"type": "plain_text", "text": "Approve", "emoji": true}, "style": "primary"
        }]
    });
    let mut form = String::from("payload=");
    for b in payload.to_string().bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => form.push(b as char),
            _ => form.push_str(&format!("%{b:02X}")),
        }
    }
    form.into_bytes()
}

fn signature(c: &mut Criterion) {
    let body = callback_body("req_01KAXS0C8G0000000000000007");
    let ts = T0.unix_seconds().to_string();
    let sig = sign(SECRET, &ts, &body);
    let mut g = c.benchmark_group("slack_signature");
    g.bench_function("verify_current", |b| {
        b.iter(|| verify_any(&[("AWSCURRENT", SECRET)], Some(&ts), Some(&sig), black_box(&body), T0.unix_seconds()))
    });
    // During a rotation the request may be signed with the previous secret: two HMACs.
    g.bench_function("verify_previous_after_miss", |b| {
        let other: &[u8] = b"00000000000000000000000000000000";
        b.iter(|| {
            verify_any(
                &[("AWSCURRENT", other), ("AWSPREVIOUS", SECRET)],
                Some(&ts),
                Some(&sig),
                black_box(&body),
                T0.unix_seconds(),
            )
        })
    });
    g.finish();
}

fn parse_payload(c: &mut Criterion) {
    let body = callback_body("req_01KAXS0C8G0000000000000007");
    c.bench_function("interaction_parse/block_actions", |b| b.iter(|| interaction::parse(black_box(&body)).unwrap()));
}

/// `n` policies, none of which match except the last (so every one is evaluated).
fn policies_yaml(n: usize) -> String {
    let mut s = String::from("version: 1\npolicies:\n");
    for i in 0..n {
        let (principal, env) = if i + 1 == n {
            ("arn:aws:iam::111122223333:role/github-deploy", "production")
        } else {
            ("arn:aws:iam::444455556666:role/team-*", "prod-*")
        };
        s.push_str(&format!(
            "  - name: policy-{i}\n    principals: [{principal}]\n    actions: [deploy, 'db:*']\n    \
             environments: [{env}]\n    resources: ['service/*']\n    approvers:\n      users: [UALICE0001]\n    \
             required_approvals: 1\n    channel: C0APPROVALS\n    max_ttl: 1h\n"
        ));
    }
    s
}

fn policy_eval(c: &mut Criterion) {
    let who = Principal::parse(ARN).unwrap();
    let action = Action::parse("deploy").unwrap();
    let env = Environment::parse("production").unwrap();
    let res = Resource::parse("service/payments").unwrap();
    let mut g = c.benchmark_group("policy_select");
    for n in [1usize, 100, 10_000] {
        let policies = parse_policies(&policies_yaml(n)).unwrap();
        g.bench_with_input(BenchmarkId::from_parameter(n), &policies, |b, ps| {
            b.iter(|| {
                let p = select(ps.iter(), &who, &action, &env, Some(&res));
                assert!(p.is_some());
                p.map(|p| p.required_approvals)
            })
        });
    }
    g.finish();
}

/// A request with everything the message can show: 20 details of 500 characters, a 1000-character reason with
/// mrkdwn to escape, approvals already recorded.
fn maximal_request() -> ApprovalRequest {
    let mut details = BTreeMap::new();
    for i in 0..20 {
        details.insert(format!("detail-key-{i:02}-{}", "k".repeat(48)), format!("<v&{i}> {}", "value ".repeat(82)));
    }
    let mut r = countersign_core::testing::sample_request_for(ARN, "deploy-production", 3, T0, 7);
    r.reason = Some(format!("release <42> & {}", "*bold* _it_ ".repeat(90)).chars().take(1000).collect());
    r.details = details;
    r.policy.version = "abcdef0123456789".into();
    r.approvals = vec![
        Approval { user_id: SlackUserId::parse("UALICE0001").unwrap(), at: T0.plus_seconds(10) },
        Approval { user_id: SlackUserId::parse("UBOB000001").unwrap(), at: T0.plus_seconds(20) },
    ];
    r.expires_at = T0.plus_seconds(3600);
    r.notification.state = NotificationState::Posted;
    r.notification.ts = Some("1795621462.000100".into());
    r.notification.attempts = 1;
    r.version = 3;
    r
}

fn block_kit(c: &mut Criterion) {
    let request = maximal_request();
    let users: Vec<SlackUserId> =
        (0..10).map(|i| SlackUserId::parse(&format!("UAPPROVER{i}")).unwrap()).collect::<Vec<_>>();
    let history = History { same_kind_last_30_days: 12, last_outcome: Some((Status::Denied, T0.plus_seconds(-600))) };
    let view = MessageView {
        request: &request,
        approver_users: &users,
        approver_groups: &[],
        history: &history,
        sensitive: true,
        now: T0.plus_seconds(30),
    };
    c.bench_function("block_kit/request_message_max_details", |b| {
        b.iter(|| serde_json::to_vec(&request_message(black_box(&view))).unwrap())
    });
}

fn audit_hash(c: &mut Criterion) {
    let rid = RequestId::from_parts(T0.unix_millis() as u64, 7);
    let draft = AuditDraft::new(T0, AuditKind::VoteApprove, Actor::slack("UALICE0001"), Some(rid))
        .with("policy", "deploy-production")
        .with("policy_version", "abcdef0123456789")
        .with("approvals", "1/2");
    let event = draft.clone().seal(41, GENESIS_HASH);
    let mut g = c.benchmark_group("audit");
    g.bench_function("compute_hash", |b| b.iter(|| black_box(&event).compute_hash()));
    g.bench_function("seal_draft", |b| b.iter(|| black_box(draft.clone()).seal(42, &event.hash)));
    g.finish();
}

criterion_group!(benches, signature, parse_payload, policy_eval, block_kit, audit_hash);
criterion_main!(benches);
