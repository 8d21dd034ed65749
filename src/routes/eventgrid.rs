//! `OPTIONS, POST /webhooks/eventgrid`: Azure Event Grid deliveries (docs/webhooks.md).
//!
//! - `OPTIONS` is the CloudEvents abuse-protection handshake (docs/webhooks.md). It needs
//!   no credentials, because Event Grid sends none, and it stores nothing: we consent to any origin
//!   that asks, at any rate, since every delivery is authenticated anyway.
//! - `POST` runs the same checks as `/v1/events`, in the same order: size (413) → authentication
//!   over the raw body (401) → content type (415) → parsing (400/413) → one transaction (202 only
//!   after commit). Event Grid's own handshake (`aeg-event-type: SubscriptionValidation`) is
//!   authenticated too: secure webhook delivery sends its Entra token on it as on every delivery,
//!   and an unauthenticated echo would let anyone subscribe us to their topic.
//!
//! Audit records become events with source `eventgrid`. Graph notifications (from a Graph partner
//! topic) go through the same parser, store and counters as on `/webhooks/graph` when `[graph]` is
//! configured: their `clientState` is checked and they become hints for the resolver. Without
//! `[graph]` they are acknowledged with a 202 (Event Grid would otherwise retry them for a day),
//! counted and ignored.

use actix_web::http::header::{HeaderName, HeaderValue, ALLOW};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::events::{commit_unless_empty, counting_rejections, media_type, read_authenticated};
use crate::domain::EventSource;
use crate::error::ApiError;
use crate::intake::counting::{self, Outcome};
use crate::intake::eventgrid::{parse_delivery, Delivery, EventGridBatch, Schema, SkippedContent};
use crate::intake::graph::{self as notifications, Recorded};
use crate::state::AppState;

/// Where Event Grid delivers.
const PATH: &str = "/webhooks/eventgrid";
/// Who asks for consent in the abuse-protection handshake (`eventgrid.azure.net` for Event Grid).
const REQUEST_ORIGIN: HeaderName = HeaderName::from_static("webhook-request-origin");
/// Our consent: the origin allowed to deliver.
const ALLOWED_ORIGIN: HeaderName = HeaderName::from_static("webhook-allowed-origin");
/// Our consent: how many requests per minute; `*` for no limit (intake takes what comes, and
/// admission decides what is sent at once).
const ALLOWED_RATE: HeaderName = HeaderName::from_static("webhook-allowed-rate");
/// The methods this path answers.
const ALLOWED_METHODS: &str = "POST, OPTIONS";
/// Event Grid's delivery kind header; its handshake says `SubscriptionValidation`.
const EVENT_TYPE_HEADER: &str = "aeg-event-type";
const SUBSCRIPTION_VALIDATION: &str = "SubscriptionValidation";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(PATH)
            .route(web::post().to(post_eventgrid))
            .route(web::method(Method::OPTIONS).to(consent)),
    );
}

/// Answers the abuse-protection handshake: consent to the origin that asks, at any rate.
async fn consent(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    let origin = request
        .headers()
        .get(REQUEST_ORIGIN)
        .filter(|origin| !origin.is_empty())
        .ok_or(ApiError::MissingWebhookOrigin)?;
    tracing::info!(webhook.origin = ?origin, "consented to webhook deliveries");
    Ok(HttpResponse::Ok()
        .insert_header((ALLOWED_ORIGIN, origin.clone()))
        .insert_header((ALLOWED_RATE, HeaderValue::from_static("*")))
        .insert_header((ALLOW, HeaderValue::from_static(ALLOWED_METHODS)))
        .finish())
}

#[tracing::instrument(
    name = "intake",
    skip_all,
    fields(source = "eventgrid", events = tracing::field::Empty, ignored = tracing::field::Empty)
)]
async fn post_eventgrid(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    counting_rejections(
        &state,
        EventSource::EventGrid,
        accept(&request, payload, &state),
    )
    .await
}

async fn accept(
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let (body, caller) = read_authenticated(request, payload, state).await?;
    let schema =
        Schema::from_media_type(&media_type(request)).ok_or(ApiError::UnsupportedMediaType {
            expected: Schema::MEDIA_TYPES,
        })?;
    let announced = request
        .headers()
        .get(EVENT_TYPE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(SUBSCRIPTION_VALIDATION));

    let mut batch = match parse_delivery(&body, schema, announced)? {
        Delivery::Validation { code } => {
            tracing::info!(?caller, "answered an Event Grid subscription validation");
            return Ok(HttpResponse::Ok().json(json!({ "validationResponse": code })));
        }
        Delivery::Events(batch) => batch,
    };
    let span = tracing::Span::current();
    span.record("events", batch.events.len());
    span.record("ignored", batch.skipped.len());
    for warning in &batch.warnings {
        tracing::warn!(warning = %warning, "part of an audit record was left out");
    }

    // Graph notifications become hints when Graph is configured, exactly as on /webhooks/graph;
    // their clientState is checked before anything is stored.
    let graph_items = match &state.graph_client_state {
        Some(client_state) if !batch.graph_notifications_data.is_empty() => Some(
            notifications::verify(client_state, &batch.graph_notifications_data)?,
        ),
        _ => None,
    };
    if graph_items.is_some() && !state.is_bootstrapped() {
        return Err(ApiError::NotReady);
    }
    // A delivery of only skipped events has nothing to store.
    let (accepted, duplicates) =
        commit_unless_empty(state, EventSource::EventGrid, &batch.events).await?;
    let recorded = match graph_items {
        Some(items) => {
            let recorded = notifications::record(&state.pool, &state.intake, items).await?;
            notifications::count(&state.metrics, EventSource::EventGrid, &recorded);
            batch
                .skipped
                .retain(|s| !matches!(s.content, SkippedContent::GraphNotification));
            recorded
        }
        None => Recorded::default(),
    };
    count_skipped(state, &batch);
    tracing::debug!(?caller, "Event Grid intake committed");
    Ok(HttpResponse::Accepted().json(json!({
        "accepted": accepted,
        "duplicates": duplicates,
        "ignored": batch.skipped.len() + recorded.ignored,
        "hints": recorded.hints,
    })))
}

/// Counts and logs what was skipped, with one warning per request for Graph notifications that
/// cannot be resolved. Called only once the request has succeeded, so a refused request counts
/// once, as rejected.
fn count_skipped(state: &AppState, batch: &EventGridBatch) {
    let notifications = batch.graph_notifications();
    if notifications > 0 {
        tracing::warn!(
            notifications,
            "Microsoft Graph notifications acknowledged but ignored: configure [graph] so that \
             pimbridge can resolve them"
        );
    }
    for skipped in &batch.skipped {
        let context = format!(
            "[{}] (Event Grid event {})",
            skipped.event, skipped.event_id
        );
        match &skipped.content {
            SkippedContent::AuditRecord(record) => {
                record.report(&state.metrics, EventSource::EventGrid, &context);
            }
            SkippedContent::GraphNotification | SkippedContent::Other => {
                tracing::debug!(event = %context, event.type = skipped.type_label(),
                    reason = skipped.reason(), "Event Grid content ignored");
                counting::count(
                    &state.metrics,
                    EventSource::EventGrid,
                    skipped.type_label(),
                    Outcome::Ignored,
                    1,
                );
            }
        }
    }
}
