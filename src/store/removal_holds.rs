//! The deletion threshold's state (docs/correctness.md): what a held cycle held back, and the
//! removals an operator confirmed for the application's next cycle.

use deadpool_postgres::GenericClient;

use super::StoreError;

/// Removals an operator confirmed for the next cycle of `application`, above its threshold.
pub async fn confirmed(client: &impl GenericClient, application: &str) -> Result<i64, StoreError> {
    let row = client
        .query_opt(
            "SELECT coalesce(removals_confirmed, 0)::int8 FROM applications WHERE name = $1",
            &[&application],
        )
        .await?;
    Ok(row.map_or(0, |r| r.get(0)))
}

/// Uses up a confirmation (the cycle that needed it ran its removals).
pub async fn consume(client: &impl GenericClient, application: &str) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE applications SET removals_confirmed = NULL WHERE name = $1",
            &[&application],
        )
        .await?;
    Ok(())
}

/// Records how many removals were due when a cycle started.
pub async fn record_due(
    client: &impl GenericClient,
    cycle_id: i64,
    due: i64,
) -> Result<(), StoreError> {
    let due = i32::try_from(due).unwrap_or(i32::MAX);
    client
        .execute(
            "UPDATE cycles SET removals_due = $2 WHERE id = $1",
            &[&cycle_id, &due],
        )
        .await?;
    Ok(())
}

/// What confirming would allow: the removals the application's latest finished cycle held
/// back, when that cycle was held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldCycle {
    pub cycle_id: i64,
    pub removals_due: i64,
}

/// The application's latest finished cycle, when it was held.
pub async fn latest_held(
    client: &impl GenericClient,
    application: &str,
) -> Result<Option<HeldCycle>, StoreError> {
    let row = client
        .query_opt(
            "SELECT id, outcome, removals_due::int8 FROM cycles
             WHERE application = $1 AND outcome <> 'running'
             ORDER BY id DESC LIMIT 1",
            &[&application],
        )
        .await?;
    Ok(row
        .filter(|r| r.get::<_, &str>(1) == "held")
        .map(|r| HeldCycle {
            cycle_id: r.get(0),
            removals_due: r.get(2),
        }))
}

/// Confirms the removals a held cycle held back: the application's next cycle may remove up to
/// `removals` memberships, however many its threshold allows.
pub async fn confirm(
    client: &impl GenericClient,
    application: &str,
    removals: i64,
) -> Result<(), StoreError> {
    let removals = i32::try_from(removals).unwrap_or(i32::MAX);
    client
        .execute(
            "UPDATE applications SET removals_confirmed = $2 WHERE name = $1",
            &[&application, &removals],
        )
        .await?;
    Ok(())
}
