//! The immediate-lane job queue: claim with a lease, complete, retry later, or fail for good.
//!
//! A claim sets `state = 'running'` with a lease (`lease_owner`, `lease_expires_at`) and commits at
//! once, so the slow SCIM call happens outside any transaction. A replica that crashes leaves its
//! leases behind; any replica claims the job again once the lease expires or the owner is known
//! to be dead (`store::replicas`), whichever comes first. Completion and failure only apply while
//! the caller still owns the lease, so a job taken over by another replica is never finished twice.

use super::StoreError;
use crate::domain::{Action, Subject};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

/// A claimed job with what provisioning needs from its event.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: i64,
    pub action: Action,
    pub attempts: i32,
    /// The event's row id.
    pub event_id: i64,
    /// The sender's event id (for logs).
    pub source_event_id: String,
    pub subject: Subject,
    /// Whether the claim (with the event and the job) is known to be on disk: true for a claim of
    /// its own, which commits synchronously; false for a job the intake handed over at its
    /// commit, before its flush (`crate::handoff`).
    pub claim_on_disk: bool,
}

/// Claims up to `limit` due immediate jobs: pending and due, or running under a lease that expired
/// or whose owner is dead (no heartbeat for `dead_after_secs`, or its liveness lock gone; see
/// `store::replicas`).
pub async fn claim_immediate(
    client: &impl GenericClient,
    owner: &str,
    lease_secs: f64,
    limit: i64,
    dead_after_secs: f64,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let rows = client
        .query(
            &client.prepare_cached(CLAIM_IMMEDIATE_SQL).await?,
            &[&owner, &lease_secs, &limit, &dead_after_secs],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ClaimedJob {
            id: r.get(0),
            action: if r.get::<_, &str>(2) == "remove" {
                Action::Remove
            } else {
                Action::Add
            },
            attempts: r.get(3),
            event_id: r.get(4),
            source_event_id: r.get(5),
            subject: Subject {
                application: r.get(1),
                group_id: r.get(6),
                principal_id: r.get(7),
                user_attributes: r.get(8),
                group_attributes: r.get(9),
            },
            claim_on_disk: true,
        })
        .collect())
}

const CLAIM_IMMEDIATE_SQL: &str = "WITH due AS (
                 SELECT id FROM jobs
                 WHERE lane = 'immediate'
                   AND ((state = 'pending' AND next_attempt_at <= clock_timestamp())
                        OR (state = 'running'
                            AND (lease_expires_at < clock_timestamp()
                                 -- Only another replica's jobs ask who is dead: that reads
                                 -- pg_locks, which a cycle fills with its pairs' locks.
                                 OR (lease_owner <> $1
                                     AND lease_owner IN (SELECT dead_owner
                                                         FROM dead_replicas($4))))))
                 ORDER BY id
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED
             ), claimed AS (
                 UPDATE jobs j
                 SET state = 'running', lease_owner = $1,
                     lease_expires_at = clock_timestamp() + make_interval(secs => $2),
                     attempts = j.attempts + 1
                 FROM due WHERE j.id = due.id
                 RETURNING j.id, j.application, j.action, j.attempts, j.event_id
             ), in_flight AS (
                 -- Written ahead with the claim: a request may go out from now on, so the record
                 -- of AWS for the pair is `unknown` until its outcome is recorded.
                 INSERT INTO aws_memberships (application, principal_id, group_id, aws_state)
                 SELECT DISTINCT c.application, e.principal_id, e.group_id, 'unknown'
                 FROM claimed c JOIN events e ON e.id = c.event_id
                 ON CONFLICT (application, principal_id, group_id) DO UPDATE
                 SET aws_state = 'unknown', updated_at = clock_timestamp()
             )
             SELECT c.id, c.application, c.action, c.attempts, e.id, e.source_event_id, e.group_id,
                    e.principal_id, e.user_attributes, e.group_attributes
             FROM claimed c JOIN events e ON e.id = c.event_id
             ORDER BY c.id";

/// How a reconciliation ends the immediate job it was given: done (its change is in AWS, or was
/// already), or superseded (the pair has no active grant any more: nothing was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    Done,
    Superseded,
}

impl JobEnd {
    fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Superseded => "superseded",
        }
    }
}

/// The arguments of [`END_SQL`]: the job, its lease owner, how it ends and the note of a
/// superseded job. Without a job, the statement ends none.
pub(crate) struct EndColumns<'a> {
    job_id: Option<i64>,
    owner: Option<&'a str>,
    end: Option<&'static str>,
    note: &'a str,
}

impl<'a> EndColumns<'a> {
    pub(crate) fn of(job: Option<(i64, &'a str, JobEnd)>, note: &'a str) -> Self {
        Self {
            job_id: job.map(|(id, _, _)| id),
            owner: job.map(|(_, owner, _)| owner),
            end: job.map(|(_, _, end)| end.as_str()),
            note,
        }
    }

    pub(crate) fn params(&self) -> [&(dyn ToSql + Sync); 4] {
        [&self.job_id, &self.owner, &self.end, &self.note]
    }
}

/// Ends job $1 as $3 (`done` or `superseded`, with note $4) while owner $2 holds its lease.
/// Returns the seconds from the event's receipt to now (both by the database clock); no row when
/// the lease was lost (or no job was given).
pub(crate) const END_SQL: &str = "UPDATE jobs j
             SET state = $3::text, completed_at = clock_timestamp(),
                 last_error = CASE WHEN $3::text = 'done' THEN NULL ELSE j.last_error END,
                 note = CASE WHEN $3::text = 'superseded' THEN $4::text ELSE j.note END,
                 lease_owner = NULL, lease_expires_at = NULL
             FROM events e
             WHERE j.id = $1::int8 AND j.lease_owner = $2::text AND j.state = 'running'
               AND e.id = j.event_id
             RETURNING extract(epoch FROM (j.completed_at - e.received_at))::float8";

/// The statements every immediate job runs (see `store::warm`).
pub(crate) fn hot_statements() -> Vec<String> {
    vec![CLAIM_IMMEDIATE_SQL.to_owned()]
}

/// Puts a job back to pending, due after `delay_secs`, with the reason of the failed attempt.
pub async fn retry_later(
    client: &impl GenericClient,
    job_id: i64,
    owner: &str,
    delay_secs: f64,
    reason: &str,
) -> Result<bool, StoreError> {
    let updated = client
        .execute(
            "UPDATE jobs
             SET state = 'pending', next_attempt_at = clock_timestamp() + make_interval(secs => $3),
                 last_error = $4, lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
            &[&job_id, &owner, &delay_secs, &reason],
        )
        .await?;
    Ok(updated == 1)
}

/// Marks a job failed for good, with its reason; it stays visible for operators.
pub async fn fail(
    client: &impl GenericClient,
    job_id: i64,
    owner: &str,
    reason: &str,
) -> Result<bool, StoreError> {
    let set = "state = 'failed', completed_at = clock_timestamp(), last_error = $3";
    release(client, job_id, owner, set, reason).await
}

/// Moves a job in hand to the deferred lane, for the next sync cycle (its application was
/// quarantined). It gives its admission slot back.
pub async fn defer(
    client: &impl GenericClient,
    job_id: i64,
    owner: &str,
    reason: &str,
) -> Result<bool, StoreError> {
    let set = "lane = 'deferred', admitted_at = NULL, state = 'pending', last_error = $3";
    release(client, job_id, owner, set, reason).await
}

/// Lets go of a job `owner` holds, applying `set` (a fixed clause of this module that may use
/// `$3` = `text`). Returns false when the lease was lost meanwhile.
async fn release(
    client: &impl GenericClient,
    job_id: i64,
    owner: &str,
    set: &'static str,
    text: &str,
) -> Result<bool, StoreError> {
    let sql = format!(
        "UPDATE jobs SET {set}, lease_owner = NULL, lease_expires_at = NULL
         WHERE id = $1 AND lease_owner = $2 AND state = 'running'"
    );
    let updated = client
        .execute(
            &client.prepare_cached(&sql).await?,
            &[&job_id, &owner, &text],
        )
        .await?;
    Ok(updated == 1)
}

/// Extends the lease of a job still in hand (long retries must not lose it).
pub async fn extend_lease(
    client: &impl GenericClient,
    job_id: i64,
    owner: &str,
    lease_secs: f64,
) -> Result<bool, StoreError> {
    let updated = client
        .execute(
            &client.prepare_cached("UPDATE jobs SET lease_expires_at = clock_timestamp() + make_interval(secs => $3)
             WHERE id = $1 AND lease_owner = $2 AND state = 'running'").await?,
            &[&job_id, &owner, &lease_secs],
        )
        .await?;
    Ok(updated == 1)
}

/// Gives failed jobs another chance in the next sync cycle: pending in the deferred lane with a
/// fresh attempt budget. Filters are optional. Returns the application of each job retried.
pub async fn retry_failed(
    client: &impl GenericClient,
    application: Option<&str>,
    ids: Option<&[i64]>,
) -> Result<Vec<String>, StoreError> {
    let rows = client
        .query(
            "UPDATE jobs
             SET state = 'pending', lane = 'deferred', admitted_at = NULL, attempts = 0,
                 completed_at = NULL, next_attempt_at = clock_timestamp(),
                 note = 'retried by an operator'
             WHERE state = 'failed' AND ($1::text IS NULL OR application = $1)
               AND ($2::bigint[] IS NULL OR id = ANY($2))
             RETURNING application",
            &[&application, &ids],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
