//! What can go wrong talking to AWS SCIM, sorted by what the caller should do about it.
//!
//! The sync layer decides "retry later" versus "give up and alert" from the variant alone
//! ([`ScimError::is_transient`]), so each HTTP outcome that calls for a different reaction
//! has its own variant. Every message carries the HTTP status, AWS's `detail` and its
//! request id (what AWS support asks for). No variant ever holds the bearer token: it lives
//! only in the request header, which no error captures.

use std::fmt;
use std::time::Duration;

use thiserror::Error;

use super::mapping::MappingError;
use crate::outbound::{SendError, Spent, StatusClass};

/// What AWS said about a failed request: enough to find it in AWS's logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    /// HTTP method of the request.
    pub method: &'static str,
    /// URL path of the request (no query: filters contain user names).
    pub path: String,
    /// HTTP status code.
    pub status: u16,
    /// AWS's `detail` (or, for non-SCIM bodies, a short excerpt of the body).
    pub detail: Option<String>,
    /// `x-amzn-RequestId`, else the body's `exceptionRequestId`.
    pub request_id: Option<String>,
}

impl fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} returned HTTP {}",
            self.method, self.path, self.status
        )?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

/// A failed SCIM operation.
#[derive(Debug, Error)]
pub enum ScimError {
    /// The settings cannot produce a working client (bad base URL, zero rate, TLS setup).
    #[error("invalid SCIM client settings: {0}")]
    Config(String),

    /// The user or group breaks an AWS rule; caught before any request was sent.
    #[error("not sent to AWS: {0}")]
    Validation(#[from] MappingError),

    /// No answer (transport failure or timeout): AWS may or may not have applied the request.
    #[error(transparent)]
    Unanswered(#[from] SendError),

    /// 429 ThrottlingException. `retry_after` is AWS's `Retry-After` header, if any.
    #[error("throttled: {response}{}", fmt_retry_after(*retry_after))]
    Throttled {
        response: ErrorResponse,
        retry_after: Option<Duration>,
    },

    /// 5xx InternalServerException (or a gateway error in front of it).
    #[error("server error: {response}")]
    Server {
        response: ErrorResponse,
        retry_after: Option<Duration>,
    },

    /// 409 ConflictException: a user/group with the same unique attribute exists.
    #[error("conflict: {0}")]
    Conflict(ErrorResponse),

    /// 404 ResourceNotFoundException: unknown id (or unknown member in a filter).
    #[error("not found: {0}")]
    NotFound(ErrorResponse),

    /// 400 ValidationException: AWS refused the request; `detail` says why.
    #[error("bad request: {0}")]
    BadRequest(ErrorResponse),

    /// 401: token invalid, expired or for another tenant. Needs a human; never retried.
    #[error("unauthorized (check the SCIM token and tenant URL): {0}")]
    Unauthorized(ErrorResponse),

    /// 403 AccessDeniedException. Needs a human; never retried.
    #[error("forbidden: {0}")]
    Forbidden(ErrorResponse),

    /// Any other non-success status (3xx, 405, 501, ...).
    #[error("unexpected status: {0}")]
    UnexpectedStatus(ErrorResponse),

    /// A success response whose body is not what the SCIM API promises.
    #[error("{method} {path}: cannot decode the response{}: {source}", fmt_request_id(request_id.as_deref()))]
    Decode {
        method: &'static str,
        path: String,
        request_id: Option<String>,
        #[source]
        source: serde_json::Error,
    },

    /// A success response that breaks the protocol in a way serde cannot see (a resource
    /// without `id`, a cursor that never ends).
    #[error("{method} {path}: unexpected response: {reason}")]
    Protocol {
        method: &'static str,
        path: String,
        reason: String,
    },

    /// Transient failures went on past the retry budget; `last` is the final one.
    #[error("gave up after {attempts} attempts in {elapsed:?}: {last}")]
    RetryBudgetExhausted {
        attempts: u32,
        elapsed: Duration,
        #[source]
        last: Box<ScimError>,
    },
}

fn fmt_retry_after(retry_after: Option<Duration>) -> String {
    retry_after
        .map(|d| format!(" (retry after {}s)", d.as_secs()))
        .unwrap_or_default()
}

fn fmt_request_id(request_id: Option<&str>) -> String {
    request_id
        .map(|id| format!(" (request id {id})"))
        .unwrap_or_default()
}

impl ScimError {
    /// True when the same request may succeed later without anyone changing anything:
    /// transport trouble, timeouts, throttling, 5xx, and a retry budget spent on those.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unanswered(_) | Self::Throttled { .. } | Self::Server { .. } => true,
            Self::RetryBudgetExhausted { last, .. } => last.is_transient(),
            _ => false,
        }
    }

    /// True for 401/403: the token or its permissions need a human.
    pub fn is_auth(&self) -> bool {
        matches!(self.innermost(), Self::Unauthorized(_) | Self::Forbidden(_))
    }

    /// True for 404 (also behind an exhausted retry budget).
    pub fn is_not_found(&self) -> bool {
        matches!(self.innermost(), Self::NotFound(_))
    }

    /// True for 409.
    pub fn is_conflict(&self) -> bool {
        matches!(self.innermost(), Self::Conflict(_))
    }

    /// The HTTP status AWS answered with, if a response arrived.
    pub fn status(&self) -> Option<u16> {
        self.response().map(|r| r.status)
    }

    /// AWS's request id, for logs and support cases.
    pub fn request_id(&self) -> Option<&str> {
        match self.innermost() {
            Self::Decode { request_id, .. } => request_id.as_deref(),
            other => other.response().and_then(|r| r.request_id.as_deref()),
        }
    }

    /// The server's wish for how long to wait (`Retry-After`), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.innermost() {
            Self::Throttled { retry_after, .. } | Self::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The response details, for the variants that carry one.
    pub fn response(&self) -> Option<&ErrorResponse> {
        match self.innermost() {
            Self::Throttled { response, .. }
            | Self::Server { response, .. }
            | Self::Conflict(response)
            | Self::NotFound(response)
            | Self::BadRequest(response)
            | Self::Unauthorized(response)
            | Self::Forbidden(response)
            | Self::UnexpectedStatus(response) => Some(response),
            _ => None,
        }
    }

    /// The error itself, or the last one behind an exhausted retry budget.
    fn innermost(&self) -> &Self {
        match self {
            Self::RetryBudgetExhausted { last, .. } => last.innermost(),
            other => other,
        }
    }

    /// Builds the variant for a non-success status.
    pub(crate) fn from_response(response: ErrorResponse, retry_after: Option<Duration>) -> Self {
        match StatusClass::of(response.status) {
            StatusClass::BadRequest => Self::BadRequest(response),
            StatusClass::Unauthorized => Self::Unauthorized(response),
            StatusClass::Forbidden => Self::Forbidden(response),
            StatusClass::NotFound => Self::NotFound(response),
            StatusClass::Conflict => Self::Conflict(response),
            StatusClass::Throttled => Self::Throttled {
                response,
                retry_after,
            },
            StatusClass::Server => Self::Server {
                response,
                retry_after,
            },
            StatusClass::Unexpected => Self::UnexpectedStatus(response),
        }
    }

    /// The error for a spent retry budget whose last failure was `last`.
    pub(crate) fn gave_up(spent: Spent, last: Self) -> Self {
        Self::RetryBudgetExhausted {
            attempts: spent.attempts,
            elapsed: spent.elapsed,
            last: Box::new(last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16) -> ErrorResponse {
        ErrorResponse {
            method: "POST",
            path: "/t/scim/v2/Users".into(),
            status,
            detail: Some("Refused to create a new, duplicate resource.".into()),
            request_id: Some("81abca44".into()),
        }
    }

    #[test]
    fn statuses_map_to_variants_that_say_whether_to_retry() {
        let transient = [429, 500, 502, 503];
        let permanent = [301, 400, 401, 403, 404, 405, 409];
        for status in transient {
            let e = ScimError::from_response(response(status), None);
            assert!(e.is_transient(), "{status} should be transient");
        }
        for status in permanent {
            let e = ScimError::from_response(response(status), None);
            assert!(!e.is_transient(), "{status} should not be transient");
        }
        assert!(ScimError::from_response(response(401), None).is_auth());
        assert!(ScimError::from_response(response(403), None).is_auth());
        assert!(ScimError::from_response(response(404), None).is_not_found());
        assert!(ScimError::from_response(response(409), None).is_conflict());
    }

    #[test]
    fn messages_carry_status_detail_and_request_id() {
        let e = ScimError::from_response(response(409), None);
        let text = e.to_string();
        assert!(text.contains("HTTP 409"), "{text}");
        assert!(text.contains("duplicate resource"), "{text}");
        assert!(text.contains("81abca44"), "{text}");
        assert_eq!(e.request_id(), Some("81abca44"));
    }

    #[test]
    fn an_exhausted_budget_reports_the_last_error_and_stays_transient() {
        let e = ScimError::RetryBudgetExhausted {
            attempts: 5,
            elapsed: Duration::from_secs(3),
            last: Box::new(ScimError::from_response(
                response(429),
                Some(Duration::from_secs(2)),
            )),
        };
        assert!(e.is_transient());
        assert_eq!(e.status(), Some(429));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        let text = e.to_string();
        assert!(
            text.contains("5 attempts") && text.contains("HTTP 429"),
            "{text}"
        );
    }
}
