//! The intake claims the jobs it admits and hands them to its replica's dispatcher: the claim is in
//! the intake's own transaction, only while the dispatcher runs and has a free slot, and a job
//! claimed by a replica that died before handing it over is taken over and applied once.

use std::time::Duration;

use aws_scim_emulator::RunningEmulator;
use pimbridge::domain::{EventSource, Lane};
use pimbridge::handoff::Handoff;
use pimbridge::intake::{EventOutcome, Intake, Routing};

use crate::fixture::*;
use crate::helpers::*;
use crate::postgres::PgServer;

/// A migrated database routed as the fixture's replicas are (an intake-only replica ran the
/// migrations and stays up), and an intake on it that hands jobs to `handoff`.
async fn intake_with(
    handoff: &std::sync::Arc<Handoff>,
) -> (TestApp, Intake, RunningEmulator, RunningEmulator, String) {
    let a = emulator().await;
    let b = emulator().await;
    let database_url = PgServer::shared().fresh_database().await;
    let mut settings = dispatch_settings(&database_url, &a, &b, |_| {});
    settings.dispatch.enabled = false;
    let app = spawn_app_with(settings.clone(), &database_url).await;
    let intake = Intake::new(pool_on(&database_url, 2), Routing::from_settings(&settings))
        .with_handoff(handoff.clone());
    (app, intake, a, b, database_url)
}

async fn record(intake: &Intake, id: &str) -> Lane {
    let summary = intake
        .record(EventSource::Api, &[activation_of(id)])
        .await
        .unwrap();
    match &summary.outcomes[0].2 {
        EventOutcome::Accepted { jobs, .. } => jobs[0].1,
        other => panic!("not accepted: {other:?}"),
    }
}

/// (state, lease owner, attempts, lease still running) of the job of event `id`.
async fn job_of(app: &TestApp, id: &str) -> (String, Option<String>, i32, bool) {
    let row = app
        .db
        .query_one(
            "SELECT j.state, j.lease_owner, j.attempts,
                    coalesce(j.lease_expires_at > clock_timestamp(), false)
             FROM jobs j JOIN events e ON e.id = j.event_id WHERE e.source_event_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

#[tokio::test]
async fn an_admitted_activation_is_claimed_in_its_intake_transaction_and_handed_over() {
    let (handoff, mut handed) = Handoff::new("replica-x", Duration::from_secs(15), 8);
    handoff.open();
    let (app, intake, _a, _b, _url) = intake_with(&handoff).await;

    let lane = record(&intake, "ho-1").await;

    // The job is in hand as soon as the intake returns: no notification, no claim of its own.
    assert_eq!(lane, Lane::Immediate);
    let job = handed.try_recv().expect("handed over").job;
    assert_eq!(job.source_event_id, "ho-1");
    assert_eq!(job.subject.application, "alpha");
    assert_eq!(job.subject.principal_id, "ho-1-user");
    assert_eq!(job.subject.group_id, GROUP_A);
    assert_eq!(job.attempts, 1);
    assert_eq!(
        job.subject.user_attributes.as_ref().unwrap()["userName"],
        "ho-1@contoso.com"
    );
    // Stored as a claim leaves it, with the record of AWS written ahead.
    assert_eq!(
        job_of(&app, "ho-1").await,
        ("running".into(), Some("replica-x".into()), 1, true)
    );
    let stored_id: i64 = app
        .db
        .query_one("SELECT id FROM jobs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(job.id, stored_id);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM aws_memberships
             WHERE principal_id = 'ho-1-user' AND aws_state = 'unknown'"
        )
        .await,
        1
    );
    assert!(handed.try_recv().is_err(), "handed over once");
}

/// The wake-ups dispatchers receive (`LISTEN`), one `()` per notification, in commit order, for
/// as long as the returned client lives.
async fn dispatcher_wakeups(
    database_url: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let (client, mut connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (sender, wakeups) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures_util::StreamExt::next(&mut messages).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                if n.channel() == pimbridge::store::events::JOBS_CHANNEL {
                    let _ = sender.send(());
                }
            }
        }
    });
    client
        .batch_execute(&format!(
            "LISTEN {}",
            pimbridge::store::events::JOBS_CHANNEL
        ))
        .await
        .unwrap();
    (client, wakeups)
}

async fn next_wakeup(wakeups: &mut tokio::sync::mpsc::UnboundedReceiver<()>) {
    tokio::time::timeout(Duration::from_secs(5), wakeups.recv())
        .await
        .expect("the dispatchers were woken")
        .unwrap();
}

#[tokio::test]
async fn without_a_running_dispatcher_or_a_free_slot_the_job_is_left_to_the_queue() {
    let (handoff, mut handed) = Handoff::new("replica-x", Duration::from_secs(15), 1);
    let (app, intake, _a, _b, database_url) = intake_with(&handoff).await;
    let (_listening, mut wakeups) = dispatcher_wakeups(&database_url).await;

    // Closed: the dispatcher has not started (or has stopped). The job waits in the queue and
    // the dispatchers are woken for it.
    assert_eq!(record(&intake, "q-1").await, Lane::Immediate);
    assert!(handed.try_recv().is_err());
    assert_eq!(
        job_of(&app, "q-1").await,
        ("pending".into(), None, 0, false)
    );
    next_wakeup(&mut wakeups).await;

    // Open with one slot: the first takes it and keeps it while in hand...
    handoff.open();
    assert_eq!(record(&intake, "q-2").await, Lane::Immediate);
    let in_hand = handed.try_recv().expect("handed over");
    assert_eq!(in_hand.job.source_event_id, "q-2");
    // ...so the next waits in the queue for any dispatcher.
    assert_eq!(record(&intake, "q-3").await, Lane::Immediate);
    assert!(handed.try_recv().is_err());
    assert_eq!(
        job_of(&app, "q-3").await,
        ("pending".into(), None, 0, false)
    );
    // One wake-up, for q-3: notifications arrive in commit order, so had the intake woken the
    // dispatchers for the job it handed over (q-2), that one would have come first.
    next_wakeup(&mut wakeups).await;
    assert!(
        wakeups.try_recv().is_err(),
        "no wake-up for a job handed over"
    );

    // Once the slot is free again, the next is handed over.
    drop(in_hand);
    assert_eq!(record(&intake, "q-4").await, Lane::Immediate);
    assert_eq!(
        handed.try_recv().expect("handed").job.source_event_id,
        "q-4"
    );
}

#[tokio::test]
async fn a_job_claimed_by_an_intake_whose_replica_died_before_handing_it_over_is_applied_once() {
    // The replica commits the claim and dies before its dispatcher sees the job.
    let (handoff, handed) = Handoff::new("replica-that-died", Duration::from_secs(1), 8);
    handoff.open();
    let (mut intake_only, intake, a, b, database_url) = intake_with(&handoff).await;
    assert_eq!(record(&intake, "died-1").await, Lane::Immediate);
    drop(handed);
    intake_only.stop().await;
    assert_eq!(members(&a), 0);

    // A dispatching replica takes the job over once the lease runs out.
    let app =
        dispatching_replica_applies_it_once(&database_url, &a, &b, Duration::from_secs(6)).await;
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE state = 'done' AND attempts = 2")
            .await,
        1
    );
}
