//! `GET /metrics`: Prometheus text exposition. Queue depths, failed jobs and quarantines are shared by all
//! replicas, so they are read from Postgres, but by [`refresh_loop`] in the background: a scrape
//! only renders what is in memory, so any number of scrapers costs no database query.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How long one background refresh may wait for the database.
const REFRESH_DEADLINE: Duration = Duration::from_secs(2);
/// How long one rendering of the exposition answers scrapes.
const RENDER_REUSE: Duration = Duration::from_millis(100);
/// Wait before trying again after a refresh that could not read the database.
const RETRY_SOON: Duration = Duration::from_millis(250);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics));
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    match rendered(&state) {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        Err(e) => {
            tracing::error!(error.message = %e, "cannot render metrics");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// The exposition, rendered at most once per [`RENDER_REUSE`].
fn rendered(state: &AppState) -> Result<web::Bytes, prometheus::Error> {
    let mut cache = state
        .rendered_metrics
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((at, text)) = cache.as_ref() {
        if at.elapsed() < RENDER_REUSE {
            return Ok(text.clone());
        }
    }
    let text = web::Bytes::from(state.metrics.render()?);
    *cache = Some((std::time::Instant::now(), text.clone()));
    Ok(text)
}

/// Refreshes the shared gauges every `interval` until `shutdown`.
pub async fn refresh_loop(
    state: web::Data<AppState>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let refreshed =
            match tokio::time::timeout(REFRESH_DEADLINE, refresh_shared_gauges(&state)).await {
                Ok(true) => {
                    state.metrics.shared_gauge_refreshes.inc();
                    true
                }
                Ok(false) => false,
                Err(_) => {
                    tracing::warn!("queue depth not refreshed: database too slow");
                    false
                }
            };
        // Until the first success (start-up, database away) try again sooner.
        let wait = if refreshed {
            interval
        } else {
            interval.min(RETRY_SOON)
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Reads the gauges (on the probes' pool, never taking a request's connection); false when the
/// database could not be read.
async fn refresh_shared_gauges(state: &AppState) -> bool {
    if !state.is_bootstrapped() {
        return false;
    }
    let Ok(client) = state.probe_pool.get().await else {
        return false;
    };
    // Every column of `jobs_by_state` is bound, so each count walks only the jobs it counts. A
    // condition on the state alone read every job kept (10,000,000 in the retention benchmark),
    // and kept a core busy while retention had left many of them dead.
    let applications: Vec<&str> = state.applications.iter().map(String::as_str).collect();
    let Ok(rows) = client
        .query(
            "SELECT application, lane, count(*),
                    extract(epoch FROM now() - min(created_at))::float8
             FROM jobs
             WHERE application = ANY($1) AND lane IN ('immediate', 'deferred')
               AND state IN ('pending', 'running')
             GROUP BY application, lane",
            &[&applications],
        )
        .await
    else {
        return false;
    };
    let Ok(failed) = client
        .query(
            "SELECT application, count(*) FROM jobs
             WHERE application = ANY($1) AND lane IN ('immediate', 'deferred')
               AND state = 'failed'
             GROUP BY application",
            &[&applications],
        )
        .await
    else {
        return false;
    };
    let quarantined = client
        .query(
            "SELECT name FROM applications WHERE quarantined_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap_or_default();
    refresh_cycle_held(state, &client).await;
    for application in &state.applications {
        let in_quarantine = quarantined
            .iter()
            .any(|r| r.get::<_, &str>(0) == application);
        state
            .metrics
            .application_quarantined
            .with_label_values(&[application.as_str()])
            .set(i64::from(in_quarantine));
        let failed_jobs = failed
            .iter()
            .find(|r| r.get::<_, &str>(0) == application)
            .map_or(0, |r| r.get::<_, i64>(1));
        state
            .metrics
            .jobs_failed
            .with_label_values(&[application.as_str()])
            .set(failed_jobs);
        for lane in ["immediate", "deferred"] {
            let row = rows
                .iter()
                .find(|r| r.get::<_, &str>(0) == application && r.get::<_, &str>(1) == lane);
            let labels = [application.as_str(), lane];
            let depth = row.map_or(0, |r| r.get::<_, i64>(2));
            state
                .metrics
                .queue_depth
                .with_label_values(&labels)
                .set(depth);
            let oldest = row.map_or(0.0, |r| r.get::<_, f64>(3).max(0.0));
            state
                .metrics
                .queue_oldest_age
                .with_label_values(&labels)
                .set(oldest);
        }
    }
    true
}

/// Sets `pimbridge_cycle_held` from each application's latest finished cycle.
async fn refresh_cycle_held(state: &AppState, client: &deadpool_postgres::Object) {
    let Ok(held) = client
        .query(
            "SELECT a.name, c.outcome = 'held' FROM applications a
             CROSS JOIN LATERAL (
                 SELECT outcome FROM cycles
                 WHERE application = a.name AND outcome <> 'running'
                 ORDER BY id DESC LIMIT 1) c",
            &[],
        )
        .await
    else {
        return;
    };
    for application in &state.applications {
        let is_held = held
            .iter()
            .any(|r| r.get::<_, &str>(0) == application && r.get::<_, bool>(1));
        state
            .metrics
            .cycle_held
            .with_label_values(&[application.as_str()])
            .set(i64::from(is_held));
    }
}
