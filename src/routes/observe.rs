//! Middleware: counts and times every HTTP request in `pimbridge_http_requests_total` and
//! `pimbridge_http_request_duration_seconds`, labelled with the listener, the matched route
//! *pattern* (`/admin/applications/{name}`, never the path a client chose, so the label set stays
//! bounded; `unmatched` for anything no route matches), the method (`other` for unusual ones) and
//! the status. Outermost, so that answers made by other middleware (429, a caught panic's 500)
//! count too.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web;

use super::Listener;
use crate::state::AppState;

/// The `route` label of requests no route matches.
pub const UNMATCHED: &str = "unmatched";

/// A method label from a fixed set.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware: records the request's outcome and duration.
pub async fn observe_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    // Matched against the application's route table, not the routing state of this request.
    let route = req.match_pattern().unwrap_or_else(|| UNMATCHED.to_owned());
    let method = method_label(req.method());
    let listener = req
        .app_data::<Listener>()
        .copied()
        .unwrap_or(Listener::Public);
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let result = next.call(req).await;
    if let Some(state) = state {
        let status = match &result {
            Ok(response) => response.status(),
            Err(error) => error.as_response_error().status_code(),
        };
        let labels = [listener.label(), route.as_str(), method];
        state
            .metrics
            .http_requests
            .with_label_values(&[labels[0], labels[1], labels[2], status.as_str()])
            .inc();
        state
            .metrics
            .http_request_duration
            .with_label_values(&labels)
            .observe(started.elapsed().as_secs_f64());
    }
    result
}
