//! The deletion threshold (docs/correctness.md): a cycle that would remove more memberships than
//! `max_removals_per_cycle` removes none of them, is `held`, raises `pimbridge_cycle_held`, and
//! waits for an operator's confirmation; removals below the threshold are never held.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::fixture::*;
use crate::helpers::*;
use crate::postgres::PgServer;

const ADMIN_TOKEN: &str = "threshold-admin-token-0123456789";

/// The cycles fixture with `max_removals_per_cycle = 2` and the admin API on.
async fn spawn_with_threshold() -> Fixture {
    let a = emulator().await;
    let b = emulator().await;
    let database_url = PgServer::shared().fresh_database().await;
    let settings = with_admin(
        cycle_settings(&database_url, &a, &b, |app| app.max_removals_per_cycle = 2),
        ADMIN_TOKEN,
    );
    let app = spawn_app_with(settings, &database_url).await;
    wait_for_initial_cycles(&app).await;
    Fixture {
        app,
        a,
        b,
        database_url,
    }
}

/// The outcome and changes applied of the first cycle of `alpha` after `after` to finish.
async fn next_cycle(app: &TestApp, after: i64) -> (String, i32) {
    let start = Instant::now();
    loop {
        if let Some(row) = app
            .db
            .query_opt(
                "SELECT outcome, changes_applied FROM cycles
                 WHERE application = 'alpha' AND id > $1 AND outcome <> 'running'
                 ORDER BY id LIMIT 1",
                &[&after],
            )
            .await
            .unwrap()
        {
            return (row.get(0), row.get(1));
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no cycle ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn last_cycle(app: &TestApp) -> i64 {
    app.count("SELECT coalesce(max(id), 0) FROM cycles").await
}

async fn confirm(app: &TestApp, application: &str) -> (u16, Value) {
    let response = app
        .http
        .request(
            Method::POST,
            format!(
                "{}/admin/applications/{application}/removals/confirm",
                app.internal_address
            ),
        )
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Activates `principals` in GROUP_A and waits until the immediate lane has added them all.
async fn activate(f: &Fixture, principals: &[&str]) {
    for p in principals {
        f.app
            .post_events(&activation(&format!("{p}-on"), GROUP_A, p))
            .await;
    }
    wait_for_no_pending(&f.app, Duration::from_secs(10)).await;
    assert_eq!(members(&f.a), principals.len(), "all added at once");
}

async fn deactivate(f: &Fixture, principals: &[&str]) {
    for p in principals {
        f.app
            .post_events(&deactivation(&format!("{p}-off"), GROUP_A, p))
            .await;
    }
}

/// Waits (bounded) until the background refresh shows `pimbridge_cycle_held{alpha}` = `value`.
async fn held_gauge_becomes(app: &TestApp, value: f64) {
    let start = Instant::now();
    loop {
        let exposition = app.metrics().await;
        let now = metric_value(
            &exposition,
            "pimbridge_cycle_held",
            &[("application", "alpha")],
        );
        if now == value {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "pimbridge_cycle_held stayed {now}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_cycle_over_the_threshold_removes_nothing_until_an_operator_confirms() {
    let f = spawn_with_threshold().await;
    activate(&f, &["t1", "t2", "t3"]).await;

    // Three removals due, two allowed: the cycle holds them all.
    deactivate(&f, &["t1", "t2", "t3"]).await;
    let cycle = run_cycle(&f.app, "alpha").await;
    assert_eq!(cycle.outcome, "held");
    assert_eq!(members(&f.a), 3, "no membership was removed");
    let held = f
        .app
        .count("SELECT count(*) FROM provisioning_log WHERE status = 'held' AND action = 'remove'")
        .await;
    assert_eq!(held, 3, "each held removal is in the provisioning log");
    held_gauge_becomes(&f.app, 1.0).await;

    // A later cycle without a confirmation holds again: nothing is lost, nothing removed.
    let again = run_cycle(&f.app, "alpha").await;
    assert_eq!(again.outcome, "held");
    assert_eq!(members(&f.a), 3);

    // The operator confirms: the cycle it starts removes them.
    let before = last_cycle(&f.app).await;
    let (status, body) = confirm(&f.app, "alpha").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["removalsConfirmed"], 3);
    assert_eq!(next_cycle(&f.app, before).await, ("succeeded".into(), 3));
    assert_eq!(members(&f.a), 0);
    held_gauge_becomes(&f.app, 0.0).await;

    // The confirmation was used up: there is nothing held to confirm now.
    let (status, body) = confirm(&f.app, "alpha").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "nothing_held");
}

#[tokio::test]
async fn removals_within_the_threshold_are_never_held() {
    let f = spawn_with_threshold().await;
    activate(&f, &["w1", "w2", "w3"]).await;

    deactivate(&f, &["w1", "w2"]).await;
    let cycle = run_cycle(&f.app, "alpha").await;

    assert_eq!(cycle.outcome, "succeeded");
    assert_eq!(members(&f.a), 1, "two removed, the active grant stays");
    held_gauge_becomes(&f.app, 0.0).await;
}

#[tokio::test]
async fn a_confirmation_covers_only_what_was_held() {
    let f = spawn_with_threshold().await;
    activate(&f, &["c1", "c2", "c3", "c4", "c5"]).await;
    deactivate(&f, &["c1", "c2", "c3"]).await;
    assert_eq!(run_cycle(&f.app, "alpha").await.outcome, "held");

    // More removals became due after the held cycle: the operator did not see these.
    deactivate(&f, &["c4", "c5"]).await;
    let before = last_cycle(&f.app).await;
    let (status, _) = confirm(&f.app, "alpha").await;
    assert_eq!(status, 202);

    assert_eq!(next_cycle(&f.app, before).await.0, "held");
    assert_eq!(members(&f.a), 5);
}
