//! Outbound budgets across replicas: each replica's cycle pacer holds the application's budget
//! divided by the live replicas, divided again by the heartbeat as replicas come and go; the
//! immediate lane keeps its whole budget, bounded across replicas by admission
//! (docs/architecture.md, "Outbound budgets").

use std::time::{Duration, Instant};

use aws_scim_emulator::RunningEmulator;
use testkit::fixture::*;
use testkit::helpers::*;
use testkit::postgres::PgServer;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The immediate lane's budget of `alpha` in this test, across all replicas: low enough that
/// the pacers, not the dispatchers, set the pace.
const IMMEDIATE: (f64, f64) = (4.0, 4.0);
/// Activations in the test's one window.
const USERS: usize = 6;
/// The cycles lane's budget of `alpha`.
const CYCLES: (f64, f64) = (10.0, 4.0);

/// Live replicas, then `alpha`'s shares (rate, burst) of the immediate and the cycles lane.
type Shares = (f64, (f64, f64), (f64, f64));

/// What a replica's metrics say: live replicas, then `alpha`'s shares (rate, burst) of the
/// immediate and the cycles lane.
fn shares(exposition: &str) -> Shares {
    let share = |lane| {
        let labels = [("application", "alpha"), ("lane", lane)];
        (
            metric_value(
                exposition,
                "pimbridge_scim_rate_limit_requests_per_second",
                &labels,
            ),
            metric_value(exposition, "pimbridge_scim_rate_limit_burst", &labels),
        )
    };
    (
        metric_value(exposition, "pimbridge_live_replicas", &[]),
        share("immediate"),
        share("cycles"),
    )
}

/// The shares with `replicas` live: the cycles' budget divided (rate exactly, burst rounded
/// down), the immediate lane's whole.
fn divided(replicas: f64) -> Shares {
    let divide = |(rate, burst): (f64, f64)| (rate / replicas, (burst / replicas).floor());
    (replicas, IMMEDIATE, divide(CYCLES))
}

fn close(seen: Shares, want: Shares) -> bool {
    let near = |x: f64, y: f64| (x - y).abs() < 1e-6;
    near(seen.0, want.0)
        && near(seen.1 .0, want.1 .0)
        && near(seen.1 .1, want.1 .1)
        && near(seen.2 .0, want.2 .0)
        && near(seen.2 .1, want.2 .1)
}

/// Waits until `app` reports the shares of `replicas` live replicas; returns how long it took.
async fn wait_for_shares(app: &TestApp, replicas: f64, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let seen = shares(&app.scrape().await);
        if close(seen, divided(replicas)) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "after {limit:?}, {seen:?} instead of {:?}",
            divided(replicas)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Requests `emulator` logged and the time from the first to the last arrival.
fn span(emulator: &RunningEmulator) -> (usize, Duration) {
    let times: Vec<OffsetDateTime> = emulator
        .request_log()
        .iter()
        .map(|r| OffsetDateTime::parse(&r.at, &Rfc3339).unwrap())
        .collect();
    let first = times.iter().min().copied().unwrap();
    let last = times.iter().max().copied().unwrap();
    (times.len(), (last - first).try_into().unwrap())
}

/// SCIM requests (attempts) `app` sent to `alpha`, as its metrics count them.
async fn sent_to_alpha(app: &TestApp) -> f64 {
    let sent = metric_value(
        &app.scrape().await,
        "pimbridge_scim_requests_total",
        &[("application", "alpha")],
    );
    // None is an empty sum, -0.
    sent + 0.0
}

#[tokio::test]
async fn a_second_replica_halves_the_cycle_share_and_its_death_gives_it_back() {
    let a = emulator().await;
    let b = emulator().await;
    let database_url = PgServer::shared().fresh_database().await;
    let settings = dispatch_settings(&database_url, &a, &b, |app| {
        app.activation_limit = USERS as u32;
        app.immediate_requests_per_second = Some(IMMEDIATE.0 as u32);
        app.immediate_requests_burst = Some(IMMEDIATE.1 as u32);
        app.requests_per_second = CYCLES.0 as u32;
        app.requests_burst = CYCLES.1 as u32;
    });
    let first = spawn_app_with(settings.clone(), &database_url).await;
    wait_for_shares(&first, 1.0, Duration::from_secs(5)).await;

    // A second replica takes its half from its first beat; the first notices within a beat.
    let mut second = spawn_killable_app(settings, &database_url).await;
    let noticed = wait_for_shares(&first, 2.0, Duration::from_secs(5)).await;
    wait_for_shares(&second, 2.0, Duration::from_secs(5)).await;

    // Users new to AWS, taken by either replica or both: the immediate lane is not divided, so
    // they go out at the whole immediate pace, and admission bounds what both replicas send
    // together (a user new to AWS costs at most five requests: docs/architecture.md).
    let response = second
        .post_events(&activations("shared", GROUP_A, USERS))
        .await;
    assert_eq!(response.status(), 202);
    let done = eventually(Duration::from_secs(30), || members(&a) == USERS).await;
    assert!(done.is_some(), "{} of {USERS} in AWS", members(&a));
    wait_for_no_pending(&first, Duration::from_secs(5)).await;
    let (requests, took) = span(&a);
    let sent = [sent_to_alpha(&first).await, sent_to_alpha(&second).await];
    assert_eq!(sent[0] + sent[1], requests as f64);
    eprintln!(
        "two replicas: {} and {} requests in {took:?}",
        sent[0],
        sent[1].abs()
    );
    assert!(
        requests <= 5 * USERS,
        "{requests} requests for {USERS} users"
    );

    // The second dies: its lock goes with its sessions, and the first takes the whole budget.
    second.kill().await;
    let regained = wait_for_shares(&first, 1.0, Duration::from_secs(10)).await;
    eprintln!("the first replica saw the second after {noticed:?}, its death after {regained:?}");
}
