//! Bearer JWT verification with jsonwebtoken: issuer, audience, expiry, not-before and an
//! allow-list of asymmetric algorithms, with keys from a JWKS document.
//!
//! Keys from a URL are cached; a token naming an unknown `kid` triggers one refetch (at most one per
//! `jwks_min_refetch`, so that forged tokens cannot make us hammer the key server). If no key
//! set could ever be fetched, callers get 503 rather than 401: the fault is ours, not theirs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use super::AuthError;
use crate::config::{parse_algorithm, JwtSettings};

/// The claims we read. `sub` names the caller in logs.
#[derive(Debug, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub sub: Option<String>,
}

/// Where the keys come from.
enum KeySource {
    Url {
        url: String,
        client: reqwest::Client,
        min_refetch: Duration,
        /// When the last fetch started; serialises refetches.
        last_fetch: Mutex<Option<Instant>>,
    },
    Static,
}

/// Verifies bearer tokens against configured issuers, audiences and keys.
pub struct JwtVerifier {
    algorithms: Vec<Algorithm>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: u64,
    keys: RwLock<Option<HashMap<String, DecodingKey>>>,
    source: KeySource,
}

/// Key id used for a JWK without `kid` (only usable when it is the only key).
const NO_KID: &str = "";

/// Time allowed for one JWKS fetch.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

impl JwtVerifier {
    /// Builds a verifier; a `jwks_file` is read now, a `jwks_url` on first use.
    pub fn new(settings: &JwtSettings) -> Result<Self, String> {
        let algorithms = settings
            .algorithms
            .iter()
            .map(|a| parse_algorithm(a))
            .collect::<Result<Vec<_>, _>>()?;
        let (source, keys) = match (&settings.jwks_url, &settings.jwks_file) {
            (Some(url), _) => {
                let client = reqwest::Client::builder()
                    .timeout(JWKS_FETCH_TIMEOUT)
                    .user_agent(concat!("pimbridge/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("cannot build the JWKS HTTP client: {e}"))?;
                (
                    KeySource::Url {
                        url: url.clone(),
                        client,
                        min_refetch: settings.jwks_min_refetch,
                        last_fetch: Mutex::new(None),
                    },
                    None,
                )
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let set: JwkSet = serde_json::from_str(&text)
                    .map_err(|e| format!("{} is not a JWKS document: {e}", path.display()))?;
                (KeySource::Static, Some(keys_from_set(&set)))
            }
            (None, None) => return Err("set jwks_url or jwks_file".into()),
        };
        Ok(Self {
            algorithms,
            issuers: settings.issuers.clone(),
            audiences: settings.audiences.clone(),
            leeway: settings.leeway.as_secs(),
            keys: RwLock::new(keys),
            source,
        })
    }

    /// Verifies `token` and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        // decode_header refuses `alg: none` and unknown algorithms outright.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::InvalidToken)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthError::UnsupportedAlgorithm);
        }
        let kid = header.kid.unwrap_or_default();
        let key = self.key_for(&kid).await?;

        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&self.issuers);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;

        jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| classify(&e))
    }

    async fn key_for(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        if let Some(key) = self.cached(kid).await {
            return Ok(key);
        }
        let KeySource::Url {
            url,
            client,
            min_refetch,
            last_fetch,
        } = &self.source
        else {
            return Err(AuthError::UnknownKey);
        };
        let mut last = last_fetch.lock().await;
        // Another request may have refreshed the set while we waited for the lock.
        if let Some(key) = self.cached(kid).await {
            return Ok(key);
        }
        let have_keys = self.keys.read().await.is_some();
        if have_keys && last.is_some_and(|at| at.elapsed() < *min_refetch) {
            return Err(AuthError::UnknownKey);
        }
        *last = Some(Instant::now());
        match fetch(client, url).await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "fetched JWKS");
                *self.keys.write().await = Some(keys);
            }
            Err(reason) => {
                tracing::warn!(error.message = %reason, "JWKS fetch failed");
                if !have_keys {
                    return Err(AuthError::KeysUnavailable);
                }
            }
        }
        self.cached(kid).await.ok_or(AuthError::UnknownKey)
    }

    async fn cached(&self, kid: &str) -> Option<DecodingKey> {
        let keys = self.keys.read().await;
        let keys = keys.as_ref()?;
        if let Some(key) = keys.get(kid) {
            return Some(key.clone());
        }
        // A token without `kid` may use the only key of the set.
        if kid.is_empty() && keys.len() == 1 {
            return keys.values().next().cloned();
        }
        None
    }
}

async fn fetch(
    client: &reqwest::Client,
    url: &str,
) -> Result<HashMap<String, DecodingKey>, String> {
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("JWKS endpoint answered {}", response.status()));
    }
    let set: JwkSet = response.json().await.map_err(|e| e.to_string())?;
    Ok(keys_from_set(&set))
}

fn keys_from_set(set: &JwkSet) -> HashMap<String, DecodingKey> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((
                jwk.common.key_id.clone().unwrap_or_else(|| NO_KID.into()),
                key,
            ))
        })
        .collect()
}

fn classify(error: &jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => AuthError::TokenExpired,
        ErrorKind::ImmatureSignature => AuthError::TokenNotYetValid,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            AuthError::UnsupportedAlgorithm
        }
        ErrorKind::MissingRequiredClaim(_) => AuthError::InvalidToken,
        ErrorKind::InvalidSignature => AuthError::InvalidTokenSignature,
        _ => AuthError::InvalidToken,
    }
}
