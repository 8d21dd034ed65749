//! This replica's heartbeat (docs/architecture.md, "Crash recovery"): one session of its own holds
//! the replica's liveness lock and refreshes its row in `replicas`, so that other replicas take
//! its leases over within seconds after a crash instead of waiting for them to expire.
//!
//! Every beat also counts the live replicas and divides this replica's outbound SCIM budgets
//! among them (docs/architecture.md, "Outbound budgets").

use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::ReplicaSettings;
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
    /// Told the number of live replicas (this one included) after every beat; divides the
    /// outbound budgets among them (`metrics::ScimBudgets`).
    pub live_replicas: LiveCount,
}

/// What the heartbeat tells the live count to.
pub type LiveCount = Box<dyn Fn(u32) + Send + Sync>;

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

    /// Counts the live replicas (this one included, so at least 1) and says so.
    async fn count(&self, client: &Object) -> Result<(), StoreError> {
        let live = replicas::live_count(client, self.settings.dead_after.as_secs_f64()).await?;
        (self.live_replicas)(u32::try_from(live).unwrap_or(u32::MAX).max(1));
        Ok(())
    }
}
