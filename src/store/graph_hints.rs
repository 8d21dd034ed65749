//! Graph change notifications waiting to be resolved, one waiting hint per group; claimed under a
//! lease like jobs, so that any replica resolves it and a dead replica's hint is taken over.

use deadpool_postgres::GenericClient;

use super::StoreError;

/// Records that `group_id`'s membership changed: a new waiting hint, or one more notification
/// folded into the one already waiting.
pub async fn record(client: &impl GenericClient, group_id: &str) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO graph_hints (group_id) VALUES ($1)
             ON CONFLICT (group_id) WHERE state = 'pending'
             DO UPDATE SET notifications = graph_hints.notifications + 1",
            &[&group_id],
        )
        .await?;
    Ok(())
}

/// A hint in hand.
#[derive(Debug, Clone)]
pub struct ClaimedHint {
    pub id: i64,
    pub group_id: String,
    pub attempts: i32,
}

/// Claims up to `limit` due hints (pending and due, or running with an expired lease).
pub async fn claim(
    client: &impl GenericClient,
    owner: &str,
    lease_secs: f64,
    limit: i64,
) -> Result<Vec<ClaimedHint>, StoreError> {
    let rows = client
        .query(
            "WITH due AS (
                 SELECT id FROM graph_hints
                 WHERE (state = 'pending' AND next_attempt_at <= clock_timestamp())
                    OR (state = 'running' AND lease_expires_at < clock_timestamp())
                 ORDER BY id LIMIT $3
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE graph_hints h
             SET state = 'running', lease_owner = $1, attempts = h.attempts + 1,
                 lease_expires_at = clock_timestamp() + make_interval(secs => $2)
             FROM due WHERE h.id = due.id
             RETURNING h.id, h.group_id, h.attempts",
            &[&owner, &lease_secs, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ClaimedHint {
            id: r.get(0),
            group_id: r.get(1),
            attempts: r.get(2),
        })
        .collect())
}

/// Marks a hint resolved.
pub async fn complete(client: &impl GenericClient, id: i64, owner: &str) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE graph_hints SET state = 'done', completed_at = clock_timestamp(),
                 last_error = NULL, lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND lease_owner = $2",
            &[&id, &owner],
        )
        .await?;
    Ok(())
}

/// Records a failed resolution: tried again after `delay_secs`, or failed for good when
/// `give_up`. A hint retried meanwhile by a newer one for the same group is simply done.
pub async fn fail(
    client: &impl GenericClient,
    id: i64,
    owner: &str,
    reason: &str,
    delay_secs: f64,
    give_up: bool,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE graph_hints h
             SET state = CASE
                     WHEN $5 THEN 'failed'
                     WHEN EXISTS (SELECT 1 FROM graph_hints o WHERE o.group_id = h.group_id
                                  AND o.state = 'pending' AND o.id <> h.id) THEN 'done'
                     ELSE 'pending' END,
                 next_attempt_at = clock_timestamp() + make_interval(secs => $4),
                 completed_at = CASE WHEN $5 THEN clock_timestamp() END,
                 last_error = $3, lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND lease_owner = $2",
            &[&id, &owner, &reason, &delay_secs, &give_up],
        )
        .await?;
    Ok(())
}
