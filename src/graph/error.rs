//! What can go wrong talking to Microsoft Graph and its token endpoint, sorted by what the
//! caller should do about it.
//!
//! A notification is only a hint (docs/webhooks.md): the caller resolves it through Graph and
//! decides from the variant alone whether to try again later ([`GraphError::is_transient`])
//! or to stop and alert (credentials, permissions). The client secret is never part of an
//! error: it only travels in the token request body, which no error captures, and the one
//! text the identity platform sends back about it is scrubbed before it is kept.

use std::fmt;
use std::time::Duration;

use thiserror::Error;

use crate::outbound::{SendError, Spent, StatusClass};

/// What Graph said about a failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphErrorResponse {
    /// HTTP method of the request.
    pub method: &'static str,
    /// URL path of the request, without the query (filters name users).
    pub path: String,
    /// HTTP status code.
    pub status: u16,
    /// Graph's `error.code`, e.g. `Request_ResourceNotFound`.
    pub code: Option<String>,
    /// Graph's `error.message` (or a short excerpt of a body that is not Graph JSON).
    pub message: Option<String>,
    /// The `request-id` header, else `error.innerError.request-id`.
    pub request_id: Option<String>,
}

impl fmt::Display for GraphErrorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code.as_deref().unwrap_or("no error code");
        write!(
            f,
            "{} {} answered {} {code}",
            self.method, self.path, self.status
        )?;
        match (&self.message, &self.request_id) {
            (Some(message), Some(id)) => write!(f, ": {message} [request-id {id}]"),
            (Some(message), None) => write!(f, ": {message}"),
            (None, Some(id)) => write!(f, " [request-id {id}]"),
            (None, None) => Ok(()),
        }
    }
}

/// The identity platform refused to issue a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFailure {
    /// HTTP status of the token response.
    pub status: u16,
    /// OAuth2 `error`, e.g. `invalid_client`, `unauthorized_client`, `invalid_scope`.
    pub error: String,
    /// `error_codes`: the AADSTS numbers, e.g. 7000215 (invalid secret).
    pub aad_codes: Vec<u64>,
    /// First line of `error_description`, with the secret removed should it ever appear.
    pub description: Option<String>,
    /// `correlation_id`, what Entra support asks for.
    pub correlation_id: Option<String>,
}

impl fmt::Display for TokenFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.error)?;
        if !self.aad_codes.is_empty() {
            let codes: Vec<String> = self
                .aad_codes
                .iter()
                .map(|c| format!("AADSTS{c}"))
                .collect();
            write!(f, " ({})", codes.join(", "))?;
        }
        if let Some(description) = &self.description {
            write!(f, ": {description}")?;
        }
        if let Some(id) = &self.correlation_id {
            write!(f, " [correlation id {id}]")?;
        }
        Ok(())
    }
}

/// A failed Graph operation.
#[derive(Debug, Error)]
pub enum GraphError {
    /// The settings cannot produce a working client (bad URL, empty credentials).
    #[error("invalid Graph client settings: {0}")]
    Config(String),

    /// The certificate or federated token could not be presented (unreadable file, wrong key).
    /// Needs a human.
    #[error("cannot present the Graph credential: {0}")]
    Credential(#[from] super::credential::CredentialError),

    /// An argument was refused before any request (an empty id, an over-long clientState).
    #[error("not sent to Graph: {0}")]
    InvalidArgument(String),

    /// The token endpoint refused the client credentials, tenant or scope. Needs a human.
    #[error("the Microsoft identity platform refused a token: {0}")]
    Token(Box<TokenFailure>),

    /// 401 from Graph even with a freshly issued token. Needs a human.
    #[error("unauthorized: {0}")]
    Unauthorized(Box<GraphErrorResponse>),

    /// 403: the app lacks a permission (e.g. PrivilegedAssignmentSchedule.Read.AzureADGroup,
    /// User.Read.All, Group.Read.All) or a subscription quota is spent.
    #[error("forbidden: {0}")]
    Forbidden(Box<GraphErrorResponse>),

    /// 404: no such resource.
    #[error("not found: {0}")]
    NotFound(Box<GraphErrorResponse>),

    /// 400: Graph refused the request; the message says why (e.g. a failed subscription
    /// validation handshake).
    #[error("bad request: {0}")]
    BadRequest(Box<GraphErrorResponse>),

    /// 409: e.g. a subscription for the same changeType and resource already exists.
    #[error("conflict: {0}")]
    Conflict(Box<GraphErrorResponse>),

    /// 429. `retry_after` is the `Retry-After` header, if any.
    #[error("throttled: {response}")]
    Throttled {
        response: Box<GraphErrorResponse>,
        retry_after: Option<Duration>,
    },

    /// 5xx (from Graph or the token endpoint). `status` repeats `response.status` for matching.
    #[error("server error: {response}")]
    Server {
        status: u16,
        response: Box<GraphErrorResponse>,
        retry_after: Option<Duration>,
    },

    /// Any other non-success status (3xx, 405, 412, ...).
    #[error("unexpected status: {0}")]
    UnexpectedStatus(Box<GraphErrorResponse>),

    /// No answer (transport failure or timeout).
    #[error(transparent)]
    Unanswered(#[from] SendError),

    /// A success response whose body is not what Graph documents.
    #[error("{method} {path}: cannot decode the response: {source}")]
    Decode {
        method: &'static str,
        path: String,
        #[source]
        source: serde_json::Error,
    },

    /// A success response that breaks the protocol in a way serde cannot see (a next link
    /// to another host, paging that never ends).
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
        last: Box<GraphError>,
    },
}

impl GraphError {
    /// Builds the variant for a non-success Graph status.
    pub(crate) fn from_response(
        response: GraphErrorResponse,
        retry_after: Option<Duration>,
    ) -> Self {
        let status = response.status;
        let response = Box::new(response);
        match StatusClass::of(status) {
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
                status,
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

    /// The error itself, or the last one behind an exhausted retry budget.
    fn last(&self) -> &Self {
        let mut error = self;
        while let Self::RetryBudgetExhausted { last, .. } = error {
            error = last;
        }
        error
    }

    /// True when the same request may succeed later with nothing changed: transport
    /// trouble, timeouts, 429, 5xx, and a retry budget spent on those.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.last(),
            Self::Unanswered(_) | Self::Throttled { .. } | Self::Server { .. }
        )
    }

    /// True when credentials or permissions need a human: a refused token, 401, 403.
    pub fn is_auth(&self) -> bool {
        matches!(
            self.last(),
            Self::Token(_) | Self::Credential(_) | Self::Unauthorized(_) | Self::Forbidden(_)
        )
    }

    /// The server's wish for how long to wait (`Retry-After`), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.last() {
            Self::Throttled { retry_after, .. } | Self::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The Graph response behind the error, for the variants that carry one.
    pub fn response(&self) -> Option<&GraphErrorResponse> {
        match self.last() {
            Self::Unauthorized(r)
            | Self::Forbidden(r)
            | Self::NotFound(r)
            | Self::BadRequest(r)
            | Self::Conflict(r)
            | Self::UnexpectedStatus(r)
            | Self::Throttled { response: r, .. }
            | Self::Server { response: r, .. } => Some(r),
            _ => None,
        }
    }

    /// The HTTP status that was answered, if a response arrived.
    pub fn status(&self) -> Option<u16> {
        match self.last() {
            Self::Token(failure) => Some(failure.status),
            other => other.response().map(|r| r.status),
        }
    }

    /// Graph's error code (or the OAuth2 `error` of a refused token).
    pub fn code(&self) -> Option<&str> {
        match self.last() {
            Self::Token(failure) => Some(failure.error.as_str()),
            other => other.response().and_then(|r| r.code.as_deref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16) -> GraphErrorResponse {
        GraphErrorResponse {
            method: "GET",
            path: "/v1.0/users/u1".into(),
            status,
            code: Some("Request_ResourceNotFound".into()),
            message: Some("Resource 'u1' does not exist.".into()),
            request_id: Some("req-7".into()),
        }
    }

    #[test]
    fn statuses_map_to_variants_that_say_whether_to_retry() {
        for status in [429, 500, 502, 503, 504] {
            let e = GraphError::from_response(response(status), None);
            assert!(e.is_transient(), "{status} should be transient");
        }
        for status in [302, 400, 401, 403, 404, 405, 409] {
            let e = GraphError::from_response(response(status), None);
            assert!(!e.is_transient(), "{status} should not be transient");
        }
        assert!(GraphError::from_response(response(401), None).is_auth());
        assert!(GraphError::from_response(response(403), None).is_auth());
        assert!(matches!(
            GraphError::from_response(response(503), None),
            GraphError::Server { status: 503, .. }
        ));
    }

    #[test]
    fn messages_carry_status_code_message_and_request_id() {
        let text = GraphError::from_response(response(404), None).to_string();
        for part in ["404", "Request_ResourceNotFound", "does not exist", "req-7"] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
    }

    #[test]
    fn an_exhausted_budget_reports_the_last_error_and_stays_transient() {
        let e = GraphError::RetryBudgetExhausted {
            attempts: 5,
            elapsed: Duration::from_secs(3),
            last: Box::new(GraphError::from_response(
                response(429),
                Some(Duration::from_secs(2)),
            )),
        };
        assert!(e.is_transient());
        assert_eq!(e.status(), Some(429));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert!(e.to_string().contains("5 attempts"), "{e}");
    }

    #[test]
    fn a_token_failure_names_the_aad_codes_and_is_not_transient() {
        let e = GraphError::Token(Box::new(TokenFailure {
            status: 400,
            error: "invalid_client".into(),
            aad_codes: vec![7_000_215],
            description: Some("AADSTS7000215: Invalid client secret provided.".into()),
            correlation_id: Some("c0".into()),
        }));
        assert!(!e.is_transient());
        assert!(e.is_auth());
        assert_eq!(e.code(), Some("invalid_client"));
        let text = e.to_string();
        assert!(
            text.contains("AADSTS7000215") && text.contains("c0"),
            "{text}"
        );
    }
}
