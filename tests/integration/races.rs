//! Races, repeated: many approvers at once on one request, one approver's vote sent many times at once, and
//! approve racing deny. Each round must end with exactly one transition, counted once, and the same outcome in
//! the store, the API, the audit trail and the Slack message.
//!
//! Rounds: 20 on the embedded store; 3 on DynamoDB, because the serialized emulator answers one call at a time
//! and a 50-way round there takes ~10 s (the per-round checks are identical).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use countersign_core::domain::{AuditEvent, RequestId, Status};
use serde_json::json;
use tower::ServiceExt;

use countersign_testkit::app::{api_event, spawn_app, Posted, StoreKind, TestApp, DEPLOY_ARN, POLICIES};
use countersign_testkit::on_both_stores;

const APPROVE: &str = "countersign_approve";

fn rounds(kind: StoreKind) -> usize {
    match kind {
        StoreKind::Embedded => 20,
        StoreKind::Dynamodb => 3,
    }
}

/// A 1-approval policy with two approvers, for the approve-versus-deny race.
fn policies_with_single_approval() -> String {
    format!(
        "{POLICIES}  - name: deploy-qa
    principals: [arn:aws:iam::111122223333:role/github-deploy]
    actions: [deploy]
    environments: [qa]
    approvers:
      users: [UALICE0001, UBOB000001]
    required_approvals: 1
    channel: C0QA
    max_ttl: 1h
"
    )
}

/// Sends every request at once (behind a barrier) and returns the statuses.
async fn all_at_once(t: &TestApp, requests: Vec<Request<Body>>) -> Vec<StatusCode> {
    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let mut tasks = tokio::task::JoinSet::new();
    for req in requests {
        let router = t.app.slack_interactions();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            router.oneshot(req).await.unwrap().status()
        });
    }
    let mut out = Vec::new();
    while let Some(s) = tasks.join_next().await {
        out.push(s.unwrap());
    }
    out
}

fn of_request<'a>(events: &'a [AuditEvent], kind: &str, id: &str) -> Vec<&'a AuditEvent> {
    events
        .iter()
        .filter(|e| e.kind.as_str() == kind && e.request_id.map(|i| i.to_string()).as_deref() == Some(id))
        .collect()
}

async fn fifty_approvers_make_one_transition_in_every_round(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let users: Vec<String> = (0..50).map(|i| format!("UAPPR{i:05}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    t.slack.set_usergroup("S0SRE00001", &refs);
    for round in 0..rounds(kind) {
        let p = t.pending_request().await;
        let reqs = users.iter().map(|u| t.signed_callback(&t.click(u, APPROVE, &p.id, &p.channel, &p.ts))).collect();
        for s in all_at_once(&t, reqs).await {
            assert_eq!(s, StatusCode::OK, "round {round}");
        }
        let r = t.request(&p.id).await;
        assert_eq!(r.status, Status::Approved, "round {round}");
        assert_eq!(r.approvals.len(), 2, "round {round}: exactly the quorum is counted");
        let audit = t.audit().await;
        assert_eq!(of_request(&audit, "request.approved", &p.id).len(), 1, "round {round}: one transition");
        assert_eq!(of_request(&audit, "vote.approve", &p.id).len(), 2, "round {round}");
        assert_eq!(of_request(&audit, "vote.rejected", &p.id).len(), 48, "round {round}");
        countersign_core::domain::audit::verify_chain(&audit).expect("the audit chain is intact");
    }
}

async fn same_vote_ten_times_at_once_counts_once_in_every_round(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    for round in 0..rounds(kind) {
        let p = t.pending_request().await;
        let reqs =
            (0..10).map(|_| t.signed_callback(&t.click("UALICE0001", APPROVE, &p.id, &p.channel, &p.ts))).collect();
        for s in all_at_once(&t, reqs).await {
            assert_eq!(s, StatusCode::OK, "round {round}");
        }
        let r = t.request(&p.id).await;
        assert_eq!(r.status, Status::Pending, "round {round}: one approver is not a quorum of two");
        let voters: Vec<String> = r.approvals.iter().map(|v| v.user_id.to_string()).collect();
        assert_eq!(voters, ["UALICE0001"], "round {round}");
        let audit = t.audit().await;
        assert_eq!(of_request(&audit, "vote.approve", &p.id).len(), 1, "round {round}: counted once");
        assert_eq!(of_request(&audit, "vote.duplicate", &p.id).len(), 9, "round {round}");
        // Cancel it so the pending cap never bites in later rounds.
        let a = t.call_api(api_event("POST", &format!("/v1/requests/{}/cancel", p.id), Some("{}"), Some(DEPLOY_ARN)));
        assert_eq!(a.await.status, 200, "round {round}: cancel");
    }
}

async fn approve_racing_deny_has_one_outcome_everywhere(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    t.apply_policies(&policies_with_single_approval()).await;
    let (mut approved, mut denied) = (0, 0);
    for round in 0..rounds(kind) {
        let a = t.create(DEPLOY_ARN, &json!({"action": "deploy", "environment": "qa", "reason": "race"})).await;
        assert_eq!(a.status, 201, "{}", a.json);
        let id = a.json["id"].as_str().unwrap().to_string();
        let r = t.request(&id).await;
        let p = Posted {
            id: id.clone(),
            channel: r.notification.channel.to_string(),
            ts: r.notification.ts.clone().expect("posted"),
        };
        // Alternate who goes first into the barrier so neither side always wins.
        let approve = t.signed_callback(&t.click("UALICE0001", APPROVE, &p.id, &p.channel, &p.ts));
        let deny = t.signed_callback(&t.deny_submission("UBOB000001", &p.id, "not now"));
        let reqs = if round % 2 == 0 { vec![approve, deny] } else { vec![deny, approve] };
        for s in all_at_once(&t, reqs).await {
            assert_eq!(s, StatusCode::OK, "round {round}");
        }
        // Flush any message update a busy Slack call left to the relay.
        t.app.sweeper().run_once().await.unwrap();

        let stored = t.request(&id).await;
        let audit = t.audit().await;
        let (n_approved, n_denied) =
            (of_request(&audit, "request.approved", &id).len(), of_request(&audit, "request.denied", &id).len());
        let got = t.call_api(api_event("GET", &format!("/v1/requests/{id}"), None, Some(DEPLOY_ARN))).await;
        assert_eq!(got.status, 200);
        let msg = t.slack.messages().into_iter().find(|m| m.ts == p.ts).expect("the request's message");
        let blocks = msg.blocks.to_string();
        assert!(!blocks.contains(APPROVE), "round {round}: buttons remain after the decision: {blocks}");
        assert!(!stored.notification.update_pending, "round {round}: an update is still owed");
        match stored.status {
            Status::Approved => {
                approved += 1;
                assert_eq!((n_approved, n_denied), (1, 0), "round {round}: audit disagrees with the store");
                assert_eq!(got.json["status"], "approved", "round {round}");
                assert!(blocks.contains("*Approved*") && !blocks.contains("*Denied*"), "round {round}: {blocks}");
            }
            Status::Denied => {
                denied += 1;
                assert_eq!((n_approved, n_denied), (0, 1), "round {round}: audit disagrees with the store");
                assert_eq!(got.json["status"], "denied", "round {round}");
                assert!(blocks.contains("*Denied*") && !blocks.contains("*Approved*"), "round {round}: {blocks}");
            }
            other => panic!("round {round}: one of the two must have decided it, got {other:?}"),
        }
        countersign_core::domain::audit::verify_chain(&audit).expect("the audit chain is intact");
        let rid = RequestId::parse(&id).unwrap();
        assert!(t.app.stores.requests.get_request(&rid).await.unwrap().is_some());
    }
    eprintln!("approve vs deny over {} rounds: {approved} approved, {denied} denied", rounds(kind));
}

on_both_stores!(
    workers = 4;
    fifty_approvers_make_one_transition_in_every_round,
    same_vote_ten_times_at_once_counts_once_in_every_round,
    approve_racing_deny_has_one_outcome_everywhere,
);
