//! How SQLite's errors become the port's [`StoreError`]: busy, locked and I/O failures are retryable
//! (`Unavailable`), everything else is not.
//!
//! This is the only place that decides which SQLite failures a caller may retry; it must never turn one into
//! success or into `Conflict` (a condition that failed is decided by the operation, not by the error code).

use rusqlite::ErrorCode;

use countersign_core::ports::StoreError;

pub(crate) trait Sql<T> {
    fn sql(self) -> Result<T, StoreError>;
}

impl<T> Sql<T> for rusqlite::Result<T> {
    fn sql(self) -> Result<T, StoreError> {
        self.map_err(sql_error)
    }
}

/// Busy, locked and I/O failures are retryable (`Unavailable`); everything else is not.
fn sql_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::DiskFull
                    | ErrorCode::CannotOpen
                    | ErrorCode::FileLockingProtocolFailed
            ) =>
        {
            StoreError::unavailable(e)
        }
        _ => StoreError::Other(format!("sqlite: {e}")),
    }
}
