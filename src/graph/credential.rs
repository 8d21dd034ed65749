//! How pimbridge proves itself to the Microsoft identity platform: a client secret, a
//! certificate, or a federated token (workload identity federation).
//!
//! With a certificate, each token request carries a *client assertion* signed here: a JWT with
//! header `{"alg": "PS256", "typ": "JWT", "x5t#S256": <SHA-256 thumbprint of the certificate>}`
//! and claims `aud` = the token endpoint, `iss` = `sub` = the client id, a fresh `jti`, `iat`,
//! `nbf` = now and `exp` = now + [`ASSERTION_LIFETIME`]. With a federated token (AKS workload
//! identity mounts one and rotates it), the file's content is sent as the assertion. Both go as
//! `client_assertion` with `client_assertion_type` = [`CLIENT_ASSERTION_TYPE`].
//!
//! The files are read again for every token request (about once an hour): a renewed certificate
//! or a rotated federated token is used without a restart. Private keys and tokens never appear
//! in errors, logs or `Debug` output.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secret::{read_secret_file, SecretString};

/// The `client_assertion_type` of a JWT assertion (RFC 7523).
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long a signed assertion is valid: it is used at once, for one request.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// Why a credential cannot be presented. Never holds a key or a token.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: String },
    #[error("{path} is not a PEM RSA private key (PKCS#8 or PKCS#1)")]
    NotAnRsaKey { path: String },
    #[error("the private key in {key} does not belong to the certificate in {certificate}")]
    KeyMismatch { certificate: String, key: String },
    #[error("cannot sign the client assertion: {0}")]
    Signing(String),
    #[error("the federated token file: {0}")]
    FederatedToken(String),
}

/// A credential that is sent as a client assertion.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientAssertion {
    /// A certificate registered on the app: PEM certificate and its PEM private key.
    Certificate {
        certificate_file: PathBuf,
        key_file: PathBuf,
    },
    /// A token issued by a trusted identity provider (Kubernetes service account token), read
    /// from this file each time.
    FederatedTokenFile(PathBuf),
}

impl fmt::Debug for ClientAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Certificate {
                certificate_file,
                key_file,
            } => f
                .debug_struct("Certificate")
                .field("certificate_file", certificate_file)
                .field("key_file", key_file)
                .finish(),
            Self::FederatedTokenFile(path) => {
                f.debug_tuple("FederatedTokenFile").field(path).finish()
            }
        }
    }
}

impl ClientAssertion {
    /// Checks that an assertion can be made now (start-up validation): the files are readable,
    /// and a certificate's key signs what its certificate verifies.
    pub fn check(&self, client_id: &str) -> Result<(), CredentialError> {
        match self {
            Self::Certificate {
                certificate_file,
                key_file,
            } => {
                let certificate = Certificate::load(certificate_file, key_file)?;
                let audience = "https://login.microsoftonline.com/check";
                let assertion = certificate.sign(client_id, audience)?;
                if certificate.verifies(&assertion, client_id, audience) {
                    Ok(())
                } else {
                    Err(CredentialError::KeyMismatch {
                        certificate: certificate_file.display().to_string(),
                        key: key_file.display().to_string(),
                    })
                }
            }
            Self::FederatedTokenFile(_) => self.assertion(client_id, "").map(|_| ()),
        }
    }

    /// The assertion for one token request to `audience` (the token endpoint URL).
    pub fn assertion(
        &self,
        client_id: &str,
        audience: &str,
    ) -> Result<SecretString, CredentialError> {
        match self {
            Self::Certificate {
                certificate_file,
                key_file,
            } => Certificate::load(certificate_file, key_file)?.sign(client_id, audience),
            Self::FederatedTokenFile(path) => read_secret_file(path)
                .map(|token| SecretString::new(token.expose().trim()))
                .map_err(|e| CredentialError::FederatedToken(e.to_string())),
        }
    }
}

/// The claims of a client assertion.
#[derive(Debug, Serialize, Deserialize)]
struct AssertionClaims {
    aud: String,
    iss: String,
    sub: String,
    jti: String,
    iat: i64,
    nbf: i64,
    exp: i64,
}

/// A loaded certificate credential.
struct Certificate {
    /// `x5t#S256`: base64url of the SHA-256 of the certificate's DER.
    thumbprint_sha256: String,
    key: EncodingKey,
    /// The certificate's public key, to check the pair at start-up.
    public: DecodingKey,
}

impl Certificate {
    fn load(certificate_file: &Path, key_file: &Path) -> Result<Self, CredentialError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| CredentialError::Unreadable {
                path: path.display().to_string(),
                source,
            })
        };
        let certificate_pem = read(certificate_file)?;
        let der = first_certificate_der(&certificate_pem).ok_or_else(|| {
            CredentialError::NoCertificate {
                path: certificate_file.display().to_string(),
            }
        })?;
        let public = DecodingKey::from_rsa_pem(&certificate_pem).map_err(|_| {
            CredentialError::NoCertificate {
                path: certificate_file.display().to_string(),
            }
        })?;
        let not_a_key = || CredentialError::NotAnRsaKey {
            path: key_file.display().to_string(),
        };
        let key_pem = read(key_file)?;
        if !String::from_utf8_lossy(&key_pem).contains("PRIVATE KEY-----") {
            return Err(not_a_key());
        }
        let key = EncodingKey::from_rsa_pem(&key_pem).map_err(|_| not_a_key())?;
        Ok(Self {
            thumbprint_sha256: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(&der)),
            key,
            public,
        })
    }

    fn sign(&self, client_id: &str, audience: &str) -> Result<SecretString, CredentialError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut header = Header::new(Algorithm::PS256);
        header.typ = Some("JWT".to_owned());
        header.x5t_s256 = Some(self.thumbprint_sha256.clone());
        let claims = AssertionClaims {
            aud: audience.to_owned(),
            iss: client_id.to_owned(),
            sub: client_id.to_owned(),
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            nbf: now,
            exp: now + ASSERTION_LIFETIME.as_secs() as i64,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map(SecretString::new)
            .map_err(|e| CredentialError::Signing(e.to_string()))
    }

    fn verifies(&self, assertion: &SecretString, client_id: &str, audience: &str) -> bool {
        let mut validation = Validation::new(Algorithm::PS256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[client_id]);
        jsonwebtoken::decode::<AssertionClaims>(assertion.expose(), &self.public, &validation)
            .is_ok()
    }
}

/// The DER of the first `CERTIFICATE` block of a PEM text.
fn first_certificate_der(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = start + text[start..].find("-----END CERTIFICATE-----")?;
    let body: String = text[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/graph-credentials")
            .join(name)
    }

    fn certificate() -> ClientAssertion {
        ClientAssertion::Certificate {
            certificate_file: fixture("client-cert.pem"),
            key_file: fixture("client-key.pem"),
        }
    }

    #[test]
    fn a_certificate_assertion_is_a_ps256_jwt_with_the_thumbprint_and_the_claims() {
        let audience = "https://login.example/tenant/oauth2/v2.0/token";
        let jwt = certificate().assertion("client-1", audience).unwrap();

        let header = jsonwebtoken::decode_header(jwt.expose()).unwrap();
        assert_eq!(header.alg, Algorithm::PS256);
        let der =
            first_certificate_der(&std::fs::read(fixture("client-cert.pem")).unwrap()).unwrap();
        assert_eq!(
            header.x5t_s256.as_deref(),
            Some(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(Sha256::digest(&der))
                    .as_str()
            )
        );
        let public =
            DecodingKey::from_rsa_pem(&std::fs::read(fixture("client-cert.pem")).unwrap()).unwrap();
        let mut validation = Validation::new(Algorithm::PS256);
        validation.set_audience(&[audience]);
        let claims = jsonwebtoken::decode::<AssertionClaims>(jwt.expose(), &public, &validation)
            .unwrap()
            .claims;
        assert_eq!(
            (claims.iss.as_str(), claims.sub.as_str()),
            ("client-1", "client-1")
        );
        assert!(claims.exp - claims.nbf <= 300 && claims.exp > claims.nbf);
        assert!(!claims.jti.is_empty());
    }

    #[test]
    fn a_key_that_does_not_belong_to_the_certificate_is_found_at_start_up() {
        let mismatched = ClientAssertion::Certificate {
            certificate_file: fixture("client-cert.pem"),
            key_file: fixture("other-key.pem"),
        };
        assert!(certificate().check("c").is_ok());
        let error = mismatched.check("c").unwrap_err().to_string();
        assert!(error.contains("does not belong"), "{error}");
        let not_a_key = ClientAssertion::Certificate {
            certificate_file: fixture("client-cert.pem"),
            key_file: fixture("client-cert.pem"),
        };
        assert!(matches!(
            not_a_key.check("c"),
            Err(CredentialError::NotAnRsaKey { .. })
        ));
    }

    #[test]
    fn a_federated_token_is_read_from_its_file_each_time() {
        let file = std::env::temp_dir().join(format!("pimbridge-fed-{}", uuid::Uuid::new_v4()));
        std::fs::write(&file, "token-one\n").unwrap();
        let federated = ClientAssertion::FederatedTokenFile(file.clone());
        assert_eq!(federated.assertion("c", "a").unwrap().expose(), "token-one");
        std::fs::write(&file, "token-two").unwrap();
        assert_eq!(federated.assertion("c", "a").unwrap().expose(), "token-two");
        std::fs::remove_file(&file).unwrap();
        assert!(federated.check("c").is_err());
        assert!(!format!("{federated:?}").contains("token"));
    }
}
