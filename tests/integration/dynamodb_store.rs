//! The DynamoDB store against a DynamoDB emulator (moto's server).
//!
//! Run with `AWS_ENDPOINT_URL=http://127.0.0.1:PORT AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
//! AWS_REGION=us-east-1`. Without `AWS_ENDPOINT_URL` every test prints a notice and passes, except under
//! `CI=true`, where a missing emulator is a failure. The endpoint must be a loopback address: these tests
//! create and fill tables and must never reach a real account. Each test uses its own table prefix.
//!
//! Start the emulator with `scripts/moto_serial.py 127.0.0.1 PORT` (moto's app, one request at a time),
//! not plain `moto_server`: moto's threaded server does not isolate concurrent `TransactWriteItems` (a
//! cancelled transaction restores a snapshot of the whole table over writes that committed meanwhile),
//! so the concurrency tests below fail there now and then although the store is right on DynamoDB.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use countersign_aws::dynamodb::{create_tables, keys, DynamoStore, TableNames};
use countersign_core::domain::audit::verify_chain;
use countersign_core::domain::policy::parse_policies;
use countersign_core::domain::request::{Governing, NotificationState, VoteDecision};
use countersign_core::domain::*;
use countersign_core::ports::{
    AuditLog, Commit, Conflict, CreateOutcome, Guard, PolicyStore, RequestStore, StoreError,
};

const T0: Timestamp = Timestamp::from_unix_millis(1_795_621_462_000);
const ROLE: &str = "arn:aws:sts::111122223333:assumed-role/github-deploy/run-42";
const OTHER_ROLE: &str = "arn:aws:sts::111122223333:assumed-role/nightly-job/run-7";

struct Harness {
    client: Client,
    tables: TableNames,
    store: Arc<DynamoStore>,
}

/// A fresh set of tables for one test, or `None` (with a notice, once) when no emulator is configured.
async fn harness(_test: &str) -> Option<Harness> {
    let (store, client, tables) = countersign_testkit::stores::dynamo().await?;
    Some(Harness { client, tables, store })
}

macro_rules! harness {
    ($name:literal) => {
        match harness($name).await {
            Some(h) => h,
            None => return,
        }
    };
}

fn u(s: &str) -> SlackUserId {
    SlackUserId::parse(s).unwrap()
}

/// A request as the service would build it (`countersign_core::testing`), with a distinguishing `n` in its id.
fn sample(required: u32, now: Timestamp, n: u128) -> ApprovalRequest {
    sample_for(ROLE, "deploy-production", required, now, n)
}

fn sample_for(arn: &str, policy: &str, required: u32, now: Timestamp, n: u128) -> ApprovalRequest {
    countersign_core::testing::sample_request_for(arn, policy, required, now, n)
}

async fn create(store: &DynamoStore, r: &ApprovalRequest, max_pending: u32) -> CreateOutcome {
    store.create_request(r, r.creation_events(), max_pending).await.unwrap()
}

fn commit_of(t: Transition, expected_version: u64, guard: Guard) -> Commit {
    Commit { expected_version, request: t.request, vote: t.vote, events: t.events, guard }
}

async fn whole_chain(store: &DynamoStore) -> Vec<AuditEvent> {
    store.read_from(1, usize::MAX).await.unwrap()
}

fn kinds(events: &[AuditEvent]) -> Vec<AuditKind> {
    events.iter().map(|e| e.kind).collect()
}

#[tokio::test]
async fn create_tables_is_idempotent_and_refuses_a_table_of_another_shape() {
    let h = harness!("create_tables_is_idempotent_and_refuses_a_table_of_another_shape");
    create_tables(&h.client, &h.tables).await.expect("second create_tables");

    // A requests table keyed differently under another prefix must be refused, by name.
    let other = TableNames::with_prefix(&format!("cs-{}", ulid::Ulid::new().to_string().to_lowercase()));
    h.client
        .create_table()
        .table_name(&other.requests)
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    match create_tables(&h.client, &other).await {
        Err(StoreError::Other(m)) => assert!(m.contains(&other.requests), "{m}"),
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[tokio::test]
async fn created_request_reads_back_equal_with_its_audit_records() {
    let h = harness!("created_request_reads_back_equal_with_its_audit_records");
    let mut r = sample(2, T0, 1);
    r.details.insert("commit".into(), "abc123".into());
    assert_eq!(create(&h.store, &r, 5).await, CreateOutcome::Created);
    assert_eq!(h.store.get_request(&r.id).await.unwrap(), Some(r.clone()));
    assert_eq!(h.store.get_request(&RequestId::from_parts(1, 1)).await.unwrap(), None);

    let trail = h.store.for_request(&r.id).await.unwrap();
    assert_eq!(kinds(&trail), vec![AuditKind::RequestCreated]);
    assert_eq!(trail[0].seq, 1);
    assert_eq!(h.store.last().await.unwrap(), Some(trail[0].clone()));
    verify_chain(&whole_chain(&h.store).await).unwrap();

    // The same id again is a bug, not a conflict, and writes nothing.
    assert!(matches!(h.store.create_request(&r, r.creation_events(), 5).await, Err(StoreError::Other(_))));
    assert_eq!(whole_chain(&h.store).await.len(), 1);
}

#[tokio::test]
async fn same_idempotency_key_returns_the_first_request_and_writes_nothing() {
    let h = harness!("same_idempotency_key_returns_the_first_request_and_writes_nothing");
    let mut first = sample(1, T0, 1);
    first.idempotency_key = Some(IdempotencyKey::parse("ci-run-42#1").unwrap());
    first.body_hash = Some("h1".into());
    assert_eq!(create(&h.store, &first, 5).await, CreateOutcome::Created);

    let mut retry = sample(1, T0.plus_seconds(3), 2);
    retry.idempotency_key = first.idempotency_key.clone();
    retry.body_hash = Some("h2".into());
    assert_eq!(create(&h.store, &retry, 5).await, CreateOutcome::Existing(first.clone()));
    assert_eq!(h.store.get_request(&retry.id).await.unwrap(), None);
    assert_eq!(whole_chain(&h.store).await.len(), 1);

    // Even at the pending cap, a retry answers with the first request rather than "too many".
    assert_eq!(create(&h.store, &retry, 1).await, CreateOutcome::Existing(first.clone()));

    // Another principal may use the same key.
    let mut other = sample_for(OTHER_ROLE, "deploy-production", 1, T0, 3);
    other.idempotency_key = first.idempotency_key.clone();
    assert_eq!(create(&h.store, &other, 5).await, CreateOutcome::Created);
}

#[tokio::test]
async fn max_pending_is_enforced_per_principal_and_policy_and_freed_by_decisions() {
    let h = harness!("max_pending_is_enforced_per_principal_and_policy_and_freed_by_decisions");
    let a = sample(1, T0, 1);
    let b = sample(1, T0, 2);
    assert_eq!(create(&h.store, &a, 2).await, CreateOutcome::Created);
    assert_eq!(create(&h.store, &b, 2).await, CreateOutcome::Created);
    let c = sample(1, T0, 3);
    assert_eq!(create(&h.store, &c, 2).await, CreateOutcome::TooManyPending);
    assert_eq!(h.store.get_request(&c.id).await.unwrap(), None);
    assert_eq!(whole_chain(&h.store).await.len(), 2, "a refused create writes no audit record");

    // Other policy, other principal: their own counters.
    assert_eq!(create(&h.store, &sample_for(ROLE, "other-policy", 1, T0, 4), 2).await, CreateOutcome::Created);
    assert_eq!(
        create(&h.store, &sample_for(OTHER_ROLE, "deploy-production", 1, T0, 5), 2).await,
        CreateOutcome::Created
    );
    // An auto-approved request is not pending and does not count.
    assert_eq!(create(&h.store, &sample(0, T0, 6), 2).await, CreateOutcome::Created);
    // A cap of zero admits no pending request at all.
    assert_eq!(create(&h.store, &sample_for(ROLE, "zero-policy", 1, T0, 7), 0).await, CreateOutcome::TooManyPending);

    // Deciding one frees a slot.
    let t = a.deny(&u("UALICE01"), "no", &Governing::as_stored(&a), T0.plus_seconds(1)).unwrap();
    h.store.commit(commit_of(t, 1, Guard::OpenAt(T0.plus_seconds(1)))).await.unwrap();
    assert_eq!(create(&h.store, &c, 2).await, CreateOutcome::Created);
    assert_eq!(create(&h.store, &sample(1, T0, 8), 2).await, CreateOutcome::TooManyPending);

    // A transition committed with only a version guard still frees its slot (the store reads the old
    // status to know).
    let t = b.cancel(ROLE, T0.plus_seconds(2)).unwrap();
    h.store.commit(commit_of(t, 1, Guard::VersionOnly)).await.unwrap();
    assert_eq!(create(&h.store, &sample(1, T0, 8), 2).await, CreateOutcome::Created);
}

#[tokio::test]
async fn twenty_concurrent_approvers_cause_exactly_one_approved_transition() {
    let h = harness!("twenty_concurrent_approvers_cause_exactly_one_approved_transition");
    let r = sample(3, T0, 1);
    assert_eq!(create(&h.store, &r, 5).await, CreateOutcome::Created);
    let now = T0.plus_seconds(10);

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = h.store.clone();
        let id = r.id;
        tasks.spawn(async move {
            let user = u(&format!("UAPPROVER{i:02}"));
            for _ in 0..200 {
                let current = store.get_request(&id).await.unwrap().unwrap();
                let t = match current.approve(&user, &Governing::as_stored(&current), now) {
                    Ok(t) => t,
                    Err(TransitionError::AlreadyDecided(_)) => return false,
                    Err(e) => panic!("unexpected refusal: {e}"),
                };
                let approved = t.request.status == Status::Approved;
                match store.commit(commit_of(t, current.version, Guard::OpenAt(now))).await {
                    Ok(_) => return approved,
                    Err(StoreError::Conflict(Conflict::Stale)) => continue,
                    Err(e) => panic!("commit failed: {e:?}"),
                }
            }
            panic!("approver {i} never got through");
        });
    }
    let mut transitions = 0;
    while let Some(res) = tasks.join_next().await {
        if res.unwrap() {
            transitions += 1;
        }
    }
    assert_eq!(transitions, 1, "exactly one commit performs the approved transition");

    let done = h.store.get_request(&r.id).await.unwrap().unwrap();
    assert_eq!(done.status, Status::Approved);
    assert_eq!(done.approvals.len(), 3);
    assert_eq!(done.version, 4);
    let trail = h.store.for_request(&r.id).await.unwrap();
    assert_eq!(trail.iter().filter(|e| e.kind == AuditKind::VoteApprove).count(), 3);
    assert_eq!(trail.iter().filter(|e| e.kind == AuditKind::RequestApproved).count(), 1);
    let chain = whole_chain(&h.store).await;
    assert_eq!(chain.len(), 5);
    verify_chain(&chain).unwrap();

    // The pending counter went back down: the cap of 1 admits a new request.
    assert_eq!(create(&h.store, &sample(1, T0, 2), 1).await, CreateOutcome::Created);
}

#[tokio::test]
async fn concurrent_appends_keep_the_chain_gapless_and_linked() {
    let h = harness!("concurrent_appends_keep_the_chain_gapless_and_linked");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let store = h.store.clone();
        tasks.spawn(async move {
            let drafts = (0..3)
                .map(|j| {
                    AuditDraft::new(T0, AuditKind::CallbackRejected, Actor::system("test"), None)
                        .with("writer", i.to_string())
                        .with("n", j.to_string())
                })
                .collect();
            store.append(drafts).await.unwrap()
        });
    }
    let mut sealed = Vec::new();
    while let Some(res) = tasks.join_next().await {
        let batch = res.unwrap();
        assert_eq!(batch.len(), 3);
        // One append's records are consecutive.
        assert_eq!(batch[1].seq, batch[0].seq + 1);
        assert_eq!(batch[2].seq, batch[1].seq + 1);
        sealed.extend(batch);
    }
    let chain = whole_chain(&h.store).await;
    assert_eq!(chain.len(), 30);
    verify_chain(&chain).unwrap();
    sealed.sort_by_key(|e| e.seq);
    assert_eq!(sealed, chain, "append returns exactly what was stored");
}

#[tokio::test]
async fn duplicate_vote_is_refused_by_the_vote_item_before_staleness() {
    let h = harness!("duplicate_vote_is_refused_by_the_vote_item_before_staleness");
    let r = sample(3, T0, 1);
    create(&h.store, &r, 5).await;
    let now = T0.plus_seconds(5);
    let t = r.approve(&u("UALICE01"), &Governing::as_stored(&r), now).unwrap();
    h.store.commit(commit_of(t, 1, Guard::OpenAt(now))).await.unwrap();

    // A second click computed from the state read before the first one landed: both the version and the
    // vote conditions fail; the vote wins.
    let again = r.approve(&u("UALICE01"), &Governing::as_stored(&r), now).unwrap();
    assert!(matches!(
        h.store.commit(commit_of(again, 1, Guard::OpenAt(now))).await,
        Err(StoreError::Conflict(Conflict::DuplicateVote))
    ));

    // A commit on the current version that slips a second vote by the same user past the domain: only
    // the vote item stops it.
    let current = h.store.get_request(&r.id).await.unwrap().unwrap();
    let mut forged = current.clone();
    forged.version += 1;
    forged.approvals.push(current.approvals[0].clone());
    let vote =
        Vote { request_id: r.id, user_id: u("UALICE01"), decision: VoteDecision::Approve, reason: None, at: now };
    let forged_commit = Commit {
        expected_version: current.version,
        request: forged,
        vote: Some(vote),
        events: vec![],
        guard: Guard::OpenAt(now),
    };
    assert!(matches!(h.store.commit(forged_commit).await, Err(StoreError::Conflict(Conflict::DuplicateVote))));
    let after = h.store.get_request(&r.id).await.unwrap().unwrap();
    assert_eq!(after, current, "a refused commit changes nothing");
    assert_eq!(whole_chain(&h.store).await.len(), 2);
}

#[tokio::test]
async fn no_commit_leaves_a_terminal_state() {
    let h = harness!("no_commit_leaves_a_terminal_state");
    let r = sample(2, T0, 1);
    create(&h.store, &r, 5).await;
    let now = T0.plus_seconds(5);
    let denied = r.deny(&u("UALICE01"), "not today", &Governing::as_stored(&r), now).unwrap();
    h.store.commit(commit_of(denied.clone(), 1, Guard::OpenAt(now))).await.unwrap();
    let denied = denied.request;

    // A state machine bug that would approve a denied request: the store still refuses it.
    let mut approved = denied.clone();
    approved.version += 1;
    approved.status = Status::Approved;
    for guard in [Guard::OpenAt(now), Guard::ExpiredAt(r.expires_at.plus_seconds(1))] {
        let c =
            Commit { expected_version: denied.version, request: approved.clone(), vote: None, events: vec![], guard };
        assert!(matches!(h.store.commit(c).await, Err(StoreError::Conflict(Conflict::Stale))), "{guard:?}");
    }
    // Nor does a version-only commit change a terminal status, to pending or to another decision.
    for status in [Status::Pending, Status::Approved] {
        let mut changed = denied.clone();
        changed.version += 1;
        changed.status = status;
        let c = Commit {
            expected_version: denied.version,
            request: changed,
            vote: None,
            events: vec![],
            guard: Guard::VersionOnly,
        };
        assert!(h.store.commit(c).await.is_err(), "{status:?}");
    }
    assert_eq!(h.store.get_request(&r.id).await.unwrap(), Some(denied.clone()));

    // Bookkeeping on a terminal request (the Slack message was updated) is fine.
    let mut posted = denied.clone();
    posted.version += 1;
    posted.notification.state = NotificationState::Posted;
    posted.notification.ts = Some("1700000000.000100".into());
    posted.notification.update_pending = false;
    let c = Commit {
        expected_version: denied.version,
        request: posted.clone(),
        vote: None,
        events: vec![AuditDraft::new(now, AuditKind::SlackUpdated, Actor::system("relay"), Some(r.id))],
        guard: Guard::VersionOnly,
    };
    h.store.commit(c).await.unwrap();
    assert_eq!(h.store.get_request(&r.id).await.unwrap(), Some(posted));
}

#[tokio::test]
async fn expired_request_cannot_be_approved_although_its_item_exists() {
    let h = harness!("expired_request_cannot_be_approved_although_its_item_exists");
    let r = sample(1, T0, 1);
    create(&h.store, &r, 1).await;
    let late = r.expires_at;

    // An approval computed with a clock that lags: the store's guard, at the real time, refuses it.
    let t = r.approve(&u("UALICE01"), &Governing::as_stored(&r), late.plus_millis(-1)).unwrap();
    assert!(matches!(
        h.store.commit(commit_of(t, 1, Guard::OpenAt(late))).await,
        Err(StoreError::Conflict(Conflict::Stale))
    ));
    let still = h.store.get_request(&r.id).await.unwrap().unwrap();
    assert_eq!(still.status, Status::Pending);
    assert_eq!(still.effective_status(late), Status::Expired);

    // The sweeper cannot expire it early ...
    let early = r.expire(late).unwrap();
    assert!(matches!(
        h.store.commit(commit_of(early, 1, Guard::ExpiredAt(late.plus_millis(-1)))).await,
        Err(StoreError::Conflict(Conflict::Stale))
    ));
    // ... but can once it is due, which frees the pending slot.
    let exp = r.expire(late).unwrap();
    h.store.commit(commit_of(exp, 1, Guard::ExpiredAt(late))).await.unwrap();
    assert_eq!(h.store.get_request(&r.id).await.unwrap().unwrap().status, Status::Expired);
    assert!(h.store.list_pending(10).await.unwrap().is_empty());
    assert_eq!(create(&h.store, &sample(1, T0, 2), 1).await, CreateOutcome::Created);
}

#[tokio::test]
async fn commit_refuses_a_version_that_does_not_follow_the_expected_one() {
    let h = harness!("commit_refuses_a_version_that_does_not_follow_the_expected_one");
    let r = sample(1, T0, 1);
    create(&h.store, &r, 5).await;
    let t = r.approve(&u("UALICE01"), &Governing::as_stored(&r), T0).unwrap();
    assert!(matches!(h.store.commit(commit_of(t.clone(), 0, Guard::OpenAt(T0))).await, Err(StoreError::Other(_))));
    // Expected version that is not the stored one: stale.
    let mut ahead = t;
    ahead.request.version = 3;
    assert!(matches!(
        h.store.commit(commit_of(ahead, 2, Guard::OpenAt(T0))).await,
        Err(StoreError::Conflict(Conflict::Stale))
    ));
    // Unknown request: stale as well (nothing to overwrite).
    let ghost = sample(1, T0, 99);
    let ghost = ghost.approve(&u("UALICE01"), &Governing::as_stored(&ghost), T0).unwrap();
    assert!(matches!(
        h.store.commit(commit_of(ghost, 1, Guard::OpenAt(T0))).await,
        Err(StoreError::Conflict(Conflict::Stale))
    ));
}

#[tokio::test]
async fn audit_read_from_returns_chain_order_across_many_pages() {
    let h = harness!("audit_read_from_returns_chain_order_across_many_pages");
    let store = DynamoStore::new(h.client.clone(), h.tables.clone()).with_page_size(7);
    for batch in 0..5 {
        let drafts = (0..5)
            .map(|j| {
                AuditDraft::new(T0.plus_seconds(batch), AuditKind::CallbackRejected, Actor::system("t"), None)
                    .with("i", (batch * 5 + j).to_string())
            })
            .collect();
        store.append(drafts).await.unwrap();
    }
    let all = store.read_from(1, 1000).await.unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=25).collect::<Vec<_>>());
    verify_chain(&all).unwrap();
    assert_eq!(
        store.read_from(10, 9).await.unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(),
        (10..=18).collect::<Vec<_>>()
    );
    assert!(store.read_from(26, 10).await.unwrap().is_empty());
    assert!(store.read_from(1, 0).await.unwrap().is_empty());

    // Paging as the exporter does (last seq + 1) reconstructs the same chain.
    let mut paged = Vec::new();
    loop {
        let next = paged.last().map_or(1, |e: &AuditEvent| e.seq + 1);
        let page = store.read_from(next, 4).await.unwrap();
        if page.is_empty() {
            break;
        }
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert_eq!(store.last().await.unwrap(), all.last().cloned());
}

#[tokio::test]
async fn for_request_pages_through_the_index() {
    let h = harness!("for_request_pages_through_the_index");
    let store = DynamoStore::new(h.client.clone(), h.tables.clone()).with_page_size(2);
    let r = sample(1, T0, 1);
    create(&store, &r, 5).await;
    for i in 0..6 {
        store
            .append(vec![
                AuditDraft::new(T0, AuditKind::SlackReminded, Actor::system("t"), Some(r.id)).with("i", i.to_string()),
                AuditDraft::new(T0, AuditKind::CallbackRejected, Actor::system("t"), None),
            ])
            .await
            .unwrap();
    }
    let trail = store.for_request(&r.id).await.unwrap();
    assert_eq!(trail.len(), 7);
    assert!(trail.iter().all(|e| e.request_id == Some(r.id)));
    assert!(trail.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[tokio::test]
async fn list_pending_is_oldest_expiry_first_and_drops_decided_requests() {
    let h = harness!("list_pending_is_oldest_expiry_first_and_drops_decided_requests");
    let store = DynamoStore::new(h.client.clone(), h.tables.clone()).with_page_size(2);
    let mut reqs = Vec::new();
    for i in 0..5u32 {
        let mut r = sample(1, T0, u128::from(i) + 1);
        r.expires_at = T0.plus_seconds(3600 - i64::from(i) * 60); // later-created expire sooner
        create(&store, &r, 10).await;
        reqs.push(r);
    }
    create(&store, &sample(0, T0, 50), 10).await; // auto-approved: never pending
    let listed = store.list_pending(100).await.unwrap();
    let want: Vec<_> = reqs.iter().rev().map(|r| r.id).collect();
    assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), want);
    assert_eq!(store.list_pending(3).await.unwrap().len(), 3);

    let t = reqs[4].approve(&u("UALICE01"), &Governing::as_stored(&reqs[4]), T0).unwrap();
    store.commit(commit_of(t, 1, Guard::OpenAt(T0))).await.unwrap();
    let listed = store.list_pending(100).await.unwrap();
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().all(|r| r.id != reqs[4].id));
}

#[tokio::test]
async fn list_notification_due_holds_only_owed_messages_that_are_due() {
    let h = harness!("list_notification_due_holds_only_owed_messages_that_are_due");
    let store = DynamoStore::new(h.client.clone(), h.tables.clone()).with_page_size(2);
    // Three new requests, created a second apart: due at creation.
    let mut reqs = Vec::new();
    for i in 0..3 {
        let r = sample(1, T0.plus_seconds(i), (i + 1) as u128);
        create(&store, &r, 10).await;
        reqs.push(r);
    }
    let ids = |v: Vec<ApprovalRequest>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_notification_due(T0.plus_seconds(10), 10).await.unwrap()),
        vec![reqs[0].id, reqs[1].id, reqs[2].id]
    );
    // Due exactly at `now` counts; one millisecond later does not.
    assert_eq!(ids(store.list_notification_due(T0.plus_seconds(1), 10).await.unwrap()), vec![reqs[0].id, reqs[1].id]);
    assert_eq!(ids(store.list_notification_due(T0.plus_millis(-1), 10).await.unwrap()), vec![]);

    // Posted: no longer due.
    let mut posted = reqs[0].clone();
    posted.version = 2;
    posted.notification.state = NotificationState::Posted;
    posted.notification.ts = Some("1.2".into());
    store
        .commit(Commit {
            expected_version: 1,
            request: posted.clone(),
            vote: None,
            events: vec![],
            guard: Guard::VersionOnly,
        })
        .await
        .unwrap();
    // Retrying after a 429: due only at its next attempt.
    let mut retrying = reqs[1].clone();
    retrying.version = 2;
    retrying.notification.state = NotificationState::Retrying;
    retrying.notification.next_attempt_at = Some(T0.plus_seconds(60));
    store
        .commit(Commit {
            expected_version: 1,
            request: retrying,
            vote: None,
            events: vec![],
            guard: Guard::VersionOnly,
        })
        .await
        .unwrap();
    assert_eq!(ids(store.list_notification_due(T0.plus_seconds(10), 10).await.unwrap()), vec![reqs[2].id]);
    assert_eq!(ids(store.list_notification_due(T0.plus_seconds(60), 10).await.unwrap()), vec![reqs[2].id, reqs[1].id]);

    // A vote makes the posted message stale: due again.
    let t = posted.approve(&u("UALICE01"), &Governing::as_stored(&posted), T0.plus_seconds(20)).unwrap();
    assert!(t.request.notification.update_pending);
    store.commit(commit_of(t, 2, Guard::OpenAt(T0.plus_seconds(20)))).await.unwrap();
    let due = ids(store.list_notification_due(T0.plus_seconds(30), 10).await.unwrap());
    assert_eq!(due, vec![reqs[0].id, reqs[2].id]);
    assert_eq!(store.list_notification_due(T0.plus_seconds(30), 1).await.unwrap().len(), 1);
}

#[tokio::test]
async fn list_by_principal_is_newest_first_since_a_time() {
    let h = harness!("list_by_principal_is_newest_first_since_a_time");
    let store = DynamoStore::new(h.client.clone(), h.tables.clone()).with_page_size(2);
    let mut mine = Vec::new();
    for i in 0..5 {
        let r = sample(1, T0.plus_seconds(i * 10), (i + 1) as u128);
        create(&store, &r, 10).await;
        mine.push(r);
    }
    create(&store, &sample_for(OTHER_ROLE, "deploy-production", 1, T0.plus_seconds(15), 100), 10).await;
    let principal = &mine[0].requester.principal;

    let all = store.list_by_principal(principal, T0, 100).await.unwrap();
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), mine.iter().rev().map(|r| r.id).collect::<Vec<_>>());
    let since = store.list_by_principal(principal, T0.plus_seconds(20), 100).await.unwrap();
    assert_eq!(since.iter().map(|r| r.id).collect::<Vec<_>>(), vec![mine[4].id, mine[3].id, mine[2].id]);
    let limited = store.list_by_principal(principal, T0, 3).await.unwrap();
    assert_eq!(limited.len(), 3);
    assert_eq!(limited[0].id, mine[4].id);
    assert!(store.list_by_principal("arn:aws:iam::111122223333:role/nobody", T0, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn corrupt_items_are_reported_never_skipped() {
    let h = harness!("corrupt_items_are_reported_never_skipped");
    let r = sample(1, T0, 1);
    create(&h.store, &r, 5).await;
    // Break the document of the stored request in place (as an attacker or a bad migration would).
    h.client
        .update_item()
        .table_name(&h.tables.requests)
        .key(keys::PK, AttributeValue::S(keys::request_pk(&r.id)))
        .key(keys::SK, AttributeValue::S(keys::REQUEST_SK.into()))
        .update_expression("SET #doc = :bad")
        .expression_attribute_names("#doc", keys::DOC)
        .expression_attribute_values(":bad", AttributeValue::S("{\"id\":".into()))
        .send()
        .await
        .unwrap();
    assert!(matches!(h.store.get_request(&r.id).await, Err(StoreError::Corrupt(_))));
    assert!(matches!(h.store.list_pending(10).await, Err(StoreError::Corrupt(_))));
    assert!(matches!(h.store.list_by_principal(&r.requester.principal, T0, 10).await, Err(StoreError::Corrupt(_))));

    // An audit record whose document no longer parses.
    h.client
        .put_item()
        .table_name(&h.tables.audit)
        .item(keys::PK, AttributeValue::S(keys::CHAIN_PK.into()))
        .item(keys::SEQ, AttributeValue::N("2".into()))
        .item(keys::DOC, AttributeValue::S("garbage".into()))
        .send()
        .await
        .unwrap();
    assert!(matches!(h.store.read_from(1, 10).await, Err(StoreError::Corrupt(_))));
    assert!(matches!(h.store.last().await, Err(StoreError::Corrupt(_))));
}

#[tokio::test]
async fn audit_tampering_shows_up_in_the_chain() {
    let h = harness!("audit_tampering_shows_up_in_the_chain");
    let drafts = (0..4)
        .map(|i| AuditDraft::new(T0, AuditKind::CallbackRejected, Actor::system("t"), None).with("i", i.to_string()))
        .collect();
    let sealed = h.store.append(drafts).await.unwrap();
    // Edit record 2's details without fixing its hash.
    let mut edited = sealed[1].clone();
    edited.details.insert("i".into(), "99".into());
    h.client
        .put_item()
        .table_name(&h.tables.audit)
        .item(keys::PK, AttributeValue::S(keys::CHAIN_PK.into()))
        .item(keys::SEQ, AttributeValue::N("2".into()))
        .item(keys::DOC, AttributeValue::S(serde_json::to_string(&edited).unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(verify_chain(&whole_chain(&h.store).await), Err(ChainBreak::Edited { seq: 2 }));
    // Delete record 3.
    h.client
        .delete_item()
        .table_name(&h.tables.audit)
        .key(keys::PK, AttributeValue::S(keys::CHAIN_PK.into()))
        .key(keys::SEQ, AttributeValue::N("3".into()))
        .send()
        .await
        .unwrap();
    let chain = whole_chain(&h.store).await;
    assert_eq!(chain.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 4]);
    // The next append goes after the last stored key, never into the hole.
    let next =
        h.store.append(vec![AuditDraft::new(T0, AuditKind::CallbackRejected, Actor::system("t"), None)]).await.unwrap();
    assert_eq!(next[0].seq, 5);
    assert_eq!(next[0].prev_hash, sealed[3].hash);
}

#[tokio::test]
async fn policies_put_list_get_delete_each_with_an_audit_record() {
    let h = harness!("policies_put_list_get_delete_each_with_an_audit_record");
    let store = DynamoStore::new(h.client.clone(), h.tables.clone()).with_page_size(1);
    let policies = parse_policies(include_str!("../../infra/policies.example.yaml")).unwrap();
    assert!(policies.len() >= 2);
    let ev = |kind: AuditKind, p: &Policy| {
        AuditDraft::new(T0, kind, Actor::cli("test"), None).with("policy", p.name.as_str())
    };
    for p in &policies {
        store.put_policy(p, ev(AuditKind::PolicyChanged, p)).await.unwrap();
    }
    let mut want = policies.clone();
    want.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(store.list_policies().await.unwrap(), want);
    assert_eq!(store.get_policy(&policies[0].name).await.unwrap(), Some(policies[0].clone()));

    // Replace one.
    let mut changed = policies[0].clone();
    changed.required_approvals = 1;
    store.put_policy(&changed, ev(AuditKind::PolicyChanged, &changed)).await.unwrap();
    assert_eq!(store.get_policy(&changed.name).await.unwrap(), Some(changed.clone()));

    store.delete_policy(&changed.name, ev(AuditKind::PolicyDeleted, &changed)).await.unwrap();
    assert_eq!(store.get_policy(&changed.name).await.unwrap(), None);
    assert!(matches!(
        store.delete_policy(&changed.name, ev(AuditKind::PolicyDeleted, &changed)).await,
        Err(StoreError::Conflict(Conflict::Stale))
    ));
    let chain = whole_chain(&store).await;
    assert_eq!(chain.len(), policies.len() + 2, "the refused delete wrote no record");
    assert_eq!(chain.last().unwrap().kind, AuditKind::PolicyDeleted);
    verify_chain(&chain).unwrap();
}
