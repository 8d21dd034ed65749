//! `POST /v1/events`: storage, idempotency, routing and every class of bad input.

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn a_single_event_is_stored_with_one_job_per_assigned_application() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = app
        .post_events(&activation("evt-1", GROUP_AB, "user-1"))
        .await;

    // Assert
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"accepted": 1, "duplicates": 0}));
    assert_eq!(app.events().await, 1);
    let rows = app
        .db
        .query(
            "SELECT j.application, j.action, e.source_event_id, e.user_attributes->>'givenName'
             FROM jobs j JOIN events e ON e.id = j.event_id ORDER BY j.application",
            &[],
        )
        .await
        .unwrap();
    let jobs: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        jobs,
        vec![
            ("alpha".into(), "add".into(), "evt-1".into(), "Alice".into()),
            ("beta".into(), "add".into(), "evt-1".into(), "Alice".into()),
        ]
    );
}

#[tokio::test]
async fn a_batch_is_stored_and_counted() {
    let app = spawn_app().await;
    let batch = json!([
        activation("b-1", GROUP_A, "u1"),
        activation("b-2", GROUP_B, "u2"),
        deactivation("b-3", GROUP_A, "u1"),
    ]);

    let response = app.post_events(&batch).await;

    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"accepted": 3, "duplicates": 0})
    );
    assert_eq!(app.events().await, 3);
    assert_eq!(app.jobs().await, 3);
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE action = 'remove' AND lane = 'deferred'")
            .await,
        1,
        "a deactivation waits for the sync cycle"
    );
}

#[tokio::test]
async fn a_redelivered_event_changes_nothing() {
    let app = spawn_app().await;
    let event = activation("dup-1", GROUP_A, "u1");
    assert_eq!(app.post_events(&event).await.status(), 202);
    let jobs_before = app.jobs().await;

    let again = app.post_events(&event).await;
    let mixed = app
        .post_events(&json!([event, activation("dup-2", GROUP_A, "u2")]))
        .await;

    assert_eq!(
        again.json::<Value>().await.unwrap(),
        json!({"accepted": 0, "duplicates": 1})
    );
    assert_eq!(
        mixed.json::<Value>().await.unwrap(),
        json!({"accepted": 1, "duplicates": 1})
    );
    assert_eq!(app.events().await, 2);
    assert_eq!(app.jobs().await, jobs_before + 1);
    let metrics = app.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "pimbridge_events_received_total",
            &[("outcome", "duplicate")]
        ),
        2.0
    );
}

#[tokio::test]
async fn two_hundred_concurrent_posts_of_fifty_ids_leave_exactly_fifty_events() {
    let app = spawn_app().await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let http = app.http.clone();
        let url = format!("{}/v1/events", app.address);
        // Ids repeat every 50 posts; alternate groups so both applications are involved.
        let group = if i % 2 == 0 { GROUP_A } else { GROUP_AB };
        let body = activation(&format!("c-{}", i % 50), group, &format!("u{}", i % 50)).to_string();
        tasks.push(tokio::spawn(async move {
            // As the forwarder contract says: a 503 (the pool is busy) is retried after a pause.
            for _ in 0..20 {
                let response = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-pimbridge-signature", sign_now(body.as_bytes()))
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                if response.status() != 503 {
                    return response.json::<Value>().await.unwrap();
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            panic!("still 503 after 20 tries");
        }));
    }
    let mut accepted = 0;
    let mut duplicates = 0;
    for task in tasks {
        let body = task.await.unwrap();
        accepted += body["accepted"].as_i64().unwrap();
        duplicates += body["duplicates"].as_i64().unwrap();
    }

    assert_eq!(app.events().await, 50);
    assert_eq!(accepted, 50);
    assert_eq!(duplicates, 150);
    assert_eq!(
        app.count("SELECT count(*) FROM (SELECT event_id, application FROM jobs GROUP BY 1, 2 HAVING count(*) > 1) d").await,
        0,
        "no event has two jobs for one application"
    );
}

#[tokio::test]
async fn an_event_for_an_unassigned_group_is_recorded_ignored_and_counted() {
    let app = spawn_app().await;

    let response = app
        .post_events(&activation("orphan-1", GROUP_UNKNOWN, "u1"))
        .await;

    assert_eq!(response.status(), 202);
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE routing = 'unrouted'")
            .await,
        1
    );
    assert_eq!(app.jobs().await, 0);
    let metrics = app.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "pimbridge_events_received_total",
            &[
                ("source", "api"),
                ("type", "activation"),
                ("outcome", "unrouted")
            ]
        ),
        1.0
    );
}

#[tokio::test]
async fn every_class_of_bad_input_is_refused_and_stores_nothing() {
    let app = spawn_app().await;
    let valid = activation("bad-0", GROUP_A, "u1");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = valid.clone();
        f(&mut v);
        v.to_string().into_bytes()
    };
    let over_limit = {
        let many: Vec<Value> = (0..1001)
            .map(|i| activation(&format!("big-{i}"), GROUP_A, "u"))
            .collect();
        Value::Array(many).to_string().into_bytes()
    };
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        (
            "malformed JSON",
            b"{\"id\": ".to_vec(),
            "application/json",
            400,
            "malformed_json",
        ),
        (
            "scalar body",
            b"true".to_vec(),
            "application/json",
            400,
            "invalid_body",
        ),
        (
            "empty batch",
            b"[]".to_vec(),
            "application/json",
            400,
            "empty_batch",
        ),
        (
            "wrong content type",
            valid.to_string().into_bytes(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            "batch over 1000",
            over_limit,
            "application/json",
            413,
            "batch_too_large",
        ),
        (
            "body over the limit",
            vec![b' '; 1024 * 1024 + 1],
            "application/json",
            413,
            "payload_too_large",
        ),
        (
            "unknown type",
            with(&|v| v["type"] = json!("elevation")),
            "application/json",
            400,
            "invalid_type",
        ),
        (
            "missing groupId",
            with(&|v| {
                v.as_object_mut().unwrap().remove("groupId");
            }),
            "application/json",
            400,
            "missing_field",
        ),
        (
            "empty principalId",
            with(&|v| v["principalId"] = json!("")),
            "application/json",
            400,
            "empty_field",
        ),
        (
            "bad occurredAt",
            with(&|v| v["occurredAt"] = json!("28/11/2026")),
            "application/json",
            400,
            "invalid_timestamp",
        ),
        (
            "bad endsAt",
            with(&|v| v["endsAt"] = json!("tomorrow")),
            "application/json",
            400,
            "invalid_timestamp",
        ),
        (
            "endsAt before occurredAt",
            with(&|v| v["endsAt"] = json!("2026-11-28T09:59:59Z")),
            "application/json",
            400,
            "ends_before_occurred",
        ),
    ];

    for (case, body, content_type, status, code) in cases {
        let response = app.post_events_raw(body, content_type).await;
        assert_eq!(response.status().as_u16(), status, "{case}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["code"], code, "{case}: {error}");
        assert!(
            !error["message"].as_str().unwrap_or_default().is_empty(),
            "{case}: a message explains the problem"
        );
    }

    assert_eq!(app.events().await, 0);
    assert_eq!(app.jobs().await, 0);
}

#[tokio::test]
async fn a_field_error_names_the_batch_element_and_field() {
    let app = spawn_app().await;
    let mut bad = activation("x-2", GROUP_A, "u2");
    bad["occurredAt"] = json!("soon");

    let response = app
        .post_events(&json!([activation("x-1", GROUP_A, "u1"), bad]))
        .await;

    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("[1].occurredAt"),
        "{error}"
    );
    assert_eq!(app.events().await, 0, "a batch is all or nothing");
}

#[tokio::test]
async fn events_survive_a_restart_of_the_application() {
    let mut app = spawn_app().await;
    app.post_events(&json!([
        activation("r-1", GROUP_A, "u1"),
        deactivation("r-2", GROUP_B, "u2")
    ]))
    .await;

    app.restart().await;

    assert_eq!(app.events().await, 2);
    let again = app.post_events(&activation("r-1", GROUP_A, "u1")).await;
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        json!({"accepted": 0, "duplicates": 1}),
        "idempotency holds across restarts"
    );
}
