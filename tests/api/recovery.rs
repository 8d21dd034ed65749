//! Crash recovery in seconds: a dead replica's leases are taken over through its heartbeat
//! (`replicas`), not after `dispatch.lease`.

use std::time::{Duration, Instant};

use aws_scim_emulator::Fault;
use testkit::fixture::*;
use testkit::helpers::*;
use testkit::postgres::PgServer;

/// Leases of a minute: anything faster than that comes from the heartbeat.
fn long_lease_settings(
    database_url: &str,
    a: &aws_scim_emulator::RunningEmulator,
    b: &aws_scim_emulator::RunningEmulator,
) -> pimbridge::config::Settings {
    let mut settings = dispatch_settings(database_url, a, b, |app| app.activation_limit = 20);
    settings.dispatch.lease = Duration::from_secs(60);
    settings
}

async fn wait_for_count(app: &TestApp, sql: &str, want: i64, limit: Duration) -> i64 {
    let start = Instant::now();
    loop {
        let n = app.count(sql).await;
        if n == want || start.elapsed() > limit {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn immediate_jobs_in_flight_at_a_kill_reach_aws_within_seconds_of_the_restart() {
    let a = emulator().await;
    let b = emulator().await;
    let database_url = PgServer::shared().fresh_database().await;
    let mut app =
        spawn_killable_app(long_lease_settings(&database_url, &a, &b), &database_url).await;
    // AWS answers nothing for a long while: the jobs are in flight when the replica dies.
    a.inject(Fault::latency(60_000));

    let response = app.post_events(&activations("crash", GROUP_A, 8)).await;
    assert_eq!(response.status(), 202);
    let running = wait_for_count(
        &app,
        "SELECT count(*) FROM jobs WHERE lane = 'immediate' AND state = 'running'",
        8,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(running, 8, "all eight claimed before the kill");
    // The emulator logs a request when it answers, so the requests themselves cannot be seen;
    // give the claimed jobs a moment to send theirs.
    tokio::time::sleep(Duration::from_millis(300)).await;

    app.kill().await;
    a.clear_faults();
    let restarted = Instant::now();
    app.start_again().await;

    let took = eventually(Duration::from_secs(15), || members(&a) == 8).await;
    assert!(
        took.is_some(),
        "all eight in AWS within 15 s of the restart; {} after {:?}",
        members(&a),
        restarted.elapsed()
    );
    let done = wait_for_count(
        &app,
        "SELECT count(*) FROM jobs WHERE state = 'done'",
        8,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(done, 8);
    eprintln!(
        "crash recovery: 8 jobs in AWS {:?} after the restart began",
        restarted.elapsed()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_live_replicas_leases_are_respected_and_a_clean_stop_frees_them() {
    let a = emulator().await;
    let b = emulator().await;
    let database_url = PgServer::shared().fresh_database().await;
    let toml = long_lease_settings(&database_url, &a, &b);
    let mut first = spawn_app_with(toml.clone(), &database_url).await;
    a.inject(Fault::latency(3_000).times(1));
    first
        .post_events(&activation("live-1", GROUP_A, "live-user"))
        .await;
    let running = wait_for_count(
        &first,
        "SELECT count(*) FROM jobs WHERE state = 'running'",
        1,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(running, 1);

    // A second replica starts while the first is alive and holds the lease.
    let second = spawn_app_with(toml, &database_url).await;
    let live = wait_for_count(
        &second,
        "SELECT live_replica_count(5)",
        2,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(live, 2, "both replicas are alive");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        second
            .count("SELECT count(*) FROM jobs WHERE attempts > 1")
            .await,
        0,
        "the live replica's lease is not taken over"
    );

    first.stop().await;
    assert_eq!(
        second.count("SELECT live_replica_count(5)").await,
        1,
        "a clean stop marks the replica dead"
    );
    wait_for_no_pending(&second, Duration::from_secs(10)).await;
    assert_eq!(members(&a), 1);
}
