//! The scheduled sweeper: expires overdue requests, relays owed Slack posts and updates, reminds approvers.
//! Safe to run concurrently with itself and with the handlers: every write is conditional.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::{Actor, ApprovalRequest, AuditDraft, AuditKind, Timestamp, TransitionError};
use crate::ports::{Clock, Commit, Conflict, Guard, MessageContext, PostedMessage, StoreError, Stores};

use super::notify::Dispatcher;

const BATCH: usize = 500;
/// How long a relay owns a delivery before another may try.
const RELAY_LEASE: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    pub expired: usize,
    pub relayed: usize,
    pub reminded: usize,
    /// Approvals marked unused past `usable_until` (`request.unused`).
    pub unused: usize,
    /// Break-glass review steps taken (announcements, reminders, overdue marks, escalations; row 41).
    pub review_steps: usize,
    /// The chain head of the checkpoint this run wrote, if it wrote one.
    pub checkpoint: Option<u64>,
    /// True when this run ended with a checkpoint owed: the head may have moved past the newest checkpoint
    /// and writing one failed (it is tried again next run). The sweeper Lambda publishes it as the
    /// `CheckpointOwed` metric, and three owed runs in a row raise the stack's alarm.
    pub checkpoint_owed: bool,
    /// Decision events published by this run (issue 19).
    pub published: usize,
    /// Outbox entries still owed when this run's relay stopped at a failure (retried next run); the
    /// sweeper Lambda publishes it as the `EventsOwed` metric.
    pub events_owed: usize,
    pub errors: usize,
}

#[derive(Clone)]
pub struct Sweeper {
    pub stores: Stores,
    pub clock: Arc<dyn Clock>,
    pub dispatcher: Dispatcher,
    /// Writes a signed checkpoint of the audit chain after each run (issue 17), when configured.
    pub checkpoints: Option<super::checkpoints::Checkpointer>,
    /// Publishes the decision events the outbox holds (issue 19); `None`: the outbox is left alone.
    pub events: Option<super::events::EventRelay>,
}

/// How many reminders are due by `now`: one at 1/3 and one at 2/3 of the request's lifetime.
pub fn reminders_due(r: &ApprovalRequest, now: Timestamp) -> u32 {
    let life = r.expires_at.unix_millis() - r.created_at.unix_millis();
    let age = now.unix_millis() - r.created_at.unix_millis();
    if life <= 0 {
        return 0;
    }
    u32::from(age * 3 >= life) + u32::from(age * 3 >= life * 2)
}

impl Sweeper {
    pub async fn run_once(&self) -> Result<SweepReport, StoreError> {
        let mut rep = SweepReport::default();
        for r in self.stores.requests.list_pending(BATCH).await? {
            let now = self.clock.now();
            if now >= r.expires_at {
                match self.expire(&r).await {
                    Ok(true) => rep.expired += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(request_id = %r.id, error = %e, "expiry failed; will retry");
                        rep.errors += 1;
                    }
                }
            } else if reminders_due(&r, now) > r.notification.reminders_sent && r.notification.ts.is_some() {
                match self.remind(&r, now).await {
                    Ok(true) => rep.reminded += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(request_id = %r.id, error = %e, "reminder failed; will retry");
                        rep.errors += 1;
                    }
                }
            }
        }
        let now = self.clock.now();
        for r in self.stores.requests.list_notification_due(now, BATCH).await? {
            let mut owed = r.message_owed();
            if r.unused_due(now) {
                match self.mark_unused(&r, now).await {
                    Ok(marked) => {
                        rep.unused += usize::from(marked);
                        owed |= marked;
                    }
                    Err(e) => {
                        tracing::warn!(request_id = %r.id, error = %e, "unused mark failed; will retry");
                        rep.errors += 1;
                    }
                }
            }
            if r.break_glass.is_some() {
                match self.review_step(&r, now).await {
                    Ok(step) => rep.review_steps += usize::from(step.is_some()),
                    Err(e) => {
                        tracing::warn!(request_id = %r.id, error = %e, "break-glass review step failed; will retry");
                        rep.errors += 1;
                    }
                }
            }
            if !owed {
                continue;
            }
            match self.dispatcher.relay_one(&r.id, RELAY_LEASE).await {
                Ok(()) => rep.relayed += 1,
                Err(e) => {
                    tracing::warn!(request_id = %r.id, error = %e, "relay failed; will retry");
                    rep.errors += 1;
                }
            }
        }
        if let Some(relay) = &self.events {
            // After this run's own changes, so their events leave in this run too. Never blocks them.
            match relay.run_once().await {
                Ok(r) => rep.published = r.published,
                Err(super::events::RelayError::Publish { report, .. }) => {
                    (rep.published, rep.events_owed) = (report.published, report.owed.max(1));
                    rep.errors += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error::error_chain(&e), "event relay failed; will retry");
                    rep.events_owed = 1;
                    rep.errors += 1;
                }
            }
        }
        if let Some(c) = &self.checkpoints {
            // Last, so it covers what this run wrote; a failure is retried next run and blocks nothing.
            match c.run_once().await {
                Ok(written) => rep.checkpoint = written.map(|w| w.seq),
                Err(e) => {
                    tracing::warn!(error = %crate::error::error_chain(&e), "checkpoint not written; will retry");
                    rep.checkpoint_owed = true;
                    rep.errors += 1;
                }
            }
        }
        Ok(rep)
    }

    async fn expire(&self, r: &ApprovalRequest) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let t = match r.expire(now) {
            Ok(t) => t,
            Err(TransitionError::AlreadyDecided(_) | TransitionError::NotYetExpired) => return Ok(false),
            Err(_) => return Ok(false),
        };
        let commit = Commit {
            expected_version: r.version,
            request: t.request,
            vote: None,
            events: t.events,
            guard: Guard::ExpiredAt(now),
        };
        match self.stores.requests.commit(commit).await {
            Ok(_) => {
                if let Err(e) = self.dispatcher.deliver(&r.id).await {
                    tracing::warn!(request_id = %r.id, error = %e, "message update after expiry deferred");
                }
                Ok(true)
            }
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Marks an approval not used in time; the relay then updates its message.
    async fn mark_unused(&self, r: &ApprovalRequest, now: Timestamp) -> Result<bool, StoreError> {
        let Some(t) = r.mark_unused(now) else {
            return Ok(false);
        };
        let commit = Commit {
            expected_version: r.version,
            request: t.request,
            vote: None,
            events: t.events,
            guard: Guard::Approved,
        };
        match self.stores.requests.commit(commit).await {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false), // redeemed, or marked by another sweeper, meanwhile
            Err(e) => Err(e),
        }
    }

    async fn remind(&self, r: &ApprovalRequest, now: Timestamp) -> Result<bool, StoreError> {
        let due = reminders_due(r, now);
        // Claim the reminder first, so it is sent at most once even with two sweepers.
        let mut next = r.clone();
        next.version += 1;
        next.notification.reminders_sent = due;
        let claim = Commit {
            expected_version: r.version,
            request: next.clone(),
            vote: None,
            events: vec![AuditDraft::new(now, AuditKind::SlackReminded, Actor::system("sweeper"), Some(r.id))
                .with("reminder", due.to_string())],
            guard: Guard::OpenAt(now),
        };
        match self.stores.requests.commit(claim).await {
            Ok(_) => {}
            Err(StoreError::Conflict(Conflict::Stale | Conflict::DuplicateVote)) => return Ok(false),
            Err(e) => return Err(e),
        }
        let policy = self.stores.policies.get_policy(&r.policy.name).await?;
        let history = self.dispatcher.history(r).await?;
        let ctx = MessageContext {
            request: &next,
            policy: policy.as_ref(),
            history: &history,
            sensitive: self.dispatcher.sensitive_environments.contains(&r.environment),
            now,
        };
        let posted = PostedMessage {
            channel: r.notification.channel.to_string(),
            ts: r.notification.ts.clone().unwrap_or_default(),
        };
        if let Err(e) = self.dispatcher.notifier.remind(&ctx, &posted).await {
            // A reminder is a courtesy: it is claimed and audited; a failed one is logged, not retried.
            tracing::warn!(request_id = %r.id, error = %e, "reminder could not be posted");
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::sample_request as sample;

    #[test]
    fn reminders_fall_due_at_one_and_two_thirds_of_the_ttl() {
        let t0 = Timestamp::from_unix_millis(1_000_000);
        let r = sample(1, t0); // 1800 s
        assert_eq!(reminders_due(&r, t0.plus_seconds(599)), 0);
        assert_eq!(reminders_due(&r, t0.plus_seconds(600)), 1);
        assert_eq!(reminders_due(&r, t0.plus_seconds(1200)), 2);
        assert_eq!(reminders_due(&r, t0.plus_seconds(1799)), 2);
    }
}
