//! `OPTIONS, POST /webhooks/eventgrid`: Event Grid deliveries (Event Grid schema and CloudEvents
//! 1.0) carrying Entra audit records become events; Graph notifications are acknowledged only.

use pimbridge::auth::hmac;
use pimbridge::secret::SecretString;
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};

use crate::helpers::*;

/// Event Grid's subscription handshake, code `0f6e2b4a-…`.
const VALIDATION: &str = include_str!("../fixtures/eventgrid/subscription_validation.json");
/// Event Grid schema: [0] an Azure Monitor export with an activation (GROUP_A) and a Core
/// Directory record, [1] a directoryAudit deactivation (GROUP_B), [2] a directoryAudit request,
/// [3] an unrelated Azure resource event.
const EVENT_GRID_BATCH: &str = include_str!("../fixtures/eventgrid/eventgrid_schema_batch.json");
/// One CloudEvent: a directoryAudit activation (GROUP_B).
const CLOUD_EVENT: &str = include_str!("../fixtures/eventgrid/cloudevent_single.json");
/// CloudEvents: [0] an export with an expiry (GROUP_AB) and a sign-in record, [1] an activation
/// (GROUP_A), [2] a failed activation.
const CLOUD_EVENTS: &str = include_str!("../fixtures/eventgrid/cloudevents_batch.json");
/// CloudEvents from a Graph partner topic: a group change and a lifecycle notification.
const GRAPH: &str = include_str!("../fixtures/eventgrid/graph_notifications.json");

const EVENT_GRID: &str = "application/json; charset=utf-8";
const CLOUD_EVENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";
const CLOUD_EVENTS_TYPE: &str = "application/cloudevents-batch+json; charset=utf-8";

const ACTIVATION_A: &str = "PIM_f1e2d3c4-b5a6-4978-8a9b-0c1d2e3f4a5b_activation";
const DEACTIVATION_B: &str = "PIM_7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d_deactivate";
const ACTIVATION_B: &str = "PIM_8b9c0d1e-2f3a-4b4c-9d5e-6f7a8b9c0d1e_activation";
const EXPIRY_AB: &str = "PIM_1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f_expired";
const ACTIVATION_A2: &str = "PIM_2e3f4a5b-6c7d-4e8f-9a0b-1c2d3e4f5a6c_activation";

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// The `aeg-event-type` of a notification.
const NOTIFICATION: &str = "Notification";
/// The `aeg-event-type` of Event Grid's subscription handshake.
const HANDSHAKE: &str = "SubscriptionValidation";

/// An unsigned request as Event Grid sends it, `kind` being its `aeg-event-type`.
fn delivery(app: &TestApp, body: &[u8], content_type: &str, kind: &str) -> RequestBuilder {
    app.http
        .post(format!("{}/webhooks/eventgrid", app.address))
        .header("content-type", content_type)
        .header("aeg-event-type", kind)
        .body(body.to_vec())
}

/// Sends `request` for `body`, signed with the test secret.
async fn signed(request: RequestBuilder, body: &[u8]) -> reqwest::Response {
    request
        .header(hmac::SIGNATURE_HEADER, sign_now(body))
        .send()
        .await
        .expect("request sent")
}

/// Delivers `body` as a notification, signed with the test secret.
async fn deliver(app: &TestApp, body: &[u8], content_type: &str) -> reqwest::Response {
    signed(delivery(app, body, content_type, NOTIFICATION), body).await
}

/// Event Grid's subscription handshake, signed with the test secret.
async fn validate(app: &TestApp, body: &[u8]) -> reqwest::Response {
    signed(delivery(app, body, EVENT_GRID, HANDSHAKE), body).await
}

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The stored events, oldest first: source, id, kind, group, principal, userName, endsAt (UTC).
async fn stored_events(app: &TestApp) -> Value {
    let row = app
        .db
        .query_one(
            "SELECT coalesce(json_agg(json_build_array(source, source_event_id, kind, group_id,
                        principal_id, user_attributes->>'userName',
                        to_char(ends_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI'))
                    ORDER BY occurred_at), '[]')
             FROM events",
            &[],
        )
        .await
        .unwrap();
    row.get(0)
}

/// The stored jobs: event id, application, action, lane, in a stable order.
async fn stored_jobs(app: &TestApp) -> Value {
    let row = app
        .db
        .query_one(
            "SELECT coalesce(json_agg(json_build_array(e.source_event_id, j.application,
                        j.action, j.lane) ORDER BY e.occurred_at, j.application), '[]')
             FROM jobs j JOIN events e ON e.id = j.event_id",
            &[],
        )
        .await
        .unwrap();
    row.get(0)
}

fn received(metrics: &str, kind: &str, outcome: &str) -> f64 {
    metric_value(
        metrics,
        "pimbridge_events_received_total",
        &[
            ("source", "eventgrid"),
            ("type", kind),
            ("outcome", outcome),
        ],
    )
}

#[tokio::test]
async fn the_options_handshake_consents_to_the_origin_at_any_rate() {
    // Arrange
    let app = spawn_app().await;
    let url = format!("{}/webhooks/eventgrid", app.address);

    // Act: no credentials, as Event Grid sends none.
    let consent = app
        .http
        .request(Method::OPTIONS, &url)
        .header("WebHook-Request-Origin", "eventgrid.azure.net")
        .header("WebHook-Request-Rate", "120")
        .send()
        .await
        .unwrap();
    let no_origin = app
        .http
        .request(Method::OPTIONS, &url)
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(consent.status(), 200);
    let headers = consent.headers();
    assert_eq!(headers["webhook-allowed-origin"], "eventgrid.azure.net");
    assert_eq!(headers["webhook-allowed-rate"], "*");
    assert_eq!(headers["allow"], "POST, OPTIONS");
    let (status, error) = answer(no_origin).await;
    assert_eq!(status, 400);
    assert_eq!(error["code"], "missing_origin", "{error}");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("WebHook-Request-Origin"));
    assert_eq!(app.events().await, 0);
}

#[tokio::test]
async fn a_subscription_validation_is_answered_with_its_code() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = validate(&app, VALIDATION.as_bytes()).await;

    // Assert
    assert_eq!(
        answer(response).await,
        (
            200,
            json!({"validationResponse": "0f6e2b4a-7c1d-4e8f-9a3b-5d2c1e0f9a8b"})
        ),
        "200, not 202: Event Grid accepts only 200 for the handshake"
    );
    assert_eq!(app.events().await, 0);
}

#[tokio::test]
async fn an_unauthenticated_subscription_validation_is_refused() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = delivery(&app, VALIDATION.as_bytes(), EVENT_GRID, HANDSHAKE)
        .send()
        .await
        .unwrap();

    // Assert
    let (status, error) = answer(response).await;
    assert_eq!(status, 401);
    assert_eq!(error["code"], "missing_credentials");
    assert!(
        !error.to_string().contains("0f6e2b4a"),
        "the code is not echoed: {error}"
    );
}

#[tokio::test]
async fn an_event_grid_schema_batch_stores_its_pim_events() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = deliver(&app, EVENT_GRID_BATCH.as_bytes(), EVENT_GRID).await;

    // Assert
    assert_eq!(
        answer(response).await,
        (
            202,
            json!({"accepted": 2, "duplicates": 0, "ignored": 3, "hints": 0})
        ),
        "ignored: a Core Directory record, a PIM request, an Azure resource event"
    );
    assert_eq!(
        stored_events(&app).await,
        json!([
            [
                "eventgrid",
                ACTIVATION_A,
                "activation",
                GROUP_A,
                "f7a00000-0000-4000-8000-000000000006",
                "frank@contoso.com",
                "2026-11-28T13:00"
            ],
            [
                "eventgrid",
                DEACTIVATION_B,
                "deactivation",
                GROUP_B,
                "9e900000-0000-4000-8000-000000000007",
                "grace@contoso.com",
                null
            ],
        ])
    );
    assert_eq!(
        stored_jobs(&app).await,
        json!([
            [ACTIVATION_A, "alpha", "add", "immediate"],
            [DEACTIVATION_B, "beta", "remove", "deferred"],
        ]),
        "the activation is sent at once; the deactivation waits for the sync cycle"
    );
}

#[tokio::test]
async fn a_single_cloud_event_is_stored() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = deliver(&app, CLOUD_EVENT.as_bytes(), CLOUD_EVENT_TYPE).await;

    // Assert
    assert_eq!(
        answer(response).await,
        (
            202,
            json!({"accepted": 1, "duplicates": 0, "ignored": 0, "hints": 0})
        )
    );
    assert_eq!(
        stored_events(&app).await,
        json!([[
            "eventgrid",
            ACTIVATION_B,
            "activation",
            GROUP_B,
            "4a700000-0000-4000-8000-000000000008",
            "hal@contoso.com",
            "2026-11-28T15:00"
        ]])
    );
    assert_eq!(
        stored_jobs(&app).await,
        json!([[ACTIVATION_B, "beta", "add", "immediate"]])
    );
}

#[tokio::test]
async fn a_cloud_events_batch_stores_its_pim_events() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = deliver(&app, CLOUD_EVENTS.as_bytes(), CLOUD_EVENTS_TYPE).await;

    // Assert
    assert_eq!(
        answer(response).await,
        (
            202,
            json!({"accepted": 2, "duplicates": 0, "ignored": 2, "hints": 0})
        ),
        "ignored: a sign-in record and a failed activation"
    );
    assert_eq!(
        stored_events(&app).await,
        json!([
            [
                "eventgrid",
                EXPIRY_AB,
                "deactivation",
                GROUP_AB,
                "1d100000-0000-4000-8000-000000000009",
                "ivy@contoso.com",
                null
            ],
            [
                "eventgrid",
                ACTIVATION_A2,
                "activation",
                GROUP_A,
                "ae100000-0000-4000-8000-00000000000a",
                "jean@contoso.com",
                "2026-11-28T14:05"
            ],
        ])
    );
    assert_eq!(
        stored_jobs(&app).await,
        json!([
            [EXPIRY_AB, "alpha", "remove", "deferred"],
            [EXPIRY_AB, "beta", "remove", "deferred"],
            [ACTIVATION_A2, "alpha", "add", "immediate"],
        ])
    );
}

#[tokio::test]
async fn a_redelivered_record_is_a_duplicate_whichever_event_carries_it() {
    // Arrange
    let app = spawn_app().await;
    deliver(&app, EVENT_GRID_BATCH.as_bytes(), EVENT_GRID).await;
    let events_before = stored_events(&app).await;
    let jobs_before = stored_jobs(&app).await;
    // The deactivation record again, in a new CloudEvent with its own id.
    let mut rewrapped = fixture(CLOUD_EVENT);
    rewrapped["id"] = json!("0d9c8b7a-6f5e-4d3c-9b2a-1f0e9d8c7b6a");
    rewrapped["data"] = fixture(EVENT_GRID_BATCH)[1]["data"].clone();

    // Act
    let again = deliver(&app, EVENT_GRID_BATCH.as_bytes(), EVENT_GRID).await;
    let rewrapped = deliver(&app, rewrapped.to_string().as_bytes(), CLOUD_EVENT_TYPE).await;

    // Assert
    assert_eq!(
        answer(again).await,
        (
            202,
            json!({"accepted": 0, "duplicates": 2, "ignored": 3, "hints": 0})
        )
    );
    assert_eq!(
        answer(rewrapped).await,
        (
            202,
            json!({"accepted": 0, "duplicates": 1, "ignored": 0, "hints": 0})
        ),
        "the audit record's id is the key, not the Event Grid event's"
    );
    assert_eq!(stored_events(&app).await, events_before);
    assert_eq!(stored_jobs(&app).await, jobs_before);
}

#[tokio::test]
async fn the_same_export_on_webhooks_audit_is_another_sources_event() {
    // Arrange: Event Grid's first event carries exactly what /webhooks/audit takes.
    let app = spawn_app().await;
    let export = fixture(EVENT_GRID_BATCH)[0]["data"]
        .to_string()
        .into_bytes();
    deliver(&app, EVENT_GRID_BATCH.as_bytes(), EVENT_GRID).await;

    // Act
    let response = app
        .http
        .post(format!("{}/webhooks/audit", app.address))
        .header("content-type", "application/json")
        .header(hmac::SIGNATURE_HEADER, sign_now(&export))
        .body(export)
        .send()
        .await
        .unwrap();

    // Assert: the two routes read the export alike; idempotency holds within a source.
    assert_eq!(
        answer(response).await,
        (202, json!({"accepted": 1, "duplicates": 0, "ignored": 1}))
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(DISTINCT source) FROM events WHERE source_event_id = '{ACTIVATION_A}'"
        ))
        .await,
        2
    );
}

#[tokio::test]
async fn graph_notifications_are_acknowledged_counted_and_not_stored() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = deliver(&app, GRAPH.as_bytes(), CLOUD_EVENTS_TYPE).await;

    // Assert
    assert_eq!(
        answer(response).await,
        (
            202,
            json!({"accepted": 0, "duplicates": 0, "ignored": 2, "hints": 0})
        ),
        "a 2xx, or Event Grid retries for a day"
    );
    assert_eq!(app.events().await, 0);
    assert_eq!(app.jobs().await, 0);
    let metrics = app.metrics().await;
    assert_eq!(received(&metrics, "graph_notification", "ignored"), 2.0);
}

#[tokio::test]
async fn received_content_is_counted_by_type_and_outcome() {
    // Arrange
    let app = spawn_app().await;

    // Act
    deliver(&app, EVENT_GRID_BATCH.as_bytes(), EVENT_GRID).await;
    deliver(&app, EVENT_GRID_BATCH.as_bytes(), EVENT_GRID).await;
    deliver(&app, CLOUD_EVENTS.as_bytes(), CLOUD_EVENTS_TYPE).await;
    deliver(&app, GRAPH.as_bytes(), CLOUD_EVENTS_TYPE).await;
    validate(&app, VALIDATION.as_bytes()).await;

    // Assert
    let metrics = app.metrics().await;
    assert_eq!(received(&metrics, "activation", "accepted"), 2.0);
    assert_eq!(received(&metrics, "deactivation", "accepted"), 2.0);
    assert_eq!(received(&metrics, "activation", "duplicate"), 1.0);
    assert_eq!(received(&metrics, "deactivation", "duplicate"), 1.0);
    assert_eq!(
        received(&metrics, "activation", "ignored"),
        1.0,
        "the failed activation"
    );
    assert_eq!(
        received(&metrics, "unknown", "ignored"),
        7.0,
        "three unrelated items, twice, and a sign-in record"
    );
    assert_eq!(received(&metrics, "graph_notification", "ignored"), 2.0);
    assert_eq!(
        metric_value(
            &metrics,
            "pimbridge_events_received_total",
            &[("source", "audit")]
        ),
        0.0,
        "Event Grid content is not counted as the audit route's"
    );
}

/// A case name, the body, its content type, whether it claims to be the handshake, the expected
/// status and code, and the field the message names first.
type BadInput = (
    &'static str,
    Vec<u8>,
    &'static str,
    bool,
    u16,
    &'static str,
    &'static str,
);

/// `text` parsed, changed by `spoil`, and serialised again.
fn spoiled(text: &str, spoil: impl Fn(&mut Value)) -> Vec<u8> {
    let mut value = fixture(text);
    spoil(&mut value);
    value.to_string().into_bytes()
}

fn without(object: &mut Value, member: &str) {
    object.as_object_mut().unwrap().remove(member);
}

#[tokio::test]
async fn every_class_of_bad_input_is_refused_and_stores_nothing() {
    // Arrange
    let app = spawn_app().await;
    let some_event = json!({"id": "1", "eventType": "Contoso.Nothing", "data": {}});
    let cases: Vec<BadInput> = vec![
        (
            "malformed JSON",
            b"[{".to_vec(),
            EVENT_GRID,
            false,
            400,
            "malformed_json",
            "",
        ),
        (
            "an object in the Event Grid schema",
            spoiled(EVENT_GRID_BATCH, |b| *b = b[1].clone()),
            EVENT_GRID,
            false,
            400,
            "invalid_body",
            "body: ",
        ),
        (
            "Event Grid schema events as CloudEvents",
            EVENT_GRID_BATCH.as_bytes().to_vec(),
            CLOUD_EVENT_TYPE,
            false,
            400,
            "invalid_cloudevent",
            "[0].specversion: ",
        ),
        (
            "an event that is not an object",
            br#"[{"id": "1", "eventType": "Contoso.Nothing"}, "event"]"#.to_vec(),
            EVENT_GRID,
            false,
            400,
            "invalid_field",
            "[1]: ",
        ),
        (
            "an Event Grid event without eventType",
            spoiled(EVENT_GRID_BATCH, |b| without(&mut b[2], "eventType")),
            EVENT_GRID,
            false,
            400,
            "missing_field",
            "[2].eventType: ",
        ),
        (
            "a CloudEvent without specversion",
            spoiled(CLOUD_EVENT, |e| without(e, "specversion")),
            CLOUD_EVENT_TYPE,
            false,
            400,
            "invalid_cloudevent",
            "specversion: ",
        ),
        (
            "a CloudEvent of another version",
            spoiled(CLOUD_EVENTS, |b| b[1]["specversion"] = json!("0.3")),
            CLOUD_EVENTS_TYPE,
            false,
            400,
            "invalid_cloudevent",
            "[1].specversion: ",
        ),
        (
            "a CloudEvent without id",
            spoiled(CLOUD_EVENTS, |b| without(&mut b[2], "id")),
            CLOUD_EVENTS_TYPE,
            false,
            400,
            "invalid_cloudevent",
            "[2].id: ",
        ),
        (
            "a CloudEvent without type",
            spoiled(CLOUD_EVENT, |e| without(e, "type")),
            CLOUD_EVENT_TYPE,
            false,
            400,
            "invalid_cloudevent",
            "type: ",
        ),
        (
            "an activation record without a group target",
            spoiled(EVENT_GRID_BATCH, |b| {
                b[0]["data"]["records"][0]["properties"]["targetResources"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|t| t["type"] != "Group")
            }),
            EVENT_GRID,
            false,
            400,
            "missing_target",
            "[0].data.records[0].properties.targetResources: ",
        ),
        (
            "a deactivation record with a bad timestamp",
            spoiled(EVENT_GRID_BATCH, |b| {
                b[1]["data"]["activityDateTime"] = json!("28/11/2026 10:15")
            }),
            EVENT_GRID,
            false,
            400,
            "invalid_timestamp",
            "[1].data.activityDateTime: ",
        ),
        (
            "records that are not an array",
            spoiled(CLOUD_EVENTS, |b| b[0]["data"]["records"] = json!({})),
            CLOUD_EVENTS_TYPE,
            false,
            400,
            "invalid_field",
            "[0].data.records: ",
        ),
        (
            "a handshake header on a notification",
            EVENT_GRID_BATCH.as_bytes().to_vec(),
            EVENT_GRID,
            true,
            400,
            "invalid_body",
            "body: ",
        ),
        (
            "a handshake without its code",
            spoiled(VALIDATION, |b| without(&mut b[0]["data"], "validationCode")),
            EVENT_GRID,
            true,
            400,
            "missing_field",
            "[0].data.validationCode: ",
        ),
        (
            "a handshake among other events",
            spoiled(VALIDATION, |b| {
                b.as_array_mut().unwrap().insert(0, some_event.clone())
            }),
            EVENT_GRID,
            false,
            400,
            "invalid_field",
            "[1].eventType: ",
        ),
        (
            "more than 1000 events",
            Value::Array(vec![some_event.clone(); 1001])
                .to_string()
                .into_bytes(),
            EVENT_GRID,
            false,
            413,
            "batch_too_large",
            "",
        ),
        (
            "body over the limit",
            vec![b' '; 1024 * 1024 + 1],
            EVENT_GRID,
            false,
            413,
            "payload_too_large",
            "",
        ),
        (
            "CloudEvents in binary mode",
            CLOUD_EVENT.as_bytes().to_vec(),
            "text/plain",
            false,
            415,
            "unsupported_media_type",
            "",
        ),
    ];
    let refused = cases.len();

    for (case, body, content_type, handshake, status, code, message) in cases {
        // Act
        let kind = if handshake { HANDSHAKE } else { NOTIFICATION };
        let response = signed(delivery(&app, &body, content_type, kind), &body).await;

        // Assert
        let (actual, error) = answer(response).await;
        assert_eq!(actual, status, "{case}: {error}");
        assert_eq!(error["code"], code, "{case}: {error}");
        let text = error["message"].as_str().unwrap_or_default();
        assert!(!text.is_empty(), "{case}: a message explains the problem");
        assert!(text.starts_with(message), "{case}: {error}");
    }

    assert_eq!(app.events().await, 0, "a delivery is all or nothing");
    assert_eq!(app.jobs().await, 0);
    let metrics = app.metrics().await;
    assert_eq!(received(&metrics, "unknown", "rejected"), refused as f64);
    assert_eq!(
        metric_value(
            &metrics,
            "pimbridge_events_received_total",
            &[("source", "eventgrid"), ("outcome", "ignored")]
        ),
        0.0,
        "what a refused delivery carried is not counted as ignored"
    );
}

#[tokio::test]
async fn the_415_names_the_accepted_media_types() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = deliver(&app, CLOUD_EVENT.as_bytes(), "application/xml").await;

    // Assert
    let (status, error) = answer(response).await;
    assert_eq!(status, 415);
    let message = error["message"].as_str().unwrap();
    for media_type in [
        "application/json",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
    ] {
        assert!(message.contains(media_type), "{message}");
    }
}

/// The credential header a request carries, if any: (name, value).
type Credential = Option<(&'static str, String)>;

#[tokio::test]
async fn unauthenticated_deliveries_are_refused_and_store_nothing() {
    // Arrange
    let app = spawn_app().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let deliveries = [
        (EVENT_GRID_BATCH, EVENT_GRID),
        (CLOUD_EVENT, CLOUD_EVENT_TYPE),
        (CLOUD_EVENTS, CLOUD_EVENTS_TYPE),
    ];
    let mut refused = 0;

    for (body, content_type) in deliveries {
        let body = body.as_bytes();
        let cases: Vec<(&str, Credential, &str)> = vec![
            ("unsigned", None, "missing_credentials"),
            (
                "signed with another secret",
                Some((
                    hmac::SIGNATURE_HEADER,
                    hmac::sign(&SecretString::new("not-the-secret-0123456789"), now, body),
                )),
                "invalid_signature",
            ),
            (
                "signature of another body",
                Some((hmac::SIGNATURE_HEADER, sign_now(GRAPH.as_bytes()))),
                "invalid_signature",
            ),
            (
                "bearer token where none is configured",
                Some(("authorization", "Bearer abc.def.ghi".to_owned())),
                "bearer_not_accepted",
            ),
        ];
        for (case, credential, code) in cases {
            // Act
            let mut request = delivery(&app, body, content_type, NOTIFICATION);
            if let Some((name, value)) = credential {
                request = request.header(name, value);
            }
            let response = request.send().await.unwrap();

            // Assert
            assert_eq!(response.status(), 401, "{content_type}: {case}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let (_, error) = answer(response).await;
            assert_eq!(error["code"], code, "{content_type}: {case}: {error}");
            refused += 1;
        }
    }

    assert_eq!(app.events().await, 0);
    assert_eq!(app.jobs().await, 0);
    let metrics = app.metrics().await;
    assert_eq!(
        received(&metrics, "unknown", "rejected"),
        f64::from(refused)
    );
}

#[tokio::test]
async fn with_graph_configured_graph_notifications_become_hints_after_their_client_state_is_checked(
) {
    // Arrange: Graph configured with the fixture's clientState.
    let url = crate::postgres::PgServer::shared().fresh_database().await;
    let mut settings = crate::graph::graph_settings(&url, "http://127.0.0.1:9");
    if let Some(graph) = settings.graph.as_mut() {
        graph.client_state = Some(pimbridge::secret::SecretString::new(
            "not-a-real-client-state",
        ));
    }
    let app = spawn_app_with(settings, &url).await;
    let forged = GRAPH.replace("not-a-real-client-state", "forged-client-state-000");

    // Act
    let refused = deliver(&app, forged.as_bytes(), CLOUD_EVENTS_TYPE).await;
    let accepted = deliver(&app, GRAPH.as_bytes(), CLOUD_EVENTS_TYPE).await;

    // Assert: the forged clientState stores nothing; the real one leaves a hint for the group
    // (the lifecycle item names a subscription pimbridge does not manage: ignored).
    assert_eq!(refused.status(), 401);
    assert_eq!(
        answer(accepted).await,
        (
            202,
            json!({"accepted": 0, "duplicates": 0, "ignored": 1, "hints": 1})
        ),
        "the lifecycle item is counted as ignored, as /webhooks/graph counts it"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM graph_hints WHERE group_id = '{GROUP_A}' AND state IN ('pending', 'running')"
        ))
        .await,
        1
    );
}

/// Microsoft's examples, kept under `tests/fixtures/microsoft/` (see its README).
mod microsoft {
    use super::*;

    const ENTRA_EVENTS: &str = include_str!("../fixtures/microsoft/entra_events_cloudevents.json");
    const BLOB_CREATED: &str = include_str!("../fixtures/microsoft/cloudevent_blob_created.json");
    const VALIDATION_EVENT: &str =
        include_str!("../fixtures/microsoft/eventgrid_subscription_validation.json");
    const ODATA_TARGETS: &str =
        include_str!("../fixtures/microsoft/directory_audit_odata_targets.json");

    /// Every media type a CloudEvent may arrive under, in Microsoft's own samples and docs.
    const MEDIA_TYPES: [&str; 3] = [CLOUD_EVENT_TYPE, CLOUD_EVENTS_TYPE, EVENT_GRID];

    #[tokio::test]
    async fn a_single_cloud_event_and_an_array_are_accepted_under_each_media_type() {
        for media_type in MEDIA_TYPES {
            // Arrange: a fresh app, so that each media type stores its own events.
            let app = spawn_app().await;

            // Act
            let one = deliver(&app, CLOUD_EVENT.as_bytes(), media_type).await;
            let many = deliver(&app, CLOUD_EVENTS.as_bytes(), media_type).await;

            // Assert
            assert_eq!(
                answer(one).await,
                (
                    202,
                    json!({"accepted": 1, "duplicates": 0, "ignored": 0, "hints": 0})
                ),
                "{media_type}"
            );
            assert_eq!(
                answer(many).await,
                (
                    202,
                    json!({"accepted": 2, "duplicates": 0, "ignored": 2, "hints": 0})
                ),
                "{media_type}"
            );
            let ids: std::collections::BTreeSet<String> = stored_events(&app)
                .await
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e[1].as_str().unwrap().to_owned())
                .collect();
            let expected = [ACTIVATION_B, EXPIRY_AB, ACTIVATION_A2].map(str::to_owned);
            assert_eq!(ids, expected.into(), "{media_type}");
        }
    }

    #[tokio::test]
    async fn a_directory_audit_with_odata_typed_targets_becomes_an_activation() {
        // Arrange: Graph's directoryAudit, as the data of a CloudEvent.
        let app = spawn_app().await;
        let event = json!({
            "specversion": "1.0",
            "id": "5b3a4f6e-7d8c-49ba-8c3d-4e5f6a7b8c9d",
            "source": "/tenants/5e0c1a52-7f3d-4b8e-9c21-0d6a4f3b2e10/auditLogs",
            "type": "Contoso.Entra.DirectoryAudit",
            "time": "2026-11-28T11:30:02Z",
            "datacontenttype": "application/json",
            "data": fixture(ODATA_TARGETS),
        });

        // Act
        let response = deliver(&app, event.to_string().as_bytes(), EVENT_GRID).await;

        // Assert
        assert_eq!(
            answer(response).await,
            (
                202,
                json!({"accepted": 1, "duplicates": 0, "ignored": 0, "hints": 0})
            )
        );
        assert_eq!(
            stored_events(&app).await,
            json!([[
                "eventgrid",
                "PIM_9c8d7e6f-5a4b-4c3d-8e2f-1a0b9c8d7e6f_activation",
                "activation",
                GROUP_B,
                "b0b00000-0000-4000-8000-000000000002",
                "bob@contoso.com",
                "2026-11-28T15:30"
            ]])
        );
        assert_eq!(
            stored_jobs(&app).await,
            json!([[
                "PIM_9c8d7e6f-5a4b-4c3d-8e2f-1a0b9c8d7e6f_activation",
                "beta",
                "add",
                "immediate"
            ]])
        );
    }

    #[tokio::test]
    async fn entra_events_without_graph_are_acknowledged_and_counted_as_ignored() {
        // Arrange
        let app = spawn_app().await;

        // Act
        let mut answers = Vec::new();
        for media_type in MEDIA_TYPES {
            answers.push(answer(deliver(&app, ENTRA_EVENTS.as_bytes(), media_type).await).await);
        }

        // Assert
        for answered in answers {
            assert_eq!(
                answered,
                (
                    202,
                    json!({"accepted": 0, "duplicates": 0, "ignored": 2, "hints": 0})
                )
            );
        }
        assert_eq!(app.events().await, 0);
        let metrics = app.metrics().await;
        assert_eq!(received(&metrics, "graph_notification", "ignored"), 6.0);
    }

    #[tokio::test]
    async fn entra_events_with_graph_are_counted_as_the_graph_webhook_counts_them() {
        // Arrange: Graph configured with the fixtures' clientState.
        let url = crate::postgres::PgServer::shared().fresh_database().await;
        let app = spawn_app_with(
            crate::graph::graph_settings(&url, "http://127.0.0.1:9"),
            &url,
        )
        .await;

        // Act: the group change and the user change, through Event Grid.
        let response = deliver(&app, ENTRA_EVENTS.as_bytes(), CLOUD_EVENT_TYPE).await;

        // Assert: a hint for the group; the user change is ignored and counted, not dropped.
        assert_eq!(
            answer(response).await,
            (
                202,
                json!({"accepted": 0, "duplicates": 0, "ignored": 1, "hints": 1})
            )
        );
        assert_eq!(
            app.count(&format!(
                "SELECT count(*) FROM graph_hints WHERE group_id = '{GROUP_A}'"
            ))
            .await,
            1
        );
        let metrics = app.metrics().await;
        assert_eq!(received(&metrics, "graph_notification", "accepted"), 1.0);
        assert_eq!(received(&metrics, "graph_notification", "ignored"), 1.0);
    }

    #[tokio::test]
    async fn a_cloud_event_from_another_service_posted_as_json_is_ignored() {
        let app = spawn_app().await;

        let response = deliver(&app, BLOB_CREATED.as_bytes(), EVENT_GRID).await;

        assert_eq!(
            answer(response).await,
            (
                202,
                json!({"accepted": 0, "duplicates": 0, "ignored": 1, "hints": 0})
            )
        );
        assert_eq!(app.events().await, 0);
        assert_eq!(received(&app.metrics().await, "unknown", "ignored"), 1.0);
    }

    #[tokio::test]
    async fn event_grids_subscription_validation_is_answered_with_its_code() {
        let app = spawn_app().await;

        let response = validate(&app, VALIDATION_EVENT.as_bytes()).await;

        assert_eq!(
            answer(response).await,
            (
                200,
                json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
            )
        );
    }
}
