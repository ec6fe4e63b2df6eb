//! Decision events on Amazon EventBridge (issue 19): `PutEvents` on the configured bus, one entry per
//! event (`Source` `countersign`, the event's `DetailType`, `Time` = the audit record's `at`, `Detail` =
//! its JSON), at most ten per call.
//!
//! A call that fails whole (throttled, 5xx after the SDK's retries, no connection) is one `Err`: the relay
//! keeps every entry. A call that answers gives one result per entry: `FailedEntryCount` entries carry an
//! `ErrorCode`, and an answer with fewer entries than sent counts the missing ones as failed. Never logs or
//! returns a payload.

use async_trait::async_trait;
use aws_sdk_eventbridge::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use countersign_core::domain::events::{DecisionEvent, SOURCE};
use countersign_core::ports::{EventPublisher, PublishError};

/// The SDK this adapter is built on, for callers (tests, wiring) that build its client.
pub use aws_sdk_eventbridge as sdk;

/// The publisher on one event bus (its name or ARN).
#[derive(Debug, Clone)]
pub struct EventBridgePublisher {
    pub client: aws_sdk_eventbridge::Client,
    pub bus: String,
}

#[async_trait]
impl EventPublisher for EventBridgePublisher {
    async fn publish(&self, events: &[DecisionEvent]) -> Result<Vec<Result<(), PublishError>>, PublishError> {
        let mut req = self.client.put_events();
        for e in events {
            req = req.entries(
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus)
                    .source(SOURCE)
                    .detail_type(e.detail_type)
                    .time(DateTime::from_millis(e.time.unix_millis()))
                    .detail(e.detail.to_string())
                    .build(),
            );
        }
        let out = req.send().await.map_err(|err| PublishError {
            code: err.code().unwrap_or("dispatch").to_string(),
            message: format!("PutEvents: {}", DisplayErrorContext(&err)),
        })?;
        let answered = out.entries();
        Ok((0..events.len())
            .map(|i| match answered.get(i) {
                Some(r) if r.error_code().is_none() && r.event_id().is_some() => Ok(()),
                Some(r) => Err(PublishError {
                    code: r.error_code().unwrap_or("no_event_id").to_string(),
                    message: r.error_message().unwrap_or("refused").to_string(),
                }),
                None => Err(PublishError {
                    code: "missing_result".into(),
                    message: "PutEvents answered fewer entries than were sent".into(),
                }),
            })
            .collect())
    }
}
