//! The admin API's bearer token, compared so that neither its bytes nor its length leak through
//! timing: both sides are reduced to HMAC-SHA256 digests under a key drawn at start-up, and the
//! fixed-size digests are compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::secret::SecretString;

type HmacSha256 = Hmac<Sha256>;

/// The configured admin token, held only as a keyed digest; replaced when `admin.token_file`
/// changes ([`AdminToken::replace`]).
pub struct AdminToken {
    key: [u8; 32],
    digest: std::sync::RwLock<[u8; 32]>,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

impl AdminToken {
    /// Keeps a digest of `token` under a fresh random key.
    pub fn new(token: &SecretString) -> Self {
        let key: [u8; 32] = rand::random();
        let digest = std::sync::RwLock::new(digest(&key, token.expose().as_bytes()));
        Self { key, digest }
    }

    /// Accepts `token` from now on, and no longer the one before.
    pub fn replace(&self, token: &SecretString) {
        let fresh = digest(&self.key, token.expose().as_bytes());
        *self
            .digest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
    }

    /// Whether `presented` is the token. Takes the same time whatever its length or content.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = *self
            .digest
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        digest(&self.key, presented)[..].ct_eq(&expected[..]).into()
    }
}

fn digest(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    // Any key length is valid for HMAC, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let token = AdminToken::new(&SecretString::new("admin-token-0123456789"));
        assert!(token.matches(b"admin-token-0123456789"));
        assert!(!token.matches(b"admin-token-012345678"));
        assert!(!token.matches(b"admin-token-01234567890"));
        assert!(!token.matches(b""));
        assert!(!format!("{token:?}").contains("admin-token"));
        token.replace(&SecretString::new("admin-token-rotated-0123"));
        assert!(token.matches(b"admin-token-rotated-0123"));
        assert!(!token.matches(b"admin-token-0123456789"));
    }
}
