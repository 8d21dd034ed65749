//! The outbound HTTP layer shared by the SCIM client ([`crate::scim`]) and the Graph client
//! ([`crate::graph`]): one way to build the HTTP client, send a request and read its answer,
//! classify what went wrong, and retry.
//!
//! - [`retry`]: [`RetryPolicy`] (jittered backoff with a `Retry-After` floor, within a
//!   budget of attempts and time) and `Retry-After` parsing;
//! - [`error`]: [`SendError`] (no answer), [`StatusClass`] (what a status asks of the
//!   caller), body excerpts without secrets.
//!
//! What differs between the services (their error envelopes, auth, paging) stays in each
//! client.

pub mod error;
pub mod retry;

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use url::Url;

pub use error::{SendError, StatusClass};
pub use retry::{Budget, RetryPolicy, Spent};

/// Sent on every request so AWS, Microsoft (and our emulators' logs) can tell us apart.
pub const USER_AGENT: &str = concat!("pimbridge/", env!("CARGO_PKG_VERSION"));
/// Default whole-request timeout: both services answer in well under a second when healthy.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default TCP+TLS connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One pooled HTTP client with our user agent and timeouts. Redirects are never followed:
/// neither service redirects API calls, and following one could carry a token elsewhere.
pub fn http_client(
    request_timeout: Duration,
    connect_timeout: Duration,
) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .timeout(request_timeout)
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// An http(s) base URL with a host, without query, fragment or trailing slash (paths are
/// appended as segments, so both spellings behave the same). `name` names the setting.
pub fn parse_base_url(name: &str, text: &str) -> Result<Url, String> {
    let mut url = Url::parse(text.trim()).map_err(|e| format!("{name} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") || url.cannot_be_a_base() || url.host().is_none() {
        return Err(format!(
            "{name} must be an https URL (http for a local emulator) with a host"
        ));
    }
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty();
    }
    Ok(url)
}

/// What one HTTP exchange brought back.
#[derive(Debug)]
pub struct Exchange {
    pub status: u16,
    /// `Retry-After` in delta-seconds, if sent.
    pub retry_after: Option<Duration>,
    /// The first of the service's request-id headers that was present.
    pub request_id: Option<String>,
    pub body: Vec<u8>,
    /// When the request was sent.
    pub sent: Instant,
}

/// Sends `request` and reads the whole answer; a failure to do either is a [`SendError`].
/// `request_id_headers` name where the service puts its request id (AWS:
/// `x-amzn-RequestId`; Graph: `request-id`; the identity platform: `x-ms-request-id`).
pub async fn exchange(
    request: reqwest::RequestBuilder,
    method: &'static str,
    path: &str,
    timeout: Duration,
    request_id_headers: &[&str],
) -> Result<Exchange, SendError> {
    let sent = Instant::now();
    let failed = |e| SendError::from_reqwest(method, path, e, timeout);
    let response = request.send().await.map_err(failed)?;
    let status = response.status().as_u16();
    let retry_after = retry::parse_retry_after(response.headers());
    let request_id = request_id(response.headers(), request_id_headers);
    let body = response.bytes().await.map_err(failed)?.to_vec();
    tracing::debug!(
        http.method = method,
        http.path = path,
        http.status = status,
        elapsed_ms = millis(sent.elapsed()),
        request_id = request_id.as_deref().unwrap_or_default(),
        "outbound request"
    );
    Ok(Exchange {
        status,
        retry_after,
        request_id,
        body,
        sent,
    })
}

/// The value of the first of `names` present in `headers`.
pub fn request_id(headers: &HeaderMap, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| headers.get(*name)?.to_str().ok())
        .map(str::to_owned)
}

/// Percent-encodes a query value, with `%20` for spaces (not every server reads `+`).
pub fn encode_query_value(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Milliseconds for log fields.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn the_user_agent_names_the_service_and_version() {
        assert!(USER_AGENT.starts_with("pimbridge/"));
        assert!(USER_AGENT.len() > "pimbridge/".len());
    }

    #[test]
    fn base_urls_lose_query_fragment_and_trailing_slash() {
        for text in [
            "https://scim.example/t/scim/v2",
            "https://scim.example/t/scim/v2/",
            " https://scim.example/t/scim/v2?x=1#f ",
        ] {
            let url = parse_base_url("base_url", text).unwrap();
            assert_eq!(url.as_str(), "https://scim.example/t/scim/v2", "{text}");
        }
        for text in ["not a url", "ftp://x.example/a", "mailto:a@b.c", "http:/"] {
            let message = parse_base_url("graph_url", text).unwrap_err();
            assert!(message.starts_with("graph_url "), "{message}");
        }
    }

    #[test]
    fn the_request_id_is_read_from_the_first_header_present() {
        let mut headers = HeaderMap::new();
        let names = ["x-amzn-requestid", "request-id"];
        assert_eq!(request_id(&headers, &names), None);
        headers.insert("request-id", HeaderValue::from_static("r2"));
        assert_eq!(request_id(&headers, &names).as_deref(), Some("r2"));
        headers.insert("x-amzn-RequestId", HeaderValue::from_static("r1"));
        assert_eq!(request_id(&headers, &names).as_deref(), Some("r1"));
    }

    #[test]
    fn query_values_are_percent_encoded_with_spaces_as_percent_20() {
        assert_eq!(
            encode_query_value(r#"userName eq "a+b@x.example""#),
            "userName%20eq%20%22a%2Bb%40x.example%22"
        );
        assert_eq!(encode_query_value("abc+/=:_-"), "abc%2B%2F%3D%3A_-");
    }
}
