//! The OpenAPI document: served on the internal listener, equal to the checked-in
//! `docs/openapi.json` (regenerate with `cargo run -- openapi > docs/openapi.json`, or run this
//! test with `PIMBRIDGE_UPDATE_OPENAPI=1`), and describing exactly routes that actix serves.

use std::path::Path;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::*;

const TOKEN: &str = "openapi-admin-token-0123456789";

async fn spawn_with_admin() -> TestApp {
    spawn_admin_app(TOKEN).await
}

#[tokio::test]
async fn the_checked_in_document_is_what_the_code_generates_and_what_the_internal_listener_serves()
{
    let generated = pimbridge::routes::openapi::document();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    if std::env::var_os("PIMBRIDGE_UPDATE_OPENAPI").is_some() {
        let text = serde_json::to_string_pretty(&generated).unwrap();
        std::fs::write(&file, format!("{text}\n")).unwrap();
    }
    let checked_in: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(
        checked_in == generated,
        "docs/openapi.json is stale: regenerate it with `cargo run -- openapi > docs/openapi.json`"
    );
    assert_eq!(generated["openapi"], "3.1.0");

    let app = spawn_app().await;
    let served: Value = app
        .http
        .get(format!("{}/openapi.json", app.internal_address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, generated);
    let public = app
        .http
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
}

#[tokio::test]
async fn every_documented_operation_is_a_route_on_its_listeners_and_only_there() {
    let app = spawn_with_admin().await;
    let document = pimbridge::routes::openapi::document();
    let mut expected = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let listeners: Vec<&str> = operation["x-pimbridge-listeners"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap())
                .collect();
            let concrete = path.replace("{name}", "alpha");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            for (listener, base) in [
                ("public", &app.address),
                ("internal", &app.internal_address),
            ] {
                // An empty body: every route answers without side effects (401, 400, 415, …).
                let status = app
                    .http
                    .request(method.clone(), format!("{base}{concrete}"))
                    .send()
                    .await
                    .unwrap()
                    .status();
                if listeners.contains(&listener) {
                    expected.push((listener, path.clone(), method.to_string()));
                } else {
                    assert_eq!(status, 404, "{method} {path} must not answer on {listener}");
                }
            }
        }
    }

    // The HTTP metrics name the route pattern actix matched: each documented operation must have
    // matched the documented pattern on each of its listeners.
    // (A scrape within 100 ms of the last reuses its rendering.)
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let text = app.scrape().await;
    for (listener, path, method) in &expected {
        assert!(
            metric_value(
                &text,
                "pimbridge_http_requests_total",
                &[
                    ("listener", listener),
                    ("route", path),
                    ("method", method.as_str())
                ]
            ) >= 1.0,
            "{method} {path} is documented on {listener} but no route matched it"
        );
    }
}
