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

/// An event of `kind` for `user` in `GROUP_A`, `occurred` seconds from now, naming `grant`.
fn grant_event(id: &str, kind: &str, user: &str, occurred: i64, grant: Option<&str>) -> Value {
    let mut event = json!({
        "id": id,
        "type": kind,
        "occurredAt": at(occurred),
        "groupId": GROUP_A,
        "principalId": user,
    });
    if kind == "activation" {
        event["endsAt"] = json!(at(occurred + 4 * 3600));
    }
    if let Some(grant) = grant {
        event["grantId"] = json!(grant);
    }
    event
}

/// The lane of each job of `alpha`, by event id in id order.
async fn alpha_lanes(app: &TestApp) -> Vec<(String, String)> {
    app.db
        .query(
            "SELECT e.source_event_id, j.lane FROM jobs j JOIN events e ON e.id = j.event_id
             WHERE j.application = 'alpha' ORDER BY e.source_event_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn a_batch_admits_exactly_the_first_activations_in_id_order_and_reports_duplicates() {
    let app = spawn_app().await; // alpha: 5 activations per 10 s (the default)
                                 // Sent out of order, with one id twice: stored in id order, the repeat a duplicate.
    let mut batch: Vec<Value> = (0..12)
        .rev()
        .map(|i| activation(&format!("adm-{i:02}"), GROUP_A, &format!("u{i}")))
        .collect();
    batch.push(activation("adm-03", GROUP_A, "u3"));

    let first = app.post_events(&Value::Array(batch.clone())).await;
    assert_eq!(first.status(), 202);
    assert_eq!(
        first.json::<Value>().await.unwrap(),
        json!({"accepted": 12, "duplicates": 1})
    );
    let lanes = alpha_lanes(&app).await;
    let immediate: Vec<&str> = lanes
        .iter()
        .filter(|(_, lane)| lane == "immediate")
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(
        immediate,
        ["adm-00", "adm-01", "adm-02", "adm-03", "adm-04"]
    );
    assert_eq!(
        app.count("SELECT count(DISTINCT admitted_at) FROM jobs WHERE lane = 'immediate'")
            .await,
        1,
        "one batch, one admission instant"
    );

    // Again, with two new ones: the window is full, the old ones are duplicates.
    batch.push(activation("adm-12", GROUP_A, "u12"));
    batch.push(activation("adm-13", GROUP_AB, "u13"));
    let second = app.post_events(&Value::Array(batch)).await;
    assert_eq!(
        second.json::<Value>().await.unwrap(),
        json!({"accepted": 2, "duplicates": 13})
    );
    assert_eq!(app.events().await, 14);
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE application = 'alpha' AND lane = 'immediate'")
            .await,
        5,
        "never more than the limit in one window"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE application = 'beta' AND lane = 'immediate'")
            .await,
        1,
        "beta's window is its own"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM grants").await,
        15,
        "a grant per activation and application"
    );
}

#[tokio::test]
async fn a_batch_fills_only_what_is_left_of_the_window_and_never_admits_a_deactivation() {
    let app = spawn_app().await; // alpha: 5 activations per 10 s (the default)
    for i in 0..3 {
        let single = activation(&format!("left-0{i}"), GROUP_A, &format!("l{i}"));
        assert_eq!(app.post_events(&single).await.status(), 202);
    }

    // Two slots are left: the batch's first two activations in id order take them; its
    // deactivation (of another pair, sorted first) stays with the cycles.
    let batch = json!([
        activation("left-13", GROUP_A, "l13"),
        deactivation("left-10", GROUP_A, "l0"),
        activation("left-12", GROUP_A, "l12"),
        activation("left-14", GROUP_A, "l14"),
        activation("left-11", GROUP_A, "l11"),
    ]);
    assert_eq!(app.post_events(&batch).await.status(), 202);

    let lanes = alpha_lanes(&app).await;
    let lane_of = |id: &str| {
        lanes
            .iter()
            .find(|(event, _)| event == id)
            .map(|(_, lane)| lane.as_str())
            .unwrap()
    };
    assert_eq!(lane_of("left-10"), "deferred");
    assert_eq!(lane_of("left-11"), "immediate");
    assert_eq!(lane_of("left-12"), "immediate");
    assert_eq!(lane_of("left-13"), "deferred");
    assert_eq!(lane_of("left-14"), "deferred");
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE lane = 'immediate'")
            .await,
        5
    );
}

#[tokio::test]
async fn a_quarantined_application_defers_a_whole_batch() {
    let app = spawn_app().await;
    app.db
        .execute(
            "UPDATE applications SET quarantined_at = now() WHERE name = 'alpha'",
            &[],
        )
        .await
        .unwrap();

    let response = app
        .post_events(&testkit::fixture::activations("q", GROUP_AB, 7))
        .await;

    assert_eq!(response.status(), 202);
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE application = 'alpha' AND lane = 'deferred'")
            .await,
        7
    );
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE application = 'beta' AND lane = 'immediate'")
            .await,
        5
    );
}

#[tokio::test]
async fn an_activation_and_its_deactivation_in_one_batch_leave_no_active_grant() {
    let app = spawn_app().await;
    let batch = json!([
        grant_event("pair-2", "deactivation", "u1", 0, None),
        grant_event("pair-1", "activation", "u1", -60, None),
        // Delivered before its activation in the batch's id order, and ends it all the same.
        grant_event("pair-0", "deactivation", "u2", 0, None),
        grant_event("pair-3", "activation", "u2", -60, None),
        activation("pair-4", GROUP_A, "u3"),
    ]);

    let response = app.post_events(&batch).await;

    assert_eq!(response.status(), 202);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM grants
             WHERE effective_end > clock_timestamp() AND principal_id IN ('u1', 'u2')"
        )
        .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM grants WHERE effective_end > clock_timestamp()")
            .await,
        1,
        "u3's grant is untouched"
    );
}

/// The grants and jobs of a database, in terms the sender chose (event ids, not row ids).
async fn grants_and_jobs(app: &TestApp) -> (Vec<String>, Vec<String>) {
    let grants = app
        .db
        .query(
            "SELECT concat_ws(' | ', g.application, g.source, g.grant_key, g.principal_id,
                              g.started_at, g.activated_at, g.ends_at, a.source_event_id,
                              g.note, g.ended_at IS NULL, d.source_event_id,
                              g.ended_at = d.occurred_at)
             FROM grants g LEFT JOIN events a ON a.id = g.event_id
             LEFT JOIN events d ON d.id = g.ended_by
             ORDER BY g.application, g.grant_key",
            &[],
        )
        .await
        .unwrap();
    let jobs = app
        .db
        .query(
            "SELECT concat_ws(' | ', e.source_event_id, j.application, j.action, j.lane)
             FROM jobs j JOIN events e ON e.id = j.event_id ORDER BY j.id",
            &[],
        )
        .await
        .unwrap();
    (
        grants.iter().map(|r| r.get(0)).collect(),
        jobs.iter().map(|r| r.get(0)).collect(),
    )
}

#[tokio::test]
async fn a_batch_leaves_the_same_grants_and_jobs_as_its_events_posted_one_at_a_time_in_id_order() {
    // Before: a grant of u9 under key "shared", which a batch activation of another user extends.
    let before = json!([grant_event(
        "e-00",
        "activation",
        "u9",
        -600,
        Some("shared")
    )]);
    let batch = json!([
        // Independent changes.
        grant_event("e-10", "activation", "u1", -60, None),
        grant_event("e-11", "deactivation", "u2", 0, None),
        activation("e-12", GROUP_AB, "u3"),
        // One pair, in both orders, and a deactivation ahead of the sender's clock: the later
        // one in id order must not be seen by the earlier.
        grant_event("e-20", "activation", "u4", -120, None),
        grant_event("e-21", "deactivation", "u4", 120, None),
        grant_event("e-22", "deactivation", "u5", -30, None),
        grant_event("e-23", "activation", "u5", -90, None),
        // A deactivation naming another grant than the activation after it.
        grant_event("e-30", "activation", "u6", -300, Some("k6")),
        grant_event("e-31", "deactivation", "u6", -200, Some("other")),
        grant_event("e-32", "activation", "u6", -100, None),
        // An extension (same key twice, the older one second) and a repeat.
        grant_event("e-40", "activation", "u7", -50, Some("k7")),
        grant_event("e-41", "activation", "u7", -80, Some("k7")),
        grant_event("e-40", "activation", "u7", -50, Some("k7")),
        // u9's deactivation, then an extension of u9's grant by u8 which starts it again: the
        // two touch one grant though their pairs differ.
        grant_event("e-50", "deactivation", "u9", -40, None),
        grant_event("e-51", "activation", "u8", -20, Some("shared")),
    ]);
    let batched = spawn_app().await;
    let single = spawn_app().await;
    for app in [&batched, &single] {
        assert_eq!(app.post_events(&before).await.status(), 202);
    }

    let response = batched.post_events(&batch).await;
    let mut singles = batch.as_array().unwrap().clone();
    singles.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let mut duplicates = 0;
    for event in &singles {
        let body: Value = single.post_events(event).await.json().await.unwrap();
        duplicates += body["duplicates"].as_i64().unwrap();
    }

    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"accepted": 14, "duplicates": 1})
    );
    assert_eq!(duplicates, 1);
    let (batched, single) = (
        grants_and_jobs(&batched).await,
        grants_and_jobs(&single).await,
    );
    assert_eq!(batched.0, single.0, "grants");
    assert_eq!(batched.1, single.1, "jobs");
}

/// POSTs `body` and expects its 202 without waiting for any lock held elsewhere (bounded).
async fn accepted_at_once(app: &TestApp, body: &Value, why: &str) {
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), app.post_events(body))
        .await
        .expect(why);
    assert_eq!(response.status(), 202);
}

/// Waits (bounded) until a backend of the test's database waits for a lock of `kind`
/// (`advisory`, `tuple`, `transactionid`, …).
async fn a_backend_waits_for(app: &TestApp, kinds: &[&str]) {
    let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
    for _ in 0..500 {
        let waiting = app
            .db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'
                   AND wait_event = ANY($1)",
                &[&kinds],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no intake waited for a lock of kind {kinds:?}");
}

#[tokio::test]
async fn an_intake_waits_only_for_intakes_of_the_same_pair_or_for_a_large_request() {
    use pimbridge::store::events::{lock_applications, lock_keys, pair_key, IntakeLock};
    // Arrange: an intake of one request in flight, holding alpha as small requests do and the
    // key of the pair (alpha, group A, "busy").
    let app = spawn_app().await;
    let pool = pool_on(app.database_url.as_str(), 1);
    let mut holder = pool.get().await.unwrap();
    let in_flight = holder.transaction().await.unwrap();
    lock_applications(&in_flight, &["alpha"], IntakeLock::Keys)
        .await
        .unwrap();
    lock_keys(&in_flight, &[pair_key("alpha", GROUP_A, "busy")])
        .await
        .unwrap();

    // Act + Assert: another pair of the same application goes through meanwhile.
    accepted_at_once(
        &app,
        &activation("free-1", GROUP_A, "free"),
        "an intake of another pair waited for the one in flight",
    )
    .await;

    // The same pair waits for the one in flight, and so does a request large enough to lock the
    // whole application.
    let same_body = activation("busy-1", GROUP_A, "busy");
    let same = app.post_events(&same_body);
    tokio::pin!(same);
    tokio::select! {
        _ = &mut same => panic!("an intake of the same pair did not wait"),
        () = a_backend_waits_for(&app, &["advisory"]) => {}
    }
    let large: Vec<Value> = (0..20)
        .map(|i| activation(&format!("wide-{i}"), GROUP_A, &format!("wide-{i}")))
        .collect();
    let large_body = json!(large);
    let large = app.post_events(&large_body);
    tokio::pin!(large);
    tokio::select! {
        _ = &mut large => panic!("a large request did not wait"),
        _ = &mut same => panic!("an intake of the same pair did not wait"),
        () = a_backend_waits_for(&app, &["tuple", "transactionid"]) => {}
    }
    in_flight.rollback().await.unwrap();
    assert_eq!(same.await.status(), 202);
    assert_eq!(large.await.status(), 202);
    assert_eq!(app.events().await, 22);
}

#[tokio::test]
async fn a_full_admission_window_defers_without_waiting_for_an_admission_in_flight() {
    use pimbridge::store::events::lock_admission;
    // Arrange: alpha's window is full (five admitted); an intake that may admit to alpha holds
    // its admission lock, and another holds beta's, whose window is empty.
    let app = spawn_app().await;
    let five: Vec<Value> = (0..5)
        .map(|i| activation(&format!("full-{i}"), GROUP_A, &format!("full-{i}")))
        .collect();
    assert_eq!(app.post_events(&json!(five)).await.status(), 202);
    let pool = pool_on(app.database_url.as_str(), 1);
    let mut holder = pool.get().await.unwrap();
    let in_flight = holder.transaction().await.unwrap();
    lock_admission(&in_flight, "alpha").await.unwrap();
    lock_admission(&in_flight, "beta").await.unwrap();

    // Act + Assert: the sixth activation of alpha is deferred at once.
    accepted_at_once(
        &app,
        &activation("full-5", GROUP_A, "full-5"),
        "a deferral waited for the admission lock",
    )
    .await;
    assert_eq!(
        alpha_lanes(&app).await.last().unwrap(),
        &("full-5".to_string(), "deferred".to_string())
    );

    // An activation of beta, which may be admitted, waits for beta's admission lock.
    let first_body = activation("beta-0", GROUP_B, "beta-0");
    let first = app.post_events(&first_body);
    tokio::pin!(first);
    tokio::select! {
        _ = &mut first => panic!("an admission did not wait for the one in flight"),
        () = a_backend_waits_for(&app, &["advisory"]) => {}
    }
    in_flight.rollback().await.unwrap();
    assert_eq!(first.await.status(), 202);
    let lane: String = app
        .db
        .query_one("SELECT lane FROM jobs WHERE application = 'beta'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(lane, "immediate");
}

/// An intake transaction on a pool of one connection that has stored an event of alpha and its job.
async fn an_intake_transaction_with_an_event(
    app: &TestApp,
) -> (
    deadpool_postgres::Pool,
    pimbridge::store::events::IntakeTransaction,
) {
    let pool = pool_on(&app.database_url, 1);
    let tx = pimbridge::store::events::IntakeTransaction::begin(pool.get().await.unwrap(), true)
        .await
        .unwrap();
    let event = pimbridge::domain::NewEvent {
        id: "rolled-back".into(),
        kind: pimbridge::domain::EventKind::Activation,
        occurred_at: time::OffsetDateTime::now_utc(),
        group_id: GROUP_A.into(),
        principal_id: "u1".into(),
        ends_at: None,
        grant_id: None,
        user: None,
        group: None,
    };
    pimbridge::store::events::insert_events(
        tx.client(),
        pimbridge::domain::EventSource::Api,
        &[(&event, &["alpha".to_string()][..])],
    )
    .await
    .unwrap();
    (pool, tx)
}

/// Whether `client` is out of any transaction: the intake transaction's own settings are gone
/// (and the connection answers: it is not in an aborted transaction).
async fn outside_a_transaction(client: &deadpool_postgres::Client) -> bool {
    let plan_cache_mode: String = client
        .query_one("SHOW plan_cache_mode", &[])
        .await
        .expect("the connection is usable: not in an aborted transaction")
        .get(0);
    plan_cache_mode == "auto"
}

#[tokio::test]
async fn an_intake_transaction_whose_last_statement_fails_stores_nothing_and_frees_its_connection()
{
    let app = spawn_app().await;
    let (_pool, tx) = an_intake_transaction_with_an_event(&app).await;

    // Act: its last statement fails, with the COMMIT already sent behind it (as admission's).
    let c = tx.client();
    let failing = c.prepare("SELECT 1 / $1::int").await.unwrap();
    let result = tx
        .commit_after(async {
            c.query(&failing, &[&0i32]).await?;
            Ok(())
        })
        .await;

    // Assert: an error, nothing stored, and the connection is out of the transaction.
    assert!(result.is_err());
    assert_eq!(app.count("SELECT count(*) FROM events").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 0);
    assert!(outside_a_transaction(&tx.into_client()).await);
}

#[tokio::test]
async fn an_intake_transaction_dropped_midway_stores_nothing_and_never_returns_to_the_pool_open() {
    // Arrange + Act: the request is cancelled with its transaction open.
    let app = spawn_app().await;
    let (pool, tx) = an_intake_transaction_with_an_event(&app).await;
    drop(tx);

    // Assert: the pool's next connection is outside any transaction, and nothing was stored.
    assert!(outside_a_transaction(&pool.get().await.unwrap()).await);
    assert_eq!(app.count("SELECT count(*) FROM events").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 0);
}

#[tokio::test]
async fn an_intake_waiting_for_its_application_holds_none_of_its_keys() {
    use pimbridge::store::events::{lock_applications, IntakeLock};
    // Arrange: a large request's intake in flight, holding alpha's row.
    let app = spawn_app().await;
    let pool = pool_on(app.database_url.as_str(), 1);
    let mut holder = pool.get().await.unwrap();
    let in_flight = holder.transaction().await.unwrap();
    lock_applications(&in_flight, &["alpha"], IntakeLock::Applications)
        .await
        .unwrap();

    // Act: a small request for alpha waits for the row.
    let body = activation("behind-1", GROUP_A, "behind");
    let waiting = app.post_events(&body);
    tokio::pin!(waiting);
    tokio::select! {
        _ = &mut waiting => panic!("the intake did not wait for the application's row"),
        () = a_backend_waits_for(&app, &["tuple", "transactionid"]) => {}
    }

    // Assert: while it waits it holds no key (locks are taken applications first, then keys,
    // so no two intakes deadlock); once the row is free it goes through.
    // The advisory lock class of intake's keys ("pimk").
    const INTAKE_KEYS: u32 = 0x7069_6d6b;
    let keys_held = app
        .count(&format!(
            "SELECT count(*) FROM pg_locks
             WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND locktype = 'advisory' AND classid = {INTAKE_KEYS} AND granted"
        ))
        .await;
    assert_eq!(
        keys_held, 0,
        "a key was locked before the application's row"
    );
    in_flight.rollback().await.unwrap();
    assert_eq!(waiting.await.status(), 202);
}
