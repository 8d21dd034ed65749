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
use crate::store::StoreError;

/// An application's admission rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionRule {
    /// Activations sent at once per window.
    pub limit: u32,
    /// The sliding window.
    pub window: Duration,
}

/// The outcome for one activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub lane: Lane,
    /// When it was admitted, for the immediate lane.
    pub admitted_at: Option<OffsetDateTime>,
}

/// Decides the lanes of `activations` activations of one request, in the order they are stored
/// (id order): the first `limit - admitted` go to the immediate lane, the rest are deferred. Call
/// in the request's transaction, after its other locks. The clock and the window's count are read
/// in one statement: every activation admitted here is admitted at the same instant and counts
/// against the next, so no window ever holds more than `limit` (a single event is a batch of one).
/// A quarantined application's activations are deferred.
pub async fn decide(
    client: &impl GenericClient,
    application: &str,
    rule: AdmissionRule,
    activations: usize,
) -> Result<Vec<Decision>, StoreError> {
    let statement = window_statement(client).await?;
    let (now, admitted) = window(client, &statement, application, rule).await?;
    if admitted >= i64::from(rule.limit) {
        return Ok(lanes_for(admitted, rule.limit, now, activations));
    }
    // Room, as far as committed admissions tell: look again under the lock. The lock and the look
    // are sent together (both prepared, so they leave in this order): Postgres runs the look once
    // the lock is granted, and the holder spends one round trip of the lock's time, not two.
    let lock = crate::store::events::admission_lock(client).await?;
    let ((), (now, admitted)) = futures_util::try_join!(
        crate::store::events::lock_admission_with(client, &lock, application),
        window(client, &statement, application, rule),
    )?;
    Ok(lanes_for(admitted, rule.limit, now, activations))
}

/// The window's statement, prepared once per connection: every activation reads it.
async fn window_statement(
    client: &impl GenericClient,
) -> Result<tokio_postgres::Statement, StoreError> {
    // Half-open window, as in `decide_at`.
    let sql = "SELECT c.now, a.quarantined_at IS NOT NULL,
                      (SELECT count(*) FROM jobs j
                       WHERE j.application = a.name AND j.lane = 'immediate'
                         AND j.admitted_at > c.now - make_interval(secs => $2)
                         AND j.admitted_at <= c.now)
               FROM applications a CROSS JOIN (SELECT clock_timestamp() AS now) c
               WHERE a.name = $1";
    Ok(client.prepare_cached(sql).await?)
}

/// Postgres's clock and the admissions of `application` in the window before it (`i64::MAX` while
/// the application is quarantined).
async fn window(
    client: &impl GenericClient,
    statement: &tokio_postgres::Statement,
    application: &str,
    rule: AdmissionRule,
) -> Result<(OffsetDateTime, i64), StoreError> {
    let row = client
        .query_one(statement, &[&application, &rule.window.as_secs_f64()])
        .await?;
    let now: OffsetDateTime = row.get(0);
    let admitted: i64 = if row.get::<_, bool>(1) {
        i64::MAX
    } else {
        row.get(2)
    };
    Ok((now, admitted))
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

/// The rule for `n` activations decided in order at one instant: each admitted one counts
/// against the next.
fn lanes_for(admitted_in_window: i64, limit: u32, now: OffsetDateTime, n: usize) -> Vec<Decision> {
    (0..n)
        .map(|k| lane_for(admitted_in_window.saturating_add(k as i64), limit, now))
        .collect()
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

    #[test]
    fn a_batch_fills_what_is_left_of_the_window_in_order() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let lanes: Vec<Lane> = lanes_for(3, 5, now, 4).iter().map(|d| d.lane).collect();
        assert_eq!(
            lanes,
            [
                Lane::Immediate,
                Lane::Immediate,
                Lane::Deferred,
                Lane::Deferred
            ]
        );
        assert!(lanes_for(7, 5, now, 3)
            .iter()
            .all(|d| d.lane == Lane::Deferred));
        // Quarantined: counted as full.
        assert!(lanes_for(i64::MAX, 5, now, 3)
            .iter()
            .all(|d| d.admitted_at.is_none()));
        assert!(lanes_for(0, 5, now, 0).is_empty());
    }
}
