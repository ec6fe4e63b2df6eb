//! The sweeper, black-box: expiry (row 15), the relay of owed Slack posts and updates honouring `Retry-After`,
//! and the reminders at 1/3 and 2/3 of the TTL, on both stores, with the real Slack client against the fake.

use countersign_core::domain::{ApprovalRequest, Status};
use countersign_slack::fake::Behaviour;
use serde_json::{json, Value};

use countersign_testkit::app::{api_event, spawn_app, NowTs, Posted, StoreKind, TestApp, DEPLOY_ARN};
use countersign_testkit::both_stores;

const APPROVE: &str = "countersign_approve";
const DENY: &str = "countersign_deny";

async fn click(t: &TestApp, user: &str, action: &str, p: &Posted) -> countersign_testkit::app::Answer {
    t.call_slack(t.signed_callback(&t.click(user, action, &p.id, &p.channel, &p.ts))).await
}

/// The request's message as the fake Slack holds it now.
fn message(t: &TestApp, p: &Posted) -> countersign_slack::fake::FakeMessage {
    t.slack.messages().into_iter().find(|m| m.ts == p.ts && m.channel == p.channel).expect("the message exists")
}

fn has_buttons(blocks: &Value) -> bool {
    blocks.to_string().contains(APPROVE) || blocks.to_string().contains(DENY)
}

/// Reminders posted in the thread of `p`'s message.
fn reminders(t: &TestApp, p: &Posted) -> Vec<Value> {
    t.slack
        .calls_to("chat.postMessage")
        .into_iter()
        .filter(|c| c.body["thread_ts"] == p.ts.as_str())
        .map(|c| c.body)
        .collect()
}

async fn status_through_api(t: &TestApp, id: &str) -> Value {
    let a = t.call_api(api_event("GET", &format!("/v1/requests/{id}"), None, Some(DEPLOY_ARN))).await;
    assert_eq!(a.status, 200, "{}", a.json);
    a.json["status"].clone()
}

fn last_reply(t: &TestApp) -> String {
    t.slack.calls_to("response_url").last().map(|c| c.body["text"].to_string()).unwrap_or_default()
}

// ---- row 15: expiry ------------------------------------------------------------------------------------

async fn t15_click_after_expiry_rejected_and_status_expired(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    let expires_at = t.request(&p.id).await.expires_at;

    // One millisecond before the expiry a vote still counts.
    t.clock.set(expires_at.plus_millis(-1));
    assert_eq!(click(&t, "UALICE0001", APPROVE, &p).await.status, 200);
    assert_eq!(t.request(&p.id).await.approvals.len(), 1);

    // From expires_at on, while the item still exists and reads "pending": refused, audited, unchanged.
    t.clock.set(expires_at);
    let before: ApprovalRequest = t.request(&p.id).await;
    assert_eq!(before.status, Status::Pending, "the sweeper has not run yet");
    assert_eq!(click(&t, "UBOB000001", APPROVE, &p).await.status, 200);
    assert!(last_reply(&t).contains("expired"), "{}", last_reply(&t));
    assert_eq!(click(&t, "UBOB000001", DENY, &p).await.status, 200);
    assert!(t.slack.calls_to("views.open").is_empty(), "no deny dialog for an expired request");
    let a = t.call_slack(t.signed_callback(&t.deny_submission("UBOB000001", &p.id, "too late"))).await;
    assert_eq!(a.json["response_action"], "errors", "{}", a.json);
    assert_eq!(t.request(&p.id).await, before, "nothing changed after the expiry");
    let rejected = t.audit_of("vote.rejected").await;
    assert_eq!(rejected.len(), 3);
    assert!(rejected.iter().all(|e| e.details.get("code").map(String::as_str) == Some("already_decided")));
    assert_eq!(status_through_api(&t, &p.id).await, "expired", "an overdue request reads as expired");

    // The sweeper makes it so: status, one audit record, the message shows it without buttons.
    let rep = t.app.sweeper().run_once().await.unwrap();
    assert_eq!(rep.expired, 1, "{rep:?}");
    let r = t.request(&p.id).await;
    assert_eq!(r.status, Status::Expired);
    assert!(!r.notification.update_pending);
    let expired = t.audit_of("request.expired").await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].actor.0, "system:sweeper");
    assert_eq!(expired[0].request_id.map(|i| i.to_string()), Some(p.id.clone()));
    let m = message(&t, &p);
    assert!(m.blocks.to_string().contains("Expired"), "{}", m.blocks);
    assert!(!has_buttons(&m.blocks), "{}", m.blocks);
    assert!(t.slack.messages().iter().filter(|m| m.ts == p.ts).count() == 1, "one message per request");

    // Again: nothing more to do; a late click is still refused.
    let rep = t.app.sweeper().run_once().await.unwrap();
    assert_eq!(rep.expired, 0);
    assert_eq!(t.audit_of("request.expired").await.len(), 1);
    assert_eq!(click(&t, "UCAROL0001", APPROVE, &p).await.status, 200);
    assert_eq!(t.request(&p.id).await.status, Status::Expired);
    assert_eq!(t.request(&p.id).await.approvals.len(), 1);
}

both_stores!(
    t15_click_after_expiry_rejected_and_status_expired,
    embedded_t15_click_after_expiry_rejected_and_status_expired,
    dynamodb_t15_click_after_expiry_rejected_and_status_expired
);

/// Two sweepers at once expire each overdue request exactly once, and leave the others alone.
async fn concurrent_sweepers_expire_each_overdue_request_once(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let approved = t.pending_request().await;
    for user in ["UALICE0001", "UBOB000001"] {
        assert_eq!(click(&t, user, APPROVE, &approved).await.status, 200);
    }
    let old1 = t.pending_request().await;
    let old2 = t.pending_request().await;
    t.clock.advance_seconds(600);
    let young = t.pending_request().await;
    // Past the first two requests' expiry, before the others'.
    t.clock.set(t.request(&old1.id).await.expires_at.plus_seconds(1));
    let (a, b) = (t.app.sweeper(), t.app.sweeper());
    let (ra, rb) = tokio::join!(a.run_once(), b.run_once());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.expired + rb.expired, 2, "{ra:?} {rb:?}");
    assert_eq!(t.audit_of("request.expired").await.len(), 2);
    for p in [&old1, &old2] {
        assert_eq!(t.request(&p.id).await.status, Status::Expired);
        assert!(!has_buttons(&message(&t, p).blocks));
    }
    assert_eq!(t.request(&young.id).await.status, Status::Pending);
    assert!(has_buttons(&message(&t, &young).blocks));
    assert_eq!(t.request(&approved.id).await.status, Status::Approved, "decided requests never expire");
    countersign_core::domain::audit::verify_chain(&t.audit().await).expect("the audit chain is intact");
}

both_stores!(
    concurrent_sweepers_expire_each_overdue_request_once,
    embedded_concurrent_sweepers_expire_each_overdue_request_once,
    dynamodb_concurrent_sweepers_expire_each_overdue_request_once
);

// ---- the relay -----------------------------------------------------------------------------------------

/// Slack answers 500, then 429 with Retry-After, then works: one message, posted when allowed, the
/// request pending throughout.
async fn relay_posts_once_honouring_retry_after(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    t.slack.set_behaviour([Behaviour::Status500]);
    let body = json!({"action": "deploy", "environment": "production", "reason": "release 43"});
    let a = t.create(DEPLOY_ARN, &body).await;
    assert_eq!(a.status, 201, "{}", a.json);
    assert_eq!(a.json["status"], "pending");
    let id = a.json["id"].as_str().unwrap().to_string();
    let r = t.request(&id).await;
    assert!(r.notification.ts.is_none());
    let first_retry = r.notification.next_attempt_at.expect("a retry is scheduled");

    // Not due yet: nothing is tried.
    t.clock.set(first_retry.plus_millis(-1));
    t.app.sweeper().run_once().await.unwrap();
    assert_eq!(t.post_attempts(), 1);
    // Due: Slack now says 429, Retry-After 120.
    t.clock.set(first_retry);
    t.slack.set_behaviour([Behaviour::RateLimited(120)]);
    t.app.sweeper().run_once().await.unwrap();
    assert_eq!(t.post_attempts(), 2);
    let r = t.request(&id).await;
    assert_eq!(r.notification.next_attempt_at, Some(first_retry.plus_seconds(120)), "Retry-After is honoured");
    t.clock.set(first_retry.plus_seconds(119));
    t.app.sweeper().run_once().await.unwrap();
    assert_eq!(t.post_attempts(), 2, "retried before Retry-After");
    assert_eq!(t.request(&id).await.status, Status::Pending);
    // After it: posted, once.
    t.clock.set(first_retry.plus_seconds(120));
    let rep = t.app.sweeper().run_once().await.unwrap();
    assert_eq!(rep.relayed, 1, "{rep:?}");
    t.app.sweeper().run_once().await.unwrap();
    assert_eq!(t.slack.messages().len(), 1, "exactly one message");
    let r = t.request(&id).await;
    assert_eq!(r.status, Status::Pending);
    assert_eq!(r.notification.ts.as_deref(), Some(t.slack.messages()[0].ts.as_str()));
    assert_eq!(t.audit_of("slack.post_failed").await.len(), 2);
    assert_eq!(t.audit_of("slack.posted").await.len(), 1);
    // And its buttons work.
    let p = Posted { id: id.clone(), channel: r.notification.channel.to_string(), ts: r.notification.ts.unwrap() };
    assert_eq!(click(&t, "UALICE0001", APPROVE, &p).await.status, 200);
    assert_eq!(t.request(&id).await.approvals.len(), 1);
}

both_stores!(
    relay_posts_once_honouring_retry_after,
    embedded_relay_posts_once_honouring_retry_after,
    dynamodb_relay_posts_once_honouring_retry_after
);

/// A message update that failed (rate limited after a vote, 500 after the expiry) is retried by the
/// sweeper once due, not before.
async fn failed_updates_are_retried_when_due(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    // users.info (the voter check) answers; the message update is rate-limited.
    t.slack.set_behaviour([Behaviour::Ok, Behaviour::RateLimited(60)]);
    assert_eq!(click(&t, "UALICE0001", APPROVE, &p).await.status, 200);
    let r = t.request(&p.id).await;
    assert_eq!(r.approvals.len(), 1, "the vote counts although the update failed");
    assert!(r.notification.update_pending);
    let due = r.notification.next_attempt_at.expect("the update is scheduled");
    assert_eq!(due, t.clock.now_ts().plus_seconds(60));
    t.clock.set(due.plus_millis(-1));
    t.app.sweeper().run_once().await.unwrap();
    assert!(message(&t, &p).updates.is_empty(), "retried before Retry-After");
    t.clock.set(due);
    t.app.sweeper().run_once().await.unwrap();
    let m = message(&t, &p);
    assert_eq!(m.updates.len(), 1);
    assert!(m.blocks.to_string().contains("1 of 2 approvals"), "{}", m.blocks);
    assert!(!t.request(&p.id).await.notification.update_pending);

    // The expiry's update fails with a 500: the next run after the backoff lands it.
    let expires_at = t.request(&p.id).await.expires_at;
    t.clock.set(expires_at);
    t.slack.set_behaviour([Behaviour::Status500]);
    let rep = t.app.sweeper().run_once().await.unwrap();
    assert_eq!(rep.expired, 1);
    let r = t.request(&p.id).await;
    assert_eq!(r.status, Status::Expired);
    assert!(r.notification.update_pending);
    assert!(has_buttons(&message(&t, &p).blocks), "the failed update did not apply");
    t.clock.set(r.notification.next_attempt_at.expect("the update is scheduled"));
    t.app.sweeper().run_once().await.unwrap();
    let m = message(&t, &p);
    assert!(!has_buttons(&m.blocks), "{}", m.blocks);
    assert!(m.blocks.to_string().contains("Expired"), "{}", m.blocks);
    assert!(!t.request(&p.id).await.notification.update_pending);
}

both_stores!(
    failed_updates_are_retried_when_due,
    embedded_failed_updates_are_retried_when_due,
    dynamodb_failed_updates_are_retried_when_due
);

// ---- reminders -----------------------------------------------------------------------------------------

async fn reminders_at_one_and_two_thirds_of_the_ttl_each_once_in_the_thread(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    let done = t.pending_request().await;
    for user in ["UALICE0001", "UBOB000001"] {
        assert_eq!(click(&t, user, APPROVE, &done).await.status, 200);
    }
    let r = t.request(&p.id).await;
    let life_ms = r.expires_at.unix_millis() - r.created_at.unix_millis();
    let at = |num: i64| r.created_at.plus_millis(life_ms * num / 3);

    t.clock.set(at(1).plus_millis(-1));
    assert_eq!(t.app.sweeper().run_once().await.unwrap().reminded, 0);
    assert!(reminders(&t, &p).is_empty(), "no reminder before 1/3 of the TTL");

    t.clock.set(at(1));
    assert_eq!(t.app.sweeper().run_once().await.unwrap().reminded, 1);
    let sent = reminders(&t, &p);
    assert_eq!(sent.len(), 1, "the first reminder, in the thread");
    assert_eq!(sent[0]["channel"], p.channel.as_str());
    assert!(sent[0]["text"].as_str().unwrap().contains("2 more approval"), "{}", sent[0]);
    t.clock.advance_seconds(60);
    assert_eq!(t.app.sweeper().run_once().await.unwrap().reminded, 0);
    assert_eq!(reminders(&t, &p).len(), 1, "sent once");

    assert_eq!(click(&t, "UALICE0001", APPROVE, &p).await.status, 200);
    // Two sweepers at 2/3: one second reminder between them.
    t.clock.set(at(2));
    let (a, b) = (t.app.sweeper(), t.app.sweeper());
    let (ra, rb) = tokio::join!(a.run_once(), b.run_once());
    assert_eq!(ra.unwrap().reminded + rb.unwrap().reminded, 1);
    let sent = reminders(&t, &p);
    assert_eq!(sent.len(), 2);
    assert!(sent[1]["text"].as_str().unwrap().contains("1 more approval"), "{}", sent[1]);
    t.clock.advance_seconds(60);
    t.app.sweeper().run_once().await.unwrap();
    assert_eq!(reminders(&t, &p).len(), 2, "sent once");
    assert_eq!(t.audit_of("slack.reminded").await.len(), 2);
    assert!(t
        .audit_of("slack.reminded")
        .await
        .iter()
        .all(|e| e.request_id.map(|i| i.to_string()) == Some(p.id.clone())));

    // Decided requests get none; nor does this one once expired.
    assert!(reminders(&t, &done).is_empty());
    t.clock.set(r.expires_at.plus_seconds(3600));
    t.app.sweeper().run_once().await.unwrap();
    t.app.sweeper().run_once().await.unwrap();
    assert_eq!(reminders(&t, &p).len(), 2);
    assert_eq!(t.request(&p.id).await.status, Status::Expired);
}

both_stores!(
    reminders_at_one_and_two_thirds_of_the_ttl_each_once_in_the_thread,
    embedded_reminders_at_one_and_two_thirds_of_the_ttl_each_once_in_the_thread,
    dynamodb_reminders_at_one_and_two_thirds_of_the_ttl_each_once_in_the_thread
);
