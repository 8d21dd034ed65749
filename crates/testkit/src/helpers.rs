//! `TestApp`: the real application on port 0 against a fresh database, with typed helpers.

use std::time::Duration;

use pimbridge::auth::hmac;
use pimbridge::config::Settings;
use pimbridge::startup::Application;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::postgres::PgServer;

/// The HMAC secret test apps accept.
pub const HMAC_SECRET: &str = "test-hmac-secret-0123456789";
/// Group assigned to application `alpha`.
pub const GROUP_A: &str = "11111111-aaaa-4aaa-8aaa-000000000001";
/// Group assigned to application `beta`.
pub const GROUP_B: &str = "22222222-bbbb-4bbb-8bbb-000000000002";
/// Group assigned to both applications.
pub const GROUP_AB: &str = "33333333-cccc-4ccc-8ccc-000000000003";
/// Group assigned to no application.
pub const GROUP_UNKNOWN: &str = "99999999-dddd-4ddd-8ddd-000000000009";

/// The configuration of a test app as typed settings; tests set fields before spawning.
pub fn test_settings(database_url: &str) -> Settings {
    Settings::from_toml_str(&test_settings_toml(database_url)).expect("the test settings are valid")
}

/// Deserializes one section of the configuration (e.g. a `GraphSettings`) from TOML, for the
/// sections whose defaults only the configuration knows.
pub fn section<T: serde::de::DeserializeOwned>(toml: &str) -> T {
    use figment::providers::Format;
    figment::Figment::from(figment::providers::Toml::string(toml))
        .extract()
        .expect("a valid configuration section")
}

/// The test configuration as a file would hold it, for the tests that start the binary.
pub fn test_settings_toml(database_url: &str) -> String {
    format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        internal_listen = "127.0.0.1:0"
        shutdown_timeout = "5s"
        workers = 2
        metrics_refresh_interval = "50ms"
        [database]
        url = "{database_url}"
        max_connections = 8
        connect_timeout = "2s"
        [intake]
        hmac_secret = "{HMAC_SECRET}"
        # Off: tests post from one address far faster than any sender (tests/api/limit.rs checks it).
        requests_per_second = 0
        [dispatch]
        enabled = false
        [sync]
        enabled = false
        [log]
        format = "pretty"
        level = "warn"
        [applications.alpha]
        scim_url = "http://127.0.0.1:9/scim/v2"
        scim_token = "alpha-token"
        groups = ["{GROUP_A}", "{GROUP_AB}"]
        [applications.beta]
        scim_url = "http://127.0.0.1:9/scim/v2"
        scim_token = "beta-token"
        groups = ["{GROUP_B}", "{GROUP_AB}"]
        "#
    )
}

pub struct TestApp {
    /// `http://127.0.0.1:<port>` of the public listener (webhooks, `/v1/events`, health).
    pub address: String,
    /// `http://127.0.0.1:<port>` of the internal listener (`/metrics`, `/admin/…`).
    pub internal_address: String,
    pub database_url: String,
    pub db: tokio_postgres::Client,
    pub http: reqwest::Client,
    settings: Settings,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    /// The app's own runtime, when it may be killed ([`spawn_killable_app`]): dropping a runtime
    /// drops every task on it at its next await, as a crash would.
    runtime: Option<tokio::runtime::Runtime>,
    killable: bool,
}

/// Starts an app on the shared server with the default test settings.
pub async fn spawn_app() -> TestApp {
    let url = PgServer::shared().fresh_database().await;
    spawn_app_with(test_settings(&url), &url).await
}

/// Starts an app with `settings` (validated as at start-up) whose database is `database_url`.
pub async fn spawn_app_with(settings: Settings, database_url: &str) -> TestApp {
    spawn_app_with_assertions_via(settings, database_url).await
}

/// Starts an app with `settings`; the test's own queries (`TestApp::db`) connect with
/// `database_url`, without TLS.
pub async fn spawn_app_with_assertions_via(settings: Settings, database_url: &str) -> TestApp {
    spawn(settings, database_url, false).await
}

/// Like [`spawn_app_with`], on a runtime of its own, so that [`TestApp::kill`] can stop it
/// abruptly.
pub async fn spawn_killable_app(settings: Settings, database_url: &str) -> TestApp {
    spawn(settings, database_url, true).await
}

async fn spawn(settings: Settings, database_url: &str, killable: bool) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        pimbridge::telemetry::init(&pimbridge::config::LogSettings::default());
    }
    let (db, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    let mut app = TestApp {
        address: String::new(),
        internal_address: String::new(),
        database_url: database_url.to_owned(),
        db,
        http: reqwest::Client::new(),
        settings,
        shutdown: CancellationToken::new(),
        task: None,
        runtime: None,
        killable,
    };
    app.start().await;
    app.wait_until_ready().await;
    app
}

impl TestApp {
    async fn start(&mut self) {
        let settings = self
            .settings
            .clone()
            .validated()
            .expect("valid test settings");
        if self.killable {
            return self.start_on_own_runtime(settings).await;
        }
        let application = Application::build(settings).await.expect("app builds");
        self.address = format!("http://127.0.0.1:{}", application.port());
        self.internal_address = format!("http://127.0.0.1:{}", application.internal_port());
        self.shutdown = application.shutdown_token();
        self.task = Some(tokio::spawn(application.run_until_stopped()));
    }

    /// Builds and runs the app on a new runtime: everything it spawns (dispatcher, cycles, the
    /// HTTP server, database connections) lives there and dies with it.
    async fn start_on_own_runtime(&mut self, settings: Settings) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("app-under-test")
            .enable_all()
            .build()
            .expect("a runtime for the app");
        let (built, ready) = tokio::sync::oneshot::channel();
        let task = runtime.spawn(async move {
            let application = Application::build(settings).await.expect("app builds");
            let _ = built.send((
                application.port(),
                application.internal_port(),
                application.shutdown_token(),
            ));
            application.run_until_stopped().await
        });
        let (port, internal_port, shutdown) = ready.await.expect("the app was built");
        self.address = format!("http://127.0.0.1:{port}");
        self.internal_address = format!("http://127.0.0.1:{internal_port}");
        self.shutdown = shutdown;
        self.task = Some(task);
        self.runtime = Some(runtime);
    }

    /// Kills the app as a crash would: no graceful shutdown, work in progress (a SCIM request
    /// sent, its outcome not recorded) is abandoned and database sessions are dropped. Only for
    /// apps from [`spawn_killable_app`]; [`Self::start_again`] brings it back on the same
    /// database.
    pub async fn kill(&mut self) {
        let runtime = self
            .runtime
            .take()
            .expect("kill() needs an app from spawn_killable_app");
        self.task = None;
        runtime.shutdown_background();
    }

    /// Starts the app again after [`Self::kill`], with the same settings and database.
    pub async fn start_again(&mut self) {
        self.start().await;
        self.wait_until_ready().await;
    }

    /// Stops the app gracefully and starts a new one with the same settings and database.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
        self.wait_until_ready().await;
    }

    /// Stops the app and waits until it has exited.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("app task").expect("app exits cleanly");
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    pub async fn wait_until_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self
                .http
                .get(format!("{}/health/ready", self.address))
                .send()
                .await
            {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the app did not become ready");
    }

    /// Posts `body` to /v1/events signed with the test secret.
    pub async fn post_events(&self, body: &Value) -> reqwest::Response {
        self.post_events_raw(body.to_string().into_bytes(), "application/json")
            .await
    }

    pub async fn post_events_raw(&self, body: Vec<u8>, content_type: &str) -> reqwest::Response {
        self.post_signed("/v1/events", body, content_type).await
    }

    /// POSTs `body` to `path`, signed with the test HMAC secret.
    pub async fn post_signed(
        &self,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> reqwest::Response {
        let signature = sign_now(&body);
        self.http
            .post(format!("{}{path}", self.address))
            .header("content-type", content_type)
            .header(hmac::SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.db.query_one(sql, &[]).await.unwrap().get(0)
    }

    pub async fn events(&self) -> i64 {
        self.count("SELECT count(*) FROM events").await
    }

    pub async fn jobs(&self) -> i64 {
        self.count("SELECT count(*) FROM jobs").await
    }

    /// The exposition once the gauges read from Postgres have been refreshed after this call
    /// (they are refreshed in the background); after 5 s, whatever it shows.
    pub async fn metrics(&self) -> String {
        const REFRESHES: &str = "pimbridge_shared_metric_refreshes_total";
        let first = self.scrape().await;
        let start = metric_value(&first, REFRESHES, &[]);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.scrape().await;
            // Two more: one whole refresh began after this call.
            if metric_value(&text, REFRESHES, &[]) >= start + 2.0
                || std::time::Instant::now() > deadline
            {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One scrape of `/metrics` (on the internal listener), as it is.
    pub async fn scrape(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.internal_address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // A runtime cannot be dropped (blocking) inside the test's runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// An `X-Pimbridge-Signature` value for `body`, signed now with the test secret.
pub fn sign_now(body: &[u8]) -> String {
    crate::signing::sign_now_with(HMAC_SECRET, body)
}

/// An RFC 3339 timestamp `offset_secs` from now.
pub fn at(offset_secs: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::seconds(offset_secs))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// A valid activation event: it happened a minute ago and runs for eight hours.
pub fn activation(id: &str, group: &str, principal: &str) -> Value {
    json!({
        "id": id,
        "type": "activation",
        "occurredAt": at(-60),
        "groupId": group,
        "principalId": principal,
        "endsAt": at(8 * 3600),
        "user": {"userName": format!("{principal}@contoso.com"), "givenName": "Alice",
                 "familyName": "Liddell", "displayName": "Alice Liddell",
                 "email": format!("{principal}@contoso.com")},
        "group": {"displayName": "AWS-Admins"}
    })
}

/// A valid deactivation event: it happened now, after any `activation` made before it.
pub fn deactivation(id: &str, group: &str, principal: &str) -> Value {
    json!({
        "id": id,
        "type": "deactivation",
        "occurredAt": at(0),
        "groupId": group,
        "principalId": principal
    })
}

/// Reads a metric sample's value from an exposition, by name and label set.
pub fn metric_value(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `settings` with the admin API on behind `token`, without its per-client limit (tests call it
/// far faster than an operator would).
pub fn with_admin(mut settings: Settings, token: &str) -> Settings {
    settings.admin.token = Some(pimbridge::secret::SecretString::new(token));
    settings.admin.requests_per_second = 0;
    settings
}

/// An app on a fresh database with the test settings and the admin API behind `token`.
pub async fn spawn_admin_app(token: &str) -> TestApp {
    let url = PgServer::shared().fresh_database().await;
    spawn_app_with(with_admin(test_settings(&url), token), &url).await
}
