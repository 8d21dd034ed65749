//! Prometheus metrics (docs/architecture.md). Names and labels are part of the external contract.
//!
//! `Metrics` owns its own `Registry` (no global state, so tests can run many apps in one process)
//! and is built once at start-up and shared. Per-instance counters and histograms live here;
//! database-derived gauges are refreshed in the background (`routes::metrics::refresh_loop`), so
//! that a scrape never queries the database.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::scim::pacing::Pacer;

/// This build's version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit this build was made from (`build.rs`: git, else `PIMBRIDGE_REVISION`, else
/// `unknown`).
pub const REVISION: &str = match option_env!("PIMBRIDGE_BUILD_REVISION") {
    Some(revision) => revision,
    None => "unknown",
};

/// All metrics of one process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Events received, by source (api, audit, …), type and outcome (accepted, duplicate,
    /// unrouted, ignored, rejected).
    pub events_received: IntCounterVec,
    /// Activations admitted per application and lane.
    pub activations: IntCounterVec,
    /// Receipt of an event to AWS confirming the change.
    pub provisioning_latency: HistogramVec,
    /// SCIM requests by application, method and status (`error` for transport failures).
    pub scim_requests: IntCounterVec,
    /// SCIM request durations by application and method.
    pub scim_request_duration: HistogramVec,
    /// Jobs waiting per application and lane, refreshed in the background.
    pub queue_depth: IntGaugeVec,
    /// Age of the oldest waiting job per application and lane, refreshed in the background.
    pub queue_oldest_age: GaugeVec,
    /// Intake requests refused with 429 by the per-client limit, by route.
    pub inbound_rate_limited: IntCounterVec,
    /// 1 while an application is quarantined, refreshed at scrape time.
    pub application_quarantined: IntGaugeVec,
    /// Sync cycles run by this replica, by application and outcome.
    pub cycles: IntCounterVec,
    /// Differences between AWS and what pimbridge knew it had left there, found by cycles'
    /// checks (and repaired), by kind: `missing` (an owned membership AWS held, now gone) or
    /// `lingering` (one pimbridge had removed, back in AWS). A grant that ended is not drift.
    pub drift: IntCounterVec,
    /// Sync cycle durations by application.
    pub cycle_duration: HistogramVec,
    /// 1 while the application's latest cycle is held (more removals due than
    /// `max_removals_per_cycle`, waiting for an operator), refreshed in the background.
    pub cycle_held: IntGaugeVec,
    /// Request handlers that panicked (answered 500 by `routes::recover`).
    pub handler_panics: IntCounter,
    /// Completed background refreshes of the gauges read from Postgres.
    pub shared_gauge_refreshes: IntCounter,
    /// 1, labelled with this build's version and revision.
    pub build_info: IntGaugeVec,
    /// HTTP requests served, by listener, matched route pattern, method and status.
    pub http_requests: IntCounterVec,
    /// HTTP request durations, by listener, matched route pattern and method.
    pub http_request_duration: HistogramVec,
    /// Jobs in state `failed` per application, refreshed in the background.
    pub jobs_failed: IntGaugeVec,
    /// Live replicas as this replica's heartbeat last counted them; the outbound budgets are
    /// divided by this number.
    pub live_replicas: IntGauge,
    /// This replica's share of each SCIM budget's sustained rate, by application and lane
    /// (immediate or cycles).
    pub scim_rate_limit: GaugeVec,
    /// This replica's share of each SCIM budget's burst, by application and lane.
    pub scim_burst_limit: IntGaugeVec,
}

/// Buckets for serving one HTTP request: intake commits in milliseconds; admin listings may take
/// longer; the tail is a request that waited for the database.
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets for receipt → AWS latency: 1 ms to 2 h. The immediate lane lives in the first decade
/// (ms); the deferred lane waits for a sync cycle (40 min default), so the tail reaches 2 h.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0, 1200.0, 2400.0, 3600.0, 7200.0,
];

/// Buckets for one sync cycle: an idle cycle takes milliseconds; a large one, paced at a few
/// requests per second, takes minutes; past 40 minutes it overruns the next cycle.
const CYCLE_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1200.0, 2400.0, 3600.0,
];

/// Buckets for one SCIM request: loopback emulator calls take ~1 ms, AWS tens to hundreds of ms,
/// and the client's timeout caps the tail.
const SCIM_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    /// Builds and registers every metric, plus process metrics.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let events_received = IntCounterVec::new(
            Opts::new(
                "pimbridge_events_received_total",
                "Events received, by source, type and outcome.",
            ),
            &["source", "type", "outcome"],
        )?;
        let activations = IntCounterVec::new(
            Opts::new(
                "pimbridge_activations_total",
                "Activations admitted, by application and lane (immediate or deferred).",
            ),
            &["application", "lane"],
        )?;
        let provisioning_latency = HistogramVec::new(
            HistogramOpts::new(
                "pimbridge_provisioning_latency_seconds",
                "Time from receipt of an event to AWS confirming the membership change.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["application", "lane", "action"],
        )?;
        let scim_requests = IntCounterVec::new(
            Opts::new(
                "pimbridge_scim_requests_total",
                "SCIM requests sent to AWS, by application, method and status.",
            ),
            &["application", "method", "status"],
        )?;
        let scim_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "pimbridge_scim_request_duration_seconds",
                "Duration of SCIM requests to AWS, by application and method.",
            )
            .buckets(SCIM_BUCKETS.to_vec()),
            &["application", "method"],
        )?;
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "pimbridge_queue_depth",
                "Jobs waiting to be applied, by application and lane.",
            ),
            &["application", "lane"],
        )?;
        let queue_oldest_age = GaugeVec::new(
            Opts::new(
                "pimbridge_queue_oldest_age_seconds",
                "Age of the oldest job waiting to be applied, by application and lane (0 when none waits).",
            ),
            &["application", "lane"],
        )?;
        let inbound_rate_limited = IntCounterVec::new(
            Opts::new(
                "pimbridge_inbound_rate_limited_total",
                "Intake requests refused with 429 by the per-client rate limit, by route.",
            ),
            &["route"],
        )?;
        let application_quarantined = IntGaugeVec::new(
            Opts::new(
                "pimbridge_application_quarantined",
                "1 while the application is quarantined (AWS refuses it or its changes fail).",
            ),
            &["application"],
        )?;
        let cycles = IntCounterVec::new(
            Opts::new(
                "pimbridge_cycles_total",
                "Sync cycles run, by application and outcome.",
            ),
            &["application", "outcome"],
        )?;
        let drift = IntCounterVec::new(
            Opts::new(
                "pimbridge_drift_total",
                "Memberships where AWS differed from what pimbridge left there (someone edited AWS), found and repaired by cycles.",
            ),
            &["application", "kind"],
        )?;
        let cycle_duration = HistogramVec::new(
            HistogramOpts::new(
                "pimbridge_cycle_duration_seconds",
                "Duration of sync cycles, by application.",
            )
            .buckets(CYCLE_BUCKETS.to_vec()),
            &["application"],
        )?;
        let cycle_held = IntGaugeVec::new(
            Opts::new(
                "pimbridge_cycle_held",
                "1 while the application's latest sync cycle held its removals back (more were due than max_removals_per_cycle) and waits for an operator.",
            ),
            &["application"],
        )?;
        let handler_panics = IntCounter::new(
            "pimbridge_handler_panics_total",
            "Request handlers that panicked and were answered with 500.",
        )?;
        let shared_gauge_refreshes = IntCounter::new(
            "pimbridge_shared_metric_refreshes_total",
            "Background refreshes of the gauges read from Postgres (queue depth, quarantine).",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "pimbridge_build_info",
                "1, labelled with the version and the revision (git commit) of this build.",
            ),
            &["version", "revision"],
        )?;
        build_info.with_label_values(&[VERSION, REVISION]).set(1);
        let http_requests = IntCounterVec::new(
            Opts::new(
                "pimbridge_http_requests_total",
                "HTTP requests served, by listener (public, internal), route pattern, method and \
                 status.",
            ),
            &["listener", "route", "method", "status"],
        )?;
        let http_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "pimbridge_http_request_duration_seconds",
                "Time to serve HTTP requests, by listener, route pattern and method.",
            )
            .buckets(HTTP_BUCKETS.to_vec()),
            &["listener", "route", "method"],
        )?;
        let jobs_failed = IntGaugeVec::new(
            Opts::new(
                "pimbridge_jobs_failed",
                "Jobs in state failed, by application (they wait for an operator).",
            ),
            &["application"],
        )?;
        let live_replicas = IntGauge::new(
            "pimbridge_live_replicas",
            "Live replicas as this replica's heartbeat last counted them (the SCIM budgets are divided among them).",
        )?;
        let scim_rate_limit = GaugeVec::new(
            Opts::new(
                "pimbridge_scim_rate_limit_requests_per_second",
                "This replica's share of the application's SCIM request rate, by lane (immediate or cycles).",
            ),
            &["application", "lane"],
        )?;
        let scim_burst_limit = IntGaugeVec::new(
            Opts::new(
                "pimbridge_scim_rate_limit_burst",
                "This replica's share of the application's SCIM burst, by lane (immediate or cycles).",
            ),
            &["application", "lane"],
        )?;
        registry.register(Box::new(live_replicas.clone()))?;
        registry.register(Box::new(scim_rate_limit.clone()))?;
        registry.register(Box::new(scim_burst_limit.clone()))?;
        registry.register(Box::new(build_info.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_request_duration.clone()))?;
        registry.register(Box::new(jobs_failed.clone()))?;
        registry.register(Box::new(handler_panics.clone()))?;
        registry.register(Box::new(shared_gauge_refreshes.clone()))?;
        registry.register(Box::new(events_received.clone()))?;
        registry.register(Box::new(activations.clone()))?;
        registry.register(Box::new(provisioning_latency.clone()))?;
        registry.register(Box::new(scim_requests.clone()))?;
        registry.register(Box::new(scim_request_duration.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(queue_oldest_age.clone()))?;
        registry.register(Box::new(inbound_rate_limited.clone()))?;
        registry.register(Box::new(application_quarantined.clone()))?;
        registry.register(Box::new(cycles.clone()))?;
        registry.register(Box::new(drift.clone()))?;
        registry.register(Box::new(cycle_duration.clone()))?;
        registry.register(Box::new(cycle_held.clone()))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            events_received,
            activations,
            provisioning_latency,
            scim_requests,
            scim_request_duration,
            queue_depth,
            queue_oldest_age,
            inbound_rate_limited,
            application_quarantined,
            cycles,
            drift,
            cycle_duration,
            cycle_held,
            handler_panics,
            shared_gauge_refreshes,
            build_info,
            http_requests,
            http_request_duration,
            jobs_failed,
            live_replicas,
            scim_rate_limit,
            scim_burst_limit,
        })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// Feeds the SCIM client's per-request reports into the SCIM metrics of one application.
pub struct ScimObserver {
    metrics: Metrics,
    application: String,
}

impl ScimObserver {
    pub fn new(metrics: Metrics, application: impl Into<String>) -> Self {
        Self {
            metrics,
            application: application.into(),
        }
    }
}

impl crate::scim::RequestObserver for ScimObserver {
    fn observe(&self, method: &'static str, status: Option<u16>, elapsed: std::time::Duration) {
        let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        self.metrics
            .scim_requests
            .with_label_values(&[self.application.as_str(), method, status.as_str()])
            .inc();
        self.metrics
            .scim_request_duration
            .with_label_values(&[self.application.as_str(), method])
            .observe(elapsed.as_secs_f64());
    }
}

/// This replica's outbound budgets: the pacer of every SCIM client (each application, both
/// lanes), whose configured budget is the application's across all replicas. The heartbeat's
/// live count divides them (docs/architecture.md, "Outbound budgets"); the count and the shares
/// are published as gauges.
pub struct ScimBudgets {
    metrics: Metrics,
    pacers: Vec<(String, &'static str, Arc<Pacer>)>,
    /// The count the shares were last divided by (0 before the first count).
    replicas: AtomicU32,
}

impl ScimBudgets {
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

    /// Divides every budget among `live` replicas when the count changed.
    pub fn divide(&self, live: u32) {
        let live = live.max(1);
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
