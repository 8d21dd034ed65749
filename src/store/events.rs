//! Storing events and their jobs.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;

use super::StoreError;
use crate::domain::{Action, EventSource, Lane, NewEvent};

/// Inserts `event` unless `(source, id)` is already stored. Returns the new row id, or `None` for a
/// redelivery.
pub async fn insert_event(
    client: &impl GenericClient,
    source: EventSource,
    event: &NewEvent,
    routed: bool,
) -> Result<Option<i64>, StoreError> {
    let row = client
        .query_opt(
            "INSERT INTO events (source, source_event_id, kind, occurred_at, group_id, principal_id,
                                 ends_at, user_attributes, group_attributes, routing)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (source, source_event_id) DO NOTHING
             RETURNING id",
            &[
                &source.as_str(),
                &event.id,
                &event.kind.as_str(),
                &event.occurred_at,
                &event.group_id,
                &event.principal_id,
                &event.ends_at,
                &event.user,
                &event.group,
                &if routed { "routed" } else { "unrouted" },
            ],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Inserts the job that carries an event to one application.
pub async fn insert_job(
    client: &impl GenericClient,
    event_id: i64,
    application: &str,
    action: Action,
    lane: Lane,
    admitted_at: Option<OffsetDateTime>,
) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            "INSERT INTO jobs (event_id, application, action, lane, admitted_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[
                &event_id,
                &application,
                &action.as_str(),
                &lane.as_str(),
                &admitted_at,
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// Locks the named applications' rows, in name order so that concurrent intakes cannot deadlock.
pub async fn lock_applications(
    client: &impl GenericClient,
    names: &[&str],
) -> Result<(), StoreError> {
    let mut sorted: Vec<&str> = names.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    client
        .query(
            "SELECT name FROM applications WHERE name = ANY($1) ORDER BY name FOR UPDATE",
            &[&sorted],
        )
        .await?;
    Ok(())
}

/// Wakes dispatchers (delivered when the transaction commits).
pub async fn notify_dispatchers(client: &impl GenericClient) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_notify($1, '')", &[&JOBS_CHANNEL])
        .await?;
    Ok(())
}

/// LISTEN/NOTIFY channel for new immediate jobs.
pub const JOBS_CHANNEL: &str = "pimbridge_jobs";
