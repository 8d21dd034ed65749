//! Storing events and their jobs.
//!
//! A request's events and jobs are each written by one statement over arrays (`unnest`), so a
//! batch of a thousand costs what a single event costs in round trips (docs/performance.md).

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;

use super::StoreError;
use crate::domain::{EventSource, NewEvent};

/// Inserts `events` in the order given, each with the applications its group is assigned to (none:
/// stored as unrouted), skipping those whose `(source, id)` is already stored, and for each newly
/// stored event a job per application in the deferred lane (admission then moves the first
/// activations to the immediate lane in job id order, `admission::admit_and_commit`): one
/// statement. Returns each event's new row id, or `None` for a redelivery. The ids must be
/// distinct; events and then jobs are inserted (and row ids drawn) in the order given, so callers
/// that sort by id take row locks in a consistent order.
pub async fn insert_events(
    client: &impl GenericClient,
    source: EventSource,
    events: &[(&NewEvent, &[String])],
) -> Result<Vec<Option<i64>>, StoreError> {
    insert_and_lock(client, source, events, None).await
}

/// The locks an intake takes (see [`IntakeLock`]): with `keys`, the applications' rows in
/// [`IntakeLock::Keys`] mode then each key ([`lock_keys`]); without, the applications' rows alone
/// in [`IntakeLock::Applications`] mode.
#[derive(Debug, Clone, Copy)]
pub struct IntakeLocks<'a> {
    pub names: &'a [&'a str],
    pub keys: Option<&'a [String]>,
}

/// [`insert_events`], then, in the same round trip, the intake's `locks`: every statement is
/// prepared first, so that they leave together and Postgres runs them in order. The locks are
/// still taken after the rows are inserted (an insert that waits for a redelivery's commit waits
/// holding none of them); those of an event that turns out to be a redelivery are taken anyway,
/// which only keeps other intakes of its keys waiting until this one commits.
pub async fn insert_and_lock(
    client: &impl GenericClient,
    source: EventSource,
    events: &[(&NewEvent, &[String])],
    locks: Option<IntakeLocks<'_>>,
) -> Result<Vec<Option<i64>>, StoreError> {
    let insert = client.prepare_cached(INSERT_EVENTS_SQL).await?;
    let locks = match locks {
        Some(locks) => Some(PreparedLocks::prepare(client, locks).await?),
        None => None,
    };
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
        .map(|(_, to)| if to.is_empty() { "unrouted" } else { "routed" })
        .collect();
    // The jobs, as (event id, application, action) in the order their ids are to be drawn.
    let mut job_events: Vec<&str> = Vec::new();
    let mut job_applications: Vec<&str> = Vec::new();
    let mut job_actions: Vec<&str> = Vec::new();
    for (event, applications) in events {
        for application in *applications {
            job_events.push(&event.id);
            job_applications.push(application);
            job_actions.push(event.kind.action().as_str());
        }
    }
    let insert = async {
        Ok::<_, StoreError>(
            client
                .query(
                    &insert,
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
                        &job_events,
                        &job_applications,
                        &job_actions,
                    ],
                )
                .await?,
        )
    };
    let rows = match &locks {
        Some(locks) => futures_util::try_join!(insert, locks.take(client))?.0,
        None => insert.await?,
    };
    let mut stored: HashMap<String, i64> = rows.iter().map(|r| (r.get(1), r.get(0))).collect();
    Ok(ids.iter().map(|id| stored.remove(*id)).collect())
}

const INSERT_EVENTS_SQL: &str = "WITH stored AS (
         INSERT INTO events (source, source_event_id, kind, occurred_at, group_id, principal_id,
                             ends_at, user_attributes, group_attributes, routing, grant_id)
         SELECT $1, u.id, u.kind, u.occurred_at, u.group_id, u.principal_id, u.ends_at,
                u.usr, u.grp, u.routing, u.grant_id
         FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[],
                     $7::timestamptz[], $8::jsonb[], $9::jsonb[], $10::text[], $11::text[])
              WITH ORDINALITY
              AS u(id, kind, occurred_at, group_id, principal_id, ends_at, usr, grp, routing,
                   grant_id, ord)
         ORDER BY u.ord
         ON CONFLICT (source, source_event_id) DO NOTHING
         RETURNING id, source_event_id
     ), jobs AS (
         INSERT INTO jobs (event_id, application, action, lane)
         SELECT s.id, j.application, j.action, 'deferred'
         FROM stored s
         JOIN unnest($12::text[], $13::text[], $14::text[]) WITH ORDINALITY
              AS j(source_event_id, application, action, ord)
           ON j.source_event_id = s.source_event_id
         ORDER BY j.ord
     )
     SELECT id, source_event_id FROM stored";

/// How an intake transaction keeps concurrent intakes of the same applications apart
/// (docs/architecture.md, "Intake"). Locks are always taken in this order: applications (by name),
/// then keys (by hash), then admission (by application name), and only after the request's events
/// and jobs are inserted, so no two intakes deadlock: a holder never waits for another's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntakeLock {
    /// The applications' rows `FOR SHARE`, then one transaction lock per key the request touches:
    /// intakes of one application run side by side unless they touch the same pair or grant.
    Keys,
    /// The applications' rows `FOR NO KEY UPDATE`: the request runs alone for its applications.
    /// For large requests, whose keys would take a lock each in Postgres's shared lock table.
    Applications,
}

/// Locks the named applications' rows in `mode`, in name order.
///
/// `FOR NO KEY UPDATE`, not `FOR UPDATE`: it excludes other intakes (and a quarantine's entry)
/// just as well, but does not block the foreign-key checks (`FOR KEY SHARE`) of every insert that
/// names the application, such as a dispatcher's claim writing `aws_memberships`. With
/// `FOR UPDATE`, a burst of intakes held the claim of the first one's job until the last one
/// committed. `FOR SHARE` excludes only those two.
pub async fn lock_applications(
    client: &impl GenericClient,
    names: &[&str],
    mode: IntakeLock,
) -> Result<(), StoreError> {
    let statement = client.prepare_cached(applications_lock_sql(mode)).await?;
    client.query(&statement, &[&sorted(names)]).await?;
    Ok(())
}

fn applications_lock_sql(mode: IntakeLock) -> &'static str {
    match mode {
        IntakeLock::Keys => {
            "SELECT name FROM applications WHERE name = ANY($1) ORDER BY name FOR SHARE"
        }
        IntakeLock::Applications => {
            "SELECT name FROM applications WHERE name = ANY($1) ORDER BY name FOR NO KEY UPDATE"
        }
    }
}

fn sorted<'a>(names: &[&'a str]) -> Vec<&'a str> {
    let mut sorted: Vec<&str> = names.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
}

/// An intake's locks, as one prepared statement with its arguments.
struct PreparedLocks<'a> {
    statement: tokio_postgres::Statement,
    names: Vec<&'a str>,
    /// The keys, in [`IntakeLock::Keys`] mode with keys to lock.
    keys: Option<&'a [String]>,
}

impl<'a> PreparedLocks<'a> {
    async fn prepare(
        client: &impl GenericClient,
        locks: IntakeLocks<'a>,
    ) -> Result<Self, StoreError> {
        let (sql, keys) = match locks.keys {
            None => (applications_lock_sql(IntakeLock::Applications), None),
            Some([]) => (applications_lock_sql(IntakeLock::Keys), None),
            Some(keys) => (APPLICATIONS_THEN_KEYS_SQL, Some(keys)),
        };
        Ok(Self {
            statement: client.prepare_cached(sql).await?,
            names: sorted(locks.names),
            keys,
        })
    }

    /// Takes the locks; the statement leaves on the first poll.
    async fn take(&self, client: &impl GenericClient) -> Result<(), StoreError> {
        match self.keys {
            None => client.query(&self.statement, &[&self.names]).await?,
            Some(keys) => {
                client
                    .query(&self.statement, &[&self.names, &INTAKE_KEY_CLASS, &keys])
                    .await?
            }
        };
        Ok(())
    }
}

/// [`IntakeLock::Keys`] in one statement: the applications' rows `FOR SHARE` (in name order),
/// then each key's transaction lock (in hash order). The rows are locked by a one-time filter,
/// which Postgres evaluates before it reads the first key: the order every intake keeps.
const APPLICATIONS_THEN_KEYS_SQL: &str = "SELECT pg_advisory_xact_lock($2, k)
    FROM (SELECT DISTINCT hashtext(k) AS k FROM unnest($3::text[]) AS u(k) ORDER BY k) s
    WHERE (SELECT count(*) FROM (SELECT name FROM applications WHERE name = ANY($1)
                                 ORDER BY name FOR SHARE) a) >= 0";

/// Advisory lock class of intake's keys ("pimk"); a key is hashed into the second half.
const INTAKE_KEY_CLASS: i32 = 0x7069_6d6b;
/// Advisory lock class of admission ("pima"), one key per application.
const ADMISSION_CLASS: i32 = 0x7069_6d61;

/// The key of a pair of `application` that an intake touches (its grants, its deactivations).
pub fn pair_key(application: &str, group_id: &str, principal_id: &str) -> String {
    format!("pair\u{1f}{application}\u{1f}{group_id}\u{1f}{principal_id}")
}

/// The key of a grant an activation may extend, whichever pair it belongs to.
pub fn grant_key(application: &str, family: &str, key: &str) -> String {
    format!("grant\u{1f}{application}\u{1f}{family}\u{1f}{key}")
}

/// Takes a transaction lock on each of `keys` ([`pair_key`], [`grant_key`]), in hash order;
/// released at commit. Two keys sharing a hash only wait for each other needlessly.
pub async fn lock_keys(client: &impl GenericClient, keys: &[String]) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    client
        .query(
            &client.prepare_cached(KEYS_LOCK_SQL).await?,
            &[&INTAKE_KEY_CLASS, &keys],
        )
        .await?;
    Ok(())
}

const KEYS_LOCK_SQL: &str = "SELECT pg_advisory_xact_lock($1, k)
    FROM (SELECT DISTINCT hashtext(k) AS k FROM unnest($2::text[]) AS u(k) ORDER BY k) s";

/// Takes `application`'s admission lock until commit: whoever may admit to its immediate lane
/// holds it, so admissions are decided one at a time across replicas.
pub async fn lock_admission(
    client: &impl GenericClient,
    application: &str,
) -> Result<(), StoreError> {
    let lock = admission_lock(client).await?;
    lock_admission_with(client, &lock, application).await
}

/// The statement of [`lock_admission`], prepared once per connection: a caller that sends the
/// lock and its next statement together needs both prepared first, so that they go out in order.
pub async fn admission_lock(
    client: &impl GenericClient,
) -> Result<tokio_postgres::Statement, StoreError> {
    Ok(client.prepare_cached(ADMISSION_LOCK_SQL).await?)
}

const ADMISSION_LOCK_SQL: &str = "SELECT pg_advisory_xact_lock($1, hashtext($2))";

/// The statements every intake of an activation runs (see `store::warm`).
pub(crate) fn hot_statements() -> Vec<String> {
    [
        INSERT_EVENTS_SQL,
        APPLICATIONS_THEN_KEYS_SQL,
        ADMISSION_LOCK_SQL,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// [`lock_admission`] with its statement prepared by [`admission_lock`].
pub async fn lock_admission_with(
    client: &impl GenericClient,
    lock: &tokio_postgres::Statement,
    application: &str,
) -> Result<(), StoreError> {
    client
        .query(lock, &[&ADMISSION_CLASS, &application])
        .await?;
    Ok(())
}

/// An intake transaction on one connection, begun and ended by hand (not a
/// `tokio_postgres::Transaction`) so that its `COMMIT` can leave together with its last
/// statements: admission's lock is then held only while Postgres runs the admission and the
/// commit, never across a round trip to the service (see [`IntakeTransaction::commit_after`]).
///
/// It commits without waiting for its flush to disk (the caller must call [`flush`] on the same
/// connection after the commit and before telling anyone the rows are stored), and, with
/// `plans_once` (a request of a few events), its prepared statements run on plans made once per
/// connection.
///
/// Plans made once: every intake statement looks rows up by key, and planning them per request
/// cost more than running them whenever Postgres's estimates read index ends full of rows that
/// retention had deleted and vacuum had not yet removed (90 ms to plan the grant statement, 0.2 ms
/// to run it, with 1,500,000 jobs just deleted).
///
/// Commit without waiting: intake holds its locks (see [`IntakeLock`]) until it commits, so with
/// a synchronous commit every intake waiting for the same locks also waited for the holder's flush
/// to disk, and queued when the disk slowed (e.g. under retention's deletes). Committed asynchronously, the
/// locks are released as soon as the commit is written to the log; the flushes of concurrent
/// intakes then share one disk write (group commit) in [`flush`].
///
/// Safe because nothing acts on a row before it is durable: a crash before the flush loses the
/// transaction, but no one has answered 2xx for it yet (the sender delivers it again), and every
/// worker that acts on stored rows in AWS first commits a write of its own synchronously (a job's
/// claim, a cycle's write-ahead, or a flush before the first membership change of a job the intake
/// handed over, `crate::handoff`), which flushes the log up to and past this transaction.
pub struct IntakeTransaction {
    /// Always `Some` until [`Self::into_client`].
    client: Option<deadpool_postgres::Client>,
    /// Begun and not yet committed or rolled back: dropped like this (the request was
    /// cancelled), the connection is closed rather than returned to the pool inside a transaction.
    open: std::sync::atomic::AtomicBool,
}

impl IntakeTransaction {
    /// Begins the transaction on `client` (one round trip for `BEGIN` and its settings).
    pub async fn begin(
        client: deadpool_postgres::Client,
        plans_once: bool,
    ) -> Result<Self, StoreError> {
        let tx = Self {
            client: Some(client),
            open: std::sync::atomic::AtomicBool::new(true),
        };
        // A large batch plans for its own size: a plan made for one event is not one for a
        // thousand, and one plan per batch costs little per event.
        tx.client()
            .batch_execute(if plans_once {
                "BEGIN; SET LOCAL synchronous_commit = off; \
                 SET LOCAL plan_cache_mode = force_generic_plan"
            } else {
                "BEGIN; SET LOCAL synchronous_commit = off"
            })
            .await?;
        Ok(tx)
    }

    /// Where the transaction's statements run.
    pub fn client(&self) -> &deadpool_postgres::Client {
        self.client
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only by into_client, which consumes it"))
    }

    /// Commits. The transaction is over whatever the outcome.
    pub async fn commit(&self) -> Result<(), StoreError> {
        self.commit_after(async { Ok(()) }).await
    }

    /// Sends `COMMIT` right behind the statements `last` sends on its first poll (they must be
    /// prepared already, so that they leave at once and in order), without waiting for their
    /// replies in between, and returns `last`'s result once both are answered. If a statement
    /// of `last` fails, Postgres answers the `COMMIT` by rolling back, so the result is an error
    /// and nothing was stored. The transaction is over whatever the outcome.
    pub async fn commit_after<T>(
        &self,
        last: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        // `join!` polls both whatever the first one's result, so `COMMIT` is always sent.
        let (last, commit) = futures_util::join!(last, self.client().batch_execute("COMMIT"));
        self.close();
        let last = last?;
        commit?;
        Ok(last)
    }

    /// Rolls back after a failed statement. If even that fails, the connection is broken and
    /// is dropped rather than returned to the pool.
    pub async fn rollback(&self) {
        if let Err(e) = self.client().batch_execute("ROLLBACK").await {
            tracing::debug!(error.message = %e, "cannot roll back an intake transaction");
            return;
        }
        self.close();
    }

    /// The connection, once the transaction has committed (e.g. for [`flush`]).
    pub fn into_client(mut self) -> deadpool_postgres::Client {
        debug_assert!(!self.open.load(std::sync::atomic::Ordering::Acquire));
        self.client
            .take()
            .unwrap_or_else(|| unreachable!("taken only here, which consumes it"))
    }

    fn close(&self) {
        self.open.store(false, std::sync::atomic::Ordering::Release);
    }
}

impl Drop for IntakeTransaction {
    fn drop(&mut self) {
        if self.open.load(std::sync::atomic::Ordering::Acquire) {
            if let Some(client) = self.client.take() {
                // Closing the connection ends the transaction on the server.
                drop(deadpool_postgres::Object::take(client));
            }
        }
    }
}

/// Waits until everything this connection committed (and everything committed before it, on any
/// connection) is flushed to disk: a transaction of its own that writes one record to the log, so
/// that its commit is flushed synchronously, and with it the log before it. Concurrent flushes
/// share one disk write.
///
/// The record is a transactional logical-decoding message (prefix `pimbridge`, empty; consumers
/// of logical decoding skip prefixes they do not know). A transaction that writes nothing to the
/// log commits without a flush even when it took a transaction id (`SELECT txid_current()` does
/// not wait for the disk): Postgres waits only for commits that wrote something. The statement
/// also sets `synchronous_commit` for its own transaction, so that it waits for the disk even
/// where the server's default does not.
pub async fn flush(client: &impl GenericClient) -> Result<(), StoreError> {
    client
        .batch_execute(
            "SELECT set_config('synchronous_commit', 'on', true), \
                    pg_logical_emit_message(true, 'pimbridge', '')",
        )
        .await?;
    Ok(())
}

/// LISTEN/NOTIFY channel for new immediate jobs.
pub const JOBS_CHANNEL: &str = "pimbridge_jobs";
