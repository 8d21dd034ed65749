//! What every request handler shares, built once at start-up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deadpool_postgres::Pool;

use crate::auth::Authenticator;
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::provision::Provisioner;
use crate::routes::limit::InboundLimiter;
use crate::secret::SecretString;

/// Shared handles for the HTTP layer.
pub struct AppState {
    /// The database pool (also inside `intake`), used by health and metrics.
    pub pool: Pool,
    /// Stores events and jobs.
    pub intake: Intake,
    /// Checks event credentials.
    pub authenticator: Authenticator,
    /// The process's metrics.
    pub metrics: Metrics,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Configured application names (for per-application gauges).
    pub applications: Vec<String>,
    /// Set once migrations are applied and applications registered; intake waits for it.
    pub bootstrapped: Arc<AtomicBool>,
    /// The admin API's bearer token; `None` turns the admin API off.
    pub admin_token: Option<SecretString>,
    /// The `clientState` Graph notifications must carry; `None` turns `/webhooks/graph` off.
    pub graph_client_state: Option<SecretString>,
    /// Per-client limit of the intake routes; `None` when turned off.
    pub inbound_limiter: Option<InboundLimiter>,
    /// Applies membership changes (the admin API's on-demand provisioning and connection test).
    pub provisioner: Arc<Provisioner>,
}

impl AppState {
    /// True once the schema is in place.
    pub fn is_bootstrapped(&self) -> bool {
        self.bootstrapped.load(Ordering::Acquire)
    }
}
