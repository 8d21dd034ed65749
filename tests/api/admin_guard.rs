//! The admin API's own guards: a per-client rate limit against token guessing, and a token
//! check that refuses near misses of every length.

use crate::helpers::*;
use crate::postgres::PgServer;

const TOKEN: &str = "admin-token-guard-0123456789";

/// An app whose admin API allows `per_second` requests per client (0: no limit), `burst` at once.
async fn spawn_admin(per_second: u32, burst: u32) -> TestApp {
    let url = PgServer::shared().fresh_database().await;
    let mut settings = with_admin(test_settings(&url), TOKEN);
    settings.admin.requests_per_second = per_second;
    settings.admin.requests_burst = burst;
    spawn_app_with(settings, &url).await
}

async fn list(app: &TestApp, token: &str) -> u16 {
    app.http
        .get(format!("{}/admin/applications", app.internal_address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn guessing_tokens_is_rate_limited_per_client() {
    let app = spawn_admin(1, 3).await;

    let mut statuses = Vec::new();
    for guess in ["a", "b", "c", "d", TOKEN] {
        statuses.push(list(&app, guess).await);
    }

    assert_eq!(
        statuses,
        vec![401, 401, 401, 429, 429],
        "even the right token waits"
    );
    let metrics = app.metrics().await;
    assert!(
        metric_value(
            &metrics,
            "pimbridge_inbound_rate_limited_total",
            &[("route", "/admin")]
        ) >= 2.0
    );
    // Intake has its own budget: the admin limit does not touch it.
    let response = app.post_events(&activation("guard-1", GROUP_A, "u1")).await;
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn only_the_exact_token_opens_the_admin_api() {
    let app = spawn_admin(0, 1).await;
    let prefix = &TOKEN[..TOKEN.len() - 1];
    let longer = format!("{TOKEN}0");
    let changed_last = format!("{prefix}X");

    for guess in ["", prefix, longer.as_str(), changed_last.as_str()] {
        assert_eq!(list(&app, guess).await, 401, "`{guess}`");
    }
    assert_eq!(list(&app, TOKEN).await, 200);
}
