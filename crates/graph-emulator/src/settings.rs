//! Who the emulator believes in and how it behaves; all of it changeable at run time.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::secret::SecretString;

/// Tenant id accepted when none is configured.
pub const DEFAULT_TENANT_ID: &str = "8f2d4c1e-5b6a-4e3f-9c7d-1a2b3c4d5e6f";
/// Client id (app id) accepted when none is configured; also the subscriptions' `applicationId`.
pub const DEFAULT_CLIENT_ID: &str = "3c9e7a51-2f4b-4d8e-a6c1-9b0d2e4f6a8c";
/// Client secret accepted when none is configured.
pub const DEFAULT_CLIENT_SECRET: &str = "graph-emulator-secret";
/// Lifetime of an issued token, as the identity platform's usual `expires_in`.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3599);
/// Items per page of a listing before `@odata.nextLink` is used.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// How long a receiver has to answer the validation handshake.
pub const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a receiver has to answer a notification before Graph counts it slow.
pub const NOTIFICATION_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest subscription life for groups and users: 41,760 minutes.
pub const MAX_SUBSCRIPTION_LIFETIME: Duration = Duration::from_secs(41_760 * 60);

/// Emulator configuration. Start from `GraphEmulatorSettings::default()` and change fields.
#[derive(Debug, Clone)]
pub struct GraphEmulatorSettings {
    /// The only tenant the token endpoint knows.
    pub tenant_id: String,
    /// The only app registration the token endpoint knows.
    pub client_id: String,
    /// Its secret.
    pub client_secret: SecretString,
    /// A PEM certificate registered on the app: client assertions signed with its key (RS256 or
    /// PS256, `x5t#S256` naming it) are accepted.
    pub client_certificate: Option<String>,
    /// A federated credential: this exact token, sent as the client assertion, is accepted (as a
    /// federated identity credential trusting its issuer and subject would).
    pub federated_token: Option<SecretString>,
    /// `expires_in` of issued tokens; Graph answers 401 once it has passed.
    pub token_lifetime: Duration,
    /// Items per page of the assignment-instance listing (at least 1).
    pub page_size: usize,
    /// Activations and deactivations send change notifications for their group at once.
    pub notify_on_change: bool,
    /// Time allowed for a validation handshake answer.
    pub validation_timeout: Duration,
    /// Time allowed for a notification answer.
    pub notification_timeout: Duration,
    /// Request-log entries kept (oldest dropped first).
    pub request_log_capacity: usize,
}

impl Default for GraphEmulatorSettings {
    fn default() -> Self {
        Self {
            tenant_id: DEFAULT_TENANT_ID.to_owned(),
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            client_secret: SecretString::new(DEFAULT_CLIENT_SECRET),
            client_certificate: None,
            federated_token: None,
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            page_size: DEFAULT_PAGE_SIZE,
            notify_on_change: false,
            validation_timeout: VALIDATION_TIMEOUT,
            notification_timeout: NOTIFICATION_TIMEOUT,
            request_log_capacity: 10_000,
        }
    }
}

/// The settings the control API may change (`PATCH /_graph/settings`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsChange {
    pub token_lifetime_seconds: Option<u64>,
    pub page_size: Option<usize>,
    pub notify_on_change: Option<bool>,
}

impl GraphEmulatorSettings {
    /// Applies a change from the control API.
    pub fn apply(&mut self, change: &SettingsChange) -> Result<(), String> {
        if change.page_size == Some(0) || change.token_lifetime_seconds == Some(0) {
            return Err("pageSize and tokenLifetimeSeconds must be at least 1".to_owned());
        }
        if let Some(seconds) = change.token_lifetime_seconds {
            self.token_lifetime = Duration::from_secs(seconds);
        }
        if let Some(size) = change.page_size {
            self.page_size = size;
        }
        if let Some(notify) = change.notify_on_change {
            self.notify_on_change = notify;
        }
        Ok(())
    }

    /// The settings as JSON for the control API, without the secret.
    pub fn public_view(&self) -> Value {
        json!({
            "tenantId": self.tenant_id,
            "clientId": self.client_id,
            "tokenLifetimeSeconds": self.token_lifetime.as_secs(),
            "pageSize": self.page_size,
            "notifyOnChange": self.notify_on_change,
            "validationTimeoutMs": self.validation_timeout.as_millis(),
            "notificationTimeoutMs": self.notification_timeout.as_millis(),
            "requestLogCapacity": self.request_log_capacity,
        })
    }
}
