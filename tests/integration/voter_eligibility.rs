//! Threat row 34: only active, full members of our workspaces may vote. The callback's `user.team_id` must
//! be one of the configured workspaces (row 8's check, now a list), and the voter is re-read with Slack's
//! `users.info` at vote time (cached at most 60 s): deactivated, bot, app, guest and foreign accounts are
//! refused with an ephemeral reply and a `vote.rejected` record (`code: voter_ineligible`, `reason`); a
//! directory that does not answer refuses the vote (fail closed) and asks to try again. Both stores.

use axum::http::StatusCode;
use countersign_core::domain::ApprovalRequest;
use countersign_slack::fake::{Behaviour, FakeUser, FAKE_BOT_TOKEN};
use serde_json::Value;

use countersign_testkit::app::{on_both_stores, spawn_app, Answer, Posted, StoreKind, TestApp};

const APPROVE: &str = "countersign_approve";
const DENY: &str = "countersign_deny";

async fn click(t: &TestApp, user: &str, action: &str, p: &Posted) -> Answer {
    t.call_slack(t.signed_callback(&t.click(user, action, &p.id, &p.channel, &p.ts))).await
}

fn votes(r: &ApprovalRequest) -> usize {
    r.approvals.len() + usize::from(r.denial.is_some())
}

/// The text of the last ephemeral reply (through the response URL).
fn last_reply(t: &TestApp) -> String {
    let replies = t.slack.calls_to("response_url");
    replies.last().map(|c| c.body["text"].as_str().unwrap_or_default().to_string()).unwrap_or_default()
}

fn users_info_calls(t: &TestApp) -> usize {
    t.slack.calls_to("users.info").len()
}

/// The last `vote.rejected` record must name `user`, `voter_ineligible` and `reason`.
async fn assert_ineligible_audited(t: &TestApp, p: &Posted, user: &str, reason: &str) {
    let rejected = t.audit_of("vote.rejected").await;
    let last = rejected.last().unwrap_or_else(|| panic!("{user}: no vote.rejected record"));
    assert_eq!(last.actor.0, format!("slack:{user}"));
    assert_eq!(last.request_id.map(|r| r.to_string()).as_deref(), Some(p.id.as_str()));
    assert_eq!(last.details.get("code").map(String::as_str), Some("voter_ineligible"), "{:?}", last.details);
    assert_eq!(last.details.get("reason").map(String::as_str), Some(reason), "{:?}", last.details);
}

/// Clicks Approve, clicks Deny, submits the deny modal as `user`: none may vote.
async fn assert_cannot_vote(t: &TestApp, p: &Posted, user: &str, reason: &str, says: &str) {
    let a = click(t, user, APPROVE, p).await;
    assert_eq!(a.status, 200, "{user}: {}", a.json);
    assert!(last_reply(t).contains(says), "{user}: reply {:?}", last_reply(t));
    assert_ineligible_audited(t, p, user, reason).await;

    let opened = t.slack.calls_to("views.open").len();
    let a = click(t, user, DENY, p).await;
    assert_eq!(a.status, 200, "{user}: {}", a.json);
    assert_eq!(t.slack.calls_to("views.open").len(), opened, "{user}: the deny dialog opened");
    assert!(last_reply(t).contains(says), "{user}: reply {:?}", last_reply(t));

    let a = t.call_slack(t.signed_callback(&t.deny_submission(user, &p.id, "no"))).await;
    assert_eq!(a.status, 200, "{user}: {}", a.json);
    assert_eq!(a.json["response_action"], "errors", "{user}: {}", a.json);
    assert!(a.json.to_string().contains(says), "{user}: {}", a.json);
    assert_ineligible_audited(t, p, user, reason).await;

    let r = t.request(&p.id).await;
    assert_eq!(votes(&r), 0, "{user}: a vote was counted: {r:?}");
    assert_eq!(r.status.as_str(), "pending");
}

async fn t34_slack_connect_user_in_an_approver_group_cannot_vote(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    t.slack.set_usergroup("S0SRE00001", &["UPARTNER01"]);
    let p = t.pending_request().await;

    // The callback says so: refused before any vote logic (row 8), even though the group lists them.
    let mut v = t.click("UPARTNER01", APPROVE, &p.id, &p.channel, &p.ts);
    v["user"]["team_id"] = "T0PARTNER9".into();
    let a = t.call_slack(t.signed_callback(&v)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.json);
    assert_eq!(votes(&t.request(&p.id).await), 0);

    // The callback claims our workspace, Slack's directory says the account lives in another one.
    t.slack.set_user("UPARTNER01", FakeUser { team_id: "T0PARTNER9".into(), ..FakeUser::member() });
    assert_cannot_vote(&t, &p, "UPARTNER01", "foreign_workspace", "not a member of this workspace").await;
}

async fn t34_deactivated_approver_cannot_vote(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    t.slack.set_user("UALICE0001", FakeUser { deleted: true, ..FakeUser::member() });
    assert_cannot_vote(&t, &p, "UALICE0001", "deactivated", "deactivated").await;
    // An active approver still votes.
    assert_eq!(click(&t, "UBOB000001", APPROVE, &p).await.status, 200);
    assert_eq!(votes(&t.request(&p.id).await), 1);
}

async fn t34_guest_approvers_cannot_vote(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    t.slack.set_user("UALICE0001", FakeUser { is_restricted: true, ..FakeUser::member() });
    t.slack.set_user("UBOB000001", FakeUser { is_restricted: true, is_ultra_restricted: true, ..FakeUser::member() });
    assert_cannot_vote(&t, &p, "UALICE0001", "guest", "guest accounts cannot vote").await;
    assert_cannot_vote(&t, &p, "UBOB000001", "single_channel_guest", "guest accounts cannot vote").await;
}

async fn t34_bot_and_app_users_cannot_vote(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    t.slack.set_user("UALICE0001", FakeUser { is_bot: true, ..FakeUser::member() });
    t.slack.set_user("UBOB000001", FakeUser { is_app_user: true, ..FakeUser::member() });
    assert_cannot_vote(&t, &p, "UALICE0001", "bot", "bot accounts cannot vote").await;
    assert_cannot_vote(&t, &p, "UBOB000001", "app_user", "app accounts cannot vote").await;
}

async fn t34_users_info_failure_refuses_the_vote_and_asks_to_try_again(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let p = t.pending_request().await;
    // 500, 429 (users.info is Tier 4: a rate limit is a failure, not a pass), a hang past the client's
    // timeout, an unknown account: each refuses, nothing is counted, and nothing is cached.
    for (what, behaviour) in [
        ("500", Behaviour::Status500),
        ("429", Behaviour::RateLimited(30)),
        ("timeout", Behaviour::Hang),
        ("user_not_found", Behaviour::Ok),
    ] {
        if what == "user_not_found" {
            t.slack.remove_user("UALICE0001");
        }
        let before = users_info_calls(&t);
        t.slack.set_behaviour([behaviour]);
        let a = click(&t, "UALICE0001", APPROVE, &p).await;
        assert_eq!(a.status, 200, "{what}: {}", a.json);
        assert_eq!(users_info_calls(&t), before + 1, "{what}: users.info was not asked");
        assert!(last_reply(&t).contains("please try again"), "{what}: reply {:?}", last_reply(&t));
        t.slack.set_behaviour([behaviour]);
        let a = t.call_slack(t.signed_callback(&t.deny_submission("UALICE0001", &p.id, "no"))).await;
        assert_eq!(a.json["response_action"], "errors", "{what}: {}", a.json);
        assert!(a.json.to_string().contains("please try again"), "{what}: {}", a.json);
        assert_eq!(votes(&t.request(&p.id).await), 0, "{what}: a vote was counted");
    }
    assert!(t.audit_of("vote.recorded").await.is_empty());
    // Slack answers again: the same click counts.
    t.slack.set_user("UALICE0001", FakeUser::member());
    assert_eq!(click(&t, "UALICE0001", APPROVE, &p).await.status, 200);
    assert_eq!(votes(&t.request(&p.id).await), 1);
}

/// The account is cached on the app's clock for at most 60 s: a deactivation takes effect on votes within
/// that window (this is the documented delay), and certainly after it.
async fn t34_account_cache_expires_after_60_seconds(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    let (p1, p2, p3) = (t.pending_request().await, t.pending_request().await, t.pending_request().await);
    assert_eq!(click(&t, "UALICE0001", APPROVE, &p1).await.status, 200);
    assert_eq!(votes(&t.request(&p1.id).await), 1);
    assert_eq!(users_info_calls(&t), 1);
    // How the client asks: a form POST with the bot token, as Slack's read methods take it.
    let call = t.slack.calls_to("users.info").remove(0);
    assert_eq!(call.body["user"], "UALICE0001");
    assert_eq!(call.authorization, Some(format!("Bearer {FAKE_BOT_TOKEN}")));
    assert!(call.content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")));

    t.slack.set_user("UALICE0001", FakeUser { deleted: true, ..FakeUser::member() });
    t.clock.advance_seconds(59);
    assert_eq!(click(&t, "UALICE0001", APPROVE, &p2).await.status, 200);
    assert_eq!(votes(&t.request(&p2.id).await), 1, "within 60 s the cached account is used");
    assert_eq!(users_info_calls(&t), 1);

    t.clock.advance_seconds(1);
    assert_eq!(click(&t, "UALICE0001", APPROVE, &p3).await.status, 200);
    assert_eq!(users_info_calls(&t), 2, "the account was not re-read after 60 s");
    assert_eq!(votes(&t.request(&p3.id).await), 0, "a deactivated account voted after 60 s");
    assert_ineligible_audited(&t, &p3, "UALICE0001", "deactivated").await;
}

on_both_stores!(
    t34_slack_connect_user_in_an_approver_group_cannot_vote,
    t34_deactivated_approver_cannot_vote,
    t34_guest_approvers_cannot_vote,
    t34_bot_and_app_users_cannot_vote,
    t34_users_info_failure_refuses_the_vote_and_asks_to_try_again,
    t34_account_cache_expires_after_60_seconds,
);

/// The fake answers `users.info` as Slack does: bot token required, form or query arguments only.
#[tokio::test]
async fn t34_fake_users_info_speaks_slacks_wire_format() {
    let slack = countersign_slack::fake::FakeSlack::start().await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/users.info", slack.base_url());
    let post = |auth: Option<&str>, ct: &str, body: &str| {
        let mut r = http.post(&url).header("content-type", ct).body(body.to_string());
        if let Some(a) = auth {
            r = r.bearer_auth(a);
        }
        async move { r.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let form = "application/x-www-form-urlencoded";
    assert_eq!(post(None, form, "user=UALICE0001").await["error"], "not_authed");
    assert_eq!(post(Some("xoxb-wrong"), form, "user=UALICE0001").await["error"], "invalid_auth");
    let ok = post(Some(FAKE_BOT_TOKEN), form, "user=UALICE0001").await;
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(ok["user"]["id"], "UALICE0001");
    assert_eq!(ok["user"]["team_id"], countersign_slack::fake::FAKE_TEAM_ID);
    for flag in ["deleted", "is_bot", "is_app_user", "is_restricted", "is_ultra_restricted"] {
        assert_eq!(ok["user"][flag], false, "{flag}");
    }
    let json = post(Some(FAKE_BOT_TOKEN), "application/json", r#"{"user":"UALICE0001"}"#).await;
    assert_eq!(json["error"], "user_not_found", "JSON arguments are not read: {json}");
    slack.set_user("UGONE00001", FakeUser { deleted: true, ..FakeUser::member() });
    let got = http
        .get(format!("{url}?user=UGONE00001"))
        .bearer_auth(FAKE_BOT_TOKEN)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(got["user"]["deleted"], true, "{got}");
    slack.remove_user("UGONE00001");
    assert_eq!(post(Some(FAKE_BOT_TOKEN), form, "user=UGONE00001").await["error"], "user_not_found");
    assert_eq!(post(Some(FAKE_BOT_TOKEN), form, "user=not-a-user").await["error"], "user_not_found");
}
