//! Signed event posting: the `X-Pimbridge-Signature` a sender puts on `POST /v1/events`.

use pimbridge::auth::hmac;
use pimbridge::secret::SecretString;

pub use pimbridge::auth::hmac::SIGNATURE_HEADER;

/// The signature header value for `body` under `secret`, timestamped now.
pub fn sign_now_with(secret: &str, body: &[u8]) -> String {
    hmac::sign(
        &SecretString::new(secret),
        time::OffsetDateTime::now_utc().unix_timestamp(),
        body,
    )
}
