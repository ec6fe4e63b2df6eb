//! The pool of read connections: each read runs in its own read transaction on a pooled connection, on a
//! blocking thread. WAL lets them run beside the writer, and a read that starts after a write was
//! acknowledged sees that write.
//!
//! A read connection is `query_only`: nothing here may write, and a connection left inside a transaction is
//! never put back in the pool.

use std::sync::PoisonError;

use rusqlite::{Connection, TransactionBehavior};

use countersign_core::ports::StoreError;

use crate::error::Sql;
use crate::schema::connect;
use crate::EmbeddedStore;

/// Idle read connections kept open for reuse.
const MAX_IDLE_READERS: usize = 8;

impl EmbeddedStore {
    /// Runs `f` in one read transaction on a pooled read connection, on a blocking thread.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut conn = match idle {
            Some(c) => c,
            None => {
                let c = connect(&self.path)?;
                c.pragma_update(None, "query_only", "ON").sql()?;
                c
            }
        };
        let (conn, out) = tokio::task::spawn_blocking(move || {
            let out = (|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).sql()?;
                let out = f(&tx)?;
                tx.commit().sql()?;
                Ok(out)
            })();
            (conn, out)
        })
        .await
        .map_err(|e| StoreError::Other(format!("embedded store task failed: {e}")))?;
        if conn.is_autocommit() {
            let mut idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
        }
        out
    }
}
