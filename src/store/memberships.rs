//! What pimbridge last confirmed in AWS per application, user and group, and from which event.
//!
//! The sync cycle reads it to skip changes AWS already reflects and to find activations that have
//! ended; both lanes write it when AWS confirms a change.

use deadpool_postgres::GenericClient;

use super::StoreError;

/// Records that AWS now reflects `event_id` for its user and group in `application`: a member
/// when `present`. An older event never overwrites a newer one.
pub async fn confirm(
    client: &impl GenericClient,
    application: &str,
    event_id: i64,
    present: bool,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO memberships
                 (application, principal_id, group_id, present, event_id, occurred_at, ends_at)
             SELECT $1, e.principal_id, e.group_id, $3, e.id, e.occurred_at, e.ends_at
             FROM events e WHERE e.id = $2
             ON CONFLICT (application, principal_id, group_id) DO UPDATE
             SET present = EXCLUDED.present, event_id = EXCLUDED.event_id,
                 occurred_at = EXCLUDED.occurred_at, ends_at = EXCLUDED.ends_at,
                 confirmed_at = clock_timestamp()
             WHERE (memberships.occurred_at, memberships.event_id)
                   <= (EXCLUDED.occurred_at, EXCLUDED.event_id)",
            &[&application, &event_id, &present],
        )
        .await?;
    Ok(())
}
