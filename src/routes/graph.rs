//! `POST /webhooks/graph`: Microsoft Graph change notifications (docs/webhooks.md).
//!
//! The route answers the `validationToken` handshake, then hands the body to the notification
//! parser ([`crate::intake::graph`]), which Event Grid deliveries from a Graph partner topic share:
//! every item's `clientState` is checked, one hint per assigned group is stored in Postgres, and
//! the answer is 202 within Graph's 3-second budget. The resolver (`resolve`) asks Graph what is
//! active and turns the differences into events.

use actix_web::http::header::ContentType;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::events::read_body;
use crate::domain::EventSource;
use crate::error::ApiError;
use crate::intake::graph::{self as notifications, NotificationError};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/graph", web::post().to(post_graph));
}

#[derive(Deserialize)]
struct Handshake {
    #[serde(rename = "validationToken")]
    validation_token: Option<String>,
}

impl From<NotificationError> for ApiError {
    fn from(error: NotificationError) -> Self {
        match error {
            NotificationError::Malformed(reason) => Self::InvalidNotification(reason),
            NotificationError::ClientState { .. } => Self::InvalidClientState,
        }
    }
}

#[tracing::instrument(name = "intake", skip_all, fields(source = "graph"))]
async fn post_graph(
    request: HttpRequest,
    handshake: web::Query<Handshake>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let client_state = state
        .graph_client_state
        .as_ref()
        .ok_or(ApiError::GraphDisabled)?;
    // The subscription handshake carries no JSON: echo the token before anything else.
    if let Some(token) = &handshake.validation_token {
        tracing::info!("Graph subscription validation answered");
        return Ok(HttpResponse::Ok()
            .content_type(ContentType::plaintext())
            .insert_header(("x-content-type-options", "nosniff"))
            .body(token.clone()));
    }
    let body = read_body(&request, payload, state.max_body_bytes).await?;
    let items = notifications::verify(client_state, &notifications::parse_collection(&body)?)?;
    if !state.is_bootstrapped() {
        return Err(ApiError::NotReady);
    }
    let recorded = notifications::record(&state.pool, &state.intake, items).await?;
    notifications::count(&state.metrics, EventSource::Graph, &recorded);
    Ok(HttpResponse::Accepted()
        .json(json!({ "hints": recorded.hints, "ignored": recorded.ignored })))
}
