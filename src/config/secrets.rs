//! Secrets given inline or as a file (`<key>_file`, so Kubernetes Secrets mount cleanly).

use std::path::Path;

use super::ConfigError;
use crate::secret::{read_secret_file, SecretString};

/// One of `inline` or the contents of `file`; an error when both are set or the file is unreadable.
pub(super) fn resolve_secret(
    key: &str,
    inline: Option<SecretString>,
    file: Option<&Path>,
) -> Result<Option<SecretString>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            key,
            format!("set only one of `{key}` and `{key}_file`"),
        )),
        (Some(value), None) if value.is_empty() => Err(ConfigError::invalid(key, "is empty")),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => read_secret_file(path)
            .map(Some)
            .map_err(|e| ConfigError::invalid(format!("{key}_file"), e.to_string())),
        (None, None) => Ok(None),
    }
}
