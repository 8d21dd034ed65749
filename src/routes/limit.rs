//! Per-client rate limiting (governor; for abusive callers, not for admission) of the intake
//! routes (`/v1/…`, `/webhooks/…`) and of the admin API (`/admin/…`, against token guessing). A
//! client over its limit gets 429 with `Retry-After` before its body is read or its credential
//! checked, so a flood costs little. Health and metrics are not limited. The client is who
//! [`crate::proxy`] says it is: the peer, or behind trusted proxies the address they saw.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;

use crate::auth::rate::ClientLimiter;
use crate::error::ApiError;
use crate::state::AppState;

/// Which limit a path falls under, and its route label (a fixed set, so that callers cannot grow
/// the metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limited {
    Intake(&'static str),
    Admin,
}

fn classify(path: &str) -> Option<Limited> {
    match path.trim_end_matches('/') {
        "/v1/events" => Some(Limited::Intake("/v1/events")),
        "/webhooks/audit" => Some(Limited::Intake("/webhooks/audit")),
        "/webhooks/eventgrid" => Some(Limited::Intake("/webhooks/eventgrid")),
        "/webhooks/graph" => Some(Limited::Intake("/webhooks/graph")),
        p if p.starts_with("/v1/") || p.starts_with("/webhooks/") => Some(Limited::Intake("other")),
        p if p == "/admin" || p.starts_with("/admin/") => Some(Limited::Admin),
        _ => None,
    }
}

impl Limited {
    fn label(self) -> &'static str {
        match self {
            Self::Intake(route) => route,
            Self::Admin => "/admin",
        }
    }

    fn limiter(self, state: &AppState) -> Option<&ClientLimiter> {
        match self {
            Self::Intake(_) => state.inbound_limiter.as_ref(),
            Self::Admin => state.admin_limiter.as_ref(),
        }
    }
}

/// Middleware: refuses intake and admin requests over the client's limit with 429.
pub async fn limit_clients(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(limited) = classify(req.path()) {
        if let Some(state) = req.app_data::<web::Data<AppState>>() {
            if let (Some(limiter), Some(peer)) = (limited.limiter(state), req.peer_addr()) {
                let client = state.trusted_proxies.client(peer.ip(), req.headers());
                if let Err(wait) = limiter.check(client) {
                    let route = limited.label();
                    state
                        .metrics
                        .inbound_rate_limited
                        .with_label_values(&[route])
                        .inc();
                    tracing::warn!(client = %client, route, "request over the client's rate limit");
                    return Err(ApiError::RateLimited {
                        retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                    }
                    .into());
                }
            }
        }
    }
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_intake_and_admin_routes_are_limited_and_their_labels_are_bounded() {
        let label = |p| classify(p).map(Limited::label);
        assert_eq!(label("/v1/events"), Some("/v1/events"));
        assert_eq!(label("/webhooks/audit/"), Some("/webhooks/audit"));
        assert_eq!(label("/webhooks/whatever-an-attacker-sends"), Some("other"));
        assert_eq!(label("/admin/applications"), Some("/admin"));
        assert_eq!(label("/health/ready"), None);
        assert_eq!(label("/metrics"), None);
        assert_eq!(label("/administrator"), None);
    }
}
