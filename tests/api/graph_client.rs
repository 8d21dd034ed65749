//! The Graph client against the project's Graph emulator, over real HTTP (no database).
//!
//! Each test starts its own emulator on port 0 and checks the outcome from the client's side
//! and from the emulator's request log: how many token requests, which Graph requests, with
//! what status.

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use graph_emulator::{
    GraphEmulatorSettings, GraphFault, LoggedRequest, NewInstance, RunningGraphEmulator,
};
use pimbridge::graph::{
    AssignmentInstance, GraphClient, GraphClientSettings, GraphError, GraphGroup, GraphUser,
    NewSubscription,
};
use pimbridge::outbound::SendError;
use pimbridge::secret::SecretString;
use testkit::graph::GraphEmulatorClient as _;
use time::OffsetDateTime;

const HOUR: Duration = Duration::from_secs(3600);

async fn emulator_with(change: impl FnOnce(&mut GraphEmulatorSettings)) -> RunningGraphEmulator {
    let mut settings = GraphEmulatorSettings::default();
    change(&mut settings);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    RunningGraphEmulator::start(settings, listener)
        .await
        .unwrap()
}

async fn emulator() -> RunningGraphEmulator {
    emulator_with(|_| {}).await
}

fn client_with(
    emu: &RunningGraphEmulator,
    change: impl FnOnce(&mut GraphClientSettings),
) -> GraphClient {
    let mut settings = emu.client_settings();
    settings.request_timeout = Duration::from_secs(5);
    change(&mut settings);
    GraphClient::new(settings).unwrap()
}

fn client(emu: &RunningGraphEmulator) -> GraphClient {
    client_with(emu, |_| {})
}

fn is_token_request(r: &LoggedRequest) -> bool {
    r.path.ends_with("/oauth2/v2.0/token")
}

fn token_requests(emu: &RunningGraphEmulator) -> usize {
    emu.request_log()
        .iter()
        .filter(|r| is_token_request(r))
        .count()
}

/// (method, status) of every Graph request, in order.
fn graph_requests(emu: &RunningGraphEmulator) -> Vec<(String, u16)> {
    emu.request_log()
        .into_iter()
        .filter(|r| !is_token_request(r))
        .map(|r| (r.method, r.status))
        .collect()
}

fn get(status: u16) -> (String, u16) {
    ("GET".to_owned(), status)
}

/// The user the client should read back from the emulator's [`emulated_user`].
fn user(id: &str) -> GraphUser {
    GraphUser {
        id: id.to_owned(),
        user_principal_name: Some(format!("{id}@contoso.example")),
        given_name: Some("Alice".into()),
        surname: Some("Liddell".into()),
        display_name: Some("Alice Liddell".into()),
        mail: Some(format!("{id}@contoso.example")),
    }
}

/// The group the client should read back from the emulator's [`emulated_group`].
fn group(id: &str) -> GraphGroup {
    GraphGroup {
        id: id.to_owned(),
        display_name: Some("AWS-Admins".into()),
    }
}

/// The same user in the emulator's own (wire) type, built field by field: a property the
/// client misnames reads back as missing and fails the comparison.
fn emulated_user(id: &str) -> graph_emulator::GraphUser {
    let GraphUser {
        id,
        user_principal_name,
        given_name,
        surname,
        display_name,
        mail,
    } = user(id);
    graph_emulator::GraphUser {
        id,
        user_principal_name,
        given_name,
        surname,
        display_name,
        mail,
    }
}

fn emulated_group(id: &str) -> graph_emulator::GraphGroup {
    let GraphGroup { id, display_name } = group(id);
    graph_emulator::GraphGroup { id, display_name }
}

/// What the client should read for an instance the emulator created: every field carried over
/// by name, so a property the client misnames shows up as a difference.
fn as_read_by_the_client(created: graph_emulator::AssignmentInstance) -> AssignmentInstance {
    let graph_emulator::AssignmentInstance {
        id,
        group_id,
        principal_id,
        access_id,
        assignment_type,
        member_type,
        start,
        end,
    } = created;
    AssignmentInstance {
        id,
        group_id,
        principal_id,
        access_id,
        assignment_type,
        member_type,
        start,
        end,
    }
}

/// A user `u1` in a group `g1`.
async fn emulator_with_alice() -> RunningGraphEmulator {
    let emu = emulator().await;
    emu.add_user(emulated_user("u1"));
    emu.add_group(emulated_group("g1"));
    emu
}

/// A subscriber at `http://…/hook` that answers the validation handshake with the token it
/// was sent, or with something else when `echo` is false.
async fn subscriber(echo: bool) -> (String, actix_web::dev::ServerHandle) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        App::new().route(
            "/hook",
            web::post().to(
                move |query: web::Query<HashMap<String, String>>| async move {
                    match query.get("validationToken") {
                        Some(token) if echo => HttpResponse::Ok()
                            .content_type("text/plain")
                            .body(token.clone()),
                        Some(_) => HttpResponse::Ok()
                            .content_type("text/plain")
                            .body("something else"),
                        None => HttpResponse::Accepted().finish(),
                    }
                },
            ),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (url, handle)
}

/// An emulator, a client of it, and a subscriber (see [`subscriber`]).
async fn with_subscriber(
    echo: bool,
) -> (
    RunningGraphEmulator,
    GraphClient,
    String,
    actix_web::dev::ServerHandle,
) {
    let emu = emulator().await;
    let client = client(&emu);
    let (url, handle) = subscriber(echo).await;
    (emu, client, url, handle)
}

fn new_subscription(url: &str, resource: &str) -> NewSubscription {
    NewSubscription {
        change_type: "updated".into(),
        notification_url: url.to_owned(),
        lifecycle_notification_url: None,
        resource: resource.to_owned(),
        expiration: OffsetDateTime::now_utc() + 24 * HOUR,
        client_state: SecretString::new("client-state-1"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_token_is_fetched_once_and_reused_across_calls_and_concurrent_callers() {
    // Arrange
    let emu = emulator_with_alice().await;
    let client = client(&emu);

    // Act: calls in sequence, then ten at once on a second client with an empty cache.
    client.user("u1").await.unwrap();
    client.group("g1").await.unwrap();
    client.active_member_assignments("g1", None).await.unwrap();
    client.user("u1").await.unwrap();
    let sequential_tokens = token_requests(&emu);
    let fresh = client_with(&emu, |_| {});
    let results = futures_util::future::join_all((0..10).map(|_| fresh.user("u1"))).await;

    // Assert
    assert_eq!(sequential_tokens, 1);
    assert!(results.iter().all(|r| matches!(r, Ok(Some(_)))));
    assert_eq!(
        token_requests(&emu),
        2,
        "one refresh at a time: the ten callers share one"
    );
    assert!(graph_requests(&emu)
        .iter()
        .all(|(_, status)| *status == 200));
}

#[tokio::test]
async fn an_expired_token_is_replaced_before_graph_would_refuse_it() {
    // Arrange: 2 s tokens, so the client reuses one for 1 s.
    let emu = emulator_with(|s| s.token_lifetime = Duration::from_secs(2)).await;
    emu.add_user(emulated_user("u1"));
    let client = client(&emu);

    // Act
    client.user("u1").await.unwrap();
    client.user("u1").await.unwrap();
    let before_expiry = token_requests(&emu);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    client.user("u1").await.unwrap();

    // Assert: a second token, and Graph never had to answer 401.
    assert_eq!(before_expiry, 1);
    assert_eq!(token_requests(&emu), 2);
    assert_eq!(graph_requests(&emu), [get(200), get(200), get(200)]);
}

#[tokio::test]
async fn a_token_graph_refuses_is_replaced_once_and_a_second_401_is_final() {
    // Arrange
    let emu = emulator_with_alice().await;
    let client = client(&emu);
    client.user("u1").await.unwrap();

    // Act 1: the emulator forgets every token; the cached one now gets 401.
    emu.revoke_tokens();
    let after_revoke = client.user("u1").await;

    // Assert 1: one 401, one new token, then success.
    assert!(matches!(after_revoke, Ok(Some(_))), "{after_revoke:?}");
    assert_eq!(token_requests(&emu), 2);
    assert_eq!(graph_requests(&emu), [get(200), get(401), get(200)]);

    // Act 2: Graph keeps answering 401 whatever the token.
    emu.clear_request_log();
    emu.inject(GraphFault::error(401, 5)).unwrap();
    let refused = client.user("u1").await;

    // Assert 2: exactly one refresh, then the typed error; never retried further.
    assert!(
        matches!(refused, Err(GraphError::Unauthorized(_))),
        "{refused:?}"
    );
    assert!(refused.as_ref().unwrap_err().is_auth());
    assert_eq!(token_requests(&emu), 1);
    assert_eq!(graph_requests(&emu), [get(401), get(401)]);
}

#[tokio::test]
async fn a_wrong_secret_or_client_id_is_a_typed_token_error_that_never_shows_the_secret() {
    let emu = emulator_with_alice().await;
    let wrong_secret = "Wr0ng~secret.value-abc123";
    let bad_secret = client_with(&emu, |s| s.client_secret = SecretString::new(wrong_secret));

    let err = bad_secret.user("u1").await.unwrap_err();

    let GraphError::Token(failure) = &err else {
        panic!("expected a token error, got {err:?}");
    };
    assert_eq!(failure.error, "invalid_client");
    assert_eq!(failure.aad_codes, [7_000_215]);
    assert!(!err.is_transient() && err.is_auth());
    let shown = format!("{err} | {err:?} | {bad_secret:?}");
    assert!(shown.contains("AADSTS7000215"), "{shown}");
    assert!(!shown.contains(wrong_secret), "the secret leaked: {shown}");
    assert_eq!(token_requests(&emu), 1, "a refused token is not retried");
    assert!(
        graph_requests(&emu).is_empty(),
        "nothing reaches Graph without a token"
    );

    let bad_client = client_with(&emu, |s| s.client_id = "not-our-app".into());
    let err = bad_client.group("g1").await.unwrap_err();
    assert!(
        matches!(&err, GraphError::Token(f) if f.aad_codes == [700_016]),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Assignment instances
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn active_assignments_are_the_groups_member_activations_and_assignments() {
    // Arrange: in g1, u1 activated (with an end), u2 assigned (no end), u3 an owner; in g2, u1.
    let emu = emulator().await;
    for id in ["u1", "u2", "u3"] {
        emu.add_user(emulated_user(id));
    }
    emu.add_group(emulated_group("g1"));
    emu.add_group(emulated_group("g2"));
    let activation = emu.activate("g1", "u1", 2 * HOUR).await.unwrap();
    emu.assign("g1", "u2").await.unwrap();
    emu.add_instance(NewInstance::activation("g1", "u3", HOUR).as_owner())
        .await
        .unwrap();
    emu.activate("g2", "u1", HOUR).await.unwrap();
    let client = client(&emu);

    // Act
    let mut all = client.active_member_assignments("g1", None).await.unwrap();
    all.sort_by(|a, b| a.principal_id.cmp(&b.principal_id));
    let one = client
        .active_member_assignments("g1", Some("u2"))
        .await
        .unwrap();
    let none = client
        .active_member_assignments("g1", Some("u3"))
        .await
        .unwrap();

    // Assert
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        all[0],
        as_read_by_the_client(activation),
        "the activation comes back exactly as created"
    );
    assert!(all[0].is_activation() && all[0].end.is_some());
    assert_eq!(all[1].principal_id, "u2");
    assert_eq!(all[1].assignment_type, "assigned");
    assert_eq!(all[1].end, None);
    assert!(all
        .iter()
        .all(|i| i.group_id == "g1" && i.access_id == "member"));
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].principal_id, "u2");
    assert!(none.is_empty(), "owners are not members");
}

#[tokio::test]
async fn ids_with_quotes_are_escaped_in_the_filter() {
    let emu = emulator().await;
    emu.add_user(emulated_user("o'neil"));
    emu.add_group(emulated_group("group'1"));
    emu.activate("group'1", "o'neil", HOUR).await.unwrap();
    let client = client(&emu);

    let found = client
        .active_member_assignments("group'1", Some("o'neil"))
        .await
        .unwrap();

    assert_eq!(found.len(), 1);
    assert_eq!(found[0].principal_id, "o'neil");
    let query = emu.request_log().last().unwrap().query.clone();
    assert!(query.contains("%27group%27%271%27"), "{query}");
}

#[tokio::test]
async fn two_hundred_fifty_instances_are_read_over_three_pages() {
    // Arrange
    let emu = emulator().await;
    emu.add_group(emulated_group("g1"));
    for i in 0..250 {
        let id = format!("u{i:03}");
        emu.add_user(emulated_user(&id));
        emu.activate("g1", &id, HOUR).await.unwrap();
    }
    let client = client(&emu);

    // Act
    let instances = client.active_member_assignments("g1", None).await.unwrap();

    // Assert
    assert_eq!(instances.len(), 250);
    let mut ids: Vec<&str> = instances.iter().map(|i| i.principal_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 250, "no page read twice");
    assert_eq!(graph_requests(&emu), [get(200), get(200), get(200)]);
    let queries: Vec<String> = emu
        .request_log()
        .into_iter()
        .filter(|r| !is_token_request(r))
        .map(|r| r.query)
        .collect();
    assert!(
        queries[1].contains("skiptoken=100") && queries[2].contains("skiptoken=200"),
        "{queries:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Users and groups
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn users_and_groups_are_read_with_select_and_404_is_none() {
    let emu = emulator_with_alice().await;
    let client = client(&emu);

    assert_eq!(client.user("u1").await.unwrap(), Some(user("u1")));
    assert_eq!(client.group("g1").await.unwrap(), Some(group("g1")));
    assert_eq!(client.user("nobody").await.unwrap(), None);
    assert_eq!(client.group("nothing").await.unwrap(), None);

    let queries: Vec<String> = emu
        .request_log()
        .into_iter()
        .filter(|r| !is_token_request(r))
        .map(|r| r.query)
        .collect();
    assert_eq!(
        queries[0],
        "$select=id%2CuserPrincipalName%2CgivenName%2Csurname%2CdisplayName%2Cmail"
    );
    assert_eq!(queries[1], "$select=id%2CdisplayName");
    assert_eq!(
        graph_requests(&emu),
        [get(200), get(200), get(404), get(404)],
        "404 is not retried"
    );
}

// ---------------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_429_with_retry_after_one_second_delays_the_retry_by_at_least_a_second() {
    let emu = emulator_with_alice().await;
    let client = client(&emu);
    client.user("u1").await.unwrap();
    emu.clear_request_log();
    emu.inject(GraphFault::throttle(1, 1)).unwrap();

    let started = Instant::now();
    let found = client.user("u1").await.unwrap();
    let elapsed = started.elapsed();

    assert!(found.is_some());
    assert!(
        elapsed >= Duration::from_secs(1),
        "retried after {elapsed:?}"
    );
    assert_eq!(graph_requests(&emu), [get(429), get(200)]);
}

#[tokio::test]
async fn a_burst_of_500s_is_retried_and_a_longer_one_exhausts_the_budget() {
    let emu = emulator_with_alice().await;
    let client = client(&emu);
    emu.inject(GraphFault::error(500, 3)).unwrap();

    let found = client.active_member_assignments("g1", None).await;

    assert!(found.is_ok(), "{found:?}");
    assert_eq!(
        graph_requests(&emu),
        [get(500), get(500), get(500), get(200)]
    );

    // Three attempts allowed, ten failures queued: the typed budget error, still transient.
    emu.clear_request_log();
    emu.inject(GraphFault::error(503, 10)).unwrap();
    let short = client_with(&emu, |s| s.max_attempts = 3);
    let err = short.group("g1").await.unwrap_err();
    assert!(
        matches!(err, GraphError::RetryBudgetExhausted { attempts: 3, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(err.status(), Some(503));
    assert_eq!(graph_requests(&emu).len(), 3);
}

#[tokio::test]
async fn a_403_is_not_retried() {
    let emu = emulator_with_alice().await;
    let client = client(&emu);
    emu.inject(GraphFault::error(403, 5)).unwrap();

    let err = client
        .active_member_assignments("g1", None)
        .await
        .unwrap_err();

    assert!(matches!(err, GraphError::Forbidden(_)), "{err:?}");
    assert_eq!(err.code(), Some("Authorization_RequestDenied"));
    assert!(!err.is_transient());
    assert_eq!(graph_requests(&emu), [get(403)]);
}

#[tokio::test]
async fn an_unreachable_graph_is_a_transient_transport_error() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut settings = GraphClientSettings::new("t", "c", "s");
    settings.authority_url = format!("http://{closed}");
    settings.graph_url = format!("http://{closed}/v1.0");
    settings.max_attempts = 2;
    let client = GraphClient::new(settings).unwrap();

    let err = client.user("u1").await.unwrap_err();

    let GraphError::RetryBudgetExhausted {
        attempts: 2, last, ..
    } = &err
    else {
        panic!("expected an exhausted budget, got {err:?}");
    };
    assert!(
        matches!(**last, GraphError::Unanswered(SendError::Transport { .. })),
        "{last:?}"
    );
    assert!(err.is_transient());
}

// ---------------------------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_subscription_is_created_through_the_handshake_renewed_and_deleted() {
    // Arrange
    let (emu, client, url, _subscriber) = with_subscriber(true).await;

    // Act: create
    let created = client
        .create_subscription(&new_subscription(&url, "/groups/g1/members"))
        .await
        .unwrap();

    // Assert: the emulator holds it, with our clientState, after one handshake.
    let stored = emu.subscriptions();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, created.id);
    assert_eq!(stored[0].client_state.expose(), "client-state-1");
    assert_eq!(created.resource, "/groups/g1/members");

    // Act + Assert: renew moves the expiry.
    let later = OffsetDateTime::now_utc() + 48 * HOUR;
    let renewed = client.renew_subscription(&created.id, later).await.unwrap();
    assert!((renewed.expiration - later).abs() < time::Duration::milliseconds(1));
    assert_eq!(emu.subscriptions()[0].expiration, renewed.expiration);
    assert_eq!(client.list_subscriptions().await.unwrap(), [renewed]);

    // Act + Assert: delete; deleting again is not an error.
    client.delete_subscription(&created.id).await.unwrap();
    assert!(emu.subscriptions().is_empty());
    client.delete_subscription(&created.id).await.unwrap();
    let gone = client
        .renew_subscription(&created.id, later)
        .await
        .unwrap_err();
    assert!(matches!(gone, GraphError::NotFound(_)), "{gone:?}");
}

#[tokio::test]
async fn a_duplicate_subscription_is_a_conflict() {
    let (emu, client, url, _subscriber) = with_subscriber(true).await;
    let request = new_subscription(&url, "/groups/g1");
    let first = client.create_subscription(&request).await.unwrap();

    let err = client.create_subscription(&request).await.unwrap_err();

    assert!(matches!(err, GraphError::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains(&first.id), "{err}");
    assert_eq!(emu.subscriptions().len(), 1);
}

#[tokio::test]
async fn a_wrong_handshake_echo_fails_creation_with_a_clear_error() {
    let (emu, client, url, _subscriber) = with_subscriber(false).await;

    let err = client
        .create_subscription(&new_subscription(&url, "/groups/g1"))
        .await
        .unwrap_err();

    assert!(matches!(err, GraphError::BadRequest(_)), "{err:?}");
    assert_eq!(err.code(), Some("ValidationError"));
    let text = err.to_string();
    assert!(
        text.contains("Subscription validation request failed"),
        "{text}"
    );
    assert!(!text.contains("client-state-1"), "{text}");
    assert!(emu.subscriptions().is_empty());
    assert_eq!(
        graph_requests(&emu),
        [("POST".to_owned(), 400)],
        "a 400 is not retried"
    );
}

#[tokio::test]
async fn a_client_state_graph_would_refuse_is_refused_before_sending() {
    let emu = emulator().await;
    let client = client(&emu);
    for state in ["", &"x".repeat(129)] {
        let mut request = new_subscription("http://127.0.0.1:1/hook", "/groups/g1");
        request.client_state = SecretString::new(state);
        let err = client.create_subscription(&request).await.unwrap_err();
        assert!(matches!(err, GraphError::InvalidArgument(_)), "{err:?}");
    }
    assert!(emu.request_log().is_empty());
}

/// Completing a user from Graph (`pimbridge::graph::users`) against the Graph emulator.
mod users {
    use graph_emulator::{GraphEmulatorSettings, GraphUser, RunningGraphEmulator};
    use pimbridge::graph::users::scim_attributes;
    use pimbridge::graph::GraphClient;
    use serde_json::json;
    use testkit::graph::GraphEmulatorClient as _;

    async fn emulator_with_grace() -> RunningGraphEmulator {
        let graph = RunningGraphEmulator::start(
            GraphEmulatorSettings::default(),
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        )
        .await
        .unwrap();
        graph.add_user(GraphUser {
            id: "u-grace".into(),
            user_principal_name: Some("grace@contoso.com".into()),
            given_name: Some("Grace".into()),
            surname: Some("Hopper".into()),
            display_name: Some("Grace Hopper".into()),
            mail: None,
        });
        graph
    }

    #[tokio::test]
    async fn a_known_user_yields_the_attributes_aws_needs() {
        let graph = emulator_with_grace().await;
        let client = GraphClient::new(graph.client_settings()).unwrap();

        let attributes = scim_attributes(&client, "u-grace").await.unwrap();

        assert_eq!(
            attributes,
            Some(
                json!({"userName": "grace@contoso.com", "givenName": "Grace",
                        "familyName": "Hopper", "displayName": "Grace Hopper"})
            ),
            "no mail in Graph, so no email"
        );
        assert!(graph
            .request_log()
            .iter()
            .any(|r| r.path.ends_with("/users/u-grace")));
    }

    #[tokio::test]
    async fn an_unknown_user_is_none_and_a_graph_failure_an_error() {
        let graph = emulator_with_grace().await;
        let client = GraphClient::new(graph.client_settings()).unwrap();

        assert_eq!(scim_attributes(&client, "u-nobody").await.unwrap(), None);
        let mut settings = graph.client_settings();
        settings.client_secret = pimbridge::secret::SecretString::new("wrong-secret");
        let refused = GraphClient::new(settings).unwrap();
        assert!(scim_attributes(&refused, "u-grace").await.is_err());
    }
}
