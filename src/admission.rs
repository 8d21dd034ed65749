//! Admission to the immediate lane: exact, per application, across replicas (docs/architecture.md).
//!
//! An activation goes to the immediate lane iff fewer than `limit` activations of the same
//! application were admitted there in the `window` before now. The caller holds the application's
//! row lock (see `store::events::lock_applications`), so decisions are serialised per application,
//! and "now" is Postgres's `clock_timestamp()` read *after* the lock, so every replica uses one clock
//! and admissions are recorded in the order they were decided.

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

/// Decides the lane of one activation now, by the database clock. Call with the application's
/// row locked in the same transaction. A quarantined application's activations are deferred.
pub async fn decide(
    client: &impl GenericClient,
    application: &str,
    rule: AdmissionRule,
) -> Result<Decision, StoreError> {
    let row = client
        .query_one(
            "SELECT clock_timestamp(), quarantined_at IS NOT NULL FROM applications WHERE name = $1",
            &[&application],
        )
        .await?;
    if row.get::<_, bool>(1) {
        return Ok(Decision {
            lane: Lane::Deferred,
            admitted_at: None,
        });
    }
    decide_at(client, application, rule, row.get(0)).await
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
