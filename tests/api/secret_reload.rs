//! `…_file` secrets are read again when their file changes, without a restart: a SCIM token
//! rotated as AWS does it (two valid at a time, then the old one revoked) and the HMAC secret,
//! both mounted as Kubernetes mounts Secrets (a `..data` symlink swapped atomically).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_scim_emulator::{EmulatorSettings, RunningEmulator};

use crate::helpers::*;
use crate::postgres::PgServer;
use testkit::signing::{sign_now_with, SIGNATURE_HEADER};

const ADMIN: &str = "reload-admin-token-0123456789";
const OLD_SCIM: &str = "scim-token-issued-2025";
const NEW_SCIM: &str = "scim-token-issued-2026";
const OLD_HMAC: &str = "hmac-secret-before-rotation-0123";
const NEW_HMAC: &str = "hmac-secret-after-rotation-45678";

/// A directory laid out as the kubelet lays out a mounted Secret: `<key>` → `..data/<key>`,
/// `..data` → a timestamped directory, swapped by one rename.
struct MountedSecret {
    dir: PathBuf,
    generation: u32,
}

impl MountedSecret {
    fn new(files: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("pimbridge-mount-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut mount = Self { dir, generation: 0 };
        mount.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(Path::new("..data").join(name), mount.dir.join(name))
                .unwrap();
        }
        mount
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes a new generation and swaps `..data` to it atomically.
    fn update(&mut self, files: &[(&str, &str)]) {
        self.generation += 1;
        let generation = format!("..2026_12_02_{}", self.generation);
        std::fs::create_dir_all(self.dir.join(&generation)).unwrap();
        for (name, value) in files {
            std::fs::write(self.dir.join(&generation).join(name), format!("{value}\n")).unwrap();
        }
        let staged = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&staged);
        std::os::unix::fs::symlink(&generation, &staged).unwrap();
        std::fs::rename(&staged, self.dir.join("..data")).unwrap();
    }
}

impl Drop for MountedSecret {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn test_connection(app: &TestApp) -> u16 {
    app.http
        .post(format!(
            "{}/admin/applications/alpha/test-connection",
            app.internal_address
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn post_signed_with(app: &TestApp, secret: &str, id: &str) -> u16 {
    let body = activation(id, GROUP_A, id).to_string().into_bytes();
    app.http
        .post(format!("{}/v1/events", app.address))
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, sign_now_with(secret, &body))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls `check` until it is true, for at most 5 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < Duration::from_secs(5), "{what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn rotated_scim_token_and_hmac_secret_files_are_used_without_a_restart() {
    // Arrange: AWS accepts the old token only; the app reads both secrets from a mount.
    let scim = RunningEmulator::start(
        EmulatorSettings {
            tokens: vec![OLD_SCIM.to_owned()],
            ..EmulatorSettings::default()
        },
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    )
    .await
    .unwrap();
    let mut mount = MountedSecret::new(&[("scim-token", OLD_SCIM), ("hmac-secret", OLD_HMAC)]);
    let url = PgServer::shared().fresh_database().await;
    let mut settings = with_admin(test_settings(&url), ADMIN);
    settings.server.secret_reload_interval = Duration::from_millis(50);
    settings.intake.hmac_secret = None;
    settings.intake.hmac_secret_file = Some(mount.path("hmac-secret"));
    let alpha = settings.applications.get_mut("alpha").unwrap();
    alpha.scim_url = scim.scim_base_url();
    alpha.scim_token = None;
    alpha.scim_token_file = Some(mount.path("scim-token"));
    let app = spawn_app_with(settings, &url).await;
    assert_eq!(test_connection(&app).await, 200);
    assert_eq!(post_signed_with(&app, OLD_HMAC, "r-1").await, 202);
    assert_eq!(post_signed_with(&app, NEW_HMAC, "r-2").await, 401);

    // Act: AWS issues a second token, the Secret is updated, then AWS revokes the first.
    scim.update_settings(|s| s.tokens = vec![OLD_SCIM.to_owned(), NEW_SCIM.to_owned()]);
    mount.update(&[("scim-token", NEW_SCIM), ("hmac-secret", NEW_HMAC)]);
    eventually("the new HMAC secret is accepted", || async {
        post_signed_with(&app, NEW_HMAC, "r-3").await == 202
    })
    .await;
    // The SCIM token file was swapped by the same rename; give the poll one more round.
    tokio::time::sleep(Duration::from_millis(150)).await;
    scim.update_settings(|s| s.tokens = vec![NEW_SCIM.to_owned()]);

    // Assert: the same process uses the new SCIM token and refuses the old HMAC secret.
    assert_eq!(
        test_connection(&app).await,
        200,
        "the new SCIM token is sent"
    );
    assert_eq!(post_signed_with(&app, OLD_HMAC, "r-4").await, 401);
    assert_eq!(post_signed_with(&app, NEW_HMAC, "r-5").await, 202);
    scim.stop().await;
}

#[tokio::test]
async fn a_rotated_admin_token_file_replaces_the_old_token() {
    let mut mount = MountedSecret::new(&[("admin-token", ADMIN)]);
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.server.secret_reload_interval = Duration::from_millis(50);
    settings.admin.token_file = Some(mount.path("admin-token"));
    settings.admin.requests_per_second = 0;
    let app = spawn_app_with(settings, &url).await;
    let list = |token: &'static str| {
        let request = app
            .http
            .get(format!("{}/admin/applications", app.internal_address))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(list(ADMIN).await, 200);

    mount.update(&[("admin-token", "rotated-admin-token-987654321")]);
    eventually("the new admin token opens the API", || async {
        list("rotated-admin-token-987654321").await == 200
    })
    .await;
    assert_eq!(list(ADMIN).await, 401);

    // A value the rules refuse (too short) leaves the current token in use.
    mount.update(&[("admin-token", "short")]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(list("short").await, 401);
    assert_eq!(list("rotated-admin-token-987654321").await, 200);
}
