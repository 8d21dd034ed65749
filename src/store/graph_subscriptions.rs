//! The Graph subscriptions pimbridge manages, one per assigned group.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;

use super::StoreError;

/// Advisory lock key of the subscription manager ("pimbgrsb"): one replica at a time.
const MANAGER_LOCK: i64 = 0x7069_6d62_6772_7362;

/// Tries to become the replica that manages subscriptions; hold the connection until
/// [`unlock`].
pub async fn try_lock(client: &impl GenericClient) -> Result<bool, StoreError> {
    Ok(client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&MANAGER_LOCK])
        .await?
        .get(0))
}

/// Releases the lock taken by [`try_lock`] on the same connection.
pub async fn unlock(client: &impl GenericClient) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MANAGER_LOCK])
        .await?;
    Ok(())
}

/// A managed subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    pub group_id: String,
    pub subscription_id: String,
    pub expires_at: OffsetDateTime,
    pub renew_requested: bool,
}

/// Every managed subscription.
pub async fn all(client: &impl GenericClient) -> Result<Vec<Managed>, StoreError> {
    let rows = client
        .query(
            "SELECT group_id, subscription_id, expires_at, renew_requested FROM graph_subscriptions",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Managed {
            group_id: r.get(0),
            subscription_id: r.get(1),
            expires_at: r.get(2),
            renew_requested: r.get(3),
        })
        .collect())
}

/// Records a subscription created or renewed for `group_id`.
pub async fn save(
    client: &impl GenericClient,
    group_id: &str,
    subscription_id: &str,
    resource: &str,
    expires_at: OffsetDateTime,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO graph_subscriptions (group_id, subscription_id, resource, expires_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (group_id) DO UPDATE
             SET subscription_id = EXCLUDED.subscription_id, resource = EXCLUDED.resource,
                 expires_at = EXCLUDED.expires_at, renew_requested = false,
                 renewed_at = clock_timestamp(), last_error = NULL",
            &[&group_id, &subscription_id, &resource, &expires_at],
        )
        .await?;
    Ok(())
}

/// Records why a group's subscription could not be created or renewed.
pub async fn record_error(
    client: &impl GenericClient,
    group_id: &str,
    error: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE graph_subscriptions SET last_error = $2 WHERE group_id = $1",
            &[&group_id, &error],
        )
        .await?;
    Ok(())
}

/// Asks for a subscription to be renewed at the next check (Graph's `reauthorizationRequired`).
/// Returns whether pimbridge manages it.
pub async fn request_renewal(
    client: &impl GenericClient,
    subscription_id: &str,
) -> Result<bool, StoreError> {
    let updated = client
        .execute(
            "UPDATE graph_subscriptions SET renew_requested = true WHERE subscription_id = $1",
            &[&subscription_id],
        )
        .await?;
    Ok(updated == 1)
}
