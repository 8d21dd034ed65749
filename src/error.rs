//! The HTTP edge's one error type: every failure a handler can have, mapped to a status and a
//! stable `{"code": "...", "message": "..."}` body in exactly one place.
//!
//! Modules keep their own error enums (`AuthError`, `EventError`, `StoreError`); handlers convert
//! them here. Server-side failures are logged with their whole chain and answered with a generic
//! message, so no internal detail (or secret) leaks to callers.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::auth::AuthError;
use crate::intake::event::EventError;
use crate::provision::ProvisionError;
use crate::store::StoreError;

/// Seconds a caller is told to wait after a 503.
const RETRY_AFTER_SECS: &str = "5";

/// An error answered to an HTTP caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    #[error(transparent)]
    InvalidEvent(#[from] EventError),
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The `Content-Type` is not one the route reads; `expected` lists those it does.
    #[error("Content-Type must be {expected}")]
    UnsupportedMediaType { expected: &'static str },
    /// An abuse-protection handshake (CloudEvents webhook spec, `OPTIONS`) without the origin
    /// that asks for consent.
    #[error("the OPTIONS handshake needs a WebHook-Request-Origin header naming the sender")]
    MissingWebhookOrigin,
    #[error("the request body could not be read")]
    BodyUnreadable,
    #[error("the service is starting; try again shortly")]
    NotReady,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("too many requests from this client; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("Graph notifications are off; configure [graph] to turn them on")]
    GraphDisabled,
    #[error("a notification's clientState does not match the subscriptions' secret")]
    InvalidClientState,
    #[error("{0}")]
    InvalidNotification(String),
    #[error("the admin API is off; set admin.token to turn it on")]
    AdminDisabled,
    #[error("the admin API needs `Authorization: Bearer <admin token>`")]
    AdminUnauthorized,
    #[error("no application named `{0}` is configured")]
    UnknownApplication(String),
    #[error("{0}")]
    InvalidRequest(String),
    /// A confirmation of held removals when the application's latest cycle held none.
    #[error("the latest cycle of `{0}` held no removals: there is nothing to confirm")]
    NothingHeld(String),
    /// A change AWS did not take (never a database failure: those become `Store`).
    #[error(transparent)]
    Provision(ProvisionError),
    /// A change AWS did not take, as a reconciliation reported it.
    #[error("{}", .0.reason)]
    ChangeFailed(crate::provision::Failure),
    /// A handler panicked (`routes::recover`); the panic itself is logged.
    #[error("internal error")]
    Internal,
}

impl From<ProvisionError> for ApiError {
    fn from(error: ProvisionError) -> Self {
        match error {
            ProvisionError::Store(e) => Self::Store(e),
            other => Self::Provision(other),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
}

impl ApiError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(e) => e.code(),
            Self::InvalidEvent(e) => e.code(),
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::MissingWebhookOrigin => "missing_origin",
            Self::BodyUnreadable => "body_unreadable",
            Self::NotReady => "not_ready",
            Self::Store(e) if e.is_transient() => "database_unavailable",
            Self::Store(e) if is_unstorable_input(e) => "invalid_character",
            Self::Store(_) => "internal_error",
            Self::RateLimited { .. } => "rate_limited",
            Self::GraphDisabled => "graph_disabled",
            Self::InvalidClientState => "invalid_client_state",
            Self::InvalidNotification(_) => "invalid_notification",
            Self::AdminDisabled => "admin_disabled",
            Self::AdminUnauthorized => "invalid_admin_token",
            Self::UnknownApplication(_) => "unknown_application",
            Self::InvalidRequest(_) => "invalid_request",
            Self::NothingHeld(_) => "nothing_held",
            Self::Provision(e) if e.is_auth() => "aws_refused_credentials",
            Self::Provision(e) if e.is_transient() => "aws_unavailable",
            Self::Provision(_) => "provisioning_refused",
            Self::ChangeFailed(f) if f.auth => "aws_refused_credentials",
            Self::ChangeFailed(f) if f.transient => "aws_unavailable",
            Self::ChangeFailed(_) => "provisioning_refused",
            Self::Internal => "internal_error",
        }
    }
}

impl ApiError {
    /// What the caller is told: the whole story for client errors, nothing internal for ours.
    fn public_message(&self) -> String {
        match self {
            Self::Store(e) if e.is_transient() => {
                "the database is unavailable; try again shortly".to_owned()
            }
            Self::Store(e) if is_unstorable_input(e) => {
                "a value holds a character that cannot be stored (such as NUL, \\u0000)".to_owned()
            }
            Self::Store(_) => "internal error".to_owned(),
            Self::Provision(e) => error_chain(e),
            Self::ChangeFailed(f) => f.reason.clone(),
            other => other.to_string(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(AuthError::KeysUnavailable) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::InvalidEvent(EventError::BatchTooLarge(_)) | Self::PayloadTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::InvalidEvent(_) | Self::BodyUnreadable => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::MissingWebhookOrigin => StatusCode::BAD_REQUEST,
            Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(e) if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(e) if is_unstorable_input(e) => StatusCode::BAD_REQUEST,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::GraphDisabled | Self::AdminDisabled | Self::UnknownApplication(_) => {
                StatusCode::NOT_FOUND
            }
            Self::InvalidClientState => StatusCode::UNAUTHORIZED,
            Self::InvalidNotification(_) => StatusCode::BAD_REQUEST,
            Self::AdminUnauthorized => StatusCode::UNAUTHORIZED,
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::NothingHeld(_) => StatusCode::CONFLICT,
            // AWS (or the way to it) failed: a gateway error, not ours.
            Self::Provision(e) if e.is_auth() || e.is_transient() => StatusCode::BAD_GATEWAY,
            Self::Provision(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::ChangeFailed(f) if f.auth || f.transient => StatusCode::BAD_GATEWAY,
            Self::ChangeFailed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(error.code = self.code(), error.chain = %error_chain(self), "request failed");
        }
        let message = self.public_message();
        let mut response = HttpResponse::build(status);
        match status {
            StatusCode::UNAUTHORIZED => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            StatusCode::TOO_MANY_REQUESTS => {
                if let Self::RateLimited { retry_after_secs } = self {
                    response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
                }
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                response.insert_header((
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                ));
            }
            _ => {}
        }
        response.json(ErrorBody {
            code: self.code(),
            message,
        })
    }
}

pub use crate::telemetry::error_chain;

/// Whether Postgres refused a value the caller sent because of a character it cannot store (NUL in
/// `text`: 22021; `\u0000` in `jsonb`: 22P05). Parsers refuse these first, naming the field; this
/// keeps any input they miss a client error rather than a 500 that senders would retry for ever.
fn is_unstorable_input(error: &StoreError) -> bool {
    matches!(error, StoreError::Query(e)
        if e.code().is_some_and(|c| matches!(c.code(), "22021" | "22P05")))
}
