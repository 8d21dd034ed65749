//! Start-up order: migrations run before any worker queries, and database errors in logs say what
//! the server said.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pimbridge::startup::Application;
use pimbridge::store::StoreError;
use testkit::fixture::*;
use testkit::postgres::PgServer;

/// Log lines written by the app under test (its runtime's threads only).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A runtime whose every thread logs warnings and errors into `captured`, so that what the app
/// logs is seen without touching the test binary's global subscriber.
fn logging_runtime(captured: &Captured) -> tokio::runtime::Runtime {
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish();
    let dispatch = tracing::Dispatch::new(subscriber);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            // The guard would restore the previous default on drop; these threads keep it.
            std::mem::forget(tracing::dispatcher::set_default(&dispatch));
        })
        .build()
        .unwrap()
}

/// The app on a runtime of its own ([`logging_runtime`]), its warnings and errors in `captured`.
struct CapturedApp {
    captured: Captured,
    runtime: tokio::runtime::Runtime,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl CapturedApp {
    async fn start(settings: pimbridge::config::Settings) -> Self {
        let captured = Captured::default();
        let runtime = logging_runtime(&captured);
        let (built, shutdown) = tokio::sync::oneshot::channel();
        let task = runtime.spawn(async move {
            let application = Application::build(settings).await.unwrap();
            let _ = built.send(application.shutdown_token());
            application.run_until_stopped().await
        });
        let shutdown = shutdown.await.unwrap();
        Self {
            captured,
            runtime,
            shutdown,
            task,
        }
    }

    /// Stops the app; returns what it logged.
    async fn stop(self) -> String {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.runtime.shutdown_background();
        self.captured.text()
    }
}

#[tokio::test]
async fn workers_wait_for_migrations_and_the_initial_cycles_run_at_once() {
    let a = emulator().await;
    let b = emulator().await;
    let database_url = PgServer::shared().fresh_database().await;
    // Checks an hour apart: the initial cycles can only come from the first check, so it must
    // find the schema in place.
    let mut settings = cycle_settings(&database_url, &a, &b, |_| {});
    settings.sync.check_interval = Duration::from_secs(3600);
    let settings = settings.validated().unwrap();
    let app = CapturedApp::start(settings).await;

    let (db, connection) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let start = Instant::now();
    let finished = loop {
        let finished: i64 = db
            .query_one(
                "SELECT count(*) FROM cycles WHERE kind = 'initial' AND outcome = 'succeeded'",
                &[],
            )
            .await
            .map_or(0, |r| r.get(0));
        if finished == 2 || start.elapsed() > Duration::from_secs(15) {
            break finished;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let logs = app.stop().await;
    assert_eq!(
        finished, 2,
        "both initial cycles ran without waiting a check interval; logs:\n{logs}"
    );
    assert!(
        logs.trim().is_empty(),
        "nothing logged at warning or above during start-up:\n{logs}"
    );
}

#[tokio::test]
async fn a_database_error_names_the_servers_code_message_and_detail() {
    let database_url = PgServer::shared().fresh_database().await;
    let (db, connection) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);

    let missing = StoreError::from(
        db.query("SELECT * FROM no_such_table", &[])
            .await
            .unwrap_err(),
    );
    let text = missing.to_string();
    assert!(text.contains("42P01"), "{text}");
    assert!(
        text.contains("relation \"no_such_table\" does not exist"),
        "{text}"
    );

    db.batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let duplicate = db
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .unwrap_err();
    // Through any chain of wrappers, as workers log it.
    let wrapped = anyhow::Error::from(StoreError::from(duplicate)).context("cannot store");
    let chain = pimbridge::telemetry::error_chain(wrapped.as_ref());
    assert!(
        chain.starts_with("cannot store: database error: "),
        "{chain}"
    );
    for part in [
        "23505",
        "duplicate key",
        "detail: Key (id)=(1) already exists",
        "t_pkey",
    ] {
        assert!(chain.contains(part), "`{part}` in {chain}");
    }
    assert_eq!(
        chain.matches("duplicate key").count(),
        1,
        "said once: {chain}"
    );
}

#[tokio::test]
async fn after_migrations_the_pool_opens_its_first_connections_ahead_of_any_request() {
    let database_url = PgServer::shared().fresh_database().await;
    let mut settings = testkit::helpers::test_settings(&database_url);
    settings.database.max_connections = 16;
    let app = testkit::helpers::spawn_app_with(settings, &database_url).await;

    // No request has been made: the connections are there for the first burst.
    let backends = "SELECT count(*) FROM pg_stat_activity
                    WHERE datname = current_database() AND application_name = 'pimbridge'";
    let start = Instant::now();
    let mut open = app.count(backends).await;
    while open < pimbridge::store::WARM_CONNECTIONS as i64
        && start.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        open = app.count(backends).await;
    }
    assert!(
        open >= pimbridge::store::WARM_CONNECTIONS as i64,
        "{open} connections open"
    );
}

#[tokio::test]
async fn opening_connections_ahead_never_waits_for_connections_in_use() {
    let database_url = PgServer::shared().fresh_database().await;
    let pool = crate::helpers::pool_on(&database_url, 4);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(pool.get().await.unwrap());
    }

    // Every connection is busy: the warm-up gives up at once instead of queueing for them.
    let warmed = tokio::time::timeout(
        Duration::from_secs(1),
        pimbridge::store::warm(&pool, &pimbridge::startup::immediate_lane_statements()),
    )
    .await;
    assert!(warmed.is_ok(), "the warm-up waited for a busy pool");
    drop(held);
}

#[tokio::test]
async fn connections_opened_ahead_have_the_immediate_lanes_statements_prepared() {
    let database_url = PgServer::shared().fresh_database().await;
    let pool = crate::helpers::pool_on(&database_url, 4);
    crate::helpers::migrate_with_applications(&pool).await;
    let statements = pimbridge::startup::immediate_lane_statements();
    assert!(statements.len() >= 12, "{} statements", statements.len());

    pimbridge::store::warm(&pool, &statements).await;

    // Half the pool was opened ahead: each of those two connections has prepared every statement,
    // so the first activations it serves send none of them to be prepared.
    let (a, b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    for client in [&a, &b] {
        let prepared: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement = ANY($1)",
                &[&statements],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(prepared, statements.len() as i64);
    }
}

#[tokio::test]
async fn start_up_warns_when_commits_do_not_wait_for_the_disk() {
    let a = emulator().await;
    let b = emulator().await;
    let database_url = PgServer::shared().fresh_database().await;
    let database = database_url.rsplit_once('/').unwrap().1.to_owned();
    let (admin, connection) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{database}\" SET synchronous_commit = off"
        ))
        .await
        .unwrap();
    let settings = dispatch_settings(&database_url, &a, &b, |_| {})
        .validated()
        .unwrap();
    let app = CapturedApp::start(settings).await;

    let start = Instant::now();
    while !app.captured.text().contains("synchronous_commit is off") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no warning about synchronous_commit; logs:\n{}",
            app.captured.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}
