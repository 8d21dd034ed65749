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
    let settings = test_settings(&url);
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

#[tokio::test]
async fn readiness_stays_200_while_500_requests_hold_the_request_pool() {
    // Arrange: a request pool of two connections, so that a burst queues for it.
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.database.max_connections = 2;
    let app = spawn_app_with(settings, &url).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();

    // Act: 500 signed requests at once, and readiness probes while they are in flight.
    let burst: Vec<_> = (0..500)
        .map(|i| {
            let http = http.clone();
            let address = app.address.clone();
            tokio::spawn(async move {
                let body = activation(&format!("burst-{i}"), GROUP_A, &format!("u{i}"))
                    .to_string()
                    .into_bytes();
                http.post(format!("{address}/v1/events"))
                    .header("content-type", "application/json")
                    .header(pimbridge::auth::hmac::SIGNATURE_HEADER, sign_now(&body))
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    let mut probes = Vec::new();
    while probes.len() < 200 && !burst.iter().all(|task| task.is_finished()) {
        let started = std::time::Instant::now();
        let status = app
            .http
            .get(format!("{}/health/ready", app.address))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        probes.push((status, started.elapsed()));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut answered = 0;
    for task in burst {
        if task.await.unwrap().is_ok() {
            answered += 1;
        }
    }

    // Assert: every probe during the burst said ready, and answered promptly.
    assert!(
        probes.len() >= 3,
        "probes ran during the burst: {}",
        probes.len()
    );
    assert!(
        probes.iter().all(|(status, _)| *status == 200),
        "{:?}",
        probes.iter().filter(|(s, _)| *s != 200).collect::<Vec<_>>()
    );
    assert_eq!(answered, 500);
}

#[tokio::test]
async fn a_scrape_runs_no_query_the_gauges_are_refreshed_in_the_background() {
    let app = spawn_app().await;
    app.post_events(&activation("gauge-1", GROUP_A, "u1")).await;
    let metrics = app.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "pimbridge_queue_depth",
            &[("application", "alpha"), ("lane", "immediate")]
        ),
        1.0,
        "the refreshed gauge shows the waiting job"
    );
    // The job waits (no dispatcher here): its age is what the stuck-lane alert reads.
    let oldest = |m: &str, lane: &str| {
        metric_value(
            m,
            "pimbridge_queue_oldest_age_seconds",
            &[("application", "alpha"), ("lane", lane)],
        )
    };
    let first = oldest(&metrics, "immediate");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let later = oldest(&app.metrics().await, "immediate");
    assert!(first >= 0.0 && later > first, "{first} then {later}");
    assert_eq!(oldest(&metrics, "deferred"), 0.0, "nothing waits there");
}

#[tokio::test]
async fn a_scrape_reads_memory_only_not_the_database() {
    // Arrange: gauges refreshed once after start-up, then not for an hour.
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.server.metrics_refresh_interval = std::time::Duration::from_secs(3600);
    let app = spawn_app_with(settings, &url).await;
    let refreshes = |text: &str| metric_value(text, "pimbridge_shared_metric_refreshes_total", &[]);
    let mut first = app.scrape().await;
    for _ in 0..100 {
        if refreshes(&first) >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        first = app.scrape().await;
    }
    assert_eq!(
        refreshes(&first),
        1.0,
        "one refresh once the schema is in place"
    );

    // Act: a job starts waiting, then a flood of scrapes.
    app.post_events(&activation("stale-1", GROUP_A, "u1")).await;
    let mut last = String::new();
    for _ in 0..100 {
        last = app.scrape().await;
    }

    // Assert: no scrape looked at the database: the gauge still shows the last refresh.
    let depth = |text: &str| {
        metric_value(
            text,
            "pimbridge_queue_depth",
            &[("application", "alpha"), ("lane", "immediate")],
        )
    };
    assert_eq!(depth(&last), 0.0);
    assert_eq!(refreshes(&last), 1.0);
    assert_eq!(app.jobs().await, 1, "the job is there to be counted");
}
