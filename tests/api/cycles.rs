//! Sync cycles: the deferred lane, deactivations and ended activations reach AWS (the emulator)
//! only in cycles, with the newest event deciding each membership.

use std::time::Duration;

use aws_scim_emulator::Fault;
use serde_json::{json, Value};

use crate::fixture::*;
use crate::helpers::*;

/// The emulator's PATCH /Groups requests, as member counts (one entry per PATCH).
fn group_patches(emulator: &aws_scim_emulator::RunningEmulator) -> usize {
    patches(emulator)
}

async fn job_states(app: &TestApp) -> Vec<(String, String, String)> {
    app.db
        .query(
            "SELECT e.source_event_id, j.lane, j.state FROM jobs j JOIN events e ON e.id = j.event_id
             WHERE j.application = 'alpha' ORDER BY j.id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn state_of(states: &[(String, String, String)], id: &str) -> String {
    states
        .iter()
        .find(|(event, _, _)| event == id)
        .map(|(_, _, state)| state.clone())
        .unwrap_or_else(|| panic!("no job for {id}: {states:?}"))
}

/// An event of `kind` for `principal` in GROUP_A, happened `occurred` seconds from now.
fn event_at(kind: &str, id: &str, principal: &str, occurred: i64) -> Value {
    let mut event = if kind == "activation" {
        activation(id, GROUP_A, principal)
    } else {
        deactivation(id, GROUP_A, principal)
    };
    event["occurredAt"] = json!(at(occurred));
    event
}

fn is_member(emulator: &aws_scim_emulator::RunningEmulator, principal: &str) -> bool {
    let user_name = format!("{principal}@contoso.com");
    emulator
        .state()
        .users
        .iter()
        .find(|u| u["userName"] == user_name.as_str())
        .and_then(|u| u["id"].as_str().map(str::to_owned))
        .is_some_and(|id| {
            emulator
                .group_members_by_name("AWS-Admins")
                .unwrap_or_default()
                .contains(&id)
        })
}

#[tokio::test]
async fn the_overflow_waits_for_the_next_cycle_which_adds_it_in_one_patch() {
    // Arrange: 12 activations; 5 go at once, 7 wait.
    let f = spawn_with_cycles(|_| {}).await;
    f.app.post_events(&activations("over", GROUP_A, 12)).await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    assert_eq!(members(&f.a), 5);
    let patches_before = group_patches(&f.a);

    // Act
    let cycle = run_cycle(&f.app, "alpha").await;

    // Assert
    assert_eq!(members(&f.a), 12);
    assert_eq!(
        (cycle.outcome.as_str(), cycle.planned, cycle.applied),
        ("succeeded", 7, 7)
    );
    assert_eq!(cycle.kind, "incremental");
    assert_eq!(
        group_patches(&f.a) - patches_before,
        1,
        "seven members in one PATCH"
    );
    assert_eq!(
        f.app
            .count("SELECT count(*) FROM jobs WHERE lane = 'deferred' AND state = 'done' AND cycle_id IS NOT NULL")
            .await,
        7
    );
    assert_eq!(
        f.app
            .count("SELECT count(*) FROM provisioning_log WHERE cycle_id IS NOT NULL AND status = 'succeeded' AND action = 'add'")
            .await,
        7
    );
    let metrics = f.app.metrics().await;
    let deferred_adds = [
        ("application", "alpha"),
        ("lane", "deferred"),
        ("action", "add"),
    ];
    assert_eq!(
        metric_value(
            &metrics,
            "pimbridge_provisioning_latency_seconds_count",
            &deferred_adds
        ),
        7.0
    );
    assert!(
        metric_value(
            &metrics,
            "pimbridge_cycles_total",
            &[("application", "alpha"), ("outcome", "succeeded")]
        ) >= 2.0,
        "the initial cycle and this one"
    );
    assert!(
        metric_value(
            &metrics,
            "pimbridge_cycle_duration_seconds_count",
            &[("application", "alpha")]
        ) >= 2.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "pimbridge_queue_depth",
            &[("application", "alpha"), ("lane", "deferred")]
        ),
        0.0
    );
}

#[tokio::test]
async fn a_deactivation_is_applied_only_by_a_cycle() {
    // Arrange: an active membership, then its deactivation.
    let f = spawn_with_cycles(|_| {}).await;
    f.app.post_events(&activation("d-on", GROUP_A, "dee")).await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    assert!(is_member(&f.a, "dee"));
    f.app
        .post_events(&deactivation("d-off", GROUP_A, "dee"))
        .await;
    // Only cycles take deferred jobs (the dispatcher claims immediate ones alone).
    let lanes = f
        .app
        .count("SELECT count(*) FROM jobs WHERE action = 'remove' AND lane <> 'deferred'")
        .await;
    assert_eq!(lanes, 0, "a deactivation waits for a cycle");
    assert!(is_member(&f.a, "dee"));

    // Act
    let cycle = run_cycle(&f.app, "alpha").await;

    // Assert
    assert!(!is_member(&f.a, "dee"));
    assert_eq!((cycle.applied, cycle.failed), (1, 0));
    assert_eq!(state_of(&job_states(&f.app).await, "d-off"), "done");
    let state: String = f
        .app
        .db
        .query_one(
            "SELECT aws_state FROM aws_memberships WHERE principal_id = 'dee'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "absent");
    let again = run_cycle(&f.app, "alpha").await;
    assert_eq!(again.planned, 0, "nothing left to do");
}

#[tokio::test]
async fn an_activation_that_follows_a_deactivation_wins() {
    // Arrange: one slot per window, so after the first activation everything is deferred.
    let f = spawn_with_cycles(|app| app.activation_limit = 1).await;
    f.app
        .post_events(&event_at("activation", "w-1", "win", -30))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    f.app
        .post_events(&event_at("deactivation", "w-2", "win", -20))
        .await;
    f.app
        .post_events(&event_at("activation", "w-3", "win", -10))
        .await;
    f.a.clear_request_log();

    // Act
    let cycle = run_cycle(&f.app, "alpha").await;

    // Assert: still a member, and no change sent: AWS already had the membership (the cycle
    // only looked, as it checks every membership pimbridge owns).
    assert!(is_member(&f.a, "win"));
    assert_eq!((cycle.planned, cycle.skipped), (1, 1));
    assert!(
        f.a.request_log().iter().all(|r| r.method == "GET"),
        "{:?}",
        f.a.request_log()
    );
    let states = job_states(&f.app).await;
    assert_eq!(state_of(&states, "w-2"), "superseded");
    assert_eq!(state_of(&states, "w-3"), "done");
}

#[tokio::test]
async fn a_deactivation_older_than_the_membership_changes_nothing() {
    // Arrange: the activation happened after the deactivation, which arrives late.
    let f = spawn_with_cycles(|_| {}).await;
    f.app
        .post_events(&event_at("activation", "late-1", "late", -10))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    f.app
        .post_events(&event_at("deactivation", "late-2", "late", -60))
        .await;

    // Act
    run_cycle(&f.app, "alpha").await;

    // Assert
    assert!(is_member(&f.a, "late"));
    assert_eq!(state_of(&job_states(&f.app).await, "late-2"), "superseded");
}

#[tokio::test]
async fn a_deactivation_followed_by_a_newer_one_arriving_first_still_removes() {
    // Arrange: a deferred activation and a deactivation of someone AWS never saw.
    let f = spawn_with_cycles(|app| app.activation_limit = 1).await;
    f.app
        .post_events(&activation("slot", GROUP_A, "slot-holder"))
        .await;
    f.app
        .post_events(&event_at("activation", "x-1", "never", -20))
        .await;
    f.app
        .post_events(&event_at("deactivation", "x-2", "never", -10))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    f.a.clear_request_log();

    // Act
    let cycle = run_cycle(&f.app, "alpha").await;

    // Assert: the net state is "not a member"; the user is never created in AWS, and nothing is
    // removed: pimbridge never added the membership, so it does not own it.
    assert!(!is_member(&f.a, "never"));
    assert_eq!((cycle.applied, cycle.skipped, cycle.failed), (0, 1, 0));
    assert!(
        !f.a.request_log().iter().any(|r| r.method == "POST"),
        "no user created for a membership that ended"
    );
}

#[tokio::test]
async fn an_ended_activation_is_removed_by_the_cycle() {
    // Arrange: an activation that ends in one second.
    let f = spawn_with_cycles(|_| {}).await;
    let mut event = activation("short", GROUP_A, "brief");
    event["endsAt"] = json!(at(1));
    f.app.post_events(&event).await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    assert!(is_member(&f.a, "brief"));
    age_grants(&f.app, 2.0).await;

    // Act
    let cycle = run_cycle(&f.app, "alpha").await;

    // Assert
    assert!(!is_member(&f.a, "brief"));
    assert_eq!(cycle.applied, 1);
    let reason: String = f
        .app
        .db
        .query_one(
            "SELECT reason FROM provisioning_log WHERE cycle_id = $1 AND action = 'remove'",
            &[&cycle.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(reason, "the activation has ended");
    assert_eq!(run_cycle(&f.app, "alpha").await.planned, 0);
}

#[tokio::test]
async fn an_activation_that_has_already_ended_is_not_sent() {
    let f = spawn_with_cycles(|_| {}).await;
    let mut event = event_at("activation", "stale", "gone", -7200);
    event["endsAt"] = json!(at(-3600));

    f.app.post_events(&event).await;

    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    assert_eq!(state_of(&job_states(&f.app).await, "stale"), "superseded");
    assert_eq!(members(&f.a), 0);
    assert_eq!(group_patches(&f.a), 0);
}

#[tokio::test]
async fn two_hundred_fifty_deferred_activations_go_out_in_three_patches() {
    let f = spawn_with_cycles(|_| {}).await;
    f.app.post_events(&activations("bulk", GROUP_A, 255)).await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    let before = group_patches(&f.a);

    let cycle = run_cycle(&f.app, "alpha").await;

    assert_eq!((cycle.planned, cycle.applied), (250, 250));
    assert_eq!(members(&f.a), 255);
    assert_eq!(group_patches(&f.a) - before, 3);
}

#[tokio::test]
async fn one_replica_runs_each_cycle() {
    // Arrange: a second replica with cycles on, on the same database.
    let f = spawn_with_cycles(|_| {}).await;
    let _second = spawn_app_with(
        cycle_settings(&f.database_url, &f.a, &f.b, |_| {}),
        &f.database_url,
    )
    .await;
    f.app.post_events(&activations("two", GROUP_A, 12)).await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    let before = group_patches(&f.a);

    // Act
    run_cycle(&f.app, "alpha").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Assert
    assert_eq!(members(&f.a), 12);
    assert_eq!(
        group_patches(&f.a) - before,
        1,
        "one replica sent the change"
    );
    assert_eq!(
        f.app
            .count(
                "SELECT count(*) FROM cycles WHERE application = 'alpha' AND changes_planned > 0"
            )
            .await,
        1
    );
}

#[tokio::test]
async fn an_aws_outage_keeps_the_changes_for_the_next_cycle() {
    // Arrange: seven deferred activations, and AWS failing every request.
    let f = spawn_with_cycles(|_| {}).await;
    f.app.post_events(&activations("out", GROUP_A, 12)).await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    f.a.inject(Fault::error(500, 100_000));

    // Act
    let failed = run_cycle(&f.app, "alpha").await;
    f.a.clear_faults();
    let recovered = run_cycle(&f.app, "alpha").await;

    // Assert
    assert_eq!(
        (failed.outcome.as_str(), failed.retrying, failed.applied),
        ("failed", 7, 0)
    );
    assert_eq!(
        (recovered.outcome.as_str(), recovered.applied),
        ("succeeded", 7)
    );
    assert_eq!(members(&f.a), 12);
    let attempts: Vec<i32> = f
        .app
        .db
        .query(
            "SELECT attempts FROM jobs WHERE lane = 'deferred' AND state = 'done'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(attempts, vec![1; 7], "each job failed once, then succeeded");
    assert_eq!(
        f.app
            .count("SELECT count(*) FROM provisioning_log WHERE status = 'retrying' AND error_code = 'scim_500'")
            .await,
        7
    );
}

#[tokio::test]
async fn a_change_aws_refuses_is_failed_with_its_reason() {
    // Arrange: a deferred activation into a group AWS does not have yet and whose name it
    // reserves (GROUP_AB is assigned to alpha too).
    let f = spawn_with_cycles(|app| app.activation_limit = 1).await;
    f.app
        .post_events(&activation("slot", GROUP_A, "slot-holder"))
        .await;
    let mut refused = activation("refused", GROUP_AB, "refused-user");
    refused["group"] = json!({"displayName": "AWSAdministrators"});
    f.app.post_events(&refused).await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;

    // Act
    let cycle = run_cycle(&f.app, "alpha").await;

    // Assert
    assert_eq!((cycle.outcome.as_str(), cycle.failed), ("failed", 1));
    let row = f
        .app
        .db
        .query_one(
            "SELECT j.state, j.last_error, l.error_code FROM jobs j
             JOIN events e ON e.id = j.event_id
             JOIN provisioning_log l ON l.cycle_id = j.cycle_id
             WHERE e.source_event_id = 'refused' AND j.application = 'alpha'",
            &[],
        )
        .await
        .unwrap();
    let (state, reason, code): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(state, "failed");
    assert!(
        reason.contains("AWSAdministrators") || reason.contains("reserved"),
        "{reason}"
    );
    assert_eq!(code, "scim_400");
}

#[tokio::test]
async fn a_cycle_left_running_by_a_dead_replica_is_marked_interrupted() {
    let f = spawn_with_cycles(|_| {}).await;
    let dead: i64 = f
        .app
        .db
        .query_one(
            "INSERT INTO cycles (application, kind, owner, cutoff)
             VALUES ('alpha', 'incremental', 'dead-replica', now()) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    run_cycle(&f.app, "alpha").await;

    let outcome: String = f
        .app
        .db
        .query_one("SELECT outcome FROM cycles WHERE id = $1", &[&dead])
        .await
        .unwrap()
        .get(0);
    assert_eq!(outcome, "interrupted");
}

#[tokio::test]
async fn cycles_follow_the_configured_interval() {
    // Arrange: the fixture's cycle interval is one hour; its initial cycles have run.
    let f = spawn_with_cycles(|_| {}).await;

    // Act: one more cycle.
    let cycle = run_cycle(&f.app, "alpha").await;

    // Assert: each cycle makes the next one due exactly one interval after it started; the
    // first was the initial one.
    let kinds: Vec<String> = f
        .app
        .db
        .query(
            "SELECT kind FROM cycles WHERE application = 'alpha' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kinds, ["initial", "incremental"]);
    let exact: bool = f
        .app
        .db
        .query_one(
            "SELECT a.next_cycle_at - c.started_at = interval '1 hour'
             FROM cycles c JOIN applications a ON a.name = c.application WHERE c.id = $1",
            &[&cycle.id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        exact,
        "the next cycle is due one interval after the last started"
    );
}

#[tokio::test]
async fn a_plan_read_a_page_at_a_time_yields_every_pair_once_in_order() {
    // Arrange: 25 activations of alpha, of which 24 wait for the cycle.
    let f = spawn_with_cycles(|app| app.activation_limit = 1).await;
    f.app.post_events(&activations("paged", GROUP_A, 25)).await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    let pool = pool_on(f.database_url.as_str(), 1);
    let db = pool.get().await.unwrap();

    // Act: plan, then read pages of 7.
    let now = time::OffsetDateTime::now_utc();
    let plan = pimbridge::store::cycles::plan(&db, "alpha", now)
        .await
        .unwrap();
    let mut read = Vec::new();
    let mut pages = 0;
    loop {
        let after = read
            .last()
            .map(|(g, p): &(String, String)| (g.as_str(), p.as_str()));
        let page = pimbridge::store::cycles::plan_page(&db, "alpha", after, 7)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        pages += 1;
        read.extend(
            page.into_iter()
                .map(|w| (w.subject.group_id, w.subject.principal_id)),
        );
    }

    // Assert: the 24 waiting pairs and the one with a running grant, each once, in order.
    assert_eq!((plan.pairs, plan.asked), (25, 24));
    assert_eq!(pages, 4);
    let mut expected: Vec<(String, String)> = (0..25)
        .map(|i| (GROUP_A.to_owned(), format!("paged-user-{i}")))
        .collect();
    expected.sort();
    assert_eq!(read, expected);
}
