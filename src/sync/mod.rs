//! Sync cycles (docs/correctness.md): the deferred lane, deactivations, ended grants and drift.
//!
//! Every replica checks each application every `sync.check_interval`; the one that takes the
//! application's advisory lock and finds its cycle due runs it. An application's first cycle is
//! due at once; each later one `cycle_interval` after the previous one started.

pub mod cycle;
pub mod quarantine;

use std::collections::BTreeMap;
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::config::SyncSettings;
use crate::metrics::Metrics;
use crate::provision::Provisioner;
use crate::store::quarantine as store_quarantine;
use crate::store::{cycles, StoreError};
pub use cycle::{CycleOutcome, CycleReport};
use quarantine::Verdict;

/// Runs the sync cycles of every configured application from this replica.
pub struct CycleRunner {
    pub pool: Pool,
    pub provisioner: Arc<Provisioner>,
    pub metrics: Metrics,
    pub settings: SyncSettings,
    /// Seconds between cycles, per application.
    pub intervals: BTreeMap<String, f64>,
    /// Per application, the most memberships one cycle removes without an operator's
    /// confirmation (`max_removals_per_cycle`).
    pub max_removals: BTreeMap<String, u32>,
    /// Names this replica in the cycles it runs.
    pub owner: String,
    /// Per application, the Entra groups each cycle asks Graph about again (docs/correctness.md:
    /// reconciliation catches lost notifications); empty without `[graph]`.
    pub reconcile_groups: BTreeMap<String, Vec<String>>,
}

impl CycleRunner {
    /// Checks for due cycles until `shutdown`; a cycle in progress stops between PATCHes.
    pub async fn run(self, shutdown: CancellationToken) {
        let every = self.settings.check_interval;
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
        let result = match cycles::schedule(&db, application).await {
            Ok(schedule) if schedule.due => {
                self.cycle_and_judge(
                    &mut db,
                    application,
                    interval,
                    schedule.quarantined,
                    shutdown,
                )
                .await
            }
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        };
        // A lost connection releases the lock by itself; otherwise release it before reuse.
        if let Err(e) = cycles::unlock(&db, application).await {
            tracing::warn!(application = %application, error.message = %e, "cannot release the cycle lock");
        }
        if let Ok(Some(report)) = &result {
            self.metrics
                .cycles
                .with_label_values(&[application, report.outcome.as_str()])
                .inc();
            self.metrics
                .cycle_duration
                .with_label_values(&[application])
                .observe(report.duration_secs);
        }
        result
    }

    /// Runs the cycle, then finishes it and enters, keeps or clears the application's quarantine
    /// in one transaction, so that whoever sees the cycle finished sees its verdict too.
    async fn cycle_and_judge(
        &self,
        db: &mut deadpool_postgres::Object,
        application: &str,
        interval: f64,
        quarantined: bool,
        shutdown: &CancellationToken,
    ) -> Result<Option<CycleReport>, StoreError> {
        self.reconcile_with_graph(db, application).await?;
        let mut report = self.run_cycle(db, application, shutdown).await?;
        let mut verdict = quarantine::verdict(&report, quarantined);
        if verdict == Verdict::Probe {
            verdict = match self.probe(application).await {
                Ok(()) => Verdict::Clear,
                Err(reason) => Verdict::Enter(reason),
            };
        }
        // An interrupted cycle leaves its work to the next one, which is due at once.
        let next_in = if report.outcome == CycleOutcome::Interrupted {
            0.0
        } else {
            interval
        };
        let tx = db.transaction().await?;
        report.duration_secs = cycles::finish(
            &tx,
            report.id,
            report.outcome.as_str(),
            report.auth_failure.as_deref(),
            &report.counts,
            next_in,
        )
        .await?;
        match &verdict {
            Verdict::Enter(reason) => {
                if let Some(q) = store_quarantine::enter(&tx, application, reason).await? {
                    tracing::error!(application = %application, reason = %q.reason,
                        quarantine_count = q.count, "application quarantined; cycles back off");
                }
            }
            Verdict::Clear => {
                if store_quarantine::clear(&tx, application).await? {
                    tracing::info!(application = %application, "quarantine ended");
                }
            }
            Verdict::Probe | Verdict::Keep => {}
        }
        tx.commit().await?;
        let c = &report.counts;
        tracing::info!(cycle.id = report.id, application = %application, outcome = report.outcome.as_str(),
            applied = c.applied, skipped = c.skipped, failed = c.failed, retrying = c.retrying,
            duration_s = report.duration_secs, "cycle finished");
        Ok(Some(report))
    }

    /// Asks the Graph resolver to look at each of the application's groups again, so that
    /// activations and deactivations whose notifications were lost are found.
    async fn reconcile_with_graph(
        &self,
        db: &deadpool_postgres::Object,
        application: &str,
    ) -> Result<(), StoreError> {
        let Some(groups) = self.reconcile_groups.get(application) else {
            return Ok(());
        };
        for group in groups {
            crate::store::graph_hints::record(db, group).await?;
        }
        tracing::info!(application = %application, groups = groups.len(),
            "cycle asked Graph to re-check the application's groups");
        Ok(())
    }

    /// Tests the connection to a quarantined application's SCIM endpoint.
    async fn probe(&self, application: &str) -> Result<(), String> {
        let target = self
            .provisioner
            .target(application)
            .map_err(|e| e.to_string())?;
        match target.client.test_connection().await {
            Ok(_) => Ok(()),
            Err(e) => Err(format!(
                "the connection test failed: {}",
                crate::telemetry::error_chain(&e)
            )),
        }
    }
}
