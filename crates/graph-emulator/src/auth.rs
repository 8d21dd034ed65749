//! The identity platform half: `POST /{tenant}/oauth2/v2.0/token` (client credentials
//! only) and the bearer check in front of `/v1.0`.
//!
//! Tokens are opaque random strings remembered with their expiry; Graph answers 401 to an
//! unknown, revoked or expired one. The refusals mirror the identity platform's: HTTP 400
//! with an OAuth2 `error`, an `AADSTS` code and text, never echoing the secret.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::dev::ConnectionInfo;
use actix_web::{web, HttpRequest, HttpResponse};

use super::errors::{aad_error, GraphApiError};
use super::Shared;
use crate::secret::SecretString;
use crate::wire::{TokenResponse, GRANT_CLIENT_CREDENTIALS};

/// The public-cloud Graph scope, also accepted next to the emulator's own origin.
const PUBLIC_GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// Issued tokens and when each expires.
#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    issued: HashMap<String, Instant>,
}

impl TokenStore {
    /// A new token valid for `lifetime`.
    pub fn issue(&mut self, lifetime: Duration) -> String {
        let now = Instant::now();
        self.issued.retain(|_, expires| *expires > now);
        let token = format!(
            "emu.{}.{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        self.issued.insert(token.clone(), now + lifetime);
        token
    }

    /// Why `token` is refused, if it is.
    pub fn refusal(&self, token: &str) -> Option<&'static str> {
        match self.issued.get(token) {
            None => Some("Access token validation failure. Invalid audience."),
            Some(expires) if *expires <= Instant::now() => {
                Some("Lifetime validation failed, the token is expired.")
            }
            Some(_) => None,
        }
    }

    pub fn revoke_all(&mut self) {
        self.issued.clear();
    }
}

/// The bearer token of a request, if it has one.
pub(crate) fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(actix_web::http::header::AUTHORIZATION)?;
    let (scheme, token) = value.to_str().ok()?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Graph's answer to a request without a usable token.
pub(crate) fn check_bearer(shared: &Shared, req: &HttpRequest) -> Result<(), GraphApiError> {
    let Some(token) = bearer(req) else {
        return Err(GraphApiError::invalid_token("Access token is empty."));
    };
    match shared.tokens().refusal(token) {
        Some(reason) => Err(GraphApiError::invalid_token(reason)),
        None => Ok(()),
    }
}

/// Scopes that name Graph: the public cloud's, or this emulator's own origin.
fn graph_scope(scope: &str, connection: &ConnectionInfo) -> bool {
    let own = format!("{}://{}/.default", connection.scheme(), connection.host());
    scope
        .split_whitespace()
        .any(|s| s.eq_ignore_ascii_case(PUBLIC_GRAPH_SCOPE) || s.eq_ignore_ascii_case(&own))
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) async fn token(
    shared: web::Data<Shared>,
    tenant: web::Path<String>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let settings = shared.settings();
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if !tenant.eq_ignore_ascii_case(&settings.tenant_id) {
        return aad_error(
            "invalid_request",
            90_002,
            &format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        );
    }
    if field("grant_type") != GRANT_CLIENT_CREDENTIALS {
        return aad_error(
            "unsupported_grant_type",
            70_003,
            "The app requested an unsupported grant type. This emulator issues tokens for the 'client_credentials' grant only.",
        );
    }
    let client_id = field("client_id");
    if client_id.is_empty() || !client_id.eq_ignore_ascii_case(&settings.client_id) {
        return aad_error(
            "invalid_client",
            700_016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'.",
                settings.tenant_id
            ),
        );
    }
    let secret = field("client_secret");
    if secret.is_empty() {
        return aad_error(
            "invalid_client",
            7_000_216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
        );
    }
    if !settings.client_secret.ct_eq(secret.as_bytes()) {
        return aad_error(
            "invalid_client",
            7_000_215,
            &format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.", settings.client_id),
        );
    }
    if !graph_scope(field("scope"), &req.connection_info()) {
        return aad_error(
            "invalid_scope",
            1_002_012,
            "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
        );
    }
    let lifetime = settings.token_lifetime;
    let token = shared.tokens().issue(lifetime);
    let seconds = lifetime.as_secs().max(1);
    HttpResponse::Ok().json(TokenResponse {
        token_type: "Bearer".to_owned(),
        expires_in: seconds,
        ext_expires_in: Some(seconds),
        access_token: SecretString::new(token),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_refused_when_unknown_expired_or_revoked() {
        let mut store = TokenStore::default();
        let long = store.issue(Duration::from_secs(60));
        let short = store.issue(Duration::ZERO);
        assert_eq!(store.refusal(&long), None);
        assert!(store.refusal(&short).is_some_and(|r| r.contains("expired")));
        assert!(store.refusal("made-up").is_some());
        store.revoke_all();
        assert!(store.refusal(&long).is_some());
    }
}
