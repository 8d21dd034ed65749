//! HTTP routes. Each module exposes `configure` for its paths.

pub mod admin;
pub mod audit;
pub mod eventgrid;
pub mod events;
pub mod graph;
pub mod health;
pub mod limit;
pub mod metrics;
pub mod recover;

use actix_web::web;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    admin::configure(cfg);
    audit::configure(cfg);
    events::configure(cfg);
    eventgrid::configure(cfg);
    graph::configure(cfg);
    health::configure(cfg);
    metrics::configure(cfg);
}
