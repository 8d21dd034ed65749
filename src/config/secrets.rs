//! Secrets given inline or as a file (`<key>_file`, so Kubernetes Secrets mount cleanly).

use std::path::Path;

use super::ConfigError;
use crate::secret::SecretString;

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
        (None, Some(path)) => {
            let raw = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::invalid(
                    format!("{key}_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let value = raw.trim_end_matches(['\n', '\r']);
            if value.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{key}_file"),
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(Some(SecretString::new(value)))
        }
        (None, None) => Ok(None),
    }
}
