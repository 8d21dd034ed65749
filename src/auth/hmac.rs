//! The `X-Pimbridge-Signature` scheme: HMAC-SHA256 over `"<unix-seconds>.<raw body>"`.
//!
//! Header: `X-Pimbridge-Signature: t=1764324000,v1=<lowercase hex>`. The timestamp is inside the
//! signed material, so a captured request cannot be replayed outside the tolerance window, and the
//! comparison is constant-time (`Mac::verify_slice`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::AuthError;
use crate::secret::SecretString;

/// Name of the signature header.
pub const SIGNATURE_HEADER: &str = "x-pimbridge-signature";

type HmacSha256 = Hmac<Sha256>;

/// Computes the header value for `body` at `timestamp`; used by senders, docs and tests.
pub fn sign(secret: &SecretString, timestamp: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac(secret, timestamp, body))
    )
}

fn mac(secret: &SecretString, timestamp: i64, body: &[u8]) -> Vec<u8> {
    keyed(secret, timestamp, body)
        .finalize()
        .into_bytes()
        .to_vec()
}

fn keyed(secret: &SecretString, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: `InvalidLength` cannot happen here.
    #[allow(clippy::expect_used)]
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks `header` against `body`, with `now` in unix seconds.
pub fn verify(
    secret: &SecretString,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<(), AuthError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(AuthError::MalformedSignature)?;
    if signatures.is_empty() {
        return Err(AuthError::MalformedSignature);
    }
    if now.abs_diff(timestamp) > tolerance_secs {
        return Err(AuthError::StaleSignature);
    }
    for candidate in signatures {
        let Ok(bytes) = hex::decode(candidate) else {
            continue;
        };
        if keyed(secret, timestamp, body).verify_slice(&bytes).is_ok() {
            return Ok(());
        }
    }
    Err(AuthError::InvalidSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SecretString {
        SecretString::new("a-test-secret-of-some-length")
    }

    #[test]
    fn a_fresh_signature_over_the_same_body_verifies() {
        let header = sign(&secret(), 1_000, b"{}");
        assert!(verify(&secret(), &header, b"{}", 1_010, 300).is_ok());
    }

    #[test]
    fn a_changed_body_or_key_fails() {
        let header = sign(&secret(), 1_000, b"{}");
        assert!(matches!(
            verify(&secret(), &header, b"{ }", 1_000, 300),
            Err(AuthError::InvalidSignature)
        ));
        assert!(matches!(
            verify(
                &SecretString::new("another-secret-here"),
                &header,
                b"{}",
                1_000,
                300
            ),
            Err(AuthError::InvalidSignature)
        ));
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_stale_either_way() {
        let header = sign(&secret(), 1_000, b"{}");
        assert!(matches!(
            verify(&secret(), &header, b"{}", 1_301, 300),
            Err(AuthError::StaleSignature)
        ));
        assert!(matches!(
            verify(&secret(), &header, b"{}", 699, 300),
            Err(AuthError::StaleSignature)
        ));
        assert!(verify(&secret(), &header, b"{}", 1_300, 300).is_ok());
    }

    #[test]
    fn a_header_without_timestamp_or_signature_is_malformed() {
        for header in ["v1=00", "t=5", "", "garbage", "t=abc,v1=00"] {
            assert!(
                matches!(
                    verify(&secret(), header, b"{}", 5, 300),
                    Err(AuthError::MalformedSignature)
                ),
                "{header}"
            );
        }
    }

    #[test]
    fn the_timestamp_is_part_of_the_signed_material() {
        let header = sign(&secret(), 1_000, b"{}");
        let moved = header.replace("t=1000", "t=1001");
        assert!(matches!(
            verify(&secret(), &moved, b"{}", 1_000, 300),
            Err(AuthError::InvalidSignature)
        ));
    }
}
