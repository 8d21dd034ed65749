//! HTTP routes. Each module exposes `configure` for its paths; [`configure_public`] and
//! [`configure_internal`] assemble the two listeners (`server.listen`, `server.internal_listen`).

pub mod admin;
pub mod audit;
pub mod eventgrid;
pub mod events;
pub mod graph;
pub mod health;
pub mod limit;
pub mod metrics;
pub mod observe;
pub mod openapi;
pub mod recover;

use actix_web::web;

/// Which of the two listeners a server is (the `listener` label of the HTTP metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `server.listen`: what senders and Kubernetes probes reach.
    Public,
    /// `server.internal_listen`: what only the cluster reaches.
    Internal,
}

impl Listener {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Internal => "internal",
        }
    }
}

/// The public listener: the inputs (`/v1/events`, `/webhooks/…`) and the probes.
pub fn configure_public(cfg: &mut web::ServiceConfig) {
    audit::configure(cfg);
    events::configure(cfg);
    eventgrid::configure(cfg);
    graph::configure(cfg);
    health::configure(cfg);
}

/// The internal listener: `/metrics`, the admin API and the probes.
pub fn configure_internal(cfg: &mut web::ServiceConfig) {
    admin::configure(cfg);
    health::configure(cfg);
    metrics::configure(cfg);
    openapi::configure(cfg);
}
