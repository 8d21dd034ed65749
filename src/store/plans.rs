//! Keeps the immediate lane's plans made ahead on the pool's idle connections.
//!
//! The lane's statements run on plans Postgres makes once per connection and keeps (generic
//! plans: `store::plan_once`, and the intake's transaction). Postgres throws those plans away
//! whenever a table they use is vacuumed or analyzed, which autovacuum does every minute or so on
//! a young, busy database, and each connection then plans each statement again the next time it
//! runs it: about a millisecond per statement, several under load, inside whichever activation
//! comes next. On two cores that made the bursts that followed autovacuum the slowest
//! (docs/performance.md). So a task watches for vacuums and analyzes of pimbridge's tables and
//! makes the plans again on the connections that are idle, before an activation needs them.

use std::time::Duration;

use deadpool_postgres::{GenericClient, Pool};
use tokio_util::sync::CancellationToken;

use super::StoreError;

/// How often the task looks for vacuums and analyzes: an activation within this long of one
/// may still make its plans itself.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// How many times pimbridge's tables have been vacuumed or analyzed (by hand or by autovacuum),
/// as the statistics collector has counted so far: when it changes, plans may have been dropped.
pub async fn maintenance_count(client: &impl GenericClient) -> Result<i64, StoreError> {
    Ok(client
        .query_one(
            "SELECT coalesce(sum(vacuum_count + autovacuum_count
                                 + analyze_count + autoanalyze_count), 0)::int8
             FROM pg_stat_user_tables WHERE schemaname = current_schema()",
            &[],
        )
        .await?
        .get(0))
}

/// Makes the plan of each of `statements` prepared on this connection, as the lane runs them
/// (generic), without running them: `EXPLAIN EXECUTE` plans and keeps the plan. Returns how many
/// statements it planned. Statements not prepared on this connection are left to their first run.
pub async fn plan_prepared(
    client: &impl GenericClient,
    statements: &[String],
) -> Result<usize, StoreError> {
    let prepared = client
        .query(
            "SELECT name, cardinality(parameter_types) FROM pg_prepared_statements
             WHERE statement = ANY($1) ORDER BY name",
            &[&statements],
        )
        .await?;
    if prepared.is_empty() {
        return Ok(0);
    }
    // One simple query, so one implicit transaction: if any statement fails, the setting is
    // rolled back with it and the connection goes back to the pool as it came.
    let mut batch = String::from("SET plan_cache_mode = force_generic_plan;");
    for row in &prepared {
        let name: &str = row.get(0);
        let params: i32 = row.get(1);
        // A generic plan does not depend on the values: nulls of each parameter's type.
        let nulls = vec!["NULL"; usize::try_from(params).unwrap_or(0)].join(", ");
        let call = if nulls.is_empty() {
            quote_ident(name)
        } else {
            format!("{}({nulls})", quote_ident(name))
        };
        batch.push_str(&format!(" EXPLAIN EXECUTE {call};"));
    }
    batch.push_str(" RESET plan_cache_mode");
    client.batch_execute(&batch).await?;
    Ok(prepared.len())
}

/// Plans `statements` ahead on each connection idle in `pool` now, one connection at a time, so
/// that work never waits for the pool because of it. Returns how many connections it planned on.
pub async fn plan_on_idle(pool: &Pool, statements: &[String]) -> usize {
    let mut planned = 0;
    // Each connection returned goes to the back of the queue: as many turns as were idle at the
    // start reach each of them once (unless others came back meanwhile).
    for _ in 0..pool.status().available {
        let Some(client) = idle_connection(pool).await else {
            break;
        };
        match plan_prepared(&client, statements).await {
            Ok(_) => planned += 1,
            Err(e) => {
                tracing::debug!(error.message = %e, "cannot plan ahead on a connection");
            }
        }
    }
    planned
}

/// A connection idle in `pool` now, if there is one: neither waited for nor opened.
async fn idle_connection(pool: &Pool) -> Option<deadpool_postgres::Client> {
    if pool.status().available == 0 {
        return None;
    }
    pool.timeout_get(&super::without_waiting(pool)).await.ok()
}

/// Plans the lane's statements ahead when pimbridge's tables have been vacuumed or analyzed
/// since it last did (or it never did).
#[derive(Debug, Default)]
pub struct PlanKeeper {
    /// [`maintenance_count`] when it last planned.
    seen: Option<i64>,
}

impl PlanKeeper {
    /// One look: plans `statements` on the idle connections of `pool` if the tables were vacuumed
    /// or analyzed since the last time. Returns on how many connections, or `None` when nothing
    /// had changed.
    pub async fn step(
        &mut self,
        pool: &Pool,
        statements: &[String],
    ) -> Result<Option<usize>, StoreError> {
        // Like the planning, only on a connection idle now: never queued behind work, never
        // opening one (with a small pool, that could be the one a reconciliation needs).
        let Some(client) = idle_connection(pool).await else {
            return Ok(None);
        };
        let count = maintenance_count(&client).await?;
        drop(client);
        if self.seen == Some(count) {
            return Ok(None);
        }
        let planned = plan_on_idle(pool, statements).await;
        self.seen = Some(count);
        Ok(Some(planned))
    }

    /// Looks every [`CHECK_INTERVAL`] until `shutdown`, the first time at once.
    pub async fn run(mut self, pool: Pool, statements: Vec<String>, shutdown: CancellationToken) {
        loop {
            match self.step(&pool, &statements).await {
                Ok(Some(connections)) => tracing::debug!(connections, "statements planned ahead"),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error.message = %e, "cannot look for vacuums and analyzes");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(CHECK_INTERVAL) => {}
            }
        }
    }
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_with_inner_quotes_doubled() {
        assert_eq!(quote_ident("s12"), "\"s12\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
