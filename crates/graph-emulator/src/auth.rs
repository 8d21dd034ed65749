//! The identity platform half: `POST /{tenant}/oauth2/v2.0/token` (client credentials
//! only, with a client secret or a client assertion) and the bearer check in front of `/v1.0`.
//!
//! A client assertion (`client_assertion_type` = RFC 7523's jwt-bearer) is accepted when it is
//! the configured federated token, or a JWT signed (RS256/PS256) with the key of the configured
//! certificate, whose `x5t#S256` header is that certificate's SHA-256 thumbprint, whose `aud` is
//! this token endpoint, `iss` and `sub` the client id, and whose `nbf`/`exp` hold now.
//!
//! Tokens are opaque random strings remembered with their expiry; Graph answers 401 to an
//! unknown, revoked or expired one. The refusals mirror the identity platform's: HTTP 400
//! with an OAuth2 `error`, an `AADSTS` code and text, never echoing the secret.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::dev::ConnectionInfo;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::errors::{aad_error, GraphApiError};
use super::Shared;
use crate::secret::SecretString;
use crate::settings::GraphEmulatorSettings;
use crate::wire::{TokenResponse, GRANT_CLIENT_CREDENTIALS};

/// RFC 7523's `client_assertion_type` for a JWT.
const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

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
    let assertion = field("client_assertion");
    if !assertion.is_empty() {
        let endpoint = format!(
            "{}://{}/{}/oauth2/v2.0/token",
            req.connection_info().scheme(),
            req.connection_info().host(),
            tenant.as_str()
        );
        if let Err(refusal) = check_assertion(
            &settings,
            field("client_assertion_type"),
            assertion,
            &endpoint,
        ) {
            return refusal.answer();
        }
    } else if let Some(refusal) = check_secret(&settings, field("client_secret")) {
        return refusal;
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

/// The refusal of a missing or wrong client secret.
fn check_secret(settings: &GraphEmulatorSettings, secret: &str) -> Option<HttpResponse> {
    if secret.is_empty() {
        return Some(aad_error(
            "invalid_client",
            7_000_216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
        ));
    }
    if !settings.client_secret.ct_eq(secret.as_bytes()) {
        return Some(aad_error(
            "invalid_client",
            7_000_215,
            &format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.", settings.client_id),
        ));
    }
    None
}

/// The claims the emulator reads from a client assertion.
#[derive(Debug, Deserialize)]
struct AssertionClaims {
    sub: String,
}

/// Why the token endpoint refuses a request: the OAuth2 error, the AADSTS code and its text.
struct Refusal {
    error: &'static str,
    code: u64,
    text: &'static str,
}

impl Refusal {
    fn answer(&self) -> HttpResponse {
        aad_error(self.error, self.code, self.text)
    }
}

/// An `invalid_client` refusal.
fn invalid(code: u64, text: &'static str) -> Refusal {
    Refusal {
        error: "invalid_client",
        code,
        text,
    }
}

/// Accepts the configured federated token, or an assertion signed for the configured
/// certificate; otherwise the identity platform's refusal.
fn check_assertion(
    settings: &GraphEmulatorSettings,
    assertion_type: &str,
    assertion: &str,
    endpoint: &str,
) -> Result<(), Refusal> {
    if assertion_type != CLIENT_ASSERTION_TYPE {
        return Err(Refusal {
            error: "invalid_request",
            code: 700_009,
            text: "Client assertion type is not supported. Use 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'.",
        });
    }
    if let Some(federated) = &settings.federated_token {
        if federated.ct_eq(assertion.as_bytes()) {
            return Ok(());
        }
    }
    let Some(certificate) = &settings.client_certificate else {
        return Err(invalid(
            700_213,
            "No matching federated identity record found for presented assertion.",
        ));
    };
    let header = jsonwebtoken::decode_header(assertion).ok();
    let names_a_certificate = header
        .as_ref()
        .is_some_and(|h| h.x5t_s256.is_some() || h.x5t.is_some());
    if settings.federated_token.is_some() && !names_a_certificate {
        // Not the trusted federated token, and no certificate assertion either.
        return Err(invalid(
            700_213,
            "No matching federated identity record found for presented assertion subject.",
        ));
    }
    let header = header.ok_or_else(|| invalid(50_027, "JWT token is invalid or malformed."))?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
        return Err(invalid(
            5_002_738,
            "The client assertion must be signed with RS256 or PS256.",
        ));
    }
    let thumbprint = certificate_thumbprint(certificate)
        .ok_or_else(|| invalid(700_027, "The registered certificate cannot be read."))?;
    if header.x5t_s256.as_deref() != Some(thumbprint.as_str()) {
        return Err(invalid(
            700_027,
            "Client assertion failed signature validation. The key was not found (x5t#S256 names no certificate registered on the app).",
        ));
    }
    let key = DecodingKey::from_rsa_pem(certificate.as_bytes())
        .map_err(|_| invalid(700_027, "The registered certificate cannot be read."))?;
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[endpoint]);
    validation.set_issuer(&[&settings.client_id]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = 0;
    let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => invalid(
                700_024,
                "Client assertion is not within its valid time range.",
            ),
            ErrorKind::InvalidAudience => invalid(
                700_212,
                "No matching federated identity record found for presented assertion audience.",
            ),
            ErrorKind::InvalidIssuer => invalid(
                700_021,
                "Client assertion application identifier doesn't match 'client_id' parameter.",
            ),
            _ => invalid(700_027, "Client assertion failed signature validation."),
        })?
        .claims;
    if claims.sub != settings.client_id {
        return Err(invalid(
            700_021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        ));
    }
    Ok(())
}

/// base64url of the SHA-256 of the first certificate in a PEM text.
fn certificate_thumbprint(pem: &str) -> Option<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    let start = pem.find(BEGIN)? + BEGIN.len();
    let end = start + pem[start..].find("-----END CERTIFICATE-----")?;
    let base64_text: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(base64_text)
        .ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(der)))
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
