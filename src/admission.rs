//! Admission to the immediate lane: exact, per application, across replicas (docs/architecture.md).
//!
//! An activation goes to the immediate lane iff fewer than `limit` activations of the same
//! application were admitted there in the `window` before now. Whoever may admit holds the
//! application's admission lock (`store::events::lock_admission`) until commit, so admissions are
//! decided one at a time across replicas, and "now" is Postgres's `clock_timestamp()` read *after*
//! the lock, so every replica uses one clock and admissions are recorded in the order they were
//! decided.
//!
//! A window that is already full needs no lock: admissions are only ever added, so an activation
//! that sees `limit` committed admissions in the window before its own now is deferred whatever
//! other intakes are doing. Under a steady flow most activations take that path, and intakes of
//! one application do not queue behind each other's commits.

use std::time::Duration;

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;

use crate::domain::Lane;
use crate::store::events::IntakeTransaction;
use crate::store::StoreError;

/// An application's admission rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionRule {
    /// Activations sent at once per window.
    pub limit: u32,
    /// The sliding window.
    pub window: Duration,
}

/// The outcome for one activation (see [`decide_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub lane: Lane,
    /// When it was admitted, for the immediate lane.
    pub admitted_at: Option<OffsetDateTime>,
}

/// A job admitted to the immediate lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub job_id: i64,
    /// The event's row id.
    pub event_id: i64,
    /// Claimed for this replica's dispatcher as it was admitted (see [`Claim`]).
    pub claimed: bool,
}

/// The lease an intake takes on the first jobs it admits, for its own replica's dispatcher
/// (`crate::handoff`).
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub owner: &'a str,
    pub lease_secs: f64,
    /// How many of the admitted jobs to claim (the dispatcher's free slots).
    pub slots: usize,
}

/// One application's part of a request's admission: the rows of the request's new activations
/// routed to it (in id order; their jobs already stored in the deferred lane) and, optionally, a
/// claim for this replica's dispatcher.
#[derive(Debug, Clone)]
pub struct Asked<'a> {
    pub application: &'a str,
    pub rule: AdmissionRule,
    pub events: Vec<i64>,
    pub claim: Option<Claim<'a>>,
}

/// Whether `application`'s window may have room: false when the committed admissions in the
/// window before Postgres's now already reach the limit (or the application is quarantined),
/// which needs no lock (see the module's doc).
///
/// It asks by running [`PROMOTE`] for no events, which admits nothing and returns the window
/// alone. That also plans the statement (the intake's transaction uses generic plans) before the
/// admission lock is taken: planned under the lock, on a connection that had not run it yet or
/// after statistics changed, it held the lock for milliseconds while the other intakes of a burst
/// queued behind it (docs/performance.md).
pub async fn may_have_room(
    client: &impl GenericClient,
    application: &str,
    rule: AdmissionRule,
) -> Result<bool, StoreError> {
    let statement = client.prepare_cached(PROMOTE).await?;
    let rows = promote(client, &statement, application, rule, &[], None).await?;
    // Nothing to admit: one row, of the window alone. None when the application is not
    // registered, which its jobs' foreign key has already refused: no room then.
    let Some(row) = rows.first() else {
        return Ok(false);
    };
    let quarantined: bool = row.get("quarantined");
    let admitted: i64 = row.get("admitted");
    Ok(!quarantined && admitted < i64::from(rule.limit))
}

/// Admits, for each of `asked` (in application name order, the order its locks are taken in),
/// the first `limit - admitted` jobs to the immediate lane, all at one instant, so that each
/// counts against the next and no window ever holds more than `limit` (a single event is a batch
/// of one); the rest stay deferred. With a claim, the first `claim.slots` admitted are also
/// claimed as `store::jobs` claims a job (running, leased, first attempt, the pair's AWS record
/// written ahead as `unknown`), and if any admitted job is left unclaimed the dispatchers are
/// notified. Then commits `tx`: the locks, the admissions and the `COMMIT` leave together, so
/// each admission lock is held while Postgres runs the admission and the commit, not across a
/// round trip to the service. The transaction's other locks must be taken already. A
/// quarantined application admits nothing. Returns the admitted jobs of each of `asked`.
pub async fn admit_and_commit(
    tx: &IntakeTransaction,
    asked: &[Asked<'_>],
) -> Result<Vec<Vec<Admitted>>, StoreError> {
    if asked.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let client = tx.client();
    // Both prepared first, so that every statement leaves at once and in order: Postgres runs
    // each admission once its lock is granted, then the commit.
    let prepared = async {
        let lock = crate::store::events::admission_lock(client).await?;
        let promote = client.prepare_cached(PROMOTE).await?;
        Ok::<_, StoreError>((lock, promote))
    };
    let (lock, promote_statement) = match prepared.await {
        Ok(statements) => statements,
        Err(e) => {
            tx.rollback().await;
            return Err(e);
        }
    };
    let mut order: Vec<usize> = (0..asked.len()).collect();
    order.sort_by_key(|&i| asked[i].application);
    let each = order.iter().map(|&i| {
        let a = &asked[i];
        let (lock, promote_statement) = (&lock, &promote_statement);
        async move {
            let ((), rows) = futures_util::try_join!(
                crate::store::events::lock_admission_with(client, lock, a.application),
                promote(
                    client,
                    promote_statement,
                    a.application,
                    a.rule,
                    &a.events,
                    a.claim
                ),
            )?;
            Ok::<_, StoreError>(
                rows.iter()
                    // Nothing admitted: one row of the window alone.
                    .filter(|r| r.get::<_, Option<i64>>("id").is_some())
                    .map(|r| Admitted {
                        job_id: r.get(0),
                        event_id: r.get(1),
                        claimed: r.get(2),
                    })
                    .collect::<Vec<_>>(),
            )
        }
    });
    let admitted = tx
        .commit_after(futures_util::future::try_join_all(each))
        .await?;
    // Back in the order asked.
    let mut result = vec![Vec::new(); asked.len()];
    for (i, these) in order.into_iter().zip(admitted) {
        result[i] = these;
    }
    Ok(result)
}

/// Runs [`PROMOTE`], prepared as `statement`, for `events` of `application` under `rule`,
/// claiming for `claim`'s owner as many of them as it has slots. The query leaves on the first
/// poll, so a caller that polls a lock first has it sent first.
async fn promote(
    client: &impl GenericClient,
    statement: &tokio_postgres::Statement,
    application: &str,
    rule: AdmissionRule,
    events: &[i64],
    claim: Option<Claim<'_>>,
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let (owner, lease_secs, slots) = match claim {
        Some(c) => (Some(c.owner), c.lease_secs, c.slots as i64),
        None => (None, 0.0, 0),
    };
    Ok(client
        .query(
            statement,
            &[
                &application,
                &rule.window.as_secs_f64(),
                &events,
                &i64::from(rule.limit),
                &slots,
                &owner,
                &lease_secs,
                &crate::store::events::JOBS_CHANNEL,
            ],
        )
        .await?)
}

/// Moves the first jobs of application $1 for the events $3 (in id order) to the immediate lane,
/// as many as the window of $2 seconds before now has room for under the limit $4; claims the
/// first $5 of them for owner $6 with a lease of $7 seconds, and notifies channel $8 (delivered
/// at commit) when it admits any it does not claim. Half-open window, as in `decide_at`. Returns
/// a row per admitted job, each with the window as it was before (`admitted`, `quarantined`), or,
/// when it admits none, one row of the window alone (`id` null).
const PROMOTE: &str = "WITH w AS (
         -- Postgres's now, whether the application is quarantined, and its admissions in the
         -- window before now.
         SELECT c.now, a.quarantined_at IS NOT NULL AS quarantined,
                (SELECT count(*) FROM jobs j
                 WHERE j.application = a.name AND j.lane = 'immediate'
                   AND j.admitted_at > c.now - make_interval(secs => $2)
                   AND j.admitted_at <= c.now) AS admitted
         FROM applications a CROSS JOIN (SELECT clock_timestamp() AS now) c
         WHERE a.name = $1
     ), chosen AS (
         -- One look-up per event by the job's unique key, never a scan of the application's
         -- deferred jobs: a plan made while the queue was short must not read the whole backlog
         -- once it is long. The LIMIT keeps the look-up from being planned as a join, and only
         -- the key's columns are inside, so no index on (application, lane) can stand in for it.
         SELECT j.id, row_number() OVER (ORDER BY j.id) AS k
         FROM unnest($3::int8[]) AS u(event_id)
         CROSS JOIN LATERAL (SELECT j.id, j.action, j.lane FROM jobs j
                             WHERE j.event_id = u.event_id AND j.application = $1
                             LIMIT 1) j
         WHERE j.action = 'add' AND j.lane = 'deferred' AND NOT (SELECT quarantined FROM w)
         ORDER BY j.id
         LIMIT greatest(0, $4 - (SELECT admitted FROM w))
     ), promoted AS (
         UPDATE jobs j
         SET lane = 'immediate', admitted_at = w.now,
             state = CASE WHEN c.k <= $5 THEN 'running' ELSE j.state END,
             lease_owner = CASE WHEN c.k <= $5 THEN $6 END,
             lease_expires_at = CASE WHEN c.k <= $5
                                     THEN clock_timestamp() + make_interval(secs => $7) END,
             attempts = CASE WHEN c.k <= $5 THEN 1 ELSE j.attempts END
         FROM chosen c, w
         WHERE j.id = c.id
         RETURNING j.id, j.event_id, j.state = 'running' AS claimed
     ), in_flight AS (
         -- As a claim writes it: a request may go out as soon as this commits.
         INSERT INTO aws_memberships (application, principal_id, group_id, aws_state)
         SELECT DISTINCT $1, e.principal_id, e.group_id, 'unknown'
         FROM promoted p JOIN events e ON e.id = p.event_id
         WHERE p.claimed
         ON CONFLICT (application, principal_id, group_id) DO UPDATE
         SET aws_state = 'unknown', updated_at = clock_timestamp()
     ), woken AS (
         -- The dispatchers are woken for admitted jobs left to the queue.
         SELECT pg_notify($8, '') FROM promoted WHERE NOT claimed LIMIT 1
     )
     -- `woken` is read here so that it runs: Postgres runs a plain SELECT step only when read.
     SELECT p.id, p.event_id, p.claimed, w.admitted, w.quarantined,
            (SELECT count(*) FROM woken) AS woken
     FROM w LEFT JOIN promoted p ON true ORDER BY p.id";

/// The statements of an activation's admission (see `store::warm`).
pub fn hot_statements() -> Vec<String> {
    vec![PROMOTE.to_owned()]
}

/// Decides the lane of one activation at `now`. The window is half-open: an admission exactly
/// `window` before `now` no longer counts.
pub async fn decide_at(
    client: &impl GenericClient,
    application: &str,
    rule: AdmissionRule,
    now: OffsetDateTime,
) -> Result<Decision, StoreError> {
    let window_start = now - rule.window;
    let admitted: i64 = client
        .query_one(
            "SELECT count(*) FROM jobs
             WHERE application = $1 AND lane = 'immediate'
               AND admitted_at > $2 AND admitted_at <= $3",
            &[&application, &window_start, &now],
        )
        .await?
        .get(0);
    Ok(lane_for(admitted, rule.limit, now))
}

/// The rule itself, apart from the counting.
fn lane_for(admitted_in_window: i64, limit: u32, now: OffsetDateTime) -> Decision {
    if admitted_in_window < i64::from(limit) {
        Decision {
            lane: Lane::Immediate,
            admitted_at: Some(now),
        }
    } else {
        Decision {
            lane: Lane::Deferred,
            admitted_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_limit_is_immediate_and_at_the_limit_deferred() {
        let now = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(lane_for(0, 5, now).lane, Lane::Immediate);
        assert_eq!(lane_for(4, 5, now).lane, Lane::Immediate);
        assert_eq!(lane_for(4, 5, now).admitted_at, Some(now));
        assert_eq!(lane_for(5, 5, now).lane, Lane::Deferred);
        assert_eq!(lane_for(5, 5, now).admitted_at, None);
        assert_eq!(lane_for(9, 5, now).lane, Lane::Deferred);
    }
}
