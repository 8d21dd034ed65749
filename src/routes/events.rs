//! `POST /v1/events`: our own JSON event, one or a batch (docs/webhooks.md).
//!
//! Order of checks: size (413) → authentication over the raw body (401) → content type (415) →
//! parsing (400/413) → one transaction (202 only after commit; 503 if the database is away).
//! The steps every intake route shares (reading and authenticating the body, committing, counting
//! outcomes through [`crate::intake::counting`]) are `pub(crate)` here so that `/webhooks/audit`
//! and `/webhooks/eventgrid` run exactly the same checks.

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Serialize;

use crate::auth::Caller;
use crate::domain::EventSource;
use crate::error::ApiError;
use crate::intake::counting::{self, Outcome};
use crate::intake::event::{parse_body, NewEvent};
use crate::intake::validate;
use crate::intake::IntakeSummary;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/events", web::post().to(post_events));
}

#[derive(Serialize)]
struct Accepted {
    accepted: usize,
    duplicates: usize,
}

#[tracing::instrument(name = "intake", skip_all, fields(source = "api", events = tracing::field::Empty))]
async fn post_events(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    counting_rejections(&state, EventSource::Api, accept(&request, payload, &state)).await
}

async fn accept(
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let (body, caller) = read_authenticated_json(request, payload, state).await?;
    let events = parse_body(&body)?;
    tracing::Span::current().record("events", events.len());
    let summary = commit_events(state, EventSource::Api, &events).await?;
    tracing::debug!(?caller, "intake committed");
    Ok(HttpResponse::Accepted().json(Accepted {
        accepted: summary.accepted(),
        duplicates: summary.duplicates(),
    }))
}

/// The checks before parsing, in order: size (413) → authentication over the raw body (401) →
/// content type (415). Returns the raw body and who sent it.
pub(crate) async fn read_authenticated_json(
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(web::BytesMut, Caller), ApiError> {
    let read = read_authenticated(request, payload, state).await?;
    require_json(request)?;
    Ok(read)
}

/// The first two checks before parsing: size (413) → authentication over the raw body (401).
/// For routes that read more than `application/json`; they check the content type next.
pub(crate) async fn read_authenticated(
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(web::BytesMut, Caller), ApiError> {
    let body = read_body(request, payload, state.max_body_bytes).await?;
    let caller = state
        .authenticator
        .authenticate(request.headers(), &body)
        .await?;
    Ok((body, caller))
}

/// Stores `events` from `source` in one transaction (503 until the schema is in place), then
/// counts and logs each event's outcome.
pub(crate) async fn commit_events(
    state: &AppState,
    source: EventSource,
    events: &[NewEvent],
) -> Result<IntakeSummary, ApiError> {
    let events = validate::events(events, &validate::Bounds::now(state.max_clock_skew))?;
    if !state.is_bootstrapped() {
        return Err(ApiError::NotReady);
    }
    let summary = state.intake.record(source, &events).await?;
    counting::count_summary(&state.metrics, source, &summary);
    Ok(summary)
}

/// Stores `events` like [`commit_events`]; a batch with nothing to store (only records that
/// were skipped) stores nothing. Returns (accepted, duplicates).
pub(crate) async fn commit_unless_empty(
    state: &AppState,
    source: EventSource,
    events: &[NewEvent],
) -> Result<(usize, usize), ApiError> {
    if events.is_empty() {
        return Ok((0, 0));
    }
    let summary = commit_events(state, source, events).await?;
    Ok((summary.accepted(), summary.duplicates()))
}

/// Runs an intake handler's work, counting a refused request once, as rejected, for `source`.
pub(crate) async fn counting_rejections(
    state: &AppState,
    source: EventSource,
    work: impl std::future::Future<Output = Result<HttpResponse, ApiError>>,
) -> Result<HttpResponse, ApiError> {
    let result = work.await;
    if let Err(error) = &result {
        count_rejection(state, source, error);
    }
    result
}

/// Counts a refused request (one `rejected` sample, type `unknown`) and logs why, unless the
/// error is server-side: those are logged with their chain where the response is built.
pub(crate) fn count_rejection(state: &AppState, source: EventSource, error: &ApiError) {
    counting::count(
        &state.metrics,
        source,
        counting::UNKNOWN,
        Outcome::Rejected,
        1,
    );
    if !actix_web::ResponseError::status_code(error).is_server_error() {
        tracing::info!(error.code = error.code(), error.message = %error, "event request rejected");
    }
}

/// Reads the raw body (needed for the signature), refusing more than `limit` bytes.
pub async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let declared = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::BodyUnreadable)?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Accepts `application/json`, with or without parameters.
fn require_json(request: &HttpRequest) -> Result<(), ApiError> {
    if media_type(request) == "application/json" {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType {
            expected: "application/json",
        })
    }
}

/// The request's media type without parameters (`charset`, …), in lower case; empty if none.
pub(crate) fn media_type(request: &HttpRequest) -> String {
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}
