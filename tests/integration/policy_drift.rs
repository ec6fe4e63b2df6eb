//! Policies that change or overlap under a pending request, black-box through signed Slack callbacks on
//! both stores: threat rows 30 (owners belong to the identity, not to one policy) and 31 (a policy changed
//! under a pending request needs `max(stored, current)` approvals).

use countersign_core::domain::{ApprovalRequest, PolicyName, Status};
use serde_json::json;

use countersign_testkit::app::{on_both_stores, Answer, Posted, StoreKind, TestApp, DEPLOY_ARN, POLICIES};

const APPROVE: &str = "countersign_approve";
const DENY: &str = "countersign_deny";
const OWNER: &str = "U0OWNER001";

async fn click(t: &TestApp, user: &str, action: &str, p: &Posted) -> Answer {
    t.call_slack(t.signed_callback(&t.click(user, action, &p.id, &p.channel, &p.ts))).await
}

fn ephemeral_texts(t: &TestApp) -> Vec<String> {
    t.slack.calls_to("response_url").iter().map(|c| c.body["text"].as_str().unwrap_or_default().to_string()).collect()
}

fn approvals(r: &ApprovalRequest) -> Vec<String> {
    r.approvals.iter().map(|a| a.user_id.to_string()).collect()
}

/// A pending request for `action` in `environment` by the deploy role, and where its message is.
async fn pending(t: &TestApp, action: &str, environment: &str) -> Posted {
    let a = t.create(DEPLOY_ARN, &json!({"action": action, "environment": environment, "reason": "r"})).await;
    assert_eq!(a.status, 201, "{}", a.json);
    assert_eq!(a.json["status"], "pending", "{}", a.json);
    let id = a.json["id"].as_str().expect("id").to_string();
    let r = t.request(&id).await;
    Posted { id, channel: r.notification.channel.to_string(), ts: r.notification.ts.clone().expect("posted") }
}

/// The owner clicks Approve and Deny and submits the deny dialog: each is refused as an owner, audited,
/// and changes nothing.
async fn assert_owner_refused_everywhere(t: &TestApp, p: &Posted) {
    let before = t.request(&p.id).await;
    let rejected_before = t.audit_of("vote.rejected").await.len();
    let replies_before = ephemeral_texts(t).len();
    for action in [APPROVE, DENY] {
        assert_eq!(click(t, OWNER, action, p).await.status, 200);
    }
    let a = t.call_slack(t.signed_callback(&t.deny_submission(OWNER, &p.id, "mine"))).await;
    assert_eq!(a.json["response_action"], "errors", "{}", a.json);
    let modal_error = a.json["errors"].to_string();
    assert!(modal_error.contains("own the identity"), "{modal_error}");
    assert_eq!(t.request(&p.id).await, before, "the owner changed the request");
    assert!(t.slack.calls_to("views.open").is_empty(), "the owner got the deny dialog");
    let rejected = t.audit_of("vote.rejected").await;
    assert_eq!(rejected.len(), rejected_before + 3, "every refusal is audited");
    for e in &rejected[rejected_before..] {
        assert_eq!(e.actor.0, format!("slack:{OWNER}"));
        assert_eq!(e.request_id.map(|i| i.to_string()), Some(p.id.clone()));
        assert_eq!(e.details.get("code").map(String::as_str), Some("not_approver"), "{:?}", e.details);
    }
    let replies = ephemeral_texts(t);
    assert_eq!(replies.len(), replies_before + 2, "{replies:?}");
    assert!(replies[replies_before..].iter().all(|m| m.contains("own the identity")), "{replies:?}");
    assert!(t.audit_of("vote.approve").await.iter().all(|e| e.actor.0 != format!("slack:{OWNER}")));
}

// ---- row 30: owners belong to the identity -------------------------------------------------------------

/// `deploy-production` (narrow, 1 approval) is owned by U0OWNER001. `platform` covers every action and
/// environment of the same role, lists the owner among its approvers (directly and through its group),
/// needs 2 approvals and so wins the production match.
const NARROW_AND_PLATFORM: &str = r#"
version: 1
policies:
  - name: deploy-production
    principals: [arn:aws:iam::111122223333:role/github-deploy]
    actions: [deploy]
    environments: [production]
    approvers:
      users: [UALICE0001, UBOB000001]
    required_approvals: 1
    owners: [U0OWNER001]
    channel: C0APPROVALS
    max_ttl: 1h
  - name: platform
    principals: [arn:aws:iam::111122223333:role/github-*]
    actions: ["*"]
    environments: ["*"]
    approvers:
      users: [U0OWNER001, UALICE0001, UBOB000001]
      groups: [S0PLATFORM1]
    required_approvals: 2
    channel: C0PLATFORM
    max_ttl: 1h
"#;

async fn t30_owner_of_a_narrow_policy_cannot_approve_through_a_broader_one(kind: StoreKind) {
    let Some(t) = countersign_testkit::app::spawn_app(kind).await else { return };
    t.apply_policies(NARROW_AND_PLATFORM).await;
    t.slack.set_usergroup("S0PLATFORM1", &[OWNER, "USRE000001"]);
    let p = pending(&t, "deploy", "production").await;
    let r = t.request(&p.id).await;
    assert_eq!(r.policy.name.as_str(), "platform", "the broader policy wins the match");
    assert_owner_refused_everywhere(&t, &p).await;
    // Control: the platform policy's other approvers still count (so the refusal above is the owner's).
    assert_eq!(click(&t, "UALICE0001", APPROVE, &p).await.status, 200);
    assert_eq!(click(&t, "UBOB000001", APPROVE, &p).await.status, 200);
    let r = t.request(&p.id).await;
    assert_eq!(r.status, Status::Approved);
    assert_eq!(approvals(&r), ["UALICE0001", "UBOB000001"]);
}

/// The owner is listed only in a policy for other actions and environments of the same identity. The
/// request is governed by a policy without owners whose approver group Slack cannot resolve: the owner's
/// refusal does not depend on group lookups (a non-owner gets "try again").
const OWNER_ELSEWHERE: &str = r#"
version: 1
policies:
  - name: deploy-production
    principals: [arn:aws:iam::111122223333:role/github-deploy]
    actions: [deploy]
    environments: [production]
    approvers:
      users: [UALICE0001]
    required_approvals: 1
    owners: [U0OWNER001]
    channel: C0APPROVALS
    max_ttl: 1h
  - name: restart-staging
    principals: [arn:aws:iam::111122223333:role/github-deploy]
    actions: [restart]
    environments: [staging]
    approvers:
      users: [UALICE0001]
      groups: [S0NOSUCH01]
    required_approvals: 1
    channel: C0STAGING
    max_ttl: 1h
"#;

async fn t30_owner_listed_only_under_other_actions_is_still_refused(kind: StoreKind) {
    let Some(t) = countersign_testkit::app::spawn_app(kind).await else { return };
    t.apply_policies(OWNER_ELSEWHERE).await;
    let p = pending(&t, "restart", "staging").await;
    assert_eq!(t.request(&p.id).await.policy.name.as_str(), "restart-staging");
    assert_owner_refused_everywhere(&t, &p).await;
    // Control: the group really cannot be resolved, so anyone else outside the user list is asked to retry.
    assert_eq!(click(&t, "USRE000001", APPROVE, &p).await.status, 200);
    assert!(ephemeral_texts(&t).last().is_some_and(|m| m.contains("try again")), "{:?}", ephemeral_texts(&t));
    assert_eq!(click(&t, "UALICE0001", APPROVE, &p).await.status, 200);
    assert_eq!(t.request(&p.id).await.status, Status::Approved);
}

// ---- row 31: a policy changed under a pending request --------------------------------------------------

/// The version of the policy `name` as stored now.
async fn version_of(t: &TestApp, name: &str) -> String {
    let name = PolicyName::parse(name).unwrap();
    t.app.stores.policies.get_policy(&name).await.unwrap().expect("policy exists").version()
}

/// The text of the request's Slack message as the fake holds it (every `chat.update` applied).
fn message_text(t: &TestApp, p: &Posted) -> String {
    let m = t.slack.messages().into_iter().find(|m| m.ts == p.ts && m.thread_ts.is_none()).expect("the message");
    m.blocks.to_string()
}

async fn t31_tightened_policy_needs_the_raised_quorum(kind: StoreKind) {
    let Some(t) = countersign_testkit::app::spawn_app(kind).await else { return };
    let one_of_n = POLICIES.replace("required_approvals: 2", "required_approvals: 1");
    t.apply_policies(&one_of_n).await;
    let p = t.pending_request().await;
    let created = t.request(&p.id).await;
    assert_eq!(created.required_approvals, 1);
    let old_version = created.policy.version.clone();
    assert!(message_text(&t, &p).contains("0 of 1 approval"), "{}", message_text(&t, &p));

    // The policy is tightened to 2 while the request waits.
    t.apply_policies(POLICIES).await;
    let new_version = version_of(&t, "deploy-production").await;
    assert_ne!(new_version, old_version);
    let updates_before = t.slack.calls_to("chat.update").len();
    assert_eq!(click(&t, "UALICE0001", APPROVE, &p).await.status, 200);
    let r = t.request(&p.id).await;
    assert_eq!(r.status, Status::Pending, "one approval must not complete a quorum raised to two");
    assert_eq!(r.required_approvals, 2, "the raised quorum is stored");
    assert_eq!(r.policy.version, old_version, "the stored policy stays the one the request was created under");
    assert_eq!(approvals(&r), ["UALICE0001"]);
    assert!(t.audit_of("request.approved").await.is_empty());
    assert!(t.slack.calls_to("chat.update").len() > updates_before, "the message was updated");
    let text = message_text(&t, &p);
    assert!(text.contains("1 of 2 approvals"), "{text}");
    assert!(!r.notification.update_pending, "nothing is left owed to the message");

    // The vote's audit record names both versions and the raised quorum.
    let votes = t.audit_of("vote.approve").await;
    assert_eq!(votes.len(), 1);
    let d = &votes[0].details;
    let field = |k: &str| d.get(k).map(String::as_str);
    assert_eq!(field("policy"), Some("deploy-production"), "{d:?}");
    assert_eq!(field("policy_version"), Some(old_version.as_str()), "{d:?}");
    assert_eq!(field("current_policy"), Some("deploy-production"), "{d:?}");
    assert_eq!(field("current_policy_version"), Some(new_version.as_str()), "{d:?}");
    assert_eq!(field("required_approvals"), Some("2"), "{d:?}");
    assert_eq!(field("previous_required_approvals"), Some("1"), "{d:?}");
    assert_eq!(field("approvals"), Some("1/2"), "{d:?}");

    // A second approver of the current policy completes it.
    assert_eq!(click(&t, "UBOB000001", APPROVE, &p).await.status, 200);
    let r = t.request(&p.id).await;
    assert_eq!(r.status, Status::Approved);
    assert_eq!(approvals(&r), ["UALICE0001", "UBOB000001"]);
    assert_eq!(t.audit_of("request.approved").await.len(), 1);
    countersign_core::domain::audit::verify_chain(&t.audit().await).expect("the audit chain is intact");
}

async fn t31_loosened_policy_keeps_the_stored_quorum(kind: StoreKind) {
    let Some(t) = countersign_testkit::app::spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    assert_eq!(t.request(&p.id).await.required_approvals, 2);
    t.apply_policies(&POLICIES.replace("required_approvals: 2", "required_approvals: 1")).await;
    assert_eq!(click(&t, "UALICE0001", APPROVE, &p).await.status, 200);
    let r = t.request(&p.id).await;
    assert_eq!(r.status, Status::Pending, "loosening a policy never lowers a pending request's quorum");
    assert_eq!(r.required_approvals, 2);
    assert!(message_text(&t, &p).contains("1 of 2 approvals"), "{}", message_text(&t, &p));
    let votes = t.audit_of("vote.approve").await;
    let d = &votes[0].details;
    assert_ne!(d.get("policy_version"), d.get("current_policy_version"), "{d:?}");
    assert_eq!(d.get("approvals").map(String::as_str), Some("1/2"), "{d:?}");
    assert_eq!(click(&t, "UBOB000001", APPROVE, &p).await.status, 200);
    assert_eq!(t.request(&p.id).await.status, Status::Approved);
}

/// The request moves to another policy (a stricter one for the same identity is added): the votes count
/// under it, from its approvers, with its quorum.
async fn t31_request_governed_by_another_policy_uses_its_quorum_and_approvers(kind: StoreKind) {
    let Some(t) = countersign_testkit::app::spawn_app(kind).await else { return };
    let p = t.pending_request().await; // deploy-production, 2 of N
    let stricter = format!(
        "{POLICIES}  - name: production-freeze\n    principals: [arn:aws:iam::111122223333:role/github-deploy]\n    \
         actions: [deploy]\n    environments: [production]\n    approvers:\n      users: [UCAROL0001, UDAVE00001, \
         UERIN00001]\n    required_approvals: 3\n    channel: C0APPROVALS\n    max_ttl: 1h\n"
    );
    t.apply_policies(&stricter).await;
    // Alice approves deploy-production, not production-freeze, which now governs: refused.
    assert_eq!(click(&t, "UALICE0001", APPROVE, &p).await.status, 200);
    assert!(ephemeral_texts(&t).last().is_some_and(|m| m.contains("not an approver")), "{:?}", ephemeral_texts(&t));
    for user in ["UCAROL0001", "UDAVE00001"] {
        assert_eq!(click(&t, user, APPROVE, &p).await.status, 200);
    }
    let r = t.request(&p.id).await;
    assert_eq!(r.status, Status::Pending, "two approvals do not make production-freeze's three");
    assert_eq!(r.required_approvals, 3);
    assert!(message_text(&t, &p).contains("2 of 3 approvals"), "{}", message_text(&t, &p));
    let votes = t.audit_of("vote.approve").await;
    assert_eq!(votes.len(), 2);
    for v in &votes {
        assert_eq!(v.details.get("policy").map(String::as_str), Some("deploy-production"), "{:?}", v.details);
        assert_eq!(v.details.get("current_policy").map(String::as_str), Some("production-freeze"), "{:?}", v.details);
    }
    assert_eq!(click(&t, "UERIN00001", APPROVE, &p).await.status, 200);
    assert_eq!(t.request(&p.id).await.status, Status::Approved);
}

/// Alice approves a 2-of-N request; the policy is then re-applied without her. Her approval stays recorded
/// (she cannot vote again) but no longer counts: the quorum is met from the current policy's approvers only.
async fn t31_approvals_of_removed_approvers_stop_counting_under_a_changed_policy(kind: StoreKind) {
    let Some(t) = countersign_testkit::app::spawn_app(kind).await else { return };
    // Alice's earlier approval is re-checked against the current policy, its group included.
    t.slack.set_usergroup("S0SRE00001", &["USRE000001"]);
    let p = t.pending_request().await;
    assert_eq!(click(&t, "UALICE0001", APPROVE, &p).await.status, 200);
    assert_eq!(approvals(&t.request(&p.id).await), ["UALICE0001"]);

    t.apply_policies(
        &POLICIES.replace("users: [UALICE0001, UBOB000001, UCAROL0001]", "users: [UBOB000001, UCAROL0001]"),
    )
    .await;
    assert_eq!(click(&t, "UBOB000001", APPROVE, &p).await.status, 200);
    let r = t.request(&p.id).await;
    assert_eq!(r.status, Status::Pending, "Alice, no longer an approver, must not complete the quorum");
    assert_eq!(approvals(&r), ["UBOB000001"], "Alice's approval left the count; replies {:?}", ephemeral_texts(&t));
    assert!(message_text(&t, &p).contains("1 of 2 approvals"), "{}", message_text(&t, &p));
    let votes = t.audit_of("vote.approve").await;
    let d = &votes.last().expect("Bob's vote").details;
    assert_eq!(d.get("discounted_approvals").map(String::as_str), Some("UALICE0001"), "{d:?}");
    assert_eq!(d.get("approvals").map(String::as_str), Some("1/2"), "{d:?}");

    // Alice cannot vote again; Carol, a current approver, completes it.
    assert_eq!(click(&t, "UALICE0001", APPROVE, &p).await.status, 200);
    assert_eq!(approvals(&t.request(&p.id).await), ["UBOB000001"]);
    assert_eq!(click(&t, "UCAROL0001", APPROVE, &p).await.status, 200);
    let r = t.request(&p.id).await;
    assert_eq!(r.status, Status::Approved);
    assert_eq!(approvals(&r), ["UBOB000001", "UCAROL0001"]);
    countersign_core::domain::audit::verify_chain(&t.audit().await).expect("the audit chain is intact");
}

on_both_stores!(
    t30_owner_of_a_narrow_policy_cannot_approve_through_a_broader_one,
    t30_owner_listed_only_under_other_actions_is_still_refused,
    t31_tightened_policy_needs_the_raised_quorum,
    t31_loosened_policy_keeps_the_stored_quorum,
    t31_request_governed_by_another_policy_uses_its_quorum_and_approvers,
    t31_approvals_of_removed_approvers_stop_counting_under_a_changed_policy,
);
