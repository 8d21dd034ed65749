//! No secret reaches the logs, an error body or the metrics: the real binary runs a full scenario
//! (intake, provisioning through SCIM with a good and a refused token, the admin API, Graph
//! notifications resolved through Graph, hostile and unauthenticated requests) with known
//! secrets, logging pimbridge at debug level, and every byte it wrote and answered is searched for them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_scim_emulator::{EmulatorSettings, RunningEmulator};
use graph_emulator::{GraphEmulatorSettings, GraphGroup, GraphUser, RunningGraphEmulator};
use pimbridge::auth::hmac;
use pimbridge::secret::SecretString;
use serde_json::json;
use testkit::graph::GraphEmulatorClient as _;

use crate::helpers::*;
use crate::postgres::{free_port, PgServer};

const SCIM_TOKEN: &str = "scim-token-SECRET-a1b2c3d4e5";
const REFUSED_SCIM_TOKEN: &str = "scim-token-SECRET-refused-f6a7b8";
const HMAC: &str = "hmac-secret-SECRET-0123456789";
const ADMIN: &str = "admin-token-SECRET-9876543210";
const GRAPH_SECRET: &str = "graph-client-secret-SECRET-55aa";
const CLIENT_STATE: &str = "client-state-SECRET-77bb-0123456789";
const DB_PASSWORD: &str = "db-password-SECRET-99cc";

fn sign(body: &[u8]) -> String {
    hmac::sign(
        &SecretString::new(HMAC),
        time::OffsetDateTime::now_utc().unix_timestamp(),
        body,
    )
}

#[tokio::test]
async fn no_secret_appears_in_logs_error_bodies_or_metrics() {
    // Arrange: AWS accepts one application's token and refuses the other's; Graph knows a group
    // and a user; the database URL carries a password (the test server does not ask for it).
    let scim = RunningEmulator::start(
        EmulatorSettings {
            tokens: vec![SCIM_TOKEN.to_owned()],
            ..EmulatorSettings::default()
        },
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    )
    .await
    .unwrap();
    let graph = RunningGraphEmulator::start(
        GraphEmulatorSettings {
            client_secret: graph_emulator::SecretString::new(GRAPH_SECRET),
            ..GraphEmulatorSettings::default()
        },
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    )
    .await
    .unwrap();
    graph.add_group(GraphGroup {
        id: GROUP_A.into(),
        display_name: Some("AWS-Admins".into()),
    });
    graph.add_user(GraphUser {
        id: "g-user".into(),
        user_principal_name: Some("g-user@contoso.com".into()),
        given_name: Some("Grace".into()),
        surname: Some("Hopper".into()),
        display_name: Some("Grace Hopper".into()),
        mail: Some("g-user@contoso.com".into()),
    });
    let url = PgServer::shared().fresh_database().await;
    let url_with_password = url.replacen("postgres@", &format!("postgres:{DB_PASSWORD}@"), 1);
    assert_ne!(url, url_with_password);
    let port = free_port();
    let internal_port = free_port();
    let client = graph.client_settings();
    let config = format!(
        r#"
        [server]
        listen = "127.0.0.1:{port}"
        internal_listen = "127.0.0.1:{internal_port}"
        shutdown_timeout = "5s"
        workers = 2
        metrics_refresh_interval = "50ms"
        [database]
        url = "{url_with_password}"
        [intake]
        hmac_secret = "{HMAC}"
        [dispatch]
        poll_interval = "1s"
        max_attempts = 2
        [sync]
        check_interval = "50ms"
        [admin]
        token = "{ADMIN}"
        [log]
        format = "json"
        level = "pimbridge=debug,info"
        [graph]
        tenant_id = "{tenant}"
        client_id = "{client_id}"
        client_secret = "{GRAPH_SECRET}"
        client_state = "{CLIENT_STATE}"
        authority_url = "{authority}"
        graph_url = "{graph_url}"
        resolve_interval = "20ms"
        [applications.alpha]
        scim_url = "{scim_url}"
        scim_token = "{SCIM_TOKEN}"
        groups = ["{GROUP_A}"]
        [applications.beta]
        scim_url = "{scim_url}"
        scim_token = "{REFUSED_SCIM_TOKEN}"
        groups = ["{GROUP_B}"]
        "#,
        tenant = client.tenant_id,
        client_id = client.client_id,
        authority = client.authority_url,
        graph_url = client.graph_url,
        scim_url = scim.scim_base_url(),
    );
    let dir = std::env::temp_dir().join(format!("pimbridge-secrets-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), &config).unwrap();
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pimbridge"))
        .arg("--config")
        .arg(dir.join("config.toml"))
        .arg("serve")
        .env_remove("RUST_LOG")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let internal = format!("http://127.0.0.1:{internal_port}");
    let http = reqwest::Client::new();
    let start = Instant::now();
    while http
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .map_or(true, |r| r.status() != 200)
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the binary became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);

    // Act: the scenario. Every answer is kept.
    let mut answers = Vec::new();
    let post = |path: &'static str, body: Vec<u8>, headers: Vec<(&'static str, String)>| {
        let mut request = http
            .post(format!("{base}{path}"))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.body(body).send()
    };
    for (id, group) in [("s-1", GROUP_A), ("s-2", GROUP_B)] {
        let body = activation(id, group, id).to_string().into_bytes();
        let response = post(
            "/v1/events",
            body.clone(),
            vec![(hmac::SIGNATURE_HEADER, sign(&body))],
        )
        .await
        .unwrap();
        assert_eq!(response.status(), 202);
        answers.push(response.text().await.unwrap());
    }
    let body = activation("s-3", GROUP_A, "s-3").to_string().into_bytes();
    for headers in [
        vec![(hmac::SIGNATURE_HEADER, "t=1,v1=00".to_owned())],
        vec![("authorization", format!("Bearer {HMAC}"))],
        vec![],
    ] {
        let response = post("/v1/events", body.clone(), headers).await.unwrap();
        assert_eq!(response.status(), 401);
        answers.push(response.text().await.unwrap());
    }
    let mut hostile = activation("s-4", GROUP_A, "s-4");
    hostile["principalId"] = json!(format!("{HMAC}\u{0}"));
    let body = hostile.to_string().into_bytes();
    let response = post(
        "/v1/events",
        body.clone(),
        vec![(hmac::SIGNATURE_HEADER, sign(&body))],
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    answers.push(response.text().await.unwrap());
    for token in ["wrong-admin-token", ADMIN] {
        for path in [
            "/admin/applications",
            "/admin/provisioning-log",
            "/admin/jobs",
        ] {
            let response = http
                .get(format!("{internal}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            answers.push(response.text().await.unwrap());
        }
    }
    let response = http
        .post(format!(
            "{internal}/admin/applications/beta/test-connection"
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error() || response.status().is_server_error());
    answers.push(response.text().await.unwrap());
    graph
        .activate(GROUP_A, "g-user", Duration::from_secs(3600))
        .await
        .unwrap();
    for state in ["wrong-client-state-0123456789", CLIENT_STATE] {
        let notification = json!({"value": [{
            "subscriptionId": "0f0e0d0c-0000-4000-8000-000000000001",
            "clientState": state,
            "changeType": "updated",
            "resource": format!("Groups/{GROUP_A}"),
            "resourceData": {"@odata.type": "#Microsoft.Graph.Group", "id": GROUP_A}
        }]});
        let response = http
            .post(format!("{base}/webhooks/graph"))
            .json(&notification)
            .send()
            .await
            .unwrap();
        answers.push(response.text().await.unwrap());
    }
    // Wait for the work the scenario set off: the Graph resolution, and both applications'
    // provisioning (alpha's succeeds; beta's token is refused by AWS).
    let start = Instant::now();
    loop {
        let row = db
            .query_one(
                "SELECT (SELECT count(*) FROM events WHERE source = 'graph'),
                        (SELECT count(*) FROM jobs WHERE state IN ('pending', 'running')
                           AND application = 'alpha')",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) >= 1 && row.get::<_, i64>(1) == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the scenario's work finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = http
        .get(format!("{internal}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = std::fs::read_to_string(dir.join("log")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    // Assert: the capture holds what the scenario did...
    assert!(logs.contains("event accepted"), "the logs were captured");
    assert!(
        logs.contains("Graph notification resolved"),
        "Graph was used"
    );
    assert!(
        scim.group_members_by_name("AWS-Admins")
            .is_some_and(|m| !m.is_empty()),
        "AWS was used"
    );
    assert!(metrics.contains("pimbridge_events_received_total"));
    // ...and none of the secrets.
    for secret in [
        SCIM_TOKEN,
        REFUSED_SCIM_TOKEN,
        HMAC,
        ADMIN,
        GRAPH_SECRET,
        CLIENT_STATE,
        DB_PASSWORD,
    ] {
        assert!(!logs.contains(secret), "the logs show {secret}");
        assert!(!metrics.contains(secret), "the metrics show {secret}");
        for answer in &answers {
            assert!(
                !answer.contains(secret),
                "an answer shows {secret}: {answer}"
            );
        }
    }
}
