//! Sync cycles: who runs one, what it covers, and how each change and the cycle end.
//!
//! One replica at a time runs an application's cycle: it holds a session-level advisory lock on a
//! connection for the whole cycle, so a replica that dies releases it with its connection. Under
//! the lock, a cycle still marked `running` belongs to a dead replica and is marked `interrupted`.

use deadpool_postgres::GenericClient;
use serde_json::Value;
use time::OffsetDateTime;

use super::StoreError;
use crate::domain::Subject;

/// First half of the advisory lock key of cycles ("pimb"); the second is the application's hash.
const CYCLE_LOCK_CLASS: i32 = 0x7069_6d62;

/// Tries to become the one replica running `application`'s cycles. Hold the connection until
/// [`unlock`].
pub async fn try_lock(client: &impl GenericClient, application: &str) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            "SELECT pg_try_advisory_lock($1, hashtext($2))",
            &[&CYCLE_LOCK_CLASS, &application],
        )
        .await?;
    Ok(row.get(0))
}

/// Releases the lock taken by [`try_lock`] on the same connection.
pub async fn unlock(client: &impl GenericClient, application: &str) -> Result<(), StoreError> {
    client
        .execute(
            "SELECT pg_advisory_unlock($1, hashtext($2))",
            &[&CYCLE_LOCK_CLASS, &application],
        )
        .await?;
    Ok(())
}

/// Where an application stands before a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub due: bool,
    pub quarantined: bool,
}

/// Whether `application`'s next cycle is due now, and whether it is quarantined.
pub async fn schedule(
    client: &impl GenericClient,
    application: &str,
) -> Result<Schedule, StoreError> {
    let row = client
        .query_opt(
            "SELECT next_cycle_at IS NULL OR next_cycle_at <= clock_timestamp(),
                    quarantined_at IS NOT NULL
             FROM applications WHERE name = $1",
            &[&application],
        )
        .await?;
    Ok(row.map_or(
        Schedule {
            due: false,
            quarantined: false,
        },
        |r| Schedule {
            due: r.get(0),
            quarantined: r.get(1),
        },
    ))
}

/// Makes `application`'s next cycle due now (an operator's "run a cycle now").
pub async fn request_now(
    client: &impl GenericClient,
    application: &str,
) -> Result<bool, StoreError> {
    let updated = client
        .execute(
            "UPDATE applications SET next_cycle_at = clock_timestamp() WHERE name = $1",
            &[&application],
        )
        .await?;
    Ok(updated == 1)
}

/// A cycle that has started.
#[derive(Debug, Clone)]
pub struct StartedCycle {
    pub id: i64,
    pub application: String,
    pub initial: bool,
    /// Events received up to here are in the cycle.
    pub cutoff: OffsetDateTime,
}

/// Marks cycles left `running` by a dead replica as interrupted and starts a new one. Call only
/// while holding the application's lock.
pub async fn start(
    client: &impl GenericClient,
    application: &str,
    owner: &str,
) -> Result<StartedCycle, StoreError> {
    client
        .execute(
            "UPDATE cycles SET outcome = 'interrupted', finished_at = clock_timestamp()
             WHERE application = $1 AND outcome = 'running'",
            &[&application],
        )
        .await?;
    let row = client
        .query_one(
            "INSERT INTO cycles (application, kind, owner, cutoff)
             SELECT $1,
                    CASE WHEN EXISTS (SELECT 1 FROM cycles WHERE application = $1
                                      AND outcome <> 'interrupted')
                         THEN 'incremental' ELSE 'initial' END,
                    $2, clock_timestamp()
             RETURNING id, kind = 'initial', cutoff",
            &[&application, &owner],
        )
        .await?;
    Ok(StartedCycle {
        id: row.get(0),
        application: application.to_owned(),
        initial: row.get(1),
        cutoff: row.get(2),
    })
}

/// One user in one group a cycle looks at, with the deferred jobs it settles.
#[derive(Debug, Clone)]
pub struct WorkPair {
    /// The user and group, with the newest attributes any of their events carried.
    pub subject: Subject,
    /// The newest pending deferred job and its event (for the log), if any.
    pub job_id: Option<i64>,
    pub event_id: Option<i64>,
    /// The pending deferred jobs this cycle settles (none for expiry or a drift check).
    pub job_ids: Vec<i64>,
}

/// How much a cycle's plan holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSize {
    /// Pairs the cycle looks at.
    pub pairs: i64,
    /// Of those, the pairs with pending deferred jobs (changes asked for by events).
    pub asked: i64,
}

/// Plans a cycle: the pairs it looks at are those with pending deferred jobs received up to the
/// cutoff, those with an active grant (checked in AWS), and those pimbridge owns that AWS may
/// still hold (their grants may have ended). Found through indexed per-application look-ups, so
/// planning costs what the pending work and the live grants cost, not what history does; one
/// statement, one snapshot. The plan is written to this connection's temporary `cycle_plan`
/// table and read a page at a time ([`plan_page`]), so a backlog of a million jobs is never held
/// in memory at once.
pub async fn plan(
    client: &impl GenericClient,
    application: &str,
    cutoff: OffsetDateTime,
) -> Result<PlanSize, StoreError> {
    client
        .batch_execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS cycle_plan (
                 group_id     text NOT NULL,
                 principal_id text NOT NULL,
                 job_ids      bigint[] NOT NULL,
                 job_id       bigint,
                 event_id     bigint,
                 PRIMARY KEY (group_id, principal_id)
             );
             TRUNCATE cycle_plan",
        )
        .await?;
    let row = client
        .query_one(
            "WITH pending AS (
                 SELECT e.principal_id, e.group_id, array_agg(j.id ORDER BY j.id) AS job_ids,
                        max(j.id) AS job_id, max(e.id) AS event_id
                 FROM jobs j JOIN events e ON e.id = j.event_id
                 WHERE j.application = $1 AND j.lane = 'deferred' AND j.state = 'pending'
                   AND j.created_at <= $2
                 GROUP BY e.principal_id, e.group_id
             ), live AS (
                 SELECT principal_id, group_id FROM aws_memberships
                 WHERE application = $1 AND aws_state <> 'absent' AND provenance = 'owned'
                 UNION
                 SELECT principal_id, group_id FROM grants
                 WHERE application = $1 AND effective_end > $2
             ), planned AS (
                 INSERT INTO cycle_plan (group_id, principal_id, job_ids, job_id, event_id)
                 SELECT group_id, principal_id, coalesce(p.job_ids, '{}'), p.job_id, p.event_id
                 FROM pending p FULL JOIN live l USING (principal_id, group_id)
                 RETURNING job_id
             )
             SELECT count(*), count(job_id) FROM planned",
            &[&application, &cutoff],
        )
        .await?;
    Ok(PlanSize {
        pairs: row.get(0),
        asked: row.get(1),
    })
}

/// Up to `limit` pairs of the plan after `after` (group id, principal id), in that order, with
/// the newest attributes any of their events carried.
pub async fn plan_page(
    client: &impl GenericClient,
    application: &str,
    after: Option<(&str, &str)>,
    limit: i64,
) -> Result<Vec<WorkPair>, StoreError> {
    let select = "SELECT w.principal_id, w.group_id, w.job_ids, w.job_id, w.event_id,
                    (SELECT e.user_attributes FROM events e
                     WHERE e.principal_id = w.principal_id AND e.group_id = w.group_id
                       AND e.user_attributes IS NOT NULL
                     ORDER BY e.occurred_at DESC, e.id DESC LIMIT 1),
                    (SELECT e.group_attributes FROM events e
                     WHERE e.principal_id = w.principal_id AND e.group_id = w.group_id
                       AND e.group_attributes IS NOT NULL
                     ORDER BY e.occurred_at DESC, e.id DESC LIMIT 1)
             FROM cycle_plan w";
    // Two statements rather than one with an `OR`, so that each page starts with an index seek.
    let rows = match after {
        None => {
            let sql = format!("{select} ORDER BY w.group_id, w.principal_id LIMIT $1");
            client.query(&sql, &[&limit]).await?
        }
        Some((group, principal)) => {
            let sql = format!(
                "{select} WHERE (w.group_id, w.principal_id) > ($1, $2)
                 ORDER BY w.group_id, w.principal_id LIMIT $3"
            );
            client.query(&sql, &[&group, &principal, &limit]).await?
        }
    };
    Ok(rows
        .iter()
        .map(|r| WorkPair {
            subject: Subject {
                application: application.to_owned(),
                principal_id: r.get(0),
                group_id: r.get(1),
                user_attributes: r.get::<_, Option<Value>>(5),
                group_attributes: r.get::<_, Option<Value>>(6),
            },
            job_ids: r.get(2),
            job_id: r.get(3),
            event_id: r.get(4),
        })
        .collect())
}

/// A settled job that the change completed, with the receipt → now latency.
#[derive(Debug, Clone)]
pub struct CompletedJob {
    pub action: String,
    pub latency_secs: f64,
}

/// Ends pairs' jobs after AWS reflects their grants, in one statement: for each pair, its job ids
/// and whether the grants make it a member. Jobs that asked for that state are done, the others
/// superseded. Returns the done jobs with their latency.
///
/// Each job is found by its id, one primary-key probe each (the lateral, locking look-up cannot be
/// planned otherwise). Written as a plain join, statistics taken while few jobs were pending let
/// the planner scan every pending job and compare it with every id: 1.2–1.9 s per batch of 1,000
/// with 10,000 pending.
pub async fn settle_applied(
    client: &impl GenericClient,
    cycle_id: i64,
    pairs: &[(&[i64], bool)],
) -> Result<Vec<CompletedJob>, StoreError> {
    let (job_ids, members): (Vec<i64>, Vec<bool>) = pairs
        .iter()
        .flat_map(|&(jobs, member)| jobs.iter().map(move |&id| (id, member)))
        .unzip();
    if job_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            &client
                .prepare_cached(
                    "UPDATE jobs j
             SET state = CASE WHEN (j.action = 'add') = t.member THEN 'done' ELSE 'superseded' END,
                 note = CASE WHEN (j.action = 'add') = t.member THEN NULL
                             ELSE 'superseded: the grants decided otherwise' END,
                 completed_at = clock_timestamp(), last_error = NULL, cycle_id = $1
             FROM (SELECT s.member, p.id, p.event_id
                   FROM unnest($2::int8[], $3::bool[]) AS s(id, member)
                   CROSS JOIN LATERAL (SELECT k.id, k.event_id FROM jobs k
                                       WHERE k.id = s.id AND k.state = 'pending'
                                       FOR UPDATE) p) t,
                  events e
             WHERE j.id = t.id AND e.id = t.event_id
             RETURNING j.state, j.action,
                       extract(epoch FROM (j.completed_at - e.received_at))::float8",
                )
                .await?,
            &[&cycle_id, &job_ids, &members],
        )
        .await?;
    Ok(rows
        .iter()
        .filter(|r| r.get::<_, &str>(0) == "done")
        .map(|r| CompletedJob {
            action: r.get(1),
            latency_secs: r.get(2),
        })
        .collect())
}

/// Records a failed change on a pair's jobs: permanent failures and jobs out of attempts become
/// `failed`; the rest stay pending for the next cycle. A change that was never sent (`attempted`
/// false) costs no attempt. Returns how many failed for good.
pub async fn settle_failed(
    client: &impl GenericClient,
    cycle_id: i64,
    job_ids: &[i64],
    reason: &str,
    transient: bool,
    attempted: bool,
    max_attempts: i32,
) -> Result<u64, StoreError> {
    let cost = i32::from(attempted);
    let rows = client
        .query(
            "UPDATE jobs
             SET attempts = attempts + $6, last_error = $3, cycle_id = $1,
                 state = CASE WHEN NOT $4 OR attempts + $6 >= $5 THEN 'failed' ELSE 'pending' END,
                 completed_at = CASE WHEN NOT $4 OR attempts + $6 >= $5
                                     THEN clock_timestamp() END
             WHERE id = ANY($2) AND state = 'pending'
             RETURNING state",
            &[
                &cycle_id,
                &job_ids,
                &reason,
                &transient,
                &max_attempts,
                &cost,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .filter(|r| r.get::<_, &str>(0) == "failed")
        .count() as u64)
}

/// What a cycle did, for its row, metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CycleCounts {
    pub planned: i32,
    pub applied: i32,
    pub skipped: i32,
    pub failed: i32,
    pub retrying: i32,
}

/// Saves a running cycle's progress, so that operators can watch it.
pub async fn progress(
    client: &impl GenericClient,
    cycle_id: i64,
    counts: &CycleCounts,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE cycles SET changes_planned = $2, changes_applied = $3, changes_skipped = $4,
                 changes_failed = $5, changes_retrying = $6
             WHERE id = $1",
            &[
                &cycle_id,
                &counts.planned,
                &counts.applied,
                &counts.skipped,
                &counts.failed,
                &counts.retrying,
            ],
        )
        .await?;
    Ok(())
}

/// Ends a cycle with its outcome and schedules the application's next one `interval_secs` after
/// this one started. Returns the cycle's duration in seconds.
pub async fn finish(
    client: &impl GenericClient,
    cycle_id: i64,
    outcome: &str,
    error: Option<&str>,
    counts: &CycleCounts,
    interval_secs: f64,
) -> Result<f64, StoreError> {
    progress(client, cycle_id, counts).await?;
    let row = client
        .query_one(
            "WITH c AS (
                 UPDATE cycles SET outcome = $2, error = $3, finished_at = clock_timestamp()
                 WHERE id = $1
                 RETURNING application, started_at, finished_at
             ), next AS (
                 UPDATE applications a
                 SET next_cycle_at = c.started_at + make_interval(secs => $4)
                 FROM c WHERE a.name = c.application
             )
             SELECT extract(epoch FROM (finished_at - started_at))::float8 FROM c",
            &[&cycle_id, &outcome, &error, &interval_secs],
        )
        .await?;
    Ok(row.get(0))
}
