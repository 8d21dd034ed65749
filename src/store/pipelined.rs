//! A transaction whose `BEGIN` leaves together with its first statements, and whose `COMMIT` can
//! have the next statement of the connection right behind it: two round trips to Postgres fewer
//! than `BEGIN`, statements, `COMMIT` and a statement after it, each answered before the next
//! leaves.
//!
//! Postgres runs what one connection sends in order, so statements sent behind `BEGIN` run inside
//! the transaction. The one case where they would not, a `BEGIN` that fails on a live connection
//! (only for want of memory; a connection that breaks loses what follows too), would have them
//! run and commit one by one: so only statements that are each a consistent change on their own
//! may be sent behind `BEGIN` (see [`Pipelined::begin_with`]).

use std::future::Future;

use deadpool_postgres::Client;
use futures_util::FutureExt;

use super::StoreError;

/// An open transaction on `client`, begun by [`Pipelined::begin_with`]. Dropped while open (its
/// future was cancelled), it sends `ROLLBACK` without waiting, as `tokio_postgres` does for its
/// own transactions, so the connection goes back to the pool outside any transaction.
pub struct Pipelined<'c> {
    client: &'c Client,
    open: bool,
}

impl<'c> Pipelined<'c> {
    /// Begins a transaction on `client` with `first`'s statements sent right behind `BEGIN`, and
    /// returns it with `first`'s result. If `first` fails the transaction is rolled back and its
    /// error returned.
    ///
    /// `first` must send its statements on its first poll or later, never before (futures do
    /// nothing until polled), and each must be a consistent change on its own (see the module's
    /// doc). Statements `first` prepares on the way leave after `BEGIN` too.
    pub async fn begin_with<T>(
        client: &'c Client,
        first: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<(Self, T), StoreError> {
        let tx = Self { client, open: true };
        // `join!` polls `BEGIN` first, so it leaves first, and waits for both whatever happens.
        let (begun, first) = futures_util::join!(client.batch_execute("BEGIN"), first);
        match begun.map_err(StoreError::from).and(first) {
            Ok(value) => Ok((tx, value)),
            Err(e) => {
                tx.rollback().await;
                Err(e)
            }
        }
    }

    /// Commits, and sends `after`'s statements right behind `COMMIT` (they run once it is done,
    /// whatever its outcome). Returns the commit's result and `after`'s.
    pub async fn commit_then<T>(
        mut self,
        after: impl Future<Output = T>,
    ) -> (Result<(), StoreError>, T) {
        self.open = false;
        let (committed, after) = futures_util::join!(self.client.batch_execute("COMMIT"), after);
        (committed.map_err(StoreError::from), after)
    }

    /// Rolls back; a failure means the connection is broken, which ends the transaction too.
    pub async fn rollback(mut self) {
        self.open = false;
        if let Err(e) = self.client.batch_execute("ROLLBACK").await {
            tracing::debug!(error.message = %e, "cannot roll back");
        }
    }
}

impl Drop for Pipelined<'_> {
    fn drop(&mut self) {
        if self.open {
            // The first poll sends the statement; its answer is not awaited.
            let _ = self.client.batch_execute("ROLLBACK").now_or_never();
        }
    }
}
