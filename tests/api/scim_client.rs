//! The SCIM client against the project's AWS SCIM emulator, over real HTTP.
//!
//! Each test starts its own emulator on port 0, injects faults through its control API
//! (`/_emulator`) and checks the outcome both from the client's side and from the
//! emulator's request log.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_scim_emulator::{EmulatorSettings, RunningEmulator};
use pimbridge::outbound::SendError;
use pimbridge::scim::{
    map_user, CharacterPolicy, RequestObserver, ScimClient, ScimClientSettings, ScimError,
    ScimUser, SourceUser,
};
use serde_json::{json, Value};

/// The emulator's default bearer token.
const TOKEN: &str = "emulator-token";

struct TestEmulator {
    emulator: RunningEmulator,
    control: reqwest::Client,
}

impl TestEmulator {
    async fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let emulator = RunningEmulator::start(EmulatorSettings::default(), listener)
            .await
            .unwrap();
        Self {
            emulator,
            control: reqwest::Client::new(),
        }
    }

    /// Settings tuned for tests: no pacing to speak of, short backoff steps.
    fn settings(&self) -> ScimClientSettings {
        let mut settings = ScimClientSettings::new(self.emulator.scim_base_url(), TOKEN);
        settings.requests_per_second = 2_000;
        settings.burst = 2_000;
        settings.base_retry_delay = Duration::from_millis(20);
        settings.max_retry_delay = Duration::from_millis(500);
        settings.request_timeout = Duration::from_secs(5);
        settings
    }

    fn client(&self) -> ScimClient {
        ScimClient::new(self.settings(), None).unwrap()
    }

    fn control(&self, path: &str) -> String {
        format!(
            "{}{path}",
            self.emulator.control_url().trim_end_matches('/')
        )
    }

    async fn fault(&self, fault: Value) {
        let response = self
            .control
            .post(self.control("/faults"))
            .json(&fault)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "fault {fault} refused: {response:?}"
        );
    }

    async fn requests(&self) -> Vec<Value> {
        let body: Value = self
            .control
            .get(self.control("/requests"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match body {
            Value::Array(entries) => entries,
            Value::Object(mut map) => match map.remove("requests") {
                Some(Value::Array(entries)) => entries,
                other => panic!("unexpected request log shape: {other:?}"),
            },
            other => panic!("unexpected request log shape: {other}"),
        }
    }

    async fn requests_with(&self, method: &str) -> Vec<Value> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r["method"] == method)
            .collect()
    }

    async fn clear_requests(&self) {
        let response = self
            .control
            .delete(self.control("/requests"))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// Users stored in the emulator with this userName.
    async fn users_named(&self, user_name: &str) -> usize {
        let state: Value = self
            .control
            .get(self.control("/state"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        state["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["userName"] == user_name)
            .count()
    }
}

fn source_user(n: usize) -> SourceUser {
    SourceUser {
        object_id: format!("00000000-0000-4000-8000-{n:012}"),
        user_name: Some(format!("user{n}@contoso.example")),
        given_name: Some(format!("Given{n}")),
        family_name: Some("Family".into()),
        display_name: Some(format!("Given{n} Family")),
        emails: vec![format!("mail{n}@contoso.example")],
        ..SourceUser::default()
    }
}

fn scim_user(n: usize) -> ScimUser {
    map_user(&source_user(n), CharacterPolicy::Reject).unwrap()
}

/// Creates `count` users numbered from `first` and returns their ids.
async fn create_users(client: &ScimClient, first: usize, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for n in first..first + count {
        let user = client.create_user(&scim_user(n)).await.unwrap();
        ids.push(user.id.unwrap());
    }
    ids
}

#[derive(Default)]
struct RecordingObserver {
    seen: Mutex<Vec<(&'static str, Option<u16>)>>,
}

impl RequestObserver for RecordingObserver {
    fn observe(&self, method: &'static str, status: Option<u16>, _elapsed: Duration) {
        self.seen.lock().unwrap().push((method, status));
    }
}

#[tokio::test]
async fn every_operation_works_against_the_emulator() {
    // Arrange
    let emu = TestEmulator::start().await;
    let client = emu.client();

    // Act + Assert, operation by operation
    let config = client.test_connection().await.unwrap();
    assert_eq!(config.patch.map(|p| p.supported), Some(true));

    let created = client.create_user(&scim_user(1)).await.unwrap();
    let user_id = created.id.clone().unwrap();
    assert_eq!(created.user_name.as_deref(), Some("user1@contoso.example"));

    let fetched = client.get_user(&user_id).await.unwrap();
    assert_eq!(fetched.id.as_deref(), Some(user_id.as_str()));

    let by_name = client
        .find_user_by_user_name("user1@contoso.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_name.id.as_deref(), Some(user_id.as_str()));
    let by_external = client
        .find_user_by_external_id(&source_user(1).object_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_external.id.as_deref(), Some(user_id.as_str()));
    assert!(client
        .find_user_by_user_name("nobody@contoso.example")
        .await
        .unwrap()
        .is_none());

    let mut changed = scim_user(1);
    changed.display_name = Some("Renamed User".into());
    changed.title = Some("Engineer".into());
    let updated = client.update_user(&user_id, &changed).await.unwrap();
    assert_eq!(updated.display_name.as_deref(), Some("Renamed User"));
    assert_eq!(
        client.get_user(&user_id).await.unwrap().title.as_deref(),
        Some("Engineer")
    );

    let group = client
        .create_or_get_group("AWS-Prod-Admins", Some("entra-group-1"))
        .await
        .unwrap();
    let group_id = group.id.clone().unwrap();
    let again = client
        .create_or_get_group("AWS-Prod-Admins", Some("entra-group-1"))
        .await
        .unwrap();
    assert_eq!(again.id, group.id, "create_or_get_group is idempotent");
    assert_eq!(
        client
            .get_group(&group_id)
            .await
            .unwrap()
            .display_name
            .as_deref(),
        Some("AWS-Prod-Admins")
    );
    assert_eq!(
        client
            .find_group_by_display_name("AWS-Prod-Admins")
            .await
            .unwrap()
            .and_then(|g| g.id),
        Some(group_id.clone())
    );
    assert_eq!(
        client
            .find_group_by_external_id("entra-group-1")
            .await
            .unwrap()
            .and_then(|g| g.id),
        Some(group_id.clone())
    );

    assert!(!client.is_member(&group_id, &user_id).await.unwrap());
    client.add_members(&group_id, &[&user_id]).await.unwrap();
    assert!(client.is_member(&group_id, &user_id).await.unwrap());
    let members = client.list_group_members(&group_id).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].id.as_deref(), Some(user_id.as_str()));

    client.remove_members(&group_id, &[&user_id]).await.unwrap();
    assert!(!client.is_member(&group_id, &user_id).await.unwrap());
    assert!(client
        .list_group_members(&group_id)
        .await
        .unwrap()
        .is_empty());

    let missing = client
        .get_user("00000000-0000-0000-0000-000000000000")
        .await;
    assert!(
        matches!(missing, Err(ScimError::NotFound(_))),
        "{missing:?}"
    );
}

#[tokio::test]
async fn a_429_with_retry_after_2_delays_the_retry_by_at_least_2_seconds() {
    // Arrange
    let emu = TestEmulator::start().await;
    let client = emu.client();
    emu.fault(json!({"kind": "throttle", "count": 1, "retryAfterSeconds": 2}))
        .await;

    // Act
    let started = Instant::now();
    let created = client.create_user(&scim_user(1)).await;
    let elapsed = started.elapsed();

    // Assert
    assert!(created.is_ok(), "{created:?}");
    assert!(
        elapsed >= Duration::from_secs(2),
        "retried after {elapsed:?}"
    );
    let posts = emu.requests_with("POST").await;
    assert_eq!(posts.len(), 2, "one throttled POST, one retry: {posts:?}");
    assert_eq!(posts[0]["status"], 429);
    assert_eq!(posts[1]["status"], 201);
}

#[tokio::test]
async fn a_burst_of_500s_is_retried_until_the_request_succeeds() {
    // Arrange
    let emu = TestEmulator::start().await;
    let client = emu.client();
    emu.fault(json!({"kind": "error", "status": 500, "count": 3}))
        .await;

    // Act
    let config = client.test_connection().await;

    // Assert
    assert!(config.is_ok(), "{config:?}");
    let statuses: Vec<Value> = emu
        .requests()
        .await
        .into_iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        vec![json!(500), json!(500), json!(500), json!(200)]
    );
}

#[tokio::test]
async fn errors_past_the_retry_budget_surface_as_budget_exhausted_with_the_last_error() {
    // Arrange
    let emu = TestEmulator::start().await;
    let mut settings = emu.settings();
    settings.max_attempts = 3;
    let client = ScimClient::new(settings, None).unwrap();
    emu.fault(json!({"kind": "error", "status": 503, "count": 10}))
        .await;

    // Act
    let error = client.test_connection().await.unwrap_err();

    // Assert
    assert!(
        matches!(
            &error,
            ScimError::RetryBudgetExhausted { attempts: 3, last, .. }
                if matches!(**last, ScimError::Server { .. })
        ),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert_eq!(error.status(), Some(503));
    assert!(error.request_id().is_some(), "request id kept: {error}");
    assert_eq!(emu.requests().await.len(), 3);
}

#[tokio::test]
async fn a_lost_reply_on_create_ends_in_one_user_not_two() {
    // Arrange
    let emu = TestEmulator::start().await;
    let observer = Arc::new(RecordingObserver::default());
    let client = ScimClient::new(emu.settings(), Some(observer.clone())).unwrap();
    emu.fault(json!({"kind": "lostReply", "count": 1})).await;

    // Act
    let user = client.create_user(&scim_user(7)).await.unwrap();

    // Assert
    let found = client
        .find_user_by_user_name("user7@contoso.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, user.id, "the returned user is the one stored");
    let posts = emu.requests_with("POST").await;
    assert_eq!(posts.len(), 2, "lost POST, then the retry: {posts:?}");
    assert_eq!(posts[1]["status"], 409, "the retry met the first write");
    assert_eq!(
        emu.users_named("user7@contoso.example").await,
        1,
        "exactly one user in the emulator"
    );
    let seen = observer.seen.lock().unwrap().clone();
    assert_eq!(
        seen[0],
        ("POST", None),
        "the lost reply is observed as no status"
    );
    assert_eq!(seen[1], ("POST", Some(409)));
}

#[tokio::test]
async fn a_404_right_after_create_is_retried_until_the_resource_is_visible() {
    // Arrange
    let emu = TestEmulator::start().await;
    let client = emu.client();
    emu.fault(json!({"kind": "delayedVisibility", "millis": 500}))
        .await;
    let user = client.create_user(&scim_user(1)).await.unwrap();
    let user_id = user.id.unwrap();
    let group = client
        .create_or_get_group("Fresh Group", None)
        .await
        .unwrap();
    let group_id = group.id.unwrap();

    // Act
    let fetched = client.get_user(&user_id).await;
    let added = client.add_members(&group_id, &[&user_id]).await;

    // Assert
    assert!(fetched.is_ok(), "{fetched:?}");
    assert!(added.is_ok(), "{added:?}");
    let gets: Vec<Value> = emu
        .requests_with("GET")
        .await
        .into_iter()
        .filter(|r| r["path"].as_str().unwrap_or_default().ends_with(&user_id))
        .collect();
    assert!(
        gets.len() >= 2,
        "first GET saw 404 and was retried: {gets:?}"
    );
    assert_eq!(gets[0]["status"], 404);
    assert_eq!(gets.last().unwrap()["status"], 200);
    assert!(client.is_member(&group_id, &user_id).await.unwrap());
}

#[tokio::test]
async fn a_404_on_a_resource_we_did_not_just_create_is_not_retried() {
    // Arrange
    let emu = TestEmulator::start().await;
    let client = emu.client();

    // Act
    let error = client
        .get_group("11111111-2222-4333-8444-555555555555")
        .await
        .unwrap_err();

    // Assert
    assert!(matches!(error, ScimError::NotFound(_)), "{error:?}");
    assert_eq!(emu.requests().await.len(), 1);
}

#[tokio::test]
async fn a_401_is_reported_at_once_and_not_retried() {
    // Arrange
    let emu = TestEmulator::start().await;
    let mut settings = emu.settings();
    settings.token = "wrong-token-do-not-print".into();
    let client = ScimClient::new(settings, None).unwrap();

    // Act
    let error = client.create_user(&scim_user(1)).await.unwrap_err();

    // Assert
    assert!(matches!(error, ScimError::Unauthorized(_)), "{error:?}");
    assert!(error.is_auth() && !error.is_transient());
    assert_eq!(emu.requests().await.len(), 1, "exactly one request sent");
    let shown = format!("{error} {error:?}");
    assert!(shown.contains("401"), "{shown}");
    assert!(
        !shown.contains("wrong-token-do-not-print"),
        "token leaked: {shown}"
    );
}

#[tokio::test]
async fn a_400_is_reported_with_the_aws_detail_and_not_retried() {
    // Arrange: a user the emulator refuses but our checks let through (a reserved name).
    let emu = TestEmulator::start().await;
    let client = emu.client();
    let mut user = scim_user(1);
    user.user_name = Some("Administrator".into());

    // Act
    let error = client.create_user(&user).await.unwrap_err();

    // Assert
    assert!(matches!(error, ScimError::BadRequest(_)), "{error:?}");
    let response = error.response().unwrap();
    assert_eq!(response.status, 400);
    assert!(response.detail.is_some(), "AWS detail kept: {error}");
    assert!(response.request_id.is_some(), "request id kept: {error}");
    assert_eq!(emu.requests().await.len(), 1);
}

#[tokio::test]
async fn two_hundred_fifty_member_changes_go_out_as_three_patches() {
    // Arrange
    let emu = TestEmulator::start().await;
    let client = emu.client();
    let ids = create_users(&client, 1000, 250).await;
    let group = client.create_or_get_group("Big Group", None).await.unwrap();
    let group_id = group.id.unwrap();
    emu.clear_requests().await;

    // Act
    client.add_members(&group_id, &ids).await.unwrap();

    // Assert
    let patches = emu.requests_with("PATCH").await;
    assert_eq!(patches.len(), 3, "250 changes in 3 PATCHes");
    assert!(patches.iter().all(|p| p["status"] == 204), "{patches:?}");

    // And the same on the way out.
    emu.clear_requests().await;
    client.remove_members(&group_id, &ids).await.unwrap();
    assert_eq!(emu.requests_with("PATCH").await.len(), 3);
    assert!(client
        .list_group_members(&group_id)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn paging_a_group_with_more_than_100_members_returns_them_all() {
    // Arrange
    let emu = TestEmulator::start().await;
    let client = emu.client();
    let ids = create_users(&client, 2000, 150).await;
    let group = client
        .create_or_get_group("Paged Group", None)
        .await
        .unwrap();
    let group_id = group.id.unwrap();
    client.add_members(&group_id, &ids).await.unwrap();
    emu.clear_requests().await;

    // Act
    let members = client.list_group_members(&group_id).await.unwrap();

    // Assert
    let mut got: Vec<String> = members.into_iter().filter_map(|u| u.id).collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want);
    let gets = emu.requests_with("GET").await;
    assert!(gets.len() >= 2, "more than one page: {gets:?}");
    let first_query = gets[0]["query"].as_str().unwrap();
    assert!(
        first_query.split('&').any(|p| p == "cursor"),
        "first page asks for cursor mode: {first_query}"
    );
    assert!(gets[1]["query"].as_str().unwrap().contains("cursor="));
}

#[tokio::test]
async fn validation_failures_send_no_request_at_all() {
    // Arrange
    let emu = TestEmulator::start().await;
    let client = emu.client();
    let mut no_given_name = scim_user(1);
    no_given_name.name.as_mut().unwrap().given_name = None;
    let mut two_emails = scim_user(2);
    two_emails.emails.push(two_emails.emails[0].clone());
    let mut colon = scim_user(3);
    colon.display_name = Some("Ops: on call".into());

    // Act
    let results = vec![
        client.create_user(&no_given_name).await.map(|_| ()),
        client.create_user(&two_emails).await.map(|_| ()),
        client.create_user(&colon).await.map(|_| ()),
        client
            .create_or_get_group("Hello: there", None)
            .await
            .map(|_| ()),
        client.add_members("", &["u1"]).await,
    ];

    // Assert
    for result in results {
        let error = result.unwrap_err();
        assert!(matches!(error, ScimError::Validation(_)), "{error:?}");
    }
    assert!(emu.requests().await.is_empty(), "no request reached AWS");
}

#[tokio::test]
async fn the_strip_policy_sends_the_cleaned_values() {
    // Arrange
    let emu = TestEmulator::start().await;
    let mut settings = emu.settings();
    settings.character_policy = CharacterPolicy::Strip;
    let client = ScimClient::new(settings, None).unwrap();
    let mut user = scim_user(1);
    user.display_name = Some("Given1 \"Ops\" Family".into());

    // Act
    let created = client.create_user(&user).await.unwrap();
    let group = client
        .create_or_get_group("Ops: on call", None)
        .await
        .unwrap();

    // Assert
    assert_eq!(created.display_name.as_deref(), Some("Given1 Ops Family"));
    assert_eq!(group.display_name.as_deref(), Some("Ops on call"));
}

#[tokio::test]
async fn a_user_created_elsewhere_is_returned_by_create_user() {
    // Arrange
    let emu = TestEmulator::start().await;
    let client = emu.client();
    let first = client.create_user(&scim_user(5)).await.unwrap();

    // Act: a second create of the same user (e.g. another replica) meets 409.
    let second = client.create_user(&scim_user(5)).await.unwrap();

    // Assert
    assert_eq!(second.id, first.id);
    let posts = emu.requests_with("POST").await;
    assert_eq!(posts.last().unwrap()["status"], 409);
}

#[tokio::test]
async fn a_timed_out_request_is_retried_and_reported_as_a_timeout_when_retries_run_out() {
    // Arrange: every reply takes longer than the client waits.
    let emu = TestEmulator::start().await;
    let observer = Arc::new(RecordingObserver::default());
    let mut settings = emu.settings();
    settings.request_timeout = Duration::from_millis(200);
    settings.max_attempts = 2;
    let client = ScimClient::new(settings, Some(observer.clone())).unwrap();
    emu.fault(json!({"kind": "latency", "millis": 700})).await;

    // Act
    let error = client.test_connection().await.unwrap_err();

    // Assert
    assert!(
        matches!(
            &error,
            ScimError::RetryBudgetExhausted { attempts: 2, last, .. }
                if matches!(**last, ScimError::Unanswered(SendError::Timeout { .. }))
        ),
        "{error:?}"
    );
    assert_eq!(
        observer.seen.lock().unwrap().clone(),
        vec![("GET", None), ("GET", None)],
        "timeouts are observed without a status"
    );
}

#[tokio::test]
async fn a_slow_reply_once_is_retried_and_succeeds() {
    // Arrange
    let emu = TestEmulator::start().await;
    let mut settings = emu.settings();
    settings.request_timeout = Duration::from_millis(300);
    let client = ScimClient::new(settings, None).unwrap();
    emu.fault(json!({"kind": "latency", "millis": 1000, "count": 1}))
        .await;

    // Act
    let config = client.test_connection().await;

    // Assert
    assert!(config.is_ok(), "{config:?}");
}

#[tokio::test]
async fn requests_are_paced_to_the_configured_rate() {
    // Arrange: 10 requests per second, no burst beyond one.
    let emu = TestEmulator::start().await;
    let mut settings = emu.settings();
    settings.requests_per_second = 10;
    settings.burst = 1;
    let client = ScimClient::new(settings, None).unwrap();

    // Act
    let started = Instant::now();
    for _ in 0..4 {
        client.test_connection().await.unwrap();
    }
    let elapsed = started.elapsed();

    // Assert: the 2nd, 3rd and 4th request each waited ~100 ms for a token.
    assert!(elapsed >= Duration::from_millis(280), "took {elapsed:?}");
}

#[tokio::test]
async fn adding_a_present_member_succeeds_even_when_aws_answers_409() {
    // Arrange: the emulator answers 409 to a redundant add, as the Identity Store API does.
    let emu = TestEmulator::start().await;
    emu.emulator.update_settings(|s| {
        s.duplicate_member_add = aws_scim_emulator::RedundantMemberChange::Conflict;
    });
    let client = emu.client();
    let user_id = create_users(&client, 1, 1).await.remove(0);
    let group_id = client
        .create_or_get_group("Dup Group", None)
        .await
        .unwrap()
        .id
        .unwrap();
    client.add_members(&group_id, &[&user_id]).await.unwrap();

    // Act
    let again = client.add_members(&group_id, &[&user_id]).await;

    // Assert
    assert!(again.is_ok(), "{again:?}");
    let patches = emu.requests_with("PATCH").await;
    assert_eq!(patches.last().unwrap()["status"], 409);
    assert!(client.is_member(&group_id, &user_id).await.unwrap());
}
