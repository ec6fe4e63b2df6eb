//! The decision-event relay (issue 19), run by the sweeper each run: reads the outbox in `seq` order,
//! publishes in batches of at most ten, deletes only what was published, and stops at the first failure so
//! that events leave in chain order. What stays is retried next run: an outage delays events, never loses
//! them, and a retry after a publication whose answer was lost repeats one (at least once; consumers
//! deduplicate on `detail.event_id`).
//!
//! Without a publisher (no `COUNTERSIGN_EVENT_BUS`), the relay deletes the entries unpublished: the stores
//! write them whatever the configuration, so that no function needs to know whether events are on.
//! Never logs payloads.

use std::sync::Arc;

use crate::domain::events::DecisionEvent;
use crate::ports::{EventOutbox, EventPublisher, PublishError, StoreError, MAX_EVENTS_PER_PUBLISH};

/// Entries read per outbox page.
const PAGE: usize = 100;
/// At most this many entries are relayed per run, so one run stays bounded; the rest wait for the next.
const MAX_PER_RUN: usize = 1000;
/// EventBridge's limit on one `PutEvents` call, all entries together (and on one entry).
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayReport {
    /// Events published (and their entries deleted) by this run.
    pub published: usize,
    /// Entries deleted unpublished: no publisher configured, or a kind this version does not publish.
    pub dropped: usize,
    /// Entries still in the outbox when this run stopped at a failure (0 when it emptied it).
    pub owed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot read or delete outbox entries")]
    Store(#[from] StoreError),
    #[error("events not published (seq {seq} first); will retry")]
    Publish {
        seq: u64,
        #[source]
        cause: PublishError,
        /// What the run did before it stopped.
        report: RelayReport,
    },
}

#[derive(Clone)]
pub struct EventRelay {
    pub outbox: Arc<dyn EventOutbox>,
    /// `None`: events are off, and owed entries are deleted unpublished.
    pub publisher: Option<Arc<dyn EventPublisher>>,
}

/// Approximate size EventBridge counts for one entry: source, detail-type and detail (as JSON).
fn entry_bytes(e: &DecisionEvent) -> usize {
    crate::domain::events::SOURCE.len() + e.detail_type.len() + e.detail.to_string().len()
}

/// `events` cut into batches of at most ten entries and [`MAX_BATCH_BYTES`] (an entry over the limit goes
/// alone, and EventBridge refuses it).
fn batches(events: &[DecisionEvent]) -> Vec<&[DecisionEvent]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, e) in events.iter().enumerate() {
        let size = entry_bytes(e);
        if i > start && (i - start == MAX_EVENTS_PER_PUBLISH || bytes + size > MAX_BATCH_BYTES) {
            out.push(&events[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < events.len() {
        out.push(&events[start..]);
    }
    out
}

impl EventRelay {
    pub async fn run_once(&self) -> Result<RelayReport, RelayError> {
        let mut rep = RelayReport::default();
        while rep.published + rep.dropped < MAX_PER_RUN {
            let entries = self.outbox.due(PAGE).await?;
            if entries.is_empty() {
                break;
            }
            let Some(publisher) = &self.publisher else {
                let seqs: Vec<u64> = entries.iter().map(|e| e.seq()).collect();
                self.outbox.delete(&seqs).await?;
                rep.dropped += seqs.len();
                continue;
            };
            let (mut events, mut unknown) = (Vec::with_capacity(entries.len()), Vec::new());
            for entry in &entries {
                match DecisionEvent::of(entry) {
                    Some(e) => events.push(e),
                    None => unknown.push(entry.seq()),
                }
            }
            if !unknown.is_empty() {
                tracing::warn!(count = unknown.len(), "outbox entries of kinds this version does not publish; dropped");
                self.outbox.delete(&unknown).await?;
                rep.dropped += unknown.len();
            }
            for batch in batches(&events) {
                let failure = match publisher.publish(batch).await {
                    Ok(results) => {
                        // Only the events before the first refused (or unanswered) one count as published,
                        // so nothing overtakes an event that is retried.
                        let ok = results.iter().take(batch.len()).take_while(|r| r.is_ok()).count();
                        let seqs: Vec<u64> = batch[..ok].iter().map(|e| e.seq).collect();
                        self.outbox.delete(&seqs).await?;
                        rep.published += ok;
                        batch.get(ok).map(|e| (e.seq, results.into_iter().nth(ok).and_then(Result::err)))
                    }
                    Err(e) => Some((batch[0].seq, Some(e))),
                };
                if let Some((seq, cause)) = failure {
                    let cause = cause.unwrap_or_else(|| PublishError {
                        code: "missing_result".into(),
                        message: "the publisher returned fewer results than events".into(),
                    });
                    tracing::warn!(seq, code = %cause.code, error = %cause.message, "event not published; will retry");
                    rep.owed = self.owed().await;
                    return Err(RelayError::Publish { seq, cause, report: rep });
                }
            }
        }
        Ok(rep)
    }

    /// How many entries are still owed, as far as one page shows (a lower bound past it).
    async fn owed(&self) -> usize {
        self.outbox.due(PAGE).await.map(|e| e.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::domain::audit::{Actor, AuditDraft, AuditKind};
    use crate::domain::events::OutboxEntry;
    use crate::domain::Timestamp;

    #[derive(Default)]
    struct MemOutbox(Mutex<BTreeMap<u64, OutboxEntry>>);

    #[async_trait]
    impl EventOutbox for MemOutbox {
        async fn due(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
            Ok(self.0.lock().unwrap().values().take(limit).cloned().collect())
        }
        async fn delete(&self, seqs: &[u64]) -> Result<(), StoreError> {
            let mut m = self.0.lock().unwrap();
            for s in seqs {
                m.remove(s);
            }
            Ok(())
        }
    }

    /// Publishes everything except the seqs in `refuse`; fails whole calls while `down`.
    #[derive(Default)]
    struct Recorder {
        got: Mutex<Vec<u64>>,
        refuse: Mutex<Vec<u64>>,
        down: Mutex<bool>,
        calls: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl EventPublisher for Recorder {
        async fn publish(&self, events: &[DecisionEvent]) -> Result<Vec<Result<(), PublishError>>, PublishError> {
            self.calls.lock().unwrap().push(events.len());
            if *self.down.lock().unwrap() {
                return Err(PublishError { code: "dispatch".into(), message: "connection refused".into() });
            }
            let refuse = self.refuse.lock().unwrap().clone();
            Ok(events
                .iter()
                .map(|e| {
                    if refuse.contains(&e.seq) {
                        Err(PublishError { code: "InternalFailure".into(), message: "try again".into() })
                    } else {
                        self.got.lock().unwrap().push(e.seq);
                        Ok(())
                    }
                })
                .collect())
        }
    }

    fn outbox_of(n: u64) -> Arc<MemOutbox> {
        let t0 = Timestamp::from_unix_millis(1_795_621_462_000);
        let r = crate::testing::sample_request(1, t0);
        let out = MemOutbox::default();
        for seq in 1..=n {
            let record = AuditDraft::new(t0, AuditKind::RequestCreated, Actor::system("t"), Some(r.id)).seal(seq, "0");
            out.0.lock().unwrap().insert(seq, OutboxEntry { record, request: r.clone() });
        }
        Arc::new(out)
    }

    #[tokio::test]
    async fn every_entry_is_published_once_in_seq_order_in_batches_of_ten_and_deleted() {
        let (outbox, publisher) = (outbox_of(23), Arc::new(Recorder::default()));
        let relay = EventRelay { outbox: outbox.clone(), publisher: Some(publisher.clone()) };
        let rep = relay.run_once().await.unwrap();
        assert_eq!(rep, RelayReport { published: 23, dropped: 0, owed: 0 });
        assert_eq!(*publisher.got.lock().unwrap(), (1..=23).collect::<Vec<_>>());
        assert_eq!(*publisher.calls.lock().unwrap(), vec![10, 10, 3]);
        assert!(outbox.0.lock().unwrap().is_empty());
        assert_eq!(relay.run_once().await.unwrap(), RelayReport::default(), "nothing twice");
    }

    #[tokio::test]
    async fn a_refused_entry_stops_the_run_and_only_the_entries_before_it_are_deleted() {
        let (outbox, publisher) = (outbox_of(15), Arc::new(Recorder::default()));
        *publisher.refuse.lock().unwrap() = vec![4];
        let relay = EventRelay { outbox: outbox.clone(), publisher: Some(publisher.clone()) };
        let Err(RelayError::Publish { seq, report, .. }) = relay.run_once().await else { panic!("must fail") };
        assert_eq!((seq, report.published, report.owed), (4, 3, 12));
        // 5..10 were accepted by the service but their entries stay: they are sent again (at least once),
        // so that nothing overtakes seq 4.
        let kept: Vec<u64> = outbox.0.lock().unwrap().keys().copied().collect();
        assert_eq!(kept, (4..=15).collect::<Vec<_>>());
        publisher.refuse.lock().unwrap().clear();
        assert_eq!(relay.run_once().await.unwrap().published, 12);
        assert!(outbox.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_outage_deletes_nothing_and_the_next_run_delivers_everything() {
        let (outbox, publisher) = (outbox_of(12), Arc::new(Recorder::default()));
        *publisher.down.lock().unwrap() = true;
        let relay = EventRelay { outbox: outbox.clone(), publisher: Some(publisher.clone()) };
        let Err(RelayError::Publish { seq, report, .. }) = relay.run_once().await else { panic!("must fail") };
        assert_eq!((seq, report.published, report.owed), (1, 0, 12));
        assert_eq!(outbox.0.lock().unwrap().len(), 12);
        *publisher.down.lock().unwrap() = false;
        assert_eq!(relay.run_once().await.unwrap().published, 12);
        assert_eq!(*publisher.got.lock().unwrap(), (1..=12).collect::<Vec<_>>());
    }

    #[test]
    fn batches_hold_at_most_ten_entries_and_256_kb() {
        let t0 = Timestamp::from_unix_millis(0);
        let event = |seq, bytes: usize| DecisionEvent {
            seq,
            name: "request.created",
            detail_type: "Countersign Request Created",
            time: t0,
            detail: serde_json::Value::String("x".repeat(bytes)),
        };
        let small: Vec<DecisionEvent> = (1..=21).map(|s| event(s, 10)).collect();
        assert_eq!(batches(&small).iter().map(|b| b.len()).collect::<Vec<_>>(), [10, 10, 1]);
        let big: Vec<DecisionEvent> = (1..=4).map(|s| event(s, 100 * 1024)).collect();
        assert_eq!(batches(&big).iter().map(|b| b.len()).collect::<Vec<_>>(), [2, 2]);
        let huge = vec![event(1, 300 * 1024), event(2, 10)];
        assert_eq!(batches(&huge).iter().map(|b| b.len()).collect::<Vec<_>>(), [1, 1], "an oversized entry alone");
    }

    #[tokio::test]
    async fn without_a_publisher_the_outbox_is_emptied_unpublished() {
        let outbox = outbox_of(130);
        let relay = EventRelay { outbox: outbox.clone(), publisher: None };
        assert_eq!(relay.run_once().await.unwrap(), RelayReport { published: 0, dropped: 130, owed: 0 });
        assert!(outbox.0.lock().unwrap().is_empty());
    }
}
