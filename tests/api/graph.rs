//! Microsoft Graph change notifications: the webhook (handshake, clientState, durable hints).

use serde_json::{json, Value};

use crate::helpers::*;
use crate::postgres::PgServer;

pub const CLIENT_STATE: &str = "graph-client-state-0123456789";

/// The test settings plus a `[graph]` section whose endpoints are `graph_base`.
pub fn graph_settings(database_url: &str, graph_base: &str) -> String {
    format!(
        "{}
        [graph]
        tenant_id = \"11111111-2222-3333-4444-555555555555\"
        client_id = \"66666666-7777-8888-9999-000000000000\"
        client_secret = \"graph-client-secret\"
        client_state = \"{CLIENT_STATE}\"
        authority_url = \"{graph_base}\"
        graph_url = \"{graph_base}/v1.0\"
        # The resolver looks once at start-up, then not for a minute: these tests see the hints
        # the webhook stored, untouched.
        resolve_interval = \"1m\"
        ",
        test_settings(database_url)
    )
}

async fn spawn_graph_app() -> TestApp {
    let url = PgServer::shared().fresh_database().await;
    spawn_app_with(graph_settings(&url, "http://127.0.0.1:9"), &url).await
}

fn notification(group: &str, client_state: &str) -> Value {
    json!({
        "id": format!("n-{group}"),
        "subscriptionId": "0f0e0d0c-0000-4000-8000-000000000001",
        "subscriptionExpirationDateTime": "2026-12-20T00:00:00Z",
        "changeType": "updated",
        "resource": format!("Groups/{group}"),
        "resourceData": {"@odata.type": "#Microsoft.Graph.Group", "@odata.id": format!("Groups/{group}"), "id": group},
        "clientState": client_state,
        "tenantId": "11111111-2222-3333-4444-555555555555"
    })
}

async fn post_notifications(app: &TestApp, body: &Value) -> reqwest::Response {
    app.http
        .post(format!("{}/webhooks/graph", app.address))
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_subscription_handshake_echoes_the_token_as_plain_text() {
    let app = spawn_graph_app().await;

    let response = app
        .http
        .post(format!(
            "{}/webhooks/graph?validationToken=Validation%3A%20Testing%20%3Cclient%3E",
            app.address
        ))
        .header("content-type", "text/plain; charset=utf-8")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(
        response.text().await.unwrap(),
        "Validation: Testing <client>"
    );
}

#[tokio::test]
async fn notifications_for_assigned_groups_become_one_hint_per_group() {
    let app = spawn_graph_app().await;
    let body = json!({"value": [
        notification(GROUP_A, CLIENT_STATE),
        notification(GROUP_A, CLIENT_STATE),
        notification(GROUP_B, CLIENT_STATE),
        notification(GROUP_UNKNOWN, CLIENT_STATE),
    ]});

    let response = post_notifications(&app, &body).await;
    let again = post_notifications(
        &app,
        &json!({"value": [notification(GROUP_A, CLIENT_STATE)]}),
    )
    .await;

    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        (answer["hints"].as_u64(), answer["ignored"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(again.status(), 202);
    assert_eq!(
        app.count("SELECT count(*) FROM graph_hints WHERE state = 'pending'")
            .await,
        2,
        "one waiting hint per group"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT notifications::bigint FROM graph_hints WHERE group_id = '{GROUP_A}'"
        ))
        .await,
        2,
        "the second request was folded into the waiting hint"
    );
}

#[tokio::test]
async fn a_wrong_client_state_is_refused_and_nothing_is_stored() {
    let app = spawn_graph_app().await;
    let mixed = json!({"value": [
        notification(GROUP_A, CLIENT_STATE),
        notification(GROUP_B, "not-the-secret"),
    ]});
    let missing = json!({"value": [{"resource": format!("Groups/{GROUP_A}")}]});

    let wrong = post_notifications(&app, &mixed).await;
    let absent = post_notifications(&app, &missing).await;
    let malformed = app
        .http
        .post(format!("{}/webhooks/graph", app.address))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();

    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["code"],
        "invalid_client_state"
    );
    assert_eq!(absent.status(), 401);
    assert_eq!(malformed.status(), 400);
    assert_eq!(app.count("SELECT count(*) FROM graph_hints").await, 0);
}

#[tokio::test]
async fn without_graph_settings_the_webhook_is_off() {
    let app = spawn_app().await;

    let response = post_notifications(&app, &json!({"value": []})).await;

    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "graph_disabled"
    );
}

/// Microsoft's examples, kept under `tests/fixtures/microsoft/` (see its README).
mod microsoft {
    use super::*;

    const CHANGES: &str = include_str!("../fixtures/microsoft/graph_change_notifications.json");
    const LIFECYCLE: &str = include_str!("../fixtures/microsoft/graph_lifecycle_notification.json");
    const VALIDATION_TOKEN: &str = include_str!("../fixtures/microsoft/graph_validation_token.txt");

    fn received(metrics: &str, outcome: &str) -> f64 {
        metric_value(
            metrics,
            "pimbridge_events_received_total",
            &[
                ("source", "graph"),
                ("type", "graph_notification"),
                ("outcome", outcome),
            ],
        )
    }

    #[tokio::test]
    async fn change_notifications_leave_a_hint_for_the_group_and_count_the_rest_as_ignored() {
        let app = spawn_graph_app().await;

        let response = post_notifications(&app, &serde_json::from_str(CHANGES).unwrap()).await;

        assert_eq!(response.status(), 202);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"hints": 1, "ignored": 1}),
            "the message notification is not about a group"
        );
        assert_eq!(
            app.count(&format!(
                "SELECT count(*) FROM graph_hints WHERE group_id = '{GROUP_A}'"
            ))
            .await,
            1
        );
        let metrics = app.metrics().await;
        assert_eq!(received(&metrics, "accepted"), 1.0);
        assert_eq!(received(&metrics, "ignored"), 1.0);
    }

    #[tokio::test]
    async fn a_lifecycle_notification_for_an_unmanaged_subscription_is_acknowledged() {
        let app = spawn_graph_app().await;

        let response = post_notifications(&app, &serde_json::from_str(LIFECYCLE).unwrap()).await;

        assert_eq!(response.status(), 202);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"hints": 0, "ignored": 1})
        );
        assert_eq!(received(&app.metrics().await, "ignored"), 1.0);
    }

    #[tokio::test]
    async fn the_validation_token_is_echoed_as_plain_text() {
        let app = spawn_graph_app().await;

        let response = app
            .http
            .post(format!(
                "{}/webhooks/graph?validationToken={}",
                app.address,
                VALIDATION_TOKEN.replace(':', "%3A").replace(' ', "%20")
            ))
            .header("content-type", "text/plain; charset=utf-8")
            .send()
            .await
            .unwrap();

        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(response.text().await.unwrap(), VALIDATION_TOKEN);
    }
}

mod resolution {
    //! From a PIM activation in Graph to a membership in AWS: subscription handshake,
    //! notification, hint, resolution through Graph, admission, dispatch, cycles.

    use std::time::{Duration, Instant};

    use graph_emulator::{
        GraphEmulatorSettings, GraphFault, GraphGroup, GraphUser, NewInstance, RunningGraphEmulator,
    };
    use pimbridge::graph::{GraphClient, NewSubscription};
    use pimbridge::secret::SecretString;
    use serde_json::json;

    use super::{notification, post_notifications, CLIENT_STATE};
    use crate::fixture::*;
    use crate::helpers::*;

    struct GraphFixture {
        f: Fixture,
        graph: RunningGraphEmulator,
    }

    /// Graph emulator with users `u-1`, `u-2` and GROUP_A ("AWS-Admins"), and the app with
    /// dispatch and cycles on, resolving through that emulator.
    async fn spawn() -> GraphFixture {
        spawn_with(None).await
    }

    /// Like [`spawn`]; with `Some(port)` the app listens there and manages its subscriptions,
    /// checking them every 50 ms.
    async fn spawn_with(managed_on_port: Option<u16>) -> GraphFixture {
        let graph = RunningGraphEmulator::start(
            GraphEmulatorSettings::default(),
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        )
        .await
        .unwrap();
        graph.add_group(GraphGroup {
            id: GROUP_A.into(),
            display_name: Some("AWS-Admins".into()),
        });
        for id in ["u-1", "u-2"] {
            graph.add_user(GraphUser {
                id: id.into(),
                user_principal_name: Some(format!("{id}@contoso.com")),
                given_name: Some("Grace".into()),
                surname: Some("Hopper".into()),
                display_name: Some("Grace Hopper".into()),
                mail: Some(format!("{id}@contoso.com")),
            });
        }
        let f = spawn_with_cycles("").await;
        let client = graph.client_settings();
        let mut base = cycle_settings(&f.database_url, &f.a, &f.b, "");
        let mut managed = String::new();
        if let Some(port) = managed_on_port {
            // The public listener only: the internal one stays on a port of its own.
            base = base.replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{port}\""),
                1,
            );
            managed = format!(
                "notification_url = \"http://127.0.0.1:{port}/webhooks/graph\"
            subscription_check_interval = \"50ms\""
            );
        }
        let toml = format!(
            "{base}
            [graph]
            tenant_id = \"{}\"
            client_id = \"{}\"
            client_secret = \"{}\"
            client_state = \"{CLIENT_STATE}\"
            authority_url = \"{}\"
            graph_url = \"{}\"
            resolve_interval = \"20ms\"
            {managed}
            ",
            client.tenant_id,
            client.client_id,
            client.client_secret.expose(),
            client.authority_url,
            client.graph_url,
        );
        let app = spawn_app_with(toml, &f.database_url).await;
        GraphFixture {
            f: Fixture { app, ..f },
            graph,
        }
    }

    async fn until(limit: Duration, check: impl AsyncFn() -> bool) {
        let start = Instant::now();
        while !check().await {
            assert!(start.elapsed() < limit, "not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn graph_events(app: &TestApp) -> i64 {
        app.count("SELECT count(*) FROM events WHERE source = 'graph'")
            .await
    }

    #[tokio::test]
    async fn a_pim_activation_seen_by_graph_becomes_an_aws_membership_and_its_end_a_removal() {
        // Arrange: a real subscription, validated by the emulator against our webhook.
        let g = spawn().await;
        let client = GraphClient::new(g.graph.client_settings()).unwrap();
        let subscription = client
            .create_subscription(&NewSubscription {
                change_type: "updated".into(),
                notification_url: format!("{}/webhooks/graph", g.f.app.address),
                lifecycle_notification_url: None,
                resource: format!("/groups/{GROUP_A}/members"),
                expiration: time::OffsetDateTime::now_utc() + time::Duration::days(2),
                client_state: SecretString::new(CLIENT_STATE),
            })
            .await;
        assert!(subscription.is_ok(), "{subscription:?}");

        // Act 1: the user activates; Graph notifies.
        g.graph
            .activate(GROUP_A, "u-1", Duration::from_secs(7200))
            .await
            .unwrap();
        let deliveries = g.graph.notify_group_changed(GROUP_A).await;

        // Assert 1: the membership is in AWS, from a Graph-sourced event with the user's data.
        assert_eq!(deliveries.len(), 1);
        until(Duration::from_secs(10), async || members(&g.f.a) == 1).await;
        let row =
            g.f.app
                .db
                .query_one(
                    "SELECT kind, user_attributes->>'userName',
                        extract(epoch FROM ends_at - now())::float8 / 3600
                 FROM events WHERE source = 'graph'",
                    &[],
                )
                .await
                .unwrap();
        let (kind, user_name, hours): (String, String, f64) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(kind, "activation");
        assert_eq!(user_name, "u-1@contoso.com");
        assert!((1.9..=2.0).contains(&hours), "{hours}");
        until(Duration::from_secs(10), async || {
            g.f.app
                .count("SELECT count(*) FROM jobs WHERE lane = 'immediate' AND state = 'done'")
                .await
                == 1
        })
        .await;

        // Act 2: the user deactivates; Graph notifies; the cycle applies it.
        g.graph.deactivate(GROUP_A, "u-1").await.unwrap();
        g.graph.notify_group_changed(GROUP_A).await;
        until(Duration::from_secs(10), async || {
            g.f.app
                .count(
                    "SELECT count(*) FROM events WHERE source = 'graph' AND kind = 'deactivation'",
                )
                .await
                == 1
        })
        .await;
        assert_eq!(members(&g.f.a), 1, "deactivations wait for a cycle");
        run_cycle(&g.f.app, "alpha").await;

        // Assert 2
        assert_eq!(members(&g.f.a), 0);
    }

    #[tokio::test]
    async fn an_owner_activation_is_counted_as_ignored_and_never_becomes_an_event() {
        // Arrange
        let g = spawn().await;
        g.graph
            .add_instance(
                NewInstance::activation(GROUP_A, "u-2", Duration::from_secs(3600)).as_owner(),
            )
            .await
            .unwrap();

        // Act: Graph says the group changed.
        let response = post_notifications(
            &g.f.app,
            &json!({"value": [notification(GROUP_A, CLIENT_STATE)]}),
        )
        .await;

        // Assert
        assert_eq!(response.status(), 202);
        until(Duration::from_secs(10), async || {
            metric_value(
                &g.f.app.metrics().await,
                "pimbridge_events_received_total",
                &[
                    ("source", "graph"),
                    ("type", "activation"),
                    ("outcome", "ignored_owner"),
                ],
            ) >= 1.0
        })
        .await;
        assert_eq!(graph_events(&g.f.app).await, 0);
        assert_eq!(g.f.app.jobs().await, 0);
        assert_eq!(members(&g.f.a), 0);
    }

    #[tokio::test]
    async fn resolving_a_group_again_changes_nothing() {
        let g = spawn().await;
        g.graph
            .activate(GROUP_A, "u-1", Duration::from_secs(3600))
            .await
            .unwrap();
        let body = json!({"value": [notification(GROUP_A, CLIENT_STATE)]});
        post_notifications(&g.f.app, &body).await;
        until(Duration::from_secs(10), async || {
            graph_events(&g.f.app).await == 1
        })
        .await;

        post_notifications(&g.f.app, &body).await;
        post_notifications(&g.f.app, &body).await;
        until(Duration::from_secs(10), async || {
            g.f.app
                .count("SELECT count(*) FROM graph_hints WHERE state IN ('pending', 'running')")
                .await
                == 0
        })
        .await;

        assert_eq!(graph_events(&g.f.app).await, 1);
        until(Duration::from_secs(10), async || members(&g.f.a) == 1).await;
        assert_eq!(patches(&g.f.a), 1, "one activation, one PATCH");
    }

    #[tokio::test]
    async fn graph_throttling_delays_the_resolution_but_loses_nothing() {
        let g = spawn().await;
        g.graph
            .activate(GROUP_A, "u-2", Duration::from_secs(3600))
            .await
            .unwrap();
        // More 429s than one call's retry budget: the hint itself must be tried again.
        g.graph.inject(GraphFault::throttle(6, 1)).unwrap();

        post_notifications(
            &g.f.app,
            &json!({"value": [notification(GROUP_A, CLIENT_STATE)]}),
        )
        .await;

        until(Duration::from_secs(30), async || members(&g.f.a) == 1).await;
        let attempts =
            g.f.app
                .count("SELECT max(attempts)::bigint FROM graph_hints")
                .await;
        assert!(attempts >= 2, "the hint was retried: {attempts}");
    }

    #[tokio::test]
    async fn lost_notifications_resolve_every_assigned_group() {
        let g = spawn().await;
        g.graph
            .activate(GROUP_A, "u-1", Duration::from_secs(3600))
            .await
            .unwrap();

        let response = post_notifications(
            &g.f.app,
            &json!({"value": [{
                "subscriptionId": "0f0e0d0c-0000-4000-8000-000000000001",
                "subscriptionExpirationDateTime": "2026-12-20T00:00:00Z",
                "lifecycleEvent": "missed",
                "clientState": CLIENT_STATE,
                "tenantId": "t"
            }]}),
        )
        .await;

        assert_eq!(response.status(), 202);
        assert_eq!(
            g.f.app
                .count("SELECT count(DISTINCT group_id) FROM graph_hints")
                .await,
            3,
            "GROUP_A, GROUP_B and GROUP_AB"
        );
        until(Duration::from_secs(10), async || members(&g.f.a) == 1).await;
    }

    #[tokio::test]
    async fn pimbridge_keeps_one_subscription_per_assigned_group_and_renews_it_when_asked() {
        // Arrange + Act 1: the app creates the subscriptions (Graph validates our webhook).
        let port = crate::postgres::free_port();
        let mut g = spawn_with(Some(port)).await;
        let resources = |g: &GraphFixture| {
            let mut r: Vec<String> = g
                .graph
                .subscriptions()
                .iter()
                .map(|s| s.resource.clone())
                .collect();
            r.sort();
            r
        };
        until(Duration::from_secs(10), async || {
            g.graph.subscriptions().len() == 3
        })
        .await;

        // Assert 1: one per assigned group, with our clientState and lifecycle URL.
        let mut expected: Vec<String> = [GROUP_A, GROUP_AB, GROUP_B]
            .iter()
            .map(|group| format!("/groups/{group}/members"))
            .collect();
        expected.sort();
        assert_eq!(resources(&g), expected);
        let subscription = g.graph.subscriptions()[0].clone();
        assert_eq!(subscription.client_state.expose(), CLIENT_STATE);
        assert!(subscription.lifecycle_notification_url.is_some());

        // Act 2: an activation flows through the managed subscription.
        g.graph
            .activate(GROUP_A, "u-1", Duration::from_secs(3600))
            .await
            .unwrap();
        g.graph.notify_group_changed(GROUP_A).await;
        until(Duration::from_secs(10), async || members(&g.f.a) == 1).await;

        // Act 3: Graph asks for reauthorization; the subscription is renewed.
        let before = g
            .graph
            .subscriptions()
            .into_iter()
            .find(|s| s.resource == format!("/groups/{GROUP_A}/members"))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        g.graph
            .send_lifecycle_notification(&before.id, "reauthorizationRequired")
            .await
            .unwrap();
        until(Duration::from_secs(10), async || {
            g.graph
                .subscriptions()
                .iter()
                .any(|s| s.id == before.id && s.expiration > before.expiration)
        })
        .await;

        // Act 4: a restart adopts what exists; nothing is doubled.
        g.f.app.restart().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(resources(&g), expected);
    }

    #[tokio::test]
    async fn a_cycle_finds_what_lost_notifications_did_not_report() {
        // Arrange: an activation Graph never notified us about.
        let g = spawn().await;
        g.graph
            .activate(GROUP_A, "u-2", Duration::from_secs(3600))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(members(&g.f.a), 0);

        // Act
        run_cycle(&g.f.app, "alpha").await;

        // Assert: the cycle asked Graph again; the activation reached AWS.
        until(Duration::from_secs(10), async || members(&g.f.a) == 1).await;
        assert_eq!(graph_events(&g.f.app).await, 1);
    }
}
