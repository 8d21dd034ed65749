//! Per-client rate limiting of the intake routes.

use serde_json::Value;

use crate::helpers::*;
use crate::postgres::PgServer;

async fn spawn_limited(extra: &str) -> TestApp {
    let url = PgServer::shared().fresh_database().await;
    let toml = test_settings(&url).replace(
        "requests_per_second = 0",
        &format!("requests_per_second = 1\n        requests_burst = 3\n        {extra}"),
    );
    spawn_app_with(toml, &url).await
}

async fn post_as(app: &TestApp, id: &str, client: Option<&str>) -> reqwest::Response {
    let body = activation(id, GROUP_A, id).to_string().into_bytes();
    let mut request = app
        .http
        .post(format!("{}/v1/events", app.address))
        .header("content-type", "application/json")
        .header(pimbridge::auth::hmac::SIGNATURE_HEADER, sign_now(&body));
    if let Some(client) = client {
        request = request.header("x-forwarded-for", client);
    }
    request.body(body).send().await.unwrap()
}

#[tokio::test]
async fn a_client_over_its_limit_gets_429_and_nothing_is_stored() {
    let app = spawn_limited("").await;

    let mut statuses = Vec::new();
    let mut refused = None;
    for i in 0..5 {
        let response = post_as(&app, &format!("lim-{i}"), None).await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 && refused.is_none() {
            let retry_after = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .to_owned();
            refused = Some((retry_after, response.json::<Value>().await.unwrap()));
        }
    }

    assert_eq!(&statuses[..3], &[202, 202, 202], "the burst goes through");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    let (retry_after, body) = refused.unwrap();
    assert!(retry_after.parse::<u64>().unwrap() >= 1);
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(app.events().await, 3, "refused requests store nothing");
    let health = app
        .http
        .get(format!("{}/health/ready", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "health is not limited");
    let metrics = app.metrics().await;
    assert!(
        metric_value(
            &metrics,
            "pimbridge_inbound_rate_limited_total",
            &[("route", "/v1/events")]
        ) >= 2.0
    );
}

#[tokio::test]
async fn behind_a_proxy_each_client_has_its_own_limit() {
    let app = spawn_limited("client_ip_header = \"X-Forwarded-For\"").await;

    for i in 0..3 {
        post_as(&app, &format!("a-{i}"), Some("198.51.100.7, 192.0.2.10")).await;
    }
    let a = post_as(&app, "a-3", Some("198.51.100.7, 192.0.2.10")).await;
    let b = post_as(&app, "b-0", Some("198.51.100.7, 192.0.2.11")).await;

    assert_eq!(
        a.status(),
        429,
        "the last address (added by our proxy) is the client"
    );
    assert_eq!(b.status(), 202);
}
