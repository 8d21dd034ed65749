//! The failures every outbound client shares, before any service's error envelope is read:
//! a request that never got an answer, the meaning of a status code, and a readable excerpt
//! of a body that is not the service's JSON.
//!
//! Nothing here holds a URL (queries name users) or a header (the bearer token).

use std::time::Duration;

use thiserror::Error;

/// Longest excerpt kept of an error body that is not the service's own JSON.
pub const EXCERPT_CHARS: usize = 200;

/// No answer arrived: the server may or may not have applied the request.
#[derive(Debug, Error)]
pub enum SendError {
    /// Connection refused/reset, DNS, TLS, or the reply was lost mid-way.
    #[error("{method} {path} failed in transport: {source}")]
    Transport {
        method: &'static str,
        path: String,
        #[source]
        source: reqwest::Error,
    },

    /// No reply within the request timeout. The server may still apply the request.
    #[error("{method} {path} timed out after {timeout:?}")]
    Timeout {
        method: &'static str,
        path: String,
        timeout: Duration,
    },
}

impl SendError {
    /// Classifies a reqwest failure as a timeout or a transport error, without the URL.
    pub fn from_reqwest(
        method: &'static str,
        path: &str,
        error: reqwest::Error,
        timeout: Duration,
    ) -> Self {
        if error.is_timeout() {
            Self::Timeout {
                method,
                path: path.to_owned(),
                timeout,
            }
        } else {
            Self::Transport {
                method,
                path: path.to_owned(),
                // The URL adds nothing the path does not say, and may carry a filter.
                source: error.without_url(),
            }
        }
    }
}

/// What a non-success status asks of the caller; each client turns it into its own variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 400: refused; the body says why.
    BadRequest,
    /// 401: credentials need a human (or a fresh token).
    Unauthorized,
    /// 403: permissions need a human.
    Forbidden,
    /// 404.
    NotFound,
    /// 409.
    Conflict,
    /// 429: try again later, after `Retry-After` if given.
    Throttled,
    /// 5xx: try again later.
    Server,
    /// Anything else (3xx, 405, 412, ...).
    Unexpected,
}

impl StatusClass {
    /// The class of a non-success status.
    pub fn of(status: u16) -> Self {
        match status {
            400 => Self::BadRequest,
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            409 => Self::Conflict,
            429 => Self::Throttled,
            500..=599 => Self::Server,
            _ => Self::Unexpected,
        }
    }

    /// True when the same request may succeed later with nothing changed.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Throttled | Self::Server)
    }
}

/// A short single-line excerpt of an error body that is not the service's JSON (a proxy's
/// HTML page, say): whitespace collapsed, at most [`EXCERPT_CHARS`] characters.
pub fn excerpt(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        return None;
    }
    Some(line.chars().take(EXCERPT_CHARS).collect())
}

/// `text` with every occurrence of `secret` replaced, should a server ever quote it back.
pub fn scrub(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_owned()
    } else {
        text.replace(secret, "[redacted]")
    }
}

/// A trimmed id, or `None` when empty: an empty id would turn `/Users/{id}` into a listing.
pub fn non_empty_id(id: &str) -> Option<&str> {
    Some(id.trim()).filter(|id| !id.is_empty())
}

/// A request body as JSON; the message of a failure names no value.
pub fn to_json<T: serde::Serialize>(body: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(body).map_err(|e| format!("cannot serialise a request body: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classed_by_what_the_caller_should_do() {
        let cases = [
            (400, StatusClass::BadRequest),
            (401, StatusClass::Unauthorized),
            (403, StatusClass::Forbidden),
            (404, StatusClass::NotFound),
            (409, StatusClass::Conflict),
            (429, StatusClass::Throttled),
            (500, StatusClass::Server),
            (503, StatusClass::Server),
            (599, StatusClass::Server),
            (302, StatusClass::Unexpected),
            (405, StatusClass::Unexpected),
            (412, StatusClass::Unexpected),
        ];
        for (status, class) in cases {
            assert_eq!(StatusClass::of(status), class, "{status}");
            assert_eq!(class.is_transient(), status == 429 || status >= 500);
        }
    }

    #[test]
    fn non_json_error_bodies_are_kept_as_a_short_single_line_excerpt() {
        assert_eq!(excerpt(b""), None);
        assert_eq!(excerpt(b"  \n "), None);
        assert_eq!(excerpt(b" Bad Gateway\n").as_deref(), Some("Bad Gateway"));
        assert_eq!(
            excerpt(b"<html>\n  <body>Bad   Gateway</body>\n</html>").as_deref(),
            Some("<html> <body>Bad Gateway</body> </html>")
        );
        let long = "é".repeat(1000);
        assert_eq!(
            excerpt(long.as_bytes()).map(|s| s.chars().count()),
            Some(EXCERPT_CHARS)
        );
    }

    #[test]
    fn secrets_are_scrubbed_from_texts_sent_back() {
        assert_eq!(
            scrub("AADSTS7000215: bad secret a+b&c=d~ given", "a+b&c=d~"),
            "AADSTS7000215: bad secret [redacted] given"
        );
        assert_eq!(scrub("nothing to hide", ""), "nothing to hide");
    }

    #[test]
    fn empty_ids_are_refused_and_others_trimmed() {
        assert_eq!(non_empty_id("  "), None);
        assert_eq!(non_empty_id(""), None);
        assert_eq!(non_empty_id(" u1 "), Some("u1"));
    }
}
