//! Who may post events: an HMAC-signed body or a bearer JWT (docs/webhooks.md).
//!
//! [`Authenticator::authenticate`] looks at the headers and the raw body and either accepts the
//! request or says why not, as an [`AuthError`] that the HTTP layer turns into 401 (or 503 when the
//! key server is unreachable). Error messages never contain the presented credential.

pub mod admin_token;
pub mod hmac;
pub mod jwt;

pub mod rate;

use actix_web::http::header::{HeaderMap, AUTHORIZATION};

use crate::config::IntakeSettings;
use crate::secret::SharedSecret;

/// Why a request is not authenticated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no credentials: send a bearer token or an X-Pimbridge-Signature header")]
    MissingCredentials,
    #[error("the X-Pimbridge-Signature header is malformed; expected t=<unix seconds>,v1=<hex>")]
    MalformedSignature,
    #[error("the signature's timestamp is outside the accepted window")]
    StaleSignature,
    #[error("the signature does not match the body")]
    InvalidSignature,
    #[error("signed requests are not accepted here")]
    SignatureNotAccepted,
    #[error("bearer tokens are not accepted here")]
    BearerNotAccepted,
    #[error("the bearer token is malformed")]
    InvalidToken,
    #[error("the bearer token's signature is invalid")]
    InvalidTokenSignature,
    #[error("the bearer token has expired")]
    TokenExpired,
    #[error("the bearer token is not valid yet")]
    TokenNotYetValid,
    #[error("the bearer token's audience is not accepted")]
    WrongAudience,
    #[error("the bearer token's issuer is not accepted")]
    WrongIssuer,
    #[error("the bearer token's algorithm is not accepted")]
    UnsupportedAlgorithm,
    #[error("the bearer token is signed with an unknown key")]
    UnknownKey,
    #[error("the signing keys cannot be fetched right now")]
    KeysUnavailable,
}

impl AuthError {
    /// Stable machine-readable code for the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingCredentials => "missing_credentials",
            Self::MalformedSignature => "malformed_signature",
            Self::StaleSignature => "stale_signature",
            Self::InvalidSignature => "invalid_signature",
            Self::SignatureNotAccepted => "signature_not_accepted",
            Self::BearerNotAccepted => "bearer_not_accepted",
            Self::InvalidToken => "invalid_token",
            Self::InvalidTokenSignature => "invalid_token_signature",
            Self::TokenExpired => "token_expired",
            Self::TokenNotYetValid => "token_not_yet_valid",
            Self::WrongAudience => "invalid_audience",
            Self::WrongIssuer => "invalid_issuer",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::UnknownKey => "unknown_key",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// How the caller proved who it is; recorded in logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Signature,
    Token { subject: Option<String> },
}

/// Checks credentials on event requests.
pub struct Authenticator {
    /// Replaced when `intake.hmac_secret_file` changes (`crate::reload`).
    hmac_secret: Option<SharedSecret>,
    tolerance_secs: u64,
    jwt: Option<jwt::JwtVerifier>,
}

impl Authenticator {
    /// Builds the checks configured in `[intake]`.
    pub fn new(settings: &IntakeSettings) -> Result<Self, String> {
        Ok(Self {
            hmac_secret: settings.hmac_secret.clone().map(SharedSecret::new),
            tolerance_secs: settings.signature_tolerance.as_secs(),
            jwt: settings
                .jwt
                .as_ref()
                .map(jwt::JwtVerifier::new)
                .transpose()?,
        })
    }

    /// The HMAC secret in use, to be replaced when its file changes.
    pub fn hmac_secret(&self) -> Option<&SharedSecret> {
        self.hmac_secret.as_ref()
    }

    /// Authenticates a request from its headers and raw body. A bearer token wins when both are sent.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Caller, AuthError> {
        if let Some(value) = headers.get(AUTHORIZATION) {
            let value = value.to_str().map_err(|_| AuthError::InvalidToken)?;
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .ok_or(AuthError::InvalidToken)?
                .trim();
            let verifier = self.jwt.as_ref().ok_or(AuthError::BearerNotAccepted)?;
            let claims = verifier.verify(token).await?;
            return Ok(Caller::Token {
                subject: claims.sub,
            });
        }
        if let Some(value) = headers.get(hmac::SIGNATURE_HEADER) {
            let secret = self
                .hmac_secret
                .as_ref()
                .ok_or(AuthError::SignatureNotAccepted)?
                .current();
            let value = value.to_str().map_err(|_| AuthError::MalformedSignature)?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            hmac::verify(&secret, value, body, now, self.tolerance_secs)?;
            return Ok(Caller::Signature);
        }
        Err(AuthError::MissingCredentials)
    }
}
