//! Liveness and readiness probes.
//!
//! Live: the process answers. Ready: the database answers within a short deadline *and* the schema
//! is at this binary's version — checked on every probe, so readiness follows the database down
//! and back up without a restart. The check uses a small pool of its own (`AppState::probe_pool`):
//! a burst that holds every request connection must not take a healthy pod out of service.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;
use crate::store::migrate;

/// How long a readiness probe waits for the database.
const READY_DEADLINE: Duration = Duration::from_secs(2);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready));
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let check = async {
        let client = state
            .probe_pool
            .get()
            .await
            .map_err(|_| "database unreachable")?;
        let version = migrate::current_version(&client)
            .await
            .map_err(|_| "database unreachable")?;
        if version < migrate::latest_version() || !state.is_bootstrapped() {
            return Err("migrations not applied");
        }
        Ok(())
    };
    match tokio::time::timeout(READY_DEADLINE, check).await {
        Ok(Ok(())) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Ok(Err(reason)) => HttpResponse::ServiceUnavailable().json(json!({"status": reason})),
        Err(_) => {
            HttpResponse::ServiceUnavailable().json(json!({"status": "database unreachable"}))
        }
    }
}
