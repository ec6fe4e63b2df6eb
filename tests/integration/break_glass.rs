//! Threat row 41, break-glass: an emergency request a policy lets through at once is announced in two
//! channels, limited per principal and UTC day (exactly, under concurrency), reviewed afterwards by an
//! approver who is not an owner, exactly once, and escalated by the sweeper when nobody reviews it.
//! Black-box through the request API, signed Slack callbacks and the sweeper, on both stores.

use serde_json::{json, Value};

use crate::jws::verify_independently;
use tower::ServiceExt;

use countersign_testkit::app::{answer, api_event, into_axum, on_both_stores, Answer, StoreKind, TestApp, DEPLOY_ARN};

const POLICIES: &str = r#"
version: 1
policies:
  - name: deploy-production
    principals: [arn:aws:iam::111122223333:role/github-deploy]
    actions: [deploy]
    environments: [production]
    approvers:
      users: [UALICE0001, UBOB000001]
    required_approvals: 2
    owners: [U0OWNER001]
    channel: C0APPROVALS
    max_ttl: 1h
    break_glass:
      channel: C0BREAKGLASS
      notify: {users: [USECLEAD01], groups: [S0SECOPS01]}
      max_per_day: 3
      review_within: 24h
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

const REASON: &str = "INC-4711: payments are down, rolling back now";

fn body(env: &str, reason: &str) -> Value {
    json!({"action": "deploy", "environment": env, "reason": reason, "break_glass": true})
}

async fn app(kind: StoreKind) -> Option<TestApp> {
    let t = countersign_testkit::app::spawn_app(kind).await?;
    t.apply_policies(POLICIES).await;
    Some(t)
}

/// Creates a break-glass and returns its id.
async fn break_glass(t: &TestApp) -> String {
    let a = t.create(DEPLOY_ARN, &body("production", REASON)).await;
    assert_eq!(a.status, 201, "{}", a.json);
    a.json["id"].as_str().unwrap().to_string()
}

fn review_click(t: &TestApp, user: &str, action: &str, id: &str, channel: &str, ts: &str) -> Value {
    let mut c = t.click(user, action, id, channel, ts);
    c["actions"][0]["block_id"] = json!("countersign_review");
    // A response_url of its own, as Slack gives each click.
    c["response_url"] = json!(t.slack.response_url(&format!("{user}-{action}-{channel}")));
    c
}

fn top_level_posts(t: &TestApp, channel: &str) -> Vec<Value> {
    t.slack
        .calls_to("chat.postMessage")
        .into_iter()
        .filter(|c| c.body["channel"] == channel && c.body.get("thread_ts").is_none())
        .map(|c| c.body)
        .collect()
}

fn replies(t: &TestApp) -> Vec<String> {
    t.slack.calls_to("response_url").iter().map(|c| c.body["text"].as_str().unwrap_or_default().to_string()).collect()
}

async fn t41_break_glass_is_approved_at_once_announced_in_both_channels_and_audited(kind: StoreKind) {
    let Some(t) = app(kind).await else { return };
    let a = t.create(DEPLOY_ARN, &body("production", REASON)).await;
    assert_eq!(a.status, 201, "{}", a.json);
    assert_eq!(a.json["status"], "approved", "{}", a.json);
    assert_eq!(a.json["break_glass"], true);
    assert_eq!(a.json["review"], json!({"status": "pending", "by": null, "at": null, "reason": null}));
    assert!(a.json["approvals"].as_array().unwrap().is_empty());
    let id = a.json["id"].as_str().unwrap().to_string();

    // Posted to the policy's channel and to the break-glass channel, each with the banner, the
    // mentions of `notify` and the Review action.
    for channel in ["C0APPROVALS", "C0BREAKGLASS"] {
        let posts = top_level_posts(&t, channel);
        assert_eq!(posts.len(), 1, "{channel}: {posts:?}");
        let text = posts[0].to_string();
        assert!(text.contains("BREAK-GLASS"), "{channel}: {text}");
        assert!(text.contains("<@USECLEAD01>") && text.contains("<!subteam^S0SECOPS01>"), "{channel}: {text}");
        assert!(text.contains("countersign_review_ok") && text.contains("countersign_review_flag"), "{text}");
        assert!(!text.contains("countersign_approve"), "no vote buttons on a break-glass: {text}");
    }
    let r = t.request(&id).await;
    let b = r.break_glass.as_ref().expect("marked break-glass");
    assert!(b.alert_ts.is_some(), "the announcement is recorded");

    let created = t.audit_of("request.created").await;
    assert_eq!(created[0].details.get("break_glass").map(String::as_str), Some("true"));
    let bg = t.audit_of("request.break_glass").await;
    assert_eq!(bg.len(), 1, "{bg:?}");
    assert_eq!(bg[0].details.get("reason").map(String::as_str), Some(REASON));
    assert_eq!(bg[0].actor.0, format!("aws:{DEPLOY_ARN}"));
    assert!(t.audit_of("request.auto_approved").await.is_empty(), "a break-glass is not an auto-approval");

    // Its receipt says so.
    let a = t.call_api(api_event("POST", &format!("/v1/requests/{id}/redeem"), Some("{}"), Some(DEPLOY_ARN))).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let keys = t.call_api(api_event("GET", "/v1/keys", None, Some(DEPLOY_ARN))).await.json;
    let (_, claims) = verify_independently(a.json["receipt"].as_str().unwrap(), &keys).expect("the receipt verifies");
    assert_eq!(claims["break_glass"], true, "{claims}");
}

async fn t41_break_glass_needs_a_long_reason_and_a_policy_that_allows_it(kind: StoreKind) {
    let Some(t) = app(kind).await else { return };
    let cases: [(Value, u16, &str); 4] = [
        (body("production", "rollback now"), 400, "reason_required"),
        (json!({"action": "deploy", "environment": "production", "break_glass": true}), 400, "reason_required"),
        (body("staging", REASON), 403, "break_glass_not_allowed"),
        (json!({"action": "deploy", "environment": "production", "break_glass": "yes"}), 400, "invalid_request"),
    ];
    for (b, status, code) in &cases {
        let a: Answer = t.create(DEPLOY_ARN, b).await;
        assert_eq!((a.status.as_u16(), a.json["error"]["code"].as_str()), (*status, Some(*code)), "{b}: {}", a.json);
    }
    let a = t.create(DEPLOY_ARN, &body("staging", REASON)).await;
    assert!(a.json["error"]["message"].as_str().unwrap().contains("deploy-staging"), "{}", a.json);
    assert!(t.audit_of("request.created").await.is_empty(), "nothing was created");
    assert!(t.slack.calls_to("chat.postMessage").is_empty(), "nothing was posted");
    let codes: Vec<String> =
        t.audit_of("request.refused").await.iter().filter_map(|e| e.details.get("code").cloned()).collect();
    assert!(codes.contains(&"reason_required".to_string()) && codes.contains(&"break_glass_not_allowed".to_string()));
}

async fn t41_ten_concurrent_break_glass_requests_allow_exactly_max_per_day(kind: StoreKind) {
    let Some(t) = app(kind).await else { return };
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(10));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (router, barrier) = (t.app.request_api(), barrier.clone());
        let req = into_axum(api_event(
            "POST",
            "/v1/requests",
            Some(&body("production", REASON).to_string()),
            Some(DEPLOY_ARN),
        ));
        tasks.spawn(async move {
            barrier.wait().await;
            answer(router.oneshot(req).await.unwrap()).await
        });
    }
    let mut answers = Vec::new();
    while let Some(a) = tasks.join_next().await {
        answers.push(a.unwrap());
    }
    let created = answers.iter().filter(|a| a.status == 201).count();
    let limited: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(created, 3, "{:?}", answers.iter().map(|a| (a.status, a.json["error"].to_string())).collect::<Vec<_>>());
    assert_eq!(limited.len(), 7);
    for a in &limited {
        assert_eq!(a.json["error"]["code"], "break_glass_limit", "{}", a.json);
    }
    assert_eq!(t.audit_of("request.break_glass").await.len(), 3);
    let refused: Vec<_> = t
        .audit_of("request.refused")
        .await
        .into_iter()
        .filter(|e| e.details.get("code").map(String::as_str) == Some("break_glass_limit"))
        .collect();
    assert_eq!(refused.len(), 7, "every refusal is audited");
    assert_eq!(refused[0].details.get("max_per_day").map(String::as_str), Some("3"));
    // Over the limit nothing is posted: two posts (policy channel, break-glass channel) per success only.
    assert_eq!(t.slack.calls_to("chat.postMessage").len(), 6);
    // The next UTC day counts afresh.
    t.clock.advance_seconds(24 * 3600);
    assert_eq!(t.create(DEPLOY_ARN, &body("production", REASON)).await.status, 201);
}

async fn t41_review_by_an_owner_is_refused_and_an_approvers_review_is_recorded_once(kind: StoreKind) {
    let Some(t) = app(kind).await else { return };
    let id = break_glass(&t).await;
    let r = t.request(&id).await;
    let (channel, ts) = (r.notification.channel.to_string(), r.notification.ts.clone().unwrap());

    let owner = review_click(&t, "U0OWNER001", "countersign_review_ok", &id, &channel, &ts);
    assert_eq!(t.call_slack(t.signed_callback(&owner)).await.status, 200);
    let r = t.request(&id).await;
    assert_eq!(r.break_glass.as_ref().unwrap().review.status.as_str(), "pending", "an owner's review does not count");
    let rejected = t.audit_of("vote.rejected").await;
    assert_eq!(rejected[0].details.get("code").map(String::as_str), Some("not_approver"), "{rejected:?}");
    assert!(replies(&t).iter().any(|m| m.contains("you own the identity")), "{:?}", replies(&t));
    let outsider = review_click(&t, "UOUTSIDER1", "countersign_review_ok", &id, &channel, &ts);
    assert_eq!(t.call_slack(t.signed_callback(&outsider)).await.status, 200);
    assert!(t.audit_of("request.reviewed").await.is_empty());

    // From the break-glass channel's copy: the approver's review counts, once.
    let b = t.request(&id).await.break_glass.unwrap();
    let ok =
        review_click(&t, "UALICE0001", "countersign_review_ok", &id, b.channel.as_str(), b.alert_ts.as_ref().unwrap());
    assert_eq!(t.call_slack(t.signed_callback(&ok)).await.status, 200);
    let again = review_click(&t, "UBOB000001", "countersign_review_ok", &id, &channel, &ts);
    assert_eq!(t.call_slack(t.signed_callback(&again)).await.status, 200);
    let a = t.call_api(api_event("GET", &format!("/v1/requests/{id}"), None, Some(DEPLOY_ARN))).await;
    assert_eq!(a.json["review"]["status"], "ok", "{}", a.json);
    assert_eq!(a.json["review"]["by"], "UALICE0001");
    assert!(a.json["review"]["at"].is_string());
    let reviewed = t.audit_of("request.reviewed").await;
    assert_eq!(reviewed.len(), 1, "{reviewed:?}");
    assert_eq!(reviewed[0].details.get("review").map(String::as_str), Some("ok"));
    assert!(replies(&t).iter().any(|m| m.contains("already reviewed")), "{:?}", replies(&t));
    // A click on a message that is neither of the two is refused.
    let forged = review_click(&t, "UBOB000001", "countersign_review_ok", &id, "C0ELSEWHERE", "1.2");
    t.call_slack(t.signed_callback(&forged)).await;
    let codes: Vec<String> =
        t.audit_of("vote.rejected").await.iter().filter_map(|e| e.details.get("code").cloned()).collect();
    assert!(codes.contains(&"wrong_message".to_string()), "{codes:?}");
}

async fn t41_flag_opens_a_modal_whose_submission_records_the_reason(kind: StoreKind) {
    let Some(t) = app(kind).await else { return };
    let id = break_glass(&t).await;
    let r = t.request(&id).await;
    let (channel, ts) = (r.notification.channel.to_string(), r.notification.ts.clone().unwrap());
    let flag = review_click(&t, "UBOB000001", "countersign_review_flag", &id, &channel, &ts);
    assert_eq!(t.call_slack(t.signed_callback(&flag)).await.status, 200);
    let opened = t.slack.calls_to("views.open");
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].body["view"]["callback_id"], "countersign_review_flag_modal");
    assert_eq!(opened[0].body["view"]["private_metadata"], id.as_str());
    assert!(t.audit_of("request.reviewed").await.is_empty(), "opening the modal records nothing");

    let mut submit = t.deny_submission("UBOB000001", &id, "No incident was open at that time");
    submit["view"]["callback_id"] = json!("countersign_review_flag_modal");
    let a = t.call_slack(t.signed_callback(&submit)).await;
    assert_eq!(a.json["response_action"], "clear", "{}", a.json);
    let r = t.request(&id).await;
    let review = &r.break_glass.as_ref().unwrap().review;
    assert_eq!(review.status.as_str(), "flagged");
    assert_eq!(review.reason.as_deref(), Some("No incident was open at that time"));
    let reviewed = t.audit_of("request.reviewed").await;
    assert_eq!(reviewed[0].details.get("review").map(String::as_str), Some("flagged"));
    // An owner's flag is refused in the modal, and changes nothing.
    let mut owner = t.deny_submission("U0OWNER001", &id, "looks fine to me");
    owner["view"]["callback_id"] = json!("countersign_review_flag_modal");
    let a = t.call_slack(t.signed_callback(&owner)).await;
    assert_eq!(a.json["response_action"], "errors", "{}", a.json);
    // The message was brought up to date: flagged, no buttons.
    let last = t.slack.calls_to("chat.update").last().cloned().expect("updated");
    let text = last.body.to_string();
    assert!(text.contains("Flagged as misuse") && !text.contains("countersign_review_ok"), "{text}");
}

async fn t41_unreviewed_break_glass_is_reminded_at_half_time_and_escalated_by_the_sweeper(kind: StoreKind) {
    let Some(t) = app(kind).await else { return };
    let id = break_glass(&t).await;
    let sweeper = t.app.sweeper();
    let thread_posts = |t: &TestApp| -> Vec<Value> {
        t.slack
            .calls_to("chat.postMessage")
            .into_iter()
            .filter(|c| c.body.get("thread_ts").is_some())
            .map(|c| c.body)
            .collect()
    };
    t.clock.advance_seconds(11 * 3600);
    sweeper.run_once().await.unwrap();
    assert!(thread_posts(&t).is_empty(), "nothing before half of the window");

    t.clock.advance_seconds(3600); // 12h: the reminder, once
    sweeper.run_once().await.unwrap();
    sweeper.run_once().await.unwrap();
    let posts = thread_posts(&t);
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["channel"], "C0APPROVALS");
    assert!(posts[0].to_string().contains("needs a review") && posts[0].to_string().contains("<@UALICE0001>"));

    t.clock.advance_seconds(12 * 3600); // 24h: overdue, audited, then escalated mentioning notify
    sweeper.run_once().await.unwrap();
    sweeper.run_once().await.unwrap();
    sweeper.run_once().await.unwrap();
    let overdue = t.audit_of("request.review_overdue").await;
    assert_eq!(overdue.len(), 1, "{overdue:?}");
    assert_eq!(overdue[0].actor.0, "system:sweeper");
    let r = t.request(&id).await;
    let b = r.break_glass.as_ref().unwrap();
    assert_eq!(b.review.status.as_str(), "overdue");
    assert!(!b.escalation_owed, "the escalation went out");
    let posts = thread_posts(&t);
    assert_eq!(posts.len(), 2, "{posts:?}");
    let escalation = &posts[1];
    assert_eq!(escalation["channel"], "C0BREAKGLASS");
    assert_eq!(escalation["reply_broadcast"], true);
    let text = escalation.to_string();
    assert!(
        text.contains("review overdue") && text.contains("<@USECLEAD01>") && text.contains("<!subteam^S0SECOPS01>")
    );
    let a = t.call_api(api_event("GET", &format!("/v1/requests/{id}"), None, Some(DEPLOY_ARN))).await;
    assert_eq!(a.json["review"]["status"], "overdue");

    // A late review still counts, and nothing more is posted afterwards.
    let ok = review_click(
        &t,
        "UALICE0001",
        "countersign_review_ok",
        &id,
        r.notification.channel.as_str(),
        r.notification.ts.as_deref().unwrap(),
    );
    t.call_slack(t.signed_callback(&ok)).await;
    assert_eq!(t.request(&id).await.break_glass.unwrap().review.status.as_str(), "ok");
    t.clock.advance_seconds(48 * 3600);
    sweeper.run_once().await.unwrap();
    assert_eq!(thread_posts(&t).len(), 2);
}

async fn t41_an_announcement_that_failed_is_posted_by_the_sweeper(kind: StoreKind) {
    use countersign_slack::fake::Behaviour;
    let Some(t) = app(kind).await else { return };
    // The policy channel's post succeeds; the break-glass channel's fails.
    t.slack.set_behaviour([Behaviour::Ok, Behaviour::Status500]);
    let id = break_glass(&t).await;
    assert!(t.request(&id).await.break_glass.unwrap().alert_ts.is_none());
    t.clock.advance_seconds(61);
    t.app.sweeper().run_once().await.unwrap();
    t.app.sweeper().run_once().await.unwrap();
    assert!(t.request(&id).await.break_glass.unwrap().alert_ts.is_some());
    let posted: Vec<Value> = t
        .slack
        .calls_to("chat.postMessage")
        .into_iter()
        .filter(|c| c.body["channel"] == "C0BREAKGLASS")
        .map(|c| c.body)
        .collect();
    assert_eq!(posted.len(), 2, "one failed attempt, then one post: {posted:?}");
}

async fn t41_ten_racing_reviews_are_recorded_exactly_once(kind: StoreKind) {
    let Some(t) = app(kind).await else { return };
    let id = break_glass(&t).await;
    let r = t.request(&id).await;
    let (channel, ts) = (r.notification.channel.to_string(), r.notification.ts.clone().unwrap());
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(10));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let user = if i % 2 == 0 { "UALICE0001" } else { "UBOB000001" };
        let action = if i < 5 { "countersign_review_ok" } else { "countersign_review_flag" };
        let req = if action == "countersign_review_ok" {
            t.signed_callback(&review_click(&t, user, action, &id, &channel, &ts))
        } else {
            let mut submit = t.deny_submission(user, &id, &format!("misuse {i}"));
            submit["view"]["callback_id"] = json!("countersign_review_flag_modal");
            t.signed_callback(&submit)
        };
        let (router, barrier) = (t.app.slack_interactions(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            router.oneshot(req).await.unwrap().status()
        });
    }
    while let Some(s) = tasks.join_next().await {
        assert_eq!(s.unwrap(), 200);
    }
    let reviewed = t.audit_of("request.reviewed").await;
    assert_eq!(reviewed.len(), 1, "exactly one review: {reviewed:?}");
    let review = t.request(&id).await.break_glass.unwrap().review;
    assert_eq!(review.status.as_str(), reviewed[0].details["review"].as_str());
}

on_both_stores!(
    t41_ten_racing_reviews_are_recorded_exactly_once,
    t41_break_glass_is_approved_at_once_announced_in_both_channels_and_audited,
    t41_break_glass_needs_a_long_reason_and_a_policy_that_allows_it,
    t41_ten_concurrent_break_glass_requests_allow_exactly_max_per_day,
    t41_review_by_an_owner_is_refused_and_an_approvers_review_is_recorded_once,
    t41_flag_opens_a_modal_whose_submission_records_the_reason,
    t41_unreviewed_break_glass_is_reminded_at_half_time_and_escalated_by_the_sweeper,
    t41_an_announcement_that_failed_is_posted_by_the_sweeper,
);
