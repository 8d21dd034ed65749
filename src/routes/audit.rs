//! `POST /webhooks/audit`: Entra audit-log records as Azure Monitor exports them (docs/webhooks.md).
//!
//! The same checks as `/v1/events`, in the same order and with the same errors: size (413) →
//! authentication over the raw body (401) → content type (415) → parsing (400/413) → one
//! transaction (202 only after commit). PIM-for-Groups activations and deactivations become events
//! with source `audit` and the record's `id` as idempotency key; every other record is counted as
//! ignored and not stored.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::events::{commit_unless_empty, counting_rejections, read_authenticated_json};
use crate::domain::EventSource;
use crate::error::ApiError;
use crate::intake::audit::{parse_records, AuditBatch};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/audit", web::post().to(post_audit));
}

#[derive(Serialize)]
struct Accepted {
    accepted: usize,
    duplicates: usize,
    ignored: usize,
}

#[tracing::instrument(
    name = "intake",
    skip_all,
    fields(source = "audit", events = tracing::field::Empty, ignored = tracing::field::Empty)
)]
async fn post_audit(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    counting_rejections(
        &state,
        EventSource::Audit,
        accept(&request, payload, &state),
    )
    .await
}

async fn accept(
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let (body, caller) = read_authenticated_json(request, payload, state).await?;
    let batch = parse_records(&body)?;
    let span = tracing::Span::current();
    span.record("events", batch.events.len());
    span.record("ignored", batch.ignored.len());
    for warning in &batch.warnings {
        tracing::warn!(warning = %warning, "part of an audit record was left out");
    }

    // A batch of only unrelated records has nothing to store.
    let (accepted, duplicates) =
        commit_unless_empty(state, EventSource::Audit, &batch.events).await?;
    count_ignored(state, &batch);
    tracing::debug!(?caller, "audit intake committed");
    Ok(HttpResponse::Accepted().json(Accepted {
        accepted,
        duplicates,
        ignored: batch.ignored.len(),
    }))
}

/// Counts and logs the skipped records (type = the activity class or `unknown`; outcome
/// `ignored`, `ignored_owner` or `unusable`). Called only once the request has succeeded, so a
/// refused request counts once, as rejected.
fn count_ignored(state: &AppState, batch: &AuditBatch) {
    for record in &batch.ignored {
        let context = format!("records[{}]", record.index);
        record.report(&state.metrics, EventSource::Audit, &context);
    }
}
