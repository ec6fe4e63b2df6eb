//! The policy set each process keeps (issue 18): re-read only when its generation moved, and never older
//! than the last `policy apply` that finished before a vote arrived (threat row 14 with a warm cache).
//!
//! - the generation port on both stores: every change raises it, in the same write, and the request read
//!   carries it;
//! - a vote right after `apply` removed the voter is refused, on both stores, with the process's cache warm;
//! - the same across two processes: one store instance serves the votes with its cache warm, another
//!   (`policy apply` from an operator's machine) changes the policies; embedded (two handles on one file, as
//!   `countersign dev` and the CLI) and DynamoDB (two adapters on the same tables).

use std::sync::Arc;

use axum::http::StatusCode;
use countersign_aws::dynamodb::DynamoStore;
use countersign_core::domain::policy::parse_policies;
use countersign_core::domain::{Actor, ApprovalRequest, AuditDraft, AuditKind, RequestId, Status, Timestamp};
use countersign_core::ports::{PolicyStore, Stores};
use countersign_core::service::policies;
use countersign_sqlite::EmbeddedStore;
use serde_json::json;

use countersign_testkit::app::{spawn_app, spawn_app_on, AppOptions, Posted, StoreKind, TestApp, POLICIES};
use countersign_testkit::on_both_stores;
use countersign_testkit::stores::Store;

const APPROVE: &str = "countersign_approve";
const ALL_THREE: &str = "[UALICE0001, UBOB000001, UCAROL0001]";
const WITHOUT_ALICE: &str = "[UBOB000001, UCAROL0001]";

fn approvals(r: &ApprovalRequest) -> Vec<String> {
    r.approvals.iter().map(|a| a.user_id.to_string()).collect()
}

async fn click(t: &TestApp, user: &str, p: &Posted) {
    let a = t.call_slack(t.signed_callback(&t.click(user, APPROVE, &p.id, &p.channel, &p.ts))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
}

/// `policy apply` of `yaml` through `store`, as the CLI does it.
async fn apply_through(store: &dyn PolicyStore, yaml: &str) {
    let desired = parse_policies(yaml).expect("valid policies");
    let current = store.list_policies().await.expect("list policies");
    let plan = policies::plan(&current, &desired);
    policies::apply(store, &plan, &Actor::cli("operator"), Timestamp::from_unix_millis(1_795_621_462_000))
        .await
        .expect("apply");
}

/// The last `vote.rejected` record's code.
async fn last_rejection(t: &TestApp) -> Option<String> {
    t.audit_of("vote.rejected").await.pop().and_then(|e| e.details.get("code").cloned())
}

// ---- the port --------------------------------------------------------------------------------------------

async fn generation_rises_with_every_change_and_rides_on_the_request_read<S: Store>(s: &S) {
    let draft = || AuditDraft::new(Timestamp::from_unix_millis(1), AuditKind::PolicyChanged, Actor::cli("t"), None);
    assert_eq!(s.policy_generation().await.unwrap(), 0, "no policy was ever written");
    let set = parse_policies(POLICIES).unwrap();
    for (i, p) in set.iter().enumerate() {
        s.put_policy(p, draft()).await.unwrap();
        assert_eq!(s.policy_generation().await.unwrap(), i as u64 + 1);
    }
    let loaded = s.policy_set().await.unwrap();
    assert_eq!(loaded.generation, 2);
    assert_eq!(loaded.policies, s.list_policies().await.unwrap());
    assert_eq!(loaded.policies.len(), 2);
    s.delete_policy(&set[1].name, draft()).await.unwrap();
    assert_eq!(s.policy_generation().await.unwrap(), 3, "a delete raises it too");
    assert_eq!(s.policy_set().await.unwrap().policies, vec![set[0].clone()]);
    let missing = RequestId::parse("req_01JD0000000000000000000000").unwrap();
    let (r, g) = s.get_request_and_generation(&missing).await.unwrap();
    assert!(r.is_none());
    assert!(g.is_none_or(|g| g == 3), "the generation read with the request: {g:?}");
}

#[tokio::test]
async fn embedded_generation_rises_with_every_change_and_rides_on_the_request_read() {
    let (_dir, s) = countersign_testkit::stores::embedded();
    generation_rises_with_every_change_and_rides_on_the_request_read(&*s).await;
}

#[tokio::test]
async fn dynamodb_generation_rises_with_every_change_and_rides_on_the_request_read() {
    let Some((s, _, _)) = countersign_testkit::stores::dynamo().await else { return };
    generation_rises_with_every_change_and_rides_on_the_request_read(&*s).await;
}

// ---- one process -----------------------------------------------------------------------------------------

/// Row 14 with the cache warm: Bob's vote loads and uses the set; `apply` then removes Alice; her click,
/// the very next call, is refused; Carol, still listed, completes the quorum.
async fn t14_vote_right_after_apply_removed_the_voter_is_refused(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    t.slack.set_usergroup("S0SRE00001", &["USRE000001"]);
    let p = t.pending_request().await;
    click(&t, "UBOB000001", &p).await;
    assert_eq!(approvals(&t.request(&p.id).await), ["UBOB000001"]);

    t.apply_policies(&POLICIES.replace(ALL_THREE, WITHOUT_ALICE)).await;
    click(&t, "UALICE0001", &p).await;
    let r = t.request(&p.id).await;
    assert_eq!((r.status, approvals(&r)), (Status::Pending, vec!["UBOB000001".to_string()]), "not counted");
    assert_eq!(last_rejection(&t).await.as_deref(), Some("not_approver"));

    click(&t, "UCAROL0001", &p).await;
    assert_eq!(t.request(&p.id).await.status, Status::Approved);
}

on_both_stores!(t14_vote_right_after_apply_removed_the_voter_is_refused);

// ---- two processes ---------------------------------------------------------------------------------------

/// Process A serves the votes (its cache warm from the create and a first vote); process B, another store
/// instance on the same storage, applies the policies. Every vote in A sees B's last finished apply, in
/// both directions: Alice removed → refused; Alice listed again → counted.
async fn votes_in_one_process_see_the_apply_another_process_finished(a: Stores, b: Arc<dyn PolicyStore>) {
    let t = spawn_app_on(a, Box::new(()), AppOptions::default()).await;
    t.slack.set_usergroup("S0SRE00001", &["USRE000001"]);
    let p = t.pending_request().await;
    click(&t, "UBOB000001", &p).await;

    apply_through(&*b, &POLICIES.replace(ALL_THREE, WITHOUT_ALICE)).await;
    click(&t, "UALICE0001", &p).await;
    assert_eq!(approvals(&t.request(&p.id).await), ["UBOB000001"], "Alice's vote must not count");
    assert_eq!(last_rejection(&t).await.as_deref(), Some("not_approver"));

    apply_through(&*b, POLICIES).await;
    click(&t, "UALICE0001", &p).await;
    let r = t.request(&p.id).await;
    assert_eq!(r.status, Status::Approved, "listed again, Alice's vote counts: {:?}", approvals(&r));

    // And a create in A after B removed the policy altogether is refused.
    let staging_only = POLICIES.split("  - name: staging-auto").nth(1).unwrap();
    apply_through(&*b, &format!("version: 1\npolicies:\n  - name: staging-auto{staging_only}")).await;
    let body = json!({"action": "deploy", "environment": "production", "reason": "after the apply"});
    let refused = t.create(countersign_testkit::app::DEPLOY_ARN, &body).await;
    assert_eq!(refused.status, 403, "{}", refused.json);
    assert_eq!(refused.json["error"]["code"], "no_matching_policy", "{}", refused.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_votes_in_one_process_see_the_apply_another_process_finished() {
    let (dir, a) = countersign_testkit::stores::embedded();
    let b = Arc::new(EmbeddedStore::open(dir.path()).expect("a second handle on the same file"));
    votes_in_one_process_see_the_apply_another_process_finished(Stores::from_one(a), b).await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_votes_in_one_process_see_the_apply_another_process_finished() {
    let Some((a, client, tables)) = countersign_testkit::stores::dynamo().await else { return };
    let b = Arc::new(DynamoStore::new(client, tables));
    votes_in_one_process_see_the_apply_another_process_finished(Stores::from_one(a), b).await;
}
