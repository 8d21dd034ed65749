//! `GET /metrics`: Prometheus text exposition. Queue depths and quarantines are read from Postgres
//! at scrape time (they are shared by all replicas, so no replica can count them itself).

use std::time::Duration;

use actix_web::{web, HttpResponse};

use crate::state::AppState;

/// How long a scrape waits for queue depths before answering without fresh ones.
const DEPTH_DEADLINE: Duration = Duration::from_secs(2);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics));
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    if tokio::time::timeout(DEPTH_DEADLINE, refresh_shared_gauges(&state))
        .await
        .is_err()
    {
        tracing::warn!("queue depth not refreshed: database too slow");
    }
    match state.metrics.render() {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        Err(e) => {
            tracing::error!(error.message = %e, "cannot render metrics");
            HttpResponse::InternalServerError().finish()
        }
    }
}

async fn refresh_shared_gauges(state: &AppState) {
    if !state.is_bootstrapped() {
        return;
    }
    let Ok(client) = state.pool.get().await else {
        return;
    };
    let Ok(rows) = client
        .query(
            "SELECT application, lane, count(*) FROM jobs
             WHERE state IN ('pending', 'running') GROUP BY application, lane",
            &[],
        )
        .await
    else {
        return;
    };
    let quarantined = client
        .query(
            "SELECT name FROM applications WHERE quarantined_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap_or_default();
    for application in &state.applications {
        let in_quarantine = quarantined
            .iter()
            .any(|r| r.get::<_, &str>(0) == application);
        state
            .metrics
            .application_quarantined
            .with_label_values(&[application.as_str()])
            .set(i64::from(in_quarantine));
        for lane in ["immediate", "deferred"] {
            let depth = rows
                .iter()
                .find(|r| r.get::<_, &str>(0) == application && r.get::<_, &str>(1) == lane)
                .map_or(0, |r| r.get::<_, i64>(2));
            state
                .metrics
                .queue_depth
                .with_label_values(&[application.as_str(), lane])
                .set(depth);
        }
    }
}
