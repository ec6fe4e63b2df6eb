//! What the unit tests of several modules share. Test-only: never compiled into the store.

use countersign_core::domain::{Actor, AuditDraft, AuditKind, Timestamp};

pub(crate) fn draft(i: u32) -> AuditDraft {
    AuditDraft::new(Timestamp::from_unix_millis(1_000), AuditKind::CallbackRejected, Actor::system("test"), None)
        .with("i", i.to_string())
}
