//! Sync cycles (DESIGN.md §5): the deferred lane, deactivations and ended activations.
//!
//! Every replica checks each application every `sync.check_interval_ms`; the one that takes the
//! application's advisory lock and finds its cycle due runs it. An application's first cycle is
//! due at once; each later one `cycle_interval_secs` after the previous one started.

pub mod cycle;
pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::config::SyncSettings;
use crate::dispatch::provision::Provisioner;
use crate::metrics::Metrics;
use crate::store::{cycles, StoreError};
pub use cycle::CycleReport;

/// Runs the sync cycles of every configured application from this replica.
pub struct CycleRunner {
    pub pool: Pool,
    pub provisioner: Arc<Provisioner>,
    pub metrics: Metrics,
    pub settings: SyncSettings,
    /// Seconds between cycles, per application.
    pub intervals: BTreeMap<String, f64>,
    /// Names this replica in the cycles it runs.
    pub owner: String,
}

impl CycleRunner {
    /// Checks for due cycles until `shutdown`; a cycle in progress stops between PATCHes.
    pub async fn run(self, shutdown: CancellationToken) {
        let every = Duration::from_millis(self.settings.check_interval_ms);
        loop {
            for application in self.intervals.keys() {
                if shutdown.is_cancelled() {
                    return;
                }
                if let Err(e) = self.run_if_due(application, &shutdown).await {
                    tracing::warn!(application = %application, error.message = %e,
                        "cannot run the sync cycle; will try again");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Runs `application`'s cycle if it is due and no other replica is running it.
    pub async fn run_if_due(
        &self,
        application: &str,
        shutdown: &CancellationToken,
    ) -> Result<Option<CycleReport>, StoreError> {
        let Some(&interval) = self.intervals.get(application) else {
            return Ok(None);
        };
        let mut db = self.pool.get().await?;
        if !cycles::try_lock(&db, application).await? {
            return Ok(None);
        }
        let result = match cycles::is_due(&db, application).await {
            Ok(true) => self
                .run_cycle(&mut db, application, interval, shutdown)
                .await
                .map(Some),
            Ok(false) => Ok(None),
            Err(e) => Err(e),
        };
        // A lost connection releases the lock by itself; otherwise release it before reuse.
        if let Err(e) = cycles::unlock(&db, application).await {
            tracing::warn!(application = %application, error.message = %e, "cannot release the cycle lock");
        }
        if let Ok(Some(report)) = &result {
            self.metrics
                .cycles
                .with_label_values(&[application, report.outcome])
                .inc();
            self.metrics
                .cycle_duration
                .with_label_values(&[application])
                .observe(report.duration_secs);
        }
        result
    }
}
