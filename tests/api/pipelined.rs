//! `store::pipelined`: statements sent right behind `BEGIN` are one transaction with it (all or
//! nothing, invisible until the commit), what is sent behind `COMMIT` runs after it, and a
//! transaction abandoned while open leaves its connection outside any transaction.

use pimbridge::store::pipelined::Pipelined;
use pimbridge::store::StoreError;

use crate::helpers::pool_on;
use crate::postgres::PgServer;

async fn insert(client: &deadpool_postgres::Client, x: i32) -> Result<(), StoreError> {
    client
        .execute("INSERT INTO t (x) VALUES ($1)", &[&x])
        .await?;
    Ok(())
}

async fn rows(client: &deadpool_postgres::Client) -> Vec<i32> {
    client
        .query("SELECT x FROM t ORDER BY x", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A pool on a fresh database with an empty table `t`.
async fn with_table() -> deadpool_postgres::Pool {
    let url = PgServer::shared().fresh_database().await;
    let pool = pool_on(&url, 2);
    pool.get()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE t (x int PRIMARY KEY)")
        .await
        .unwrap();
    pool
}

#[tokio::test]
async fn statements_sent_behind_begin_commit_together_or_not_at_all() {
    let pool = with_table().await;
    let (db, other) = (pool.get().await.unwrap(), pool.get().await.unwrap());

    let (tx, ((), ())) = Pipelined::begin_with(&db, async {
        futures_util::try_join!(insert(&db, 1), insert(&db, 2))
    })
    .await
    .unwrap();
    assert_eq!(
        rows(&other).await,
        Vec::<i32>::new(),
        "seen before the commit"
    );
    tx.commit_then(async {}).await.0.unwrap();
    assert_eq!(rows(&other).await, vec![1, 2]);

    // The second insert fails (2 is taken): the first, sent with it, is rolled back too.
    let failed = Pipelined::begin_with(&db, async {
        futures_util::try_join!(insert(&db, 3), insert(&db, 2))
    })
    .await;
    assert!(failed.is_err());
    assert_eq!(rows(&other).await, vec![1, 2]);
    // And the connection is usable, outside any transaction.
    insert(&db, 4).await.unwrap();
    assert_eq!(rows(&other).await, vec![1, 2, 4]);
}

#[tokio::test]
async fn what_is_sent_behind_commit_runs_after_it() {
    let pool = with_table().await;
    let db = pool.get().await.unwrap();

    // Prepared first, so that nothing but the order of sending puts it behind the commit.
    let outside = db
        .prepare("SELECT pg_current_xact_id_if_assigned() IS NULL")
        .await
        .unwrap();
    let (tx, ()) = Pipelined::begin_with(&db, insert(&db, 1)).await.unwrap();
    // Inside the transaction the insert has taken a transaction id; after the commit, a new
    // statement runs in a transaction of its own that has none.
    let (committed, after) = tx.commit_then(db.query_one(&outside, &[])).await;
    committed.unwrap();
    assert!(
        after.unwrap().get::<_, bool>(0),
        "ran inside the transaction"
    );
}

#[tokio::test]
async fn a_transaction_abandoned_open_is_rolled_back() {
    let pool = with_table().await;
    let (db, other) = (pool.get().await.unwrap(), pool.get().await.unwrap());

    let (tx, ()) = Pipelined::begin_with(&db, insert(&db, 1)).await.unwrap();
    drop(tx);
    // The next statement on the connection runs on its own and commits at once.
    insert(&db, 2).await.unwrap();
    assert_eq!(rows(&other).await, vec![2]);
}
