//! `…_file` secrets re-read when their file changes, without a restart.
//!
//! AWS rotates SCIM tokens (two valid at a time, a year each), and Kubernetes updates a mounted
//! Secret in place by swapping a symlink. Neither is seen reliably by inotify on the file itself,
//! so [`SecretWatcher`] polls: every `server.secret_reload_interval` it reads each watched file
//! and, when the content differs from what is in use, hands the new value to the secret's user
//! (the HMAC check, the admin token, a SCIM client, the Graph token source) and logs a line
//! naming the configuration key — never the value. A file that cannot be read, is empty or holds
//! a value its user refuses leaves the old value in use, with a warning.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::secret::{read_secret_file, SecretString};

/// Hands a new value to the secret's user; `Err` (a fixed reason, never the value) refuses it.
pub type Apply = Box<dyn Fn(&SecretString) -> Result<(), String> + Send + Sync>;

/// One secret read from a file.
struct Watched {
    /// The configuration key, e.g. `applications.prod.scim_token`.
    key: String,
    path: PathBuf,
    /// The value last seen in the file (in use unless its user refused it).
    last: SecretString,
    /// Whether the last read failed (so a missing file is reported once, not every poll).
    failing: bool,
    apply: Apply,
}

/// Watches `…_file` secrets; see the module documentation.
#[derive(Default)]
pub struct SecretWatcher {
    secrets: Vec<Watched>,
}

impl SecretWatcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Watches the file at `path`, whose content `current` is in use now, for the secret
    /// configured as `key`.
    pub fn watch(
        &mut self,
        key: impl Into<String>,
        path: impl Into<PathBuf>,
        current: SecretString,
        apply: Apply,
    ) {
        self.secrets.push(Watched {
            key: key.into(),
            path: path.into(),
            last: current,
            failing: false,
            apply,
        });
    }

    /// True when no secret comes from a file.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The keys watched.
    pub fn keys(&self) -> Vec<&str> {
        self.secrets.iter().map(|s| s.key.as_str()).collect()
    }

    /// Reads every file once; returns how many secrets were replaced.
    pub fn check(&mut self) -> usize {
        let mut replaced = 0;
        for secret in &mut self.secrets {
            let value = match read_secret_file(&secret.path) {
                Ok(value) => value,
                Err(e) => {
                    if !secret.failing {
                        tracing::warn!(key = %secret.key, error.message = %e,
                            "secret file unusable; the value read before stays in use");
                    }
                    secret.failing = true;
                    continue;
                }
            };
            secret.failing = false;
            if secret.last.ct_eq(value.expose().as_bytes()) {
                continue;
            }
            match (secret.apply)(&value) {
                Ok(()) => {
                    tracing::info!(key = %secret.key, "secret file changed: the new value is in use");
                    replaced += 1;
                }
                Err(reason) => {
                    tracing::warn!(key = %secret.key, reason = %reason,
                        "secret file changed to a value that cannot be used; the value read before stays in use");
                }
            }
            // Either way, this content has been dealt with: do not repeat it every poll.
            secret.last = value;
        }
        replaced
    }

    /// Checks every `interval` until `shutdown`.
    pub async fn run(mut self, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            self.check();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn a_changed_file_is_applied_once_and_a_refused_or_missing_one_keeps_the_old_value() {
        let dir = std::env::temp_dir().join(format!("pimbridge-reload-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "first-value\n").unwrap();
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut watcher = SecretWatcher::new();
        let sink = seen.clone();
        watcher.watch(
            "applications.a.scim_token",
            &file,
            SecretString::new("first-value"),
            Box::new(move |v| {
                if v.expose().starts_with("bad") {
                    return Err("refused".into());
                }
                sink.lock().unwrap().push(v.expose().to_owned());
                Ok(())
            }),
        );

        assert_eq!(watcher.check(), 0, "unchanged");
        std::fs::write(&file, "second-value\n").unwrap();
        assert_eq!(watcher.check(), 1);
        assert_eq!(watcher.check(), 0, "applied once");
        std::fs::write(&file, "bad-value").unwrap();
        assert_eq!(watcher.check(), 0, "refused");
        std::fs::remove_file(&file).unwrap();
        assert_eq!(watcher.check(), 0, "missing");
        std::fs::write(&file, "third-value").unwrap();
        assert_eq!(watcher.check(), 1);

        assert_eq!(*seen.lock().unwrap(), vec!["second-value", "third-value"]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
