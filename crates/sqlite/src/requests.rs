//! [`RequestStore`] on the embedded store: creating a request (idempotency key, pending limit), committing
//! a state change with its vote and audit events as one conditional write, and the queries.
//!
//! A commit must never write unless its condition (expected version and guard) holds in the same
//! transaction, and a second vote by the same user is always `DuplicateVote`: check-then-write outside the
//! writer's transaction would let two approvers both win.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use countersign_core::domain::{ApprovalRequest, AuditDraft, AuditEvent, RequestId, Status, Timestamp};
use countersign_core::ports::{Commit, Conflict, CreateOutcome, Guard, RequestStore, SameKind, StoreError};

use crate::audit::append_tx;
use crate::error::Sql;
use crate::outbox::outbox_tx;
use crate::rows::{collect, limit, parse_request, to_i64, to_json, RequestRow};
use crate::EmbeddedStore;

fn get_request_tx(tx: &Connection, id: &str) -> Result<Option<ApprovalRequest>, StoreError> {
    let doc: Option<String> = tx
        .prepare_cached("SELECT doc FROM requests WHERE id = ?1")
        .sql()?
        .query_row([id], |r| r.get(0))
        .optional()
        .sql()?;
    doc.map(|d| parse_request(id, &d)).transpose()
}

fn query_requests(
    tx: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<ApprovalRequest>, StoreError> {
    let mut stmt = tx.prepare_cached(sql).sql()?;
    let rows = stmt.query_map(params, |r| Ok((r.get(0)?, r.get(1)?))).sql()?;
    collect(rows, parse_request)
}

fn create_request_tx(
    tx: &Connection,
    request: &ApprovalRequest,
    events: Vec<AuditDraft>,
    max_pending: u32,
) -> Result<CreateOutcome, StoreError> {
    if request.version != 1 {
        return Err(StoreError::Other(format!("a new request must have version 1, not {}", request.version)));
    }
    let row = RequestRow::of(request)?;
    if let Some(key) = &request.idempotency_key {
        let existing: Option<String> = tx
            .prepare_cached("SELECT request_id FROM idempotency WHERE principal = ?1 AND idempotency_key = ?2")
            .sql()?
            .query_row(params![row.principal, key.as_str()], |r| r.get(0))
            .optional()
            .sql()?;
        if let Some(id) = existing {
            return match get_request_tx(tx, &id)? {
                Some(r) => Ok(CreateOutcome::Existing(r)),
                None => Err(StoreError::Corrupt(format!(
                    "idempotency key of {} points at missing request {id}",
                    row.principal
                ))),
            };
        }
    }
    // Only a new pending request can exceed the number of pending requests.
    if request.status == Status::Pending {
        let pending: i64 = tx
            .prepare_cached("SELECT count(*) FROM requests WHERE principal = ?1 AND policy = ?2 AND status = 'pending'")
            .sql()?
            .query_row(params![row.principal, row.policy], |r| r.get(0))
            .sql()?;
        if pending >= i64::from(max_pending) {
            return Ok(CreateOutcome::TooManyPending);
        }
    }
    if let Some(b) = &request.break_glass {
        // The writer's transaction is the only one: the read and the increment cannot interleave with another.
        let day = request.break_glass_day();
        let uses: i64 = tx
            .prepare_cached("SELECT uses FROM break_glass_uses WHERE principal = ?1 AND day = ?2")
            .sql()?
            .query_row(params![row.principal, day], |r| r.get(0))
            .optional()
            .sql()?
            .unwrap_or(0);
        if uses >= i64::from(b.max_per_day) {
            return Ok(CreateOutcome::BreakGlassLimit);
        }
        tx.prepare_cached(
            "INSERT INTO break_glass_uses (principal, day, uses) VALUES (?1, ?2, 1)
             ON CONFLICT (principal, day) DO UPDATE SET uses = uses + 1",
        )
        .sql()?
        .execute(params![row.principal, day])
        .sql()?;
    }
    let taken: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM requests WHERE id = ?1)")
        .sql()?
        .query_row([&row.id], |r| r.get(0))
        .sql()?;
    if taken {
        return Err(StoreError::Other(format!("request id {} already exists", row.id)));
    }
    tx.prepare_cached(
        "INSERT INTO requests (id, doc, status, version, expires_at, principal, policy, created_at, notify_due,
             action, environment)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .sql()?
    .execute(params![
        row.id,
        row.doc,
        row.status,
        row.version,
        row.expires_at,
        row.principal,
        row.policy,
        row.created_at,
        row.notify_due,
        row.action,
        row.environment,
    ])
    .sql()?;
    if let Some(key) = &request.idempotency_key {
        tx.prepare_cached("INSERT INTO idempotency (principal, idempotency_key, request_id) VALUES (?1, ?2, ?3)")
            .sql()?
            .execute(params![row.principal, key.as_str(), row.id])
            .sql()?;
    }
    let sealed = append_tx(tx, events)?;
    outbox_tx(tx, &sealed, request)?;
    Ok(CreateOutcome::Created)
}

pub(crate) fn commit_tx(tx: &Connection, c: Commit) -> Result<Vec<AuditEvent>, StoreError> {
    if c.expected_version.checked_add(1) != Some(c.request.version) {
        return Err(StoreError::Other(format!(
            "a commit from version {} must write version {}, not {}",
            c.expected_version,
            c.expected_version.saturating_add(1),
            c.request.version
        )));
    }
    if let Some(v) = &c.vote {
        if v.request_id != c.request.id {
            return Err(StoreError::Other(format!(
                "a vote on {} cannot be committed with request {}",
                v.request_id, c.request.id
            )));
        }
    }
    let row = RequestRow::of(&c.request)?;
    let stored: Option<(String, i64, i64)> = tx
        .prepare_cached("SELECT status, version, expires_at FROM requests WHERE id = ?1")
        .sql()?
        .query_row([&row.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .sql()?;
    // A second vote by the same user is reported as such even when the request also changed meanwhile.
    if let Some(v) = &c.vote {
        let voted: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM votes WHERE request_id = ?1 AND user_id = ?2)")
            .sql()?
            .query_row(params![row.id, v.user_id.as_str()], |r| r.get(0))
            .sql()?;
        if voted {
            return Err(StoreError::Conflict(Conflict::DuplicateVote));
        }
    }
    let Some((status, version, expires_at)) = stored else {
        return Err(StoreError::Conflict(Conflict::Stale));
    };
    let expected = to_i64(c.expected_version, "expected version")?;
    let pending = status == Status::Pending.as_str();
    let guard_holds = match c.guard {
        Guard::OpenAt(t) => pending && expires_at > t.unix_millis(),
        Guard::ExpiredAt(t) => pending && expires_at <= t.unix_millis(),
        Guard::Approved => status == Status::Approved.as_str(),
        Guard::VersionOnly => true,
    };
    if version != expected || !guard_holds {
        return Err(StoreError::Conflict(Conflict::Stale));
    }
    let changed = tx
        .prepare_cached(
            "UPDATE requests SET doc = ?2, status = ?3, version = ?4, expires_at = ?5, principal = ?6,
                 policy = ?7, created_at = ?8, notify_due = ?9, action = ?11, environment = ?12
             WHERE id = ?1 AND version = ?10",
        )
        .sql()?
        .execute(params![
            row.id,
            row.doc,
            row.status,
            row.version,
            row.expires_at,
            row.principal,
            row.policy,
            row.created_at,
            row.notify_due,
            expected,
            row.action,
            row.environment,
        ])
        .sql()?;
    if changed != 1 {
        return Err(StoreError::Conflict(Conflict::Stale));
    }
    if let Some(v) = &c.vote {
        tx.prepare_cached("INSERT INTO votes (request_id, user_id, doc) VALUES (?1, ?2, ?3)")
            .sql()?
            .execute(params![row.id, v.user_id.as_str(), to_json(v, "vote")?])
            .sql()?;
    }
    let sealed = append_tx(tx, c.events)?;
    outbox_tx(tx, &sealed, &c.request)?;
    Ok(sealed)
}

#[async_trait]
impl RequestStore for EmbeddedStore {
    async fn create_request(
        &self,
        request: &ApprovalRequest,
        events: Vec<AuditDraft>,
        max_pending: u32,
    ) -> Result<CreateOutcome, StoreError> {
        let request = request.clone();
        self.write(move |tx| create_request_tx(tx, &request, events, max_pending)).await
    }

    async fn get_request(&self, id: &RequestId) -> Result<Option<ApprovalRequest>, StoreError> {
        let id = id.to_string();
        self.read(move |tx| get_request_tx(tx, &id)).await
    }

    /// Both from one read transaction.
    async fn get_request_and_generation(
        &self,
        id: &RequestId,
    ) -> Result<(Option<ApprovalRequest>, Option<u64>), StoreError> {
        let id = id.to_string();
        self.read(move |tx| Ok((get_request_tx(tx, &id)?, Some(crate::policies::generation_tx(tx)?)))).await
    }

    async fn commit(&self, commit: Commit) -> Result<Vec<AuditEvent>, StoreError> {
        self.write(move |tx| commit_tx(tx, commit)).await
    }

    async fn list_pending(&self, limit_n: usize) -> Result<Vec<ApprovalRequest>, StoreError> {
        self.read(move |tx| {
            query_requests(
                tx,
                "SELECT id, doc FROM requests WHERE status = 'pending'
                 ORDER BY created_at, id LIMIT ?1",
                [limit(limit_n)],
            )
        })
        .await
    }

    async fn list_notification_due(&self, now: Timestamp, limit_n: usize) -> Result<Vec<ApprovalRequest>, StoreError> {
        self.read(move |tx| {
            query_requests(
                tx,
                "SELECT id, doc FROM requests WHERE notify_due IS NOT NULL AND notify_due <= ?1
                 ORDER BY notify_due, id LIMIT ?2",
                [now.unix_millis(), limit(limit_n)],
            )
        })
        .await
    }

    async fn list_by_principal(
        &self,
        principal: &str,
        since: Timestamp,
        limit_n: usize,
    ) -> Result<Vec<ApprovalRequest>, StoreError> {
        let principal = principal.to_string();
        self.read(move |tx| {
            query_requests(
                tx,
                "SELECT id, doc FROM requests WHERE principal = ?1 AND created_at >= ?2
                 ORDER BY created_at DESC, id DESC LIMIT ?3",
                params![principal, since.unix_millis(), limit(limit_n)],
            )
        })
        .await
    }

    /// Counted on the indexed columns: no document is parsed but the newest one's.
    async fn earlier_of_same_kind(
        &self,
        r: &ApprovalRequest,
        since: Timestamp,
        limit_n: usize,
    ) -> Result<SameKind, StoreError> {
        let (principal, action, environment) =
            (r.requester.principal.clone(), r.action.as_str().to_string(), r.environment.as_str().to_string());
        let (created_at, id) = (r.created_at.unix_millis(), r.id.to_string());
        self.read(move |c| {
            // Counted inside SQLite over the covering index (no row leaves it), then the newest match picked
            // with one index seek: if any match is among the newest `limit`, the newest match is too.
            let args = params![principal, since.unix_millis(), limit(limit_n), action, environment, created_at, id];
            let count: i64 = c
                .prepare_cached(
                    "SELECT count(*) FROM (
                         SELECT id, created_at, action, environment FROM requests
                         WHERE principal = ?1 AND created_at >= ?2
                         ORDER BY created_at DESC, id DESC LIMIT ?3)
                     WHERE action = ?4 AND environment = ?5 AND (created_at < ?6 OR (created_at = ?6 AND id < ?7))",
                )
                .sql()?
                .query_row(args, |row| row.get(0))
                .sql()?;
            let newest: Option<String> = if count == 0 {
                None
            } else {
                c.prepare_cached(
                    "SELECT id FROM requests
                     WHERE principal = ?1 AND created_at >= ?2 AND action = ?4 AND environment = ?5
                       AND (created_at < ?6 OR (created_at = ?6 AND id < ?7))
                     ORDER BY created_at DESC, id DESC LIMIT min(?3, 1)",
                )
                .sql()?
                .query_row(args, |row| row.get(0))
                .optional()
                .sql()?
            };
            let newest = match newest {
                Some(newest) => Some(
                    get_request_tx(c, &newest)?
                        .ok_or_else(|| StoreError::Other(format!("request {newest} vanished in a read")))?,
                ),
                None => None,
            };
            Ok(SameKind { count: u32::try_from(count).unwrap_or(u32::MAX), newest })
        })
        .await
    }
}
