//! An activation's intake costs the same however long the deferred queue and the grant history
//! have grown. Its statements run on plans made once per connection, which may be made while the
//! tables are nearly empty; such a plan must still look the request's rows up by key, not read
//! every deferred job of the application (admission) or every grant of it (a batch's check for
//! grants it extends). Nor does the dispatcher's look for due immediate jobs read the deferred
//! ones.
//!
//! Measured in rows: the table statistics Postgres keeps per table (rows each scan returned)
//! before and after the request.

use pimbridge::domain::EventSource;
use pimbridge::intake::{Intake, Routing};

use crate::helpers::*;
use crate::postgres::PgServer;

/// Rows of history written behind the service's back: far more than a look-up by key reads.
const HISTORY: i64 = 20_000;

/// A migrated database with the test applications, an intake on a pool of one connection (so
/// that every request runs on the plans its first one made), and an admin connection.
async fn setup() -> (Intake, deadpool_postgres::Pool, tokio_postgres::Client) {
    let database_url = PgServer::shared().fresh_database().await;
    let pool = pool_on(&database_url, 1);
    migrate_with_applications(&pool).await;
    let admin = admin_on(&database_url).await;
    let intake = Intake::new(
        pool.clone(),
        Routing::from_settings(&test_settings(&database_url)),
    );
    (intake, pool, admin)
}

/// Rows `table`'s scans have returned so far, counting the requests of the pool's connection.
async fn rows_read(
    pool: &deadpool_postgres::Pool,
    admin: &tokio_postgres::Client,
    table: &str,
) -> i64 {
    // A backend hands its counts over when it next goes idle, at most once a second unless told.
    pool.get()
        .await
        .unwrap()
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    admin
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .unwrap();
    admin
        .query_one(
            "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)
             FROM pg_stat_user_tables WHERE relname = $1",
            &[&table],
        )
        .await
        .unwrap()
        .get(0)
}

/// What `work` returns, and the rows `table`'s scans returned while it ran.
async fn rows_read_during<T>(
    pool: &deadpool_postgres::Pool,
    admin: &tokio_postgres::Client,
    table: &str,
    work: impl std::future::Future<Output = T>,
) -> (T, i64) {
    let before = rows_read(pool, admin, table).await;
    let out = work.await;
    (out, rows_read(pool, admin, table).await - before)
}

/// `HISTORY` activations of alpha, each with its deferred job and its grant, as a long outage of
/// the cycles would leave them.
async fn add_history(admin: &tokio_postgres::Client) {
    admin
        .batch_execute(&format!(
            "WITH e AS (
                 INSERT INTO events (source, source_event_id, kind, occurred_at, group_id,
                                     principal_id, routing)
                 SELECT 'api', 'old-' || i, 'activation', now() - interval '1 hour',
                        '{GROUP_A}', 'old-user-' || i, 'routed'
                 FROM generate_series(1, {HISTORY}) i
                 RETURNING id, principal_id
             ), j AS (
                 INSERT INTO jobs (event_id, application, action, lane)
                 SELECT id, 'alpha', 'add', 'deferred' FROM e
             )
             INSERT INTO grants (application, source, grant_key, principal_id, group_id,
                                 started_at, activated_at, ends_at, event_id)
             SELECT 'alpha', 'api', 'old-' || substr(principal_id, 10), principal_id,
                    '{GROUP_A}', now() - interval '1 hour', now() - interval '1 hour',
                    now() + interval '1 hour', id
             FROM e"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn admitting_an_activation_does_not_read_the_deferred_backlog() {
    let (intake, pool, admin) = setup().await;
    // Plans made on empty tables, then the backlog arrives.
    intake
        .record(EventSource::Api, &[activation_of("first")])
        .await
        .unwrap();
    add_history(&admin).await;

    let (recorded, read) = rows_read_during(
        &pool,
        &admin,
        "jobs",
        intake.record(EventSource::Api, &[activation_of("second")]),
    )
    .await;
    recorded.unwrap();

    let admitted: i64 = admin
        .query_one(
            "SELECT count(*) FROM jobs j JOIN events e ON e.id = j.event_id
             WHERE e.source_event_id = 'second' AND j.lane = 'immediate'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        admitted, 1,
        "the window had room: the activation is admitted"
    );
    assert!(
        read < 100,
        "one activation read {read} job rows with {HISTORY} deferred jobs waiting"
    );
}

#[tokio::test]
async fn a_batch_checks_the_grants_it_may_extend_without_reading_the_grant_history() {
    let (intake, pool, admin) = setup().await;
    let batch = |tag: &str| {
        [
            activation_of(&format!("{tag}-1")),
            activation_of(&format!("{tag}-2")),
        ]
    };
    intake
        .record(EventSource::Api, &batch("first"))
        .await
        .unwrap();
    add_history(&admin).await;

    let (summary, read) = rows_read_during(
        &pool,
        &admin,
        "grants",
        intake.record(EventSource::Api, &batch("second")),
    )
    .await;
    let summary = summary.unwrap();

    let grants: i64 = admin
        .query_one(
            "SELECT count(*) FROM grants WHERE grant_key LIKE 'second-%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(grants, 2, "{summary:?}");
    assert!(
        read < 100,
        "a batch of two read {read} grant rows with {HISTORY} grants stored"
    );
}

#[tokio::test]
async fn a_dispatcher_looking_for_due_jobs_does_not_read_the_deferred_backlog() {
    let (intake, pool, admin) = setup().await;
    intake
        .record(EventSource::Api, &[activation_of("first")])
        .await
        .unwrap();
    let claim = |pool: deadpool_postgres::Pool| async move {
        let db = pool.get().await.unwrap();
        pimbridge::store::jobs::claim_immediate(&db, "replica-x", 60.0, 8, 30.0)
            .await
            .unwrap()
    };
    assert_eq!(
        claim(pool.clone()).await.len(),
        1,
        "the admitted job is due"
    );
    add_history(&admin).await;

    let (claimed, read) = rows_read_during(&pool, &admin, "jobs", claim(pool.clone())).await;
    assert!(claimed.is_empty());
    assert!(
        read < 100,
        "a claim that found nothing read {read} job rows with {HISTORY} deferred jobs waiting"
    );
}
