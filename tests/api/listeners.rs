//! The two listeners: the public one (`server.listen`) serves the inputs and the probes, the
//! internal one (`server.internal_listen`) the metrics and the admin API.

use crate::helpers::*;

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
