//! Per-client rate limiting of the intake routes.

use serde_json::Value;

use crate::helpers::*;
use crate::postgres::PgServer;

/// An app that lets each client send one request per second, three at once, behind the
/// reverse proxies `trusted` (which write `proxy_header`).
async fn spawn_limited(trusted: &[&str], proxy_header: &str) -> TestApp {
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.intake.requests_per_second = 1;
    settings.intake.requests_burst = 3;
    settings.intake.trusted_proxies = trusted.iter().map(|p| (*p).to_owned()).collect();
    settings.intake.proxy_header = proxy_header.to_owned();
    spawn_app_with(settings, &url).await
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
    let app = spawn_limited(&[], "X-Forwarded-For").await;

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

/// Posts one event with the given forwarding header lines.
async fn post_forwarded(app: &TestApp, id: &str, lines: &[(&str, &str)]) -> u16 {
    let body = activation(id, GROUP_A, id).to_string().into_bytes();
    let mut request = app
        .http
        .post(format!("{}/v1/events", app.address))
        .header("content-type", "application/json")
        .header(pimbridge::auth::hmac::SIGNATURE_HEADER, sign_now(&body));
    for (name, value) in lines {
        request = request.header(*name, *value);
    }
    request.body(body).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_random_x_forwarded_for_from_an_untrusted_peer_does_not_evade_the_limit() {
    // No proxy is trusted: the header is the client's own word and is ignored.
    let app = spawn_limited(&["10.0.0.0/8"], "X-Forwarded-For").await;

    let mut statuses = Vec::new();
    for i in 0..5 {
        let spoofed = format!("203.0.113.{}", 10 + i);
        statuses.push(
            post_forwarded(
                &app,
                &format!("spoof-{i}"),
                &[("x-forwarded-for", &spoofed)],
            )
            .await,
        );
    }

    assert_eq!(statuses, vec![202, 202, 202, 429, 429]);
}

#[tokio::test]
async fn behind_a_trusted_proxy_a_forged_first_line_does_not_choose_the_client() {
    // The test client is the proxy (127.0.0.1); 192.0.2.0/24 are proxies further in.
    let app = spawn_limited(&["127.0.0.1/32", "192.0.2.0/24"], "X-Forwarded-For").await;

    let mut statuses = Vec::new();
    for i in 0..4 {
        // The client forges a new first line each time; the proxies append the address they saw.
        let forged = format!("203.0.113.{i}");
        statuses.push(
            post_forwarded(
                &app,
                &format!("fwd-a-{i}"),
                &[
                    ("x-forwarded-for", &forged),
                    ("x-forwarded-for", "198.51.100.7:51515, 192.0.2.10"),
                ],
            )
            .await,
        );
    }
    let other = post_forwarded(
        &app,
        "fwd-b-0",
        &[("x-forwarded-for", "203.0.113.0, 198.51.100.8, 192.0.2.10")],
    )
    .await;

    assert_eq!(
        statuses,
        vec![202, 202, 202, 429],
        "limited per real client"
    );
    assert_eq!(
        other, 202,
        "a client with a port-less address has its own bucket"
    );
}

#[tokio::test]
async fn addresses_with_ports_are_not_collapsed_into_the_proxys_bucket() {
    let app = spawn_limited(&["127.0.0.1/32"], "X-Forwarded-For").await;

    // One client uses its burst; on another port it is still the same client.
    for i in 0..3 {
        let status = post_forwarded(
            &app,
            &format!("port-1-{i}"),
            &[("x-forwarded-for", "198.51.100.1:1111")],
        )
        .await;
        assert_eq!(status, 202);
    }
    let again = post_forwarded(
        &app,
        "port-1-again",
        &[("x-forwarded-for", "198.51.100.1:3333")],
    )
    .await;
    assert_eq!(
        again, 429,
        "the same client on another port is the same client"
    );

    // Other clients behind the same proxy, also with ports, are not in that bucket.
    let mut statuses = Vec::new();
    for client in ["198.51.100.2:2222", "[2001:db8::5]:4711"] {
        for i in 0..3 {
            statuses.push(
                post_forwarded(
                    &app,
                    &format!("port-{client}-{i}"),
                    &[("x-forwarded-for", client)],
                )
                .await,
            );
        }
    }
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
}

#[tokio::test]
async fn the_forwarded_header_is_read_when_configured() {
    let app = spawn_limited(&["127.0.0.1/32"], "Forwarded").await;

    let mut statuses = Vec::new();
    for i in 0..4 {
        statuses.push(
            post_forwarded(
                &app,
                &format!("fwd-{i}"),
                &[
                    ("forwarded", r#"for="[2001:db8:cafe::17]:4711";proto=https"#),
                    // Not the configured header: a client could have written it.
                    ("x-forwarded-for", &format!("203.0.113.{i}")),
                ],
            )
            .await,
        );
    }

    assert_eq!(statuses, vec![202, 202, 202, 429]);
}

#[test]
fn the_old_client_ip_header_key_is_refused_naming_its_replacement() {
    let url = "postgres://postgres@127.0.0.1:1/x";
    let toml = format!(
        "{}\n[intake]\nclient_ip_header = \"X-Forwarded-For\"\n",
        without_intake(url)
    );
    let error = pimbridge::config::Settings::from_toml_str(&toml)
        .unwrap_err()
        .to_string();
    assert!(error.contains("intake.client_ip_header"), "{error}");
    assert!(error.contains("intake.trusted_proxies"), "{error}");
    let bad = format!(
        "{}\n[intake]\ntrusted_proxies = [\"10.0.0.0/40\"]\n",
        without_intake(url)
    );
    let error = pimbridge::config::Settings::from_toml_str(&bad)
        .unwrap_err()
        .to_string();
    assert!(error.contains("intake.trusted_proxies"), "{error}");
}

/// The test configuration as a file holds it, without its `[intake]` section (a test adds its
/// own), so that the refusal of one key can be shown on an otherwise valid file.
fn without_intake(url: &str) -> String {
    let toml = test_settings_toml(url);
    let start = toml
        .find("[intake]")
        .expect("the test settings have [intake]");
    let end = start
        + toml[start..]
            .find("[dispatch]")
            .expect("[dispatch] follows [intake]");
    format!("{}{}", &toml[..start], &toml[end..])
}
