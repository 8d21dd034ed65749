//! Hostile input on every route: each value that cannot be stored or compared gets a 400 naming
//! its field, and nothing is stored. Before these checks, some of these inputs panicked on their way
//! to Postgres (the connection closed with no answer) and NUL characters answered 500.

use pimbridge::auth::hmac;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::postgres::PgServer;

const AUDIT_BATCH: &str = include_str!("../fixtures/audit/pim_batch.json");
const CLOUD_EVENT: &str = include_str!("../fixtures/eventgrid/cloudevent_single.json");
/// Valid RFC 3339 whose UTC form is in year 10000: `time` panics converting it.
const PAST_YEAR_9999: &str = "9999-12-31T23:30:00-01:00";

async fn refused(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("a JSON error body");
    (
        status,
        body["code"].as_str().unwrap_or_default().to_owned(),
        body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn post_signed(
    app: &TestApp,
    path: &str,
    body: &Value,
    content_type: &str,
) -> reqwest::Response {
    let body = body.to_string().into_bytes();
    app.http
        .post(format!("{}{path}", app.address))
        .header("content-type", content_type)
        .header(hmac::SIGNATURE_HEADER, sign_now(&body))
        .body(body)
        .send()
        .await
        .expect("an answer, not a dropped connection")
}

/// A case name, how to spoil a valid event, the expected code and the field named.
type Case = (
    &'static str,
    Box<dyn Fn(&mut Value)>,
    &'static str,
    &'static str,
);

#[tokio::test]
async fn our_events_with_unstorable_values_get_400_naming_the_field() {
    let app = spawn_app().await;
    let future = at(10 * 60);
    let cases: Vec<Case> = vec![
        (
            "occurredAt past year 9999",
            Box::new(|e| e["occurredAt"] = json!(PAST_YEAR_9999)),
            "invalid_timestamp",
            "occurredAt",
        ),
        (
            "endsAt past year 9999",
            Box::new(|e| e["endsAt"] = json!(PAST_YEAR_9999)),
            "invalid_timestamp",
            "endsAt",
        ),
        (
            "year 0000",
            Box::new(|e| e["occurredAt"] = json!("0000-01-01T00:00:00Z")),
            "invalid_timestamp",
            "occurredAt",
        ),
        (
            "year 1900",
            Box::new(|e| e["occurredAt"] = json!("1900-01-01T00:00:00Z")),
            "invalid_timestamp",
            "occurredAt",
        ),
        (
            "year 9999 end",
            Box::new(|e| e["endsAt"] = json!("9999-12-31T00:00:00Z")),
            "invalid_timestamp",
            "endsAt",
        ),
        (
            "occurredAt beyond the clock skew",
            Box::new(move |e| e["occurredAt"] = json!(future.clone())),
            "invalid_timestamp",
            "occurredAt",
        ),
        (
            "NUL in an id",
            Box::new(|e| e["principalId"] = json!("u1\u{0}")),
            "invalid_character",
            "principalId",
        ),
        (
            "NUL in an attribute",
            Box::new(|e| e["user"]["givenName"] = json!("Al\u{0}ice")),
            "invalid_character",
            "user.givenName",
        ),
    ];
    for (case, spoil, code, field) in cases {
        let mut event = activation("hostile-1", GROUP_A, "u1");
        spoil(&mut event);

        let (status, got_code, message) = refused(app.post_events(&event).await).await;

        assert_eq!(
            (status, got_code.as_str()),
            (400, code),
            "{case}: {message}"
        );
        assert!(
            message.starts_with(field),
            "{case}: the message names {field}: {message}"
        );
        // In a batch the element is named too.
        let batch = json!([activation("hostile-0", GROUP_A, "u0"), event]);
        let (status, _, message) = refused(app.post_events(&batch).await).await;
        assert_eq!(status, 400, "{case}");
        assert!(
            message.starts_with(&format!("[1].{field}")),
            "{case}: {message}"
        );
    }
    assert_eq!(app.events().await, 0, "nothing refused is stored");
    assert!(app
        .metrics()
        .await
        .contains("pimbridge_handler_panics_total 0"));
}

#[tokio::test]
async fn an_occurred_at_within_the_configured_skew_is_accepted_and_beyond_it_refused() {
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.intake.max_clock_skew = std::time::Duration::from_secs(120);
    let app = spawn_app_with(settings, &url).await;

    let mut soon = activation("skew-ok", GROUP_A, "u1");
    soon["occurredAt"] = json!(at(60));
    let mut later = activation("skew-late", GROUP_A, "u2");
    later["occurredAt"] = json!(at(4 * 60));

    assert_eq!(app.post_events(&soon).await.status(), 202);
    let (status, code, message) = refused(app.post_events(&later).await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_timestamp"));
    assert!(
        message.contains("occurredAt") && message.contains("2m"),
        "{message}"
    );
    assert_eq!(app.events().await, 1);
}

#[tokio::test]
async fn timestamps_are_stored_in_utc_whatever_offset_they_were_sent_with() {
    let app = spawn_app().await;
    let mut event = activation("offset-1", GROUP_A, "u1");
    event["occurredAt"] = json!("2026-11-28T11:00:00+01:00");
    event["endsAt"] = json!("2026-11-28T19:00:00+01:00");

    assert_eq!(app.post_events(&event).await.status(), 202);

    let row = app
        .db
        .query_one(
            "SELECT to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'),
                    to_char(ends_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') FROM events",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "2026-11-28 10:00");
    assert_eq!(row.get::<_, String>(1), "2026-11-28 18:00");
}

fn audit_with(spoil: impl Fn(&mut Value)) -> Value {
    let mut batch: Value = serde_json::from_str(AUDIT_BATCH).unwrap();
    spoil(&mut batch["records"][0]["properties"]);
    batch
}

#[tokio::test]
async fn audit_records_with_unstorable_values_get_400_naming_the_field() {
    let app = spawn_app().await;
    let future = at(10 * 60);
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "activityDateTime past year 9999",
            audit_with(|p| p["activityDateTime"] = json!(PAST_YEAR_9999)),
            "invalid_timestamp",
            "records[0].properties.activityDateTime",
        ),
        (
            "activityDateTime in 1900",
            audit_with(|p| p["activityDateTime"] = json!("1900-01-01T00:00:00Z")),
            "invalid_timestamp",
            "records[0].properties.activityDateTime",
        ),
        (
            "activityDateTime in the future",
            audit_with(move |p| p["activityDateTime"] = json!(future.clone())),
            "invalid_timestamp",
            "occurredAt",
        ),
        (
            "NUL in the record id",
            audit_with(|p| p["id"] = json!("PIM_\u{0}")),
            "invalid_character",
            "records[0].properties.id",
        ),
        (
            "NUL in the group's name",
            audit_with(|p| p["targetResources"][3]["displayName"] = json!("AWS\u{0}")),
            "invalid_character",
            "records[0].properties.targetResources[3].displayName",
        ),
    ];
    for (case, body, code, field) in cases {
        let response = post_signed(&app, "/webhooks/audit", &body, "application/json").await;
        let (status, got_code, message) = refused(response).await;
        assert_eq!(
            (status, got_code.as_str()),
            (400, code),
            "{case}: {message}"
        );
        assert!(message.contains(field), "{case}: names {field}: {message}");
    }
    assert_eq!(app.events().await, 0, "nothing refused is stored");

    // An unreadable end in the undocumented additionalDetails is left out, as before: accepted.
    let lenient = audit_with(|p| p["additionalDetails"][2]["value"] = json!(PAST_YEAR_9999));
    let response = post_signed(&app, "/webhooks/audit", &lenient, "application/json").await;
    assert_eq!(response.status(), 202);
    let ends: Option<time::OffsetDateTime> = app
        .db
        .query_one(
            "SELECT ends_at FROM events WHERE source_event_id = $1",
            &[&"PIM_c3a7e2d1-4f5b-4a6c-8d9e-0f1a2b3c4d5e_activation"],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ends, None);
}

#[tokio::test]
async fn event_grid_deliveries_with_unstorable_values_get_400() {
    let app = spawn_app().await;
    for (case, value, code) in [
        (
            "a timestamp past year 9999",
            json!(PAST_YEAR_9999),
            "invalid_timestamp",
        ),
        (
            "a NUL",
            json!("2026-11-28T11:00:00Z\u{0}"),
            "invalid_character",
        ),
    ] {
        let mut event: Value = serde_json::from_str(CLOUD_EVENT).unwrap();
        event["data"]["activityDateTime"] = value;
        let response = post_signed(
            &app,
            "/webhooks/eventgrid",
            &event,
            "application/cloudevents+json; charset=utf-8",
        )
        .await;
        let (status, got_code, message) = refused(response).await;
        assert_eq!(
            (status, got_code.as_str()),
            (400, code),
            "{case}: {message}"
        );
        assert!(message.contains("activityDateTime"), "{case}: {message}");
    }
    let mut event: Value = serde_json::from_str(CLOUD_EVENT).unwrap();
    event["data"]["id"] = json!("PIM_\u{0}");
    let response = post_signed(
        &app,
        "/webhooks/eventgrid",
        &event,
        "application/cloudevents+json; charset=utf-8",
    )
    .await;
    let (status, code, message) = refused(response).await;
    assert_eq!(
        (status, code.as_str()),
        (400, "invalid_character"),
        "{message}"
    );
    assert_eq!(app.events().await, 0);
}

#[tokio::test]
async fn the_admin_log_filters_refuse_unstorable_values_with_400() {
    const TOKEN: &str = "admin-token-hostile-0123456789";
    let app = spawn_admin_app(TOKEN).await;
    let get = |query: &'static str| {
        app.http
            .request(
                Method::GET,
                format!("{}/admin/provisioning-log?{query}", app.internal_address),
            )
            .bearer_auth(TOKEN)
            .send()
    };

    let (status, code, message) =
        refused(get("since=9999-12-31T23:30:00-01:00").await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (400, "invalid_timestamp"),
        "{message}"
    );
    assert!(message.contains("since"), "{message}");
    let (status, code, _) = refused(get("since=1900-01-01T00:00:00Z").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "invalid_timestamp"));
    // A NUL reaches Postgres in a filter: a client error, not 500.
    let (status, code, _) = refused(get("principal=u%00").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "invalid_character"));
    let response = get("since=2026-01-01T00:00:00%2B01:00").await.unwrap();
    assert_eq!(response.status(), 200);
}
