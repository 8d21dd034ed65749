//! The immediate-lane dispatcher (docs/architecture.md).
//!
//! Woken by LISTEN/NOTIFY (with a polling fallback), it claims due immediate jobs under a lease
//! (`store::jobs`), or is handed the jobs this replica's intake claimed itself (`crate::handoff`);
//! it reconciles each job's pair through [`Provisioner::reconcile`] with bounded concurrency, and
//! settles the job: done (observing receipt → AWS latency), superseded when the pair has no active
//! grant any more, retry later with backoff that honours `Retry-After`, or failed for good with its
//! reason. Leases are renewed while a job is in hand; when a replica dies
//! another takes its jobs over as soon as its heartbeat says so (`crate::replica`), or when the
//! lease expires; at worst an add is repeated, which AWS treats as a no-op.

pub mod listener;

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::DispatchSettings;
use crate::handoff::{Handed, Handoff};
use crate::metrics::Metrics;
use crate::provision::{
    Failure, JobSettled, Options, Origin, Outcome, PairRequest, Provisioner, Reconciled,
};
use crate::secret::SecretString;
use crate::store::jobs::{self, ClaimedJob};
use crate::store::{quarantine, StoreError};

/// Longest wait between two attempts of a failing job.
const MAX_JOB_BACKOFF: Duration = Duration::from_secs(300);
/// First wait before a job's second attempt.
const FIRST_JOB_BACKOFF: Duration = Duration::from_secs(1);

/// A claim of due jobs under way: how many slots it asked for, and what it claimed.
type ClaimInFlight = std::pin::Pin<
    Box<dyn std::future::Future<Output = (usize, Result<Vec<ClaimedJob>, StoreError>)> + Send>,
>;

/// Everything the dispatcher needs.
pub struct Dispatcher {
    pub pool: Pool,
    pub provisioner: Arc<Provisioner>,
    pub metrics: Metrics,
    pub settings: DispatchSettings,
    pub database_url: SecretString,
    /// TLS for the LISTEN connection, as for the pool.
    pub tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// Identifies this replica's leases.
    pub owner: String,
    /// Leases of replicas silent this long are taken over (`replica.dead_after`).
    pub dead_after: Duration,
    /// Jobs this replica's intake claimed; its slots are the dispatcher's concurrency.
    pub handoff: Arc<Handoff>,
}

impl Dispatcher {
    /// Runs until `shutdown`, then finishes the jobs in hand (those claimed here and those the
    /// intake hands over on `handed`).
    pub async fn run(self, mut handed: UnboundedReceiver<Handed>, shutdown: CancellationToken) {
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listener::listen(
            self.database_url.clone(),
            self.tls.clone(),
            wake.clone(),
            shutdown.clone(),
        ));
        let this = Arc::new(self);
        let permits = this.handoff.slots();
        this.handoff.open();
        let poll = this.settings.poll_interval;
        let mut in_hand = JoinSet::new();
        let start = |in_hand: &mut JoinSet<()>, job: ClaimedJob, permit: OwnedSemaphorePermit| {
            let this = this.clone();
            in_hand.spawn(async move {
                this.handle(job).await;
                drop(permit);
            });
        };
        // Jobs claimed from the queue wait for a slot in their own task, so that the loop is never
        // held up: a job handed over meanwhile starts at once.
        let start_claimed = |in_hand: &mut JoinSet<()>, job: ClaimedJob| {
            let (this, permits) = (this.clone(), permits.clone());
            in_hand.spawn(async move {
                let Ok(permit) = permits.acquire_owned().await else {
                    return;
                };
                this.handle(job).await;
                drop(permit);
            });
        };
        // A claim from the queue runs beside the hand-over, never in its way: a job handed over
        // while the claim waits for the database starts at once.
        let mut claiming: Option<ClaimInFlight> = None;
        // Whether the queue may hold due jobs: at start, when woken, on each poll, and after a
        // claim that filled every slot it asked for (then once a slot frees up). A hand-over or
        // a job's end alone says nothing about the queue: a job that ends frees a slot, and the
        // next claim waits for a reason to look (in a burst, a claim after each job's end was a
        // statement per activation that found nothing).
        let mut claim = true;
        loop {
            let free = permits.available_permits();
            if claim && free > 0 && claiming.is_none() {
                claim = false;
                let this = this.clone();
                claiming = Some(Box::pin(async move { (free, this.claim(free).await) }));
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(h) = handed.recv() => start(&mut in_hand, h.job, h.slot),
                (asked, claimed) = async {
                    match claiming.as_mut() {
                        Some(claim) => claim.await,
                        None => std::future::pending().await,
                    }
                }, if claiming.is_some() => {
                    claiming = None;
                    match claimed {
                        Ok(batch) => {
                            // Every slot asked for was filled: more may be due once one frees up.
                            claim = batch.len() == asked;
                            for job in batch {
                                start_claimed(&mut in_hand, job);
                            }
                        }
                        Err(e) => tracing::warn!(error.message = %e, "cannot claim jobs"),
                    }
                }
                () = wake.notified() => claim = true,
                () = tokio::time::sleep(poll) => claim = true,
                // A slot is free: a claim waiting for one goes out on the next turn.
                Some(_) = in_hand.join_next(), if !in_hand.is_empty() => {}
            }
        }
        // Finish the jobs in hand, including those of a claim under way and any handed over
        // before the intake saw the door close; claim nothing new.
        this.handoff.close();
        if let Some(claim) = claiming {
            if let (_, Ok(batch)) = claim.await {
                for job in batch {
                    start_claimed(&mut in_hand, job);
                }
            }
        }
        while let Ok(h) = handed.try_recv() {
            start(&mut in_hand, h.job, h.slot);
        }
        while in_hand.join_next().await.is_some() {}
        let _ = listener.await;
    }

    async fn claim(&self, limit: usize) -> Result<Vec<ClaimedJob>, StoreError> {
        let db = self.pool.get().await?;
        jobs::claim_immediate(
            &db,
            &self.owner,
            self.settings.lease.as_secs_f64(),
            limit as i64,
            self.dead_after.as_secs_f64(),
        )
        .await
    }

    #[tracing::instrument(name = "job", skip_all, fields(job.id = job.id,
        event.id = %job.source_event_id, application = %job.subject.application,
        action = job.action.as_str(), attempt = job.attempts))]
    async fn handle(&self, job: ClaimedJob) {
        let started = Instant::now();
        // The lease is renewed beside the reconciliation, never instead of it: a renewal waiting
        // for a connection must not pause a reconciliation that holds locks others wait for (in
        // a full pool, those others may be what the renewal waits for).
        let result = tokio::select! {
            result = self.reconcile(&job) => result,
            never = self.renew_lease_while_held(&job) => match never {},
        };
        let recorded = match result {
            Ok(report) => self.settle(&job, report, started.elapsed()).await,
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            // The lease runs out and another attempt follows; nothing is lost.
            tracing::warn!(error.message = %e, "cannot record the job's outcome; it will be retried");
        }
    }

    /// Reconciles the job's pair: adds the member if a grant is active, else nothing. The job is
    /// settled in the same transaction unless the outcome is a failure.
    async fn reconcile(&self, job: &ClaimedJob) -> Result<Reconciled, StoreError> {
        let mut db = self.pool.get().await?;
        let request = PairRequest {
            subject: job.subject.clone(),
            event_id: Some(job.event_id),
            job_id: Some(job.id),
        };
        let options = Options {
            retry_transient: job.attempts < self.settings.max_attempts,
            ..Options::default()
        };
        let origin = Origin::Job {
            job_id: job.id,
            lease_owner: &self.owner,
            claim_on_disk: job.claim_on_disk,
        };
        self.provisioner
            .reconcile(
                &mut db,
                &job.subject.application,
                origin,
                &[request],
                &options,
            )
            .await
    }

    /// Renews the job's lease every third of its length, for as long as it is polled.
    async fn renew_lease_while_held(&self, job: &ClaimedJob) -> std::convert::Infallible {
        loop {
            tokio::time::sleep(self.settings.lease / 3).await;
            self.renew_lease(job).await;
        }
    }

    async fn renew_lease(&self, job: &ClaimedJob) {
        if let Ok(db) = self.pool.get().await {
            let lease = self.settings.lease.as_secs_f64();
            if let Err(e) = jobs::extend_lease(&db, job.id, &self.owner, lease).await {
                tracing::warn!(error.message = %e, "cannot renew the lease");
            }
        }
    }

    /// Observes a job the reconciliation settled, or settles a failed one (retry later, defer or
    /// fail for good); metrics follow the commit.
    async fn settle(
        &self,
        job: &ClaimedJob,
        report: Reconciled,
        elapsed: Duration,
    ) -> Result<(), StoreError> {
        match report.job {
            Some(JobSettled::Completed {
                latency: Some(latency),
            }) => {
                self.metrics
                    .provisioning_latency
                    .with_label_values(&[
                        &job.subject.application,
                        "immediate",
                        job.action.as_str(),
                    ])
                    .observe(latency);
                tracing::info!(
                    latency_ms = latency * 1000.0,
                    elapsed_ms = elapsed.as_secs_f64() * 1000.0,
                    "membership change confirmed by AWS"
                );
            }
            Some(JobSettled::Completed { latency: None }) => {
                tracing::warn!("lease lost before completion; another replica owns the job");
            }
            Some(JobSettled::Superseded) => {
                tracing::info!("not sent: the pair has no active grant any more");
            }
            None => {
                let failure = match report.outcomes.into_iter().next() {
                    Some(Outcome::Failed(failure)) => failure,
                    // Only a failure is left to the dispatcher.
                    other => {
                        tracing::warn!(outcome = ?other, "the job was not settled; it will be retried");
                        return Ok(());
                    }
                };
                let mut db = self.pool.get().await?;
                let tx = db.transaction().await?;
                self.settle_failure(&tx, job, &failure).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    async fn settle_failure(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        job: &ClaimedJob,
        failure: &Failure,
    ) -> Result<(), StoreError> {
        let owner = self.owner.as_str();
        let reason = &failure.reason;
        if failure.auth {
            // AWS refuses our credentials: quarantine the application and leave the change to
            // its cycles, which back off until the credentials work again.
            tracing::error!(error.message = %reason,
                "AWS refused the credentials; application quarantined, job deferred");
            quarantine::enter_once(tx, &job.subject.application, reason).await?;
            jobs::defer(tx, job.id, owner, reason).await?;
        } else if failure.transient && job.attempts < self.settings.max_attempts {
            let delay = job_backoff(job.attempts, failure.retry_after);
            tracing::warn!(error.message = %reason, retry_in_s = delay.as_secs_f64(),
                "transient failure; will retry");
            jobs::retry_later(tx, job.id, owner, delay.as_secs_f64(), reason).await?;
        } else {
            tracing::error!(error.message = %reason, "job failed");
            jobs::fail(tx, job.id, owner, reason).await?;
        }
        Ok(())
    }
}

/// Exponential backoff for job attempts (1 s, 2 s, 4 s, … up to 5 min), never shorter than what
/// AWS asked for.
fn job_backoff(attempts: i32, retry_after: Option<Duration>) -> Duration {
    let retry = crate::backoff::retry_number(attempts);
    crate::backoff::Backoff::new(FIRST_JOB_BACKOFF, MAX_JOB_BACKOFF).delay(retry, retry_after, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_backoff_doubles_up_to_a_cap_and_honours_retry_after() {
        assert_eq!(job_backoff(1, None), Duration::from_secs(1));
        assert_eq!(job_backoff(2, None), Duration::from_secs(2));
        assert_eq!(job_backoff(4, None), Duration::from_secs(8));
        assert_eq!(job_backoff(30, None), MAX_JOB_BACKOFF);
        assert_eq!(
            job_backoff(1, Some(Duration::from_secs(20))),
            Duration::from_secs(20)
        );
        assert_eq!(
            job_backoff(5, Some(Duration::from_secs(2))),
            Duration::from_secs(16)
        );
    }
}
