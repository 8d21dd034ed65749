//! A string that never shows itself in `Debug`, `Display` or logs.
//!
//! Tokens, HMAC keys and database URLs pass through configuration, clients and error values;
//! wrapping them here means a stray `{:?}` prints `[redacted]` instead of the secret.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Deserializer};
use subtle::ConstantTimeEq;

/// A secret value. Read it with [`SecretString::expose`] only where it is actually used.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no secret was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares with `candidate` in time that does not depend on where they differ.
    pub fn ct_eq(&self, candidate: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(candidate).into()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A secret that may be replaced while the service runs (a `…_file` secret re-read when its file
/// changes, see `crate::reload`). Clones share the value.
#[derive(Clone, Default)]
pub struct SharedSecret(Arc<RwLock<SecretString>>);

impl SharedSecret {
    pub fn new(value: SecretString) -> Self {
        Self(Arc::new(RwLock::new(value)))
    }

    /// The value now.
    pub fn current(&self) -> SecretString {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Uses `value` from now on.
    pub fn replace(&self, value: SecretString) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = value;
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is empty")]
    Empty { path: String },
}

/// The secret in the file at `path`, without its trailing newline (as `kubectl create secret`
/// and editors leave it).
pub fn read_secret_file(path: &Path) -> Result<SecretString, SecretFileError> {
    let raw = std::fs::read_to_string(path).map_err(|source| SecretFileError::Unreadable {
        path: path.display().to_string(),
        source,
    })?;
    let value = raw.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(SecretFileError::Empty {
            path: path.display().to_string(),
        });
    }
    Ok(SecretString::new(value))
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = SecretString::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn constant_time_equality_matches_only_the_same_bytes() {
        let s = SecretString::new("abc");
        assert!(s.ct_eq(b"abc"));
        assert!(!s.ct_eq(b"abd"));
        assert!(!s.ct_eq(b"ab"));
    }
}
