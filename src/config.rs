//! Configuration: one TOML file, overridden key by key by `PIMBRIDGE_<SECTION>__<KEY>` environment
//! variables, validated once at start-up.
//!
//! Every secret can be given inline (`hmac_secret = "…"`) or as a path (`hmac_secret_file = "…"`), so
//! that Kubernetes Secrets mount cleanly. [`Settings::load`] reads the layers, resolves the files and
//! validates everything, and every error names the key at fault.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

use crate::secret::SecretString;

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "PIMBRIDGE_";

/// Why the configuration cannot be used. Each message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable could not be read or has the wrong shape.
    #[error("configuration: {0}")]
    Load(String),
    /// A key has a value that cannot work.
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    #[serde(default)]
    pub intake: IntakeSettings,
    #[serde(default)]
    pub dispatch: DispatchSettings,
    #[serde(default)]
    pub sync: SyncSettings,
    #[serde(default)]
    pub admin: AdminSettings,
    /// Microsoft Graph change notifications and look-ups; absent turns `/webhooks/graph` off.
    pub graph: Option<GraphSettings>,
    #[serde(default)]
    pub log: LogSettings,
    /// AWS IAM Identity Center targets, keyed by a short name used in metrics and logs.
    #[serde(default)]
    pub applications: BTreeMap<String, ApplicationSettings>,
}

/// The HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address and port to listen on.
    pub listen: String,
    /// Seconds in-flight requests get to finish after SIGTERM; keep below the pod's grace period.
    #[serde(deserialize_with = "whole")]
    pub shutdown_timeout_secs: u64,
    /// HTTP worker threads; 0 means one per core.
    #[serde(deserialize_with = "whole")]
    pub workers: usize,
    /// How often the gauges read from Postgres (queue depths, quarantines) are refreshed in the
    /// background; a `/metrics` scrape only reads the last values.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub metrics_refresh_interval: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            shutdown_timeout_secs: 20,
            workers: 0,
            metrics_refresh_interval: Duration::from_secs(5),
        }
    }
}

/// The Postgres database that holds every event and job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/db` — a secret, since it may carry a password.
    pub url: Option<SecretString>,
    pub url_file: Option<PathBuf>,
    #[serde(default = "default_max_connections")]
    #[serde(deserialize_with = "whole")]
    pub max_connections: usize,
    /// Seconds to wait for a connection before a request fails with 503.
    #[serde(default = "default_connect_timeout_secs")]
    #[serde(deserialize_with = "whole")]
    pub connect_timeout_secs: u64,
    /// PEM file of CA certificates trusted for the database's TLS certificate, besides the
    /// operating system's (e.g. the Amazon RDS bundle). TLS itself follows the URL's `sslmode`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_max_connections() -> usize {
    16
}

fn default_connect_timeout_secs() -> u64 {
    5
}

/// How events get in and how they are authenticated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeSettings {
    /// Largest request body accepted, in bytes.
    #[serde(deserialize_with = "whole")]
    pub max_body_bytes: usize,
    /// Shared secret for the `X-Pimbridge-Signature` HMAC-SHA256 scheme.
    pub hmac_secret: Option<SecretString>,
    pub hmac_secret_file: Option<PathBuf>,
    /// How far a signature's timestamp may be from now, in seconds, against replays.
    #[serde(deserialize_with = "whole")]
    pub signature_tolerance_secs: u64,
    /// Bearer JWT verification; absent means JWTs are not accepted.
    pub jwt: Option<JwtSettings>,
    /// Requests per second one client may send to the intake routes (`/v1/…`, `/webhooks/…`)
    /// before getting 429; 0 turns the limit off.
    #[serde(deserialize_with = "whole")]
    pub requests_per_second: u32,
    /// Requests one client may send at once before the per-second limit applies.
    #[serde(deserialize_with = "whole")]
    pub requests_burst: u32,
    /// Replaced by `trusted_proxies`; still read so that the refusal can say so.
    pub client_ip_header: Option<String>,
    /// The reverse proxies (addresses or CIDRs) whose `X-Forwarded-For` / `Forwarded` headers are
    /// believed; the client is the right-most address in them that is not one of these. Empty:
    /// the headers are ignored and the peer address is the client (docs/security.md).
    pub trusted_proxies: Vec<String>,
    /// The header the trusted proxies write: `X-Forwarded-For` or `Forwarded` (RFC 7239). Only
    /// that one is read, so a client cannot slip in the other.
    pub proxy_header: String,
    /// How far ahead of the server's clock an event's `occurredAt` may be.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub max_clock_skew: Duration,
}

impl Default for IntakeSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            hmac_secret: None,
            hmac_secret_file: None,
            signature_tolerance_secs: 300,
            jwt: None,
            requests_per_second: 50,
            requests_burst: 100,
            client_ip_header: None,
            trusted_proxies: Vec::new(),
            proxy_header: "X-Forwarded-For".into(),
            max_clock_skew: crate::intake::validate::DEFAULT_MAX_CLOCK_SKEW,
        }
    }
}

/// Bearer JWT verification for event sources.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// Accepted `iss` values.
    pub issuers: Vec<String>,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// Accepted algorithms; only asymmetric ones (RS256, RS384, RS512, ES256, ES384, PS256…).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Where the signing keys are published (a JWKS document); fetched, cached and refetched on an
    /// unknown `kid`.
    pub jwks_url: Option<String>,
    /// A JWKS document on disk, instead of `jwks_url`.
    pub jwks_file: Option<PathBuf>,
    /// Least seconds between two fetches of `jwks_url` triggered by unknown key ids.
    #[serde(default = "default_jwks_refetch_secs")]
    #[serde(deserialize_with = "whole")]
    pub jwks_min_refetch_secs: u64,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    #[serde(deserialize_with = "whole")]
    pub leeway_secs: u64,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}

fn default_jwks_refetch_secs() -> u64 {
    30
}

fn default_leeway() -> u64 {
    30
}

/// The immediate-lane dispatcher.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchSettings {
    /// Run the dispatcher in this process (a replica may serve intake only).
    pub enabled: bool,
    /// Jobs handled at once by this replica.
    #[serde(deserialize_with = "whole")]
    pub concurrency: usize,
    /// Seconds between queue polls when no notification arrives (the LISTEN/NOTIFY fallback).
    #[serde(deserialize_with = "whole")]
    pub poll_interval_secs: u64,
    /// Seconds a claimed job stays leased before another replica may take it over.
    #[serde(deserialize_with = "whole")]
    pub lease_secs: u64,
    /// Attempts before a job that keeps failing transiently is marked failed.
    #[serde(deserialize_with = "whole")]
    pub max_attempts: i32,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            concurrency: 8,
            poll_interval_secs: 2,
            lease_secs: 60,
            max_attempts: 8,
        }
    }
}

/// Sync cycles: the deferred lane, deactivations and expired activations (DESIGN.md §5).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncSettings {
    /// Run cycles from this process when it holds an application's cycle lock.
    pub enabled: bool,
    /// Milliseconds between this replica's checks for applications whose cycle is due.
    #[serde(deserialize_with = "whole")]
    pub check_interval_ms: u64,
    /// Cycles in which a change may fail transiently before its jobs are marked failed.
    #[serde(deserialize_with = "whole")]
    pub max_attempts: i32,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            check_interval_ms: 5000,
            max_attempts: 10,
        }
    }
}

/// The operators' API under `/admin/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Bearer token for `/admin/`; without one the admin API is off.
    pub token: Option<SecretString>,
    pub token_file: Option<PathBuf>,
    /// Requests per second one client may send to `/admin/` before getting 429 (against token
    /// guessing); 0 turns the limit off.
    #[serde(deserialize_with = "whole")]
    pub requests_per_second: u32,
    /// Requests one client may send to `/admin/` at once before the per-second limit applies.
    #[serde(deserialize_with = "whole")]
    pub requests_burst: u32,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            token: None,
            token_file: None,
            requests_per_second: 5,
            requests_burst: 20,
        }
    }
}

/// Microsoft Graph: the app registration pimbridge signs in as (client credentials) and the
/// `clientState` its subscriptions carry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSettings {
    /// The Entra tenant (directory) id.
    pub tenant_id: String,
    /// The app registration's application (client) id.
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    pub client_secret_file: Option<PathBuf>,
    /// The secret every change notification must echo (set when creating the subscriptions).
    pub client_state: Option<SecretString>,
    pub client_state_file: Option<PathBuf>,
    /// Where tokens come from.
    #[serde(default = "default_authority_url")]
    pub authority_url: String,
    /// The Graph API base.
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    /// Milliseconds between the resolver's looks for notifications to resolve.
    #[serde(default = "default_resolve_interval_ms")]
    #[serde(deserialize_with = "whole")]
    pub resolve_interval_ms: u64,
    /// The public URL of `/webhooks/graph`. When set, pimbridge creates and renews one
    /// subscription per assigned group; unset, operators create them.
    pub notification_url: Option<String>,
    /// Lifetime asked for each subscription, in minutes (Graph allows at most 41,760 for groups).
    #[serde(default = "default_subscription_minutes")]
    #[serde(deserialize_with = "whole")]
    pub subscription_minutes: u64,
    /// Renew a subscription when less than this many minutes are left.
    #[serde(default = "default_renew_before_minutes")]
    #[serde(deserialize_with = "whole")]
    pub renew_before_minutes: u64,
    /// Milliseconds between checks of the subscriptions.
    #[serde(default = "default_subscription_check_ms")]
    #[serde(deserialize_with = "whole")]
    pub subscription_check_interval_ms: u64,
}

impl GraphSettings {
    /// The Graph client's settings (after validation, the secret is present).
    pub fn client_settings(&self) -> crate::graph::GraphClientSettings {
        let mut client = crate::graph::GraphClientSettings::new(
            self.tenant_id.clone(),
            self.client_id.clone(),
            self.client_secret.clone().unwrap_or_default(),
        );
        client.authority_url = self.authority_url.clone();
        client.graph_url = self.graph_url.clone();
        client
    }
}

fn default_authority_url() -> String {
    "https://login.microsoftonline.com".into()
}

fn default_graph_url() -> String {
    "https://graph.microsoft.com/v1.0".into()
}

fn default_resolve_interval_ms() -> u64 {
    250
}

fn default_subscription_minutes() -> u64 {
    2 * 24 * 60
}

fn default_renew_before_minutes() -> u64 {
    24 * 60
}

fn default_subscription_check_ms() -> u64 {
    60_000
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `json` for production, `pretty` for a terminal.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `pimbridge=debug,info`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// One AWS IAM Identity Center target and the Entra groups assigned to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationSettings {
    /// The SCIM endpoint, `https://scim.<region>.amazonaws.com/<tenant>/scim/v2`.
    pub scim_url: String,
    /// The SCIM bearer token from the IAM Identity Center console.
    pub scim_token: Option<SecretString>,
    pub scim_token_file: Option<PathBuf>,
    /// Entra group object ids whose PIM activations this application receives.
    pub groups: Vec<String>,
    /// Activations sent at once per window; the rest wait for the next sync cycle.
    #[serde(default = "default_activation_limit")]
    #[serde(deserialize_with = "whole")]
    pub activation_limit: u32,
    /// The admission window in seconds (may be fractional).
    #[serde(default = "default_activation_window")]
    pub activation_window_secs: f64,
    /// Outbound SCIM requests per second (AWS publishes no limit; 5 is conservative).
    #[serde(default = "default_requests_per_second")]
    #[serde(deserialize_with = "whole")]
    pub requests_per_second: u32,
    /// Outbound SCIM requests allowed at once before pacing starts (a burst of activations with
    /// known ids is one request each, so this should be at least `activation_limit`).
    #[serde(default = "default_requests_burst")]
    #[serde(deserialize_with = "whole")]
    pub requests_burst: u32,
    /// Seconds between two incremental sync cycles (Entra's provisioning cycle is 40 minutes).
    #[serde(default = "default_cycle_interval")]
    #[serde(deserialize_with = "whole")]
    pub cycle_interval_secs: u64,
    /// What to do with characters AWS refuses in user attributes: `reject` or `strip`.
    #[serde(default)]
    pub character_policy: CharacterPolicySetting,
    /// Which Entra attribute becomes the AWS `userName`: `userPrincipalName` (the event's
    /// `user.userName`, Entra's default) or `mail` (the event's `user.email`).
    #[serde(default)]
    pub user_name_attribute: UserNameAttribute,
    /// The longest a grant lasts: an activation without an end ends after it, and a later end is
    /// shortened to it (noted on the grant). PIM allows at most 24 hours.
    #[serde(default = "default_max_grant_duration")]
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub max_grant_duration: std::time::Duration,
}

fn default_max_grant_duration() -> std::time::Duration {
    std::time::Duration::from_secs(24 * 3600)
}

/// The Entra attribute mapped to the AWS `userName`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum UserNameAttribute {
    #[default]
    #[serde(rename = "userPrincipalName")]
    UserPrincipalName,
    #[serde(rename = "mail")]
    Mail,
}

fn default_activation_limit() -> u32 {
    5
}

fn default_activation_window() -> f64 {
    10.0
}

fn default_cycle_interval() -> u64 {
    2400
}

fn default_requests_per_second() -> u32 {
    5
}

fn default_requests_burst() -> u32 {
    10
}

/// Handling of characters that AWS refuses.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CharacterPolicySetting {
    #[default]
    Reject,
    Strip,
}

impl From<CharacterPolicySetting> for crate::scim::mapping::CharacterPolicy {
    fn from(setting: CharacterPolicySetting) -> Self {
        match setting {
            CharacterPolicySetting::Reject => Self::Reject,
            CharacterPolicySetting::Strip => Self::Strip,
        }
    }
}

impl ApplicationSettings {
    /// The SCIM client settings of this application.
    pub fn scim_client_settings(&self) -> crate::scim::ScimClientSettings {
        let mut settings = crate::scim::ScimClientSettings::new(
            self.scim_url.clone(),
            self.scim_token.clone().unwrap_or_default(),
        );
        settings.requests_per_second = self.requests_per_second;
        settings.burst = self.requests_burst;
        settings.character_policy = self.character_policy.into();
        settings
    }

    /// The admission window as a duration.
    pub fn activation_window(&self) -> Duration {
        Duration::from_secs_f64(self.activation_window_secs)
    }
}

impl Settings {
    /// Reads `path` (when given) and the `PIMBRIDGE_*` environment, resolves secret files and
    /// validates the result.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        // Every key lives in a section (`PIMBRIDGE_<SECTION>__<KEY>`), so variables without `__`
        // (such as `PIMBRIDGE_CONFIG`, which names the file) are not keys. A misspelt section or
        // key still fails, as in the file.
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        Self::from_figment(figment)
    }

    /// Parses a TOML document (no environment); for tests and `check-config` on strings.
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(toml)))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let mut settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Load(describe_figment_error(e)))?;
        settings.resolve_and_validate()?;
        Ok(settings)
    }

    /// Reads `…_file` secrets and checks every rule that spans keys.
    fn resolve_and_validate(&mut self) -> Result<(), ConfigError> {
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "server.listen",
                format!(
                    "`{}` is not an address such as 0.0.0.0:8080",
                    self.server.listen
                ),
            ));
        }

        self.database.url = resolve_secret(
            "database.url",
            self.database.url.take(),
            self.database.url_file.as_deref(),
        )?;
        match &self.database.url {
            None => return Err(ConfigError::invalid("database.url", "is required")),
            Some(url) if url.expose().parse::<tokio_postgres::Config>().is_err() => {
                return Err(ConfigError::invalid(
                    "database.url",
                    "is not a valid Postgres connection string",
                ))
            }
            Some(_) => {}
        }
        if let Some(path) = &self.database.ca_file {
            if !path.is_file() {
                return Err(ConfigError::invalid(
                    "database.ca_file",
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(3600))
            .contains(&self.server.metrics_refresh_interval)
        {
            return Err(ConfigError::invalid(
                "server.metrics_refresh_interval",
                "must be between 10ms and 1h",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be at least 1",
            ));
        }

        self.validate_intake()?;
        self.validate_dispatch()?;
        self.validate_sync()?;
        self.validate_admin()?;
        self.validate_graph()?;
        self.validate_applications()?;
        Ok(())
    }

    fn validate_intake(&mut self) -> Result<(), ConfigError> {
        let intake = &mut self.intake;
        if intake.max_body_bytes < 1024 {
            return Err(ConfigError::invalid(
                "intake.max_body_bytes",
                "must be at least 1024",
            ));
        }
        intake.hmac_secret = resolve_secret(
            "intake.hmac_secret",
            intake.hmac_secret.take(),
            intake.hmac_secret_file.as_deref(),
        )?;
        if intake.requests_per_second > 0 && intake.requests_burst == 0 {
            return Err(ConfigError::invalid(
                "intake.requests_burst",
                "must be at least 1 while intake.requests_per_second is set",
            ));
        }
        if intake.client_ip_header.is_some() {
            return Err(ConfigError::invalid(
                "intake.client_ip_header",
                "was replaced by intake.trusted_proxies: list the addresses (CIDRs) of your reverse proxies and pimbridge reads X-Forwarded-For and Forwarded from them only",
            ));
        }
        for proxy in &intake.trusted_proxies {
            crate::auth::proxy::Cidr::parse(proxy).map_err(|reason| {
                ConfigError::invalid("intake.trusted_proxies", format!("`{proxy}`: {reason}"))
            })?;
        }
        crate::auth::proxy::ForwardingHeader::parse(&intake.proxy_header)
            .map_err(|reason| ConfigError::invalid("intake.proxy_header", reason))?;
        if intake.max_clock_skew > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::invalid(
                "intake.max_clock_skew",
                "must be at most 1d",
            ));
        }
        if let Some(secret) = &intake.hmac_secret {
            if secret.expose().len() < 16 {
                return Err(ConfigError::invalid(
                    "intake.hmac_secret",
                    "must be at least 16 characters",
                ));
            }
        }
        if let Some(jwt) = &intake.jwt {
            if jwt.issuers.is_empty() {
                return Err(ConfigError::invalid(
                    "intake.jwt.issuers",
                    "must name at least one issuer",
                ));
            }
            if jwt.audiences.is_empty() {
                return Err(ConfigError::invalid(
                    "intake.jwt.audiences",
                    "must name at least one audience",
                ));
            }
            if jwt.algorithms.is_empty() {
                return Err(ConfigError::invalid(
                    "intake.jwt.algorithms",
                    "must name at least one algorithm",
                ));
            }
            for alg in &jwt.algorithms {
                crate::auth::jwt::parse_algorithm(alg)
                    .map_err(|reason| ConfigError::invalid("intake.jwt.algorithms", reason))?;
            }
            match (&jwt.jwks_url, &jwt.jwks_file) {
                (None, None) => {
                    return Err(ConfigError::invalid(
                        "intake.jwt.jwks_url",
                        "set jwks_url or jwks_file",
                    ))
                }
                (Some(_), Some(_)) => {
                    return Err(ConfigError::invalid(
                        "intake.jwt.jwks_url",
                        "set only one of jwks_url and jwks_file",
                    ))
                }
                (Some(url), None) => {
                    let parsed = url::Url::parse(url).map_err(|e| {
                        ConfigError::invalid("intake.jwt.jwks_url", format!("not a URL: {e}"))
                    })?;
                    if !matches!(parsed.scheme(), "http" | "https") {
                        return Err(ConfigError::invalid(
                            "intake.jwt.jwks_url",
                            "must be an http(s) URL",
                        ));
                    }
                }
                (None, Some(path)) => {
                    if !path.is_file() {
                        return Err(ConfigError::invalid(
                            "intake.jwt.jwks_file",
                            format!("{} is not a readable file", path.display()),
                        ));
                    }
                }
            }
        }
        if intake.hmac_secret.is_none() && intake.jwt.is_none() {
            return Err(ConfigError::invalid(
                "intake.hmac_secret",
                "events must be authenticated: set intake.hmac_secret (or hmac_secret_file) or configure [intake.jwt]",
            ));
        }
        Ok(())
    }

    fn validate_dispatch(&self) -> Result<(), ConfigError> {
        let d = &self.dispatch;
        if d.concurrency == 0 {
            return Err(ConfigError::invalid(
                "dispatch.concurrency",
                "must be at least 1",
            ));
        }
        if d.poll_interval_secs == 0 {
            return Err(ConfigError::invalid(
                "dispatch.poll_interval_secs",
                "must be at least 1",
            ));
        }
        if d.lease_secs < 1 {
            return Err(ConfigError::invalid(
                "dispatch.lease_secs",
                "must be at least 1",
            ));
        }
        if d.max_attempts < 1 {
            return Err(ConfigError::invalid(
                "dispatch.max_attempts",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn validate_sync(&self) -> Result<(), ConfigError> {
        if !(10..=3_600_000).contains(&self.sync.check_interval_ms) {
            return Err(ConfigError::invalid(
                "sync.check_interval_ms",
                "must be between 10 and 3600000",
            ));
        }
        if self.sync.max_attempts < 1 {
            return Err(ConfigError::invalid(
                "sync.max_attempts",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn validate_admin(&mut self) -> Result<(), ConfigError> {
        let admin = &mut self.admin;
        admin.token = resolve_secret(
            "admin.token",
            admin.token.take(),
            admin.token_file.as_deref(),
        )?;
        if admin.requests_per_second > 0 && admin.requests_burst == 0 {
            return Err(ConfigError::invalid(
                "admin.requests_burst",
                "must be at least 1 while admin.requests_per_second is set",
            ));
        }
        if admin.token.as_ref().is_some_and(|t| t.expose().len() < 16) {
            return Err(ConfigError::invalid(
                "admin.token",
                "must be at least 16 characters",
            ));
        }
        if let (Some(admin), Some(hmac)) = (&admin.token, &self.intake.hmac_secret) {
            if admin.expose() == hmac.expose() {
                return Err(ConfigError::invalid(
                    "admin.token",
                    "must differ from intake.hmac_secret (the admin API needs its own credential)",
                ));
            }
        }
        Ok(())
    }

    fn validate_graph(&mut self) -> Result<(), ConfigError> {
        let Some(graph) = &mut self.graph else {
            return Ok(());
        };
        for (key, value) in [
            ("graph.tenant_id", &graph.tenant_id),
            ("graph.client_id", &graph.client_id),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::invalid(key, "is empty"));
            }
        }
        graph.client_secret = resolve_secret(
            "graph.client_secret",
            graph.client_secret.take(),
            graph.client_secret_file.as_deref(),
        )?;
        if graph.client_secret.is_none() {
            return Err(ConfigError::invalid(
                "graph.client_secret",
                "is required (or client_secret_file)",
            ));
        }
        graph.client_state = resolve_secret(
            "graph.client_state",
            graph.client_state.take(),
            graph.client_state_file.as_deref(),
        )?;
        match &graph.client_state {
            None => {
                return Err(ConfigError::invalid(
                    "graph.client_state",
                    "is required (or client_state_file): notifications are authenticated by it",
                ))
            }
            Some(state) if !(16..=128).contains(&state.expose().len()) => {
                return Err(ConfigError::invalid(
                    "graph.client_state",
                    "must be 16 to 128 characters (Graph's limit is 128)",
                ))
            }
            Some(_) => {}
        }
        for (key, value) in [
            ("graph.authority_url", &graph.authority_url),
            ("graph.graph_url", &graph.graph_url),
        ] {
            let url = url::Url::parse(value)
                .map_err(|e| ConfigError::invalid(key, format!("not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::invalid(key, "must be an http(s) URL"));
            }
        }
        if let Some(url) = &graph.notification_url {
            let parsed = url::Url::parse(url).map_err(|e| {
                ConfigError::invalid("graph.notification_url", format!("not a URL: {e}"))
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError::invalid(
                    "graph.notification_url",
                    "must be an http(s) URL (Graph requires https)",
                ));
            }
        }
        if !(45..=41_760).contains(&graph.subscription_minutes) {
            return Err(ConfigError::invalid(
                "graph.subscription_minutes",
                "must be between 45 and 41760 (Graph's maximum for groups)",
            ));
        }
        if graph.renew_before_minutes >= graph.subscription_minutes {
            return Err(ConfigError::invalid(
                "graph.renew_before_minutes",
                "must be less than graph.subscription_minutes",
            ));
        }
        if !(10..=3_600_000).contains(&graph.subscription_check_interval_ms) {
            return Err(ConfigError::invalid(
                "graph.subscription_check_interval_ms",
                "must be between 10 and 3600000",
            ));
        }
        if !(10..=60_000).contains(&graph.resolve_interval_ms) {
            return Err(ConfigError::invalid(
                "graph.resolve_interval_ms",
                "must be between 10 and 60000",
            ));
        }
        Ok(())
    }

    fn validate_applications(&mut self) -> Result<(), ConfigError> {
        let mut owners: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, app) in &mut self.applications {
            let key = |field: &str| format!("applications.{name}.{field}");
            if !is_valid_application_name(name) {
                return Err(ConfigError::invalid(
                    format!("applications.{name}"),
                    "application names use lowercase letters, digits and `_`, starting with a letter (so that PIMBRIDGE_APPLICATIONS__<NAME>__… can override them)",
                ));
            }
            let url = url::Url::parse(&app.scim_url)
                .map_err(|e| ConfigError::invalid(key("scim_url"), format!("not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::invalid(
                    key("scim_url"),
                    "must be an http(s) URL",
                ));
            }
            app.scim_token = resolve_secret(
                &key("scim_token"),
                app.scim_token.take(),
                app.scim_token_file.as_deref(),
            )?;
            if app.scim_token.is_none() {
                return Err(ConfigError::invalid(
                    key("scim_token"),
                    "is required (or scim_token_file)",
                ));
            }
            if app.groups.is_empty() {
                return Err(ConfigError::invalid(
                    key("groups"),
                    "must list at least one Entra group object id",
                ));
            }
            for group in &app.groups {
                if group.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        key("groups"),
                        "contains an empty group id",
                    ));
                }
                owners
                    .entry(group.clone())
                    .or_default()
                    .insert(name.clone());
            }
            if app.activation_limit == 0 {
                return Err(ConfigError::invalid(
                    key("activation_limit"),
                    "must be at least 1",
                ));
            }
            if !(app.activation_window_secs.is_finite()
                && app.activation_window_secs > 0.0
                && app.activation_window_secs <= 3600.0)
            {
                return Err(ConfigError::invalid(
                    key("activation_window_secs"),
                    "must be more than 0 and at most 3600",
                ));
            }
            if app.cycle_interval_secs == 0 {
                return Err(ConfigError::invalid(
                    key("cycle_interval_secs"),
                    "must be at least 1",
                ));
            }
            if app.requests_per_second == 0 {
                return Err(ConfigError::invalid(
                    key("requests_per_second"),
                    "must be at least 1",
                ));
            }
            if app.requests_burst == 0 {
                return Err(ConfigError::invalid(
                    key("requests_burst"),
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }

    /// The applications each Entra group is assigned to (an event becomes one job per entry).
    pub fn group_routes(&self) -> BTreeMap<String, Vec<String>> {
        let mut routes: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, app) in &self.applications {
            for group in &app.groups {
                let apps = routes.entry(group.clone()).or_default();
                if !apps.contains(name) {
                    apps.push(name.clone());
                }
            }
        }
        routes
    }
}

/// Reads a whole number that may arrive written as a float: Helm turns YAML integers into floats,
/// so its `toToml` writes `activation_limit = 5.0`.
fn whole<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::de::Error;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Whole(u64),
        Float(f64),
    }
    let n = match Number::deserialize(deserializer)
        .map_err(|_| D::Error::custom("expected a whole number"))?
    {
        Number::Whole(n) => n,
        Number::Float(f) if f.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&f) => f as u64,
        Number::Float(f) => {
            return Err(D::Error::custom(format!(
                "expected a whole number, found {f}"
            )))
        }
    };
    T::try_from(n).map_err(|_| D::Error::custom(format!("{n} is out of range")))
}

fn is_valid_application_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 64
}

/// One of `inline` or the contents of `file`; an error when both are set or the file is unreadable.
fn resolve_secret(
    key: &str,
    inline: Option<SecretString>,
    file: Option<&Path>,
) -> Result<Option<SecretString>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            key,
            format!("set only one of `{key}` and `{key}_file`"),
        )),
        (Some(value), None) if value.is_empty() => Err(ConfigError::invalid(key, "is empty")),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => {
            let raw = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::invalid(
                    format!("{key}_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let value = raw.trim_end_matches(['\n', '\r']);
            if value.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{key}_file"),
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(Some(SecretString::new(value)))
        }
        (None, None) => Ok(None),
    }
}

/// Figment's errors name the key path and the source (file or environment variable); keep that.
fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let mut text = if path.is_empty() {
                e.kind.to_string()
            } else {
                format!("key `{path}`: {}", e.kind)
            };
            if let Some(source) = e.metadata.as_ref().map(|m| m.name.to_string()) {
                text.push_str(&format!(" (from {source})"));
            }
            text
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [database]
        url = "postgres://postgres@127.0.0.1:5432/pimbridge"
        [intake]
        hmac_secret = "0123456789abcdef0123"
        [applications.prod]
        scim_url = "http://127.0.0.1:9080/t/scim/v2"
        scim_token = "tok"
        groups = ["g1", "g2"]
        [applications.dev]
        scim_url = "http://127.0.0.1:9080/t/scim/v2"
        scim_token = "tok"
        groups = ["g2"]
    "#;

    #[test]
    fn a_minimal_file_loads_with_defaults() {
        let s = Settings::from_toml_str(MINIMAL).unwrap();
        assert_eq!(s.server.listen, "0.0.0.0:8080");
        assert_eq!(s.intake.max_body_bytes, 1024 * 1024);
        assert_eq!(s.applications["prod"].activation_limit, 5);
        assert_eq!(
            s.applications["prod"].activation_window(),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn whole_numbers_written_as_floats_are_accepted_and_fractions_refused() {
        let helm_style = MINIMAL.replace(
            "groups = [\"g2\"]",
            "groups = [\"g2\"]\nactivation_limit = 7.0\nrequests_per_second = 3.0",
        );
        let s = Settings::from_toml_str(&helm_style).unwrap();
        assert_eq!(s.applications["dev"].activation_limit, 7);
        assert_eq!(s.applications["dev"].requests_per_second, 3);
        let fraction = MINIMAL.replace(
            "groups = [\"g2\"]",
            "groups = [\"g2\"]\nactivation_limit = 7.5",
        );
        let error = Settings::from_toml_str(&fraction).unwrap_err().to_string();
        assert!(
            error.contains("applications.dev.activation_limit"),
            "{error}"
        );
        assert!(error.contains("whole number"), "{error}");
    }

    #[test]
    fn a_group_assigned_to_two_applications_routes_to_both() {
        let s = Settings::from_toml_str(MINIMAL).unwrap();
        let routes = s.group_routes();
        assert_eq!(routes["g2"], vec!["dev".to_string(), "prod".to_string()]);
        assert_eq!(routes["g1"], vec!["prod".to_string()]);
    }

    fn error_for(toml: &str) -> String {
        Settings::from_toml_str(toml).unwrap_err().to_string()
    }

    #[test]
    fn each_bad_value_is_reported_with_its_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("missing database url", "[database]\n[intake]\nhmac_secret=\"0123456789abcdef\"", "database.url"),
            ("bad listen address", "[server]\nlisten=\"nope\"\n[database]\nurl=\"postgres://a@b/c\"", "server.listen"),
            ("no authentication", "[database]\nurl=\"postgres://a@b/c\"", "intake.hmac_secret"),
            ("short hmac secret", "[database]\nurl=\"postgres://a@b/c\"\n[intake]\nhmac_secret=\"short\"", "intake.hmac_secret"),
            ("unknown key", "[database]\nurl=\"postgres://a@b/c\"\nport=5", "port"),
            ("jwt without keys", "[database]\nurl=\"postgres://a@b/c\"\n[intake.jwt]\nissuers=[\"i\"]\naudiences=[\"a\"]", "intake.jwt.jwks_url"),
            ("jwt symmetric alg", "[database]\nurl=\"postgres://a@b/c\"\n[intake.jwt]\nissuers=[\"i\"]\naudiences=[\"a\"]\nalgorithms=[\"HS256\"]\njwks_url=\"https://x/jwks\"", "intake.jwt.algorithms"),
            ("app without token", "[database]\nurl=\"postgres://a@b/c\"\n[intake]\nhmac_secret=\"0123456789abcdef\"\n[applications.a]\nscim_url=\"https://x/scim/v2\"\ngroups=[\"g\"]", "applications.a.scim_token"),
            ("app bad url", "[database]\nurl=\"postgres://a@b/c\"\n[intake]\nhmac_secret=\"0123456789abcdef\"\n[applications.a]\nscim_url=\"ftp://x\"\nscim_token=\"t\"\ngroups=[\"g\"]", "applications.a.scim_url"),
            ("app no groups", "[database]\nurl=\"postgres://a@b/c\"\n[intake]\nhmac_secret=\"0123456789abcdef\"\n[applications.a]\nscim_url=\"https://x/s\"\nscim_token=\"t\"\ngroups=[]", "applications.a.groups"),
            ("app zero limit", "[database]\nurl=\"postgres://a@b/c\"\n[intake]\nhmac_secret=\"0123456789abcdef\"\n[applications.a]\nscim_url=\"https://x/s\"\nscim_token=\"t\"\ngroups=[\"g\"]\nactivation_limit=0", "applications.a.activation_limit"),
            ("app bad name", "[database]\nurl=\"postgres://a@b/c\"\n[intake]\nhmac_secret=\"0123456789abcdef\"\n[applications.Prod-1]\nscim_url=\"https://x/s\"\nscim_token=\"t\"\ngroups=[\"g\"]", "applications.Prod-1"),
            ("both secret and file", "[database]\nurl=\"postgres://a@b/c\"\n[intake]\nhmac_secret=\"0123456789abcdef\"\nhmac_secret_file=\"/etc/x\"", "intake.hmac_secret"),
            ("unreadable secret file", "[database]\nurl=\"postgres://a@b/c\"\n[intake]\nhmac_secret_file=\"/nonexistent/secret\"", "intake.hmac_secret_file"),
            ("missing CA bundle", "[database]\nurl=\"postgres://a@b/c\"\nca_file=\"/nonexistent/ca.pem\"\n[intake]\nhmac_secret=\"0123456789abcdef\"", "database.ca_file"),
        ];
        for (case, toml, key) in cases {
            let message = error_for(toml);
            assert!(
                message.contains(key),
                "{case}: expected the message to name `{key}`, got: {message}"
            );
        }
    }

    #[test]
    fn secrets_are_read_from_files_without_the_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("pimbridge-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hmac");
        std::fs::write(&file, "from-a-file-0123456789\n").unwrap();
        let toml = format!(
            "[database]\nurl=\"postgres://a@b/c\"\n[intake]\nhmac_secret_file=\"{}\"",
            file.display()
        );
        let s = Settings::from_toml_str(&toml).unwrap();
        assert_eq!(
            s.intake.hmac_secret.unwrap().expose(),
            "from-a-file-0123456789"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let s = Settings::from_toml_str(MINIMAL).unwrap();
        let dump = format!("{s:?}");
        assert!(!dump.contains("0123456789abcdef0123"));
        assert!(!dump.contains("postgres://postgres@"));
    }
}
