//! The immediate lane's plans made ahead on idle connections, at start-up and again after a
//! vacuum or analyze (which makes Postgres drop them).

use pimbridge::store::plans;
use testkit::postgres::PgServer;

/// A fresh, migrated database (its URL), a pool of `size` on it, and the lane's statements.
async fn lane_database(size: usize) -> (String, deadpool_postgres::Pool, Vec<String>) {
    let database_url = PgServer::shared().fresh_database().await;
    let pool = crate::helpers::pool_on(&database_url, size);
    crate::helpers::migrate_with_applications(&pool).await;
    (
        database_url,
        pool,
        pimbridge::startup::immediate_lane_statements(),
    )
}

/// How many of `statements` prepared on `client` have had a generic plan made at least `times`.
async fn planned_at_least(
    client: &deadpool_postgres::Client,
    statements: &[String],
    times: i64,
) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_prepared_statements
             WHERE statement = ANY($1) AND generic_plans >= $2",
            &[&statements, &times],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn vacuums_and_analyzes_of_pimbridges_tables_are_counted() {
    let database_url = PgServer::shared().fresh_database().await;
    let pool = crate::helpers::pool_on(&database_url, 2);
    crate::helpers::migrate_with_applications(&pool).await;
    let db = pool.get().await.unwrap();

    let before = plans::maintenance_count(&db).await.unwrap();
    db.batch_execute("ANALYZE jobs").await.unwrap();
    let analyzed = plans::maintenance_count(&db).await.unwrap();
    db.batch_execute("VACUUM events").await.unwrap();
    let vacuumed = plans::maintenance_count(&db).await.unwrap();

    assert_eq!(analyzed, before + 1, "the analyze was not counted");
    assert_eq!(vacuumed, analyzed + 1, "the vacuum was not counted");
}

/// The connections idle in `pool` (all of them taken, then given back when dropped).
async fn idle_connections(pool: &deadpool_postgres::Pool) -> Vec<deadpool_postgres::Client> {
    let idle = pool.status().available;
    futures_util::future::join_all((0..idle).map(|_| pool.get()))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn idle_connections_have_the_lanes_plans_made_ahead_and_made_again_after_an_analyze() {
    let (_, pool, statements) = lane_database(4).await;
    let n = statements.len() as i64;
    // Half the pool opened ahead, each with every statement prepared (none planned yet).
    pimbridge::store::warm(&pool, &statements).await;
    let idle = pool.status().available;
    assert!(idle >= 2, "{idle} idle connections");
    let mut keeper = plans::PlanKeeper::default();

    // The first look plans on every idle connection.
    assert_eq!(keeper.step(&pool, &statements).await.unwrap(), Some(idle));
    let mut warmed = 0;
    for client in &idle_connections(&pool).await {
        // A connection the warm-up did not open would have prepared none: nothing to plan there.
        if planned_at_least(client, &statements, 0).await == n {
            warmed += 1;
            assert_eq!(planned_at_least(client, &statements, 1).await, n);
        }
    }
    assert!(
        warmed >= 2,
        "{warmed} connections with the statements planned"
    );

    // Nothing vacuumed or analyzed since: the next look plans nothing again.
    assert_eq!(keeper.step(&pool, &statements).await.unwrap(), None);
    for client in &idle_connections(&pool).await {
        assert_eq!(planned_at_least(client, &statements, 2).await, 0);
    }

    // An analyze drops the plans: the next look makes each again, on every idle connection.
    pool.get()
        .await
        .unwrap()
        .batch_execute("ANALYZE jobs")
        .await
        .unwrap();
    assert_eq!(keeper.step(&pool, &statements).await.unwrap(), Some(idle));
    let mut again = 0;
    for client in &idle_connections(&pool).await {
        if planned_at_least(client, &statements, 2).await == n {
            again += 1;
        }
    }
    assert_eq!(
        again, warmed,
        "connections with the statements planned again"
    );
}

#[tokio::test]
async fn planning_ahead_runs_none_of_the_statements_and_leaves_the_connection_as_it_was() {
    let (database_url, pool, statements) = lane_database(1).await;
    let db = pool.get().await.unwrap();
    for sql in &statements {
        db.prepare_cached(sql).await.unwrap();
    }

    let planned = plans::plan_prepared(&db, &statements).await.unwrap();

    assert_eq!(planned, statements.len());
    // Nothing written (the admission and the outcome statements write when run), the planning
    // setting back to its default, no transaction left open.
    let written: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM jobs) + (SELECT count(*) FROM aws_memberships)
                  + (SELECT count(*) FROM provisioning_log) + (SELECT count(*) FROM scim_ids)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(written, 0);
    assert_left_as_it_was(&db, &database_url).await;
}

#[tokio::test]
async fn a_statement_that_cannot_be_planned_leaves_the_connection_as_it_was() {
    let database_url = PgServer::shared().fresh_database().await;
    let pool = crate::helpers::pool_on(&database_url, 1);
    let db = pool.get().await.unwrap();
    db.batch_execute("CREATE TABLE gone (id int8)")
        .await
        .unwrap();
    let sql = "SELECT id FROM gone WHERE id = $1".to_owned();
    db.prepare_cached(&sql).await.unwrap();
    db.batch_execute("DROP TABLE gone").await.unwrap();

    assert!(plans::plan_prepared(&db, &[sql]).await.is_err());

    // The failed round is rolled back whole.
    assert_left_as_it_was(&db, &database_url).await;
}

/// `db` plans as by default and is in no transaction (it would go back to the pool as it came).
async fn assert_left_as_it_was(db: &deadpool_postgres::Client, database_url: &str) {
    let row = db
        .query_one(
            "SELECT current_setting('plan_cache_mode'), pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    let (mode, pid): (String, i32) = (row.get(0), row.get(1));
    assert_eq!(mode, "auto");
    let admin = crate::helpers::admin_on(database_url).await;
    let state: String = admin
        .query_one("SELECT state FROM pg_stat_activity WHERE pid = $1", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "idle", "a transaction was left open");
}
