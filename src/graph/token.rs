//! Access tokens for Graph: the OAuth2 client-credentials grant against the Microsoft
//! identity platform, cached and refreshed one at a time.
//!
//! `POST {authority}/{tenant}/oauth2/v2.0/token` with
//! `grant_type=client_credentials&client_id=…&client_secret=…&scope=<graph origin>/.default`
//! (`https://graph.microsoft.com/.default` for the public cloud). A token is reused until
//! [`REFRESH_MARGIN`] before it expires (half its life for short-lived tokens), so a request
//! never leaves with a token about to lapse. Refreshes are serialised: callers that find the
//! token stale wait for the one refresh in flight and then share its result. The Graph client
//! drops a token that Graph answered 401 to ([`TokenSource::invalidate`]) and asks again, once.
//!
//! The credential ([`Credential`]) is a client secret (`client_secret=…`, replaceable while
//! running when its file changes) or a client assertion ([`super::credential`]:
//! `client_assertion_type=…jwt-bearer&client_assertion=…`, made afresh for every request).
//!
//! The credential is only ever in the form body; the token only in `Authorization` headers marked
//! sensitive. Neither appears in errors, logs or `Debug` output.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use serde::{Deserialize, Deserializer, Serialize};
use url::Url;

use super::credential::{ClientAssertion, CLIENT_ASSERTION_TYPE};
use super::error::{GraphError, GraphErrorResponse, TokenFailure};
use super::types::expose_secret;
use crate::outbound::error::scrub;
use crate::outbound::{exchange, Exchange};
use crate::secret::{SecretString, SharedSecret};

/// The only grant pimbridge uses: an app acting as itself.
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
/// Refresh this long before a token expires, so that clock skew and a slow request cannot
/// carry an expired token to Graph.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// The identity platform's form content type.
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";
/// Header the identity platform puts its request id in.
const HEADER_MS_REQUEST_ID: &str = "x-ms-request-id";

/// A successful token response (v2.0 endpoint).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    /// Always `Bearer`.
    pub token_type: String,
    /// Lifetime in seconds. The v1 endpoint sent it as a string; both are read.
    #[serde(deserialize_with = "seconds_number_or_string")]
    pub expires_in: u64,
    /// Extended lifetime for outages; ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_expires_in: Option<u64>,
    /// The access token (opaque to us).
    #[serde(serialize_with = "expose_secret")]
    pub access_token: SecretString,
}

/// The identity platform's error body (RFC 6749 §5.2 plus Entra's fields).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenErrorBody {
    /// e.g. `invalid_client`, `unauthorized_client`, `invalid_scope`, `invalid_request`.
    pub error: String,
    /// `AADSTS<code>: <text>\r\nTrace ID: …\r\nCorrelation ID: …\r\nTimestamp: …`.
    #[serde(default)]
    pub error_description: Option<String>,
    #[serde(default)]
    pub error_codes: Vec<u64>,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub error_uri: Option<String>,
}

fn seconds_number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Seconds {
        Number(u64),
        Text(String),
    }
    match Seconds::deserialize(d)? {
        Seconds::Number(n) => Ok(n),
        Seconds::Text(text) => text
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom("expires_in is not a number of seconds")),
    }
}

/// The scope for the app's Graph permissions: `<graph origin>/.default`.
pub fn default_scope(graph_url: &Url) -> String {
    format!("{}/.default", graph_url.origin().ascii_serialization())
}

/// How long a token with `lifetime` is used: until [`REFRESH_MARGIN`] before it expires,
/// or half its life when it lives less than twice the margin.
pub fn reuse_period(lifetime: Duration) -> Duration {
    lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 2))
}

/// A token in the cache.
struct Cached {
    /// `Bearer <token>`, marked sensitive.
    bearer: HeaderValue,
    /// When to stop using it.
    refresh_at: Instant,
}

/// How the app proves itself.
#[derive(Clone)]
pub(crate) enum Credential {
    /// A client secret; replaced when its file changes.
    Secret(SharedSecret),
    /// A certificate or a federated token, sent as a client assertion.
    Assertion(ClientAssertion),
}

/// Issues and caches tokens for one app registration in one tenant.
pub(crate) struct TokenSource {
    endpoint: Url,
    client_id: String,
    scope: String,
    credential: Credential,
    timeout: Duration,
    /// The current token; the lock is held across a refresh so only one runs at a time.
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl TokenSource {
    pub(crate) fn new(
        endpoint: Url,
        client_id: &str,
        credential: Credential,
        scope: &str,
        timeout: Duration,
    ) -> Self {
        Self {
            endpoint,
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            credential,
            timeout,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// Sends `secret` from the next token request on (a rotated client secret file); an error
    /// when the app signs in with an assertion instead.
    pub(crate) fn replace_secret(&self, secret: &SecretString) -> Result<(), GraphError> {
        match &self.credential {
            Credential::Secret(current) if !secret.is_empty() => {
                current.replace(secret.clone());
                Ok(())
            }
            Credential::Secret(_) => Err(GraphError::Config("client_secret is empty".to_owned())),
            Credential::Assertion(_) => Err(GraphError::Config(
                "the app signs in with a client assertion, not a secret".to_owned(),
            )),
        }
    }

    /// The form body of one token request, and the credential in it (to scrub it from answers).
    fn form(&self) -> Result<(SecretString, SecretString), GraphError> {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", GRANT_CLIENT_CREDENTIALS)
            .append_pair("client_id", &self.client_id);
        let credential = match &self.credential {
            Credential::Secret(secret) => {
                let secret = secret.current();
                form.append_pair("client_secret", secret.expose());
                secret
            }
            Credential::Assertion(assertion) => {
                let assertion = assertion.assertion(&self.client_id, self.endpoint.as_str())?;
                form.append_pair("client_assertion_type", CLIENT_ASSERTION_TYPE)
                    .append_pair("client_assertion", assertion.expose());
                assertion
            }
        };
        form.append_pair("scope", &self.scope);
        Ok((SecretString::new(form.finish()), credential))
    }

    /// The token endpoint URL (no secret in it).
    pub(crate) fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// A valid `Authorization` value: the cached one, or a fresh one if it is due.
    pub(crate) async fn bearer(&self, http: &reqwest::Client) -> Result<HeaderValue, GraphError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(cached.bearer.clone());
        }
        let fresh = self.fetch(http).await?;
        let bearer = fresh.bearer.clone();
        *cache = Some(fresh);
        Ok(bearer)
    }

    /// Forgets `used` after Graph refused it, unless another caller already replaced it.
    pub(crate) async fn invalidate(&self, used: &HeaderValue) {
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_some_and(|c| c.bearer == *used) {
            *cache = None;
        }
    }

    /// One token request.
    async fn fetch(&self, http: &reqwest::Client) -> Result<Cached, GraphError> {
        let path = self.endpoint.path().to_owned();
        let (form, credential) = self.form()?;
        let request = http
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, FORM_CONTENT_TYPE)
            .header(ACCEPT, "application/json")
            .body(form.expose().to_owned());
        let Exchange {
            status,
            retry_after,
            request_id,
            body,
            sent,
        } = exchange(
            request,
            "POST",
            &path,
            self.timeout,
            &[HEADER_MS_REQUEST_ID],
        )
        .await?;
        if (200..300).contains(&status) {
            let token: TokenResponse =
                serde_json::from_slice(&body).map_err(|source| GraphError::Decode {
                    method: "POST",
                    path: path.clone(),
                    source,
                })?;
            return self.cache_entry(&token, sent, &path);
        }
        let parsed: TokenErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        let description = parsed
            .error_description
            .as_deref()
            .and_then(|d| d.lines().next())
            .map(|line| scrub(line.trim(), credential.expose()));
        if status == 429 || (500..600).contains(&status) {
            return Err(GraphError::from_response(
                GraphErrorResponse {
                    method: "POST",
                    path,
                    status,
                    code: Some(parsed.error).filter(|e| !e.is_empty()),
                    message: description,
                    request_id: request_id.or(parsed.trace_id),
                },
                retry_after,
            ));
        }
        let error = if parsed.error.is_empty() {
            "unreadable_error_response".to_owned()
        } else {
            parsed.error
        };
        Err(GraphError::Token(Box::new(TokenFailure {
            status,
            error,
            aad_codes: parsed.error_codes,
            description,
            correlation_id: parsed.correlation_id,
        })))
    }

    fn cache_entry(
        &self,
        token: &TokenResponse,
        sent: Instant,
        path: &str,
    ) -> Result<Cached, GraphError> {
        let protocol = |reason: &str| GraphError::Protocol {
            method: "POST",
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        if !token.token_type.eq_ignore_ascii_case("bearer") {
            return Err(protocol("the token type is not Bearer"));
        }
        if token.access_token.is_empty() || token.expires_in == 0 {
            return Err(protocol("the token response has no token or no lifetime"));
        }
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", token.access_token.expose()))
            .map_err(|_| protocol("the access token is not a valid header value"))?;
        bearer.set_sensitive(true);
        let lifetime = Duration::from_secs(token.expires_in);
        tracing::debug!(expires_in_s = token.expires_in, "access token issued");
        Ok(Cached {
            bearer,
            // Counted from when the request was sent: the token was issued after that.
            refresh_at: sent + reuse_period(lifetime),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_is_the_graph_origin_with_default() {
        let public = Url::parse("https://graph.microsoft.com/v1.0").unwrap();
        assert_eq!(
            default_scope(&public),
            "https://graph.microsoft.com/.default"
        );
        let local = Url::parse("http://127.0.0.1:8123/v1.0").unwrap();
        assert_eq!(default_scope(&local), "http://127.0.0.1:8123/.default");
    }

    #[test]
    fn tokens_are_reused_until_five_minutes_before_expiry_or_half_their_life() {
        let hour = Duration::from_secs(3599);
        assert_eq!(reuse_period(hour), Duration::from_secs(3299));
        assert_eq!(
            reuse_period(Duration::from_secs(600)),
            Duration::from_secs(300)
        );
        assert_eq!(reuse_period(Duration::from_secs(2)), Duration::from_secs(1));
    }

    #[test]
    fn token_responses_accept_expires_in_as_number_or_string() {
        let v2: TokenResponse = serde_json::from_str(
            r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0"}"#,
        )
        .unwrap();
        assert_eq!(v2.expires_in, 3599);
        let v1: TokenResponse = serde_json::from_str(
            r#"{"token_type":"Bearer","expires_in":"3599","access_token":"eyJ0"}"#,
        )
        .unwrap();
        assert_eq!(v1.expires_in, 3599);
        assert!(!format!("{v1:?}").contains("eyJ0"), "Debug hides the token");
    }

    #[test]
    fn the_form_carries_the_secret_encoded_and_the_source_never_prints_it() {
        let endpoint = Url::parse("https://login.example/t/oauth2/v2.0/token").unwrap();
        let secret = SecretString::new("a+b&c=d~");
        let source = TokenSource::new(
            endpoint,
            "client-1",
            Credential::Secret(SharedSecret::new(secret)),
            "https://graph.microsoft.com/.default",
            Duration::from_secs(1),
        );
        let (form, credential) = source.form().unwrap();
        assert_eq!(
            form.expose(),
            "grant_type=client_credentials&client_id=client-1&client_secret=a%2Bb%26c%3Dd%7E\
             &scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"
        );
        assert_eq!(
            scrub(
                "AADSTS7000215: bad secret a+b&c=d~ given",
                credential.expose()
            ),
            "AADSTS7000215: bad secret [redacted] given"
        );
        source
            .replace_secret(&SecretString::new("rotated"))
            .unwrap();
        assert!(source
            .form()
            .unwrap()
            .0
            .expose()
            .contains("client_secret=rotated&"));
    }
}
