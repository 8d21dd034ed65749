//! Read-only views for operators (the admin API): applications with their queues, cycles and
//! quarantine; cycles; the provisioning log; jobs.

use deadpool_postgres::GenericClient;
use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::Row;

use super::StoreError;

/// Most rows one listing returns.
pub const MAX_LIMIT: i64 = 1000;

/// An application as operators see it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationReport {
    pub name: String,
    /// Jobs waiting, by lane, and jobs failed for good.
    pub queue: Queue,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_cycle_at: Option<OffsetDateTime>,
    pub quarantine: Option<QuarantineReport>,
    /// The cycle in progress, with its progress so far.
    pub current_cycle: Option<CycleReport>,
    pub last_cycle: Option<CycleReport>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Queue {
    pub immediate: i64,
    pub deferred: i64,
    pub failed: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineReport {
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    pub reason: Option<String>,
    pub count: i32,
}

/// One sync cycle.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CycleReport {
    pub id: i64,
    pub application: String,
    pub kind: String,
    pub owner: String,
    pub outcome: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub changes_planned: i32,
    pub changes_applied: i32,
    pub changes_skipped: i32,
    pub changes_failed: i32,
    pub changes_retrying: i32,
    pub error: Option<String>,
    /// Removals due when the cycle started (what a `held` cycle held back).
    pub removals_due: i32,
}

const CYCLE_COLUMNS: &str = "id, application, kind, owner, outcome, started_at, finished_at,
    changes_planned, changes_applied, changes_skipped, changes_failed, changes_retrying, error, removals_due";

fn cycle(r: &Row) -> CycleReport {
    CycleReport {
        id: r.get(0),
        application: r.get(1),
        kind: r.get(2),
        owner: r.get(3),
        outcome: r.get(4),
        started_at: r.get(5),
        finished_at: r.get(6),
        changes_planned: r.get(7),
        changes_applied: r.get(8),
        changes_skipped: r.get(9),
        changes_failed: r.get(10),
        changes_retrying: r.get(11),
        error: r.get(12),
        removals_due: r.get(13),
    }
}

/// Every application in `names` that the database knows, in that order.
pub async fn applications(
    client: &impl GenericClient,
    names: &[String],
) -> Result<Vec<ApplicationReport>, StoreError> {
    let apps = client
        .query(
            "SELECT name, next_cycle_at, quarantined_at, quarantine_reason, quarantine_count
             FROM applications WHERE name = ANY($1)",
            &[&names],
        )
        .await?;
    let queues = client
        .query(
            "SELECT application,
                    count(*) FILTER (WHERE lane = 'immediate' AND state IN ('pending', 'running')),
                    count(*) FILTER (WHERE lane = 'deferred' AND state IN ('pending', 'running')),
                    count(*) FILTER (WHERE state = 'failed')
             FROM jobs WHERE application = ANY($1) GROUP BY application",
            &[&names],
        )
        .await?;
    let cycles = client
        .query(
            &format!(
                "SELECT {CYCLE_COLUMNS} FROM (
                     SELECT *, row_number() OVER (PARTITION BY application, outcome = 'running'
                                                  ORDER BY id DESC) AS rank
                     FROM cycles WHERE application = ANY($1)
                 ) c WHERE rank = 1"
            ),
            &[&names],
        )
        .await?;
    let mut reports = Vec::new();
    for name in names {
        let Some(app) = apps.iter().find(|r| r.get::<_, &str>(0) == name) else {
            continue;
        };
        let queue = queues
            .iter()
            .find(|r| r.get::<_, &str>(0) == name)
            .map_or_else(Queue::default, |r| Queue {
                immediate: r.get(1),
                deferred: r.get(2),
                failed: r.get(3),
            });
        let own: Vec<CycleReport> = cycles
            .iter()
            .map(cycle)
            .filter(|c| &c.application == name)
            .collect();
        reports.push(ApplicationReport {
            name: name.clone(),
            queue,
            next_cycle_at: app.get(1),
            quarantine: app
                .get::<_, Option<OffsetDateTime>>(2)
                .map(|since| QuarantineReport {
                    since,
                    reason: app.get(3),
                    count: app.get(4),
                }),
            current_cycle: own.iter().find(|c| c.outcome == "running").cloned(),
            last_cycle: own.into_iter().find(|c| c.outcome != "running"),
        });
    }
    Ok(reports)
}

/// The newest cycles of an application.
pub async fn cycles(
    client: &impl GenericClient,
    application: &str,
    limit: i64,
) -> Result<Vec<CycleReport>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT {CYCLE_COLUMNS} FROM cycles WHERE application = $1 ORDER BY id DESC LIMIT $2"
            ),
            &[&application, &limit.clamp(1, MAX_LIMIT)],
        )
        .await?;
    Ok(rows.iter().map(cycle).collect())
}

/// One provisioning-log entry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    pub id: i64,
    pub application: String,
    pub cycle_id: Option<i64>,
    pub job_id: Option<i64>,
    pub action: String,
    pub principal_id: String,
    pub group_id: String,
    pub status: String,
    pub error_code: Option<String>,
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
}

/// Filters of the provisioning log; every one is optional.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub application: Option<String>,
    pub status: Option<String>,
    pub cycle_id: Option<i64>,
    pub principal_id: Option<String>,
    pub group_id: Option<String>,
    pub since: Option<OffsetDateTime>,
    /// Entries with a smaller id than this (paging backwards).
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// Provisioning-log entries matching `filter`, newest first.
pub async fn provisioning_log(
    client: &impl GenericClient,
    filter: &LogFilter,
) -> Result<Vec<LogEntry>, StoreError> {
    let rows = client
        .query(
            "SELECT id, application, cycle_id, job_id, action, principal_id, group_id, status,
                    error_code, reason, started_at, finished_at
             FROM provisioning_log
             WHERE ($1::text IS NULL OR application = $1)
               AND ($2::text IS NULL OR status = $2)
               AND ($3::bigint IS NULL OR cycle_id = $3)
               AND ($4::text IS NULL OR principal_id = $4)
               AND ($5::text IS NULL OR group_id = $5)
               AND ($6::timestamptz IS NULL OR finished_at >= $6)
               AND ($7::bigint IS NULL OR id < $7)
             ORDER BY id DESC LIMIT $8",
            &[
                &filter.application,
                &filter.status,
                &filter.cycle_id,
                &filter.principal_id,
                &filter.group_id,
                &filter.since,
                &filter.before_id,
                &filter.limit.clamp(1, MAX_LIMIT),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| LogEntry {
            id: r.get(0),
            application: r.get(1),
            cycle_id: r.get(2),
            job_id: r.get(3),
            action: r.get(4),
            principal_id: r.get(5),
            group_id: r.get(6),
            status: r.get(7),
            error_code: r.get(8),
            reason: r.get(9),
            started_at: r.get(10),
            finished_at: r.get(11),
        })
        .collect())
}

/// One job as operators see it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobReport {
    pub id: i64,
    pub application: String,
    pub event_id: String,
    pub source: String,
    pub action: String,
    pub lane: String,
    pub state: String,
    pub attempts: i32,
    pub principal_id: String,
    pub group_id: String,
    pub last_error: Option<String>,
    pub note: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub completed_at: Option<OffsetDateTime>,
}

/// Jobs in `state` (any when `None`) of `application` (any when `None`), newest first.
pub async fn jobs(
    client: &impl GenericClient,
    application: Option<&str>,
    state: Option<&str>,
    limit: i64,
) -> Result<Vec<JobReport>, StoreError> {
    let rows = client
        .query(
            "SELECT j.id, j.application, e.source_event_id, e.source, j.action, j.lane, j.state,
                    j.attempts, e.principal_id, e.group_id, j.last_error, j.note, j.created_at,
                    j.completed_at
             FROM jobs j JOIN events e ON e.id = j.event_id
             WHERE ($1::text IS NULL OR j.application = $1) AND ($2::text IS NULL OR j.state = $2)
             ORDER BY j.id DESC LIMIT $3",
            &[&application, &state, &limit.clamp(1, MAX_LIMIT)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| JobReport {
            id: r.get(0),
            application: r.get(1),
            event_id: r.get(2),
            source: r.get(3),
            action: r.get(4),
            lane: r.get(5),
            state: r.get(6),
            attempts: r.get(7),
            principal_id: r.get(8),
            group_id: r.get(9),
            last_error: r.get(10),
            note: r.get(11),
            created_at: r.get(12),
            completed_at: r.get(13),
        })
        .collect())
}
