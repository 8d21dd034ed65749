//! The SCIM client for one AWS IAM Identity Center application.
//!
//! One thin method per SCIM operation sits on three helpers: [`ScimClient::execute`] (pace,
//! send, classify, retry), a filtered lookup and a create. Everything AWS is known to do
//! to clients is absorbed here (docs/emulator.md):
//!
//! - throttling and 5xx: jittered exponential backoff that waits at least `Retry-After`,
//!   within a budget of attempts and time;
//! - lost replies on create: POST is retried like any transient failure, and the 409 that
//!   follows (because the first attempt did land) becomes a lookup, so one user results;
//! - eventual consistency: a 404 on a resource this client created moments ago is retried
//!   for a short window;
//! - truncated listings: membership is read with cursor paging until no `nextCursor`;
//! - the 100-changes-per-PATCH cap: member changes are chunked.
//!
//! The token is only ever placed in the `Authorization` header (marked sensitive); no
//! error, log line or `Debug` output contains it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

use super::error::{ErrorResponse, ScimError};
use super::mapping::{
    check_external_id, check_group_display_name, check_user, check_user_name, CharacterPolicy,
    MappingError,
};
use super::pacing::{Pacer, DEFAULT_BURST, DEFAULT_REQUESTS_PER_SECOND};
use super::types::{
    ListResponse, PatchOpKind, PatchOperation, PatchRequest, ScimErrorBody, ScimGroup, ScimUser,
    ServiceProviderConfig, CONTENT_TYPE_JSON, HEADER_REQUEST_ID, SCHEMA_ENTERPRISE_USER,
    SCHEMA_GROUP, SCHEMA_USER,
};
use crate::backoff::random_draw;
use crate::outbound::error::{excerpt, non_empty_id};
use crate::outbound::{
    encode_query_value as encode, exchange, http_client, millis, parse_base_url, Budget, Exchange,
    RetryPolicy, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
};
use crate::secret::SecretString;

/// AWS caps membership changes per PATCH /Groups at 100 (docs/emulator.md).
pub const MAX_MEMBER_CHANGES_PER_PATCH: usize = 100;
/// Upper bound on pages when listing members: 1,000 pages of 100 covers the 100,000-user
/// identity store limit; more means the server's cursor never ends.
pub const MAX_PAGES: usize = 1_000;
/// We read either media type; AWS answers `application/json`.
const ACCEPT_SCIM_OR_JSON: &str = "application/scim+json, application/json";

/// Default window after our own create in which a 404 is read as "not visible yet"
/// (docs/emulator.md saw 404 ~45 ms after a create).
pub const DEFAULT_CONSISTENCY_WINDOW: Duration = Duration::from_secs(5);

/// Receives one call per HTTP attempt (retries included), so the service can keep metrics
/// without this module depending on Prometheus.
pub trait RequestObserver: Send + Sync {
    /// `method` is the HTTP method; `status` is `None` when no response arrived (transport
    /// error or timeout); `elapsed` covers sending and reading the body.
    fn observe(&self, method: &'static str, status: Option<u16>, elapsed: Duration);
}

/// Everything a [`ScimClient`] needs; build with [`ScimClientSettings::new`] and adjust.
#[derive(Debug, Clone)]
pub struct ScimClientSettings {
    /// SCIM endpoint, e.g. `https://scim.eu-west-1.amazonaws.com/<tenant>/scim/v2`, with or
    /// without trailing slash.
    pub base_url: String,
    /// Bearer token (1-year validity on AWS).
    pub token: SecretString,
    /// Sustained request rate towards this endpoint.
    pub requests_per_second: u32,
    /// Requests allowed at once before pacing starts.
    pub burst: u32,
    /// Whole-request timeout (connect, send, read body).
    pub request_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Attempts per operation, the first included.
    pub max_attempts: u32,
    /// No retry starts (or would end) later than this after the first attempt.
    pub max_retry_elapsed: Duration,
    /// First backoff step.
    pub base_retry_delay: Duration,
    /// Ceiling of one computed backoff step (`Retry-After` may exceed it).
    pub max_retry_delay: Duration,
    /// How long after our own create a 404 on that resource is retried.
    pub consistency_window: Duration,
    /// What to do with characters AWS refuses.
    pub character_policy: CharacterPolicy,
}

impl ScimClientSettings {
    /// Settings with conservative defaults (5 req/s, burst 5, 10 s timeout, 5 attempts
    /// within 30 s, reject refused characters).
    pub fn new(base_url: impl Into<String>, token: impl Into<SecretString>) -> Self {
        let retry = RetryPolicy::default();
        Self {
            base_url: base_url.into(),
            token: token.into(),
            requests_per_second: DEFAULT_REQUESTS_PER_SECOND,
            burst: DEFAULT_BURST,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_attempts: retry.max_attempts,
            max_retry_elapsed: retry.max_elapsed,
            base_retry_delay: retry.base_delay,
            max_retry_delay: retry.max_delay,
            consistency_window: DEFAULT_CONSISTENCY_WINDOW,
            character_policy: CharacterPolicy::Reject,
        }
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            max_elapsed: self.max_retry_elapsed,
            base_delay: self.base_retry_delay,
            max_delay: self.max_retry_delay,
        }
    }
}

/// A SCIM client for one AWS application. Cheap to clone; clones share the connection
/// pool, the pacer and the memory of recent creates.
#[derive(Clone)]
pub struct ScimClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// One pooled HTTP client for the life of the application.
    http: reqwest::Client,
    /// Base URL without trailing slash; paths are appended as segments.
    base: Url,
    /// `Bearer <token>`, marked sensitive so reqwest never prints it; replaced when the token
    /// file changes ([`ScimClient::replace_token`]).
    authorization: RwLock<HeaderValue>,
    /// Shared with the heartbeat, which divides its budget among the live replicas.
    pacer: Arc<Pacer>,
    retry: RetryPolicy,
    request_timeout: Duration,
    consistency_window: Duration,
    policy: CharacterPolicy,
    observer: Option<Arc<dyn RequestObserver>>,
    /// Ids this client created (or found after a 409), with when; pruned past the window.
    recent: Mutex<HashMap<String, Instant>>,
}

impl fmt::Debug for ScimClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScimClient")
            .field("base", &self.inner.base.as_str())
            .field("retry", &self.inner.retry)
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

/// The HTTP methods SCIM uses, as static names for the observer and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Post,
    Put,
    Patch,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
        }
    }

    fn method(self) -> Method {
        match self {
            Self::Get => Method::GET,
            Self::Post => Method::POST,
            Self::Put => Method::PUT,
            Self::Patch => Method::PATCH,
        }
    }
}

/// One logical request, re-sent as-is on retry.
struct Call<'a> {
    verb: Verb,
    /// Path segments below the base URL, e.g. `["Users", id]`; each is percent-encoded.
    segments: &'a [&'a str],
    /// Pre-encoded query string (built by hand: the bare `cursor` flag has no `=`).
    query: Option<String>,
    /// Serialized JSON body.
    body: Option<Vec<u8>>,
    /// Ids this request depends on; a 404 is retried while any was created recently.
    depends_on: &'a [&'a str],
}

/// A successful response.
struct Reply {
    /// URL path, for decode errors.
    path: String,
    request_id: Option<String>,
    body: Vec<u8>,
}

/// The `Authorization` value for `token`, marked sensitive.
fn bearer(token: &SecretString) -> Result<HeaderValue, ScimError> {
    if token.is_empty() {
        return Err(ScimError::Config("the SCIM token is empty".to_owned()));
    }
    let mut authorization =
        HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
            ScimError::Config(
                "the SCIM token contains characters not allowed in a header".to_owned(),
            )
        })?;
    authorization.set_sensitive(true);
    Ok(authorization)
}

impl ScimClient {
    /// Builds the client: validates the base URL and rates, sets up one pooled HTTP client.
    pub fn new(
        settings: ScimClientSettings,
        observer: Option<Arc<dyn RequestObserver>>,
    ) -> Result<Self, ScimError> {
        let base =
            parse_base_url("the SCIM base URL", &settings.base_url).map_err(ScimError::Config)?;
        let authorization = bearer(&settings.token)?;
        let http = http_client(settings.request_timeout, settings.connect_timeout)
            .map_err(ScimError::Config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                authorization: RwLock::new(authorization),
                pacer: Arc::new(Pacer::new(settings.requests_per_second, settings.burst)?),
                retry: settings.retry_policy(),
                request_timeout: settings.request_timeout,
                consistency_window: settings.consistency_window,
                policy: settings.character_policy,
                observer,
                recent: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Sends `token` from now on (a rotated token file); requests in flight keep the old one.
    pub fn replace_token(&self, token: &SecretString) -> Result<(), ScimError> {
        let authorization = bearer(token)?;
        *self
            .inner
            .authorization
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = authorization;
        Ok(())
    }

    /// This client's token bucket, for dividing its budget among replicas
    /// (docs/architecture.md, "Outbound budgets").
    pub fn pacer(&self) -> Arc<Pacer> {
        self.inner.pacer.clone()
    }

    /// The character policy applied to every user and group name sent.
    pub fn character_policy(&self) -> CharacterPolicy {
        self.inner.policy
    }

    // ----------------------------------------------------------------------------------
    // Operations
    // ----------------------------------------------------------------------------------

    /// `GET /ServiceProviderConfig`: proves URL, TLS and token in one cheap call.
    pub async fn test_connection(&self) -> Result<ServiceProviderConfig, ScimError> {
        let call = Call::get(&["ServiceProviderConfig"], None, &[]);
        let reply = self.execute(&call).await?;
        decode(&call, &reply)
    }

    /// `GET /Users?filter=userName eq "…"`. The value goes through the same character
    /// policy as on create, so a stripped name finds the user it was stored as.
    pub async fn find_user_by_user_name(
        &self,
        user_name: &str,
    ) -> Result<Option<ScimUser>, ScimError> {
        let user_name = check_user_name(user_name, self.inner.policy)?;
        self.find_one("Users", &eq_filter("userName", &user_name))
            .await
    }

    /// `GET /Users?filter=externalId eq "…"` (our externalId is the Entra object id).
    pub async fn find_user_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<ScimUser>, ScimError> {
        let external_id = check_external_id(external_id, self.inner.policy)?;
        self.find_one("Users", &eq_filter("externalId", &external_id))
            .await
    }

    /// `GET /Users/{id}`; 404 → [`ScimError::NotFound`] (after the consistency window if
    /// this client just created the user).
    pub async fn get_user(&self, id: &str) -> Result<ScimUser, ScimError> {
        let id = require_id("id", id)?;
        let segments = ["Users", id];
        let depends_on = [id];
        let call = Call::get(&segments, None, &depends_on);
        let reply = self.execute(&call).await?;
        decode(&call, &reply)
    }

    /// `POST /Users`, create-or-get: a 409 (including one caused by our own earlier attempt
    /// whose reply was lost) is resolved by looking the user up by `userName`, then by
    /// `externalId`, and returning the existing user. The user is checked (and, under
    /// [`CharacterPolicy::Strip`], cleaned) before anything is sent.
    pub async fn create_user(&self, user: &ScimUser) -> Result<ScimUser, ScimError> {
        Ok(self.create_user_fresh(user).await?.0)
    }

    /// As [`Self::create_user`], and whether AWS created the user now (201) rather than it being
    /// found on a conflict: a user created now is a member of no group yet.
    pub async fn create_user_fresh(&self, user: &ScimUser) -> Result<(ScimUser, bool), ScimError> {
        let body = self.prepare_user(user)?;
        match self.create::<ScimUser, _>("Users", &body).await {
            Ok(created) => Ok((created, true)),
            Err(conflict @ ScimError::Conflict(_)) => self
                .resolve_user_conflict(&body, conflict)
                .await
                .map(|found| (found, false)),
            Err(other) => Err(other),
        }
    }

    /// `PUT /Users/{id}`: full replacement, as AWS's PutUser expects (docs/emulator.md).
    pub async fn update_user(&self, id: &str, user: &ScimUser) -> Result<ScimUser, ScimError> {
        let id = require_id("id", id)?;
        let body = self.prepare_user(user)?;
        let segments = ["Users", id];
        let depends_on = [id];
        let call = Call {
            verb: Verb::Put,
            segments: &segments,
            query: None,
            body: Some(to_json(&body)?),
            depends_on: &depends_on,
        };
        let reply = self.execute(&call).await?;
        decode(&call, &reply)
    }

    /// `PATCH /Users/{id}` replacing the given attributes, one operation with an explicit `path`
    /// each (what AWS is known to accept; docs/emulator.md). Returns the user AWS now holds.
    pub async fn patch_user(
        &self,
        id: &str,
        changes: &[(&str, serde_json::Value)],
    ) -> Result<ScimUser, ScimError> {
        let id = require_id("id", id)?;
        let operations = changes
            .iter()
            .map(|(path, value)| PatchOperation {
                op: PatchOpKind::Replace,
                path: Some((*path).to_owned()),
                value: Some(value.clone()),
            })
            .collect();
        let segments = ["Users", id];
        let depends_on = [id];
        let call = Call {
            verb: Verb::Patch,
            segments: &segments,
            query: None,
            body: Some(to_json(&PatchRequest::new(operations))?),
            depends_on: &depends_on,
        };
        let reply = self.execute(&call).await?;
        decode(&call, &reply)
    }

    /// `GET /Groups?filter=displayName eq "…"`.
    pub async fn find_group_by_display_name(
        &self,
        display_name: &str,
    ) -> Result<Option<ScimGroup>, ScimError> {
        let display_name = check_group_display_name(display_name, self.inner.policy)?;
        self.find_one("Groups", &eq_filter("displayName", &display_name))
            .await
    }

    /// `GET /Groups?filter=externalId eq "…"`.
    pub async fn find_group_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<ScimGroup>, ScimError> {
        let external_id = check_external_id(external_id, self.inner.policy)?;
        self.find_one("Groups", &eq_filter("externalId", &external_id))
            .await
    }

    /// `GET /Groups/{id}`. AWS never includes `members`; use [`Self::list_group_members`].
    pub async fn get_group(&self, id: &str) -> Result<ScimGroup, ScimError> {
        let id = require_id("id", id)?;
        let segments = ["Groups", id];
        let depends_on = [id];
        let call = Call::get(&segments, None, &depends_on);
        let reply = self.execute(&call).await?;
        decode(&call, &reply)
    }

    /// Returns the group with this `displayName`, creating it if absent.
    ///
    /// Looks up first (groups usually exist, and a lookup is cheaper than a refused
    /// create), then `POST /Groups`; a 409 from a concurrent creator or a lost reply is
    /// resolved by looking up again by `displayName`, then `externalId`.
    pub async fn create_or_get_group(
        &self,
        display_name: &str,
        external_id: Option<&str>,
    ) -> Result<ScimGroup, ScimError> {
        let policy = self.inner.policy;
        let display_name = check_group_display_name(display_name, policy)?;
        let external_id = external_id
            .map(|e| check_external_id(e, policy))
            .transpose()?;
        if let Some(existing) = self.find_group_by_display_name(&display_name).await? {
            return Ok(existing);
        }
        let body = ScimGroup {
            schemas: vec![SCHEMA_GROUP.to_owned()],
            display_name: Some(display_name.clone()),
            external_id: external_id.clone(),
            ..ScimGroup::default()
        };
        match self.create::<ScimGroup, _>("Groups", &body).await {
            Ok(created) => Ok(created),
            Err(conflict @ ScimError::Conflict(_)) => {
                self.resolve_group_conflict(&display_name, external_id.as_deref(), conflict)
                    .await
            }
            Err(other) => Err(other),
        }
    }

    /// Adds users to a group: `PATCH /Groups/{id}` with `op: add`, at most
    /// [`MAX_MEMBER_CHANGES_PER_PATCH`] ids per request. Duplicates are sent once; an
    /// empty list sends nothing. A 409 ("already a member", as the Identity Store API
    /// answers) counts as success.
    pub async fn add_members<S: AsRef<str>>(
        &self,
        group_id: &str,
        user_ids: &[S],
    ) -> Result<(), ScimError> {
        self.change_members(PatchOpKind::Add, group_id, user_ids)
            .await
    }

    /// Removes users from a group: `PATCH /Groups/{id}` with `op: remove`, chunked like
    /// [`Self::add_members`].
    pub async fn remove_members<S: AsRef<str>>(
        &self,
        group_id: &str,
        user_ids: &[S],
    ) -> Result<(), ScimError> {
        self.change_members(PatchOpKind::Remove, group_id, user_ids)
            .await
    }

    /// `GET /Groups?filter=id eq "g" and members eq "u"`: one group in the result means
    /// member. AWS answers 404 when the user does not exist (docs/emulator.md); a user that does
    /// not exist is not a member, so that is `Ok(false)`.
    pub async fn is_member(&self, group_id: &str, user_id: &str) -> Result<bool, ScimError> {
        let group_id = require_id("id", group_id)?;
        let user_id = require_id("members", user_id)?;
        let filter = format!(
            "{} and {}",
            eq_filter("id", group_id),
            eq_filter("members", user_id)
        );
        let depends_on = [group_id, user_id];
        let call = Call::get(
            &["Groups"],
            Some(format!("filter={}", encode(&filter))),
            &depends_on,
        );
        match self.execute(&call).await {
            Ok(reply) => {
                let page: ListResponse<ScimGroup> = decode(&call, &reply)?;
                Ok(!page.resources.is_empty())
            }
            Err(ScimError::NotFound(_)) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Every member of a group: `GET /Users?cursor&filter=groups.value eq "g"`, then
    /// `cursor=<nextCursor>` until a page has none. Without the cursor AWS returns one
    /// truncated page with a `totalResults` that lies (docs/emulator.md).
    pub async fn list_group_members(&self, group_id: &str) -> Result<Vec<ScimUser>, ScimError> {
        let group_id = require_id("id", group_id)?;
        let filter = format!("filter={}", encode(&eq_filter("groups.value", group_id)));
        let mut members = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let query = match &cursor {
                None => format!("cursor&{filter}"),
                Some(c) => format!("cursor={}&{filter}", encode(c)),
            };
            let depends_on = [group_id];
            let call = Call::get(&["Users"], Some(query), &depends_on);
            let reply = self.execute(&call).await?;
            let page: ListResponse<ScimUser> = decode(&call, &reply)?;
            members.extend(page.resources);
            match page.next_cursor.filter(|c| !c.is_empty()) {
                None => return Ok(members),
                Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                    return Err(protocol(
                        &call,
                        self,
                        "the server returned the same cursor twice",
                    ));
                }
                Some(next) => cursor = Some(next),
            }
        }
        Err(ScimError::Protocol {
            method: Verb::Get.as_str(),
            path: self.path_of(&["Users"]),
            reason: format!("member listing did not end within {MAX_PAGES} pages"),
        })
    }

    // ----------------------------------------------------------------------------------
    // Helpers shared by the operations
    // ----------------------------------------------------------------------------------

    /// Checks and normalises a user for create/replace: the character policy, required
    /// attributes, schemas, and no read-only `id`/`meta`.
    fn prepare_user(&self, user: &ScimUser) -> Result<ScimUser, ScimError> {
        let mut body = user.clone();
        check_user(&mut body, self.inner.policy)?;
        body.id = None;
        body.meta = None;
        if body.schemas.is_empty() {
            body.schemas.push(SCHEMA_USER.to_owned());
            if body.enterprise.is_some() {
                body.schemas.push(SCHEMA_ENTERPRISE_USER.to_owned());
            }
        }
        Ok(body)
    }

    /// After a 409 on `POST /Users`: find the user that is in the way. Lookups are retried
    /// within the consistency window because the user our lost attempt created may not be
    /// visible to filters yet.
    async fn resolve_user_conflict(
        &self,
        body: &ScimUser,
        conflict: ScimError,
    ) -> Result<ScimUser, ScimError> {
        let started = Instant::now();
        let mut round = 0;
        loop {
            round += 1;
            let mut found = None;
            if let Some(user_name) = body.user_name.as_deref() {
                found = self.find_user_by_user_name(user_name).await?;
            }
            if found.is_none() {
                if let Some(external_id) = body.external_id.as_deref() {
                    found = self.find_user_by_external_id(external_id).await?;
                }
            }
            if let Some(existing) = found {
                if existing.external_id != body.external_id {
                    tracing::warn!(
                        scim.user_id = existing.id.as_deref().unwrap_or_default(),
                        "existing AWS user has a different externalId than the one we create"
                    );
                } else {
                    tracing::info!(
                        scim.user_id = existing.id.as_deref().unwrap_or_default(),
                        "user already existed; using it"
                    );
                }
                if let Some(id) = existing.id.as_deref() {
                    self.remember(id);
                }
                return Ok(existing);
            }
            if !self.wait_for_visibility(started, round).await {
                return Err(conflict);
            }
        }
    }

    /// After a 409 on `POST /Groups`: as [`Self::resolve_user_conflict`], by
    /// `displayName`, then `externalId`.
    async fn resolve_group_conflict(
        &self,
        display_name: &str,
        external_id: Option<&str>,
        conflict: ScimError,
    ) -> Result<ScimGroup, ScimError> {
        let started = Instant::now();
        let mut round = 0;
        loop {
            round += 1;
            let mut found = self.find_group_by_display_name(display_name).await?;
            if found.is_none() {
                if let Some(external_id) = external_id {
                    found = self.find_group_by_external_id(external_id).await?;
                }
            }
            if let Some(existing) = found {
                if let Some(id) = existing.id.as_deref() {
                    self.remember(id);
                }
                return Ok(existing);
            }
            if !self.wait_for_visibility(started, round).await {
                return Err(conflict);
            }
        }
    }

    /// Sleeps one backoff step if the consistency window (and attempt budget) allows
    /// another lookup round; false when it is time to give up.
    async fn wait_for_visibility(&self, started: Instant, round: u32) -> bool {
        let wait = self.inner.retry.backoff(round, None, random_draw());
        let within_window = started.elapsed() + wait <= self.inner.consistency_window;
        if !within_window || round >= self.inner.retry.max_attempts {
            return false;
        }
        tokio::time::sleep(wait).await;
        true
    }

    /// PATCHes membership changes in chunks of at most 100.
    async fn change_members<S: AsRef<str>>(
        &self,
        op: PatchOpKind,
        group_id: &str,
        user_ids: &[S],
    ) -> Result<(), ScimError> {
        let group_id = require_id("id", group_id)?;
        let mut ids: Vec<&str> = Vec::with_capacity(user_ids.len());
        for id in user_ids {
            let id = require_id("members.value", id.as_ref())?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let segments = ["Groups", group_id];
        for chunk in member_chunks(&ids) {
            let mut depends_on = Vec::with_capacity(chunk.len() + 1);
            depends_on.push(group_id);
            depends_on.extend_from_slice(chunk);
            let call = Call {
                verb: Verb::Patch,
                segments: &segments,
                query: None,
                body: Some(to_json(&PatchRequest::members(op, chunk))?),
                depends_on: &depends_on,
            };
            match self.execute(&call).await {
                Ok(_) => {}
                Err(ScimError::Conflict(response)) if op == PatchOpKind::Add => {
                    tracing::debug!(%response, "member add answered 409; treating as already a member");
                }
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    /// A filtered list request expected to match at most one resource.
    async fn find_one<T: DeserializeOwned>(
        &self,
        resource: &'static str,
        filter: &str,
    ) -> Result<Option<T>, ScimError> {
        let segments = [resource];
        let call = Call::get(&segments, Some(format!("filter={}", encode(filter))), &[]);
        let reply = self.execute(&call).await?;
        let page: ListResponse<T> = decode(&call, &reply)?;
        if page.resources.len() > 1 {
            tracing::warn!(
                scim.resource = resource,
                count = page.resources.len(),
                "lookup of a unique attribute matched several resources; using the first"
            );
        }
        Ok(page.resources.into_iter().next())
    }

    /// `POST /{resource}`; returns the created resource and remembers its id for the
    /// consistency window.
    async fn create<T, B>(&self, resource: &'static str, body: &B) -> Result<T, ScimError>
    where
        T: DeserializeOwned + HasId,
        B: Serialize,
    {
        let segments = [resource];
        let call = Call {
            verb: Verb::Post,
            segments: &segments,
            query: None,
            body: Some(to_json(body)?),
            depends_on: &[],
        };
        let reply = self.execute(&call).await?;
        let created: T = decode(&call, &reply)?;
        match created.id() {
            Some(id) if !id.is_empty() => self.remember(id),
            _ => return Err(protocol(&call, self, "the created resource has no id")),
        }
        Ok(created)
    }

    /// Sends `call` until it succeeds, fails for good, or the retry budget is spent.
    ///
    /// Before every attempt the pacer is consulted. Transient failures (transport,
    /// timeout, 429, 5xx) are retried after [`RetryPolicy::backoff`] within the budget of
    /// attempts and time; a 404 is retried only while a resource it concerns was created
    /// by us within the consistency window; everything else returns at once.
    async fn execute(&self, call: &Call<'_>) -> Result<Reply, ScimError> {
        let url = self.url(call)?;
        let path = url.path().to_owned();
        let mut budget = Budget::start(self.inner.retry);
        loop {
            self.inner.pacer.ready().await;
            let attempt = budget.count_attempt();
            let error = match self.attempt(call, &url, &path).await {
                Ok(reply) => return Ok(reply),
                Err(error) => error,
            };
            let transient = error.is_transient();
            let visibility_left = match error {
                ScimError::NotFound(_) => self.visibility_window_left(call.depends_on),
                _ => None,
            };
            if !transient && visibility_left.is_none() {
                return Err(error);
            }
            let mut wait = budget.next_wait(error.retry_after());
            if let Some(left) = visibility_left {
                wait = wait.min(left);
            }
            // Transient failures spend the retry budget. "Not visible yet" is bounded by the
            // consistency window instead (checked again on the next 404), because a few
            // quick attempts could all land inside the invisibility period.
            if transient {
                if let Err(spent) = budget.check(wait) {
                    return Err(ScimError::gave_up(spent, error));
                }
            }
            tracing::warn!(
                scim.method = call.verb.as_str(),
                scim.path = %path,
                attempt,
                wait_ms = millis(wait),
                error.message = %error,
                "SCIM request failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One HTTP exchange, reported to the observer.
    async fn attempt(&self, call: &Call<'_>, url: &Url, path: &str) -> Result<Reply, ScimError> {
        let method = call.verb.as_str();
        let mut request = self
            .inner
            .http
            .request(call.verb.method(), url.clone())
            .header(
                reqwest::header::AUTHORIZATION,
                self.inner
                    .authorization
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            )
            .header(ACCEPT, HeaderValue::from_static(ACCEPT_SCIM_OR_JSON));
        if let Some(body) = &call.body {
            request = request
                .header(CONTENT_TYPE, CONTENT_TYPE_JSON)
                .body(body.clone());
        }
        let sent = Instant::now();
        let outcome = exchange(
            request,
            method,
            path,
            self.inner.request_timeout,
            &[HEADER_REQUEST_ID],
        )
        .await;
        let elapsed = sent.elapsed();
        let Exchange {
            status,
            retry_after,
            request_id,
            body,
            ..
        } = match outcome {
            Ok(exchange) => exchange,
            Err(error) => {
                self.observe(method, None, elapsed);
                return Err(error.into());
            }
        };
        self.observe(method, Some(status), elapsed);
        if (200..300).contains(&status) {
            return Ok(Reply {
                path: path.to_owned(),
                request_id,
                body,
            });
        }
        let parsed: Option<ScimErrorBody> = serde_json::from_slice(&body).ok();
        let detail = match &parsed {
            Some(parsed) => parsed.best_detail().map(str::to_owned),
            None => excerpt(&body),
        };
        let request_id = request_id.or_else(|| parsed.and_then(|p| p.exception_request_id));
        Err(ScimError::from_response(
            ErrorResponse {
                method,
                path: path.to_owned(),
                status,
                detail,
                request_id,
            },
            retry_after,
        ))
    }

    fn observe(&self, method: &'static str, status: Option<u16>, elapsed: Duration) {
        if let Some(observer) = &self.inner.observer {
            observer.observe(method, status, elapsed);
        }
    }

    /// The full URL of a call: base + encoded segments + hand-built query.
    fn url(&self, call: &Call<'_>) -> Result<Url, ScimError> {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .map_err(|()| ScimError::Config("the base URL cannot take a path".to_owned()))?
            .extend(call.segments);
        url.set_query(call.query.as_deref());
        Ok(url)
    }

    /// The path a call on `segments` would use, for errors raised outside `execute`.
    fn path_of(&self, segments: &[&str]) -> String {
        let mut url = self.inner.base.clone();
        if let Ok(mut s) = url.path_segments_mut() {
            s.extend(segments);
        }
        url.path().to_owned()
    }

    /// Notes an id we just created, so a 404 on it soon after is retried.
    fn remember(&self, id: &str) {
        let window = self.inner.consistency_window;
        let mut recent = self
            .inner
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        recent.retain(|_, at| at.elapsed() < window);
        recent.insert(id.to_owned(), Instant::now());
    }

    /// How much of the consistency window is left for the most recently created of
    /// `ids`; `None` if none of them was created by us within the window.
    fn visibility_window_left(&self, ids: &[&str]) -> Option<Duration> {
        if ids.is_empty() {
            return None;
        }
        let window = self.inner.consistency_window;
        let recent = self
            .inner
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ids.iter()
            .filter_map(|id| recent.get(*id))
            .filter_map(|at| window.checked_sub(at.elapsed()))
            .filter(|left| !left.is_zero())
            .max()
    }
}

impl<'a> Call<'a> {
    fn get(segments: &'a [&'a str], query: Option<String>, depends_on: &'a [&'a str]) -> Self {
        Self {
            verb: Verb::Get,
            segments,
            query,
            body: None,
            depends_on,
        }
    }
}

/// Resources whose server id we read after a create.
trait HasId {
    fn id(&self) -> Option<&str>;
}

impl HasId for ScimUser {
    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

impl HasId for ScimGroup {
    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

/// Rejects an empty id before it becomes `/Users/` (a list call) by accident.
fn require_id<'a>(attribute: &'static str, id: &'a str) -> Result<&'a str, ScimError> {
    non_empty_id(id).ok_or_else(|| MappingError::Missing { attribute }.into())
}

/// `attr eq "value"` with the value escaped as a JSON string body (RFC 7644 §3.4.2.2).
fn eq_filter(attribute: &str, value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("{attribute} eq \"{escaped}\"")
}

/// Splits member ids into PATCH-sized chunks.
fn member_chunks<'a, 'b>(ids: &'b [&'a str]) -> std::slice::Chunks<'b, &'a str> {
    ids.chunks(MAX_MEMBER_CHANGES_PER_PATCH)
}

fn to_json<T: Serialize>(body: &T) -> Result<Vec<u8>, ScimError> {
    crate::outbound::error::to_json(body).map_err(ScimError::Config)
}

fn decode<T: DeserializeOwned>(call: &Call<'_>, reply: &Reply) -> Result<T, ScimError> {
    serde_json::from_slice(&reply.body).map_err(|source| ScimError::Decode {
        method: call.verb.as_str(),
        path: reply.path.clone(),
        request_id: reply.request_id.clone(),
        source,
    })
}

fn protocol(call: &Call<'_>, client: &ScimClient, reason: &str) -> ScimError {
    ScimError::Protocol {
        method: call.verb.as_str(),
        path: client.path_of(call.segments),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_works_with_or_without_trailing_slash() {
        for base in [
            "https://scim.us-east-1.amazonaws.com/kE3934e0444-9ba8-41e7-b468-2fecf5b4fa22/scim/v2",
            "https://scim.us-east-1.amazonaws.com/kE3934e0444-9ba8-41e7-b468-2fecf5b4fa22/scim/v2/",
        ] {
            let client = ScimClient::new(ScimClientSettings::new(base, "t"), None).unwrap();
            assert_eq!(
                client.path_of(&["Users", "a/b c"]),
                "/kE3934e0444-9ba8-41e7-b468-2fecf5b4fa22/scim/v2/Users/a%2Fb%20c"
            );
        }
    }

    #[test]
    fn bad_settings_are_configuration_errors() {
        for base in [
            "not a url",
            "ftp://example.com/scim",
            "mailto:x@example.com",
        ] {
            let err = ScimClient::new(ScimClientSettings::new(base, "t"), None).unwrap_err();
            assert!(matches!(err, ScimError::Config(_)), "{base}: {err:?}");
        }
        let err = ScimClient::new(
            ScimClientSettings::new("https://x.example/scim/v2", ""),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, ScimError::Config(_)));
        let mut settings = ScimClientSettings::new("https://x.example/scim/v2", "t");
        settings.requests_per_second = 0;
        assert!(matches!(
            ScimClient::new(settings, None),
            Err(ScimError::Config(_))
        ));
    }

    #[test]
    fn the_client_debug_output_never_shows_the_token() {
        let settings = ScimClientSettings::new("https://x.example/scim/v2", "sekret-token-value");
        let client = ScimClient::new(settings.clone(), None).unwrap();
        let text = format!("{client:?} {settings:?}");
        assert!(!text.contains("sekret-token-value"), "{text}");
    }

    #[test]
    fn filters_quote_and_escape_values() {
        assert_eq!(eq_filter("userName", "bjensen"), r#"userName eq "bjensen""#);
        assert_eq!(
            eq_filter("displayName", r#"a"b\c"#),
            r#"displayName eq "a\"b\\c""#
        );
    }

    #[test]
    fn two_hundred_fifty_member_changes_become_chunks_of_100_100_and_50() {
        let owned: Vec<String> = (0..250).map(|i| format!("u{i}")).collect();
        let ids: Vec<&str> = owned.iter().map(String::as_str).collect();
        let sizes: Vec<usize> = member_chunks(&ids).map(<[&str]>::len).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        let sizes: Vec<usize> = member_chunks(&ids[..100]).map(<[&str]>::len).collect();
        assert_eq!(sizes, vec![100]);
        assert_eq!(member_chunks(&[]).count(), 0);
    }

    #[test]
    fn empty_ids_are_refused_before_any_request() {
        let err = require_id("id", "  ").unwrap_err();
        assert!(matches!(
            err,
            ScimError::Validation(MappingError::Missing { attribute: "id" })
        ));
    }
}
