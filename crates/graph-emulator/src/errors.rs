//! Error answers in the two shapes the emulated services use: Graph's
//! `{"error":{"code","message","innerError"}}` envelope, and the identity platform's OAuth2
//! error body. Both are built from the client's own wire types.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use time::OffsetDateTime;

use crate::wire::{format_graph_time, ErrorDetail, ErrorEnvelope, InnerError, TokenErrorBody};

/// Graph's request id header, also set on every emulator answer.
pub const REQUEST_ID_HEADER: &str = "request-id";

/// An error answered with Graph's envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct GraphApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl GraphApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 `BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 401 `InvalidAuthenticationToken`.
    pub fn invalid_token(message: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        )
    }

    /// 404 `Request_ResourceNotFound`, as directory objects answer.
    pub fn resource_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!(
                "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
            ),
        )
    }

    /// An injected fault: `status`, with the code Graph uses for it.
    pub fn injected(status: u16, retry_after: Option<u64>) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (code, message) = match status.as_u16() {
            429 => (
                "TooManyRequests",
                "Too many requests. Please retry after the indicated time.",
            ),
            401 => (
                "InvalidAuthenticationToken",
                "Access token validation failure.",
            ),
            403 => (
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            ),
            503 => (
                "serviceNotAvailable",
                "The service is temporarily unavailable.",
            ),
            500..=599 => ("generalException", "An internal server error occurred."),
            _ => ("BadRequest", "Injected fault."),
        };
        Self {
            retry_after,
            ..Self::new(status, code, message)
        }
    }
}

impl ResponseError for GraphApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let request_id = uuid::Uuid::new_v4().to_string();
        let envelope = ErrorEnvelope {
            error: ErrorDetail {
                code: self.code.clone(),
                message: self.message.clone(),
                inner_error: Some(InnerError {
                    request_id: Some(request_id.clone()),
                    client_request_id: Some(request_id.clone()),
                    date: Some(format_graph_time(OffsetDateTime::now_utc())),
                }),
            },
        };
        let mut response = HttpResponse::build(self.status);
        response.insert_header((REQUEST_ID_HEADER, request_id));
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(envelope)
    }
}

/// An identity-platform refusal: HTTP 400 with `error`, an `AADSTS` code and its text.
pub fn aad_error(error: &str, aad_code: u64, text: &str) -> HttpResponse {
    let trace_id = uuid::Uuid::new_v4().to_string();
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let timestamp = format_graph_time(OffsetDateTime::now_utc());
    let body = TokenErrorBody {
        error: error.to_owned(),
        error_description: Some(format!(
            "AADSTS{aad_code}: {text}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
        )),
        error_codes: vec![aad_code],
        timestamp: Some(timestamp),
        trace_id: Some(trace_id.clone()),
        correlation_id: Some(correlation_id),
        error_uri: Some(format!(
            "https://login.microsoftonline.com/error?code={aad_code}"
        )),
    };
    HttpResponse::BadRequest()
        .insert_header(("x-ms-request-id", trace_id))
        .json(body)
}
