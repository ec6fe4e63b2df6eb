//! The store contract of `countersign_core::ports`, written once and run against every store.
//!
//! Each test is a generic `async fn` over a store under test ([`Sut`]); the `conformance!` macro at the
//! bottom instantiates all of them per store, as `conformance::embedded::NAME` and
//! `conformance::dynamodb::NAME`. Concurrent tests behave like the real callers: each task reads fresh
//! state, applies the domain transition and commits, re-reading when the commit loses (`Conflict::Stale`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use countersign_core::domain::audit::{verify_chain, ChainBreak};
use countersign_core::domain::policy::parse_policies;
use countersign_core::domain::request::{Governing, NotificationState, Requester};
use countersign_core::domain::{
    Action, Actor, ApprovalRequest, AuditDraft, AuditEvent, AuditKind, Environment, IdempotencyKey, PolicyName,
    RequestId, SlackUserId, Status, Timestamp, Transition, TransitionError,
};
use countersign_core::ports::{Commit, Conflict, CreateOutcome, Guard, StoreError};

use countersign_testkit::stores::{Store, Sut};

const T0: Timestamp = Timestamp::from_unix_millis(1_795_621_462_000);
const TTL_SECONDS: i64 = 1800;
const MAX_PENDING: u32 = 5;
const TASKS: usize = 20;

// ---- building blocks ----

fn user(i: usize) -> SlackUserId {
    SlackUserId::parse(&format!("U{i:08}")).unwrap()
}

fn arn(role: &str) -> String {
    format!("arn:aws:sts::111122223333:assumed-role/{role}/run-1")
}

/// A new pending request (auto-approved when `required` is 0) of `role` under `policy`.
fn request(role: &str, policy: &str, required: u32, created_at: Timestamp) -> ApprovalRequest {
    let id = RequestId::generate();
    let mut r = countersign_core::testing::sample_request_for(&arn(role), policy, required, created_at, 0);
    r.id = id;
    r.details = BTreeMap::from([("commit".to_string(), "abc123".to_string())]);
    r.policy.version = "0123456789abcdef".into();
    r.expires_at = created_at.plus_seconds(TTL_SECONDS);
    r
}

fn deploy_request(required: u32, created_at: Timestamp) -> ApprovalRequest {
    request("github-deploy", "deploy-production", required, created_at)
}

async fn create<S: Store>(s: &S, r: &ApprovalRequest) -> CreateOutcome {
    s.create_request(r, r.creation_events(), MAX_PENDING).await.unwrap()
}

async fn get<S: Store>(s: &S, id: &RequestId) -> ApprovalRequest {
    s.get_request(id).await.unwrap().expect("request exists")
}

fn commit_of(from: &ApprovalRequest, t: Transition, guard: Guard) -> Commit {
    Commit { expected_version: from.version, request: t.request, vote: t.vote, events: t.events, guard }
}

fn conflict(r: Result<Vec<countersign_core::domain::AuditEvent>, StoreError>) -> Conflict {
    match r {
        Err(StoreError::Conflict(c)) => c,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

pub(crate) fn drafts(n: usize, tag: &str) -> Vec<AuditDraft> {
    (0..n)
        .map(|i| {
            AuditDraft::new(
                T0.plus_millis(i64::try_from(i).unwrap()),
                AuditKind::CallbackRejected,
                Actor::system("test"),
                None,
            )
            .with("tag", tag)
            .with("i", i.to_string())
        })
        .collect()
}

/// The whole chain, read page by page as an export would.
async fn all_audit<S: Store>(s: &S) -> Vec<AuditEvent> {
    let mut out: Vec<AuditEvent> = Vec::new();
    let mut from = 1;
    loop {
        let page = s.read_from(from, 7).await.unwrap();
        assert!(page.len() <= 7, "read_from returned more than its limit");
        let Some(last) = page.last() else {
            return out;
        };
        from = last.seq + 1;
        out.extend(page);
    }
}

fn kinds(events: &[AuditEvent]) -> Vec<AuditKind> {
    events.iter().map(|e| e.kind).collect()
}

fn count(events: &[AuditEvent], kind: AuditKind) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

// ---- concurrency ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Committed,
    /// The domain refused after a fresh read (already decided, already voted, expired).
    Refused(TransitionError),
    /// The store refused the vote as a second one by this user.
    DuplicateVote,
}

/// Approves like the vote service: read, transition, commit; re-read and retry when the commit is stale.
async fn approve_until_settled<S: Store>(store: Arc<S>, id: RequestId, user: SlackUserId, now: Timestamp) -> Outcome {
    for _ in 0..1000 {
        let current = get(&*store, &id).await;
        let t = match current.approve(&user, &Governing::as_stored(&current), now) {
            Ok(t) => t,
            Err(e) => return Outcome::Refused(e),
        };
        match store.commit(commit_of(&current, t, Guard::OpenAt(now))).await {
            Ok(_) => return Outcome::Committed,
            Err(StoreError::Conflict(Conflict::Stale)) => {}
            Err(StoreError::Conflict(Conflict::DuplicateVote)) => return Outcome::DuplicateVote,
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => panic!("commit failed: {e}"),
        }
    }
    panic!("no decision after 1000 attempts");
}

/// Runs one approval task per entry of `users`, all released at once.
async fn race<S: Store>(store: &Arc<S>, id: RequestId, users: Vec<SlackUserId>) -> Vec<Outcome> {
    let start = Arc::new(tokio::sync::Barrier::new(users.len()));
    let tasks: Vec<_> = users
        .into_iter()
        .map(|u| {
            let (store, start) = (Arc::clone(store), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                approve_until_settled(store, id, u, T0.plus_seconds(1)).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    outcomes
}

fn committed(outcomes: &[Outcome]) -> usize {
    outcomes.iter().filter(|o| **o == Outcome::Committed).count()
}

// ---- the contract ----

pub async fn create_with_a_used_idempotency_key_returns_the_existing_request<S: Store>(sut: Sut<S>) {
    let s = &*sut.store;
    let key = IdempotencyKey::parse("deploy-42").unwrap();
    let mut first = deploy_request(1, T0);
    first.idempotency_key = Some(key.clone());
    first.body_hash = Some("aaaa".into());
    assert_eq!(create(s, &first).await, CreateOutcome::Created);

    let mut retry = deploy_request(1, T0.plus_seconds(5));
    retry.idempotency_key = Some(key.clone());
    retry.body_hash = Some("bbbb".into());
    assert_eq!(create(s, &retry).await, CreateOutcome::Existing(first.clone()));
    assert_eq!(s.get_request(&retry.id).await.unwrap(), None);

    // The key stays taken after the first request is decided.
    let t = first.approve(&user(1), &Governing::as_stored(&first), T0.plus_seconds(6)).unwrap();
    let decided = t.request.clone();
    s.commit(commit_of(&first, t, Guard::OpenAt(T0.plus_seconds(6)))).await.unwrap();
    assert_eq!(create(s, &retry).await, CreateOutcome::Existing(decided.clone()));

    // Another principal's key is its own.
    let mut other = request("other-role", "deploy-production", 1, T0.plus_seconds(7));
    other.idempotency_key = Some(key);
    assert_eq!(create(s, &other).await, CreateOutcome::Created);
    assert_eq!(get(s, &other.id).await, other);

    let audit = all_audit(s).await;
    assert_eq!(
        kinds(&audit),
        vec![AuditKind::RequestCreated, AuditKind::VoteApprove, AuditKind::RequestApproved, AuditKind::RequestCreated]
    );
    let ids: Vec<_> = audit.iter().map(|e| e.request_id.unwrap()).collect();
    assert_eq!(ids, vec![first.id, first.id, first.id, other.id]);
}

pub async fn max_pending_is_enforced_per_principal_and_policy<S: Store>(sut: Sut<S>) {
    let s = &*sut.store;
    let max = 2;
    let mut mine = Vec::new();
    for i in 0..2 {
        let r = deploy_request(1, T0.plus_seconds(i));
        assert_eq!(s.create_request(&r, r.creation_events(), max).await.unwrap(), CreateOutcome::Created);
        mine.push(r);
    }
    let before = all_audit(s).await.len();
    let third = deploy_request(1, T0.plus_seconds(10));
    assert_eq!(s.create_request(&third, third.creation_events(), max).await.unwrap(), CreateOutcome::TooManyPending);
    assert_eq!(s.get_request(&third.id).await.unwrap(), None);
    assert_eq!(all_audit(s).await.len(), before, "a refusal writes nothing");

    // Same principal, other policy; other principal, same policy: separate budgets.
    let other_policy = request("github-deploy", "rotate-secrets", 1, T0.plus_seconds(11));
    let other_principal = request("ci-runner", "deploy-production", 1, T0.plus_seconds(12));
    for r in [&other_policy, &other_principal] {
        assert_eq!(s.create_request(r, r.creation_events(), max).await.unwrap(), CreateOutcome::Created);
    }

    // A decided request frees its slot.
    let now = T0.plus_seconds(20);
    let t = mine[0].cancel(&arn("github-deploy"), now).unwrap();
    s.commit(commit_of(&mine[0], t, Guard::OpenAt(now))).await.unwrap();
    assert_eq!(s.create_request(&third, third.creation_events(), max).await.unwrap(), CreateOutcome::Created);
    let fourth = deploy_request(1, T0.plus_seconds(21));
    assert_eq!(s.create_request(&fourth, fourth.creation_events(), max).await.unwrap(), CreateOutcome::TooManyPending);
}

pub async fn a_retry_returns_the_existing_request_even_at_max_pending<S: Store>(sut: Sut<S>) {
    let s = &*sut.store;
    let key = IdempotencyKey::parse("deploy-43").unwrap();
    let mut first = deploy_request(1, T0);
    first.idempotency_key = Some(key.clone());
    assert_eq!(s.create_request(&first, first.creation_events(), 1).await.unwrap(), CreateOutcome::Created);
    let mut retry = deploy_request(1, T0.plus_seconds(1));
    retry.idempotency_key = Some(key);
    assert_eq!(s.create_request(&retry, retry.creation_events(), 1).await.unwrap(), CreateOutcome::Existing(first));
}

pub async fn duplicate_vote_counts_once_under_20_concurrent_tasks<S: Store>(sut: Sut<S>) {
    let r = deploy_request(2, T0);
    create(&*sut.store, &r).await;
    let outcomes = race(&sut.store, r.id, vec![user(1); TASKS]).await;

    assert_eq!(committed(&outcomes), 1, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|o| matches!(
            o,
            Outcome::Committed | Outcome::DuplicateVote | Outcome::Refused(TransitionError::DuplicateVote)
        )),
        "{outcomes:?}"
    );
    let after = get(&*sut.store, &r.id).await;
    assert_eq!(after.approvals.len(), 1);
    assert_eq!(after.status, Status::Pending);
    assert_eq!(after.version, 2);
    let audit = sut.store.for_request(&r.id).await.unwrap();
    assert_eq!(kinds(&audit), vec![AuditKind::RequestCreated, AuditKind::VoteApprove]);
}

pub async fn only_one_of_20_concurrent_approvals_decides<S: Store>(sut: Sut<S>) {
    let r = deploy_request(1, T0);
    create(&*sut.store, &r).await;
    let outcomes = race(&sut.store, r.id, (1..=TASKS).map(user).collect()).await;

    assert_eq!(committed(&outcomes), 1, "{outcomes:?}");
    assert_eq!(
        outcomes.iter().filter(|o| **o == Outcome::Refused(TransitionError::AlreadyDecided(Status::Approved))).count(),
        TASKS - 1,
        "{outcomes:?}"
    );
    let after = get(&*sut.store, &r.id).await;
    assert_eq!(after.status, Status::Approved);
    assert_eq!(after.approvals.len(), 1);
    assert_eq!(after.version, 2);
    let audit = all_audit(&*sut.store).await;
    assert_eq!(count(&audit, AuditKind::RequestApproved), 1);
    assert_eq!(count(&audit, AuditKind::VoteApprove), 1);
    verify_chain(&audit).unwrap();
}

pub async fn quorum_of_2_under_20_concurrent_approvals_approves_exactly_once<S: Store>(sut: Sut<S>) {
    let r = deploy_request(2, T0);
    create(&*sut.store, &r).await;
    let outcomes = race(&sut.store, r.id, (1..=TASKS).map(user).collect()).await;

    assert_eq!(committed(&outcomes), 2, "{outcomes:?}");
    let after = get(&*sut.store, &r.id).await;
    assert_eq!(after.status, Status::Approved);
    assert_eq!(after.approvals.len(), 2);
    assert_ne!(after.approvals[0].user_id, after.approvals[1].user_id);
    assert_eq!(after.version, 3);
    let audit = sut.store.for_request(&r.id).await.unwrap();
    assert_eq!(
        kinds(&audit),
        vec![AuditKind::RequestCreated, AuditKind::VoteApprove, AuditKind::VoteApprove, AuditKind::RequestApproved]
    );
    verify_chain(&all_audit(&*sut.store).await).unwrap();
}

pub async fn concurrent_appends_keep_one_unbroken_chain<S: Store>(sut: Sut<S>) {
    let start = Arc::new(tokio::sync::Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let (store, start) = (Arc::clone(&sut.store), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                if i % 2 == 0 {
                    let r = deploy_request(1, T0.plus_seconds(i64::try_from(i).unwrap()));
                    let r = ApprovalRequest {
                        requester: Requester { principal: format!("principal-{i}"), ..r.requester.clone() },
                        ..r
                    };
                    for attempt in 0.. {
                        match store.create_request(&r, r.creation_events(), 5).await {
                            Ok(o) => {
                                assert_eq!(o, CreateOutcome::Created);
                                break;
                            }
                            Err(StoreError::Unavailable(_)) if attempt < 100 => {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Err(e) => panic!("create failed: {e}"),
                        }
                    }
                } else {
                    for attempt in 0.. {
                        match store.append(drafts(3, &format!("task-{i}"))).await {
                            Ok(e) => {
                                assert_eq!(e.len(), 3);
                                break;
                            }
                            Err(StoreError::Unavailable(_)) if attempt < 100 => {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Err(e) => panic!("append failed: {e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let audit = all_audit(&*sut.store).await;
    assert_eq!(audit.len(), TASKS / 2 + 3 * TASKS / 2);
    assert_eq!(verify_chain(&audit).unwrap().records, 40);
    // Each append's records stay together, in order.
    for w in audit.windows(2) {
        if let (Some(a), Some(b)) = (w[0].details.get("i"), w[1].details.get("i")) {
            if w[0].details.get("tag") == w[1].details.get("tag") {
                assert_eq!(a.parse::<u32>().unwrap() + 1, b.parse::<u32>().unwrap());
            }
        }
    }
}

pub async fn no_transition_leaves_a_terminal_state<S: Store>(sut: Sut<S>) {
    let s = &*sut.store;
    let r = deploy_request(1, T0);
    create(s, &r).await;
    let t1 = T0.plus_seconds(1);
    let t = r.approve(&user(1), &Governing::as_stored(&r), t1).unwrap();
    s.commit(commit_of(&r, t, Guard::OpenAt(t1))).await.unwrap();
    let approved = get(s, &r.id).await;
    assert_eq!(approved.status, Status::Approved);
    let audit_before = all_audit(s).await;

    // Transitions computed from the old pending state lose.
    let now = T0.plus_seconds(2);
    let late = [
        r.deny(&user(2), "no", &Governing::as_stored(&r), now).unwrap(),
        r.cancel(&arn("github-deploy"), now).unwrap(),
        r.approve(&user(3), &Governing::as_stored(&r), now).unwrap(),
    ];
    for t in late {
        assert_eq!(conflict(s.commit(commit_of(&r, t, Guard::OpenAt(now))).await), Conflict::Stale);
    }
    // The same user's second vote is reported as a duplicate, even though it is also stale.
    let again = r.approve(&user(1), &Governing::as_stored(&r), now).unwrap();
    assert_eq!(conflict(s.commit(commit_of(&r, again, Guard::OpenAt(now))).await), Conflict::DuplicateVote);

    // A forged change from the current version is refused by the store's own guard.
    assert_eq!(
        approved.deny(&user(2), "no", &Governing::as_stored(&approved), now),
        Err(TransitionError::AlreadyDecided(Status::Approved))
    );
    let mut forged = approved.clone();
    forged.version += 1;
    forged.status = Status::Denied;
    for guard in [Guard::OpenAt(now), Guard::ExpiredAt(approved.expires_at.plus_seconds(1))] {
        let c =
            Commit { expected_version: approved.version, request: forged.clone(), vote: None, events: vec![], guard };
        assert_eq!(conflict(s.commit(c).await), Conflict::Stale);
    }
    assert_eq!(get(s, &r.id).await, approved);
    assert_eq!(all_audit(s).await, audit_before);
}

/// Row 35: a redemption commits only over an approved request, once, and returns its sealed record.
pub async fn t35_redemption_commits_once_and_only_over_an_approved_request<S: Store>(sut: Sut<S>) {
    let s = &*sut.store;
    let r = deploy_request(1, T0);
    create(s, &r).await;
    let by = countersign_core::domain::Principal::parse(&arn("github-deploy")).unwrap();
    let now = T0.plus_seconds(1);
    // A redemption forged over the pending request is refused by the store's guard.
    let mut forged = r.clone();
    forged.version += 1;
    forged.redeemed_at = Some(now);
    let c = Commit { expected_version: r.version, request: forged, vote: None, events: vec![], guard: Guard::Approved };
    assert_eq!(conflict(s.commit(c).await), Conflict::Stale);
    let t = r.approve(&user(1), &Governing::as_stored(&r), now).unwrap();
    s.commit(commit_of(&r, t, Guard::OpenAt(now))).await.unwrap();
    let approved = get(s, &r.id).await;
    let first = approved.redeem(&by, None, now).unwrap();
    let second = approved.redeem(&by, None, now).unwrap();
    let sealed = s.commit(commit_of(&approved, first, Guard::Approved)).await.unwrap();
    assert_eq!(kinds(&sealed), vec![AuditKind::RequestRedeemed]);
    assert_eq!(sealed, s.for_request(&r.id).await.unwrap().into_iter().rev().take(1).collect::<Vec<_>>());
    assert_eq!(conflict(s.commit(commit_of(&approved, second, Guard::Approved)).await), Conflict::Stale);
    assert_eq!(get(s, &r.id).await.redeemed_by.as_deref(), Some(arn("github-deploy").as_str()));
}

pub async fn an_expired_request_cannot_be_approved_though_its_item_still_exists<S: Store>(sut: Sut<S>) {
    let s = &*sut.store;
    let r = deploy_request(1, T0);
    create(s, &r).await;
    let exp = r.expires_at;

    // A vote read and decided just before expiry, committed at or after it, loses.
    for commit_at in [exp, exp.plus_seconds(60)] {
        let t = r.approve(&user(1), &Governing::as_stored(&r), exp.plus_millis(-1)).unwrap();
        assert_eq!(conflict(s.commit(commit_of(&r, t, Guard::OpenAt(commit_at))).await), Conflict::Stale);
    }
    let still = get(s, &r.id).await;
    assert_eq!((still.status, still.version), (Status::Pending, 1));
    assert!(still.approvals.is_empty());
    assert_eq!(still.effective_status(exp), Status::Expired);

    // The sweeper cannot expire it early...
    let t = r.expire(exp).unwrap();
    assert_eq!(conflict(s.commit(commit_of(&r, t, Guard::ExpiredAt(exp.plus_millis(-1)))).await), Conflict::Stale);
    // ...but can at its expiry, once.
    let t = r.expire(exp).unwrap();
    s.commit(commit_of(&r, t, Guard::ExpiredAt(exp))).await.unwrap();
    let t = r.expire(exp.plus_seconds(1)).unwrap();
    assert_eq!(conflict(s.commit(commit_of(&r, t, Guard::ExpiredAt(exp.plus_seconds(1)))).await), Conflict::Stale);
    let expired = get(s, &r.id).await;
    assert_eq!((expired.status, expired.version), (Status::Expired, 2));
    assert_eq!(kinds(&s.for_request(&r.id).await.unwrap()), vec![AuditKind::RequestCreated, AuditKind::RequestExpired]);
    assert!(s.list_pending(100).await.unwrap().is_empty());
}

pub async fn an_open_request_accepts_a_vote_just_before_expiry<S: Store>(sut: Sut<S>) {
    let s = &*sut.store;
    let r = deploy_request(1, T0);
    create(s, &r).await;
    let just_before = r.expires_at.plus_millis(-1);
    let t = r.approve(&user(1), &Governing::as_stored(&r), just_before).unwrap();
    s.commit(commit_of(&r, t, Guard::OpenAt(just_before))).await.unwrap();
    assert_eq!(get(s, &r.id).await.status, Status::Approved);
}

pub async fn commit_requires_the_next_version<S: Store>(sut: Sut<S>) {
    let s = &*sut.store;
    let r = deploy_request(1, T0);
    create(s, &r).await;
    let now = T0.plus_seconds(1);
    let mut t = r.approve(&user(1), &Governing::as_stored(&r), now).unwrap();
    t.request.version = 5;
    assert!(s.commit(commit_of(&r, t, Guard::OpenAt(now))).await.is_err());
    // Nothing of it was applied: the same user can still vote.
    assert_eq!(get(s, &r.id).await, r);
    let t = r.approve(&user(1), &Governing::as_stored(&r), now).unwrap();
    s.commit(commit_of(&r, t, Guard::OpenAt(now))).await.unwrap();
    // A commit from an old version is stale.
    let mut t = r.cancel(&arn("github-deploy"), now).unwrap();
    t.request.version = 2;
    assert_eq!(
        conflict(s.commit(Commit { expected_version: 1, ..commit_of(&r, t, Guard::VersionOnly) }).await),
        Conflict::Stale
    );
}

pub async fn version_only_commits_update_bookkeeping_after_a_decision<S: Store>(sut: Sut<S>) {
    let s = &*sut.store;
    let r = deploy_request(1, T0);
    create(s, &r).await;
    let now = T0.plus_seconds(1);
    let t = r.approve(&user(1), &Governing::as_stored(&r), now).unwrap();
    s.commit(commit_of(&r, t, Guard::OpenAt(now))).await.unwrap();
    let approved = get(s, &r.id).await;
    assert!(approved.notification.update_pending);

    let mut updated = approved.clone();
    updated.version += 1;
    updated.notification.state = NotificationState::Posted;
    updated.notification.ts = Some("1795621462.000100".into());
    updated.notification.update_pending = false;
    let event = AuditDraft::new(now, AuditKind::SlackUpdated, Actor::system("relay"), Some(r.id));
    let c = Commit {
        expected_version: approved.version,
        request: updated.clone(),
        vote: None,
        events: vec![event],
        guard: Guard::VersionOnly,
    };
    s.commit(c.clone()).await.unwrap();
    assert_eq!(get(s, &r.id).await, updated);
    assert_eq!(conflict(s.commit(c).await), Conflict::Stale);
    assert_eq!(
        kinds(&s.for_request(&r.id).await.unwrap()),
        vec![AuditKind::RequestCreated, AuditKind::VoteApprove, AuditKind::RequestApproved, AuditKind::SlackUpdated]
    );
}

pub async fn lists_pending_oldest_first_and_by_principal_newest_first<S: Store>(sut: Sut<S>) {
    let s = &*sut.store;
    let a = deploy_request(1, T0);
    let b = deploy_request(1, T0.plus_seconds(1));
    let c = deploy_request(1, T0.plus_seconds(2));
    let d = request("ci-runner", "deploy-production", 1, T0.plus_seconds(3));
    let auto = deploy_request(0, T0.plus_seconds(4));
    for r in [&c, &a, &d, &b, &auto] {
        assert_eq!(create(s, r).await, CreateOutcome::Created);
    }
    let now = T0.plus_seconds(5);
    let t = b.deny(&user(1), "no", &Governing::as_stored(&b), now).unwrap();
    s.commit(commit_of(&b, t, Guard::OpenAt(now))).await.unwrap();

    let ids = |v: Vec<ApprovalRequest>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_pending(100).await.unwrap()), vec![a.id, c.id, d.id]);
    assert_eq!(ids(s.list_pending(2).await.unwrap()), vec![a.id, c.id]);

    let me = &a.requester.principal;
    assert_eq!(ids(s.list_by_principal(me, T0, 100).await.unwrap()), vec![auto.id, c.id, b.id, a.id]);
    assert_eq!(ids(s.list_by_principal(me, T0.plus_seconds(1), 2).await.unwrap()), vec![auto.id, c.id]);
    assert_eq!(ids(s.list_by_principal(&d.requester.principal, T0, 100).await.unwrap()), vec![d.id]);
    assert!(s.list_by_principal("nobody", T0, 100).await.unwrap().is_empty());
}

/// The history count a store gives (`earlier_of_same_kind`, which a store may answer from its indexes) is
/// what the listed requests themselves say, for every request, window and limit.
pub async fn earlier_of_same_kind_agrees_with_the_listed_requests<S: Store>(sut: Sut<S>) {
    use countersign_core::ports::SameKind;
    let s = &*sut.store;
    let mut all = Vec::new();
    for i in 0..12i64 {
        // Auto-approved, so that twelve stay under the pending limit.
        let mut r = deploy_request(0, T0.plus_seconds(i * 60));
        if i % 3 == 1 {
            r.action = Action::parse("db:migrate").unwrap();
        }
        if i % 4 == 2 {
            r.environment = Environment::parse("staging").unwrap();
        }
        assert_eq!(create(s, &r).await, CreateOutcome::Created);
        all.push(r);
    }
    // Another principal's requests of the same kind never count.
    create(s, &request("ci-runner", "deploy-production", 1, T0.plus_seconds(30))).await;
    for r in &all {
        for (since, limit) in [(T0, 1000), (T0.plus_seconds(150), 1000), (T0, 4), (T0, 1)] {
            let listed = s.list_by_principal(&r.requester.principal, since, limit).await.unwrap();
            let got = s.earlier_of_same_kind(r, since, limit).await.unwrap();
            assert_eq!(got, SameKind::among(r, &listed), "{} since {since:?} limit {limit}", r.id);
        }
    }
    let last = s.earlier_of_same_kind(&all[11], T0, 1000).await.unwrap();
    assert_eq!(last.count, 5, "requests 0, 3, 5, 7 and 9 are deploy/production before 11");
    assert_eq!(last.newest.map(|r| r.id), Some(all[9].id));
}

pub async fn notification_due_lists_unposted_and_stale_messages<S: Store>(sut: Sut<S>) {
    let s = &*sut.store;
    // Never posted: due at creation.
    let unposted = deploy_request(1, T0);
    // Posted and current: not due.
    let mut posted = deploy_request(1, T0.plus_seconds(1));
    posted.notification.state = NotificationState::Posted;
    posted.notification.ts = Some("1.1".into());
    // Failed, retry after a minute.
    let mut retrying = deploy_request(1, T0.plus_seconds(2));
    retrying.notification.state = NotificationState::Retrying;
    retrying.notification.attempts = 1;
    retrying.notification.next_attempt_at = Some(T0.plus_seconds(60));
    for r in [&unposted, &posted, &retrying] {
        create(s, r).await;
    }
    let due = |now: Timestamp| async move {
        s.list_notification_due(now, 100).await.unwrap().into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    assert_eq!(due(T0.plus_millis(-1)).await, vec![]);
    assert_eq!(due(T0.plus_seconds(59)).await, vec![unposted.id]);
    assert_eq!(due(T0.plus_seconds(60)).await, vec![unposted.id, retrying.id]);

    // A decision makes the posted message stale: due again, with no retry time, from its creation.
    let now = T0.plus_seconds(3);
    let t = posted.approve(&user(1), &Governing::as_stored(&posted), now).unwrap();
    s.commit(commit_of(&posted, t, Guard::OpenAt(now))).await.unwrap();
    assert_eq!(due(T0.plus_seconds(60)).await, vec![unposted.id, posted.id, retrying.id]);
    assert_eq!(s.list_notification_due(T0.plus_seconds(60), 1).await.unwrap().len(), 1);

    // Once updated, it is no longer due.
    let current = get(s, &posted.id).await;
    let mut done = current.clone();
    done.version += 1;
    done.notification.update_pending = false;
    s.commit(Commit {
        expected_version: current.version,
        request: done,
        vote: None,
        events: vec![],
        guard: Guard::VersionOnly,
    })
    .await
    .unwrap();
    assert_eq!(due(T0.plus_seconds(60)).await, vec![unposted.id, retrying.id]);
}

pub async fn audit_read_from_pages_through_the_chain_in_order<S: Store>(sut: Sut<S>) {
    let s = &*sut.store;
    assert_eq!(s.last().await.unwrap(), None);
    assert!(s.read_from(1, 10).await.unwrap().is_empty());
    assert!(s.append(vec![]).await.unwrap().is_empty());

    let mut appended = Vec::new();
    for (i, n) in [1, 3, 5, 2, 7, 4].into_iter().enumerate() {
        appended.extend(s.append(drafts(n, &format!("batch-{i}"))).await.unwrap());
    }
    let seqs: Vec<u64> = appended.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=22).collect::<Vec<_>>());

    let read = all_audit(s).await;
    assert_eq!(read, appended);
    assert_eq!(verify_chain(&read).unwrap().records, 22);
    let seqs_of = |v: Vec<AuditEvent>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs_of(s.read_from(10, 3).await.unwrap()), vec![10, 11, 12]);
    assert_eq!(seqs_of(s.read_from(21, 10).await.unwrap()), vec![21, 22]);
    assert!(s.read_from(23, 10).await.unwrap().is_empty());
    assert_eq!(s.last().await.unwrap().as_ref(), appended.last());
}

pub async fn for_request_returns_that_requests_records_in_chain_order<S: Store>(sut: Sut<S>) {
    let s = &*sut.store;
    let a = deploy_request(2, T0);
    let b = deploy_request(1, T0.plus_seconds(1));
    create(s, &a).await;
    create(s, &b).await;
    s.append(drafts(2, "noise")).await.unwrap();
    let now = T0.plus_seconds(2);
    let t = a.approve(&user(1), &Governing::as_stored(&a), now).unwrap();
    let a2 = t.request.clone();
    s.commit(commit_of(&a, t, Guard::OpenAt(now))).await.unwrap();
    let t = b.deny(&user(2), "not today", &Governing::as_stored(&b), now).unwrap();
    s.commit(commit_of(&b, t, Guard::OpenAt(now))).await.unwrap();
    let t = a2.approve(&user(3), &Governing::as_stored(&a2), now).unwrap();
    s.commit(commit_of(&a2, t, Guard::OpenAt(now))).await.unwrap();

    let of_a = s.for_request(&a.id).await.unwrap();
    assert_eq!(
        kinds(&of_a),
        vec![AuditKind::RequestCreated, AuditKind::VoteApprove, AuditKind::VoteApprove, AuditKind::RequestApproved]
    );
    assert!(of_a.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(of_a.iter().all(|e| e.request_id == Some(a.id)));
    let of_b = s.for_request(&b.id).await.unwrap();
    assert_eq!(kinds(&of_b), vec![AuditKind::RequestCreated, AuditKind::VoteDeny, AuditKind::RequestDenied]);
    assert!(s.for_request(&RequestId::generate()).await.unwrap().is_empty());
    // Every record appears in the chain exactly as for_request returned it.
    let chain = all_audit(s).await;
    for e in of_a.iter().chain(&of_b) {
        assert_eq!(&chain[usize::try_from(e.seq - 1).unwrap()], e);
    }
}

pub async fn policies_are_stored_replaced_and_deleted_with_audit_records<S: Store>(sut: Sut<S>) {
    let s = &*sut.store;
    let policies = parse_policies(include_str!("../../infra/policies.example.yaml")).unwrap();
    assert!(policies.len() >= 2);
    let changed =
        |name: &str| AuditDraft::new(T0, AuditKind::PolicyChanged, Actor::cli("tester"), None).with("policy", name);
    assert!(s.list_policies().await.unwrap().is_empty());
    for p in &policies {
        s.put_policy(p, changed(p.name.as_str())).await.unwrap();
    }
    let mut listed = s.list_policies().await.unwrap();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    let mut expected = policies.clone();
    expected.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed, expected);

    let mut replaced = policies[0].clone();
    replaced.required_approvals = 3;
    replaced.description = "stricter".into();
    s.put_policy(&replaced, changed(replaced.name.as_str())).await.unwrap();
    assert_eq!(s.get_policy(&replaced.name).await.unwrap(), Some(replaced.clone()));
    assert_eq!(s.list_policies().await.unwrap().len(), policies.len());

    let deleted = AuditDraft::new(T0, AuditKind::PolicyDeleted, Actor::cli("tester"), None)
        .with("policy", replaced.name.as_str());
    s.delete_policy(&replaced.name, deleted).await.unwrap();
    assert_eq!(s.get_policy(&replaced.name).await.unwrap(), None);
    assert_eq!(s.list_policies().await.unwrap().len(), policies.len() - 1);
    assert_eq!(s.get_policy(&PolicyName::parse("no-such-policy").unwrap()).await.unwrap(), None);

    let audit = all_audit(s).await;
    assert_eq!(count(&audit, AuditKind::PolicyChanged), policies.len() + 1);
    assert_eq!(kinds(&audit).last(), Some(&AuditKind::PolicyDeleted));
    verify_chain(&audit).unwrap();
}

/// Six records, verified intact before the test tampers with them.
async fn six_records<S: Store>(sut: &Sut<S>) {
    sut.store.append(drafts(2, "a")).await.unwrap();
    sut.store.append(drafts(4, "b")).await.unwrap();
    assert_eq!(verify_chain(&all_audit(&*sut.store).await).unwrap().records, 6);
}

pub async fn t25_chain_verification_names_an_edited_record<S: Store>(sut: Sut<S>) {
    six_records(&sut).await;
    sut.tamper.edit_audit(3).await;
    assert_eq!(verify_chain(&all_audit(&*sut.store).await), Err(ChainBreak::Edited { seq: 3 }));
}

pub async fn t25_chain_verification_names_a_deleted_record<S: Store>(sut: Sut<S>) {
    six_records(&sut).await;
    sut.tamper.delete_audit(3).await;
    assert_eq!(verify_chain(&all_audit(&*sut.store).await), Err(ChainBreak::Missing { expected: 3, found: 4 }));
}

pub async fn t25_chain_verification_names_a_moved_record<S: Store>(sut: Sut<S>) {
    six_records(&sut).await;
    sut.tamper.swap_audit(2, 4).await;
    assert_eq!(verify_chain(&all_audit(&*sut.store).await), Err(ChainBreak::OutOfOrder { seq: 2, after: 4 }));
}

/// Issue 19: an event-worthy change and its outbox entry are one write. The entry holds the sealed record
/// and the request as that write left it; a vote that decides nothing and a commit that fails write none.
pub async fn an_event_worthy_change_writes_its_outbox_entry_in_the_same_commit<S: Store>(sut: Sut<S>) {
    let s = &*sut.store;
    let r = deploy_request(2, T0);
    create(s, &r).await;
    let created = s.for_request(&r.id).await.unwrap();
    let due = s.due(100).await.unwrap();
    assert_eq!(due.len(), 1, "request.created only");
    assert_eq!((&due[0].record, &due[0].request), (&created[0], &r));
    let now = T0.plus_seconds(1);
    let t = r.approve(&user(1), &Governing::as_stored(&r), now).unwrap();
    s.commit(commit_of(&r, t, Guard::OpenAt(now))).await.unwrap();
    assert_eq!(s.due(100).await.unwrap().len(), 1, "a vote alone is not an event");
    let once = get(s, &r.id).await;
    let t = once.approve(&user(2), &Governing::as_stored(&once), now).unwrap();
    let stale = commit_of(&once, t.clone(), Guard::ExpiredAt(now)); // its guard fails: not expired
    assert_eq!(conflict(s.commit(stale).await), Conflict::Stale);
    assert_eq!(s.due(100).await.unwrap().len(), 1, "a failed commit writes no entry");
    let sealed = s.commit(commit_of(&once, t.clone(), Guard::OpenAt(now))).await.unwrap();
    let due = s.due(100).await.unwrap();
    let approved = sealed.iter().find(|e| e.kind == AuditKind::RequestApproved).unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!((&due[1].record, &due[1].request), (approved, &t.request), "the request as committed");
    assert!(due[0].seq() < due[1].seq(), "in chain order");
    s.delete(&[due[0].seq(), 999_999]).await.unwrap();
    let left: Vec<u64> = s.due(100).await.unwrap().iter().map(|e| e.seq()).collect();
    assert_eq!(left, [approved.seq]);
}

/// Instantiates every contract test for one store: `conformance!(module, path::to::sut_fn, { extra })`.
/// The sut function returns `None` when the store's backend is not available (and is not required).
macro_rules! conformance {
    ($store:ident, $sut:path, { $($extra:item)* }) => {
        conformance!(@tests $store, $sut, { $($extra)* }, [
            create_with_a_used_idempotency_key_returns_the_existing_request,
            max_pending_is_enforced_per_principal_and_policy,
            a_retry_returns_the_existing_request_even_at_max_pending,
            duplicate_vote_counts_once_under_20_concurrent_tasks,
            only_one_of_20_concurrent_approvals_decides,
            quorum_of_2_under_20_concurrent_approvals_approves_exactly_once,
            concurrent_appends_keep_one_unbroken_chain,
            no_transition_leaves_a_terminal_state,
            t35_redemption_commits_once_and_only_over_an_approved_request,
            an_expired_request_cannot_be_approved_though_its_item_still_exists,
            an_open_request_accepts_a_vote_just_before_expiry,
            commit_requires_the_next_version,
            version_only_commits_update_bookkeeping_after_a_decision,
            lists_pending_oldest_first_and_by_principal_newest_first,
            earlier_of_same_kind_agrees_with_the_listed_requests,
            notification_due_lists_unposted_and_stale_messages,
            audit_read_from_pages_through_the_chain_in_order,
            for_request_returns_that_requests_records_in_chain_order,
            policies_are_stored_replaced_and_deleted_with_audit_records,
            t25_chain_verification_names_an_edited_record,
            t25_chain_verification_names_a_deleted_record,
            t25_chain_verification_names_a_moved_record,
            an_event_worthy_change_writes_its_outbox_entry_in_the_same_commit,
        ]);
    };
    (@tests $store:ident, $sut:path, { $($extra:item)* }, [$($test:ident),* $(,)?]) => {
        mod $store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let Some(sut) = $sut().await else { return };
                    super::$test(sut).await;
                }
            )*
            $($extra)*
        }
    };
}

conformance!(embedded, countersign_testkit::stores::embedded_sut, {
    /// Closing and reopening the database keeps requests, votes and an intact chain, and appends continue it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_store_survives_reopen() {
        use countersign_core::domain::request::Governing;
        use countersign_core::ports::{AuditLog, PolicyStore, RequestStore};
        use countersign_sqlite::EmbeddedStore;

        let (dir, store) = countersign_testkit::stores::embedded();
        let r = super::deploy_request(2, super::T0);
        super::create(&*store, &r).await;
        let now = super::T0.plus_seconds(1);
        let t = r.approve(&super::user(1), &Governing::as_stored(&r), now).unwrap();
        store.commit(super::commit_of(&r, t, super::Guard::OpenAt(now))).await.unwrap();
        let policies = super::parse_policies(include_str!("../../infra/policies.example.yaml")).unwrap();
        let p = &policies[0];
        let draft = super::AuditDraft::new(now, super::AuditKind::PolicyChanged, super::Actor::cli("tester"), None);
        store.put_policy(p, draft).await.unwrap();
        let request_before = super::get(&*store, &r.id).await;
        let audit_before = super::all_audit(&*store).await;
        let path = store.db_path().to_path_buf();
        drop(store);

        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.db_path(), path);
        assert_eq!(super::get(&store, &r.id).await, request_before);
        assert_eq!(store.get_policy(&p.name).await.unwrap().as_ref(), Some(p));
        let audit_after = super::all_audit(&store).await;
        assert_eq!(audit_after, audit_before);
        super::verify_chain(&audit_after).unwrap();

        // The vote is still recorded: the same user cannot vote again.
        let again = r.approve(&super::user(1), &Governing::as_stored(&r), now).unwrap();
        assert_eq!(
            super::conflict(store.commit(super::commit_of(&r, again, super::Guard::OpenAt(now))).await),
            super::Conflict::DuplicateVote
        );
        // New records continue the old chain.
        store.append(super::drafts(2, "after")).await.unwrap();
        let chain = super::all_audit(&store).await;
        assert_eq!(chain.len(), audit_before.len() + 2);
        super::verify_chain(&chain).unwrap();
        assert_eq!(store.list_pending(10).await.unwrap().len(), 1);
    }
});

conformance!(dynamodb, countersign_testkit::stores::dynamo_sut, {
    /// Each `DynamoStore` queues its own appends and remembers where it last left the chain; several
    /// processes (stores) appending at once still make one unbroken chain, and a store whose remembered
    /// end is stale (another process appended since) finds the real end instead of forking or failing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn appends_from_several_processes_keep_one_unbroken_chain() {
        use std::sync::Arc;

        use countersign_aws::dynamodb::DynamoStore;
        use countersign_core::ports::AuditLog;

        let Some((_, client, tables)) = countersign_testkit::stores::dynamo().await else { return };
        let stores: Vec<Arc<DynamoStore>> =
            (0..4).map(|_| Arc::new(DynamoStore::new(client.clone(), tables.clone()))).collect();
        // Stale on purpose: 0 appends, 1 appends, 0 appends again from the end it remembers.
        stores[0].append(super::drafts(1, "a")).await.unwrap();
        stores[1].append(super::drafts(2, "b")).await.unwrap();
        let c = stores[0].append(super::drafts(1, "c")).await.unwrap();
        assert_eq!(c[0].seq, 4, "the stale store appended after the other store's records");

        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = Arc::clone(&stores[i % 4]);
                tokio::spawn(async move {
                    for round in 0..5 {
                        store.append(super::drafts(2, &format!("task-{i}-{round}"))).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let chain = super::all_audit(&*stores[3]).await;
        assert_eq!(chain.len(), 4 + 8 * 5 * 2);
        super::verify_chain(&chain).unwrap();
    }

    /// Items written before requests carried copies of their action and environment are still counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn history_counts_requests_written_before_the_kind_copies() {
        use aws_sdk_dynamodb::types::AttributeValue;
        use countersign_aws::dynamodb::keys;
        use countersign_core::ports::{RequestStore, SameKind};

        let Some((store, client, tables)) = countersign_testkit::stores::dynamo().await else { return };
        let (old, new) = (super::deploy_request(1, super::T0), super::deploy_request(1, super::T0.plus_seconds(60)));
        for r in [&old, &new] {
            super::create(&*store, r).await;
        }
        client
            .update_item()
            .table_name(&tables.requests)
            .key(keys::PK, AttributeValue::S(keys::request_pk(&old.id)))
            .key(keys::SK, AttributeValue::S(keys::REQUEST_SK.into()))
            .update_expression("REMOVE #a, #e")
            .expression_attribute_names("#a", keys::ACTION)
            .expression_attribute_names("#e", keys::ENVIRONMENT)
            .send()
            .await
            .unwrap();
        let got = store.earlier_of_same_kind(&new, super::T0, 1000).await.unwrap();
        assert_eq!(got, SameKind { count: 1, newest: Some(super::get(&*store, &old.id).await) });
    }
});
