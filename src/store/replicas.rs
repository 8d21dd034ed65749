//! Replicas and their heartbeats: who is alive, so that a dead replica's leases are taken over in
//! seconds (docs/architecture.md, "Crash recovery").
//!
//! A replica is alive while its heartbeat session holds its advisory lock (the server releases it
//! with the session, so a crash is seen at once) and its `last_seen` is fresher than `dead_after`
//! (which catches a host that vanished with its sessions still open on the server).

use deadpool_postgres::GenericClient;

use super::StoreError;

/// First half of the advisory lock key of replicas ("pimr"); the second is the owner's hash.
/// `sql/0009_replicas.sql` names the same number.
const REPLICA_LOCK_CLASS: i32 = 0x7069_6d72;

/// Takes the replica's liveness lock on the heartbeat session (held until the session ends).
pub async fn lock(client: &impl GenericClient, owner: &str) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            "SELECT pg_try_advisory_lock($1, hashtext($2))",
            &[&REPLICA_LOCK_CLASS, &owner],
        )
        .await?;
    Ok(row.get(0))
}

/// Records that `owner` is alive now.
pub async fn beat(client: &impl GenericClient, owner: &str) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO replicas (owner) VALUES ($1)
             ON CONFLICT (owner) DO UPDATE SET last_seen = clock_timestamp()",
            &[&owner],
        )
        .await?;
    Ok(())
}

/// Marks `owner` dead on a clean shutdown: whatever it still holds is free at once. The row stays
/// (a lease of an owner without a row waits for its expiry) until [`forget_silent`] removes it.
pub async fn leave(client: &impl GenericClient, owner: &str) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE replicas SET last_seen = '-infinity' WHERE owner = $1",
            &[&owner],
        )
        .await?;
    Ok(())
}

/// Forgets replicas silent for `secs`; their leases expired long ago.
pub async fn forget_silent(client: &impl GenericClient, secs: f64) -> Result<u64, StoreError> {
    Ok(client
        .execute(
            "DELETE FROM replicas
             WHERE last_seen < clock_timestamp() - make_interval(secs => $1)",
            &[&secs],
        )
        .await?)
}

/// How many replicas are alive (heartbeat fresher than `dead_after_secs` and lock held).
pub async fn live_count(
    client: &impl GenericClient,
    dead_after_secs: f64,
) -> Result<i64, StoreError> {
    let row = client
        .query_one("SELECT live_replica_count($1)", &[&dead_after_secs])
        .await?;
    Ok(row.get(0))
}

/// Owners known to be dead.
pub async fn dead(
    client: &impl GenericClient,
    dead_after_secs: f64,
) -> Result<Vec<String>, StoreError> {
    let rows = client
        .query(
            "SELECT dead_owner FROM dead_replicas($1)",
            &[&dead_after_secs],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
