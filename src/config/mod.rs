//! Configuration: one TOML file, overridden key by key by `PIMBRIDGE_<SECTION>__<KEY>` environment
//! variables, validated once at start-up.
//!
//! This module holds the settings tree and loading; [`validate`] checks every rule at start-up and
//! [`secrets`] reads `…_file` secrets. Every duration key takes a human-readable string such as
//! `"10s"`, `"40m"` or `"500ms"` ([`crate::duration`]); the keys that used to count in a unit
//! (`…_secs`, `…_ms`, `…_minutes`) are refused with the new name. [`Settings::load`] reads the
//! layers, resolves the files and validates everything, and every error names the key at fault.

mod secrets;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

use crate::duration;
use crate::secret::SecretString;

pub use validate::parse_algorithm;

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
    /// A key that was renamed (the unit moved from the name into the value).
    #[error("configuration key `{old}` was renamed: use `{new} = \"{value}\"`")]
    Renamed {
        old: String,
        new: String,
        value: String,
    },
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
    #[serde(default)]
    pub replica: ReplicaSettings,
    #[serde(default)]
    pub retention: RetentionSettings,
    /// AWS IAM Identity Center targets, keyed by a short name used in metrics and logs.
    #[serde(default)]
    pub applications: BTreeMap<String, ApplicationSettings>,
}

/// The HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address and port of the public listener: the webhooks, `/v1/events` and `/health/*`.
    pub listen: String,
    /// Address and port of the internal listener, for the cluster only: `/metrics`, `/admin/…`,
    /// `/openapi.json` (and `/health/*`). Served by a server of its own, so that scrapes and
    /// operators never take intake's workers.
    pub internal_listen: String,
    /// Time in-flight requests get to finish after SIGTERM; keep below the pod's grace period.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// HTTP worker threads; 0 means one per core.
    #[serde(deserialize_with = "whole")]
    pub workers: usize,
    /// How long the public listener keeps an idle connection open. Longer than the idle timeout
    /// of the proxy in front (60 s for most ingress controllers and cloud load balancers), so
    /// that the proxy closes first: a proxy that sends a request on a connection this side has
    /// just closed answers the sender with an error (a 502), and the sender retries later.
    #[serde(with = "duration")]
    pub keep_alive: Duration,
    /// How often the gauges read from Postgres (queue depths, quarantines) are refreshed in the
    /// background; a `/metrics` scrape only reads the last values.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub metrics_refresh_interval: Duration,
    /// How often `…_file` secrets (SCIM tokens, the HMAC secret, the admin token, the Graph
    /// client secret) are read again; a changed file is used without a restart.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub secret_reload_interval: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            internal_listen: "0.0.0.0:9090".into(),
            shutdown_timeout: Duration::from_secs(20),
            workers: 0,
            keep_alive: Duration::from_secs(75),
            metrics_refresh_interval: Duration::from_secs(5),
            secret_reload_interval: Duration::from_secs(10),
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
    /// How long to wait for a connection before a request fails with 503.
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// PEM file of CA certificates trusted for the database's TLS certificate, besides the
    /// operating system's (e.g. the Amazon RDS bundle). TLS itself follows the URL's `sslmode`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_max_connections() -> usize {
    16
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

/// How far ahead of the server's clock an event's `occurredAt` may be, by default.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

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
    /// How far a signature's timestamp may be from now, against replays.
    #[serde(with = "duration")]
    pub signature_tolerance: Duration,
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
            signature_tolerance: Duration::from_secs(300),
            jwt: None,
            requests_per_second: 50,
            requests_burst: 100,
            client_ip_header: None,
            trusted_proxies: Vec::new(),
            proxy_header: "X-Forwarded-For".into(),
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
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
    /// Least time between two fetches of `jwks_url` triggered by unknown key ids.
    #[serde(default = "default_jwks_refetch", with = "duration")]
    pub jwks_min_refetch: Duration,
    /// Clock skew allowed on `exp` and `nbf` (whole seconds count).
    #[serde(default = "default_leeway", with = "duration")]
    pub leeway: Duration,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}

fn default_jwks_refetch() -> Duration {
    Duration::from_secs(30)
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
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
    /// Time between queue polls when no notification arrives (the LISTEN/NOTIFY fallback).
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// How long a claimed job stays leased before another replica may take it over.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// Attempts before a job that keeps failing transiently is marked failed.
    #[serde(deserialize_with = "whole")]
    pub max_attempts: i32,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            concurrency: 8,
            poll_interval: Duration::from_secs(2),
            // Renewed every third of it while the job is in hand; only a replica that is alive but
            // stuck waits it out (a dead one is seen through `replica`).
            lease: Duration::from_secs(15),
            max_attempts: 8,
        }
    }
}

/// Liveness of this replica, so that others take its leases over in seconds after a crash
/// (docs/architecture.md, "Crash recovery").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicaSettings {
    /// How often this replica records that it is alive.
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// A replica whose last heartbeat is older than this is dead, and its leases are taken over
    /// (a crash that closes its sessions is seen at once, without waiting for this).
    #[serde(with = "duration")]
    pub dead_after: Duration,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            dead_after: Duration::from_secs(5),
        }
    }
}

/// Deleting old history in small batches, one replica at a time (docs/operations.md, "Retention").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Run retention from this replica (one replica at a time runs a pass).
    pub enabled: bool,
    /// Days kept of every kind of history without a value of its own in `days_by_kind`.
    #[serde(deserialize_with = "whole")]
    pub days: u32,
    /// Days kept per kind, overriding `days`.
    pub days_by_kind: RetentionDays,
    /// Rows deleted per statement (and per transaction): small, so that locks stay short.
    #[serde(deserialize_with = "whole")]
    pub batch_size: usize,
    /// Share of a pass's time spent deleting (0 < share ≤ 1): after a batch that took `t`, the
    /// pass rests `t × (1 / share − 1)`, so that the disk's writes and flushes stay mostly
    /// intake's. 1 deletes without rest.
    pub duty_cycle: f64,
    /// Time between passes.
    #[serde(with = "duration")]
    pub interval: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            days: 90,
            days_by_kind: RetentionDays::default(),
            batch_size: 1000,
            duty_cycle: 0.25,
            interval: Duration::from_secs(3600),
        }
    }
}

impl RetentionSettings {
    /// Days kept of `kind` (a name of [`RetentionDays`]' fields).
    pub fn days_of(&self, kind: &str) -> u32 {
        let d = &self.days_by_kind;
        let own = match kind {
            "events" => d.events,
            "jobs" => d.jobs,
            "grants" => d.grants,
            "provisioning_log" => d.provisioning_log,
            "cycles" => d.cycles,
            "graph_hints" => d.graph_hints,
            _ => None,
        };
        own.unwrap_or(self.days)
    }
}

/// Per-kind retention in days; unset kinds keep `retention.days`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionDays {
    #[serde(deserialize_with = "whole_opt")]
    pub events: Option<u32>,
    #[serde(deserialize_with = "whole_opt")]
    pub jobs: Option<u32>,
    #[serde(deserialize_with = "whole_opt")]
    pub grants: Option<u32>,
    #[serde(deserialize_with = "whole_opt")]
    pub provisioning_log: Option<u32>,
    #[serde(deserialize_with = "whole_opt")]
    pub cycles: Option<u32>,
    #[serde(deserialize_with = "whole_opt")]
    pub graph_hints: Option<u32>,
}

/// Sync cycles: the deferred lane, deactivations and expired activations (docs/correctness.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncSettings {
    /// Run cycles from this process when it holds an application's cycle lock.
    pub enabled: bool,
    /// Time between this replica's checks for applications whose cycle is due.
    #[serde(with = "duration")]
    pub check_interval: Duration,
    /// Cycles in which a change may fail transiently before its jobs are marked failed.
    #[serde(deserialize_with = "whole")]
    pub max_attempts: i32,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            check_interval: Duration::from_secs(5),
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
    /// One credential of three (validated: exactly one). A client secret, inline or as a file
    /// (read again when the file changes)…
    pub client_secret: Option<SecretString>,
    pub client_secret_file: Option<PathBuf>,
    /// …or a certificate registered on the app: its PEM certificate and PEM RSA private key
    /// (pimbridge signs a client assertion with them; both read again for each token)…
    pub client_certificate_file: Option<PathBuf>,
    pub client_certificate_key_file: Option<PathBuf>,
    /// …or workload identity federation: a file holding a token of a trusted issuer (AKS
    /// workload identity's `AZURE_FEDERATED_TOKEN_FILE`), read again for each token.
    pub federated_token_file: Option<PathBuf>,
    /// The secret every change notification must echo (set when creating the subscriptions).
    pub client_state: Option<SecretString>,
    pub client_state_file: Option<PathBuf>,
    /// Where tokens come from.
    #[serde(default = "default_authority_url")]
    pub authority_url: String,
    /// The Graph API base.
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    /// Time between the resolver's looks for notifications to resolve.
    #[serde(default = "default_resolve_interval", with = "duration")]
    pub resolve_interval: Duration,
    /// The public URL of `/webhooks/graph`. When set, pimbridge creates and renews one
    /// subscription per assigned group; unset, operators create them.
    pub notification_url: Option<String>,
    /// Lifetime asked for each subscription (Graph allows at most 41,760 minutes for groups).
    #[serde(default = "default_subscription_lifetime", with = "duration")]
    pub subscription_lifetime: Duration,
    /// Renew a subscription when less than this is left.
    #[serde(default = "default_renew_before", with = "duration")]
    pub renew_before: Duration,
    /// Time between checks of the subscriptions.
    #[serde(default = "default_subscription_check", with = "duration")]
    pub subscription_check_interval: Duration,
}

impl GraphSettings {
    /// The credential sent as a client assertion, when it is not a client secret.
    pub fn client_assertion(&self) -> Option<crate::graph::ClientAssertion> {
        if let (Some(certificate_file), Some(key_file)) = (
            &self.client_certificate_file,
            &self.client_certificate_key_file,
        ) {
            return Some(crate::graph::ClientAssertion::Certificate {
                certificate_file: certificate_file.clone(),
                key_file: key_file.clone(),
            });
        }
        self.federated_token_file
            .clone()
            .map(crate::graph::ClientAssertion::FederatedTokenFile)
    }

    /// The Graph client's settings (after validation, exactly one credential is present).
    pub fn client_settings(&self) -> crate::graph::GraphClientSettings {
        let mut client = crate::graph::GraphClientSettings::new(
            self.tenant_id.clone(),
            self.client_id.clone(),
            self.client_secret.clone().unwrap_or_default(),
        );
        client.assertion = self.client_assertion();
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

fn default_resolve_interval() -> Duration {
    Duration::from_millis(250)
}

fn default_subscription_lifetime() -> Duration {
    Duration::from_secs(2 * 24 * 3600)
}

fn default_renew_before() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_subscription_check() -> Duration {
    Duration::from_secs(60)
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
    /// The admission window.
    #[serde(default = "default_activation_window", with = "duration")]
    pub activation_window: Duration,
    /// Outbound SCIM requests per second of cycles and the admin API, for all replicas together
    /// (each paces at its share; AWS publishes no limit; 5 is conservative).
    #[serde(default = "default_requests_per_second")]
    #[serde(deserialize_with = "whole")]
    pub requests_per_second: u32,
    /// Outbound SCIM requests allowed at once before pacing starts (a burst of activations with
    /// known ids is one request each, so this should be at least `activation_limit`).
    #[serde(default = "default_requests_burst")]
    #[serde(deserialize_with = "whole")]
    pub requests_burst: u32,
    /// The immediate lane's own outbound budget (requests per second), apart from the cycles'
    /// `requests_per_second`, so that a cycle never holds activations back. Default: the burst
    /// spread over `activation_window` (see [`ApplicationSettings::immediate_budget`]).
    #[serde(default, deserialize_with = "whole_opt")]
    pub immediate_requests_per_second: Option<u32>,
    /// Requests the immediate lane may send at once. Default: 5 per activation of
    /// `activation_limit`, so that a full window of users new to AWS goes out at once.
    #[serde(default, deserialize_with = "whole_opt")]
    pub immediate_requests_burst: Option<u32>,
    /// Time between two incremental sync cycles (Entra's provisioning cycle is 40 minutes).
    #[serde(default = "default_cycle_interval", with = "duration")]
    pub cycle_interval: Duration,
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
    /// Entra's accidental-deletions prevention: a cycle that would remove more memberships than
    /// this removes none of them, is marked `held`, and waits for an operator to confirm
    /// (`POST /admin/applications/{name}/removals/confirm`) or for the limit to be raised.
    #[serde(default = "default_max_removals_per_cycle")]
    #[serde(deserialize_with = "whole")]
    pub max_removals_per_cycle: u32,
}

fn default_max_removals_per_cycle() -> u32 {
    500
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

fn default_activation_window() -> Duration {
    Duration::from_secs(10)
}

fn default_cycle_interval() -> Duration {
    Duration::from_secs(40 * 60)
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
    /// The immediate lane's budget: (requests per second, burst). A user new to AWS costs up to
    /// five requests (the group look-up, cached after the first but made by every job of the
    /// first window, the user's creation, the standing-member check, the PATCH), so the burst
    /// covers `activation_limit` of them; the sustained rate refills it once per
    /// `activation_window`, which is all admission lets in.
    pub fn immediate_budget(&self) -> (u32, u32) {
        let burst = self
            .immediate_requests_burst
            .unwrap_or_else(|| self.activation_limit.saturating_mul(5).max(1));
        let rate = self.immediate_requests_per_second.unwrap_or_else(|| {
            let window = self.activation_window.as_secs_f64().max(1.0);
            ((f64::from(burst) / window).ceil() as u32).max(1)
        });
        (rate, burst)
    }

    /// Settings of the immediate lane's SCIM client: the same endpoint with its own budget.
    pub fn immediate_scim_client_settings(&self) -> crate::scim::ScimClientSettings {
        let mut settings = self.scim_client_settings();
        (settings.requests_per_second, settings.burst) = self.immediate_budget();
        settings
    }

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

    /// Resolves the secret files and validates settings built in code, as loading does.
    pub fn validated(mut self) -> Result<Self, ConfigError> {
        self.resolve_and_validate()?;
        Ok(self)
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        refuse_renamed_keys(&figment)?;
        let mut settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Load(describe_figment_error(e)))?;
        settings.resolve_and_validate()?;
        Ok(settings)
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

/// Duration keys that counted in a unit before every duration became a string: the old name
/// (below its section; `*` is any application), the new one, and the old unit.
const RENAMED_DURATION_KEYS: &[(&str, &str, &str, Duration)] = &[
    (
        "server",
        "shutdown_timeout_secs",
        "shutdown_timeout",
        SECOND,
    ),
    (
        "database",
        "connect_timeout_secs",
        "connect_timeout",
        SECOND,
    ),
    (
        "intake",
        "signature_tolerance_secs",
        "signature_tolerance",
        SECOND,
    ),
    (
        "intake.jwt",
        "jwks_min_refetch_secs",
        "jwks_min_refetch",
        SECOND,
    ),
    ("intake.jwt", "leeway_secs", "leeway", SECOND),
    ("dispatch", "poll_interval_secs", "poll_interval", SECOND),
    ("dispatch", "lease_secs", "lease", SECOND),
    ("sync", "check_interval_ms", "check_interval", MILLISECOND),
    (
        "graph",
        "resolve_interval_ms",
        "resolve_interval",
        MILLISECOND,
    ),
    (
        "graph",
        "subscription_minutes",
        "subscription_lifetime",
        MINUTE,
    ),
    ("graph", "renew_before_minutes", "renew_before", MINUTE),
    (
        "graph",
        "subscription_check_interval_ms",
        "subscription_check_interval",
        MILLISECOND,
    ),
    (
        "applications.*",
        "activation_window_secs",
        "activation_window",
        SECOND,
    ),
    (
        "applications.*",
        "cycle_interval_secs",
        "cycle_interval",
        SECOND,
    ),
];

const MILLISECOND: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

/// Refuses a renamed key, naming the new key with the old value rewritten in the new form.
fn refuse_renamed_keys(figment: &Figment) -> Result<(), ConfigError> {
    let applications: Vec<String> = match figment.find_value("applications") {
        Ok(figment::value::Value::Dict(_, apps)) => apps.keys().cloned().collect(),
        _ => Vec::new(),
    };
    for (section, old, new, unit) in RENAMED_DURATION_KEYS {
        let sections = match section.strip_suffix(".*") {
            Some(parent) => applications
                .iter()
                .map(|name| format!("{parent}.{name}"))
                .collect(),
            None => vec![(*section).to_owned()],
        };
        for section in sections {
            let Ok(value) = figment.find_value(&format!("{section}.{old}")) else {
                continue;
            };
            let rewritten = value
                .to_num_lossy()
                // Integers are not floats to figment; whole numbers were the usual form.
                .and_then(|n| {
                    n.to_f64()
                        .or_else(|| n.to_i128().map(|v| v as f64))
                        .or_else(|| n.to_u128().map(|v| v as f64))
                })
                .filter(|n| n.is_finite() && *n >= 0.0)
                .map(|n| duration::format(unit.mul_f64(n)));
            return Err(ConfigError::Renamed {
                old: format!("{section}.{old}"),
                new: format!("{section}.{new}"),
                value: rewritten.unwrap_or_else(|| duration::format(*unit * 10)),
            });
        }
    }
    Ok(())
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

/// [`whole`] for an optional key.
fn whole_opt<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    whole(deserializer).map(Some)
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
        // Above the 60 s idle timeout of most proxies in front.
        assert_eq!(s.server.keep_alive, Duration::from_secs(75));
        assert_eq!(s.intake.max_body_bytes, 1024 * 1024);
        assert_eq!(s.applications["prod"].activation_limit, 5);
        assert_eq!(
            s.applications["prod"].activation_window,
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
            ("keep-alive of no time", "[server]\nkeep_alive=\"0s\"\n[database]\nurl=\"postgres://a@b/c\"\n[intake]\nhmac_secret=\"0123456789abcdef\"", "server.keep_alive"),
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
