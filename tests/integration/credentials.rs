//! Threat row 40, long-term shared keys: a policy with `credentials: temporary` refuses requests signed with
//! an IAM user's long-term access key (`AKIA…`) with `403 long_term_credentials`, audited with the key id's
//! last 4 characters only; and a vote is refused once a policy that now matches the request requires it.
//! Black-box through the request API and signed Slack callbacks, on both stores.

use countersign_core::domain::Status;
use serde_json::json;

use countersign_testkit::app::{on_both_stores, Posted, StoreKind};

const CI_USER: &str = "arn:aws:iam::111122223333:user/ci-legacy";
const LONG_TERM: &str = "AKIAEXAMPLE0000WXYZ";
const TEMPORARY: &str = "ASIAEXAMPLE0000ABCD";

fn policies(staging_credentials: &str) -> String {
    format!(
        r#"
version: 1
policies:
  - name: deploy-production
    principals: [{CI_USER}]
    actions: [deploy]
    environments: [production]
    approvers: {{users: [UALICE0001]}}
    required_approvals: 1
    channel: C0APPROVALS
    max_ttl: 1h
    credentials: temporary
  - name: deploy-staging
    principals: [{CI_USER}]
    actions: [deploy]
    environments: [staging]
    approvers: {{users: [UALICE0001]}}
    required_approvals: 1
    channel: C0APPROVALS
    max_ttl: 1h
    credentials: {staging_credentials}
"#
    )
}

fn body(env: &str) -> serde_json::Value {
    json!({"action": "deploy", "environment": env, "reason": "release 42"})
}

async fn t40_long_term_key_is_refused_where_the_policy_requires_temporary_credentials(kind: StoreKind) {
    let Some(t) = countersign_testkit::app::spawn_app(kind).await else { return };
    t.apply_policies(&policies("any")).await;
    let a = t.create_with_key(CI_USER, LONG_TERM, &body("production")).await;
    assert_eq!(a.status, 403, "{}", a.json);
    assert_eq!(a.json["error"]["code"], "long_term_credentials", "{}", a.json);
    let message = a.json["error"]["message"].as_str().unwrap();
    assert!(message.contains("deploy-production") && message.contains("…WXYZ"), "{message}");
    assert!(!a.json.to_string().contains("AKIAEXAMPLE"), "the key id is named by its last 4 only: {}", a.json);
    // Nothing was written but the refusal, and nothing went to Slack.
    assert!(t.audit_of("request.created").await.is_empty());
    assert!(t.slack.calls_to("chat.postMessage").is_empty());
    let refused = t.audit_of("request.refused").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    let d = &refused[0].details;
    assert_eq!(d.get("code").map(String::as_str), Some("long_term_credentials"), "{d:?}");
    assert_eq!(d.get("credential").map(String::as_str), Some("long_term"), "{d:?}");
    assert_eq!(d.get("access_key_last4").map(String::as_str), Some("WXYZ"), "{d:?}");
    assert_eq!(refused[0].actor.0, format!("aws:{CI_USER}"));
    assert!(t.audit().await.iter().all(|e| !format!("{:?}", e.details).contains("AKIAEXAMPLE")));

    // The same principal with temporary credentials is let through, and a long-term key where no
    // matching policy asks for temporary ones.
    let a = t.create_with_key(CI_USER, TEMPORARY, &body("production")).await;
    assert_eq!(a.status, 201, "{}", a.json);
    let id = a.json["id"].as_str().unwrap();
    assert_eq!(t.request(id).await.requester.access_key_id.as_deref(), Some(TEMPORARY));
    let a = t.create_with_key(CI_USER, LONG_TERM, &body("staging")).await;
    assert_eq!(a.status, 201, "{}", a.json);
}

async fn t40_a_broader_winning_policy_does_not_waive_temporary_credentials(kind: StoreKind) {
    let Some(t) = countersign_testkit::app::spawn_app(kind).await else { return };
    // `platform` needs two approvals, so it wins the match for production; `deploy-production` still
    // matches and requires temporary credentials.
    let mut file = policies("any");
    file.push_str(&format!(
        r#"  - name: platform
    principals: [{CI_USER}]
    actions: ["*"]
    environments: ["*"]
    approvers: {{users: [UALICE0001, UBOB000001]}}
    required_approvals: 2
    channel: C0APPROVALS
    max_ttl: 30m
"#
    ));
    t.apply_policies(&file).await;
    let a = t.create_with_key(CI_USER, LONG_TERM, &body("production")).await;
    assert_eq!(a.status, 403, "{}", a.json);
    assert_eq!(a.json["error"]["code"], "long_term_credentials", "{}", a.json);
    let a = t.create_with_key(CI_USER, TEMPORARY, &body("production")).await;
    assert_eq!(a.status, 201, "{}", a.json);
    assert_eq!(a.json["policy"]["name"], "platform", "{}", a.json);
}

async fn t40_vote_is_refused_once_a_policy_requires_temporary_credentials(kind: StoreKind) {
    let Some(t) = countersign_testkit::app::spawn_app(kind).await else { return };
    t.apply_policies(&policies("any")).await;
    let a = t.create_with_key(CI_USER, LONG_TERM, &body("staging")).await;
    assert_eq!(a.status, 201, "{}", a.json);
    let id = a.json["id"].as_str().unwrap().to_string();
    let r = t.request(&id).await;
    let p = Posted { id: id.clone(), channel: r.notification.channel.to_string(), ts: r.notification.ts.unwrap() };
    // The platform team tightens staging after the request went out.
    t.apply_policies(&policies("temporary")).await;
    let click = t.click("UALICE0001", "countersign_approve", &p.id, &p.channel, &p.ts);
    assert_eq!(t.call_slack(t.signed_callback(&click)).await.status, 200);
    assert_eq!(t.request(&id).await.status, Status::Pending, "the vote must not count");
    let rejected = t.audit_of("vote.rejected").await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].details.get("code").map(String::as_str), Some("long_term_credentials"));
    let replies: Vec<String> = t
        .slack
        .calls_to("response_url")
        .iter()
        .map(|c| c.body["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(replies.iter().any(|m| m.contains("temporary credentials") && m.contains("…WXYZ")), "{replies:?}");
    assert!(t.audit_of("vote.approve").await.is_empty());
}

on_both_stores!(
    t40_long_term_key_is_refused_where_the_policy_requires_temporary_credentials,
    t40_a_broader_winning_policy_does_not_waive_temporary_credentials,
    t40_vote_is_refused_once_a_policy_requires_temporary_credentials,
);
