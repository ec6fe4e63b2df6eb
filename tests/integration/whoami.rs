//! `GET /v1/whoami` through the router, on both stores: the caller as the API identifies it, its credential
//! type, and the policies whose principals match it (names, actions, environments, never approvers, owners
//! or channels); refusals (no identity, root, an unlisted account) are audited like every route's.
//! `countersign whoami --endpoint` against local mode is in `local_mode.rs`.

use serde_json::json;

use countersign_core::service::requests::RequestSettings;
use countersign_testkit::app::{
    api_event, on_both_stores, spawn_app, spawn_app_with, Answer, StoreKind, TestApp, POLICIES,
};

const SESSION_ARN: &str = "arn:aws:sts::111122223333:assumed-role/github-deploy/run-42";

/// A policy for another role (also the candidate's new policy in `policy_replay.rs`).
pub(crate) const MIGRATIONS: &str = r#"
  - name: migrations
    principals: [arn:aws:iam::111122223333:role/migrator]
    actions: ["db:*"]
    environments: [production]
    approvers: {users: [UDBA000001]}
    required_approvals: 1
    channel: C0DATABASE
    max_ttl: 1h
"#;

async fn whoami(t: &TestApp, caller: Option<&str>, key: Option<&str>) -> Answer {
    let mut req = api_event("GET", "/v1/whoami", None, caller);
    if let Some(lambda_http::request::RequestContext::ApiGatewayV1(ctx)) = req.extensions_mut().get_mut() {
        ctx.identity.access_key = key.map(str::to_string);
    }
    t.call_api(req).await
}

async fn whoami_answers_the_identity_credential_type_and_matching_policies(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    t.apply_policies(&format!("{POLICIES}{MIGRATIONS}")).await;
    let a = whoami(&t, Some(SESSION_ARN), Some("ASIAEXAMPLE0000ABCD")).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(
        a.json,
        json!({
            "arn": SESSION_ARN,
            "principal": "arn:aws:iam::111122223333:role/github-deploy",
            "account_id": "111122223333",
            "session": "run-42",
            "credential": "temporary",
            "policies": [
                {"name": "deploy-production", "actions": ["deploy"], "environments": ["production"]},
                {"name": "staging-auto", "actions": ["deploy"], "environments": ["staging"]},
            ],
        })
    );
    let text = a.json.to_string();
    for secret in ["UALICE0001", "U0OWNER001", "S0SRE00001", "C0APPROVALS", "migrations", "ASIAEXAMPLE"] {
        assert!(!text.contains(secret), "whoami reveals only names, actions and environments: {secret} in {text}");
    }
    let a = whoami(&t, Some("arn:aws:iam::111122223333:user/legacy"), Some("AKIAEXAMPLE0000WXYZ")).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!((a.json["credential"].as_str(), a.json["session"].is_null()), (Some("long_term"), true));
    assert_eq!(a.json["policies"], json!([]), "identified, but no policy matches it");
    let a = whoami(&t, Some("arn:aws:iam::111122223333:role/migrator"), None).await;
    assert_eq!(a.json["credential"], "unknown");
    assert_eq!(a.json["policies"][0]["name"], "migrations");
    assert!(t.audit_of("request.refused").await.is_empty(), "answers are not refusals");
}

async fn whoami_refusals_are_audited_like_every_route(kind: StoreKind) {
    let listed = RequestSettings { allowed_accounts: ["111122223333".to_string()].into(), ..Default::default() };
    let Some(t) = spawn_app_with(kind, listed).await else { return };
    t.apply_policies(POLICIES).await;
    let cases = [
        (None, 401, "unauthenticated"),
        (Some("arn:aws:iam::111122223333:root"), 403, "no_matching_policy"),
        (Some("arn:aws:sts::444455556666:assumed-role/github-deploy/x1"), 403, "account_not_allowed"),
    ];
    for (i, (caller, status, code)) in cases.into_iter().enumerate() {
        let a = whoami(&t, caller, None).await;
        assert_eq!(
            (a.status.as_u16(), a.json["error"]["code"].as_str()),
            (status, Some(code)),
            "{caller:?}: {}",
            a.json
        );
        let refused = t.audit_of("request.refused").await;
        assert_eq!(refused.len(), i + 1, "{refused:?}");
        assert_eq!(refused[i].details.get("code").map(String::as_str), Some(code));
    }
    let a = t.call_api(api_event("POST", "/v1/whoami", None, Some(SESSION_ARN))).await;
    assert_eq!((a.status.as_u16(), a.json["error"]["code"].as_str()), (405, Some("method_not_allowed")));
}

on_both_stores!(
    whoami_answers_the_identity_credential_type_and_matching_policies,
    whoami_refusals_are_audited_like_every_route,
);
