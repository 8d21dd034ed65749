//! The two listeners: the public one (`server.listen`) serves the inputs and the probes, the
//! internal one (`server.internal_listen`) the metrics and the admin API.

use std::time::Duration;

use crate::helpers::*;
use crate::postgres::PgServer;

const TOKEN: &str = "listeners-admin-token-0123456789";

async fn spawn_with_admin() -> TestApp {
    spawn_admin_app(TOKEN).await
}

async fn status_of(app: &TestApp, base: &str, path: &str) -> u16 {
    app.http
        .get(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn admin_and_metrics_answer_only_on_the_internal_listener() {
    let app = spawn_with_admin().await;
    assert_ne!(app.address, app.internal_address);

    for path in ["/metrics", "/admin/applications", "/admin/jobs"] {
        assert_eq!(
            status_of(&app, &app.address, path).await,
            404,
            "{path} on the public listener"
        );
        assert_eq!(
            status_of(&app, &app.internal_address, path).await,
            200,
            "{path} on the internal listener"
        );
    }
    let text = app.scrape().await;
    assert!(text.contains("pimbridge_events_received_total") || text.contains("# HELP"));
}

#[tokio::test]
async fn the_inputs_answer_only_on_the_public_listener_and_health_on_both() {
    let app = spawn_with_admin().await;

    let accepted = app.post_events(&activation("l-1", GROUP_A, "u-l1")).await;
    assert_eq!(accepted.status(), 202);
    let body = activation("l-2", GROUP_A, "u-l2").to_string().into_bytes();
    let internal = app
        .http
        .post(format!("{}/v1/events", app.internal_address))
        .header("content-type", "application/json")
        .header(pimbridge::auth::hmac::SIGNATURE_HEADER, sign_now(&body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        internal.status(),
        404,
        "/v1/events on the internal listener"
    );
    for base in [&app.address, &app.internal_address] {
        assert_eq!(status_of(&app, base, "/health/live").await, 200);
        assert_eq!(status_of(&app, base, "/health/ready").await, 200);
    }
}

#[tokio::test]
async fn the_internal_listener_runs_at_the_lowest_cpu_priority() {
    // The internal listener's worker lowers its own thread's priority when it starts, so that a
    // flood of scrapes cannot take the CPU intake needs (docs/security.md, "A flood").
    let app = spawn_with_admin().await;
    let status = status_of(&app, &app.internal_address, "/metrics").await;
    assert_eq!(status, 200, "the internal worker has started");

    // Field 19 of /proc/<pid>/task/<tid>/stat is the thread's nice value.
    let lowered = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
        .filter_map(|stat| {
            let after_name = &stat[stat.rfind(')')? + 2..];
            after_name.split(' ').nth(16).map(str::to_owned)
        })
        .filter(|nice| nice == "19")
        .count();
    assert!(lowered >= 1, "a thread runs at nice 19");
}

/// A connection to `address` that has had one request answered and is kept alive, with the
/// request, to send again.
async fn a_kept_alive_connection(address: &str) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = address.trim_start_matches("http://");
    let request = format!("GET /health/live HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let mut answer = [0u8; 1024];
    stream.write_all(request.as_bytes()).await.unwrap();
    let n = stream.read(&mut answer).await.unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "the first request is answered"
    );
    (stream, request)
}

/// Whether a connection to `address` that served one request and then stayed idle for `idle`
/// still serves the next.
async fn open_after_idle(address: &str, idle: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut stream, request) = a_kept_alive_connection(address).await;
    let mut answer = [0u8; 1024];
    tokio::time::sleep(idle).await;
    // Closed by the server, the write may still succeed; the read then finds the end or a reset.
    let _ = stream.write_all(request.as_bytes()).await;
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await,
        Ok(Ok(n)) if answer[..n].starts_with(b"HTTP/1.1 200")
    )
}

#[tokio::test]
async fn the_public_listener_keeps_an_idle_connection_for_server_keep_alive() {
    let spawn = |keep_alive: Duration| async move {
        let url = PgServer::shared().fresh_database().await;
        let mut settings = test_settings(&url);
        settings.server.keep_alive = keep_alive;
        spawn_app_with(settings, &url).await
    };
    // Around the 5 s a server gets when the setting is not applied (actix-web's default).
    let (short, long) = tokio::join!(spawn(Duration::from_secs(1)), spawn(Duration::from_secs(8)));
    let idle = Duration::from_millis(2500);
    let (after_short, after_long) = tokio::join!(
        open_after_idle(&short.address, idle),
        open_after_idle(&long.address, idle)
    );
    assert!(!after_short, "closed after 2.5 s idle with keep_alive = 1s");
    assert!(
        after_long,
        "still open after 2.5 s idle with keep_alive = 8s"
    );
}

#[tokio::test]
async fn an_idle_kept_alive_connection_does_not_hold_up_shutdown() {
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.server.keep_alive = Duration::from_secs(60);
    settings.server.shutdown_timeout = Duration::from_secs(30);
    let mut app = spawn_app_with(settings, &url).await;
    let (stream, _) = a_kept_alive_connection(&app.address).await;

    // With the connection still open and idle: a pod stopping behind a proxy that keeps its
    // upstream connections must not wait out `shutdown_timeout` for them.
    let started = std::time::Instant::now();
    app.stop().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
    drop(stream);
}
