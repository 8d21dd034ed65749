//! `POST /webhooks/audit`: Entra audit-log records (Azure Monitor export) become events.

use pimbridge::auth::hmac;
use pimbridge::secret::SecretString;
use serde_json::{json, Value};

use crate::helpers::*;

/// An Event Hub batch: an activation (GROUP_A), a deactivation (GROUP_B), an expiry (GROUP_AB)
/// and five unrelated records (Core Directory, a request, a failure, an Entra role, a sign-in).
const BATCH: &str = include_str!("../fixtures/audit/pim_batch.json");
/// One activation (GROUP_B) in a PascalCase envelope, with the "group" wording.
const PASCAL_CASE: &str = include_str!("../fixtures/audit/pascal_case.json");

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// Posts `body` to /webhooks/audit, signed with the test secret.
async fn post_audit(app: &TestApp, body: Vec<u8>, content_type: &str) -> reqwest::Response {
    app.post_signed("/webhooks/audit", body, content_type).await
}

async fn post_audit_json(app: &TestApp, body: &Value) -> reqwest::Response {
    post_audit(app, body.to_string().into_bytes(), "application/json").await
}

/// The stored events as (source, id, kind, group, principal, userName, group displayName,
/// endsAt), oldest first.
type EventRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<time::OffsetDateTime>,
);

async fn stored_events(app: &TestApp) -> Vec<EventRow> {
    app.db
        .query(
            "SELECT source, source_event_id, kind, group_id, principal_id,
                    user_attributes->>'userName', group_attributes->>'displayName', ends_at
             FROM events ORDER BY occurred_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
            )
        })
        .collect()
}

/// Jobs as (source event id, application, action, lane), in a stable order.
async fn stored_jobs(app: &TestApp) -> Vec<(String, String, String, String)> {
    app.db
        .query(
            "SELECT e.source_event_id, j.application, j.action, j.lane
             FROM jobs j JOIN events e ON e.id = j.event_id
             ORDER BY e.occurred_at, j.application",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

fn s(text: &str) -> String {
    text.to_owned()
}

#[tokio::test]
async fn a_batch_stores_pim_group_events_and_ignores_every_other_record() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = post_audit(&app, BATCH.as_bytes().to_vec(), "application/json").await;

    // Assert
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"accepted": 3, "duplicates": 0, "ignored": 5})
    );
    let activation_id = "PIM_c3a7e2d1-4f5b-4a6c-8d9e-0f1a2b3c4d5e_activation";
    let deactivation_id = "PIM_4b5c6d7e-8f90-4a1b-8c2d-3e4f5a6b7c8d_deactivate";
    let expiry_id = "PIM_6e7f8a9b-0c1d-4e2f-8a3b-4c5d6e7f8a9b_expired";
    assert_eq!(
        stored_events(&app).await,
        vec![
            (
                s("audit"),
                s(activation_id),
                s("activation"),
                s(GROUP_A),
                s("a11ce000-0000-4000-8000-000000000001"),
                Some(s("alice@contoso.com")),
                Some(s("AWS-Admins")),
                Some(time::macros::datetime!(2026-11-28 18:00 UTC)),
            ),
            (
                s("audit"),
                s(deactivation_id),
                s("deactivation"),
                s(GROUP_B),
                s("b0b00000-0000-4000-8000-000000000002"),
                Some(s("bob@contoso.com")),
                Some(s("AWS-ReadOnly")),
                None,
            ),
            (
                s("audit"),
                s(expiry_id),
                s("deactivation"),
                s(GROUP_AB),
                s("d0d00000-0000-4000-8000-000000000004"),
                Some(s("dave@contoso.com")),
                Some(s("AWS-Shared")),
                None,
            ),
        ]
    );
    assert_eq!(
        stored_jobs(&app).await,
        vec![
            (s(activation_id), s("alpha"), s("add"), s("immediate")),
            (s(deactivation_id), s("beta"), s("remove"), s("deferred")),
            (s(expiry_id), s("alpha"), s("remove"), s("deferred")),
            (s(expiry_id), s("beta"), s("remove"), s("deferred")),
        ],
        "the first activation is sent at once; deactivations wait for the sync cycle"
    );
}

#[tokio::test]
async fn a_redelivered_batch_changes_nothing() {
    // Arrange
    let app = spawn_app().await;
    post_audit(&app, BATCH.as_bytes().to_vec(), "application/json").await;
    let events_before = stored_events(&app).await;
    let jobs_before = stored_jobs(&app).await;

    // Act
    let again = post_audit(&app, BATCH.as_bytes().to_vec(), "application/json").await;

    // Assert
    assert_eq!(again.status(), 202);
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        json!({"accepted": 0, "duplicates": 3, "ignored": 5})
    );
    assert_eq!(stored_events(&app).await, events_before);
    assert_eq!(stored_jobs(&app).await, jobs_before);
}

#[tokio::test]
async fn the_same_id_from_our_own_api_is_a_different_event() {
    // Arrange: the audit id is the idempotency key within source `audit` only.
    let app = spawn_app().await;
    let id = "PIM_2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f_activation";
    app.post_events(&activation(id, GROUP_B, "u1")).await;

    // Act
    let response = post_audit(&app, PASCAL_CASE.as_bytes().to_vec(), "application/json").await;

    // Assert
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"accepted": 1, "duplicates": 0, "ignored": 0})
    );
    assert_eq!(
        app.count("SELECT count(DISTINCT source) FROM events").await,
        2
    );
}

#[tokio::test]
async fn a_pascal_case_envelope_is_accepted() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = post_audit(
        &app,
        PASCAL_CASE.as_bytes().to_vec(),
        "application/json; charset=utf-8",
    )
    .await;

    // Assert
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"accepted": 1, "duplicates": 0, "ignored": 0})
    );
    assert_eq!(
        stored_events(&app).await,
        vec![(
            s("audit"),
            s("PIM_2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f_activation"),
            s("activation"),
            s(GROUP_B),
            s("e7e00000-0000-4000-8000-000000000005"),
            Some(s("erin@contoso.com")),
            Some(s("AWS-ReadOnly")),
            Some(time::macros::datetime!(2026-11-28 16:00 UTC)),
        )]
    );
    assert_eq!(
        stored_jobs(&app).await,
        vec![(
            s("PIM_2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f_activation"),
            s("beta"),
            s("add"),
            s("immediate")
        )]
    );
}

#[tokio::test]
async fn a_batch_of_only_unrelated_records_is_acknowledged() {
    // Arrange
    let app = spawn_app().await;
    let batch = fixture(BATCH);
    let records = batch["records"].as_array().unwrap();
    let unrelated: Vec<Value> = [1, 2, 4, 5, 7]
        .iter()
        .map(|&i| records[i].clone())
        .collect();

    // Act
    let response = post_audit_json(&app, &json!({ "records": unrelated })).await;
    let empty = post_audit_json(&app, &json!({"records": []})).await;

    // Assert
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"accepted": 0, "duplicates": 0, "ignored": 5})
    );
    assert_eq!(
        empty.json::<Value>().await.unwrap(),
        json!({"accepted": 0, "duplicates": 0, "ignored": 0})
    );
    assert_eq!(app.events().await, 0);
}

/// The fixture batch with record `index` changed by `spoil`.
fn batch_with(index: usize, spoil: impl Fn(&mut Value)) -> Vec<u8> {
    let mut batch = fixture(BATCH);
    spoil(&mut batch["records"][index]);
    batch.to_string().into_bytes()
}

fn remove_target(record: &mut Value, kind: &str) {
    record["properties"]["targetResources"]
        .as_array_mut()
        .unwrap()
        .retain(|t| t["type"] != kind);
}

/// A case name, the body, its content type, the expected status and code, and how the message
/// starts.
type BadInput = (
    &'static str,
    Vec<u8>,
    &'static str,
    u16,
    &'static str,
    &'static str,
);

#[tokio::test]
async fn every_class_of_bad_input_is_refused_and_stores_nothing() {
    // Arrange
    let app = spawn_app().await;
    let over_limit = json!({ "records": vec![json!({}); 1001] })
        .to_string()
        .into_bytes();
    let cases: Vec<BadInput> = vec![
        (
            "malformed JSON",
            b"{\"records\": [".to_vec(),
            "application/json",
            400,
            "malformed_json",
            "",
        ),
        (
            "an array instead of an object",
            b"[]".to_vec(),
            "application/json",
            400,
            "invalid_body",
            "records: ",
        ),
        (
            "records not an array",
            br#"{"records": {"time": "2026-11-28T10:00:00Z"}}"#.to_vec(),
            "application/json",
            400,
            "invalid_body",
            "records: ",
        ),
        (
            "a record that is not an object",
            br#"{"records": ["AuditLogs"]}"#.to_vec(),
            "application/json",
            400,
            "invalid_field",
            "records[0]: ",
        ),
        (
            "more than 1000 records",
            over_limit,
            "application/json",
            413,
            "batch_too_large",
            "",
        ),
        (
            "body over the limit",
            vec![b' '; 1024 * 1024 + 1],
            "application/json",
            413,
            "payload_too_large",
            "",
        ),
        (
            "wrong content type",
            BATCH.as_bytes().to_vec(),
            "text/plain",
            415,
            "unsupported_media_type",
            "",
        ),
        (
            "activation without a group target",
            batch_with(0, |r| remove_target(r, "Group")),
            "application/json",
            400,
            "missing_target",
            "records[0].properties.targetResources: no target of type Group",
        ),
        (
            "deactivation without a user target",
            batch_with(3, |r| remove_target(r, "User")),
            "application/json",
            400,
            "missing_target",
            "records[3].properties.targetResources: no target of type User",
        ),
        (
            "expiry with a bad timestamp",
            batch_with(6, |r| {
                r["properties"]["activityDateTime"] = json!("28/11/2026 12:00:06")
            }),
            "application/json",
            400,
            "invalid_timestamp",
            "records[6].properties.activityDateTime: ",
        ),
        (
            "activation without an id",
            batch_with(0, |r| {
                r["properties"].as_object_mut().unwrap().remove("id");
            }),
            "application/json",
            400,
            "missing_field",
            "records[0].properties.id: ",
        ),
        (
            "group target without an id",
            batch_with(0, |r| {
                r["properties"]["targetResources"][3]["id"] = json!("")
            }),
            "application/json",
            400,
            "empty_field",
            "records[0].properties.targetResources[3].id: ",
        ),
    ];
    let refused = cases.len();

    for (case, body, content_type, status, code, message) in cases {
        // Act
        let response = post_audit(&app, body, content_type).await;

        // Assert
        assert_eq!(response.status().as_u16(), status, "{case}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["code"], code, "{case}: {error}");
        let text = error["message"].as_str().unwrap_or_default();
        assert!(!text.is_empty(), "{case}: a message explains the problem");
        assert!(text.starts_with(message), "{case}: {error}");
    }

    assert_eq!(app.events().await, 0, "a batch is all or nothing");
    assert_eq!(app.jobs().await, 0);
    let metrics = app.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "pimbridge_events_received_total",
            &[("source", "audit"), ("outcome", "rejected")]
        ),
        refused as f64
    );
    assert_eq!(
        metric_value(
            &metrics,
            "pimbridge_events_received_total",
            &[("source", "audit"), ("outcome", "ignored")]
        ),
        0.0,
        "records of a refused request are not counted as ignored"
    );
}

/// The credential header a request carries, if any: (name, value).
type Credential = Option<(&'static str, String)>;

#[tokio::test]
async fn unsigned_or_wrongly_signed_requests_are_refused() {
    // Arrange
    let app = spawn_app().await;
    let body = BATCH.as_bytes().to_vec();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let other_secret = hmac::sign(&SecretString::new("not-the-secret-0123456789"), now, &body);
    let other_body = sign_now(PASCAL_CASE.as_bytes());
    let cases: Vec<(&str, Credential, &str)> = vec![
        ("unsigned", None, "missing_credentials"),
        (
            "signed with another secret",
            Some((hmac::SIGNATURE_HEADER, other_secret)),
            "invalid_signature",
        ),
        (
            "signature of another body",
            Some((hmac::SIGNATURE_HEADER, other_body)),
            "invalid_signature",
        ),
        (
            "garbled signature",
            Some((hmac::SIGNATURE_HEADER, s("v1=abc"))),
            "malformed_signature",
        ),
        (
            "bearer token where none is configured",
            Some(("authorization", s("Bearer abc.def.ghi"))),
            "bearer_not_accepted",
        ),
    ];

    for (case, header, code) in cases {
        // Act
        let mut request = app
            .http
            .post(format!("{}/webhooks/audit", app.address))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();

        // Assert
        assert_eq!(response.status(), 401, "{case}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{case}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["code"], code, "{case}: {error}");
    }
    assert_eq!(app.events().await, 0);
}

#[tokio::test]
async fn received_records_are_counted_by_type_and_outcome() {
    // Arrange: the PascalCase activation moved to a group assigned to no application.
    let app = spawn_app().await;
    let mut unrouted = fixture(PASCAL_CASE);
    unrouted["records"][0]["Properties"]["TargetResources"][0]["id"] = json!(GROUP_UNKNOWN);

    // Act
    post_audit(&app, BATCH.as_bytes().to_vec(), "application/json").await;
    post_audit(&app, BATCH.as_bytes().to_vec(), "application/json").await;
    let response = post_audit_json(&app, &unrouted).await;
    post_audit(&app, b"{".to_vec(), "application/json").await;

    // Assert
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"accepted": 1, "duplicates": 0, "ignored": 0}),
        "an event for an unassigned group is accepted, recorded and ignored"
    );
    let metrics = app.metrics().await;
    let received = |kind: &str, outcome: &str| {
        metric_value(
            &metrics,
            "pimbridge_events_received_total",
            &[("source", "audit"), ("type", kind), ("outcome", outcome)],
        )
    };
    assert_eq!(received("activation", "accepted"), 1.0);
    assert_eq!(received("deactivation", "accepted"), 2.0);
    assert_eq!(received("activation", "duplicate"), 1.0);
    assert_eq!(received("deactivation", "duplicate"), 2.0);
    assert_eq!(received("activation", "unrouted"), 1.0);
    assert_eq!(
        received("activation", "ignored"),
        4.0,
        "a failed activation and an Entra-role activation, twice"
    );
    assert_eq!(
        received("unknown", "ignored"),
        6.0,
        "three unrelated, twice"
    );
    assert_eq!(received("unknown", "rejected"), 1.0);
    assert_eq!(
        metric_value(
            &metrics,
            "pimbridge_activations_total",
            &[("application", "alpha"), ("lane", "immediate")]
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "pimbridge_events_received_total",
            &[("source", "api")]
        ),
        0.0,
        "audit records are not counted as our own events"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE routing = 'unrouted'")
            .await,
        1
    );
}

/// Microsoft's Azure Monitor export example (`properties.result` is the number 0): record 0 is a
/// Core Directory change, record 1 a PIM activation of Alice in GROUP_A.
const EXPORT: &str = include_str!("../fixtures/microsoft/azure_monitor_export.json");
/// PIM changes of GROUP_A's *owners*: two activations and a deactivation.
const OWNER: &str = include_str!("../fixtures/audit/owner_activation.json");
/// The activation in [`EXPORT`].
const EXPORT_ACTIVATION: &str = "PIM_0f2b7c1e-5a3d-4e6f-8a9b-1c2d3e4f5a6b_activation";
/// Alice's Entra object id in [`EXPORT`].
const ALICE: &str = "a11ce000-0000-4000-8000-000000000001";

fn audit_metric(metrics: &str, kind: &str, outcome: &str) -> f64 {
    metric_value(
        metrics,
        "pimbridge_events_received_total",
        &[("source", "audit"), ("type", kind), ("outcome", outcome)],
    )
}

#[tokio::test]
async fn microsofts_export_with_result_0_becomes_an_activation() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = post_audit(&app, EXPORT.as_bytes().to_vec(), "application/json").await;

    // Assert
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"accepted": 1, "duplicates": 0, "ignored": 1})
    );
    let events = stored_events(&app).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        (&events[0].1, &events[0].2, &events[0].3, &events[0].4),
        (
            &EXPORT_ACTIVATION.to_owned(),
            &"activation".to_owned(),
            &GROUP_A.to_owned(),
            &ALICE.to_owned()
        )
    );
    assert_eq!(
        stored_jobs(&app).await,
        vec![(
            EXPORT_ACTIVATION.to_owned(),
            "alpha".to_owned(),
            "add".to_owned(),
            "immediate".to_owned()
        )]
    );
}

#[tokio::test]
async fn owner_changes_and_unreadable_pim_records_are_counted_never_stored() {
    // Arrange: the owner changes, and an activation whose result has a shape nobody documents.
    let app = spawn_app().await;
    let mut unreadable = fixture(EXPORT);
    unreadable["records"][1]["properties"]["result"] = json!("Succeeded");
    let mut body = fixture(OWNER);
    body["records"]
        .as_array_mut()
        .unwrap()
        .push(unreadable["records"][1].clone());

    // Act
    let response = post_audit_json(&app, &body).await;

    // Assert
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"accepted": 0, "duplicates": 0, "ignored": 4})
    );
    assert_eq!(app.events().await, 0);
    assert_eq!(app.jobs().await, 0);
    let metrics = app.metrics().await;
    assert_eq!(audit_metric(&metrics, "activation", "ignored_owner"), 2.0);
    assert_eq!(audit_metric(&metrics, "deactivation", "ignored_owner"), 1.0);
    assert_eq!(audit_metric(&metrics, "activation", "unusable"), 1.0);
    assert_eq!(audit_metric(&metrics, "activation", "ignored"), 0.0);
}

/// Users new to AWS: an audit record names the user but not their given and family name.
mod thin_users {
    use std::time::Duration;

    use graph_emulator::{GraphEmulatorSettings, GraphUser, RunningGraphEmulator};

    use super::*;
    use crate::fixture::*;
    use crate::postgres::PgServer;

    /// The dispatching app in front of SCIM emulators; with `graph`, `[graph]` points at it.
    async fn spawn(graph: Option<&RunningGraphEmulator>) -> Fixture {
        let a = emulator().await;
        let b = emulator().await;
        let database_url = PgServer::shared().fresh_database().await;
        let mut settings = dispatch_settings(&database_url, &a, &b, |_| {});
        settings.graph = graph.map(testkit::graph::graph_section);
        let app = spawn_app_with(settings, &database_url).await;
        Fixture {
            app,
            a,
            b,
            database_url,
        }
    }

    /// Microsoft's export with its activation happening now, for an hour: an activation that
    /// has already ended is superseded rather than sent.
    fn current_export() -> Vec<u8> {
        let mut export = fixture(EXPORT);
        let activation = &mut export["records"][1]["properties"];
        activation["activityDateTime"] = json!(at(-1));
        activation["additionalDetails"] = json!([{"key": "ExpirationTime", "value": at(3600)}]);
        export.to_string().into_bytes()
    }

    /// The export's activation job once it has finished: (state, last_error).
    async fn finished_job(app: &TestApp) -> (String, Option<String>) {
        for _ in 0..500 {
            let row = app
                .db
                .query_opt(
                    "SELECT state, last_error FROM jobs WHERE state IN ('done', 'failed')",
                    &[],
                )
                .await
                .unwrap();
            if let Some(row) = row {
                return (row.get(0), row.get(1));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let jobs = app
            .db
            .query("SELECT state, last_error FROM jobs", &[])
            .await
            .unwrap();
        let jobs: Vec<(String, Option<String>)> =
            jobs.iter().map(|r| (r.get(0), r.get(1))).collect();
        panic!("the job did not finish: {jobs:?}");
    }

    #[tokio::test]
    async fn with_graph_an_audit_only_activation_of_a_user_new_to_aws_becomes_a_membership() {
        // Arrange: Graph knows Alice's names; AWS does not know her yet.
        let graph = RunningGraphEmulator::start(
            GraphEmulatorSettings::default(),
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        )
        .await
        .unwrap();
        graph.add_user(GraphUser {
            id: ALICE.into(),
            user_principal_name: Some("alice@contoso.com".into()),
            given_name: Some("Alice".into()),
            surname: Some("Liddell".into()),
            display_name: Some("Alice Liddell".into()),
            mail: Some("alice@contoso.com".into()),
        });
        let f = spawn(Some(&graph)).await;

        // Act
        let response = post_audit(&f.app, current_export(), "application/json").await;

        // Assert
        assert_eq!(response.status(), 202);
        assert_eq!(finished_job(&f.app).await, ("done".to_owned(), None));
        assert_eq!(members(&f.a), 1);
        let alice =
            f.a.state()
                .users
                .iter()
                .find(|u| u["userName"] == "alice@contoso.com")
                .cloned()
                .expect("Alice was created in AWS");
        assert_eq!(alice["name"]["givenName"], "Alice");
        assert_eq!(alice["name"]["familyName"], "Liddell");
        assert_eq!(alice["externalId"], ALICE);
        assert!(graph
            .request_log()
            .iter()
            .any(|r| r.path.ends_with(&format!("/users/{ALICE}"))));
    }

    #[tokio::test]
    async fn without_graph_it_fails_with_the_missing_attribute() {
        // Arrange
        let f = spawn(None).await;

        // Act
        let response = post_audit(&f.app, current_export(), "application/json").await;

        // Assert
        assert_eq!(response.status(), 202);
        let (state, error) = finished_job(&f.app).await;
        assert_eq!(state, "failed");
        let error = error.unwrap_or_default();
        assert!(error.contains("name.givenName"), "{error}");
        assert_eq!(members(&f.a), 0);
    }
}
