//! What the platform team's dashboards and alerts read: build info, HTTP request metrics by
//! route pattern, and failed jobs — all through real HTTP against a test app.

use crate::helpers::*;

const TOKEN: &str = "observability-admin-token-0123456789";

async fn spawn_with_admin() -> TestApp {
    spawn_admin_app(TOKEN).await
}

#[tokio::test]
async fn build_info_names_the_version_and_a_revision() {
    let app = spawn_app().await;

    let text = app.scrape().await;

    let line = text
        .lines()
        .find(|l| l.starts_with("pimbridge_build_info{"))
        .expect("pimbridge_build_info is exported");
    assert!(
        line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    assert!(line.ends_with(" 1"), "{line}");
    let revision = line
        .split("revision=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default();
    assert!(!revision.is_empty(), "{line}");
    assert_eq!(revision, pimbridge::metrics::REVISION);
}

#[tokio::test]
async fn http_requests_are_counted_by_route_pattern_never_by_path() {
    let app = spawn_with_admin().await;

    assert_eq!(
        app.post_events(&activation("o-1", GROUP_A, "u-o1"))
            .await
            .status(),
        202
    );
    for name in ["alpha", "no-such-application-4711"] {
        app.http
            .get(format!(
                "{}/admin/applications/{name}",
                app.internal_address
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
    }
    let stray = app
        .http
        .get(format!("{}/wp-login-8d7e6f.php", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(stray.status(), 404);

    // (A scrape within 100 ms of another reuses its rendering.)
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let text = app.scrape().await;
    let requests =
        |labels: &[(&str, &str)]| metric_value(&text, "pimbridge_http_requests_total", labels);
    assert_eq!(
        requests(&[
            ("listener", "public"),
            ("route", "/v1/events"),
            ("method", "POST"),
            ("status", "202"),
        ]),
        1.0
    );
    assert_eq!(
        requests(&[
            ("listener", "internal"),
            ("route", "/admin/applications/{name}"),
            ("method", "GET"),
            ("status", "200"),
        ]),
        1.0
    );
    assert_eq!(
        requests(&[
            ("listener", "internal"),
            ("route", "/admin/applications/{name}"),
            ("status", "404"),
        ]),
        1.0
    );
    assert_eq!(
        requests(&[
            ("listener", "public"),
            ("route", "unmatched"),
            ("method", "GET"),
            ("status", "404"),
        ]),
        1.0
    );
    assert!(
        metric_value(
            &text,
            "pimbridge_http_request_duration_seconds_count",
            &[("listener", "public"), ("route", "/v1/events")]
        ) >= 1.0
    );
    for raw in [
        "no-such-application-4711",
        "wp-login",
        "/admin/applications/alpha\"",
    ] {
        assert!(!text.contains(raw), "the raw path {raw} became a label");
    }
}

#[tokio::test]
async fn failed_jobs_are_a_gauge_refreshed_in_the_background() {
    let app = spawn_app().await;
    for (id, group) in [("f-1", GROUP_A), ("f-2", GROUP_A), ("f-3", GROUP_B)] {
        assert_eq!(
            app.post_events(&activation(id, group, id)).await.status(),
            202
        );
    }
    let before = app.metrics().await;
    assert_eq!(
        metric_value(
            &before,
            "pimbridge_jobs_failed",
            &[("application", "alpha")]
        ),
        0.0
    );
    assert!(before.contains("pimbridge_jobs_failed{application=\"beta\"} 0"));

    app.db
        .execute(
            "UPDATE jobs SET state = 'failed', last_error = 'test'
             WHERE application = 'alpha'",
            &[],
        )
        .await
        .unwrap();

    let after = app.metrics().await;
    assert_eq!(
        metric_value(&after, "pimbridge_jobs_failed", &[("application", "alpha")]),
        2.0
    );
    assert_eq!(
        metric_value(&after, "pimbridge_jobs_failed", &[("application", "beta")]),
        0.0
    );
}
