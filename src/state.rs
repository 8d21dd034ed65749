//! What every request handler shares, built once at start-up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;

use crate::auth::admin_token::AdminToken;
use crate::auth::rate::ClientLimiter;
use crate::auth::Authenticator;
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::provision::Provisioner;
use crate::proxy::TrustedProxies;
use crate::secret::SecretString;

/// Shared handles for the HTTP layer.
pub struct AppState {
    /// The database pool (also inside `intake`), used by the admin API and background gauges.
    pub pool: Pool,
    /// A small pool of its own for readiness probes and the background gauges, so that a busy
    /// request pool never fails a probe and the gauges never take a request's connection.
    pub probe_pool: Pool,
    /// Stores events and jobs.
    pub intake: Intake,
    /// Checks event credentials.
    pub authenticator: Authenticator,
    /// The process's metrics.
    pub metrics: Metrics,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How far ahead of the server's clock an event's `occurredAt` may be.
    pub max_clock_skew: Duration,
    /// Configured application names (for per-application gauges).
    pub applications: Vec<String>,
    /// Set once migrations are applied and applications registered; intake waits for it.
    pub bootstrapped: Arc<AtomicBool>,
    /// The admin API's bearer token (as a keyed digest); `None` turns the admin API off.
    pub admin_token: Option<Arc<AdminToken>>,
    /// The `clientState` Graph notifications must carry; `None` turns `/webhooks/graph` off.
    pub graph_client_state: Option<SecretString>,
    /// Which peers' forwarding headers name the client.
    pub trusted_proxies: TrustedProxies,
    /// Per-client limit of the intake routes; `None` when turned off.
    pub inbound_limiter: Option<ClientLimiter>,
    /// Per-client limit of the admin API; `None` when turned off.
    pub admin_limiter: Option<ClientLimiter>,
    /// The last `/metrics` exposition and when it was rendered (reused for a moment, so that a
    /// flood of scrapes costs one rendering per moment, not one per scrape).
    pub rendered_metrics: std::sync::Mutex<Option<(std::time::Instant, actix_web::web::Bytes)>>,
    /// Applies membership changes (the admin API's on-demand provisioning and connection test).
    pub provisioner: Arc<Provisioner>,
}

impl AppState {
    /// True once the schema is in place.
    pub fn is_bootstrapped(&self) -> bool {
        self.bootstrapped.load(Ordering::Acquire)
    }
}
