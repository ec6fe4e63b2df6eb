//! End-to-end smoke: a request created through the API, approved by two signed clicks, on both stores.

use serde_json::json;

use countersign_testkit::app::{spawn_app, StoreKind, DEPLOY_ARN};

async fn request_then_two_approvals_approve_it(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let a =
        t.create(DEPLOY_ARN, &json!({"action": "deploy", "environment": "production", "reason": "release 42"})).await;
    assert_eq!(a.status, 201, "{}", a.json);
    assert_eq!(a.json["status"], "pending");
    assert_eq!(a.json["notification"], "posted");
    let id = a.json["id"].as_str().unwrap().to_string();
    let msgs = t.slack.messages();
    assert_eq!(msgs.len(), 1);
    let (channel, ts) = (msgs[0].channel.clone(), msgs[0].ts.clone());
    for user in ["UALICE0001", "UBOB000001"] {
        let r = t.call_slack(t.signed_callback(&t.click(user, "countersign_approve", &id, &channel, &ts))).await;
        assert_eq!(r.status, 200, "{}", r.json);
    }
    let got = t
        .call_api(countersign_testkit::app::api_event("GET", &format!("/v1/requests/{id}"), None, Some(DEPLOY_ARN)))
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json["status"], "approved");
    assert_eq!(got.json["approvals"].as_array().unwrap().len(), 2);
    let msgs = t.slack.messages();
    assert_eq!(msgs.len(), 1, "one request, one message");
    assert!(!msgs[0].updates.is_empty(), "the message was updated");
}

#[tokio::test]
async fn embedded_request_then_two_approvals_approve_it() {
    request_then_two_approvals_approve_it(StoreKind::Embedded).await;
}

#[tokio::test]
async fn dynamodb_request_then_two_approvals_approve_it() {
    request_then_two_approvals_approve_it(StoreKind::Dynamodb).await;
}
