//! Probes and metrics exposition.

use crate::helpers::*;
use crate::postgres::PgServer;

#[tokio::test]
async fn readiness_follows_the_database_down_and_back_without_a_restart() {
    // Arrange: a Postgres server of this test's own, so that it can be stopped.
    let server = PgServer::private();
    let url = server.fresh_database().await;
    let app = spawn_app_with(test_settings(&url), &url).await;
    let ready = || async {
        app.http
            .get(format!("{}/health/ready", app.address))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(ready().await, 200);

    // Act: the database goes away.
    server.stop();

    // Assert: not ready, but alive; intake answers 503, not 500.
    assert_eq!(ready().await, 503);
    let live = app
        .http
        .get(format!("{}/health/live", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let response = app.post_events(&activation("pg-1", GROUP_A, "u1")).await;
    assert_eq!(response.status(), 503);

    // The database comes back: ready again, and intake works, with no restart.
    server.start();
    let mut status = 0;
    for _ in 0..100 {
        status = ready().await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    let mut accepted = 0;
    for attempt in 0..20 {
        let response = app
            .post_events(&activation(&format!("pg-2-{attempt}"), GROUP_A, "u1"))
            .await;
        if response.status() == 202 {
            accepted = 1;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(accepted, 1, "intake recovers once the database is back");
}

#[tokio::test]
async fn readiness_waits_for_a_database_that_is_down_at_start_up() {
    let server = PgServer::private();
    let url = server.fresh_database().await;
    server.stop();
    let settings = pimbridge::config::Settings::from_toml_str(&test_settings(&url)).unwrap();
    let application = pimbridge::startup::Application::build(settings)
        .await
        .unwrap();
    let address = format!("http://127.0.0.1:{}", application.port());
    let token = application.shutdown_token();
    let task = tokio::spawn(application.run_until_stopped());
    let http = reqwest::Client::new();

    let status = http
        .get(format!("{address}/health/ready"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 503);

    server.start();
    let mut status = 0;
    for _ in 0..150 {
        status = http
            .get(format!("{address}/health/ready"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "migrations ran once the database came up");
    token.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn metrics_expose_event_counters_and_process_metrics() {
    let app = spawn_app().await;
    app.post_events(&activation("m-1", GROUP_A, "u1")).await;
    app.post_events_raw(b"{".to_vec(), "application/json").await;

    let metrics = app.metrics().await;

    assert_eq!(
        metric_value(
            &metrics,
            "pimbridge_events_received_total",
            &[
                ("source", "api"),
                ("type", "activation"),
                ("outcome", "accepted")
            ]
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "pimbridge_events_received_total",
            &[("outcome", "rejected")]
        ),
        1.0
    );
    assert!(
        metrics.contains("process_resident_memory_bytes"),
        "process metrics are exported"
    );
    assert!(metrics.contains("pimbridge_queue_depth{application=\"alpha\""));
}
