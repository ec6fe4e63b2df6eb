#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use serde_json::json;

use super::*;
use crate::fake::{Behaviour, FakeSlack, FAKE_BOT_TOKEN};

const TIMEOUT: Duration = Duration::from_millis(300);

fn channel() -> SlackChannelId {
    SlackChannelId::parse("C0APPROVALS").unwrap()
}

fn client_for(fake: &FakeSlack, token: &str) -> SlackClient {
    SlackClient::new(Arc::new(StaticToken(BotToken::new(token))))
        .unwrap()
        .with_base_url(&fake.base_url())
        .unwrap()
        .with_timeout(TIMEOUT)
}

async fn setup() -> (FakeSlack, SlackClient) {
    let fake = FakeSlack::start().await.unwrap();
    let client = client_for(&fake, FAKE_BOT_TOKEN);
    (fake, client)
}

fn message(text: &str) -> Value {
    json!({
        "text": text,
        "blocks": [{ "type": "section", "text": { "type": "mrkdwn", "text": text } }],
    })
}

#[tokio::test]
async fn t23_500_then_429_then_hang_then_ok_are_classified_and_one_message_is_posted() {
    let (fake, client) = setup().await;
    fake.set_behaviour([Behaviour::Status500, Behaviour::RateLimited(7), Behaviour::Hang]);
    let msg = message("Approval requested");

    let e = client.post_message(&channel(), &msg).await.unwrap_err();
    assert!(matches!(e, SlackError::Http(500)), "{e:?}");
    assert!(e.retryable());
    assert_eq!(e.retry_after(), None);

    let e = client.post_message(&channel(), &msg).await.unwrap_err();
    assert!(matches!(e, SlackError::RateLimited { .. }), "{e:?}");
    assert!(e.retryable());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));

    let started = Instant::now();
    let e = client.post_message(&channel(), &msg).await.unwrap_err();
    assert!(matches!(e, SlackError::Timeout), "{e:?}");
    assert!(e.retryable());
    assert!(started.elapsed() < TIMEOUT + Duration::from_millis(700), "{:?}", started.elapsed());

    assert!(fake.messages().is_empty(), "no failed attempt may leave a message");
    let posted = client.post_message(&channel(), &msg).await.unwrap();
    assert_eq!(posted.channel, channel());
    assert!(!posted.ts.is_empty());

    let messages = fake.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].ts, posted.ts);
    assert_eq!(messages[0].blocks, msg["blocks"]);
    assert_eq!(fake.calls().len(), 4);
}

#[tokio::test]
async fn t24_timeout_bounds_a_hanging_call() {
    let (fake, client) = setup().await;
    let client = client.with_timeout(Duration::from_millis(150));
    for call in 0..3 {
        fake.set_behaviour([Behaviour::Hang]);
        let started = Instant::now();
        let e = match call {
            0 => client.update_message(&channel(), "1.2", &message("x")).await.unwrap_err(),
            1 => client.open_view("1.2.3", &json!({})).await.unwrap_err(),
            _ => client.respond(&fake.response_url("r1"), &json!({"text": "x"})).await.unwrap_err(),
        };
        let took = started.elapsed();
        assert!(matches!(e, SlackError::Timeout), "{e:?}");
        assert!(took >= Duration::from_millis(140) && took < Duration::from_secs(1), "{took:?}");
    }
}

#[tokio::test]
async fn bearer_token_is_sent_and_a_wrong_one_is_refused() {
    let (fake, client) = setup().await;
    client.post_message(&channel(), &message("hi")).await.unwrap();
    let call = &fake.calls()[0];
    assert_eq!(call.method, "chat.postMessage");
    assert_eq!(call.authorization.as_deref(), Some(format!("Bearer {FAKE_BOT_TOKEN}").as_str()));
    assert!(call.content_type.as_deref().unwrap().starts_with("application/json"));

    let wrong = client_for(&fake, "xoxb-wrong");
    let e = wrong.post_message(&channel(), &message("hi")).await.unwrap_err();
    assert!(matches!(&e, SlackError::Api(code) if code == "invalid_auth"), "{e:?}");
    assert!(!e.retryable());
    assert_eq!(fake.messages().len(), 1);
}

#[tokio::test]
async fn post_message_sets_channel_and_no_link_names_or_unfurls() {
    let (fake, client) = setup().await;
    client.post_message(&channel(), &message("hi")).await.unwrap();
    let body = &fake.calls()[0].body;
    assert_eq!(body["channel"], "C0APPROVALS");
    assert_eq!(body["unfurl_links"], false);
    assert_eq!(body["unfurl_media"], false);
    assert!(body.get("link_names").is_none());
    let e = client.post_message(&channel(), &json!(["not", "an", "object"])).await.unwrap_err();
    assert!(matches!(e, SlackError::InvalidRequest(_)));
}

#[tokio::test]
async fn t20_fake_rejects_messages_over_block_kit_limits() {
    let (fake, client) = setup().await;
    let divider = json!({ "type": "divider" });
    let fifty = json!({ "text": "x", "blocks": vec![divider.clone(); 50] });
    let fifty_one = json!({ "text": "x", "blocks": vec![divider; 51] });
    client.post_message(&channel(), &fifty).await.unwrap();
    let e = client.post_message(&channel(), &fifty_one).await.unwrap_err();
    assert!(matches!(&e, SlackError::Api(c) if c == "invalid_blocks"), "{e:?}");
    assert!(!e.retryable());

    client.post_message(&channel(), &message(&"é".repeat(3000))).await.unwrap();
    let e = client.post_message(&channel(), &message(&"é".repeat(3001))).await.unwrap_err();
    assert!(matches!(&e, SlackError::Api(c) if c == "invalid_blocks"), "{e:?}");
    assert_eq!(fake.messages().len(), 2);
}

#[tokio::test]
async fn update_message_edits_the_posted_message_and_keeps_history() {
    let (fake, client) = setup().await;
    let posted = client.post_message(&channel(), &message("v1")).await.unwrap();
    client.update_message(&posted.channel, &posted.ts, &message("v2")).await.unwrap();
    client.update_message(&posted.channel, &posted.ts, &message("v3")).await.unwrap();
    let m = &fake.messages()[0];
    assert_eq!(m.text.as_deref(), Some("v3"));
    assert_eq!(m.updates.len(), 2);
    assert_eq!(m.updates[0]["text"], "v2");
    let e = client.update_message(&channel(), "1.000001", &message("x")).await;
    assert!(matches!(e, Err(SlackError::Api(ref c)) if c == "message_not_found"), "{e:?}");
}

#[tokio::test]
async fn open_view_sends_the_modal_with_the_trigger() {
    let (fake, client) = setup().await;
    let view = json!({
        "type": "modal",
        "callback_id": "countersign_deny_modal",
        "title": { "type": "plain_text", "text": "Deny request" },
        "blocks": [],
    });
    client.open_view("123.456.abc", &view).await.unwrap();
    let call = &fake.calls_to("views.open")[0];
    assert_eq!(call.body["trigger_id"], "123.456.abc");
    assert_eq!(call.body["view"], view);
    let long_title =
        json!({ "type": "modal", "title": { "type": "plain_text", "text": "x".repeat(25) }, "blocks": [] });
    assert!(matches!(client.open_view("1.2", &long_title).await, Err(SlackError::Api(_))));
    assert!(matches!(client.open_view("", &view).await, Err(SlackError::InvalidRequest(_))));
}

#[tokio::test]
async fn usergroup_members_are_listed_and_invalid_ids_dropped() {
    let (fake, client) = setup().await;
    fake.set_usergroup("S0SRE0001", &["UALICE01", "UBOB0001", "not-a-user"]);
    let group = SlackGroupId::parse("S0SRE0001").unwrap();
    let members = client.usergroup_members(&group).await.unwrap();
    assert_eq!(members, vec![SlackUserId::parse("UALICE01").unwrap(), SlackUserId::parse("UBOB0001").unwrap()]);
    let call = &fake.calls_to("usergroups.users.list")[0];
    assert_eq!(call.body["usergroup"], "S0SRE0001");
    assert!(call.content_type.as_deref().unwrap().starts_with("application/x-www-form-urlencoded"));
    let other = SlackGroupId::parse("S0NOPE001").unwrap();
    let e = client.usergroup_members(&other).await.unwrap_err();
    assert!(matches!(&e, SlackError::Api(c) if c == "no_such_subteam"));
}

#[tokio::test]
async fn post_ephemeral_targets_one_user() {
    let (fake, client) = setup().await;
    let user = SlackUserId::parse("UMALLORY1").unwrap();
    let msg = crate::blocks::ephemeral_text("You are not an approver for this request.");
    client.post_ephemeral(&channel(), &user, &msg).await.unwrap();
    let call = &fake.calls_to("chat.postEphemeral")[0];
    assert_eq!(call.body["user"], "UMALLORY1");
    assert_eq!(call.body["channel"], "C0APPROVALS");
    assert!(call.body.get("response_type").is_none());
    assert!(fake.messages().is_empty(), "ephemeral messages are not channel messages");
}

#[tokio::test]
async fn respond_only_calls_slack_hooks_or_the_api_origin() {
    let (fake, client) = setup().await;
    let api_port = fake.base_url().rsplit(':').next().unwrap().split('/').next().unwrap().to_string();
    let allowed = [
        "https://hooks.slack.com/actions/T0/1/abc".to_string(),
        "https://hooks.slack.com:443/commands/T0/1/abc".to_string(),
        fake.response_url("abc"),
    ];
    for u in &allowed {
        assert!(client.response_url_allowed(u).is_some(), "{u}");
    }
    let refused = [
        "http://hooks.slack.com/actions/T0/1/abc".to_string(),
        "https://hooks.slack.com.evil.example/actions".to_string(),
        "https://evil.example/hooks.slack.com/actions".to_string(),
        "https://user:pw@hooks.slack.com/actions".to_string(),
        "https://hooks.slack.com:8443/actions".to_string(),
        "https://slack.com/api/chat.postMessage".to_string(),
        "http://127.0.0.1:1/response/x".to_string(),
        format!("http://localhost:{api_port}/response/x"),
        "file:///etc/passwd".to_string(),
        "not a url".to_string(),
        String::new(),
    ];
    for u in &refused {
        assert!(client.response_url_allowed(u).is_none(), "{u}");
        let e = client.respond(u, &json!({"text": "x"})).await.unwrap_err();
        assert!(matches!(e, SlackError::ForbiddenUrl), "{u}: {e:?}");
        assert!(!e.retryable());
    }
    assert!(fake.calls().is_empty(), "a refused URL is never called");
}

#[tokio::test]
async fn t26_respond_posts_json_without_the_bot_token() {
    let (fake, client) = setup().await;
    let body = json!({ "response_type": "ephemeral", "replace_original": false, "text": "Recorded." });
    client.respond(&fake.response_url("T0-1-abc"), &body).await.unwrap();
    let call = &fake.calls_to("response_url")[0];
    assert_eq!(call.body, body);
    assert_eq!(call.authorization, None, "the bot token must never go to a response_url");
}

#[tokio::test]
async fn t26_token_and_response_url_never_appear_in_errors_or_debug() {
    let (fake, client) = setup().await;
    let mut shown = vec![format!("{client:?}"), format!("{:?}", BotToken::new(FAKE_BOT_TOKEN))];
    fake.set_behaviour([Behaviour::Status500, Behaviour::RateLimited(1), Behaviour::Hang]);
    for _ in 0..3 {
        let e = client.post_message(&channel(), &message("x")).await.unwrap_err();
        shown.push(format!("{e} {e:?}"));
    }
    let wrong = client_for(&fake, "xoxb-wrong-token-value");
    let e = wrong.post_message(&channel(), &message("x")).await.unwrap_err();
    shown.push(format!("{e} {e:?}"));

    // A network error on a response_url must not carry that URL (it is a credential for 30 minutes).
    let secret_path = fake.response_url("SECRETPATH123");
    drop(fake);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = client.respond(&secret_path, &json!({"text": "x"})).await.unwrap_err();
    assert!(matches!(e, SlackError::Network(_) | SlackError::Timeout), "{e:?}");
    let mut chain = format!("{e} {e:?}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        chain.push_str(&format!(" {s} {s:?}"));
        src = s.source();
    }
    shown.push(chain);

    for s in shown {
        assert!(!s.contains(FAKE_BOT_TOKEN), "{s}");
        assert!(!s.contains("xoxb"), "{s}");
        assert!(!s.contains("SECRETPATH123"), "{s}");
    }
}

#[tokio::test]
async fn token_provider_failure_is_retryable_and_makes_no_call() {
    struct Broken;
    #[async_trait]
    impl TokenProvider for Broken {
        async fn bot_token(&self) -> Result<BotToken, SlackError> {
            Err(SlackError::TokenUnavailable("secrets manager unreachable".into()))
        }
    }
    let fake = FakeSlack::start().await.unwrap();
    let client = SlackClient::new(Arc::new(Broken)).unwrap().with_base_url(&fake.base_url()).unwrap();
    let e = client.post_message(&channel(), &message("x")).await.unwrap_err();
    assert!(matches!(e, SlackError::TokenUnavailable(_)));
    assert!(e.retryable());
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn redirects_are_not_followed() {
    use axum::http::{header, StatusCode};
    let app = axum::Router::new().route(
        "/api/chat.postMessage",
        axum::routing::post(|| async { (StatusCode::FOUND, [(header::LOCATION, "http://127.0.0.1:9/steal")]) }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = SlackClient::new(Arc::new(StaticToken(BotToken::new(FAKE_BOT_TOKEN))))
        .unwrap()
        .with_base_url(&format!("http://{addr}/api"))
        .unwrap();
    let e = client.post_message(&channel(), &message("x")).await.unwrap_err();
    assert!(matches!(e, SlackError::Http(302)), "{e:?}");
    server.abort();
}

#[test]
fn retry_after_defaults_and_caps() {
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
    let mut h = HeaderMap::new();
    assert_eq!(retry_after(&h), Duration::from_secs(1));
    h.insert(RETRY_AFTER, HeaderValue::from_static("30"));
    assert_eq!(retry_after(&h), Duration::from_secs(30));
    h.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2026 07:28:00 GMT"));
    assert_eq!(retry_after(&h), Duration::from_secs(1));
    h.insert(RETRY_AFTER, HeaderValue::from_static("99999999"));
    assert_eq!(retry_after(&h), Duration::from_secs(900));
}

#[test]
fn retryable_classification() {
    let cases: [(SlackError, bool); 9] = [
        (SlackError::Http(500), true),
        (SlackError::Http(503), true),
        (SlackError::Http(400), false),
        (SlackError::Http(404), false),
        (SlackError::Api("internal_error".into()), true),
        (SlackError::Api("channel_not_found".into()), false),
        (SlackError::Api("invalid_blocks".into()), false),
        (SlackError::ForbiddenUrl, false),
        (SlackError::Timeout, true),
    ];
    for (e, want) in cases {
        assert_eq!(e.retryable(), want, "{e:?}");
    }
}

#[test]
fn api_error_codes_are_sanitized() {
    assert_eq!(sanitize_code("channel_not_found"), "channel_not_found");
    assert_eq!(sanitize_code("xoxb-123 leaked"), "unrecognized_error");
    assert_eq!(sanitize_code(&"a".repeat(65)), "unrecognized_error");
    assert_eq!(sanitize_code(""), "unrecognized_error");
}

#[test]
fn base_url_must_be_plain_http_or_https() {
    let t: Arc<dyn TokenProvider> = Arc::new(StaticToken(BotToken::new("x")));
    let c = SlackClient::new(t.clone()).unwrap();
    assert_eq!(c.base_url(), "https://slack.com/api/");
    assert_eq!(c.timeout(), DEFAULT_TIMEOUT);
    for bad in ["ftp://slack.com/api", "https://u:p@slack.com/api", "https://slack.com/api?x=1", "nope"] {
        assert!(SlackClient::new(t.clone()).unwrap().with_base_url(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn conversation_history_pages_older_with_the_cursor_and_a_missing_scope_is_final() {
    let (fake, client) = setup().await;
    let mut posted = Vec::new();
    for i in 0..5 {
        let mut m = message(&format!("m{i}"));
        m["metadata"] =
            json!({"event_type": "countersign_request", "event_payload": {"request_id": format!("req_{i}")}});
        posted.push(client.post_message(&channel(), &m).await.unwrap().ts);
    }
    // Newest first, after `oldest` (exclusive), two at a time, metadata included.
    let page = client.conversation_history(&channel(), &posted[0], 2, None).await.unwrap();
    let ts: Vec<&str> = page.messages.iter().map(|m| m["ts"].as_str().unwrap()).collect();
    assert_eq!(ts, [posted[4].as_str(), posted[3].as_str()]);
    assert_eq!(page.messages[0]["metadata"]["event_payload"]["request_id"], "req_4");
    let page = client.conversation_history(&channel(), &posted[0], 2, page.next_cursor.as_deref()).await.unwrap();
    let ts: Vec<&str> = page.messages.iter().map(|m| m["ts"].as_str().unwrap()).collect();
    assert_eq!(ts, [posted[2].as_str(), posted[1].as_str()], "the oldest bound is exclusive");
    assert_eq!(page.next_cursor, None, "the last page");
    let call = fake.calls_to("conversations.history").pop().unwrap();
    assert_eq!(call.content_type.as_deref(), Some("application/x-www-form-urlencoded"));
    assert_eq!(call.body["include_all_metadata"], "true");

    fake.set_history_scope(false);
    let e = client.conversation_history(&channel(), &posted[0], 2, None).await.unwrap_err();
    assert!(matches!(&e, SlackError::Api(code) if code == "missing_scope"), "{e:?}");
    assert!(!e.retryable(), "a missing scope does not heal by waiting");
}

#[test]
fn t34_users_info_answers_are_read_strictly() {
    let a = super::parse_account(&json!({"id": "U0GONE001", "team_id": "T0TEAM0001", "deleted": true})).unwrap();
    assert!(a.deleted && !a.is_restricted && !a.is_bot, "a deactivated account's object omits the role flags");
    let grid = json!({"id": "U0A", "team_id": "T0A", "deleted": false, "is_restricted": false,
                      "enterprise_user": {"enterprise_id": "E0ORG0001", "teams": ["T0A", "T0B"]}});
    let g = super::parse_account(&grid).unwrap();
    assert_eq!(g.enterprise_id.as_deref(), Some("E0ORG0001"));
    assert_eq!(g.enterprise_teams, ["T0A", "T0B"]);
    for bad in [
        json!({"id": "U0A", "team_id": "T0A"}),
        json!({"id": "U0A", "deleted": false}),
        json!({"team_id": "T0A", "deleted": false}),
        json!({"id": "U0A", "team_id": "T0A", "deleted": false, "is_restricted": "true"}),
        json!({"id": "U0A", "team_id": "T0A", "deleted": "false"}),
    ] {
        assert!(
            matches!(super::parse_account(&bad), Err(super::SlackError::InvalidResponse(_))),
            "{bad} must not be read as an eligible account"
        );
    }
}
