//! Inbound rate limiting of the intake routes (`/v1/…`, `/webhooks/…`), per client, with governor
//! (DESIGN.md §3: governor is for abusive callers, not for admission). A client over its limit gets
//! 429 with `Retry-After` before its body is read or its signature checked, so a flood costs
//! little. Health, metrics and the admin API are not limited.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderName;
use actix_web::middleware::Next;
use actix_web::web;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::IntakeSettings;
use crate::error::ApiError;
use crate::state::AppState;

/// Per-client token buckets for the intake routes.
pub struct InboundLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    client_ip_header: Option<HeaderName>,
}

impl InboundLimiter {
    /// The limiter the settings ask for; `None` when `requests_per_second` is 0.
    pub fn from_settings(settings: &IntakeSettings) -> Option<Self> {
        let rate = NonZeroU32::new(settings.requests_per_second)?;
        let burst = NonZeroU32::new(settings.requests_burst).unwrap_or(rate);
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
            client_ip_header: settings
                .client_ip_header
                .as_deref()
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
        })
    }

    /// Counts a request from `client`; `Err` holds how long it should wait.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Drops the buckets of clients that have been quiet long enough to be full again, so that
    /// many one-off clients do not grow memory for ever.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Who sent `req`: the configured header's last address, else the peer address.
    fn client(&self, req: &ServiceRequest) -> Option<IpAddr> {
        let from_header = self.client_ip_header.as_ref().and_then(|name| {
            req.headers()
                .get(name)?
                .to_str()
                .ok()?
                .rsplit(',')
                .next()?
                .trim()
                .parse()
                .ok()
        });
        from_header.or_else(|| req.peer_addr().map(|a| a.ip()))
    }
}

/// The route label of a limited request (a fixed set, so that callers cannot grow the metric).
fn route_label(path: &str) -> Option<&'static str> {
    match path.trim_end_matches('/') {
        "/v1/events" => Some("/v1/events"),
        "/webhooks/audit" => Some("/webhooks/audit"),
        "/webhooks/eventgrid" => Some("/webhooks/eventgrid"),
        "/webhooks/graph" => Some("/webhooks/graph"),
        p if p.starts_with("/v1/") || p.starts_with("/webhooks/") => Some("other"),
        _ => None,
    }
}

/// Middleware: refuses intake requests over the client's limit with 429.
pub async fn limit_intake(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(route) = route_label(req.path()) {
        if let Some(state) = req.app_data::<web::Data<AppState>>() {
            if let Some(limiter) = &state.inbound_limiter {
                if let Some(client) = limiter.client(&req) {
                    if let Err(wait) = limiter.check(client) {
                        state
                            .metrics
                            .inbound_rate_limited
                            .with_label_values(&[route])
                            .inc();
                        tracing::warn!(client = %client, route, "intake request over the client's rate limit");
                        return Err(ApiError::RateLimited {
                            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                        }
                        .into());
                    }
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
    fn only_intake_routes_are_limited_and_their_labels_are_bounded() {
        assert_eq!(route_label("/v1/events"), Some("/v1/events"));
        assert_eq!(route_label("/webhooks/audit/"), Some("/webhooks/audit"));
        assert_eq!(
            route_label("/webhooks/whatever-an-attacker-sends"),
            Some("other")
        );
        assert_eq!(route_label("/health/ready"), None);
        assert_eq!(route_label("/admin/applications"), None);
        assert_eq!(route_label("/metrics"), None);
    }

    #[test]
    fn a_client_over_its_burst_must_wait_and_others_are_not_affected() {
        let settings = IntakeSettings {
            requests_per_second: 1,
            requests_burst: 2,
            ..IntakeSettings::default()
        };
        let limiter = InboundLimiter::from_settings(&settings).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limiter.check(a).is_ok());
        assert!(limiter.check(a).is_ok());
        let wait = limiter.check(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limiter.check(b).is_ok());
    }

    #[test]
    fn a_zero_rate_turns_the_limit_off() {
        let settings = IntakeSettings {
            requests_per_second: 0,
            ..IntakeSettings::default()
        };
        assert!(InboundLimiter::from_settings(&settings).is_none());
    }
}
