//! The AWS SCIM error envelope and the request id it carries.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use super::clock;

/// Error URN used in both `schema` and `schemas`.
pub const ERROR_URN: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// The old generic 400 detail.
pub const UNPARSABLE: &str = "Request is unparsable, syntactically incorrect, or violates schema.";
/// The 409 detail for every uniqueness violation.
pub const DUPLICATE: &str = "Refused to create a new, duplicate resource.";
/// The 429 detail.
pub const THROTTLED: &str = "Too many requests exceeded the limits.";

tokio::task_local! {
    /// Request id of the SCIM request being served (set by the observing middleware).
    pub(crate) static REQUEST_ID: String;
}

/// The request id of the current request, or a fresh one outside a request.
pub(crate) fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string())
}

/// An error answered with the AWS envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {detail}")]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
    /// Seconds for a `Retry-After` header (throttling only).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 400 ValidationException with a specific detail.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 400 ValidationException with the generic detail.
    pub fn unparsable() -> Self {
        Self::bad_request(UNPARSABLE)
    }

    /// 400 for a valid-looking request AWS does not support.
    pub fn unsupported(what: &str) -> Self {
        Self::bad_request(format!("Unsupported operation: {what}."))
    }

    /// Identity-Store style validation message for one attribute.
    pub fn constraint(attribute: &str, constraint: &str) -> Self {
        Self::bad_request(format!(
            "1 validation error detected: Value at '{attribute}' failed to satisfy constraint: {constraint}"
        ))
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "The authorization header is invalid or missing, or the tenant id is incorrect.",
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn user_not_found() -> Self {
        Self::not_found("Specified user does not exist.")
    }

    pub fn group_not_found() -> Self {
        Self::not_found("Specified group does not exist.")
    }

    pub fn member_not_found() -> Self {
        Self::not_found("Specified member does not exist.")
    }

    pub fn duplicate() -> Self {
        Self::new(StatusCode::CONFLICT, DUPLICATE)
    }

    pub fn throttled(retry_after_seconds: u64) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            detail: THROTTLED.to_owned(),
            retry_after: Some(retry_after_seconds),
        }
    }

    pub fn injected(status: StatusCode) -> Self {
        let detail = if status.is_server_error() {
            "An internal error occurred. Please try again later."
        } else {
            "Injected fault."
        };
        Self::new(status, detail)
    }

    /// The JSON envelope for this error with `request_id` as `exceptionRequestId`.
    pub fn envelope(&self, request_id: &str) -> serde_json::Value {
        json!({
            "schema": [ERROR_URN],
            "schemas": [ERROR_URN],
            "detail": self.detail,
            "status": self.status.as_u16().to_string(),
            "exceptionRequestId": request_id,
            "timeStamp": clock::error_timestamp(clock::now()),
        })
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let request_id = current_request_id();
        let mut builder = HttpResponse::build(self.status);
        builder.content_type("application/json");
        if let Some(seconds) = self.retry_after {
            builder.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        builder.body(self.envelope(&request_id).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_both_schema_keys_a_string_status_and_no_scim_type() {
        let body = ApiError::duplicate().envelope("rid");
        assert_eq!(body["schema"], json!([ERROR_URN]));
        assert_eq!(body["schemas"], json!([ERROR_URN]));
        assert_eq!(body["status"], json!("409"));
        assert_eq!(body["detail"], json!(DUPLICATE));
        assert_eq!(body["exceptionRequestId"], json!("rid"));
        assert!(body.get("scimType").is_none());
    }
}
