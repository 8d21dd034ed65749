//! The JIT fast path: exact admission and immediate dispatch to the AWS SCIM emulator.

use std::time::{Duration, Instant};

use aws_scim_emulator::{Fault, RunningEmulator, DEFAULT_TOKEN};
use pimbridge::admission::{self, AdmissionRule};
use pimbridge::domain::Lane;
use serde_json::{json, Value};

use crate::fixture::*;
use crate::helpers::*;
use crate::postgres::PgServer;

#[tokio::test]
async fn the_first_five_activations_per_application_reach_aws_at_once_and_the_rest_are_deferred() {
    // Arrange
    let f = spawn_with_emulators(|_| {}).await;

    // Act: 12 activations for alpha and 3 for beta within one second.
    let (batch_a, batch_b) = (activations("a", GROUP_A, 12), activations("b", GROUP_B, 3));
    let posted = Instant::now();
    let (ra, rb) = tokio::join!(f.app.post_events(&batch_a), f.app.post_events(&batch_b));
    assert_eq!(ra.status(), 202);
    assert_eq!(rb.status(), 202);

    // Assert: 5 and 3 memberships in AWS within one second of the posts.
    let took = eventually(
        Duration::from_secs(1).saturating_sub(posted.elapsed()),
        || members(&f.a) == 5 && members(&f.b) == 3,
    )
    .await;
    assert!(
        took.is_some(),
        "expected 5/3 memberships within 1 s, found {}/{}",
        members(&f.a),
        members(&f.b)
    );
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(members(&f.a), 5, "no more than five reach alpha");
    assert_eq!(
        f.app
            .count("SELECT count(*) FROM jobs WHERE application = 'alpha' AND lane = 'deferred' AND state = 'pending' AND attempts = 0")
            .await,
        7,
        "the other seven wait for the sync cycle, untouched"
    );

    let metrics = f.app.metrics().await;
    let count = |app: &str, lane: &str| {
        metric_value(
            &metrics,
            "pimbridge_activations_total",
            &[("application", app), ("lane", lane)],
        )
    };
    assert_eq!(
        (count("alpha", "immediate"), count("alpha", "deferred")),
        (5.0, 7.0)
    );
    assert_eq!(
        (count("beta", "immediate"), count("beta", "deferred")),
        (3.0, 0.0)
    );
    // One latency observation per confirmed activation.
    let observations = |app: &str| {
        metric_value(
            &metrics,
            "pimbridge_provisioning_latency_seconds_count",
            &[
                ("application", app),
                ("lane", "immediate"),
                ("action", "add"),
            ],
        )
    };
    assert_eq!((observations("alpha"), observations("beta")), (5.0, 3.0));
    assert_eq!(
        metric_value(
            &metrics,
            "pimbridge_queue_depth",
            &[("application", "alpha"), ("lane", "deferred")]
        ),
        7.0
    );
    assert!(
        metric_value(
            &metrics,
            "pimbridge_scim_requests_total",
            &[
                ("application", "alpha"),
                ("method", "PATCH"),
                ("status", "204")
            ]
        ) >= 5.0
    );
}

/// Inserts an immediate admission of `application` at `at` (an event and its job).
async fn admitted_at(app: &TestApp, application: &str, id: &str, at: time::OffsetDateTime) {
    app.db
        .execute(
            "WITH e AS (INSERT INTO events (source, source_event_id, kind, occurred_at, group_id, principal_id, routing)
                        VALUES ('api', $1, 'activation', $2, 'g', 'p', 'routed') RETURNING id)
             INSERT INTO jobs (event_id, application, action, lane, admitted_at, state)
             SELECT id, $3, 'add', 'immediate', $2, 'done' FROM e",
            &[&id, &at, &application],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_window_slides_the_sixth_at_nine_point_nine_seconds_waits_and_at_ten_goes() {
    let app = spawn_app().await;
    let rule = AdmissionRule {
        limit: 5,
        window: Duration::from_secs(10),
    };
    let t0 = time::OffsetDateTime::now_utc();
    for i in 0..5 {
        admitted_at(
            &app,
            "alpha",
            &format!("w-{i}"),
            t0 + time::Duration::milliseconds(i * 100),
        )
        .await;
    }
    let pool = pool_on(app.database_url.as_str(), 2);
    let db = pool.get().await.unwrap();
    let decide = |at: time::OffsetDateTime| {
        let db = &db;
        async move {
            admission::decide_at(db, "alpha", rule, at)
                .await
                .unwrap()
                .lane
        }
    };

    assert_eq!(
        decide(t0 + time::Duration::milliseconds(9_900)).await,
        Lane::Deferred,
        "9.9 s after the first: five in the window"
    );
    assert_eq!(
        decide(t0 + time::Duration::seconds(10)).await,
        Lane::Immediate,
        "10.0 s after the first: it has left the window"
    );
    assert_eq!(
        decide(t0 + time::Duration::milliseconds(10_050)).await,
        Lane::Immediate
    );
    assert_eq!(
        decide(t0 + time::Duration::milliseconds(9_999)).await,
        Lane::Deferred
    );
    assert_eq!(
        admission::decide_at(&db, "beta", rule, t0)
            .await
            .unwrap()
            .lane,
        Lane::Immediate,
        "admission is per application"
    );
}

#[tokio::test]
async fn with_a_short_window_the_lane_reopens_once_the_window_has_slid() {
    let f = spawn_with_emulators(|app| app.activation_window = Duration::from_secs(1)).await;
    f.app.post_events(&activations("s", GROUP_A, 6)).await;
    assert_eq!(
        f.app
            .count("SELECT count(*) FROM jobs WHERE lane = 'immediate'")
            .await,
        5
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    f.app
        .post_events(&activation("s-late", GROUP_A, "late-user"))
        .await;

    let lane: String = f
        .app
        .db
        .query_one(
            "SELECT j.lane FROM jobs j JOIN events e ON e.id = j.event_id WHERE e.source_event_id = 's-late'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(lane, "immediate");
}

#[tokio::test]
async fn two_replicas_on_one_database_admit_exactly_five_of_twenty_concurrent_activations() {
    let f = spawn_with_emulators(|_| {}).await;
    let second = spawn_app_with(
        dispatch_settings(&f.database_url, &f.a, &f.b, |_| {}),
        &f.database_url,
    )
    .await;

    let mut posts = Vec::new();
    for i in 0..20 {
        let target = if i % 2 == 0 { &f.app } else { &second };
        let body = activation(&format!("rep-{i}"), GROUP_A, &format!("rep-user-{i}"));
        posts.push(async move { target.post_events(&body).await.status().as_u16() });
    }
    let statuses = futures_util::future::join_all(posts).await;

    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    assert_eq!(
        f.app
            .count("SELECT count(*) FROM jobs WHERE lane = 'immediate'")
            .await,
        5
    );
    assert_eq!(
        f.app
            .count("SELECT count(*) FROM jobs WHERE lane = 'deferred'")
            .await,
        15
    );
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    assert_eq!(members(&f.a), 5);
    assert_eq!(patches(&f.a), 5, "no job was sent by both replicas");
}

#[tokio::test]
async fn a_redelivered_activation_takes_no_slot_and_sends_no_second_patch() {
    let f = spawn_with_emulators(|_| {}).await;
    let first = activation("again-1", GROUP_A, "again-user");
    f.app.post_events(&first).await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;

    let redelivered = f.app.post_events(&first).await;
    f.app.post_events(&activations("more", GROUP_A, 4)).await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;

    assert_eq!(redelivered.json::<Value>().await.unwrap()["duplicates"], 1);
    assert_eq!(
        f.app
            .count("SELECT count(*) FROM jobs WHERE lane = 'immediate'")
            .await,
        5,
        "the redelivery took no slot"
    );
    assert_eq!(members(&f.a), 5);
    assert_eq!(patches(&f.a), 5, "one PATCH per distinct activation");
}

#[tokio::test]
async fn a_known_user_and_group_cost_exactly_one_patch() {
    let f = spawn_with_emulators(|_| {}).await;
    f.app
        .post_events(&activation("known-1", GROUP_A, "known-user"))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    f.a.clear_request_log();

    f.app
        .post_events(&activation("known-2", GROUP_A, "known-user"))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;

    let log = f.a.request_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].method, "PATCH");
}

/// A replica without a dispatcher accepts activation `id` for alpha; returns it (still running),
/// the two emulators and the database.
async fn accepted_by_an_intake_only_replica(
    id: &str,
) -> (TestApp, RunningEmulator, RunningEmulator, String) {
    let a = emulator().await;
    let b = emulator().await;
    let database_url = PgServer::shared().fresh_database().await;
    let mut intake_only_settings = dispatch_settings(&database_url, &a, &b, |_| {});
    intake_only_settings.dispatch.enabled = false;
    let app = spawn_app_with(intake_only_settings, &database_url).await;
    let response = app
        .post_events(&activation(id, GROUP_A, &format!("{id}-user")))
        .await;
    assert_eq!(response.status(), 202);
    (app, a, b, database_url)
}

#[tokio::test]
async fn jobs_committed_before_a_crash_are_sent_once_after_restart() {
    // Arrange: a replica without a dispatcher accepts the activation, then goes away.
    let (mut intake_only, a, b, database_url) = accepted_by_an_intake_only_replica("crash-1").await;
    intake_only.stop().await;
    assert_eq!(members(&a), 0);

    // Act + Assert: a replica with a dispatcher starts and sends it once.
    dispatching_replica_applies_it_once(&database_url, &a, &b, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_intake_holding_the_application_does_not_stall_the_dispatch_of_a_committed_job() {
    // Arrange: a committed immediate job, and an intake transaction of another request that holds
    // the application's row (as a large request does until it commits).
    let (intake_only, a, b, database_url) = accepted_by_an_intake_only_replica("held-1").await;
    let pool = pool_on(database_url.as_str(), 1);
    let mut holder = pool.get().await.unwrap();
    let intake = holder.transaction().await.unwrap();
    pimbridge::store::events::lock_applications(
        &intake,
        &["alpha"],
        pimbridge::store::events::IntakeLock::Applications,
    )
    .await
    .unwrap();

    // Act: a dispatching replica starts while the lock is held.
    let app = spawn_app_with(
        dispatch_settings(&database_url, &a, &b, |_| {}),
        &database_url,
    )
    .await;

    // Assert: the job reaches AWS and is recorded done without waiting for that intake.
    let done = eventually(Duration::from_secs(5), || members(&a) == 1).await;
    assert!(done.is_some(), "the job waited for the intake's lock");
    wait_for_no_pending(&app, Duration::from_secs(5)).await;
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE state = 'done'")
            .await,
        1
    );
    intake.rollback().await.unwrap();
    drop(intake_only);
}

#[tokio::test]
async fn a_job_claimed_by_a_replica_that_died_is_taken_over_and_applied_once() {
    let (mut intake_only, a, b, database_url) = accepted_by_an_intake_only_replica("dead-1").await;
    // A replica claims the job and dies before its SCIM call: the lease is left behind.
    intake_only
        .db
        .execute(
            "UPDATE jobs SET state = 'running', lease_owner = 'replica-that-died', attempts = 1,
                 lease_expires_at = clock_timestamp() + interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    intake_only.stop().await;

    let app = spawn_app_with(
        dispatch_settings(&database_url, &a, &b, |_| {}),
        &database_url,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(members(&a), 0, "a live lease is respected");

    wait_for_no_pending(&app, Duration::from_secs(6)).await;
    assert_eq!(members(&a), 1);
    assert_eq!(patches(&a), 1);
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE state = 'done'")
            .await,
        1
    );
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_until_the_job_completes() {
    let f = spawn_with_emulators(|_| {}).await;
    f.a.inject(Fault::throttle(2, 1));
    f.a.inject(Fault::error(500, 2));

    f.app
        .post_events(&activation("flaky-1", GROUP_A, "flaky-user"))
        .await;

    wait_for_no_pending(&f.app, Duration::from_secs(20)).await;
    assert_eq!(members(&f.a), 1);
    let log = f.a.request_log();
    assert_eq!(log.iter().filter(|r| r.status == 429).count(), 2, "{log:?}");
    assert_eq!(log.iter().filter(|r| r.status == 500).count(), 2, "{log:?}");
    assert_eq!(
        f.app
            .count("SELECT count(*) FROM jobs WHERE state = 'done'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_request_aws_refuses_marks_the_job_failed_with_the_reason() {
    let f = spawn_with_emulators(|_| {}).await;
    let mut event = activation("refused-1", GROUP_A, "refused-user");
    // AWS reserves this name; the emulator answers 400 as AWS does.
    event["group"] = json!({"displayName": "AWSAdministrators"});

    f.app.post_events(&event).await;

    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    let row = f
        .app
        .db
        .query_one("SELECT state, last_error FROM jobs", &[])
        .await
        .unwrap();
    let (state, reason): (String, String) = (row.get(0), row.get(1));
    assert_eq!(state, "failed");
    assert!(
        reason.contains("400") || reason.to_lowercase().contains("bad request"),
        "{reason}"
    );
    assert!(
        reason.contains("AWSAdministrators") || reason.contains("reserved"),
        "the emulator's detail is kept: {reason}"
    );
    assert_eq!(members(&f.a), 0);
}

#[tokio::test]
async fn an_activation_without_user_attributes_fails_with_a_missing_attributes_reason() {
    let f = spawn_with_emulators(|_| {}).await;
    let mut event = activation("bare-1", GROUP_A, "bare-user");
    event.as_object_mut().unwrap().remove("user");

    f.app.post_events(&event).await;

    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    let reason: String = f
        .app
        .db
        .query_one("SELECT last_error FROM jobs WHERE state = 'failed'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(reason.contains("missing attributes"), "{reason}");
}

#[tokio::test]
async fn a_cached_id_that_aws_no_longer_knows_is_resolved_again() {
    let f = spawn_with_emulators(|_| {}).await;
    f.app
        .post_events(&activation("stale-1", GROUP_A, "stale-user"))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    let first_id = f.a.group_members_by_name(AWS_GROUP).unwrap()[0].clone();
    // Someone deletes the user in AWS; pimbridge still has its id cached.
    let deleted = reqwest::Client::new()
        .delete(format!("{}/Users/{first_id}", f.a.scim_base_url()))
        .bearer_auth(DEFAULT_TOKEN)
        .header("user-agent", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);

    f.app
        .post_events(&activation("stale-2", GROUP_A, "stale-user"))
        .await;

    // The user was created moments ago, so the client first reads its 404s as AWS's eventual
    // consistency and retries them for up to its 5 s window before resolving the id again.
    wait_for_no_pending(&f.app, Duration::from_secs(15)).await;
    assert_eq!(
        f.app
            .count("SELECT count(*) FROM jobs WHERE state = 'done'")
            .await,
        2
    );
    let members = f.a.group_members_by_name(AWS_GROUP).unwrap();
    assert_eq!(members.len(), 1);
    assert_ne!(members[0], first_id, "the user was created again");
    let cached: String = f
        .app
        .db
        .query_one("SELECT aws_id FROM scim_ids WHERE kind = 'user'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(cached, members[0], "the cache holds the new id");
}

#[tokio::test]
async fn an_application_can_map_mail_rather_than_the_user_principal_name_to_user_name() {
    let f = spawn_with_emulators(|app| {
        app.user_name_attribute = pimbridge::config::UserNameAttribute::Mail
    })
    .await;
    let mut event = activation("mail-1", GROUP_A, "mail-user");
    event["user"]["userName"] = json!("mail-user@contoso.onmicrosoft.com");
    event["user"]["email"] = json!("mail.user@contoso.com");

    f.app.post_events(&event).await;

    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    let users = f.a.state().users;
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["userName"], "mail.user@contoso.com");
    assert_eq!(
        users[0]["externalId"], "mail-user",
        "externalId is the Entra object id"
    );
}

#[tokio::test]
async fn a_job_whose_retries_run_out_is_failed_with_the_last_error() {
    // One job attempt (the client still retries inside it), against an AWS that only fails.
    let a = emulator().await;
    let b = emulator().await;
    let database_url = PgServer::shared().fresh_database().await;
    let mut settings = dispatch_settings(&database_url, &a, &b, |_| {});
    settings.dispatch.max_attempts = 1;
    let app = spawn_app_with(settings, &database_url).await;
    a.inject(Fault::error(503, u64::MAX));

    app.post_events(&activation("doomed-1", GROUP_A, "doomed-user"))
        .await;

    wait_for_no_pending(&app, Duration::from_secs(40)).await;
    let row = app
        .db
        .query_one("SELECT state, last_error, attempts FROM jobs", &[])
        .await
        .unwrap();
    let (state, reason, attempts): (String, String, i32) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(state, "failed");
    assert_eq!(attempts, 1);
    assert!(reason.contains("503"), "the last error is kept: {reason}");
    assert!(
        a.request_log().len() > 1,
        "the client retried before giving up"
    );
}

/// Two emulators, a fresh database and dispatch settings on them with leases of 1 s (renewed
/// every third of it).
async fn with_short_leases() -> (
    RunningEmulator,
    RunningEmulator,
    String,
    pimbridge::config::Settings,
) {
    let a = emulator().await;
    let b = emulator().await;
    let database_url = PgServer::shared().fresh_database().await;
    let mut settings = dispatch_settings(&database_url, &a, &b, |_| {});
    settings.dispatch.lease = Duration::from_secs(1);
    (a, b, database_url, settings)
}

/// (state, attempts) of the one job of alpha.
async fn alpha_job(app: &TestApp) -> (String, i32) {
    let row = app
        .db
        .query_one(
            "SELECT state, attempts FROM jobs WHERE application = 'alpha'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_reconciliation_that_outlasts_the_lease_keeps_it_against_a_second_replica() {
    // Arrange: two dispatching replicas with leases of 1 s, looking for due jobs every second;
    // AWS answers the first PATCH after 3 s, long after the lease would have run out unrenewed.
    let (a, _b, database_url, settings) = with_short_leases().await;
    let first = spawn_app_with(settings.clone(), &database_url).await;
    let _second = spawn_app_with(settings, &database_url).await;
    a.inject(Fault::latency(3_000).for_methods(&["PATCH"]).times(1));

    // Act
    let body = activation("slow-1", GROUP_A, "slow-user-1");
    assert_eq!(first.post_events(&body).await.status(), 202);
    wait_for_no_pending(&first, Duration::from_secs(10)).await;

    // Assert: the first claim finished the job; the other replica never took it over.
    assert_eq!(alpha_job(&first).await, ("done".to_string(), 1));
    assert_eq!(members(&a), 1);
    assert_eq!(patches(&a), 1);
}

#[tokio::test]
async fn a_reconciliation_goes_on_while_its_lease_renewal_waits_for_a_connection() {
    use pimbridge::store::events::lock_admission;
    // Arrange: a pool of 3 connections, leases of 1 s (renewed every third), and AWS answering
    // the first PATCH after 1.2 s.
    let (a, _b, database_url, mut settings) = with_short_leases().await;
    settings.database.max_connections = 3;
    settings.database.connect_timeout = Duration::from_secs(30);
    let app = spawn_app_with(settings, &database_url).await;
    a.inject(Fault::latency(1_200).for_methods(&["PATCH"]).times(1));

    // Act: an activation goes out; behind it, intakes that wait for an admission lock held
    // here take every other connection of the pool, so the renewal has to wait for one.
    let body = activation("held-up-0", GROUP_A, "held-up-user-0");
    assert_eq!(app.post_events(&body).await.status(), 202);
    let pool = pool_on(database_url.as_str(), 1);
    let mut holder = pool.get().await.unwrap();
    let in_flight = holder.transaction().await.unwrap();
    lock_admission(&in_flight, "alpha").await.unwrap();
    let waiting = futures_util::future::join_all((1..=4).map(|i| {
        let id = format!("held-up-{i}");
        let body = activation(&id, GROUP_A, &format!("held-up-user-{i}"));
        let app = &app;
        async move { app.post_events(&body).await.status() }
    }));
    tokio::pin!(waiting);

    // Assert: the first job is done while the pool is still full (the reconciliation is never
    // paused by the renewal waiting beside it).
    let done = async {
        while app
            .count(
                "SELECT count(*) FROM jobs j JOIN events e ON e.id = j.event_id
                    WHERE e.source_event_id = 'held-up-0' AND j.state = 'done'",
            )
            .await
            == 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = &mut waiting => panic!("the intakes did not wait for the admission lock"),
        () = tokio::time::sleep(Duration::from_secs(10)) => {
            panic!("the reconciliation stalled while the pool was full")
        }
        () = done => {}
    }
    assert_eq!(members(&a), 1);
    in_flight.rollback().await.unwrap();
    for status in waiting.await {
        assert_eq!(status, 202);
    }
}

#[tokio::test]
async fn a_job_handed_over_starts_while_the_dispatchers_claim_waits_for_the_database() {
    // Arrange: a running job of another replica, so that every claim asks the table of replicas
    // which owners are dead, and that table locked here: the dispatcher's next claim waits.
    let Fixture { app, a, .. } = spawn_with_emulators(|_| {}).await;
    let first = activation("claim-wait-0", GROUP_A, "claim-wait-user-0");
    assert_eq!(app.post_events(&first).await.status(), 202);
    wait_for_no_pending(&app, Duration::from_secs(5)).await;
    app.db
        .execute(
            "UPDATE jobs SET state = 'running', lease_owner = 'another-replica',
                             lease_expires_at = clock_timestamp() + interval '1 hour'",
            &[],
        )
        .await
        .unwrap();
    let (holder, connection) = tokio_postgres::connect(&app.database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    holder
        .batch_execute("BEGIN; LOCK TABLE replicas IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let claim_waits = "SELECT count(*) FROM pg_stat_activity
                       WHERE datname = current_database() AND wait_event_type = 'Lock'
                         AND query LIKE 'WITH due AS%'";
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.count(claim_waits).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no claim came to wait"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Act: an activation the intake hands over to the dispatcher.
    let second = activation("claim-wait-1", GROUP_A, "claim-wait-user-1");
    assert_eq!(app.post_events(&second).await.status(), 202);

    // Assert: it reaches AWS and is done while the claim still waits.
    let done = "SELECT count(*) FROM jobs j JOIN events e ON e.id = j.event_id
                WHERE e.source_event_id = 'claim-wait-1' AND j.state = 'done'";
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.count(done).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the handed-over job waited for the dispatcher's claim"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(members(&a), 2);
    assert_eq!(
        app.count(claim_waits).await,
        1,
        "the claim was still waiting"
    );
    holder.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn a_queue_deeper_than_the_dispatchers_slots_drains_without_waiting_for_a_poll() {
    // Arrange: one slot and a poll far away, so only claims after a full one can drain the rest.
    let (a, b) = (emulator().await, emulator().await);
    let database_url = PgServer::shared().fresh_database().await;
    let mut settings = dispatch_settings(&database_url, &a, &b, |app| {
        app.activation_limit = 8;
    });
    settings.dispatch.concurrency = 1;
    settings.dispatch.poll_interval = Duration::from_secs(3600);
    let app = spawn_app_with(settings, &database_url).await;

    // Act: eight activations admitted together; the intake hands one over, the rest are queued.
    let posted = app.post_events(&activations("q", GROUP_A, 8)).await;
    assert_eq!(posted.status(), 202);

    // Assert: all eight reach AWS one after another, each claimed as the slot frees up.
    let drained = eventually(Duration::from_secs(10), || members(&a) == 8).await;
    assert!(
        drained.is_some(),
        "expected 8 members, found {}",
        members(&a)
    );
}

#[tokio::test]
async fn an_outcome_that_cannot_be_recorded_leaves_nothing_half_written_and_the_job_is_tried_again()
{
    // The advisory lock class of the pairs' locks a reconciliation holds ("pair").
    const PAIR_LOCKS: u32 = 0x7061_6972;
    // Arrange: leases of 1 s; the provisioning log refuses every entry, so the record of the
    // first attempt's outcome fails after AWS has applied the change.
    let (a, _b, database_url, settings) = with_short_leases().await;
    let app = spawn_app_with(settings, &database_url).await;
    app.db
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
             CREATE TRIGGER refuse BEFORE INSERT ON provisioning_log
                 FOR EACH STATEMENT EXECUTE FUNCTION refuse();",
        )
        .await
        .unwrap();

    // Act: a new user's activation goes out; wait until its reconciliation has let go of the
    // pair (it does so right behind its record, whatever became of that).
    let body = activation("unrecorded-1", GROUP_A, "unrecorded-user");
    assert_eq!(app.post_events(&body).await.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(10);
    while members(&a) == 0
        || app
            .count(&format!(
                "SELECT count(*) FROM pg_locks WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND locktype = 'advisory' AND classid = {PAIR_LOCKS}"
            ))
            .await
            > 0
    {
        assert!(Instant::now() < deadline, "the change never went out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Assert: nothing of the outcome was written: not the user's AWS id, not the record of AWS
    // (still `unknown` as written ahead), not the job's end.
    assert_eq!(alpha_job(&app).await.0, "running");
    assert_eq!(
        app.count("SELECT count(*) FROM scim_ids WHERE kind = 'user'")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM aws_memberships WHERE aws_state = 'unknown'")
            .await,
        1
    );

    // Act: the log takes entries again.
    app.db
        .batch_execute("DROP TRIGGER refuse ON provisioning_log")
        .await
        .unwrap();
    wait_for_no_pending(&app, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while alpha_job(&app).await.0 != "done" {
        assert!(Instant::now() < deadline, "the job was not tried again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Assert: the second attempt, after the lease ran out, found the user AWS already had and
    // recorded everything: one member, owned by pimbridge and known to be there.
    assert_eq!(alpha_job(&app).await, ("done".to_string(), 2));
    assert_eq!(members(&a), 1);
    assert_eq!(
        app.count("SELECT count(*) FROM scim_ids WHERE kind = 'user'")
            .await,
        1
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM aws_memberships
             WHERE aws_state = 'present' AND provenance = 'owned'"
        )
        .await,
        1
    );
}
