//! Test fixtures shared by the provisioning tests: the app with the dispatcher (and optionally
//! sync cycles) on, in front of two AWS SCIM emulators.

use std::time::{Duration, Instant};

use aws_scim_emulator::{EmulatorSettings, RunningEmulator, DEFAULT_TOKEN};
use pimbridge::config::{ApplicationSettings, Settings};
use pimbridge::secret::SecretString;
use serde_json::Value;

use crate::helpers::*;
use crate::postgres::PgServer;

pub use crate::graph::GraphEmulatorClient;

/// Name of the AWS group the test activations carry.
pub const AWS_GROUP: &str = "AWS-Admins";

pub async fn emulator() -> RunningEmulator {
    RunningEmulator::start(
        EmulatorSettings::default(),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    )
    .await
    .unwrap()
}

/// Test settings with `alpha` → `a` and `beta` → `b`, the dispatcher on, and `tweak` applied
/// to each application.
pub fn dispatch_settings(
    database_url: &str,
    a: &RunningEmulator,
    b: &RunningEmulator,
    tweak: impl Fn(&mut ApplicationSettings),
) -> Settings {
    let mut settings = test_settings(database_url);
    settings.dispatch.enabled = true;
    settings.dispatch.poll_interval = Duration::from_secs(1);
    settings.dispatch.lease = Duration::from_secs(2);
    settings.dispatch.max_attempts = 4;
    for (name, emulator) in [("alpha", a), ("beta", b)] {
        let app = settings
            .applications
            .get_mut(name)
            .expect("the test applications");
        app.scim_url = emulator.scim_base_url();
        app.scim_token = Some(SecretString::new(DEFAULT_TOKEN));
        app.requests_per_second = 200;
        app.requests_burst = 50;
        tweak(app);
    }
    settings
}

pub struct Fixture {
    pub app: TestApp,
    pub a: RunningEmulator,
    pub b: RunningEmulator,
    pub database_url: String,
}

pub async fn spawn_with_emulators(tweak: impl Fn(&mut ApplicationSettings)) -> Fixture {
    let a = emulator().await;
    let b = emulator().await;
    let database_url = PgServer::shared().fresh_database().await;
    let app = spawn_app_with(
        dispatch_settings(&database_url, &a, &b, tweak),
        &database_url,
    )
    .await;
    Fixture {
        app,
        a,
        b,
        database_url,
    }
}

pub fn members(emulator: &RunningEmulator) -> usize {
    emulator
        .group_members_by_name(AWS_GROUP)
        .map_or(0, |m| m.len())
}

pub fn patches(emulator: &RunningEmulator) -> usize {
    emulator
        .request_log()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/Groups/") && r.status == 204)
        .count()
}

/// Waits until `check` holds, up to `limit`; returns the time it took.
pub async fn eventually(limit: Duration, check: impl Fn() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    check().then(|| start.elapsed())
}

pub async fn wait_for_no_pending(app: &TestApp, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if app
            .count("SELECT count(*) FROM jobs WHERE lane = 'immediate' AND state IN ('pending', 'running')")
            .await
            == 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left: Vec<String> = app
        .db
        .query(
            "SELECT format('job %s: %s, attempt %s, lease %s until %s, next at %s, last error %s',
                           id, state, attempts, lease_owner, lease_expires_at, next_attempt_at,
                           last_error)
             FROM jobs WHERE lane = 'immediate' AND state IN ('pending', 'running')",
            &[],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default();
    panic!("immediate jobs still pending after {limit:?}: {left:#?}");
}

/// Starts a replica with a dispatcher on `database_url` and waits (up to `within`) until the one
/// immediate job left there is applied: one membership in `a`, from one PATCH. Returns the replica.
pub async fn dispatching_replica_applies_it_once(
    database_url: &str,
    a: &RunningEmulator,
    b: &RunningEmulator,
    within: Duration,
) -> TestApp {
    let app = spawn_app_with(dispatch_settings(database_url, a, b, |_| {}), database_url).await;
    wait_for_no_pending(&app, within).await;
    assert_eq!(members(a), 1);
    assert_eq!(patches(a), 1);
    app
}

pub fn activations(prefix: &str, group: &str, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                activation(
                    &format!("{prefix}-{i}"),
                    group,
                    &format!("{prefix}-user-{i}"),
                )
            })
            .collect(),
    )
}

/// Like [`spawn_with_emulators`], with sync cycles on: replicas look for due cycles every 20 ms,
/// and cycles after the initial one run only when a test asks ([`run_cycle`]).
pub async fn spawn_with_cycles(tweak: impl Fn(&mut ApplicationSettings)) -> Fixture {
    let a = emulator().await;
    let b = emulator().await;
    let database_url = PgServer::shared().fresh_database().await;
    let app = spawn_app_with(cycle_settings(&database_url, &a, &b, tweak), &database_url).await;
    wait_for_initial_cycles(&app).await;
    Fixture {
        app,
        a,
        b,
        database_url,
    }
}

/// Settings of [`spawn_with_cycles`], for more replicas on the same database: cycles every
/// hour per application (so that only the initial ones run unasked), looked for every 20 ms.
pub fn cycle_settings(
    database_url: &str,
    a: &RunningEmulator,
    b: &RunningEmulator,
    tweak: impl Fn(&mut ApplicationSettings),
) -> Settings {
    let mut settings = dispatch_settings(database_url, a, b, |app| {
        app.cycle_interval = Duration::from_secs(3600);
        tweak(app);
    });
    settings.sync.enabled = true;
    settings.sync.check_interval = Duration::from_millis(20);
    settings.sync.max_attempts = 3;
    settings
}

/// Waits until both applications' initial cycles have finished.
pub async fn wait_for_initial_cycles(app: &TestApp) {
    let start = Instant::now();
    while app
        .count("SELECT count(*) FROM cycles WHERE outcome <> 'running'")
        .await
        < 2
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no initial cycles"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A finished cycle as the `cycles` table records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleRow {
    pub id: i64,
    pub kind: String,
    pub outcome: String,
    pub planned: i32,
    pub applied: i32,
    pub skipped: i32,
    pub failed: i32,
    pub retrying: i32,
}

/// Makes `application`'s cycle due now and waits until a new cycle has finished.
pub async fn run_cycle(app: &TestApp, application: &str) -> CycleRow {
    let before: i64 = app
        .db
        .query_one(
            "SELECT coalesce(max(id), 0) FROM cycles WHERE application = $1",
            &[&application],
        )
        .await
        .unwrap()
        .get(0);
    app.db
        .execute(
            "UPDATE applications SET next_cycle_at = now() WHERE name = $1",
            &[&application],
        )
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let row = app
            .db
            .query_opt(
                "SELECT id, kind, outcome, changes_planned, changes_applied, changes_skipped,
                        changes_failed, changes_retrying
                 FROM cycles WHERE application = $1 AND id > $2 AND outcome <> 'running'
                 ORDER BY id LIMIT 1",
                &[&application, &before],
            )
            .await
            .unwrap();
        if let Some(r) = row {
            return CycleRow {
                id: r.get(0),
                kind: r.get(1),
                outcome: r.get(2),
                planned: r.get(3),
                applied: r.get(4),
                skipped: r.get(5),
                failed: r.get(6),
                retrying: r.get(7),
            };
        }
        // A safety net, not a measure: a cycle against an outage waits out its retries (about
        // 18 s in `quarantine::an_outage_does_not_quarantine`), longer on a loaded machine.
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the cycle did not finish"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Lets `secs` seconds pass for every grant: their start, end, newest activation and early end
/// move that far into the past, as if the time had gone by. Exact where a sleep would race a
/// loaded machine (a grant due to end "in one second" has ended, whatever the scheduler did).
pub async fn age_grants(app: &TestApp, secs: f64) {
    app.db
        .execute(
            "UPDATE grants SET started_at = started_at - make_interval(secs => $1),
                 ends_at = ends_at - make_interval(secs => $1),
                 activated_at = activated_at - make_interval(secs => $1),
                 ended_at = ended_at - make_interval(secs => $1)",
            &[&secs],
        )
        .await
        .unwrap();
}
