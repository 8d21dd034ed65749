//! Postgres: the connection pool, migrations and the queries of each use case.
//!
//! Query functions take `&impl GenericClient`, so they run on a pooled connection or inside the
//! caller's transaction; the use case owns the transaction.

pub mod aws_memberships;
pub mod cycles;
pub mod events;
pub mod grants;
pub mod graph_hints;
pub mod graph_subscriptions;
pub mod jobs;
pub mod migrate;
pub mod outcomes;
pub mod plans;
pub mod provisioning_log;
pub mod quarantine;
pub mod removal_holds;
pub mod replicas;
pub mod reports;
pub mod retention;
pub mod scim_ids;
pub mod tls;

use crate::config::DatabaseSettings;
use crate::telemetry::postgres_error;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection could be had in time: the database is down or overloaded.
    #[error("database unavailable: {}", pool_error(.0))]
    Unavailable(deadpool_postgres::PoolError),
    /// A query failed. Displayed with the server's code, message and detail, so that a log line
    /// is never a bare "db error"; the client error is not exposed as a source, which would repeat
    /// it.
    #[error("database error: {}", postgres_error(.0))]
    Query(tokio_postgres::Error),
    /// The pool could not be built from the configuration.
    #[error("database configuration: {0}")]
    Config(String),
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::Unavailable(error)
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Query(error)
    }
}

fn pool_error(error: &deadpool_postgres::PoolError) -> String {
    match error {
        deadpool_postgres::PoolError::Backend(e) => {
            format!("cannot open a connection: {}", postgres_error(e))
        }
        other => other.to_string(),
    }
}

impl StoreError {
    /// True when retrying later may succeed (connection lost, deadlock, serialisation failure).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Query(e) => {
                e.is_closed()
                    || e.code().is_some_and(|c| {
                        matches!(c.code(), "40001" | "40P01" | "57P01" | "57P03" | "08006")
                    })
                    || e.code().is_none()
            }
            Self::Config(_) => false,
        }
    }

    /// True for a deadlock or serialisation failure: the whole transaction should be retried.
    pub fn is_retryable_conflict(&self) -> bool {
        matches!(self, Self::Query(e) if e.code().is_some_and(|c| matches!(c.code(), "40001" | "40P01")))
    }
}

/// Builds the pool. Connections are opened lazily, so this succeeds while the database is down.
pub fn build_pool(settings: &DatabaseSettings) -> Result<Pool, StoreError> {
    let url = settings
        .url
        .as_ref()
        .ok_or_else(|| StoreError::Config("database.url is not set".into()))?;
    let mut config: tokio_postgres::Config = url
        .expose()
        .parse()
        .map_err(|_| StoreError::Config("database.url is not a valid connection string".into()))?;
    let timeout = settings.connect_timeout;
    config.connect_timeout(timeout);
    config.application_name("pimbridge");
    let manager = Manager::from_config(
        config,
        tls::connector(settings.ca_file.as_deref())?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.max_connections)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|e| StoreError::Config(e.to_string()))
}

/// The store's statements that every activation in the immediate lane runs (its intake, its job
/// and its reconciliation), for [`warm`] to prepare ahead.
pub fn hot_statements() -> Vec<String> {
    [
        events::hot_statements(),
        jobs::hot_statements(),
        aws_memberships::hot_statements(),
        scim_ids::hot_statements(),
        provisioning_log::hot_statements(),
        outcomes::hot_statements(),
    ]
    .concat()
}

/// Connections opened ahead by [`warm`], at most.
pub const WARM_CONNECTIONS: usize = 8;

/// Opens up to [`WARM_CONNECTIONS`] of the pool's connections at once (never more than half the
/// pool), has each load what Postgres caches per connection for the tables intake and
/// provisioning use, and prepares `statements` on each (see [`hot_statements`]). Without it the
/// first activations after start-up pay for it inside their requests: a new server process,
/// catalog look-ups on the first statements it runs (about 30 ms of the first burst's slowest
/// request), then a round trip to prepare each statement on each connection it first runs on. It
/// never waits for a connection another task holds, so it cannot hold the pool while work queues
/// behind it. Best effort: what it does not open or prepare, the first requests do. (Their plans
/// are made by `plans::PlanKeeper`.)
pub async fn warm(pool: &Pool, statements: &[String]) {
    let n = WARM_CONNECTIONS.min(pool.status().max_size / 2);
    let at_once = without_waiting(pool);
    let opened = futures_util::future::join_all((0..n).map(|_| async {
        let client = pool.timeout_get(&at_once).await?;
        client
            .batch_execute(
                "SELECT 1 FROM applications, events, jobs, grants, aws_memberships, scim_ids,
                               provisioning_log
                 LIMIT 0",
            )
            .await?;
        // Sent together: the connection pipelines them.
        futures_util::future::try_join_all(statements.iter().map(|sql| client.prepare_cached(sql)))
            .await?;
        Ok::<_, StoreError>(client)
    }))
    .await;
    let warmed = opened.iter().filter(|c| c.is_ok()).count();
    if let Some(Err(e)) = opened.into_iter().find(Result::is_err) {
        tracing::debug!(error.message = %e, warmed, "not every connection was opened ahead");
    }
}

/// The pool's timeouts, but for a connection that is not free at once: for background work that
/// must never hold up the pool (a connection is taken only if idle, or opened if there is room).
pub(crate) fn without_waiting(pool: &Pool) -> deadpool_postgres::Timeouts {
    deadpool_postgres::Timeouts {
        wait: Some(std::time::Duration::ZERO),
        ..pool.timeouts()
    }
}

/// Whether commits on this connection wait for the disk by default (`synchronous_commit` is not
/// `off`). pimbridge's claims and write-aheads rely on it: committed without waiting, a record that
/// says who owns a membership could be lost in a crash after the change it announces went out.
pub async fn commits_wait_for_disk(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<bool, StoreError> {
    let setting: String = client
        .query_one("SELECT current_setting('synchronous_commit')", &[])
        .await?
        .get(0);
    Ok(setting != "off")
}

/// Has this connection plan each prepared statement once (a generic plan), until
/// [`plan_per_run`]: for statements that look rows up by key, whose plan does not depend on their
/// arguments, planning at every run costs more than running them.
pub async fn plan_once(client: &impl deadpool_postgres::GenericClient) -> Result<(), StoreError> {
    client
        .batch_execute("SET plan_cache_mode = force_generic_plan")
        .await?;
    Ok(())
}

/// Puts back Postgres's default choice of plans on this connection (see [`plan_once`]).
pub async fn plan_per_run(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<(), StoreError> {
    client.batch_execute("RESET plan_cache_mode").await?;
    Ok(())
}

/// `sql` with each parameter `$n` renumbered `$(n + by)`, so that statements written on their
/// own can be parts of one (`outcomes`). The statements given hold no `$` but their parameters'.
pub(crate) fn shift_params(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut copied = 0;
    for (digits, n) in params_in(sql) {
        out.push_str(&sql[copied..digits.start]);
        out.push_str(&(n + by).to_string());
        copied = digits.end;
    }
    out.push_str(&sql[copied..]);
    out
}

/// The highest parameter number `sql` uses.
pub(crate) fn last_param(sql: &str) -> usize {
    params_in(sql).map(|(_, n)| n).max().unwrap_or(0)
}

/// Each parameter of `sql`: where its number's digits are, and the number.
fn params_in(sql: &str) -> impl Iterator<Item = (std::ops::Range<usize>, usize)> + '_ {
    sql.match_indices('$').filter_map(move |(at, _)| {
        let start = at + 1;
        let len = sql[start..].bytes().take_while(u8::is_ascii_digit).count();
        let n = sql[start..start + len].parse().ok()?;
        Some((start..start + len, n))
    })
}

/// Records the configured applications, so that jobs can reference them and admission can lock them.
pub async fn register_applications(
    client: &impl deadpool_postgres::GenericClient,
    names: &[String],
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO applications (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
            &[&names],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_renumbered_and_counted() {
        let sql = "SELECT $1::int8, $2 WHERE x = $10 AND y <> $2";
        assert_eq!(
            shift_params(sql, 5),
            "SELECT $6::int8, $7 WHERE x = $15 AND y <> $7"
        );
        assert_eq!(shift_params(sql, 0), sql);
        assert_eq!(last_param(sql), 10);
        assert_eq!(last_param("SELECT 1"), 0);
    }
}
