//! Retention: deleting history older than its limit, one small batch per statement
//! (docs/operations.md, "Retention"). Each statement deletes only rows that nothing still needs:
//! no pending or running job, no grant still in force, no `aws_memberships` row (never deleted
//! here), and no row that a kept row still references.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;

use super::StoreError;

/// First half of the advisory lock key of retention ("pimd"); one replica at a time runs a pass.
const RETENTION_LOCK: (i32, i32) = (0x7069_6d64, 0);

/// What retention deletes, in the order a pass deletes it: rows that reference others go first,
/// so that what they referenced can go in the same pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ProvisioningLog,
    Jobs,
    Cycles,
    Grants,
    Events,
    GraphHints,
}

impl Kind {
    /// Every kind, in deletion order.
    pub const ALL: [Kind; 6] = [
        Kind::ProvisioningLog,
        Kind::Jobs,
        Kind::Cycles,
        Kind::Grants,
        Kind::Events,
        Kind::GraphHints,
    ];

    /// The name used in configuration (`retention.days_by_kind`) and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ProvisioningLog => "provisioning_log",
            Kind::Jobs => "jobs",
            Kind::Cycles => "cycles",
            Kind::Grants => "grants",
            Kind::Events => "events",
            Kind::GraphHints => "graph_hints",
        }
    }

    /// The table, its time column and what else a row (`t`) must meet to be deleted.
    fn batch(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Kind::ProvisioningLog => ("provisioning_log", "finished_at", ""),
            // Final states only; a job a kept log entry names stays with it.
            Kind::Jobs => (
                "jobs",
                "completed_at",
                "AND t.state IN ('done', 'failed', 'superseded')
                 AND NOT EXISTS (SELECT 1 FROM provisioning_log p WHERE p.job_id = t.id)",
            ),
            // Finished cycles only; each application keeps its newest finished cycle that was not
            // interrupted (it decides whether the next one is the initial cycle).
            Kind::Cycles => (
                "cycles",
                "finished_at",
                "AND t.outcome NOT IN ('running', 'held')
                 AND t.id < (SELECT max(n.id) FROM cycles n
                             WHERE n.application = t.application
                               AND n.outcome NOT IN ('interrupted', 'running'))
                 AND NOT EXISTS (SELECT 1 FROM provisioning_log p WHERE p.cycle_id = t.id)",
            ),
            // Grants that ended that long ago; a grant in force has an end in the future.
            Kind::Grants => ("grants", "effective_end", ""),
            // Events no job and no grant references (so none with a pending job or a grant
            // still kept).
            Kind::Events => (
                "events",
                "received_at",
                "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.event_id = t.id)
                 AND NOT EXISTS (SELECT 1 FROM grants g WHERE g.event_id = t.id)
                 AND NOT EXISTS (SELECT 1 FROM grants g WHERE g.ended_by = t.id)",
            ),
            Kind::GraphHints => (
                "graph_hints",
                "completed_at",
                "AND t.state IN ('done', 'failed')",
            ),
        }
    }

    /// One batch, oldest first by the kind's time column: `$1` = seconds kept, `$2` = batch
    /// size, `$3` = where the previous batch of the pass stopped (null at first). Answers how many
    /// rows it deleted and the newest time among them.
    ///
    /// A batch starts where the previous one stopped rather than at the oldest row: the rows
    /// deleted earlier in the pass stay in the index until vacuum, and a scan from the start
    /// would walk over all of them again, batch after batch. Rows kept on the way (still
    /// needed) are looked at again by the next pass.
    fn statement(self) -> String {
        let (table, at, also) = self.batch();
        format!(
            "WITH gone AS (
                 DELETE FROM {table} WHERE id IN (
                     SELECT t.id FROM {table} t
                     WHERE t.{at} < clock_timestamp() - make_interval(secs => $1)
                       AND t.{at} >= coalesce($3::timestamptz, '-infinity')
                       {also}
                     ORDER BY t.{at} LIMIT $2)
                 RETURNING {at} AS at)
             SELECT count(*), max(at) FROM gone"
        )
    }
}

/// Where a pass of one kind has got to: the newest time deleted so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(Option<OffsetDateTime>);

impl Cursor {
    /// Before the oldest row.
    pub const START: Cursor = Cursor(None);
}

/// Deletes at most `batch` rows of `kind` older than `keep_secs`, from `from` on; returns how
/// many, and where the next batch starts.
pub async fn purge_batch(
    client: &impl GenericClient,
    kind: Kind,
    keep_secs: f64,
    batch: i64,
    from: Cursor,
) -> Result<(u64, Cursor), StoreError> {
    let row = client
        .query_one(
            &client.prepare_cached(&kind.statement()).await?,
            &[&keep_secs, &batch, &from.0],
        )
        .await?;
    let deleted: i64 = row.get(0);
    let newest: Option<OffsetDateTime> = row.get(1);
    Ok((
        u64::try_from(deleted).unwrap_or(0),
        Cursor(newest.or(from.0)),
    ))
}

/// Tries to become the one replica running retention; hold the connection until [`unlock`].
pub async fn try_lock(client: &impl GenericClient) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            "SELECT pg_try_advisory_lock($1, $2)",
            &[&RETENTION_LOCK.0, &RETENTION_LOCK.1],
        )
        .await?;
    Ok(row.get(0))
}

/// Releases the lock taken by [`try_lock`] on the same connection.
pub async fn unlock(client: &impl GenericClient) -> Result<(), StoreError> {
    client
        .execute(
            "SELECT pg_advisory_unlock($1, $2)",
            &[&RETENTION_LOCK.0, &RETENTION_LOCK.1],
        )
        .await?;
    Ok(())
}
