//! Threat row 42, reviewers who approve anything: a reviewer drill is a deliberately suspicious request that
//! reviewers see as any other, that can never be redeemed, and whose message reveals it once decided or
//! expired. Black-box through the request API, signed Slack callbacks and the sweeper, on both stores; the
//! results are the domain's, computed from the store's own audit trail (the CLI prints the same, see
//! `cli::t42_*`).

use serde_json::{json, Value};

use countersign_core::domain::drill::{parse_scenarios, results};
use countersign_testkit::app::{api_event, on_both_stores, StoreKind, TestApp, DEPLOY_ARN, T0};

const POLICIES: &str = r#"
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
    drills: true
  - name: deploy-staging
    principals: [arn:aws:iam::111122223333:role/github-deploy]
    actions: [deploy]
    environments: [staging]
    approvers:
      users: [UALICE0001]
    required_approvals: 1
    channel: C0APPROVALS
    max_ttl: 1h
"#;

async fn app(kind: StoreKind) -> Option<TestApp> {
    let t = countersign_testkit::app::spawn_app(kind).await?;
    t.apply_policies(POLICIES).await;
    Some(t)
}

/// The drill body the CLI sends for the shipped scenario `name`.
fn drill_body(name: &str, env: &str) -> Value {
    let scenarios = parse_scenarios(include_str!("../../infra/drill-scenarios.yaml")).unwrap();
    let s = scenarios.iter().find(|s| s.name == name).unwrap();
    countersign::cli::drill::body(s, "deploy", env)
}

async fn send(t: &TestApp, name: &str) -> String {
    let a = t.create(DEPLOY_ARN, &drill_body(name, "production")).await;
    assert_eq!(a.status, 201, "{}", a.json);
    a.json["id"].as_str().unwrap().to_string()
}

fn posted_text(t: &TestApp, method: &str) -> Vec<String> {
    t.slack.calls_to(method).iter().map(|c| c.body.to_string()).collect()
}

async fn vote(t: &TestApp, user: &str, id: &str, deny: bool) {
    let r = t.request(id).await;
    let (channel, ts) = (r.notification.channel.to_string(), r.notification.ts.unwrap());
    let req = if deny {
        t.signed_callback(&t.deny_submission(user, id, "this commit is not on main"))
    } else {
        t.signed_callback(&t.click(user, "countersign_approve", id, &channel, &ts))
    };
    assert_eq!(t.call_slack(req).await.status, 200);
}

async fn t42_a_drill_looks_like_any_request_until_denied_then_reveals_itself(kind: StoreKind) {
    let Some(t) = app(kind).await else { return };
    let id = send(&t, "unknown-commit-at-3am").await;
    // The API's request object and the message say nothing of a drill.
    let a = t.call_api(api_event("GET", &format!("/v1/requests/{id}"), None, Some(DEPLOY_ARN))).await;
    assert_eq!(a.json["status"], "pending");
    assert!(!a.json.to_string().to_lowercase().contains("drill"), "{}", a.json);
    let posts = posted_text(&t, "chat.postMessage");
    assert_eq!(posts.len(), 1);
    assert!(!posts[0].to_lowercase().contains("drill"), "reviewers see a normal request: {}", posts[0]);
    assert!(posts[0].contains("countersign_approve") && posts[0].contains("e3b0c44"), "{}", posts[0]);
    // Only the store and the audit trail know.
    assert_eq!(t.request(&id).await.drill.as_ref().unwrap().scenario, "unknown-commit-at-3am");
    let created = &t.audit_of("request.created").await[0];
    assert_eq!(created.details.get("drill").map(String::as_str), Some("true"));
    assert_eq!(created.details.get("scenario").map(String::as_str), Some("unknown-commit-at-3am"));

    vote(&t, "UBOB000001", &id, true).await;
    let update = posted_text(&t, "chat.update").pop().expect("the message was updated");
    assert!(update.contains("This was a drill") && update.contains("well caught"), "{update}");
    assert!(update.contains("fix-tmp, not on main"), "the signs are revealed: {update}");
}

async fn t42_a_drill_can_never_be_redeemed_and_an_approved_one_is_revealed_as_failed(kind: StoreKind) {
    let Some(t) = app(kind).await else { return };
    let id = send(&t, "reason-contradicts-details").await;
    let redeem = || api_event("POST", &format!("/v1/requests/{id}/redeem"), Some("{}"), Some(DEPLOY_ARN));
    let a = t.call_api(redeem()).await;
    assert_eq!((a.status.as_u16(), a.json["error"]["code"].as_str()), (409, Some("drill")), "{}", a.json);
    vote(&t, "UALICE0001", &id, false).await;
    let a = t.call_api(api_event("GET", &format!("/v1/requests/{id}"), None, Some(DEPLOY_ARN))).await;
    assert_eq!(a.json["status"], "approved", "the status reads like any other: {}", a.json);
    let a = t.call_api(redeem()).await;
    assert_eq!((a.status.as_u16(), a.json["error"]["code"].as_str()), (409, Some("drill")), "{}", a.json);
    assert!(a.json.get("receipt").is_none());
    assert!(t.audit_of("request.redeemed").await.is_empty(), "never redeemed");
    let refused: Vec<String> =
        t.audit_of("request.refused").await.iter().filter_map(|e| e.details.get("code").cloned()).collect();
    assert_eq!(refused, ["drill", "drill"]);
    let update = posted_text(&t, "chat.update").pop().expect("updated");
    assert!(update.contains("This was a drill") && update.contains("a failed drill"), "{update}");
    assert!(update.contains("drops the refunds table"), "{update}");
}

async fn t42_drills_are_refused_under_policies_without_drills_true(kind: StoreKind) {
    let Some(t) = app(kind).await else { return };
    let a = t.create(DEPLOY_ARN, &drill_body("unknown-commit-at-3am", "staging")).await;
    assert_eq!((a.status.as_u16(), a.json["error"]["code"].as_str()), (403, Some("drills_not_allowed")), "{}", a.json);
    assert!(a.json["error"]["message"].as_str().unwrap().contains("deploy-staging"));
    let mut both = drill_body("unknown-commit-at-3am", "production");
    both["break_glass"] = json!(true);
    let a = t.create(DEPLOY_ARN, &both).await;
    assert_eq!((a.status.as_u16(), a.json["error"]["field"].as_str()), (400, Some("drill")), "{}", a.json);
    let mut bad = drill_body("unknown-commit-at-3am", "production");
    bad["drill"]["signs"] = json!([]);
    assert_eq!(t.create(DEPLOY_ARN, &bad).await.status, 400);
    assert!(t.slack.calls_to("chat.postMessage").is_empty(), "nothing reached reviewers");
}

async fn t42_an_expired_drill_is_revealed_by_the_sweeper(kind: StoreKind) {
    let Some(t) = app(kind).await else { return };
    let id = send(&t, "resource-in-unexpected-account").await;
    t.clock.advance_seconds(3601);
    t.app.sweeper().run_once().await.unwrap();
    let update = posted_text(&t, "chat.update").pop().expect("the expiry updated the message");
    assert!(update.contains("This was a drill") && update.contains("before it expired"), "{update}");
    assert!(update.contains("999988887777"), "{update}");
    assert_eq!(t.request(&id).await.status.as_str(), "expired");
}

async fn t42_results_count_each_reviewers_drills_from_the_store(kind: StoreKind) {
    let Some(t) = app(kind).await else { return };
    let caught = send(&t, "unknown-commit-at-3am").await;
    vote(&t, "UBOB000001", &caught, true).await;
    let failed = send(&t, "reason-contradicts-details").await;
    vote(&t, "UALICE0001", &failed, false).await;
    let _left = send(&t, "resource-in-unexpected-account").await;
    // A normal request is not a drill.
    let a = t.create(DEPLOY_ARN, &json!({"action": "deploy", "environment": "production"})).await;
    assert_eq!(a.status, 201);
    let policies = t.app.stores.policies.list_policies().await.unwrap();
    let r = results(&t.audit().await, &policies, T0);
    assert_eq!((r.drills, r.failed, r.denied, r.undecided), (3, 1, 1, 1), "{r:?}");
    let by = |u: &str| r.reviewers.iter().find(|x| x.user == u).cloned().unwrap();
    assert_eq!((by("UALICE0001").approved, by("UALICE0001").denied, by("UALICE0001").left), (1, 0, 2));
    assert_eq!((by("UBOB000001").approved, by("UBOB000001").denied, by("UBOB000001").left), (0, 1, 2));
    // Only drills since `since` count.
    assert_eq!(results(&t.audit().await, &policies, T0.plus_seconds(1)).drills, 0);
}

on_both_stores!(
    t42_a_drill_looks_like_any_request_until_denied_then_reveals_itself,
    t42_a_drill_can_never_be_redeemed_and_an_approved_one_is_revealed_as_failed,
    t42_drills_are_refused_under_policies_without_drills_true,
    t42_an_expired_drill_is_revealed_by_the_sweeper,
    t42_results_count_each_reviewers_drills_from_the_store,
);
