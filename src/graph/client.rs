//! The Microsoft Graph client: the few reads that resolve a notification hint, and the
//! subscription calls that keep notifications coming.
//!
//! One thin method per operation sits on [`GraphClient::execute`] (token, send, classify,
//! retry). What Graph does to clients is absorbed there:
//!
//! - 429 and 5xx, timeouts and lost connections: jittered exponential backoff
//!   ([`RetryPolicy`] of the shared [`crate::outbound`] layer) that waits at least `Retry-After`,
//!   within `max_attempts`;
//! - 401: the token is dropped and fetched again, once per call; a second 401 is final;
//! - 400/403/404/409: final at once (the caller reads the variant);
//! - paging: `@odata.nextLink` is followed to the end, but only on Graph's own origin so the
//!   bearer token never leaves for another host.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use url::Url;

use super::credential::ClientAssertion;
use super::error::{GraphError, GraphErrorResponse};
use super::token::{default_scope, Credential, TokenSource};
use super::types::{
    format_graph_time, AssignmentInstance, ErrorEnvelope, GraphGroup, GraphUser, NewSubscription,
    ODataPage, Subscription,
};
use crate::outbound::error::{excerpt, non_empty_id};
use crate::outbound::{
    encode_query_value, exchange, http_client, millis, parse_base_url, Budget, Exchange,
    RetryPolicy, DEFAULT_CONNECT_TIMEOUT,
};
use crate::secret::{SecretString, SharedSecret};

/// The public-cloud identity platform.
pub const DEFAULT_AUTHORITY_URL: &str = "https://login.microsoftonline.com";
/// Graph v1.0 in the public cloud.
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com/v1.0";
pub use crate::outbound::DEFAULT_REQUEST_TIMEOUT;
/// Attempts per operation, the first included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Extra time allowed to subscription create and renew: Graph holds the request open while
/// it runs the validation handshake, which the receiver may take 10 s to answer (docs/webhooks.md).
pub const VALIDATION_ALLOWANCE: Duration = Duration::from_secs(10);
/// Longest `clientState` Graph keeps (docs/webhooks.md keeps to the stricter of two documented caps).
pub const MAX_CLIENT_STATE_CHARS: usize = 128;
/// Upper bound on pages in one listing: 1,000 pages cover any group pimbridge could serve;
/// more means the server's links never end.
pub const MAX_PAGES: usize = 1_000;
/// Path of the PIM-for-Groups assignment instances below the Graph base (docs/webhooks.md).
const ASSIGNMENT_INSTANCES: [&str; 4] = [
    "identityGovernance",
    "privilegedAccess",
    "group",
    "assignmentScheduleInstances",
];
/// The user attributes pimbridge maps to SCIM.
const USER_SELECT: &str = "id,userPrincipalName,givenName,surname,displayName,mail";
/// The group attributes pimbridge needs.
const GROUP_SELECT: &str = "id,displayName";
/// Graph's request id header.
const HEADER_REQUEST_ID: &str = "request-id";

/// Everything a [`GraphClient`] needs; build with [`GraphClientSettings::new`] and adjust.
#[derive(Debug, Clone)]
pub struct GraphClientSettings {
    /// Identity platform, default `https://login.microsoftonline.com`.
    pub authority_url: String,
    /// Graph base, default `https://graph.microsoft.com/v1.0`.
    pub graph_url: String,
    /// Entra tenant id (or a verified domain).
    pub tenant_id: String,
    /// The app registration's client id.
    pub client_id: String,
    /// The app registration's client secret (empty when `assertion` is set).
    pub client_secret: SecretString,
    /// Instead of the secret: a certificate or a federated token, sent as a client assertion.
    pub assertion: Option<ClientAssertion>,
    /// Whole-request timeout (connect, send, read body), per attempt.
    pub request_timeout: Duration,
    /// Attempts per operation, the first included (1 = never retry).
    pub max_attempts: u32,
}

impl GraphClientSettings {
    /// Settings for the public cloud with the defaults (10 s timeout, 5 attempts).
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<SecretString>,
    ) -> Self {
        Self {
            authority_url: DEFAULT_AUTHORITY_URL.to_owned(),
            graph_url: DEFAULT_GRAPH_URL.to_owned(),
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            assertion: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

/// A Graph client for one app registration in one tenant. Cheap to clone; clones share the
/// connection pool and the token.
#[derive(Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// One pooled HTTP client for the life of the service.
    http: reqwest::Client,
    /// Graph base URL without trailing slash.
    graph: Url,
    tokens: TokenSource,
    retry: RetryPolicy,
    request_timeout: Duration,
}

impl fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphClient")
            .field("graph", &self.inner.graph.as_str())
            .field("token_endpoint", &self.inner.tokens.endpoint().as_str())
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

/// One logical request, re-sent as-is on retry.
struct Call {
    method: Method,
    /// The method's name for errors and logs.
    name: &'static str,
    url: Url,
    /// Serialized JSON body.
    body: Option<Vec<u8>>,
    timeout: Duration,
}

impl GraphClient {
    /// Validates the settings and builds one pooled HTTP client. Sends nothing: the first
    /// token is fetched by the first call.
    pub fn new(settings: GraphClientSettings) -> Result<Self, GraphError> {
        let graph = parse_base_url("graph_url", &settings.graph_url).map_err(GraphError::Config)?;
        let authority =
            parse_base_url("authority_url", &settings.authority_url).map_err(GraphError::Config)?;
        for (name, value) in [
            ("tenant_id", settings.tenant_id.as_str()),
            ("client_id", settings.client_id.as_str()),
        ] {
            if value.trim().is_empty() {
                return Err(GraphError::Config(format!("{name} is empty")));
            }
        }
        let credential = match (&settings.assertion, settings.client_secret.is_empty()) {
            (None, false) => Credential::Secret(SharedSecret::new(settings.client_secret.clone())),
            (Some(assertion), true) => Credential::Assertion(assertion.clone()),
            (None, true) => return Err(GraphError::Config("client_secret is empty".to_owned())),
            (Some(_), false) => {
                return Err(GraphError::Config(
                    "set either a client secret or a client assertion, not both".to_owned(),
                ))
            }
        };
        let mut token_endpoint = authority;
        token_endpoint
            .path_segments_mut()
            .map_err(|()| GraphError::Config("authority_url cannot take a path".to_owned()))?
            .extend([settings.tenant_id.trim(), "oauth2", "v2.0", "token"]);
        let http = http_client(settings.request_timeout, DEFAULT_CONNECT_TIMEOUT)
            .map_err(GraphError::Config)?;
        let tokens = TokenSource::new(
            token_endpoint,
            settings.client_id.trim(),
            credential,
            &default_scope(&graph),
            settings.request_timeout,
        );
        let retry = RetryPolicy {
            max_attempts: settings.max_attempts.max(1),
            ..RetryPolicy::default()
        };
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                graph,
                tokens,
                retry,
                request_timeout: settings.request_timeout,
            }),
        })
    }

    /// Signs in with `secret` from the next token request on (a rotated client secret file).
    pub fn replace_client_secret(&self, secret: &SecretString) -> Result<(), GraphError> {
        self.inner.tokens.replace_secret(secret)
    }

    // ----------------------------------------------------------------------------------
    // Operations
    // ----------------------------------------------------------------------------------

    /// Active PIM-for-Groups assignment instances of a group, memberships only (`accessId`
    /// `member`), optionally of one principal. Both activations (`assignmentType`
    /// `activated`, with their end) and standing assignments (`assigned`) are returned.
    /// Follows `@odata.nextLink` to the last page.
    pub async fn active_member_assignments(
        &self,
        group_id: &str,
        principal_id: Option<&str>,
    ) -> Result<Vec<AssignmentInstance>, GraphError> {
        let instances = self.active_assignments(group_id, principal_id).await?;
        Ok(instances.into_iter().filter(|i| i.is_member()).collect())
    }

    /// Like [`Self::active_member_assignments`], with ownerships (`accessId` `owner`) too.
    pub async fn active_assignments(
        &self,
        group_id: &str,
        principal_id: Option<&str>,
    ) -> Result<Vec<AssignmentInstance>, GraphError> {
        let mut filter = format!(
            "groupId eq {}",
            odata_string(require_id("group id", group_id)?)
        );
        if let Some(principal_id) = principal_id {
            let principal_id = require_id("principal id", principal_id)?;
            filter.push_str(&format!(
                " and principalId eq {}",
                odata_string(principal_id)
            ));
        }
        let url = self.url(&ASSIGNMENT_INSTANCES, &[("$filter", &filter)])?;
        self.list_all(url).await
    }

    /// `GET /users/{id}` with the attributes pimbridge maps; `None` when Graph answers 404.
    pub async fn user(&self, id: &str) -> Result<Option<GraphUser>, GraphError> {
        self.get_optional("users", require_id("user id", id)?, USER_SELECT)
            .await
    }

    /// `GET /groups/{id}` with `id,displayName`; `None` when Graph answers 404.
    pub async fn group(&self, id: &str) -> Result<Option<GraphGroup>, GraphError> {
        self.get_optional("groups", require_id("group id", id)?, GROUP_SELECT)
            .await
    }

    /// `POST /subscriptions`. Graph validates `notificationUrl` (and
    /// `lifecycleNotificationUrl`) with the `validationToken` handshake before it answers;
    /// a failed handshake is a [`GraphError::BadRequest`] whose message says so. A
    /// subscription for the same changeType and resource is a [`GraphError::Conflict`]; that
    /// includes one created by an earlier attempt whose reply was lost (see
    /// [`Self::list_subscriptions`]).
    pub async fn create_subscription(
        &self,
        request: &NewSubscription,
    ) -> Result<Subscription, GraphError> {
        let state_chars = request.client_state.expose().chars().count();
        if state_chars == 0 || state_chars > MAX_CLIENT_STATE_CHARS {
            return Err(GraphError::InvalidArgument(format!(
                "clientState must have 1 to {MAX_CLIENT_STATE_CHARS} characters"
            )));
        }
        let body = to_json(request)?;
        let url = self.url(&["subscriptions"], &[])?;
        let call = self.call_with_handshake(Method::POST, "POST", url, body);
        self.fetch(&call).await
    }

    /// `PATCH /subscriptions/{id}` with a new `expirationDateTime` (renews and reauthorizes).
    pub async fn renew_subscription(
        &self,
        id: &str,
        expiration: OffsetDateTime,
    ) -> Result<Subscription, GraphError> {
        let url = self.url(&["subscriptions", require_id("subscription id", id)?], &[])?;
        let body = to_json(&serde_json::json!({
            "expirationDateTime": format_graph_time(expiration)
        }))?;
        let call = self.call_with_handshake(Method::PATCH, "PATCH", url, body);
        self.fetch(&call).await
    }

    /// `DELETE /subscriptions/{id}`. A subscription that is already gone (404) counts as
    /// deleted.
    pub async fn delete_subscription(&self, id: &str) -> Result<(), GraphError> {
        let url = self.url(&["subscriptions", require_id("subscription id", id)?], &[])?;
        let call = self.call(Method::DELETE, "DELETE", url, None);
        match self.execute(&call).await {
            Ok(_) | Err(GraphError::NotFound(_)) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// `GET /subscriptions`: this app's subscriptions in the tenant, all pages.
    pub async fn list_subscriptions(&self) -> Result<Vec<Subscription>, GraphError> {
        let url = self.url(&["subscriptions"], &[])?;
        self.list_all(url).await
    }

    // ----------------------------------------------------------------------------------
    // Helpers shared by the operations
    // ----------------------------------------------------------------------------------

    /// A by-id read with `$select`, 404 as `None`.
    async fn get_optional<T: DeserializeOwned>(
        &self,
        collection: &str,
        id: &str,
        select: &str,
    ) -> Result<Option<T>, GraphError> {
        let url = self.url(&[collection, id], &[("$select", select)])?;
        let call = self.call(Method::GET, "GET", url, None);
        match self.fetch(&call).await {
            Ok(found) => Ok(Some(found)),
            Err(GraphError::NotFound(_)) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Every item of a collection, following `@odata.nextLink`.
    async fn list_all<T: DeserializeOwned>(&self, first: Url) -> Result<Vec<T>, GraphError> {
        let mut items = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            let call = self.call(Method::GET, "GET", url, None);
            if pages > MAX_PAGES {
                return Err(protocol(
                    &call,
                    format!("paging did not end within {MAX_PAGES} pages"),
                ));
            }
            let page: ODataPage<T> = self.fetch(&call).await?;
            items.extend(page.value);
            if let Some(link) = page.next_link.filter(|l| !l.is_empty()) {
                let url = self.follow(&link).ok_or_else(|| {
                    protocol(&call, "the next link leaves the Graph base URL".to_owned())
                })?;
                if url == call.url {
                    return Err(protocol(
                        &call,
                        "the next link points at the same page".to_owned(),
                    ));
                }
                next = Some(url);
            }
        }
        Ok(items)
    }

    /// A next link, if it stays below the configured Graph base (same origin and path).
    fn follow(&self, link: &str) -> Option<Url> {
        let url = Url::parse(link).ok()?;
        let base = &self.inner.graph;
        let below_base = url
            .path()
            .strip_prefix(base.path().trim_end_matches('/'))
            .is_some_and(|rest| rest.starts_with('/'));
        (url.origin() == base.origin() && below_base).then_some(url)
    }

    /// Graph base + encoded path segments + query (values percent-encoded, `%20` for space).
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Url, GraphError> {
        let mut url = self.inner.graph.clone();
        url.path_segments_mut()
            .map_err(|()| GraphError::Config("graph_url cannot take a path".to_owned()))?
            .extend(segments);
        if !query.is_empty() {
            let text: Vec<String> = query
                .iter()
                .map(|(key, value)| format!("{key}={}", encode_query_value(value)))
                .collect();
            url.set_query(Some(&text.join("&")));
        }
        Ok(url)
    }

    fn call(&self, method: Method, name: &'static str, url: Url, body: Option<Vec<u8>>) -> Call {
        Call {
            method,
            name,
            url,
            body,
            timeout: self.inner.request_timeout,
        }
    }

    /// A call that Graph answers only after a validation handshake with our receiver.
    fn call_with_handshake(
        &self,
        method: Method,
        name: &'static str,
        url: Url,
        body: Vec<u8>,
    ) -> Call {
        let mut call = self.call(method, name, url, Some(body));
        call.timeout += VALIDATION_ALLOWANCE;
        call
    }

    /// [`Self::execute`] and decode the JSON reply.
    async fn fetch<T: DeserializeOwned>(&self, call: &Call) -> Result<T, GraphError> {
        let body = self.execute(call).await?;
        serde_json::from_slice(&body).map_err(|source| GraphError::Decode {
            method: call.name,
            path: call.url.path().to_owned(),
            source,
        })
    }

    /// Sends `call` until it succeeds, fails for good, or the retry budget is spent.
    ///
    /// Each attempt takes a token from the cache (fetching one if due; a transient failure
    /// of the token endpoint is retried like one of Graph). A 401 drops the token that was
    /// refused and tries once more with a fresh one, outside the retry budget.
    async fn execute(&self, call: &Call) -> Result<Vec<u8>, GraphError> {
        let mut budget = Budget::start(self.inner.retry);
        let mut refreshed = false;
        loop {
            let attempt = budget.count_attempt();
            let (error, refused) = match self.inner.tokens.bearer(&self.inner.http).await {
                Ok(bearer) => match self.attempt(call, &bearer).await {
                    Ok(body) => return Ok(body),
                    Err(error) => (error, Some(bearer)),
                },
                Err(error) => (error, None),
            };
            if let (GraphError::Unauthorized(_), Some(bearer), false) =
                (&error, &refused, refreshed)
            {
                refreshed = true;
                tracing::info!(
                    graph.path = call.url.path(),
                    "Graph answered 401; fetching a new token"
                );
                self.inner.tokens.invalidate(bearer).await;
                continue;
            }
            if !error.is_transient() {
                return Err(error);
            }
            let wait = budget.next_wait(error.retry_after());
            if let Err(spent) = budget.check(wait) {
                return Err(GraphError::gave_up(spent, error));
            }
            tracing::warn!(
                graph.method = call.name,
                graph.path = call.url.path(),
                attempt,
                wait_ms = millis(wait),
                error.message = %error,
                "Graph request failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One HTTP exchange with a given token; the body of a success.
    async fn attempt(&self, call: &Call, bearer: &HeaderValue) -> Result<Vec<u8>, GraphError> {
        let path = call.url.path();
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), call.url.clone())
            .timeout(call.timeout)
            .header(AUTHORIZATION, bearer.clone())
            .header(ACCEPT, "application/json");
        if let Some(body) = &call.body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let Exchange {
            status,
            retry_after,
            request_id,
            body,
            ..
        } = exchange(request, call.name, path, call.timeout, &[HEADER_REQUEST_ID]).await?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let envelope: Option<ErrorEnvelope> = serde_json::from_slice(&body).ok();
        let (code, message, inner_id) = match envelope {
            Some(ErrorEnvelope { error }) => (
                Some(error.code).filter(|c| !c.is_empty()),
                Some(error.message).filter(|m| !m.is_empty()),
                error.inner_error.and_then(|i| i.request_id),
            ),
            None => (None, excerpt(&body), None),
        };
        Err(GraphError::from_response(
            GraphErrorResponse {
                method: call.name,
                path: path.to_owned(),
                status,
                code,
                message,
                request_id: request_id.or(inner_id),
            },
            retry_after,
        ))
    }
}

fn protocol(call: &Call, reason: String) -> GraphError {
    GraphError::Protocol {
        method: call.name,
        path: call.url.path().to_owned(),
        reason,
    }
}

/// Refuses an empty id before it turns `/users/{id}` into a listing of all users.
fn require_id<'a>(what: &str, id: &'a str) -> Result<&'a str, GraphError> {
    non_empty_id(id).ok_or_else(|| GraphError::InvalidArgument(format!("the {what} is empty")))
}

/// An OData string literal: single-quoted, with single quotes doubled (OData ABNF
/// `SQUOTE-in-string`).
pub fn odata_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn to_json<T: serde::Serialize>(body: &T) -> Result<Vec<u8>, GraphError> {
    crate::outbound::error::to_json(body).map_err(GraphError::InvalidArgument)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(graph_url: &str) -> GraphClient {
        let mut settings = GraphClientSettings::new("tenant-1", "client-1", "s3cret-value");
        settings.graph_url = graph_url.to_owned();
        GraphClient::new(settings).unwrap()
    }

    #[test]
    fn odata_strings_double_single_quotes() {
        assert_eq!(odata_string("abc"), "'abc'");
        assert_eq!(odata_string("o'brien"), "'o''brien'");
        assert_eq!(odata_string("''"), "''''''");
        assert_eq!(odata_string(""), "''");
    }

    #[test]
    fn filters_are_encoded_with_percent_20_and_ids_as_path_segments() {
        let c = client("https://graph.microsoft.com/v1.0/");
        let url = c
            .url(
                &ASSIGNMENT_INSTANCES,
                &[("$filter", "groupId eq 'a''b' and principalId eq 'c&d'")],
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://graph.microsoft.com/v1.0/identityGovernance/privilegedAccess/group/\
             assignmentScheduleInstances?$filter=groupId%20eq%20%27a%27%27b%27%20and%20\
             principalId%20eq%20%27c%26d%27"
        );
        let user = c
            .url(&["users", "a/b?c"], &[("$select", USER_SELECT)])
            .unwrap();
        assert_eq!(user.path(), "/v1.0/users/a%2Fb%3Fc");
        assert_eq!(
            user.query(),
            Some("$select=id%2CuserPrincipalName%2CgivenName%2Csurname%2CdisplayName%2Cmail")
        );
    }

    #[test]
    fn next_links_below_a_base_without_path_are_followed() {
        let c = client("http://127.0.0.1:8080");
        assert!(c
            .follow("http://127.0.0.1:8080/v1.0/groups?$skiptoken=1")
            .is_some());
        assert!(c.follow("http://127.0.0.1:8081/v1.0/groups").is_none());
    }

    #[test]
    fn next_links_are_followed_only_below_the_graph_base() {
        let c = client("https://graph.microsoft.com/v1.0");
        assert!(c
            .follow("https://graph.microsoft.com/v1.0/groups?$skiptoken=X")
            .is_some());
        for link in [
            "https://evil.example/v1.0/groups?$skiptoken=X",
            "http://graph.microsoft.com/v1.0/groups",
            "https://graph.microsoft.com/beta/groups",
            "https://graph.microsoft.com/v1.0x/groups",
            "not a url",
        ] {
            assert!(c.follow(link).is_none(), "{link}");
        }
    }

    #[test]
    fn bad_settings_are_configuration_errors() {
        for graph in ["not a url", "ftp://graph.example/v1.0", "mailto:a@b.c"] {
            let mut settings = GraphClientSettings::new("t", "c", "s");
            settings.graph_url = graph.to_owned();
            assert!(
                matches!(GraphClient::new(settings), Err(GraphError::Config(_))),
                "{graph}"
            );
        }
        for (tenant, client_id, secret) in [("", "c", "s"), ("t", " ", "s"), ("t", "c", "")] {
            let settings = GraphClientSettings::new(tenant, client_id, secret);
            assert!(matches!(
                GraphClient::new(settings),
                Err(GraphError::Config(_))
            ));
        }
    }

    #[test]
    fn the_token_endpoint_is_below_the_authority_and_tenant() {
        let c = client("https://graph.microsoft.com/v1.0");
        assert_eq!(
            c.inner.tokens.endpoint().as_str(),
            "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token"
        );
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let settings = GraphClientSettings::new("t", "c", "s3cret-value");
        let c = GraphClient::new(settings.clone()).unwrap();
        let text = format!("{c:?} {settings:?}");
        assert!(!text.contains("s3cret-value"), "{text}");
    }

    #[test]
    fn empty_ids_are_refused_before_any_request() {
        assert!(matches!(
            require_id("user id", "  "),
            Err(GraphError::InvalidArgument(_))
        ));
        assert_eq!(require_id("user id", " u1 ").unwrap(), "u1");
    }
}
