//! This replica's heartbeat (docs/architecture.md, "Crash recovery"): one session of its own holds
//! the replica's liveness lock and refreshes its row in `replicas`, so that other replicas take
//! its leases over within seconds after a crash instead of waiting for them to expire.
//!
//! Every beat also counts the live replicas and divides this replica's outbound SCIM budgets
//! among them (docs/architecture.md, "Outbound budgets").

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::ReplicaSettings;
use crate::metrics::Metrics;
use crate::scim::pacing::Pacer;
use crate::store::{replicas, StoreError};

/// First wait before the heartbeat session is opened again.
const RECONNECT_MIN: Duration = Duration::from_millis(250);
/// Longest wait before the heartbeat session is opened again.
const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// Replicas silent this long are forgotten (their leases expired long before).
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Beats between two clean-ups of forgotten replicas.
const BEATS_PER_CLEANUP: u64 = 600;

/// Why the heartbeat session ended.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An earlier session of this replica still holds the lock (the server has not seen it
    /// close yet).
    #[error("the liveness lock of `{0}` is still held by an earlier session")]
    LockHeld(String),
}

/// Keeps this replica known as alive until shutdown.
pub struct Heartbeat {
    /// A pool of one connection: the session that holds the liveness lock.
    pub pool: Pool,
    /// Names this replica in leases and in `replicas`.
    pub owner: String,
    pub settings: ReplicaSettings,
    /// Set once this replica is registered and holds its lock: only then may it take leases,
    /// since a lease of an owner that looks dead is taken over.
    pub registered: watch::Sender<bool>,
    /// Divided among the live replicas, counted every beat.
    pub budgets: Budgets,
}

/// This replica's outbound budgets: the pacer of every SCIM client (each application, both
/// lanes), whose configured budget is the application's across all replicas.
pub struct Budgets {
    metrics: Metrics,
    pacers: Vec<(String, &'static str, Arc<Pacer>)>,
    /// The live count the shares were last divided by (0 before the first count).
    replicas: AtomicU32,
}

impl Budgets {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            pacers: Vec::new(),
            replicas: AtomicU32::new(0),
        }
    }

    /// Adds the pacer of `application`'s client for `lane` and publishes its share.
    pub fn add(&mut self, application: &str, lane: &'static str, pacer: Arc<Pacer>) {
        self.pacers.push((application.to_owned(), lane, pacer));
        self.publish();
    }

    /// Divides every budget among `live` replicas (at least this one) when the count changed.
    pub fn divide(&self, live: i64) {
        let live = u32::try_from(live).unwrap_or(u32::MAX).max(1);
        self.metrics.live_replicas.set(i64::from(live));
        let before = self.replicas.swap(live, Ordering::Relaxed);
        if before == live {
            return;
        }
        for (_, _, pacer) in &self.pacers {
            pacer.set_replicas(live);
        }
        self.publish();
        if before == 0 {
            tracing::info!(
                live_replicas = live,
                "outbound SCIM budgets divided among the live replicas"
            );
        } else {
            tracing::info!(
                live_replicas = live,
                previously = before,
                "live replicas changed; outbound SCIM budgets divided among them again"
            );
        }
    }

    fn publish(&self) {
        for (application, lane, pacer) in &self.pacers {
            let share = pacer.share();
            let labels = [application.as_str(), lane];
            self.metrics
                .scim_rate_limit
                .with_label_values(&labels)
                .set(share.requests_per_second());
            self.metrics
                .scim_burst_limit
                .with_label_values(&labels)
                .set(i64::from(share.burst));
        }
    }
}

impl Heartbeat {
    /// Beats until `shutdown`, then marks this replica dead (its leases are free at once).
    pub async fn run(self, shutdown: CancellationToken) {
        let backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
        let mut failures = 0;
        loop {
            match self.session(&shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error.message = %crate::telemetry::error_chain(&e),
                        "heartbeat interrupted; other replicas may take this one's leases over");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff.step(failures)) => {}
            }
        }
    }

    async fn session(&self, shutdown: &CancellationToken) -> Result<(), HeartbeatError> {
        let client = self.pool.get().await.map_err(StoreError::from)?;
        let result = self.beat_on(&client, shutdown).await;
        if result.is_err() {
            // Close the session rather than return it to the pool holding a lock.
            drop(Object::take(client));
        }
        result
    }

    async fn beat_on(
        &self,
        client: &Object,
        shutdown: &CancellationToken,
    ) -> Result<(), HeartbeatError> {
        if !replicas::lock(client, &self.owner).await? {
            return Err(HeartbeatError::LockHeld(self.owner.clone()));
        }
        replicas::beat(client, &self.owner).await?;
        // Before the dispatcher starts: a replica joining takes its share from its first request.
        self.count(client).await?;
        self.registered.send_replace(true);
        let mut beats: u64 = 0;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    replicas::leave(client, &self.owner).await?;
                    return Ok(());
                }
                () = tokio::time::sleep(self.settings.heartbeat_interval) => {}
            }
            replicas::beat(client, &self.owner).await?;
            self.count(client).await?;
            beats += 1;
            if beats.is_multiple_of(BEATS_PER_CLEANUP) {
                replicas::forget_silent(client, FORGET_AFTER.as_secs_f64()).await?;
            }
        }
    }

    /// Counts the live replicas (this one included) and divides the budgets by them.
    async fn count(&self, client: &Object) -> Result<(), StoreError> {
        let live = replicas::live_count(client, self.settings.dead_after.as_secs_f64()).await?;
        self.budgets.divide(live);
        Ok(())
    }
}
