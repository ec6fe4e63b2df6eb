//! The audit budget for callbacks refused before they were authenticated (a bad signature, a body over the
//! limit). Every such refusal should leave an audit record (`callback.rejected`, actor `slack:unknown`), but
//! whoever sends them is unauthenticated and the audit trail is one hash-chained partition that every
//! approval also writes to: an attacker must not be able to flood it.
//!
//! So records are rationed per process by a token bucket on the injected clock: at most
//! [`REFUSAL_RECORDS_PER_MINUTE`] at once, then one every `60 / REFUSAL_RECORDS_PER_MINUTE` seconds. A refusal
//! beyond the budget is only counted; the next record written carries `suppressed` = how many refusals were
//! not recorded since the record before it, so the trail still accounts for every refusal. Over any window
//! of T seconds one process writes at most `REFUSAL_RECORDS_PER_MINUTE × (1 + T / 60)` of these records.
//!
//! The record's details are fixed words and request facts the sender does not choose: `code`, `reason`
//! (the failed check), `suppressed`, and, when known, `body_bytes` and `source_ip` (from API Gateway's
//! request context or the TCP peer, never from a header). Nothing of the unverified body and never the
//! received signature, a computed MAC or a secret (threat rows 1 and 7).

use std::sync::Mutex;

use crate::domain::Timestamp;

/// Records of refused, unauthenticated callbacks one process may write per minute (and at once).
pub const REFUSAL_RECORDS_PER_MINUTE: u64 = 60;

/// One record's worth of the bucket, in thousandths (so the refill is exact in whole milliseconds).
const MILLI: u64 = 1000;

/// The `code` of the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    /// The callback's signature (headers, timestamp, MAC or body encoding) did not verify.
    BadSignature,
    /// The body was over the limit and was not read.
    BodyTooLarge,
}

impl RefusalCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadSignature => "bad_signature",
            Self::BodyTooLarge => "body_too_large",
        }
    }
}

/// A refused, unauthenticated callback, as the handler describes it. `reason` is `'static`: a fixed word
/// naming the failed check (`signature_mismatch`, `stale_timestamp`, `previous_secret_expired`, …), so
/// nothing the sender wrote can reach the record through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedCallback {
    pub code: RefusalCode,
    pub reason: &'static str,
    /// Length of the body as received, when it was read.
    pub body_bytes: Option<usize>,
    /// Where the connection came from, when the platform says (never a header): an IP address the HTTP
    /// layer parsed and printed again, so no text of the sender's can reach the record through it.
    pub source_ip: Option<String>,
}

/// The token bucket (see the module doc). Shared by every handler of one process.
#[derive(Debug)]
pub struct RefusalBudget {
    per_minute: u64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// In thousandths of a record.
    tokens: u64,
    /// When the bucket was last refilled; `None` before the first refusal.
    last: Option<Timestamp>,
    /// Refusals not recorded since the last record written.
    suppressed: u64,
}

impl Default for RefusalBudget {
    fn default() -> Self {
        Self::new(REFUSAL_RECORDS_PER_MINUTE)
    }
}

impl RefusalBudget {
    /// A full bucket of `per_minute` records, refilled at `per_minute` a minute.
    pub fn new(per_minute: u64) -> Self {
        let tokens = per_minute.saturating_mul(MILLI);
        Self { per_minute, state: Mutex::new(Bucket { tokens, last: None, suppressed: 0 }) }
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, Bucket> {
        // A panic while holding this lock cannot leave the counters inconsistent: keep using them.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks to write one record at `now`. `Some(n)`: write it, carrying `suppressed = n` (the count restarts
    /// at zero). `None`: over budget; the refusal was counted for the next record.
    pub fn take(&self, now: Timestamp) -> Option<u64> {
        let mut b = self.bucket();
        let capacity = self.per_minute.saturating_mul(MILLI);
        match b.last {
            // A clock that went back refills nothing, and the reference stays put: no tokens from jitter.
            Some(last) if now.unix_millis() <= last.unix_millis() => {}
            Some(last) => {
                let elapsed = u64::try_from(now.unix_millis() - last.unix_millis()).unwrap_or(u64::MAX);
                // per_minute records per 60 000 ms, in thousandths: elapsed × per_minute / 60.
                let refill = elapsed.saturating_mul(self.per_minute) / 60;
                b.tokens = b.tokens.saturating_add(refill).min(capacity);
                b.last = Some(now);
            }
            None => b.last = Some(now),
        }
        if b.tokens < MILLI {
            b.suppressed = b.suppressed.saturating_add(1);
            return None;
        }
        b.tokens -= MILLI;
        Some(std::mem::take(&mut b.suppressed))
    }

    /// A record granted by [`Self::take`] could not be written: it, and the `suppressed` count it carried,
    /// go back into the count for the next record. The budget is not given back, so a store that is down
    /// is not hammered by a flood either.
    pub fn unrecorded(&self, refusals: u64) {
        let mut b = self.bucket();
        b.suppressed = b.suppressed.saturating_add(refusals);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = Timestamp::from_unix_millis(1_795_621_462_000);

    #[test]
    fn t01_budget_allows_a_burst_then_one_a_second_and_counts_the_rest() {
        let b = RefusalBudget::default();
        for i in 0..REFUSAL_RECORDS_PER_MINUTE {
            assert_eq!(b.take(T), Some(0), "record {i}");
        }
        for _ in 0..440 {
            assert_eq!(b.take(T), None);
        }
        // 999 ms later: not yet a whole record.
        assert_eq!(b.take(T.plus_millis(999)), None);
        // One second after the burst: one record, carrying every refusal counted since.
        assert_eq!(b.take(T.plus_seconds(1)), Some(441));
        assert_eq!(b.take(T.plus_seconds(1)), None);
        assert_eq!(b.take(T.plus_seconds(2)), Some(1));
        // A long quiet spell refills to the burst, never beyond it.
        let later = T.plus_seconds(86_400);
        for i in 0..REFUSAL_RECORDS_PER_MINUTE {
            assert_eq!(b.take(later), Some(0), "record {i} after a day");
        }
        assert_eq!(b.take(later), None);
    }

    #[test]
    fn t01_budget_gains_nothing_from_a_clock_that_goes_back_and_forth() {
        let b = RefusalBudget::new(2);
        assert_eq!(b.take(T), Some(0));
        assert_eq!(b.take(T), Some(0));
        assert_eq!(b.take(T), None);
        for _ in 0..10 {
            assert_eq!(b.take(T.plus_seconds(-3600)), None);
            assert_eq!(b.take(T), None);
        }
        assert_eq!(b.take(T.plus_seconds(30)), Some(21));
    }

    #[test]
    fn t01_a_record_that_could_not_be_written_is_counted_as_suppressed() {
        let b = RefusalBudget::new(60);
        assert_eq!(b.take(T), Some(0));
        assert_eq!(b.take(T), Some(0));
        b.unrecorded(1);
        assert_eq!(b.take(T), Some(1));
        assert_eq!(b.take(T), Some(0));
    }

    #[test]
    fn codes_are_stable() {
        assert_eq!(RefusalCode::BadSignature.as_str(), "bad_signature");
        assert_eq!(RefusalCode::BodyTooLarge.as_str(), "body_too_large");
    }
}
