//! The admin API: its own credential, and what operators see and do through it.

use std::time::{Duration, Instant};

use aws_scim_emulator::Fault;
use reqwest::Method;
use serde_json::{json, Value};

use crate::fixture::*;
use crate::helpers::*;

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// The cycles fixture with the admin API on.
async fn spawn_admin() -> Fixture {
    let f = spawn_with_cycles(|_| {}).await;
    let settings = with_admin(
        cycle_settings(&f.database_url, &f.a, &f.b, |_| {}),
        ADMIN_TOKEN,
    );
    let app = spawn_app_with(settings, &f.database_url).await;
    Fixture { app, ..f }
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app
        .http
        .request(method, format!("{}{path}", app.internal_address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn admin(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    call(app, method, path, Some(ADMIN_TOKEN), body).await
}

/// Asks for a cycle through the API and waits until it has finished; returns its id.
async fn cycle_now(app: &TestApp, application: &str) -> i64 {
    let before = app.count("SELECT coalesce(max(id), 0) FROM cycles").await;
    let (status, _) = admin(
        app,
        Method::POST,
        &format!("/admin/applications/{application}/cycles"),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let start = Instant::now();
    loop {
        let done = app
            .count(&format!(
                "SELECT coalesce(max(id), 0) FROM cycles WHERE id > {before}
                 AND application = '{application}' AND outcome <> 'running'"
            ))
            .await;
        if done > 0 {
            return done;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no cycle");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_admin_api_is_off_without_a_token() {
    let app = spawn_app().await;

    let (status, body) = call(&app, Method::GET, "/admin/applications", Some("x"), None).await;

    assert_eq!(status, 404);
    assert_eq!(body["code"], "admin_disabled");
}

#[tokio::test]
async fn the_admin_api_needs_its_own_token() {
    let f = spawn_admin().await;

    let none = call(&f.app, Method::GET, "/admin/applications", None, None).await;
    let wrong = call(
        &f.app,
        Method::GET,
        "/admin/applications",
        Some("nope"),
        None,
    )
    .await;
    let intake_secret = call(
        &f.app,
        Method::GET,
        "/admin/applications",
        Some(HMAC_SECRET),
        None,
    )
    .await;
    let right = admin(&f.app, Method::GET, "/admin/applications", None).await;

    assert_eq!(
        (none.0, none.1["code"].as_str()),
        (401, Some("invalid_admin_token"))
    );
    assert_eq!(wrong.0, 401);
    assert_eq!(intake_secret.0, 401);
    assert_eq!(right.0, 200);
}

#[tokio::test]
async fn operators_see_queues_and_cycles_and_can_start_a_cycle() {
    // Arrange: seven activations wait in the deferred lane.
    let f = spawn_admin().await;
    f.app.post_events(&activations("adm", GROUP_A, 12)).await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    let (_, before) = admin(&f.app, Method::GET, "/admin/applications/alpha", None).await;

    // Act
    let cycle = cycle_now(&f.app, "alpha").await;
    let (_, after) = admin(&f.app, Method::GET, "/admin/applications/alpha", None).await;
    let (_, list) = admin(&f.app, Method::GET, "/admin/applications", None).await;
    let (_, cycles) = admin(
        &f.app,
        Method::GET,
        "/admin/applications/alpha/cycles?limit=1",
        None,
    )
    .await;
    let unknown = admin(&f.app, Method::GET, "/admin/applications/gamma", None).await;

    // Assert
    assert_eq!(before["queue"]["deferred"], 7);
    assert_eq!(before["lastCycle"]["kind"], "initial");
    assert_eq!(after["queue"]["deferred"], 0);
    assert_eq!(after["lastCycle"]["id"], cycle);
    assert_eq!(after["lastCycle"]["changesApplied"], 7);
    assert_eq!(after["quarantine"], Value::Null);
    let names: Vec<&str> = list["applications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(cycles["cycles"].as_array().unwrap().len(), 1);
    assert_eq!(cycles["cycles"][0]["id"], cycle);
    assert_eq!(
        (unknown.0, unknown.1["code"].as_str()),
        (404, Some("unknown_application"))
    );
    assert_eq!(members(&f.a), 12);
}

#[tokio::test]
async fn the_provisioning_log_can_be_filtered() {
    let f = spawn_admin().await;
    f.app.post_events(&activations("log", GROUP_A, 8)).await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    let cycle = cycle_now(&f.app, "alpha").await;

    let (_, of_cycle) = admin(
        &f.app,
        Method::GET,
        &format!(
            "/admin/provisioning-log?application=alpha&status=succeeded&action=add&cycle={cycle}"
        ),
        None,
    )
    .await;
    let (_, immediate) = admin(
        &f.app,
        Method::GET,
        "/admin/provisioning-log?application=alpha&action=add&limit=1000",
        None,
    )
    .await;
    let (_, one_user) = admin(
        &f.app,
        Method::GET,
        "/admin/provisioning-log?principal=log-user-0&action=add",
        None,
    )
    .await;
    let bad_status = admin(
        &f.app,
        Method::GET,
        "/admin/provisioning-log?status=maybe",
        None,
    )
    .await;
    let bad_since = admin(
        &f.app,
        Method::GET,
        "/admin/provisioning-log?since=yesterday",
        None,
    )
    .await;

    assert_eq!(of_cycle["entries"].as_array().unwrap().len(), 3);
    assert!(of_cycle["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["cycleId"] == cycle && e["action"] == "add"));
    assert_eq!(
        immediate["entries"].as_array().unwrap().len(),
        8,
        "5 immediate + 3 in the cycle"
    );
    assert_eq!(one_user["entries"].as_array().unwrap().len(), 1);
    assert_eq!(one_user["entries"][0]["groupId"], GROUP_A);
    assert_eq!(
        (bad_status.0, bad_status.1["code"].as_str()),
        (400, Some("invalid_request"))
    );
    assert_eq!(bad_since.0, 400);
}

#[tokio::test]
async fn failed_jobs_stay_visible_and_can_be_retried() {
    // Arrange: AWS refuses the first request once, so the immediate job fails for good.
    let f = spawn_admin().await;
    f.a.inject(Fault::error(400, 1));
    f.app
        .post_events(&activation("retry-1", GROUP_A, "retry-user"))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    let (_, failed) = admin(&f.app, Method::GET, "/admin/jobs?state=failed", None).await;

    // Act
    let (status, retried) = admin(
        &f.app,
        Method::POST,
        "/admin/jobs/retry",
        Some(json!({"application": "alpha"})),
    )
    .await;
    let start = Instant::now();
    while f
        .app
        .count("SELECT count(*) FROM jobs WHERE state = 'done'")
        .await
        == 0
    {
        assert!(start.elapsed() < Duration::from_secs(10), "never retried");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, done) = admin(&f.app, Method::GET, "/admin/jobs?application=alpha", None).await;
    let bad_body = admin(
        &f.app,
        Method::POST,
        "/admin/jobs/retry",
        Some(json!({"applications": "alpha"})),
    )
    .await;

    // Assert
    assert_eq!(failed["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(failed["jobs"][0]["eventId"], "retry-1");
    assert!(failed["jobs"][0]["lastError"]
        .as_str()
        .unwrap()
        .contains("400"));
    assert_eq!((status, retried["retried"].as_u64()), (200, Some(1)));
    assert_eq!(done["jobs"][0]["state"], "done");
    assert_eq!(done["jobs"][0]["lane"], "deferred");
    assert_eq!(members(&f.a), 1);
    assert_eq!(bad_body.0, 400);
}

#[tokio::test]
async fn the_connection_test_reports_what_aws_says() {
    let f = spawn_admin().await;

    let ok = admin(
        &f.app,
        Method::POST,
        "/admin/applications/alpha/test-connection",
        None,
    )
    .await;
    f.a.inject(Fault::error(401, 1));
    let refused = admin(
        &f.app,
        Method::POST,
        "/admin/applications/alpha/test-connection",
        None,
    )
    .await;

    assert_eq!((ok.0, ok.1["ok"].as_bool()), (200, Some(true)));
    assert_eq!(
        (refused.0, refused.1["code"].as_str()),
        (502, Some("aws_refused_credentials"))
    );
    assert!(!refused.1["message"]
        .as_str()
        .unwrap()
        .contains("emulator-token"));
}

#[tokio::test]
async fn an_operator_can_provision_on_demand() {
    let f = spawn_admin().await;
    let user = json!({"userName": "ondemand@contoso.com", "givenName": "On", "familyName": "Demand",
                      "displayName": "On Demand", "email": "ondemand@contoso.com"});
    let path = "/admin/applications/alpha/provision";

    let added = admin(
        &f.app,
        Method::POST,
        path,
        Some(
            json!({"action": "add", "principalId": "od-1", "groupId": GROUP_A,
                    "user": user, "group": {"displayName": "AWS-Admins"}}),
        ),
    )
    .await;
    let members_after_add = members(&f.a);
    let removed = admin(
        &f.app,
        Method::POST,
        path,
        Some(json!({"action": "remove", "principalId": "od-1", "groupId": GROUP_A})),
    )
    .await;
    let bad = admin(
        &f.app,
        Method::POST,
        path,
        Some(json!({"action": "toggle", "principalId": "od-1", "groupId": GROUP_A})),
    )
    .await;
    let malformed = f
        .app
        .http
        .post(format!("{}{path}", f.app.internal_address))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();

    assert_eq!(added.0, 200, "{:?}", added.1);
    assert_eq!(members_after_add, 1);
    assert_eq!(removed.0, 200);
    assert_eq!(members(&f.a), 0);
    assert_eq!(
        (bad.0, bad.1["code"].as_str()),
        (400, Some("invalid_request"))
    );
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        f.app
            .count("SELECT count(*) FROM provisioning_log WHERE job_id IS NULL AND cycle_id IS NULL AND status = 'succeeded' AND action IN ('add', 'remove')")
            .await,
        2
    );
}

#[tokio::test]
async fn an_operator_can_clear_a_quarantine() {
    let f = spawn_admin().await;
    f.app
        .db
        .execute(
            "UPDATE applications SET quarantined_at = now(), quarantine_count = 3,
                 quarantine_reason = 'test', next_cycle_at = now() + interval '1 day'
             WHERE name = 'alpha'",
            &[],
        )
        .await
        .unwrap();
    let (_, before) = admin(&f.app, Method::GET, "/admin/applications/alpha", None).await;

    let (status, cleared) = admin(
        &f.app,
        Method::POST,
        "/admin/applications/alpha/quarantine/clear",
        None,
    )
    .await;
    let (_, after) = admin(&f.app, Method::GET, "/admin/applications/alpha", None).await;

    assert_eq!(before["quarantine"]["count"], 3);
    assert_eq!(before["quarantine"]["reason"], "test");
    assert_eq!((status, cleared["cleared"].as_bool()), (200, Some(true)));
    assert_eq!(after["quarantine"], Value::Null);
    let due_in: f64 = f
        .app
        .db
        .query_one(
            "SELECT extract(epoch FROM next_cycle_at - now())::float8 FROM applications
             WHERE name = 'alpha'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(due_in < 3600.0, "a cycle is due soon: {due_in}");
}

#[tokio::test]
async fn a_group_is_provisioned_alone_with_its_name_from_the_request_or_from_graph() {
    // Arrange: Graph knows GROUP_B's display name; the admin API is on.
    let graph = graph_emulator::RunningGraphEmulator::start(
        graph_emulator::GraphEmulatorSettings::default(),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    )
    .await
    .unwrap();
    graph.add_group(graph_emulator::GraphGroup {
        id: GROUP_B.into(),
        display_name: Some("AWS-Auditors".into()),
    });
    let f = spawn_with_emulators(|_| {}).await;
    let mut settings = with_admin(
        dispatch_settings(&f.database_url, &f.a, &f.b, |_| {}),
        ADMIN_TOKEN,
    );
    settings.graph = Some(testkit::graph::graph_section(&graph));
    let app = spawn_app_with(settings, &f.database_url).await;

    // Act: one group named in the request, one named by Graph alone.
    let named = admin(
        &app,
        Method::POST,
        "/admin/applications/alpha/provision",
        Some(json!({"action": "add", "groupId": GROUP_A, "group": {"displayName": "AWS-Admins"}})),
    )
    .await;
    let from_graph = admin(
        &app,
        Method::POST,
        "/admin/applications/beta/provision",
        Some(json!({"action": "add", "groupId": GROUP_B})),
    )
    .await;

    // Assert: both groups exist in AWS with no member, and the steps are logged.
    assert_eq!(named.0, 200, "{:?}", named.1);
    assert_eq!(from_graph.0, 200, "{:?}", from_graph.1);
    assert_eq!(from_graph.1["action"], "create_group");
    let names = |e: &aws_scim_emulator::RunningEmulator| -> Vec<String> {
        e.state()
            .groups
            .iter()
            .map(|g| g.display_name.clone())
            .collect()
    };
    assert_eq!(names(&f.a), ["AWS-Admins"]);
    assert_eq!(names(&f.b), ["AWS-Auditors"]);
    assert_eq!(members(&f.a), 0);
    assert_eq!(
        app.count("SELECT count(*) FROM provisioning_log WHERE action = 'create_group'")
            .await,
        2
    );
}
