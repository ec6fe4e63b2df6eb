//! Redemption and receipts, black-box through the request API's router on both stores: threat rows 35 (an
//! approval is used once, by the requester, in time, for its artifact) and 36 (the receipt is a JWS anyone
//! can check with the published key). Receipts are signed by the real KMS adapter on moto's KMS (a local
//! key only when no emulator is configured, outside CI) and checked with `crate::jws`'s verifier (RustCrypto's
//! `p256` directly), not with the code that made them or the CLI's verifier.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::jws::{kms_receipts, verify_independently};
use countersign_testkit::app::{api_event, on_both_stores, Answer, StoreKind, TestApp, DEPLOY_ARN, POLICIES};

const ARTIFACT: &str = "sha256:9f2c0000000000000000000000000000000000000000000000000000000000e1";
const OTHER_ARTIFACT: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const OTHER_SESSION: &str = "arn:aws:sts::111122223333:assumed-role/github-deploy/run-43";
const OTHER_ROLE: &str = "arn:aws:sts::111122223333:assumed-role/intruder/run-42";

/// The test policies plus `bound`: auto-approved, usable for 10 minutes, bound to its session.
fn policies() -> String {
    format!(
        "{POLICIES}  - name: bound
    principals: [arn:aws:iam::111122223333:role/github-deploy]
    actions: [deploy]
    environments: [bound]
    required_approvals: 0
    channel: C0DEPLOYS
    max_ttl: 15m
    use_within: 10m
    bind_session: true
"
    )
}

async fn app(kind: StoreKind) -> Option<TestApp> {
    let opts = countersign_testkit::app::AppOptions { receipts: kms_receipts().await, ..Default::default() };
    let t = countersign_testkit::app::spawn_app_with_options(kind, opts).await?;
    t.apply_policies(&policies()).await;
    Some(t)
}

/// An auto-approved staging request (usable for the default 15 minutes), optionally bound to `artifact`.
async fn approved(t: &TestApp, environment: &str, artifact: Option<&str>) -> String {
    let mut body = json!({"action": "deploy", "environment": environment});
    if let Some(a) = artifact {
        body["artifact"] = json!(a);
    }
    let a = t.create(DEPLOY_ARN, &body).await;
    assert_eq!(a.status, 201, "{}", a.json);
    assert_eq!(a.json["status"], "approved", "{}", a.json);
    assert!(a.json["usable_until"].is_string(), "{}", a.json);
    a.json["id"].as_str().expect("id").to_string()
}

async fn redeem(t: &TestApp, caller: &str, id: &str, body: &Value) -> Answer {
    t.call_api(api_event("POST", &format!("/v1/requests/{id}/redeem"), Some(&body.to_string()), Some(caller))).await
}

async fn jwks(t: &TestApp) -> Value {
    let a = t.call_api(api_event("GET", "/v1/keys", None, Some(DEPLOY_ARN))).await;
    assert_eq!(a.status, 200, "{}", a.json);
    a.json
}

fn refusal_codes(audit: &[countersign_core::domain::AuditEvent]) -> Vec<String> {
    audit
        .iter()
        .filter(|e| e.kind.as_str() == "request.refused")
        .filter_map(|e| e.details.get("code").cloned())
        .collect()
}

async fn t36_receipt_verifies_with_the_published_key_and_names_the_redemption(kind: StoreKind) {
    let Some(t) = app(kind).await else { return };
    let id = approved(&t, "staging", Some(ARTIFACT)).await;
    let a = redeem(&t, DEPLOY_ARN, &id, &json!({"artifact": ARTIFACT})).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["request"]["redeemed_by"], DEPLOY_ARN);
    assert_eq!(a.json["request"]["artifact"], ARTIFACT);
    let receipt = a.json["receipt"].as_str().expect("a receipt");
    let keys = jwks(&t).await;
    let k = &keys["keys"][0];
    assert_eq!(
        (k["kty"].as_str(), k["crv"].as_str(), k["alg"].as_str(), k["use"].as_str()),
        (Some("EC"), Some("P-256"), Some("ES256"), Some("sig"))
    );
    let (header, claims) = verify_independently(receipt, &keys).expect("the receipt verifies");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "countersign-receipt+jwt");
    assert_eq!(claims["iss"], "countersign");
    assert_eq!(claims["sub"], "arn:aws:iam::111122223333:role/github-deploy");
    assert_eq!(claims["jti"], id.as_str());
    assert_eq!(claims["session"], DEPLOY_ARN);
    assert_eq!(claims["artifact"], ARTIFACT);
    assert_eq!(claims["action"], "deploy");
    assert_eq!(claims["environment"], "staging");
    assert_eq!(claims["policy"]["name"], "staging-auto");
    let redeemed = t.audit_of("request.redeemed").await;
    assert_eq!(redeemed.len(), 1);
    assert_eq!(claims["audit"]["seq"], redeemed[0].seq);
    assert_eq!(claims["audit"]["hash"], redeemed[0].hash.as_str());
    let usable_until = t.request(&id).await.usable_until.expect("usable_until");
    assert_eq!(claims["exp"], usable_until.unix_seconds());
    // Any changed claim breaks the signature.
    let parts: Vec<&str> = receipt.split('.').collect();
    let mut forged: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    forged["environment"] = json!("production");
    let forged = format!("{}.{}.{}", parts[0], B64.encode(forged.to_string()), parts[2]);
    assert!(verify_independently(&forged, &keys).is_err(), "a changed claim must not verify");
    countersign_core::domain::audit::verify_chain(&t.audit().await).expect("the audit chain is intact");
}

async fn t35_twenty_racing_redeems_succeed_exactly_once(kind: StoreKind) {
    let Some(t) = app(kind).await else { return };
    let id = approved(&t, "staging", None).await;
    let router = t.app.request_api();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let router = router.clone();
        let req = api_event("POST", &format!("/v1/requests/{id}/redeem"), Some("{}"), Some(DEPLOY_ARN));
        set.spawn(async move {
            let resp = router.oneshot(countersign_testkit::app::into_axum(req)).await.expect("infallible");
            let status = resp.status().as_u16();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
            (status, serde_json::from_slice::<Value>(&body).unwrap_or_default())
        });
    }
    let mut ok = 0;
    let mut refused = Vec::new();
    while let Some(r) = set.join_next().await {
        let (status, body) = r.expect("task");
        if status == 200 {
            ok += 1;
        } else {
            refused.push((status, body["error"]["code"].as_str().unwrap_or_default().to_string()));
        }
    }
    assert_eq!(ok, 1, "exactly one redemption succeeds; refusals {refused:?}");
    assert!(refused.iter().all(|(s, c)| *s == 409 && c == "already_redeemed"), "{refused:?}");
    assert_eq!(t.audit_of("request.redeemed").await.len(), 1);
    assert_eq!(refusal_codes(&t.audit().await).iter().filter(|c| *c == "already_redeemed").count(), 19);
}

async fn t35_late_other_principal_wrong_artifact_and_pending_redeems_are_refused_and_audited(kind: StoreKind) {
    let Some(t) = app(kind).await else { return };
    // Another principal: not found, as for reads.
    let id = approved(&t, "staging", Some(ARTIFACT)).await;
    let a = redeem(&t, OTHER_ROLE, &id, &json!({"artifact": ARTIFACT})).await;
    assert_eq!((a.status.as_u16(), a.json["error"]["code"].as_str()), (404, Some("not_found")), "{}", a.json);
    // A missing or different artifact.
    let a = redeem(&t, DEPLOY_ARN, &id, &json!({})).await;
    assert_eq!((a.status.as_u16(), a.json["error"]["code"].as_str()), (409, Some("artifact_mismatch")), "{}", a.json);
    let a = redeem(&t, DEPLOY_ARN, &id, &json!({"artifact": OTHER_ARTIFACT})).await;
    assert_eq!((a.status.as_u16(), a.json["error"]["code"].as_str()), (409, Some("artifact_mismatch")), "{}", a.json);
    let a = redeem(&t, DEPLOY_ARN, &id, &json!({"artifact": "sha256:XYZ"})).await;
    assert_eq!((a.status.as_u16(), a.json["error"]["field"].as_str()), (400, Some("artifact")), "{}", a.json);
    // Past usable_until (15 minutes for staging-auto).
    t.clock.advance_seconds(15 * 60);
    let a = redeem(&t, DEPLOY_ARN, &id, &json!({"artifact": ARTIFACT})).await;
    assert_eq!((a.status.as_u16(), a.json["error"]["code"].as_str()), (409, Some("approval_expired")), "{}", a.json);
    // A pending request, then the same one denied.
    let p = t.pending_request().await;
    let a = redeem(&t, DEPLOY_ARN, &p.id, &json!({})).await;
    assert_eq!((a.status.as_u16(), a.json["error"]["code"].as_str()), (409, Some("not_approved")), "{}", a.json);
    let deny = t.deny_submission("UALICE0001", &p.id, "not today");
    assert_eq!(t.call_slack(t.signed_callback(&deny)).await.status, 200);
    assert_eq!(t.request(&p.id).await.status, countersign_core::domain::Status::Denied);
    let a = redeem(&t, DEPLOY_ARN, &p.id, &json!({})).await;
    assert_eq!((a.status.as_u16(), a.json["error"]["code"].as_str()), (409, Some("not_approved")), "{}", a.json);
    assert!(a.json["error"]["message"].as_str().unwrap_or_default().contains("denied"), "{}", a.json);
    assert!(t.audit_of("request.redeemed").await.is_empty());
    let codes = refusal_codes(&t.audit().await);
    for code in ["not_found", "artifact_mismatch", "invalid_request", "approval_expired", "not_approved"] {
        assert!(codes.iter().any(|c| c == code), "{code} is audited: {codes:?}");
    }
}

async fn t35_bound_session_refuses_another_session_of_the_same_role(kind: StoreKind) {
    let Some(t) = app(kind).await else { return };
    let id = approved(&t, "bound", None).await;
    assert_eq!(t.request(&id).await.use_within, 600);
    let a = redeem(&t, OTHER_SESSION, &id, &json!({})).await;
    assert_eq!((a.status.as_u16(), a.json["error"]["code"].as_str()), (403, Some("session_mismatch")), "{}", a.json);
    assert_eq!(redeem(&t, DEPLOY_ARN, &id, &json!({})).await.status, 200);
    // Without bind_session, another session of the same role may redeem.
    let id = approved(&t, "staging", None).await;
    assert_eq!(redeem(&t, OTHER_SESSION, &id, &json!({})).await.status, 200);
}

async fn t35_an_approval_used_or_unused_says_so_in_slack_and_the_audit_trail(kind: StoreKind) {
    let Some(t) = app(kind).await else { return };
    // Voted approval, then used: the message says who used it.
    let p = t.pending_request().await;
    for user in ["UALICE0001", "UBOB000001"] {
        let click = t.click(user, "countersign_approve", &p.id, &p.channel, &p.ts);
        assert_eq!(t.call_slack(t.signed_callback(&click)).await.status, 200);
    }
    let r = t.request(&p.id).await;
    assert_eq!(r.usable_until, r.decided_at.map(|d| d.plus_seconds(900)));
    assert_eq!(redeem(&t, DEPLOY_ARN, &p.id, &json!({})).await.status, 200);
    let last = t.slack.calls_to("chat.update").last().map(|c| c.body.to_string()).unwrap_or_default();
    assert!(last.contains("Used by") && last.contains("run-42"), "{last}");
    // Auto-approved, never used: the sweeper marks it once the window closes.
    let id = approved(&t, "staging", None).await;
    t.clock.advance_seconds(15 * 60);
    let swept = t.app.sweeper().run_once().await.expect("sweeper runs");
    assert_eq!(swept.unused, 1, "{swept:?}");
    assert_eq!(t.audit_of("request.unused").await.len(), 1);
    assert!(t.request(&id).await.unused_at.is_some());
    let texts: Vec<String> = t.slack.calls_to("chat.update").iter().map(|c| c.body.to_string()).collect();
    assert!(texts.iter().any(|b| b.contains("Approved but not used in time")), "{texts:?}");
    let again = t.app.sweeper().run_once().await.expect("sweeper runs");
    assert_eq!(again.unused, 0, "marked once");
}

on_both_stores!(
    t36_receipt_verifies_with_the_published_key_and_names_the_redemption,
    t35_twenty_racing_redeems_succeed_exactly_once,
    t35_late_other_principal_wrong_artifact_and_pending_redeems_are_refused_and_audited,
    t35_bound_session_refuses_another_session_of_the_same_role,
    t35_an_approval_used_or_unused_says_so_in_slack_and_the_audit_trail,
);

/// docs/receipts.md's PyJWT snippet, run as a third party would run it, against a real receipt and JWKS.
#[tokio::test]
async fn t36_the_documented_pyjwt_snippet_verifies_a_real_receipt() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let Some(python) = countersign_testkit::emulator::test_python("the doc snippet") else { return };
    let doc = std::fs::read_to_string(root.join("docs/receipts.md")).expect("docs/receipts.md");
    let start = doc.find("```python\n# verify_receipt.py").expect("the snippet is in docs/receipts.md");
    let body = &doc[start + "```python\n".len()..];
    let snippet = &body[..body.find("\n```").expect("the snippet's block ends")];
    let Some(t) = app(StoreKind::Embedded).await else { return };
    t.clock.set(countersign_core::ports::Clock::now(&countersign_core::ports::SystemClock));
    let id = approved(&t, "staging", Some(ARTIFACT)).await;
    let a = redeem(&t, DEPLOY_ARN, &id, &json!({"artifact": ARTIFACT})).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let dir = tempfile::tempdir().unwrap();
    let (script, receipt, keys) =
        (dir.path().join("verify_receipt.py"), dir.path().join("receipt.jwt"), dir.path().join("jwks.json"));
    std::fs::write(&script, snippet).unwrap();
    std::fs::write(&receipt, a.json["receipt"].as_str().unwrap()).unwrap();
    std::fs::write(&keys, jwks(&t).await.to_string()).unwrap();
    let run = |artifact: &str| {
        std::process::Command::new(&python).arg(&script).arg(&receipt).arg(&keys).arg(artifact).output().unwrap()
    };
    let ok = run(ARTIFACT);
    let out = String::from_utf8_lossy(&ok.stdout).into_owned() + &String::from_utf8_lossy(&ok.stderr);
    assert_eq!(ok.status.code(), Some(0), "{out}");
    assert!(out.contains(&format!("valid: {id}")), "{out}");
    let wrong = run(OTHER_ARTIFACT);
    assert_eq!(wrong.status.code(), Some(1), "{}", String::from_utf8_lossy(&wrong.stderr));
    // A changed claim fails the third party's check too.
    let jws = a.json["receipt"].as_str().unwrap();
    let parts: Vec<&str> = jws.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = json!("arn:aws:iam::111122223333:role/intruder");
    std::fs::write(&receipt, format!("{}.{}.{}", parts[0], B64.encode(claims.to_string()), parts[2])).unwrap();
    assert_eq!(run(ARTIFACT).status.code(), Some(1));
}
