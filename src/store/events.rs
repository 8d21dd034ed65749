//! Storing events and their jobs.
//!
//! A request's events and jobs are each written by one statement over arrays (`unnest`), so a
//! batch of a thousand costs what a single event costs in round trips (docs/performance.md).

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;

use super::StoreError;
use crate::domain::{Action, EventSource, Lane, NewEvent};

/// Inserts `events` (each with whether it is routed) in the order given, skipping those whose
/// `(source, id)` is already stored. Returns each event's new row id, or `None` for a redelivery.
/// The ids must be distinct; rows are inserted (and row ids drawn) in the order given, so callers
/// that sort by id take row locks in a consistent order.
pub async fn insert_events(
    client: &impl GenericClient,
    source: EventSource,
    events: &[(&NewEvent, bool)],
) -> Result<Vec<Option<i64>>, StoreError> {
    let ids: Vec<&str> = events.iter().map(|(e, _)| e.id.as_str()).collect();
    let kinds: Vec<&str> = events.iter().map(|(e, _)| e.kind.as_str()).collect();
    let occurred: Vec<OffsetDateTime> = events.iter().map(|(e, _)| e.occurred_at).collect();
    let groups: Vec<&str> = events.iter().map(|(e, _)| e.group_id.as_str()).collect();
    let principals: Vec<&str> = events
        .iter()
        .map(|(e, _)| e.principal_id.as_str())
        .collect();
    let ends: Vec<Option<OffsetDateTime>> = events.iter().map(|(e, _)| e.ends_at).collect();
    let users: Vec<Option<&serde_json::Value>> =
        events.iter().map(|(e, _)| e.user.as_ref()).collect();
    let group_attrs: Vec<Option<&serde_json::Value>> =
        events.iter().map(|(e, _)| e.group.as_ref()).collect();
    // A deactivation's grant id says which grant it ends, also for activations stored later.
    let grant_ids: Vec<Option<&str>> = events.iter().map(|(e, _)| e.grant_id.as_deref()).collect();
    let routing: Vec<&str> = events
        .iter()
        .map(|(_, routed)| if *routed { "routed" } else { "unrouted" })
        .collect();
    let rows = client
        .query(
            "INSERT INTO events (source, source_event_id, kind, occurred_at, group_id, principal_id,
                                 ends_at, user_attributes, group_attributes, routing, grant_id)
             SELECT $1, u.id, u.kind, u.occurred_at, u.group_id, u.principal_id, u.ends_at, u.usr,
                    u.grp, u.routing, u.grant_id
             FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[],
                         $7::timestamptz[], $8::jsonb[], $9::jsonb[], $10::text[], $11::text[])
                  WITH ORDINALITY
                  AS u(id, kind, occurred_at, group_id, principal_id, ends_at, usr, grp, routing,
                       grant_id, ord)
             ORDER BY u.ord
             ON CONFLICT (source, source_event_id) DO NOTHING
             RETURNING id, source_event_id",
            &[
                &source.as_str(),
                &ids,
                &kinds,
                &occurred,
                &groups,
                &principals,
                &ends,
                &users,
                &group_attrs,
                &routing,
                &grant_ids,
            ],
        )
        .await?;
    let mut stored: HashMap<String, i64> = rows.iter().map(|r| (r.get(1), r.get(0))).collect();
    Ok(ids.iter().map(|id| stored.remove(*id)).collect())
}

/// A job to insert: it carries an event to one application.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub event_id: i64,
    pub application: &'a str,
    pub action: Action,
    pub lane: Lane,
    /// When admission put it in the immediate lane.
    pub admitted_at: Option<OffsetDateTime>,
}

/// Inserts `jobs`, drawing their ids in the order given (the dispatcher claims in id order).
pub async fn insert_jobs(
    client: &impl GenericClient,
    jobs: &[NewJob<'_>],
) -> Result<(), StoreError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let events: Vec<i64> = jobs.iter().map(|j| j.event_id).collect();
    let applications: Vec<&str> = jobs.iter().map(|j| j.application).collect();
    let actions: Vec<&str> = jobs.iter().map(|j| j.action.as_str()).collect();
    let lanes: Vec<&str> = jobs.iter().map(|j| j.lane.as_str()).collect();
    let admitted: Vec<Option<OffsetDateTime>> = jobs.iter().map(|j| j.admitted_at).collect();
    client
        .execute(
            "INSERT INTO jobs (event_id, application, action, lane, admitted_at)
             SELECT u.event_id, u.application, u.action, u.lane, u.admitted_at
             FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
                  WITH ORDINALITY AS u(event_id, application, action, lane, admitted_at, ord)
             ORDER BY u.ord",
            &[&events, &applications, &actions, &lanes, &admitted],
        )
        .await?;
    Ok(())
}

/// Locks the named applications' rows, in name order so that concurrent intakes cannot deadlock.
///
/// `FOR NO KEY UPDATE`, not `FOR UPDATE`: it serialises intakes just as well, but does not block
/// the foreign-key checks (`FOR KEY SHARE`) of every insert that names the application, such as a
/// dispatcher's claim writing `aws_memberships`. With `FOR UPDATE`, a burst of intakes held the
/// claim of the first one's job until the last one committed.
pub async fn lock_applications(
    client: &impl GenericClient,
    names: &[&str],
) -> Result<(), StoreError> {
    let mut sorted: Vec<&str> = names.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    client
        .query(
            "SELECT name FROM applications WHERE name = ANY($1) ORDER BY name FOR NO KEY UPDATE",
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
