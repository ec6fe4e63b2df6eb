//! `RequestStore` on the requests table: request, vote, idempotency and pending-counter items.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};

use super::error::{build_error, from_sdk, CONDITION_FAILED};
use super::items::{self, n, s, Item};
use super::keys::*;
use super::reads::Match;
use super::{conditional_put, DynamoStore, TxOutcome};
use countersign_core::domain::{ApprovalRequest, AuditDraft, AuditEvent, RequestId, Status, Timestamp};
use countersign_core::ports::{
    Commit, Conflict, CreateOutcome, Guard, Outcome, RequestStore, SameKind, SameKindSummary, StoreError,
};

/// Index of a state item in a transaction, to read its cancellation reason.
#[derive(Default)]
struct Slots {
    request: Option<usize>,
    idempotency: Option<usize>,
    counter: Option<usize>,
    break_glass: Option<usize>,
    vote: Option<usize>,
}

fn failed(codes: &[String], slot: Option<usize>) -> bool {
    slot.and_then(|i| codes.get(i)).is_some_and(|c| c == CONDITION_FAILED)
}

impl DynamoStore {
    pub(super) async fn get_item(&self, op: &'static str, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.requests)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk(op, e))?;
        Ok(out.item)
    }

    /// [`RequestStore::commit`] with, for a version-only commit, the status the request is asserted to
    /// have now.
    async fn commit_over(&self, commit: Commit, old_status: Option<Status>) -> Result<Vec<AuditEvent>, StoreError> {
        let Commit { expected_version, request, vote, events, guard } = commit;
        if request.version != expected_version.saturating_add(1) {
            return Err(StoreError::Other(format!(
                "commit must write version {} over version {expected_version}, not {}",
                expected_version.saturating_add(1),
                request.version
            )));
        }
        if let Some(v) = &vote {
            if v.request_id != request.id {
                return Err(StoreError::Other("the vote belongs to another request".into()));
            }
        }

        let mut values = Item::new();
        values.insert(":expected".into(), n(expected_version));
        let mut condition = String::from("#version = :expected");
        let was_pending = match guard {
            Guard::OpenAt(t) | Guard::ExpiredAt(t) => {
                let cmp = if matches!(guard, Guard::OpenAt(_)) { ">" } else { "<=" };
                condition.push_str(&format!(" AND #status = :pending AND #expires_at {cmp} :t"));
                values.insert(":pending".into(), s(Status::Pending.as_str()));
                values.insert(":t".into(), n(t.unix_millis()));
                true
            }
            Guard::Approved => {
                condition.push_str(" AND #status = :approved");
                values.insert(":approved".into(), s(Status::Approved.as_str()));
                false
            }
            Guard::VersionOnly => {
                // Nothing asserts the old status, but the counter must know whether this commit leaves
                // `pending`: the write is conditional on the status the caller asserts.
                let old = old_status.unwrap_or(request.status);
                if old.is_terminal() && request.status != old {
                    return Err(StoreError::Other(format!(
                        "request {} is {} and cannot become {}",
                        request.id,
                        old.as_str(),
                        request.status.as_str()
                    )));
                }
                condition.push_str(" AND #status = :old_status");
                values.insert(":old_status".into(), s(old.as_str()));
                old == Status::Pending
            }
        };

        let mut tx = Vec::new();
        let mut slots = Slots { request: Some(tx.len()), ..Slots::default() };
        tx.push(conditional_put(
            &self.tables.requests,
            items::request_item(&request)?,
            Some(&condition),
            &[("#version", VERSION), ("#status", STATUS), ("#expires_at", EXPIRES_AT)]
                .into_iter()
                .filter(|(k, _)| condition.contains(k))
                .collect::<Vec<_>>(),
            values,
        )?);
        if let Some(v) = &vote {
            slots.vote = Some(tx.len());
            tx.push(conditional_put(
                &self.tables.requests,
                items::vote_item(v, request.expires_at)?,
                Some("attribute_not_exists(#pk)"),
                &[("#pk", PK)],
                Item::new(),
            )?);
        }
        if was_pending && request.status.is_terminal() {
            tx.push(self.counter_update(&request, -1, None)?);
        }

        let codes = match self.transact_with_audit("TransactWriteItems(commit)", tx, &events, Some(&request)).await? {
            TxOutcome::Committed(sealed) => return Ok(sealed),
            TxOutcome::Refused(codes) => codes,
        };
        if failed(&codes, slots.vote) {
            return Err(StoreError::Conflict(Conflict::DuplicateVote));
        }
        if failed(&codes, slots.request) {
            return Err(StoreError::Conflict(Conflict::Stale));
        }
        Err(StoreError::Other(format!("commit was cancelled ({})", codes.join(", "))))
    }

    /// `ADD n :delta` on a pending counter, optionally conditional.
    fn counter_update(
        &self,
        r: &ApprovalRequest,
        delta: i64,
        below: Option<u32>,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut u = Update::builder()
            .table_name(&self.tables.requests)
            .key(PK, s(pending_counter_pk(&r.requester.principal, &r.policy.name)))
            .key(SK, s(COUNTER_SK))
            .update_expression("ADD #n :delta")
            .expression_attribute_names("#n", COUNT)
            .expression_attribute_values(":delta", n(delta));
        if let Some(max) = below {
            u = u
                .condition_expression("attribute_not_exists(#n) OR #n < :max")
                .expression_attribute_values(":max", n(max));
        }
        let u = u.build().map_err(|e| build_error("counter update", e))?;
        Ok(TransactWriteItem::builder().update(u).build())
    }

    /// Counts a break-glass against its `max_per_day` (row 41): refused in the transaction once the
    /// principal's count for the UTC day reached it. The item outlives the day by a week (TTL), for audit.
    fn break_glass_counter(&self, r: &ApprovalRequest, max: u32) -> Result<TransactWriteItem, StoreError> {
        let gc = r.created_at.unix_seconds() + 8 * 86_400;
        let u = Update::builder()
            .table_name(&self.tables.requests)
            .key(PK, s(break_glass_counter_pk(&r.requester.principal, &r.break_glass_day())))
            .key(SK, s(COUNTER_SK))
            .update_expression("ADD #n :one SET #ttl = :ttl")
            .condition_expression("attribute_not_exists(#n) OR #n < :max")
            .expression_attribute_names("#n", COUNT)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ttl", n(gc))
            .expression_attribute_values(":max", n(max))
            .build()
            .map_err(|e| build_error("break-glass counter update", e))?;
        Ok(TransactWriteItem::builder().update(u).build())
    }

    /// Requests from one index, in key order (or reverse), following `LastEvaluatedKey` until `limit`.
    async fn query_requests(
        &self,
        index: &str,
        condition: &str,
        names: &[(&str, &str)],
        values: Item,
        forward: bool,
        limit: usize,
    ) -> Result<Vec<ApprovalRequest>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        while out.len() < limit {
            let mut q = self
                .client
                .query()
                .table_name(&self.tables.requests)
                .index_name(index)
                .key_condition_expression(condition)
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(forward)
                .limit(self.page_limit(limit - out.len()))
                .set_exclusive_start_key(start.take());
            for (k, v) in names {
                q = q.expression_attribute_names(*k, *v);
            }
            let page = q.send().await.map_err(|e| from_sdk("Query(requests)", e))?;
            for item in page.items() {
                out.push(items::request_from_item(item)?);
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// The status the item has now, read consistently, for a commit that does not assert one.
    async fn current_status(&self, id: &RequestId, expected_version: u64) -> Result<Status, StoreError> {
        let item = self.get_item("GetItem(request)", request_pk(id), REQUEST_SK).await?;
        let current = match item {
            Some(item) => items::request_from_item(&item)?,
            None => return Err(StoreError::Conflict(Conflict::Stale)),
        };
        if current.version != expected_version {
            return Err(StoreError::Conflict(Conflict::Stale));
        }
        Ok(current.status)
    }
}

#[async_trait]
impl RequestStore for DynamoStore {
    async fn create_request(
        &self,
        request: &ApprovalRequest,
        events: Vec<AuditDraft>,
        max_pending: u32,
    ) -> Result<CreateOutcome, StoreError> {
        if request.version != 1 {
            return Err(StoreError::Other(format!("a new request must have version 1, not {}", request.version)));
        }
        let pending = request.status == Status::Pending;
        let mut tx = Vec::new();
        let mut slots = Slots { request: Some(tx.len()), ..Slots::default() };
        tx.push(conditional_put(
            &self.tables.requests,
            items::request_item(request)?,
            Some("attribute_not_exists(#pk)"),
            &[("#pk", PK)],
            Item::new(),
        )?);
        if let Some(idem) = items::idempotency_item(request) {
            slots.idempotency = Some(tx.len());
            tx.push(conditional_put(
                &self.tables.requests,
                idem,
                Some("attribute_not_exists(#pk)"),
                &[("#pk", PK)],
                Item::new(),
            )?);
        }
        if pending {
            if max_pending == 0 {
                return Ok(CreateOutcome::TooManyPending);
            }
            slots.counter = Some(tx.len());
            tx.push(self.counter_update(request, 1, Some(max_pending))?);
        }
        if let Some(b) = &request.break_glass {
            slots.break_glass = Some(tx.len());
            tx.push(self.break_glass_counter(request, b.max_per_day)?);
        }

        let codes =
            match self.transact_with_audit("TransactWriteItems(create request)", tx, &events, Some(request)).await? {
                TxOutcome::Committed(_) => return Ok(CreateOutcome::Created),
                TxOutcome::Refused(codes) => codes,
            };
        // A retry with the same key answers with the first request, even when the cap is now reached.
        if failed(&codes, slots.idempotency) {
            let Some(key) = &request.idempotency_key else {
                return Err(StoreError::Other("idempotency slot without a key".into()));
            };
            let pk = idempotency_pk(&request.requester.principal, key);
            let Some(idem) = self.get_item("GetItem(idempotency)", pk.clone(), IDEMPOTENCY_SK).await? else {
                // Taken a moment ago, gone now: only TTL deletes these, long after the request expired.
                return Err(StoreError::Corrupt(format!("idempotency item {pk} vanished while it was read")));
            };
            let id = items::idempotency_request_id(&idem)?;
            return match self.get_request(&id).await? {
                Some(existing) => Ok(CreateOutcome::Existing(existing)),
                None => Err(StoreError::Corrupt(format!(
                    "idempotency item {pk} points at request {id}, which does not exist"
                ))),
            };
        }
        if failed(&codes, slots.counter) {
            return Ok(CreateOutcome::TooManyPending);
        }
        if failed(&codes, slots.break_glass) {
            return Ok(CreateOutcome::BreakGlassLimit);
        }
        if failed(&codes, slots.request) {
            return Err(StoreError::Other(format!("request {} already exists", request.id)));
        }
        Err(StoreError::Other(format!("create request was cancelled ({})", codes.join(", "))))
    }

    async fn get_request(&self, id: &RequestId) -> Result<Option<ApprovalRequest>, StoreError> {
        self.get_item("GetItem(request)", request_pk(id), REQUEST_SK)
            .await?
            .map(|item| items::request_from_item(&item))
            .transpose()
    }

    /// One `BatchGetItem` across the requests and policies tables.
    async fn get_request_and_generation(
        &self,
        id: &RequestId,
    ) -> Result<(Option<ApprovalRequest>, Option<u64>), StoreError> {
        let (request, generation) = self.request_and_generation(id).await?;
        Ok((request, Some(generation)))
    }

    /// A version-only commit (notification bookkeeping) first assumes the status does not change, which
    /// the condition asserts, so it needs no read. Only when that is refused does it read the status the
    /// request has, to tell a lost race from a commit that does change the status.
    async fn commit(&self, commit: Commit) -> Result<Vec<AuditEvent>, StoreError> {
        if commit.guard != Guard::VersionOnly {
            return self.commit_over(commit, None).await;
        }
        let unchanged = commit.request.status;
        match self.commit_over(commit.clone(), Some(unchanged)).await {
            Err(StoreError::Conflict(Conflict::Stale)) => {}
            other => return other,
        }
        let old = self.current_status(&commit.request.id, commit.expected_version).await?;
        if old == unchanged {
            return Err(StoreError::Conflict(Conflict::Stale)); // it moved between the two
        }
        self.commit_over(commit, Some(old)).await
    }

    async fn list_pending(&self, limit: usize) -> Result<Vec<ApprovalRequest>, StoreError> {
        let mut values = Item::new();
        values.insert(":pk".into(), s(PENDING_GSI_PK));
        self.query_requests(INDEX_PENDING, "#pk = :pk", &[("#pk", GSI2_PK)], values, true, limit).await
    }

    async fn list_notification_due(&self, now: Timestamp, limit: usize) -> Result<Vec<ApprovalRequest>, StoreError> {
        let mut values = Item::new();
        values.insert(":pk".into(), s(DUE_GSI_PK));
        // Every key due at or before `now` sorts below the bare time key of `now + 1 ms`.
        values.insert(":bound".into(), s(time_key(now.plus_millis(1))));
        self.query_requests(
            INDEX_NOTIFY_DUE,
            "#pk = :pk AND #sk < :bound",
            &[("#pk", GSI3_PK), ("#sk", GSI3_SK)],
            values,
            true,
            limit,
        )
        .await
    }

    async fn list_by_principal(
        &self,
        principal: &str,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<ApprovalRequest>, StoreError> {
        let mut values = Item::new();
        values.insert(":pk".into(), AttributeValue::S(principal.to_string()));
        values.insert(":since".into(), s(time_key(since)));
        self.query_requests(
            INDEX_BY_PRINCIPAL,
            "#pk = :pk AND #sk >= :since",
            &[("#pk", GSI1_PK), ("#sk", GSI1_SK)],
            values,
            false,
            limit,
        )
        .await
    }

    /// Counted from the `by-principal` index (see [`DynamoStore::count_same_kind`]), then one consistent
    /// `GetItem` for the newest match.
    async fn earlier_of_same_kind(
        &self,
        r: &ApprovalRequest,
        since: Timestamp,
        limit: usize,
    ) -> Result<SameKind, StoreError> {
        let Some((count, newest)) = self.count_same_kind(r, since, limit).await? else {
            let candidates = self.list_by_principal(&r.requester.principal, since, limit).await?;
            return Ok(SameKind::among(r, &candidates));
        };
        let newest = match newest {
            None => None,
            Some(m) => Some(self.read_newest(&m.pk).await?),
        };
        Ok(SameKind { count, newest })
    }

    /// Counted like [`Self::earlier_of_same_kind`], with the newest match's status and expiry from the same
    /// index entries: no document is read.
    async fn same_kind_summary(
        &self,
        r: &ApprovalRequest,
        since: Timestamp,
        limit: usize,
    ) -> Result<SameKindSummary, StoreError> {
        let Some((count, newest)) = self.count_same_kind(r, since, limit).await? else {
            let candidates = self.list_by_principal(&r.requester.principal, since, limit).await?;
            let same = SameKind::among(r, &candidates);
            return Ok(SameKindSummary { count: same.count, newest: same.newest.as_ref().map(Outcome::of) });
        };
        let newest = match newest {
            None => None,
            Some(Match { outcome: Some(o), .. }) => Some(o),
            Some(m) => Some(Outcome::of(&self.read_newest(&m.pk).await?)),
        };
        Ok(SameKindSummary { count, newest })
    }
}
