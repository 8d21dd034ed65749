//! Retention (docs/operations.md, "Retention"): every `retention.interval`, one replica at a time
//! (session advisory lock, as for cycles) deletes history older than its limit in batches of
//! `retention.batch_size`, each its own short transaction, so that intake and workers are never
//! blocked for long.

use std::collections::BTreeMap;

use deadpool_postgres::{GenericClient, Pool};
use tokio_util::sync::CancellationToken;

use crate::config::RetentionSettings;
use crate::store::retention::{self, Cursor, Kind};
use crate::store::StoreError;

const SECONDS_PER_DAY: f64 = 86_400.0;

/// Rows deleted by one pass, per kind.
pub type RetentionReport = BTreeMap<&'static str, u64>;

/// Runs retention passes from this replica.
pub struct Retention {
    pub pool: Pool,
    pub settings: RetentionSettings,
}

impl Retention {
    /// A pass at start and then every `interval`, until `shutdown` (which also stops a pass
    /// between two batches).
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            match self.run_if_free(&shutdown).await {
                Ok(Some(report)) if report.values().any(|n| *n > 0) => {
                    tracing::info!(deleted = ?report, "retention pass finished");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error.message = %e, "retention pass failed; will try again")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.settings.interval) => {}
            }
        }
    }

    /// Runs a pass unless another replica is running one.
    pub async fn run_if_free(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<RetentionReport>, StoreError> {
        let db = self.pool.get().await?;
        if !retention::try_lock(&db).await? {
            return Ok(None);
        }
        let result = self.pass(&db, shutdown).await;
        // A lost connection releases the lock by itself; otherwise release it before reuse.
        if let Err(e) = retention::unlock(&db).await {
            tracing::warn!(error.message = %e, "cannot release the retention lock");
        }
        result.map(Some)
    }

    /// One pass over every kind, batch by batch, on `db` (autocommit: one transaction per batch).
    pub async fn pass(
        &self,
        db: &impl GenericClient,
        shutdown: &CancellationToken,
    ) -> Result<RetentionReport, StoreError> {
        let batch = self.settings.batch_size as i64;
        let mut report = RetentionReport::new();
        for kind in Kind::ALL {
            if shutdown.is_cancelled() {
                break;
            }
            let keep_secs = f64::from(self.settings.days_of(kind.as_str())) * SECONDS_PER_DAY;
            let deleted = report.entry(kind.as_str()).or_default();
            let mut from = Cursor::START;
            loop {
                let started = std::time::Instant::now();
                let (n, next) = retention::purge_batch(db, kind, keep_secs, batch, from).await?;
                *deleted += n;
                from = next;
                if (n as i64) < batch || shutdown.is_cancelled() {
                    break;
                }
                // Rest in proportion to the batch: deleting millions of rows writes and flushes
                // as much as intake does, and without rests intake's commits queue behind it.
                let rest = started
                    .elapsed()
                    .mul_f64(1.0 / self.settings.duty_cycle - 1.0);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(rest) => {}
                }
            }
        }
        Ok(report)
    }
}
