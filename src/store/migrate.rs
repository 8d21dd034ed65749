//! Plain-SQL migrations from `sql/`, embedded in the binary and applied in order, once.
//!
//! Replicas may start together: an advisory lock makes one of them migrate while the others wait.

use deadpool_postgres::GenericClient;

use super::StoreError;

/// A migration: version, name, SQL. Append new files here; never edit an applied one.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "events_and_jobs",
        include_str!("../../sql/0001_events_and_jobs.sql"),
    ),
    (2, "scim_ids", include_str!("../../sql/0002_scim_ids.sql")),
    (
        3,
        "sync_cycles",
        include_str!("../../sql/0003_sync_cycles.sql"),
    ),
    (
        4,
        "graph_hints",
        include_str!("../../sql/0004_graph_hints.sql"),
    ),
    (
        5,
        "graph_subscriptions",
        include_str!("../../sql/0005_graph_subscriptions.sql"),
    ),
    (
        6,
        "grants_and_aws_state",
        include_str!("../../sql/0006_grants_and_aws_state.sql"),
    ),
    (
        7,
        "removal_threshold_and_user_attributes",
        include_str!("../../sql/0007_removal_threshold_and_user_attributes.sql"),
    ),
    (8, "retention", include_str!("../../sql/0008_retention.sql")),
    (9, "replicas", include_str!("../../sql/0009_replicas.sql")),
    (
        10,
        "jobs_by_event",
        include_str!("../../sql/0010_jobs_by_event.sql"),
    ),
];

/// Advisory lock key held while migrating ("pimbridge" in ASCII, truncated to fit an i64).
const MIGRATION_LOCK: i64 = 0x7069_6d62_7269_6467;

/// The newest schema version this binary knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Applies every migration not yet applied; returns how many ran.
pub async fn run(client: &mut deadpool_postgres::Object) -> Result<usize, StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = apply_pending(client).await;
    // Unlock even when a migration failed; the session may be reused by the pool.
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn apply_pending(client: &mut deadpool_postgres::Object) -> Result<usize, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    // Every version not applied yet, not only those above the newest: branches merged in any
    // order may add a lower number after a higher one was applied.
    let done: Vec<i32> = client
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = 0;
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| !done.contains(&m.0)) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            migration.version = version,
            migration.name = name,
            "applied migration"
        );
        applied += 1;
    }
    Ok(applied)
}

/// The schema version in the database (0 when none has been applied).
pub async fn current_version(client: &impl GenericClient) -> Result<i32, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?;
    Ok(row.get(0))
}
