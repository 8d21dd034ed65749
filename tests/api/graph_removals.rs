//! Before removing, pimbridge asks Graph whether the user is still a member of the Entra group
//! (docs/correctness.md): a standing membership is never removed, and a removal Graph does not
//! agree with yet is held and asked about again at each cycle.

use std::time::Duration;

use graph_emulator::{
    GraphEmulatorSettings, GraphFault, GraphGroup, GraphUser, RunningGraphEmulator,
};

use crate::fixture::*;
use crate::helpers::*;
use crate::postgres::PgServer;

/// The cycles fixture with `[graph]` pointing at `graph`. The resolver looks for notifications
/// once a minute (its first look a minute after start-up), so what a test sets up in Graph is
/// asked about only by the check before a removal: Graph's own activations never become grants
/// here, as when its notifications are late.
async fn spawn_with_graph(graph: &RunningGraphEmulator) -> Fixture {
    let a = emulator().await;
    let b = emulator().await;
    let database_url = PgServer::shared().fresh_database().await;
    let mut settings = cycle_settings(&database_url, &a, &b, |_| {});
    let mut section = testkit::graph::graph_section(graph);
    section.resolve_interval = Duration::from_secs(60);
    settings.graph = Some(section);
    let app = spawn_app_with(settings, &database_url).await;
    wait_for_initial_cycles(&app).await;
    Fixture {
        app,
        a,
        b,
        database_url,
    }
}

async fn graph_with(principal: &str) -> RunningGraphEmulator {
    let graph = RunningGraphEmulator::start(
        GraphEmulatorSettings::default(),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    )
    .await
    .unwrap();
    graph.add_group(GraphGroup {
        id: GROUP_A.into(),
        display_name: Some(AWS_GROUP.into()),
    });
    graph.add_user(GraphUser {
        id: principal.into(),
        user_principal_name: Some(format!("{principal}@contoso.com")),
        given_name: Some("Alice".into()),
        surname: Some("Liddell".into()),
        display_name: Some("Alice Liddell".into()),
        mail: Some(format!("{principal}@contoso.com")),
    });
    graph
}

/// Activates `principal` through the event API (added at once), then deactivates them.
async fn activate_then_deactivate(f: &Fixture, principal: &str) {
    f.app
        .post_events(&activation(&format!("{principal}-on"), GROUP_A, principal))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(10)).await;
    assert_eq!(members(&f.a), 1);
    f.app
        .post_events(&deactivation(
            &format!("{principal}-off"),
            GROUP_A,
            principal,
        ))
        .await;
}

async fn last_removal(app: &TestApp, principal: &str) -> (String, String) {
    let row = app
        .db
        .query_one(
            "SELECT status, coalesce(reason, '') FROM provisioning_log
             WHERE principal_id = $1 AND action = 'remove' ORDER BY id DESC LIMIT 1",
            &[&principal],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_removal_graph_does_not_agree_with_yet_is_held_and_made_once_it_does() {
    // Arrange: Graph still lists the PIM activation after our deactivation arrived.
    let graph = graph_with("lagging").await;
    let f = spawn_with_graph(&graph).await;
    graph
        .activate(GROUP_A, "lagging", Duration::from_secs(3600))
        .await
        .unwrap();
    activate_then_deactivate(&f, "lagging").await;

    // Act: a cycle while Graph lags, then another once Graph has caught up.
    run_cycle(&f.app, "alpha").await;
    let held = (members(&f.a), last_removal(&f.app, "lagging").await);
    graph.deactivate(GROUP_A, "lagging").await.unwrap();
    run_cycle(&f.app, "alpha").await;

    // Assert
    assert_eq!(held.0, 1, "not removed while Graph lists the activation");
    assert_eq!(held.1 .0, "held");
    assert!(held.1 .1.contains("Graph"), "{}", held.1 .1);
    assert_eq!(members(&f.a), 0, "removed once Graph agreed");
    assert_eq!(last_removal(&f.app, "lagging").await.0, "succeeded");
}

#[tokio::test]
async fn a_standing_membership_in_entra_is_never_removed() {
    // Arrange: an administrator's permanent assignment in Entra, besides the PIM activation.
    let graph = graph_with("permanent").await;
    let f = spawn_with_graph(&graph).await;
    graph.assign(GROUP_A, "permanent").await.unwrap();
    activate_then_deactivate(&f, "permanent").await;

    // Act: two cycles.
    run_cycle(&f.app, "alpha").await;
    run_cycle(&f.app, "alpha").await;

    // Assert
    assert_eq!(members(&f.a), 1);
    let (status, reason) = last_removal(&f.app, "permanent").await;
    assert_eq!(status, "held");
    assert!(reason.contains("standing"), "{reason}");
}

#[tokio::test]
async fn when_graph_cannot_be_asked_the_grants_decide() {
    // Arrange: Graph fails every request (an outage); the grants say the access has ended.
    let graph = graph_with("unasked").await;
    let f = spawn_with_graph(&graph).await;
    activate_then_deactivate(&f, "unasked").await;
    graph.inject(GraphFault::error(503, 1000)).unwrap();

    // Act
    run_cycle(&f.app, "alpha").await;

    // Assert: revoking privileged access does not wait for Graph.
    assert_eq!(members(&f.a), 0);
}
