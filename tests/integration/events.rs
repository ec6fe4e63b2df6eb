//! Decision events (issue 19) end to end on the emulator: the DynamoDB store, the real EventBridge adapter,
//! a bus with a rule `{"source": ["countersign"]}` whose target is an SQS queue, and the sweeper's relay.
//! What the queue receives is compared with the audit chain: every event-worthy record exactly once, in
//! `seq` order, `detail.event_id` its hash. Then EventBridge goes away in the middle of a run (the
//! publisher's calls go to a closed port): what was published stays published, the rest stays owed, and
//! the next run delivers it, nothing lost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use countersign_aws::events::{sdk as eb, EventBridgePublisher};
use countersign_core::domain::events::{event_of, DecisionEvent};
use countersign_core::domain::AuditEvent;
use countersign_core::ports::{EventPublisher, PublishError};
use countersign_testkit::app::{api_event, spawn_app, StoreKind, TestApp, DEPLOY_ARN};
use countersign_testkit::emulator::{endpoint, sdk_config, Service};

/// A bus whose rule sends every Countersign event to a fresh queue.
struct Bus {
    eb: eb::Client,
    sqs: aws_sdk_sqs::Client,
    name: String,
    queue_url: String,
}

async fn bus() -> Option<Bus> {
    let ep = endpoint(Service::Events)?;
    let cfg = sdk_config(&ep).await;
    let sqs_cfg = sdk_config(&endpoint(Service::Sqs)?).await;
    let (eb, sqs) = (eb::Client::new(&cfg), aws_sdk_sqs::Client::new(&sqs_cfg));
    let name = format!("cs-events-{}", ulid::Ulid::new().to_string().to_lowercase());
    eb.create_event_bus().name(&name).send().await.expect("create the bus");
    let queue_url = sqs.create_queue().queue_name(&name).send().await.expect("create the queue").queue_url.unwrap();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes");
    let queue_arn = attrs.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
    eb.put_rule()
        .name("all-countersign")
        .event_bus_name(&name)
        .event_pattern(json!({"source": ["countersign"]}).to_string())
        .send()
        .await
        .expect("put the rule");
    eb.put_targets()
        .rule("all-countersign")
        .event_bus_name(&name)
        .targets(eb::types::Target::builder().id("queue").arn(queue_arn).build().unwrap())
        .send()
        .await
        .expect("put the target");
    Some(Bus { eb, sqs, name, queue_url })
}

impl Bus {
    fn publisher(&self) -> EventBridgePublisher {
        EventBridgePublisher { client: self.eb.clone(), bus: self.name.clone() }
    }

    /// Every event in the queue so far (each deleted once read), in the order the queue gives them.
    async fn drain(&self) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("receive");
            let msgs = got.messages();
            if msgs.is_empty() {
                return out;
            }
            for m in msgs {
                out.push(serde_json::from_str(m.body().unwrap()).expect("an event is JSON"));
                let handle = m.receipt_handle().unwrap();
                self.sqs.delete_message().queue_url(&self.queue_url).receipt_handle(handle).send().await.unwrap();
            }
        }
    }
}

/// A publisher whose calls after the first `up_for` go to a closed port (EventBridge unreachable).
struct Cut {
    real: EventBridgePublisher,
    dead: EventBridgePublisher,
    calls: AtomicUsize,
    up_for: AtomicUsize,
}

#[async_trait]
impl EventPublisher for Cut {
    async fn publish(&self, events: &[DecisionEvent]) -> Result<Vec<Result<(), PublishError>>, PublishError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.up_for.load(Ordering::SeqCst) {
            self.real.publish(events).await
        } else {
            self.dead.publish(events).await
        }
    }
}

/// A publisher on a port nothing listens on, with few, quick retries.
async fn unreachable(bus: &str) -> EventBridgePublisher {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let cfg = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new("test", "test", None, None, "events"))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder().connect_timeout(Duration::from_millis(300)).build(),
        )
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
        .load()
        .await;
    EventBridgePublisher { client: eb::Client::new(&cfg), bus: bus.to_string() }
}

/// The audit records that are events, in chain order.
fn eventful(chain: &[AuditEvent]) -> Vec<&AuditEvent> {
    chain.iter().filter(|e| event_of(e.kind).is_some()).collect()
}

fn click(t: &TestApp, user: &str, action: &str, p: &countersign_testkit::app::Posted) -> Value {
    t.click(user, action, &p.id, &p.channel, &p.ts)
}

/// Approved (two votes), denied, cancelled, auto-approved and redeemed requests, and one left to expire
/// while an approval goes unused: every kind of decision the API, Slack and the sweeper make.
async fn decisions(t: &TestApp) {
    let a = t.pending_request().await;
    for u in ["UALICE0001", "UBOB000001"] {
        let r = t.call_slack(t.signed_callback(&click(t, u, "countersign_approve", &a))).await;
        assert_eq!(r.status, 200, "{}", r.json);
    }
    let b = t.pending_request().await;
    let r = t.call_slack(t.signed_callback(&t.deny_submission("UALICE0001", &b.id, "not today"))).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let c = t.pending_request().await;
    let r = t.call_api(api_event("POST", &format!("/v1/requests/{}/cancel", c.id), None, Some(DEPLOY_ARN))).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let d = t.create(DEPLOY_ARN, &json!({"action": "deploy", "environment": "staging"})).await;
    assert_eq!(d.status, 201, "{}", d.json);
    let d = d.json["id"].as_str().unwrap().to_string();
    let r = t.call_api(api_event("POST", &format!("/v1/requests/{d}/redeem"), Some("{}"), Some(DEPLOY_ARN))).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(t.request(&a.id).await.status.as_str(), "approved");
    assert_eq!(t.request(&b.id).await.status.as_str(), "denied");
    // One left to expire, and `a`'s approval left unused: the next sweeper run decides both.
    t.pending_request().await;
    t.clock.advance_seconds(2 * 3600);
}

/// Every kind of decision event: the API's, Slack's and the sweeper's.
const ALL_KINDS: &[&str] = &[
    "request.created",
    "request.approved",
    "request.denied",
    "request.cancelled",
    "request.auto_approved",
    "request.redeemed",
    "request.expired",
    "request.unused",
];

/// The received events against the chain: each event-worthy record once, in order, with its id.
fn assert_delivered_once_in_order(received: &[Value], chain: &[AuditEvent]) {
    let want = eventful(chain);
    let got: Vec<u64> = received.iter().map(|e| e["detail"]["audit"]["seq"].as_u64().unwrap()).collect();
    assert_eq!(got, want.iter().map(|e| e.seq).collect::<Vec<_>>(), "every event once, in seq order");
    for (e, record) in received.iter().zip(want) {
        let (name, detail_type) = event_of(record.kind).unwrap();
        assert_eq!(e["source"], "countersign");
        assert_eq!(e["detail-type"], detail_type);
        assert_eq!(e["detail"]["event"], name);
        assert_eq!(e["detail"]["event_id"], record.hash.as_str(), "dedupe on the audit record's hash");
        assert_eq!(e["detail"]["audit"]["hash"], record.hash.as_str());
        assert_eq!(e["detail"]["id"], record.request_id.unwrap().to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_reaches_an_sqs_target_once_in_order_with_the_audit_hash_as_id() {
    let Some(bus) = bus().await else { return };
    let Some(mut t) = spawn_app(StoreKind::Dynamodb).await else { return };
    t.app.events = Some(Arc::new(bus.publisher()));
    decisions(&t).await;
    let rep = t.app.sweeper().run_once().await.unwrap();
    let chain = t.audit().await;
    let kinds: Vec<&str> = eventful(&chain).iter().map(|e| e.kind.as_str()).collect();
    for k in ALL_KINDS {
        assert!(kinds.contains(k), "{k} in {kinds:?}");
    }
    assert_eq!((rep.expired, rep.unused), (1, 1), "{rep:?}");
    assert_eq!((rep.published, rep.events_owed, rep.errors), (kinds.len(), 0, 0), "{rep:?}");
    let received = bus.drain().await;
    assert_delivered_once_in_order(&received, &chain);
    // The request as it was at each event: created pending, then approved.
    let approved = received.iter().find(|e| e["detail"]["event"] == "request.approved").unwrap();
    let id = approved["detail"]["id"].clone();
    let created = received.iter().find(|e| e["detail"]["id"] == id && e["detail"]["event"] == "request.created");
    assert_eq!(created.unwrap()["detail"]["status"], "pending");
    assert_eq!(approved["detail"]["status"], "approved");
    assert_eq!(approved["detail"]["approvals"].as_array().unwrap().len(), 2);
    assert!(t.app.stores.outbox.due(10).await.unwrap().is_empty(), "nothing left owed");
    assert_eq!(t.app.sweeper().run_once().await.unwrap().published, 0);
    assert!(bus.drain().await.is_empty(), "nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eventbridge_outage_mid_run_loses_nothing_and_the_next_run_delivers_the_rest_in_order() {
    let Some(bus) = bus().await else { return };
    let Some(mut t) = spawn_app(StoreKind::Dynamodb).await else { return };
    let cut = Arc::new(Cut {
        real: bus.publisher(),
        dead: unreachable(&bus.name).await,
        calls: AtomicUsize::new(0),
        up_for: AtomicUsize::new(1),
    });
    t.app.events = Some(cut.clone());
    // 12 auto-approved requests: 24 events, three PutEvents calls; EventBridge goes away after the first.
    for _ in 0..12 {
        let d = t.create(DEPLOY_ARN, &json!({"action": "deploy", "environment": "staging"})).await;
        assert_eq!(d.status, 201, "{}", d.json);
    }
    let rep = t.app.sweeper().run_once().await.expect("an outage does not fail the sweep");
    assert_eq!((rep.published, rep.events_owed), (10, 14), "{rep:?}");
    assert!(rep.errors >= 1);
    assert_eq!(cut.calls.load(Ordering::SeqCst), 2, "the run stopped at the first failed call");
    assert_eq!(t.app.stores.outbox.due(100).await.unwrap().len(), 14, "only what was published was deleted");
    // Changes go on during the outage, and their events queue behind the owed ones.
    decisions(&t).await;
    let rep = t.app.sweeper().run_once().await.unwrap();
    assert_eq!(rep.published, 0, "{rep:?}");
    cut.up_for.store(usize::MAX, Ordering::SeqCst);
    let rep = t.app.sweeper().run_once().await.unwrap();
    assert_eq!(rep.events_owed, 0, "{rep:?}");
    let received = bus.drain().await;
    assert_delivered_once_in_order(&received, &t.audit().await);
}

/// An HTTP server on 127.0.0.1 answering every request with `body` (status 200, JSON 1.1).
async fn canned(body: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = Vec::new();
                // Read the head and as much body as Content-Length says.
                loop {
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_lowercase();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                            .unwrap_or(0);
                        if got.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test]
async fn a_put_events_answer_with_failed_entries_is_one_failure_per_refused_or_missing_entry() {
    let url = canned(
        r#"{"FailedEntryCount":1,"Entries":[{"EventId":"e-1"},{"ErrorCode":"InternalFailure","ErrorMessage":"try again"}]}"#,
    )
    .await;
    let cfg = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new("test", "test", None, None, "events"))
        .load()
        .await;
    let publisher = EventBridgePublisher { client: eb::Client::new(&cfg), bus: "b".into() };
    let t0 = countersign_core::domain::Timestamp::from_unix_millis(1_795_621_462_000);
    let r = countersign_core::testing::sample_request(1, t0);
    let events: Vec<DecisionEvent> = (1..=3)
        .map(|seq| {
            let record = countersign_core::domain::AuditDraft::new(
                t0,
                countersign_core::domain::AuditKind::RequestCreated,
                countersign_core::domain::Actor::system("t"),
                Some(r.id),
            )
            .seal(seq, "0");
            DecisionEvent::of(&countersign_core::domain::events::OutboxEntry { record, request: r.clone() }).unwrap()
        })
        .collect();
    let results = publisher.publish(&events).await.expect("the call itself succeeded");
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok());
    assert_eq!(results[1].as_ref().unwrap_err().code, "InternalFailure");
    assert_eq!(
        results[2].as_ref().unwrap_err().code,
        "missing_result",
        "an entry the answer left out is not published"
    );
}
