//! The small capabilities the services need from the outside world. Adapters implement them; services only
//! ever see `Arc<dyn Port>`.

#[cfg(any(test, feature = "testing"))]
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::events::{DecisionEvent, OutboxEntry};
use crate::domain::receipt::Jwk;
use crate::domain::{ApprovalRequest, AuditDraft, AuditEvent, Policy, PolicyName, RequestId, Status, Timestamp, Vote};

/// Failures of a store. `Unavailable` is retryable and maps to `503` + `Retry-After`; `Conflict` means a
/// conditional write lost and the caller must re-read; `Contention` means it lost that race every time it
/// retried (retryable, like `Unavailable`); `Corrupt` is an item that no longer parses.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("conditional write failed: {0:?}")]
    Conflict(Conflict),
    #[error("too much contention on {0}")]
    Contention(&'static str),
    #[error("stored item is corrupt: {0}")]
    Corrupt(String),
    #[error("store error: {0}")]
    Other(String),
}

impl StoreError {
    pub fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unavailable(Box::new(e))
    }
}

/// Which condition of a [`Commit`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// The request changed since it was read (version, status or expiry no longer as expected): re-read.
    Stale,
    /// This Slack user already has a vote on this request.
    DuplicateVote,
}

/// What must still hold for a commit to apply, besides the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Status is `pending` and `expires_at > t` (votes, cancel).
    OpenAt(Timestamp),
    /// Status is `pending` and `expires_at <= t` (the sweeper's expiry).
    ExpiredAt(Timestamp),
    /// Status is `approved` (redemption, the sweeper's unused mark).
    Approved,
    /// Only the version (notification bookkeeping).
    VersionOnly,
}

/// One atomic change to a request: new state, at most one new vote, and the audit records, all or nothing.
#[derive(Debug, Clone)]
pub struct Commit {
    pub expected_version: u64,
    /// The new state; its `version` must be `expected_version + 1`.
    pub request: ApprovalRequest,
    /// Inserted only if this user has no vote on the request yet.
    pub vote: Option<Vote>,
    pub events: Vec<AuditDraft>,
    pub guard: Guard,
}

/// Outcome of creating a request.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // rare path; boxing would only add noise at every match
pub enum CreateOutcome {
    Created,
    /// The same principal already used this idempotency key: here is that request (compare `body_hash`).
    Existing(ApprovalRequest),
    /// The principal already has `max_pending` pending requests under this policy.
    TooManyPending,
    /// A break-glass over its `max_per_day` for this principal and UTC day ([`ApprovalRequest::break_glass_day`]).
    BreakGlassLimit,
}

/// Every policy, as one read of the policy set saw it, and the set's generation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySet {
    /// Raised by one in the same write as every committed [`PolicyStore::put_policy`] and
    /// [`PolicyStore::delete_policy`] (0 before the first): a set of the generation a later read finds holds
    /// every change committed before that read.
    pub generation: u64,
    /// Sorted by name.
    pub policies: Vec<Policy>,
}

#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// Every policy, sorted by name.
    async fn list_policies(&self) -> Result<Vec<Policy>, StoreError> {
        Ok(self.policy_set().await?.policies)
    }
    /// The generation of the policy set (see [`PolicySet::generation`]), read strongly consistently.
    async fn policy_generation(&self) -> Result<u64, StoreError>;
    /// Every policy with the generation, from one place (one partition, never a scan of a table).
    async fn policy_set(&self) -> Result<PolicySet, StoreError>;
    async fn get_policy(&self, name: &PolicyName) -> Result<Option<Policy>, StoreError>;
    /// Creates or replaces one policy and appends its `policy.changed` record, atomically.
    async fn put_policy(&self, policy: &Policy, event: AuditDraft) -> Result<(), StoreError>;
    /// Deletes one policy and appends its `policy.deleted` record, atomically.
    async fn delete_policy(&self, name: &PolicyName, event: AuditDraft) -> Result<(), StoreError>;
}

#[async_trait]
pub trait RequestStore: Send + Sync {
    /// Writes a new request (version 1) with its audit records. Atomically: refuses a second request for
    /// the same (principal, idempotency key), enforces `max_pending` per (principal, policy) for pending
    /// requests, and for a break-glass counts it against `break_glass.max_per_day` per (principal, UTC day).
    async fn create_request(
        &self,
        request: &ApprovalRequest,
        events: Vec<AuditDraft>,
        max_pending: u32,
    ) -> Result<CreateOutcome, StoreError>;

    async fn get_request(&self, id: &RequestId) -> Result<Option<ApprovalRequest>, StoreError>;

    /// [`Self::get_request`] and, from the same round trip, the policy generation
    /// ([`PolicyStore::policy_generation`], as strongly consistent) when this store also holds the policies of
    /// the [`Stores`] it serves in (one adapter behind every port, as [`Stores::from_one`] builds them).
    /// `None` leaves the generation to the policy store: this default, for stores that cannot fold the reads.
    async fn get_request_and_generation(
        &self,
        id: &RequestId,
    ) -> Result<(Option<ApprovalRequest>, Option<u64>), StoreError> {
        Ok((self.get_request(id).await?, None))
    }

    /// Applies a [`Commit`] with all its conditions, or nothing (`StoreError::Conflict`). Returns the audit
    /// records as the chain sealed them (a receipt points at its `request.redeemed` record).
    async fn commit(&self, commit: Commit) -> Result<Vec<AuditEvent>, StoreError>;

    /// Pending requests, oldest first (sweeper: expiry and reminders).
    async fn list_pending(&self, limit: usize) -> Result<Vec<ApprovalRequest>, StoreError>;

    /// Requests whose Slack message must still be posted or updated, due at or before `now`.
    async fn list_notification_due(&self, now: Timestamp, limit: usize) -> Result<Vec<ApprovalRequest>, StoreError>;

    /// Requests of one principal (identity) created at or after `since`, newest first.
    async fn list_by_principal(
        &self,
        principal: &str,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<ApprovalRequest>, StoreError>;

    /// The history shown in `r`'s message: among the newest `limit` requests of its principal created at or
    /// after `since`, those with its action and environment created before it (by `(created_at, id)`).
    /// This default reads them all with [`Self::list_by_principal`]; a store may count them where they are.
    async fn earlier_of_same_kind(
        &self,
        r: &ApprovalRequest,
        since: Timestamp,
        limit: usize,
    ) -> Result<SameKind, StoreError> {
        let candidates = self.list_by_principal(&r.requester.principal, since, limit).await?;
        Ok(SameKind::among(r, &candidates))
    }

    /// [`Self::earlier_of_same_kind`] as the history line needs it. This default reads the newest request
    /// whole; a store may read only its status, expiry and creation time.
    async fn same_kind_summary(
        &self,
        r: &ApprovalRequest,
        since: Timestamp,
        limit: usize,
    ) -> Result<SameKindSummary, StoreError> {
        let same = self.earlier_of_same_kind(r, since, limit).await?;
        Ok(SameKindSummary { count: same.count, newest: same.newest.as_ref().map(Outcome::of) })
    }
}

/// What a message's history line needs of [`SameKind`]: the count, and how the newest of them stands.
#[derive(Debug, Clone, PartialEq)]
pub struct SameKindSummary {
    pub count: u32,
    pub newest: Option<Outcome>,
}

/// A request's standing as its history line shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub status: Status,
    pub expires_at: Timestamp,
    pub created_at: Timestamp,
}

impl Outcome {
    pub fn of(r: &ApprovalRequest) -> Self {
        Self { status: r.status, expires_at: r.expires_at, created_at: r.created_at }
    }

    /// The status a reader sees at `now`: a pending request past its expiry reads `expired`.
    pub fn effective_status(&self, now: Timestamp) -> Status {
        if self.status == Status::Pending && now >= self.expires_at {
            Status::Expired
        } else {
            self.status
        }
    }
}

/// Earlier requests of the same kind as one request: how many, and the newest of them.
#[derive(Debug, Clone, PartialEq)]
pub struct SameKind {
    pub count: u32,
    pub newest: Option<ApprovalRequest>,
}

impl SameKind {
    /// Those of `candidates` with `r`'s action and environment created before `r`.
    pub fn among(r: &ApprovalRequest, candidates: &[ApprovalRequest]) -> Self {
        let same = candidates.iter().filter(|o| {
            o.action == r.action && o.environment == r.environment && (o.created_at, o.id) < (r.created_at, r.id)
        });
        let (count, newest) = same.fold((0u32, None::<&ApprovalRequest>), |(n, newest), o| {
            let newer = newest.is_none_or(|b| (o.created_at, o.id) > (b.created_at, b.id));
            (n.saturating_add(1), if newer { Some(o) } else { newest })
        });
        Self { count, newest: newest.cloned() }
    }
}

#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends records on their own (refusals, rejected callbacks), chained after the current last one.
    async fn append(&self, events: Vec<AuditDraft>) -> Result<Vec<AuditEvent>, StoreError>;
    /// Records with `seq >= from_seq`, in chain order, at most `limit` (page by passing last seq + 1).
    async fn read_from(&self, from_seq: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError>;
    /// All records of one request, in chain order.
    async fn for_request(&self, id: &RequestId) -> Result<Vec<AuditEvent>, StoreError>;
    /// The last record of the chain, if any.
    async fn last(&self) -> Result<Option<AuditEvent>, StoreError>;
}

/// Everything a service needs from storage, as one handle.
#[derive(Clone)]
pub struct Stores {
    pub policies: Arc<dyn PolicyStore>,
    pub requests: Arc<dyn RequestStore>,
    pub audit: Arc<dyn AuditLog>,
    /// The decision events owed (issue 19), written by the request store's own writes.
    pub outbox: Arc<dyn EventOutbox>,
    /// This process's parsed policy set (shared by every clone of these stores).
    pub policy_cache: Arc<PolicyCache>,
}

impl Stores {
    /// One adapter that implements all four ports.
    pub fn from_one<S: PolicyStore + RequestStore + AuditLog + EventOutbox + 'static>(s: Arc<S>) -> Self {
        Self { policies: s.clone(), requests: s.clone(), audit: s.clone(), outbox: s, policy_cache: Arc::default() }
    }

    /// The policy set as of now: holds every policy change committed before this call (a strongly
    /// consistent read of the generation, then the cached set if it is of that generation).
    pub async fn current_policies(&self) -> Result<Arc<PolicySet>, StoreError> {
        let generation = self.policies.policy_generation().await?;
        self.policy_cache.at(&*self.policies, generation).await
    }

    /// The request and [`Self::current_policies`], the generation read in the same round trip as the
    /// request where the store can ([`RequestStore::get_request_and_generation`]).
    pub async fn request_and_policies(
        &self,
        id: &RequestId,
    ) -> Result<(Option<ApprovalRequest>, Arc<PolicySet>), StoreError> {
        let (request, generation) = self.requests.get_request_and_generation(id).await?;
        let generation = match generation {
            Some(g) => g,
            None => self.policies.policy_generation().await?,
        };
        Ok((request, self.policy_cache.at(&*self.policies, generation).await?))
    }
}

/// The parsed policy set a process keeps between calls, re-read only when the generation moved.
///
/// Why a stale authorization cannot come of it: every policy change raises the generation in the same
/// atomic write. A caller reads the generation strongly consistently after its call arrived, so it sees at
/// least the generation of every change that finished before; the cached set is used only when it is of
/// exactly that generation, and a set is only ever labelled with a generation read *before* the read that
/// loaded it (a read of the set may show part of a change still being written, never less than what had
/// finished: such a set is relabelled by the next check that sees the generation move).
#[derive(Debug, Default)]
pub struct PolicyCache(std::sync::Mutex<Option<Arc<PolicySet>>>);

impl PolicyCache {
    /// The set of generation `seen` (read strongly consistently by the caller just before): the cached one
    /// when it is of that generation, else re-read from `store` and kept.
    pub async fn at(&self, store: &dyn PolicyStore, seen: u64) -> Result<Arc<PolicySet>, StoreError> {
        if let Some(set) = self.last().filter(|s| s.generation == seen) {
            return Ok(set);
        }
        let mut loaded = store.policy_set().await?;
        loaded.generation = loaded.generation.min(seen);
        let loaded = Arc::new(loaded);
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(loaded.clone());
        Ok(loaded)
    }

    /// The set last loaded, whatever its generation (`None` before the first load).
    pub fn last(&self) -> Option<Arc<PolicySet>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system clock, truncated to milliseconds.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp::from_unix_millis(ms)
    }
}

/// A clock tests set by hand (feature `testing`: never linked into what ships).
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

#[cfg(any(test, feature = "testing"))]
impl ManualClock {
    pub fn new(t: Timestamp) -> Self {
        Self(AtomicI64::new(t.unix_millis()))
    }
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.unix_millis(), Ordering::SeqCst);
    }
    pub fn advance_seconds(&self, s: i64) {
        self.0.fetch_add(s * 1000, Ordering::SeqCst);
    }
}

#[cfg(any(test, feature = "testing"))]
impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.0.load(Ordering::SeqCst))
    }
}

/// Where a request's message was posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedMessage {
    pub channel: String,
    pub ts: String,
}

/// A failed call to the chat system. Never carries tokens or payloads.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct NotifyError {
    /// Worth trying again later (timeouts, 5xx, rate limits).
    pub retryable: bool,
    /// The service asked us to wait this long (Slack's `Retry-After`).
    pub retry_after: Option<std::time::Duration>,
    pub message: String,
}

/// Everything needed to render a request's message.
#[derive(Debug, Clone)]
pub struct MessageContext<'a> {
    pub request: &'a ApprovalRequest,
    /// The policy as it is now (approver mentions); `None` if it was removed.
    pub policy: Option<&'a Policy>,
    pub history: &'a crate::domain::History,
    pub sensitive: bool,
    pub now: Timestamp,
}

/// The chat system (Slack) as the services need it.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Posts the request's message to `request.notification.channel`.
    async fn post_request(&self, ctx: &MessageContext<'_>) -> Result<PostedMessage, NotifyError>;
    /// Looks in the request's channel, from `since` on, for a message of ours that already carries this
    /// request (an earlier post whose (channel, ts) was never recorded). `Ok(None)`: searched to `since`,
    /// there is none. An error that is not retryable means it cannot be known (no history scope, history
    /// too long to search within bounds).
    async fn find_request_message(
        &self,
        request: &ApprovalRequest,
        since: Timestamp,
    ) -> Result<Option<PostedMessage>, NotifyError>;
    /// Re-renders the message in place (progress, final outcome, no buttons once decided).
    async fn update_request(&self, ctx: &MessageContext<'_>, posted: &PostedMessage) -> Result<(), NotifyError>;
    /// Posts a reminder in the message's thread.
    async fn remind(&self, ctx: &MessageContext<'_>, posted: &PostedMessage) -> Result<(), NotifyError>;
    /// Members of a user group (implementations cache briefly).
    async fn group_members(
        &self,
        group: &crate::domain::SlackGroupId,
    ) -> Result<Vec<crate::domain::SlackUserId>, NotifyError>;
    /// The account as the chat system's directory describes it now (Slack's `users.info`), for the
    /// eligibility check at vote time (implementations cache briefly, at most 60 s).
    async fn user_account(&self, user: &crate::domain::SlackUserId)
        -> Result<crate::domain::SlackAccount, NotifyError>;
}

/// A secret value: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret store could not be read: callbacks answer 503, never accept.
    #[error("secret store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The secret exists but does not hold what it should (`{"signing_secret"}`, `{"bot_token"}`).
    #[error("secret is malformed: {0}")]
    Malformed(String),
    /// This function was not given the signing secret's id (request-api and sweeper never are).
    #[error("this function is not configured with the signing secret")]
    NotConfigured,
}

/// The signing secrets read for one verification, by stage.
#[derive(Debug, Clone, Default)]
pub struct SigningSecrets {
    /// To try, in order: a match authenticates the callback.
    pub accepted: Vec<(String, SecretString)>,
    /// Still on record but no longer valid (`AWSPREVIOUS` after its grace period, row 27). A match never
    /// authenticates anything: it only names the refusal (`previous_secret_expired`), because a callback
    /// signed with a retired secret is the mark of a leaked one.
    pub retired: Vec<(String, SecretString)>,
}

/// The Slack credentials (bot token, signing secrets by rotation stage).
#[async_trait]
pub trait SlackSecrets: Send + Sync {
    /// Signing secrets to try, in order (`AWSCURRENT` first, then `AWSPREVIOUS` when it exists and is still
    /// inside its grace period at `now`), labelled by stage. With `refresh`, bypasses the cache
    /// (implementations rate-limit this).
    async fn signing_secrets(&self, refresh: bool, now: Timestamp) -> Result<Vec<(String, SecretString)>, SecretError>;
    /// [`Self::signing_secrets`] and, from the same read, the retired ones (see [`SigningSecrets`]).
    /// Implementations that know no retired secrets need not override it.
    async fn verification_secrets(&self, refresh: bool, now: Timestamp) -> Result<SigningSecrets, SecretError> {
        Ok(SigningSecrets { accepted: self.signing_secrets(refresh, now).await?, retired: Vec::new() })
    }
    /// The current bot token.
    async fn bot_token(&self) -> Result<SecretString, SecretError>;
}

/// A failure of the signing key.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key service could not be reached or throttled us: retryable (`503`).
    #[error("the signing key is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The key exists but cannot make ES256 signatures (wrong spec or usage, disabled, not allowed).
    #[error("the signing key is unusable: {0}")]
    Unusable(String),
}

/// The key receipts (and checkpoints) are signed with: a KMS asymmetric key in AWS, a local P-256 key in
/// local mode. ES256 only.
#[async_trait]
pub trait Signer: Send + Sync {
    /// The public key signatures are made with now; its `kid` goes into the JWS header.
    async fn current_key(&self) -> Result<Jwk, SignError>;
    /// The ES256 signature of `message` (ECDSA P-256 over SHA-256(message)) as the 64-byte `r‖s`.
    async fn sign(&self, message: &[u8]) -> Result<[u8; 64], SignError>;
    /// Every key whose signatures must still verify, the current one first (rotated keys stay listed).
    async fn public_keys(&self) -> Result<Vec<Jwk>, SignError>;
}

/// Where checkpoints are kept (issue 17): an S3 bucket under Object Lock in AWS, a directory in local mode.
/// Objects are never overwritten or deleted by Countersign.
#[async_trait]
pub trait CheckpointSink: Send + Sync {
    /// Stores the JWS of checkpoint `seq` at `checkpoint::object_key(seq)`.
    async fn put(&self, seq: u64, jws: &str) -> Result<(), StoreError>;
    /// The newest checkpoint's JWS, if any.
    async fn latest(&self) -> Result<Option<String>, StoreError>;
    /// Every checkpoint's JWS, oldest first (for `audit verify --checkpoints`).
    async fn all(&self) -> Result<Vec<(u64, String)>, StoreError>;
}

/// The event outbox (issue 19): entries the stores write in the same atomic write as each event-worthy
/// change ([`crate::domain::events::event_of`]), read and deleted by the sweeper's relay once published.
#[async_trait]
pub trait EventOutbox: Send + Sync {
    /// The oldest `limit` entries, in `seq` order (strongly consistent: every committed entry is seen).
    async fn due(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError>;
    /// Deletes the entries of these `seq`s (absent ones are no error: a concurrent relay deleted them).
    async fn delete(&self, seqs: &[u64]) -> Result<(), StoreError>;
}

/// A failed publication, of one event or of the whole call. Never carries payloads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct PublishError {
    /// The service's error code (`ThrottlingException`, `InternalFailure`) or a transport cause.
    pub code: String,
    pub message: String,
}

/// Where decision events go: EventBridge in AWS, `events.jsonl` (and a webhook) in local mode.
#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// At most [`MAX_EVENTS_PER_PUBLISH`] events, in `seq` order. `Err`: nothing is known to be published.
    /// `Ok`: one result per event, in order (an event may be refused while others are accepted).
    async fn publish(&self, events: &[DecisionEvent]) -> Result<Vec<Result<(), PublishError>>, PublishError>;
}

/// EventBridge's limit on entries per `PutEvents`.
pub const MAX_EVENTS_PER_PUBLISH: usize = 10;

#[cfg(test)]
mod cache_tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicU64, AtomicUsize};

    use super::*;

    /// A policy store whose set is always of generation `at`, counting its loads.
    #[derive(Default)]
    struct Counting {
        at: AtomicU64,
        loads: AtomicUsize,
    }

    #[async_trait]
    impl PolicyStore for Counting {
        async fn policy_generation(&self) -> Result<u64, StoreError> {
            Ok(self.at.load(Ordering::SeqCst))
        }
        async fn policy_set(&self) -> Result<PolicySet, StoreError> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            Ok(PolicySet { generation: self.at.load(Ordering::SeqCst), policies: vec![] })
        }
        async fn get_policy(&self, _: &PolicyName) -> Result<Option<Policy>, StoreError> {
            Ok(None)
        }
        async fn put_policy(&self, _: &Policy, _: AuditDraft) -> Result<(), StoreError> {
            Ok(())
        }
        async fn delete_policy(&self, _: &PolicyName, _: AuditDraft) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_set_is_reloaded_exactly_when_the_generation_moved() {
        let (store, cache) = (Counting::default(), PolicyCache::default());
        assert_eq!(cache.at(&store, 0).await.unwrap().generation, 0);
        cache.at(&store, 0).await.unwrap();
        assert_eq!(store.loads.load(Ordering::SeqCst), 1, "same generation: the cached set");
        store.at.store(1, Ordering::SeqCst);
        assert_eq!(cache.at(&store, 1).await.unwrap().generation, 1);
        assert_eq!(store.loads.load(Ordering::SeqCst), 2, "moved: re-read");
    }

    #[tokio::test]
    async fn a_set_is_labelled_with_the_generation_seen_before_it_was_read_never_a_later_one() {
        let (store, cache) = (Counting::default(), PolicyCache::default());
        // The read found generation 5 (a change landing meanwhile) after the check saw 4: labelled 4, so
        // the next check that sees 5 reads the set again rather than trust a possibly partial view of it.
        store.at.store(5, Ordering::SeqCst);
        assert_eq!(cache.at(&store, 4).await.unwrap().generation, 4);
        cache.at(&store, 5).await.unwrap();
        assert_eq!(store.loads.load(Ordering::SeqCst), 2);
    }
}
