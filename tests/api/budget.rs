//! Outbound budgets: the immediate lane spends a budget of its own, so a window of activations of
//! users new to AWS goes out at once however small the cycles' budget is.

use std::time::Duration;

use testkit::fixture::*;
use testkit::helpers::*;
use testkit::postgres::PgServer;

#[tokio::test]
async fn five_new_users_reach_aws_at_once_whatever_the_cycle_budget() {
    let a = emulator().await;
    let b = emulator().await;
    let database_url = PgServer::shared().fresh_database().await;
    // One request per second for cycles: the ~25 requests of five new users on a new group
    // would take 24 s on that budget.
    let settings = dispatch_settings(&database_url, &a, &b, |app| {
        app.requests_per_second = 1;
        app.requests_burst = 1;
    });
    let app = spawn_app_with(settings, &database_url).await;

    let response = app.post_events(&activations("burst", GROUP_A, 5)).await;
    assert_eq!(response.status(), 202);

    let took = eventually(Duration::from_secs(3), || members(&a) == 5).await;
    assert!(
        took.is_some(),
        "all five in AWS within 3 s; {} there, requests: {}",
        members(&a),
        a.request_log().len()
    );
    wait_for_no_pending(&app, Duration::from_secs(5)).await;
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE lane = 'immediate' AND state = 'done'")
            .await,
        5
    );
}

#[test]
fn the_immediate_budget_defaults_to_a_window_of_new_users_and_is_validated() {
    let base = test_settings_toml("postgres://u@localhost/db");
    let settings = pimbridge::config::Settings::from_toml_str(&base).unwrap();
    let alpha = &settings.applications["alpha"];
    assert_eq!(alpha.immediate_budget(), (3, 25), "5 × 5 per 10 s window");
    let custom = base.replacen(
        "scim_token = \"alpha-token\"",
        "scim_token = \"alpha-token\"\n        immediate_requests_per_second = 7\n        immediate_requests_burst = 30",
        1,
    );
    let settings = pimbridge::config::Settings::from_toml_str(&custom).unwrap();
    assert_eq!(settings.applications["alpha"].immediate_budget(), (7, 30));
    let zero = base.replacen(
        "scim_token = \"alpha-token\"",
        "scim_token = \"alpha-token\"\n        immediate_requests_burst = 0",
        1,
    );
    let error = pimbridge::config::Settings::from_toml_str(&zero)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("applications.alpha.immediate_requests_burst"),
        "{error}"
    );
}
