//! Callbacks refused before they are authenticated leave an audit record (issue 14, threat rows 1, 3, 4, 7
//! and 27): `callback.rejected` by `slack:unknown`, with only fixed words and request facts the sender does
//! not choose (`code`, `reason`, `suppressed`, `body_bytes`, `source_ip`), rationed per process
//! (`countersign_core::service::refusals`), and the answer is the same generic 401 whether or not the record
//! could be written.
//!
//! The helpers [`records_since`] and [`assert_refusal_records`] are also what the older tests of these rows
//! (`slack_interactions`, `secret_rotation`) assert refusals with.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use countersign_core::domain::{AuditDraft, AuditEvent, RequestId, Status};
use countersign_core::ports::{AuditLog, StoreError, Stores};
use countersign_core::service::refusals::REFUSAL_RECORDS_PER_MINUTE;
use countersign_lambda::http::slack::ACK_BUDGET;
use countersign_slack::signature::sign;
use serde_json::json;

use crate::secret_rotation::{
    assert_generic_401, click_signed_with, create_split_secrets, interactions_secrets, rotate, NEW, OLD,
};
use countersign_testkit::app::{
    capture_logs, on_both_stores, secretsmanager_client, slack_event, spawn_app, spawn_app_on, spawn_app_with_secrets,
    urlencode, AppOptions, NowTs, StoreKind, TestApp, SIGNING_SECRET,
};

const APPROVE: &str = "countersign_approve";
/// The details a refusal record may carry; anything else would be something we did not mean to record.
const REFUSAL_DETAILS: [&str; 5] = ["body_bytes", "code", "reason", "source_ip", "suppressed"];

// ---- helpers (also used by slack_interactions and secret_rotation) -------------------------------------

/// The audit records appended after the first `from` (a length of the chain read before).
pub(crate) async fn records_since(t: &TestApp, from: usize) -> Vec<AuditEvent> {
    t.audit().await.split_off(from)
}

/// `records` are exactly one `callback.rejected` record per `(code, reason)`, in order: by `slack:unknown`,
/// on no request, with no detail but the documented ones.
pub(crate) fn assert_refusal_records(records: &[AuditEvent], expected: &[(&str, &str)], what: &str) {
    let got: Vec<(&str, &str)> = records
        .iter()
        .map(|e| {
            (
                e.details.get("code").map_or("<no code>", String::as_str),
                e.details.get("reason").map_or("<no reason>", String::as_str),
            )
        })
        .collect();
    if got != expected {
        // A flood's lists are long: name the first difference rather than print both.
        let at = got.iter().zip(expected).position(|(g, e)| g != e).unwrap_or(got.len().min(expected.len()));
        panic!(
            "{what}: {} refusals recorded, {} expected; first difference at {at}: {:?} instead of {:?}",
            got.len(),
            expected.len(),
            got.get(at),
            expected.get(at)
        );
    }
    for e in records {
        assert_eq!(e.kind.as_str(), "callback.rejected", "{what}: {e:?}");
        assert_eq!(e.actor.0, "slack:unknown", "{what}: {e:?}");
        assert_eq!(e.request_id, None, "{what}: {e:?}");
        assert!(e.details.keys().all(|k| REFUSAL_DETAILS.contains(&k.as_str())), "{what}: {:?}", e.details);
        assert!(e.details.contains_key("suppressed"), "{what}: {:?}", e.details);
    }
}

/// A forged click (signed with a secret that is not ours) at the app's current time.
fn forged(t: &TestApp, id: &str) -> Request<Body> {
    let form = format!("payload={}", urlencode(&t.click("UALICE0001", APPROVE, id, "C0APPROVALS", "1.2").to_string()));
    let ts = t.clock.now_ts().unix_seconds().to_string();
    Request::builder()
        .method("POST")
        .uri("/slack/interactions")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", &ts)
        .header("x-slack-signature", sign(b"not-our-signing-secret-000000000", &ts, form.as_bytes()))
        .body(Body::from(form))
        .unwrap()
}

// ---- row 27: the old secret after the grace period -----------------------------------------------------

/// Inside the grace period the old secret verifies; after it, the same callback is the generic 401, votes
/// nothing, and is audited as `previous_secret_expired` — told apart from a signature that matches no secret
/// at all (`signature_mismatch`), because it is the mark of a leaked old secret.
async fn t27_a_callback_signed_with_the_previous_secret_after_the_grace_period_is_401_and_audited_as_previous_secret_expired(
    kind: StoreKind,
) {
    let Some(sm) = secretsmanager_client().await else { return };
    let (signing, bot) = create_split_secrets(&sm, OLD).await;
    let adapter = interactions_secrets(&sm, &signing, &bot, &[("COUNTERSIGN_SECRET_CACHE_TTL_SECONDS", "0")]);
    let Some(t) = spawn_app_with_secrets(kind, Arc::new(adapter)).await else { return };
    let (buf, _guard) = capture_logs();
    let created = rotate(&sm, &signing, NEW).await;

    t.clock.set(created.plus_seconds(599));
    let p = t.pending_request().await;
    let a = t.call_slack(click_signed_with(&t, OLD, "UALICE0001", &p)).await;
    assert_eq!(a.status, 200, "old secret inside the grace: {}", a.json);
    assert_eq!(t.request(&p.id).await.approvals.len(), 1);

    t.clock.set(created.plus_seconds(600));
    let before = (t.request(&p.id).await, t.audit().await.len(), t.slack.calls().len());
    let a = t.call_slack(click_signed_with(&t, OLD, "UBOB000001", &p)).await;
    assert_generic_401(&a, "old secret after the grace");
    // Any other secret is a plain mismatch.
    let a = t.call_slack(click_signed_with(&t, "some-other-secret-3333333333333333", "UBOB000001", &p)).await;
    assert_generic_401(&a, "a secret that was never ours");
    assert_eq!(t.request(&p.id).await, before.0, "a retired secret authenticated a vote");
    assert_eq!(t.slack.calls().len(), before.2, "Slack was called for a refused callback");
    let written = records_since(&t, before.1).await;
    assert_refusal_records(
        &written,
        &[("bad_signature", "previous_secret_expired"), ("bad_signature", "signature_mismatch")],
        "after the grace",
    );
    assert_eq!(written[0].details["suppressed"], "0");
    assert!(
        buf.text().lines().any(|l| l.contains("previous_secret_expired") && l.contains("WARN")),
        "a warning names the old secret:\n{}",
        buf.text()
    );

    // The new secret still votes.
    let a = t.call_slack(click_signed_with(&t, NEW, "UBOB000001", &p)).await;
    assert_eq!(a.status, 200, "new secret: {}", a.json);
    assert_eq!(t.request(&p.id).await.status, Status::Approved);
    for s in [OLD, NEW] {
        assert!(!buf.text().contains(s), "a signing secret was logged");
        assert!(!serde_json::to_string(&t.audit().await).unwrap().contains(s), "a signing secret was recorded");
    }
}

// ---- rows 1 and 7: what the record holds ---------------------------------------------------------------

/// A forged callback through API Gateway: the record names the failed check, the body's length and the
/// address API Gateway saw (never the `X-Forwarded-For` the sender wrote), and nothing else: no text of the
/// body, not the received signature, not the MAC our secret gives, not the secret; the logs neither.
async fn t01_a_forged_signature_is_audited_as_bad_signature_with_nothing_of_the_body(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    let (buf, _guard) = capture_logs();
    let marker = "ZQXJ-forged-marker-7731";
    let mut click = t.click("UALICE0001", APPROVE, &p.id, &p.channel, &p.ts);
    click["user"]["name"] = marker.into();
    let body = format!("payload={}", urlencode(&click.to_string())).into_bytes();
    let ts = t.clock.now_ts().unix_seconds().to_string();
    let received = sign(b"the-attackers-guess-0000000000000", &ts, &body);
    let ours = sign(SIGNING_SECRET.as_bytes(), &ts, &body);
    let before = t.audit().await.len();

    let ev = slack_event(
        &body,
        &[("X-Slack-Request-Timestamp", &ts), ("X-Slack-Signature", &received), ("X-Forwarded-For", "198.51.100.66")],
        false,
    );
    let a = t.call_slack_event(ev).await;
    // What the handler logged (before the test's own store reads, which the SDK traces with the request id).
    let logs = buf.text();
    assert_generic_401(&a, "forged");
    assert!(t.request(&p.id).await.approvals.is_empty());

    let written = records_since(&t, before).await;
    assert_refusal_records(&written, &[("bad_signature", "signature_mismatch")], "forged");
    let details: Vec<(&str, &str)> = written[0].details.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let len = body.len().to_string();
    assert_eq!(
        details,
        [
            ("body_bytes", len.as_str()),
            ("code", "bad_signature"),
            ("reason", "signature_mismatch"),
            // The fixture's requestContext.identity.sourceIp.
            ("source_ip", "203.0.113.10"),
            ("suppressed", "0"),
        ]
    );
    let record = serde_json::to_string(&written).unwrap();
    // The request id is in the body too, but the logs may hold it from stored records (DynamoDB's SDK
    // traces the chain it reads before appending): only the record is checked for it.
    assert!(!record.contains(p.id.as_str()), "the record holds the request id: {record}");
    for (what, text) in [("record", &record), ("logs", &logs)] {
        for (name, value) in [
            ("a text of the body", marker),
            ("the received signature", &received[3..]),
            ("the MAC of our secret", &ours[3..]),
            ("the signing secret", SIGNING_SECRET),
        ] {
            let hit: Vec<&str> = text.lines().filter(|l| l.contains(value)).collect();
            assert!(hit.is_empty(), "{what} holds {name}: {hit:#?}");
        }
    }
}

/// A correctly signed callback whose timestamp is outside the window: `stale_timestamp`; with no signature
/// header at all: `missing_signature`; a body that is not UTF-8: `body_not_utf8`. Each is its own record.
async fn t04_a_stale_timestamp_is_audited_as_stale_timestamp(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    let body = format!("payload={}", urlencode(&t.click("UALICE0001", APPROVE, &p.id, &p.channel, &p.ts).to_string()));
    let before = t.audit().await.len();
    let stale = (t.clock.now_ts().unix_seconds() - 301).to_string();
    let sig = sign(SIGNING_SECRET.as_bytes(), &stale, body.as_bytes());
    let ev = slack_event(body.as_bytes(), &[("X-Slack-Request-Timestamp", &stale), ("X-Slack-Signature", &sig)], false);
    assert_generic_401(&t.call_slack_event(ev).await, "stale");
    let now = t.clock.now_ts().unix_seconds().to_string();
    let ev = slack_event(body.as_bytes(), &[("X-Slack-Request-Timestamp", &now)], false);
    assert_generic_401(&t.call_slack_event(ev).await, "no signature");
    let bad = [body.as_bytes(), b"\xc3"].concat();
    let sig = sign(SIGNING_SECRET.as_bytes(), &now, &bad);
    let ev = slack_event(&bad, &[("X-Slack-Request-Timestamp", &now), ("X-Slack-Signature", &sig)], true);
    assert_generic_401(&t.call_slack_event(ev).await, "not UTF-8");
    assert!(t.request(&p.id).await.approvals.is_empty());
    let written = records_since(&t, before).await;
    assert_refusal_records(
        &written,
        &[
            ("bad_signature", "stale_timestamp"),
            ("bad_signature", "missing_signature"),
            ("bad_signature", "body_not_utf8"),
        ],
        "stale, unsigned, not UTF-8",
    );
    assert_eq!(written[2].details["body_bytes"], bad.len().to_string());
}

// ---- row 1: a flood cannot flood the audit trail -------------------------------------------------------

/// A burst of forged callbacks writes at most the budget; the rest are counted, and the next record written
/// (once the bucket refills, one a second) carries that count as `suppressed`. Valid callbacks still vote.
async fn t01_a_flood_of_forged_callbacks_writes_at_most_the_budget_and_counts_the_rest_as_suppressed(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    let before = t.audit().await.len();
    let budget = usize::try_from(REFUSAL_RECORDS_PER_MINUTE).unwrap();
    let extra = 15;
    for i in 0..budget + extra {
        assert_generic_401(&t.call_slack(forged(&t, &p.id)).await, &format!("forged {i}"));
    }
    let written = records_since(&t, before).await;
    assert_eq!(written.len(), budget, "a burst writes exactly the budget");
    assert_refusal_records(&written, &vec![("bad_signature", "signature_mismatch"); budget], "the burst");
    assert!(written.iter().all(|e| e.details["suppressed"] == "0"));

    // The flood does not stop a valid vote (it is not a refusal and spends nothing).
    let a = t.call_slack(t.signed_callback(&t.click("UALICE0001", APPROVE, &p.id, &p.channel, &p.ts))).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let after_vote = t.audit().await.len();

    // Half a second later the bucket holds half a record: still counted only.
    t.clock.set(t.clock.now_ts().plus_millis(500));
    assert_generic_401(&t.call_slack(forged(&t, &p.id)).await, "after 0.5 s");
    assert_eq!(t.audit().await.len(), after_vote, "no record before the bucket refilled");
    // One second after the burst: one record, carrying every refusal not recorded since.
    t.clock.set(t.clock.now_ts().plus_millis(500));
    assert_generic_401(&t.call_slack(forged(&t, &p.id)).await, "after 1 s");
    let written = records_since(&t, after_vote).await;
    assert_refusal_records(&written, &[("bad_signature", "signature_mismatch")], "after 1 s");
    assert_eq!(written[0].details["suppressed"], (extra + 1).to_string(), "the refusals not recorded are counted");
}

// ---- the audit store down: the 401 still goes out, in time ---------------------------------------------

/// An audit log whose `append` works, fails at once, or never answers; reads always work.
struct FlakyAudit {
    inner: Arc<dyn AuditLog>,
    /// 0 up, 1 failing, 2 hanging.
    mode: AtomicU8,
}

const UP: u8 = 0;
const FAILING: u8 = 1;
const HANGING: u8 = 2;

#[async_trait]
impl AuditLog for FlakyAudit {
    async fn append(&self, events: Vec<AuditDraft>) -> Result<Vec<AuditEvent>, StoreError> {
        match self.mode.load(Ordering::SeqCst) {
            FAILING => Err(StoreError::unavailable(std::io::Error::other("the audit store is down"))),
            HANGING => std::future::pending().await,
            _ => self.inner.append(events).await,
        }
    }
    async fn read_from(&self, from_seq: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.read_from(from_seq, limit).await
    }
    async fn for_request(&self, id: &RequestId) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.for_request(id).await
    }
    async fn last(&self) -> Result<Option<AuditEvent>, StoreError> {
        self.inner.last().await
    }
}

/// The audit store failing, then hanging: every forged callback still gets the generic 401, within the
/// callback's deadline; the refusals that could not be written are counted in the next record's `suppressed`.
async fn t01_the_401_still_goes_out_when_the_audit_store_is_down(kind: StoreKind) {
    let (stores, keep): (Stores, Box<dyn Send + Sync>) = match kind {
        StoreKind::Embedded => {
            let (dir, store) = countersign_testkit::stores::embedded();
            (Stores::from_one(store), Box::new(dir))
        }
        StoreKind::Dynamodb => {
            let Some((store, _client, _tables)) = countersign_testkit::stores::dynamo().await else { return };
            (Stores::from_one(store), Box::new(()))
        }
    };
    let audit = Arc::new(FlakyAudit { inner: stores.audit.clone(), mode: AtomicU8::new(UP) });
    let stores = Stores { audit: audit.clone(), ..stores };
    let t = spawn_app_on(stores, keep, AppOptions::default()).await;
    let p = t.pending_request().await;
    let before = t.audit().await.len();

    audit.mode.store(FAILING, Ordering::SeqCst);
    let a = t.call_slack(forged(&t, &p.id)).await;
    assert_generic_401(&a, "audit store failing");
    audit.mode.store(HANGING, Ordering::SeqCst);
    let started = Instant::now();
    let a = tokio::time::timeout(Duration::from_secs(10), t.call_slack(forged(&t, &p.id)))
        .await
        .expect("the 401 goes out when the audit store hangs");
    let took = started.elapsed();
    assert_generic_401(&a, "audit store hanging");
    assert!(took < ACK_BUDGET + Duration::from_millis(500), "the 401 took {took:?}: not bounded by the deadline");
    assert_eq!(t.audit().await.len(), before);

    audit.mode.store(UP, Ordering::SeqCst);
    let a = t.call_slack(forged(&t, &p.id)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let written = records_since(&t, before).await;
    assert_refusal_records(&written, &[("bad_signature", "signature_mismatch")], "store back");
    assert_eq!(written[0].details["suppressed"], "2", "both refusals the store did not take are counted");
    assert!(t.request(&p.id).await.approvals.is_empty());
    assert_eq!(a.json, json!({"error": {"code": "unauthorized", "message": "invalid request signature"}}));
}

on_both_stores!(
    t27_a_callback_signed_with_the_previous_secret_after_the_grace_period_is_401_and_audited_as_previous_secret_expired,
    t01_a_forged_signature_is_audited_as_bad_signature_with_nothing_of_the_body,
    t04_a_stale_timestamp_is_audited_as_stale_timestamp,
    t01_a_flood_of_forged_callbacks_writes_at_most_the_budget_and_counts_the_rest_as_suppressed,
    t01_the_401_still_goes_out_when_the_audit_store_is_down,
);
