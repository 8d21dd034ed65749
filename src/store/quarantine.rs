//! Quarantine of an application, as Entra does it (docs/architecture.md): entered when AWS
//! refuses the credentials or nearly every change fails; while in it, cycles back off (6 h, 12 h,
//! 24 h, then daily) and activations go to the deferred lane; any success or an operator clears it.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;

use super::StoreError;

/// An application's quarantine, when it is in one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    pub since: OffsetDateTime,
    pub reason: String,
    /// Cycles in a row that ended in quarantine.
    pub count: i32,
    pub next_attempt: Option<OffsetDateTime>,
}

/// Puts `application` in quarantine (or keeps it there one step further) and pushes its next
/// cycle back: 6 h after the first failure, 12 h after the second, then 24 h.
pub async fn enter(
    client: &impl GenericClient,
    application: &str,
    reason: &str,
) -> Result<Option<Quarantine>, StoreError> {
    let row = client
        .query_opt(
            "UPDATE applications
             SET quarantined_at = coalesce(quarantined_at, clock_timestamp()),
                 quarantine_reason = $2,
                 quarantine_count = quarantine_count + 1,
                 next_cycle_at = clock_timestamp() + CASE quarantine_count + 1
                     WHEN 1 THEN interval '6 hours'
                     WHEN 2 THEN interval '12 hours'
                     ELSE interval '24 hours' END
             WHERE name = $1
             RETURNING quarantined_at, quarantine_reason, quarantine_count, next_cycle_at",
            &[&application, &reason],
        )
        .await?;
    Ok(row.map(|r| Quarantine {
        since: r.get(0),
        reason: r.get(1),
        count: r.get(2),
        next_attempt: r.get(3),
    }))
}

/// Like [`enter`], but only when the application is not quarantined yet: the dispatcher's jobs
/// failing together must not push the back-off many steps at once.
pub async fn enter_once(
    client: &impl GenericClient,
    application: &str,
    reason: &str,
) -> Result<bool, StoreError> {
    let quarantined: bool = client
        .query_one(
            "SELECT quarantined_at IS NOT NULL FROM applications WHERE name = $1 FOR NO KEY UPDATE",
            &[&application],
        )
        .await?
        .get(0);
    if quarantined {
        return Ok(false);
    }
    Ok(enter(client, application, reason).await?.is_some())
}

/// Takes `application` out of quarantine. Returns whether it was in one.
pub async fn clear(client: &impl GenericClient, application: &str) -> Result<bool, StoreError> {
    let updated = client
        .execute(
            "UPDATE applications
             SET quarantined_at = NULL, quarantine_reason = NULL, quarantine_count = 0
             WHERE name = $1 AND quarantined_at IS NOT NULL",
            &[&application],
        )
        .await?;
    Ok(updated == 1)
}

/// The quarantine of `application`, if any.
pub async fn get(
    client: &impl GenericClient,
    application: &str,
) -> Result<Option<Quarantine>, StoreError> {
    let row = client
        .query_opt(
            "SELECT quarantined_at, quarantine_reason, quarantine_count, next_cycle_at
             FROM applications WHERE name = $1 AND quarantined_at IS NOT NULL",
            &[&application],
        )
        .await?;
    Ok(row.map(|r| Quarantine {
        since: r.get(0),
        reason: r.get::<_, Option<String>>(1).unwrap_or_default(),
        count: r.get(2),
        next_attempt: r.get(3),
    }))
}
