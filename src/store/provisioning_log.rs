//! The provisioning log: one entry per membership change attempted in AWS, for operators.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::StoreError;
use crate::domain::{Action, Subject};

/// How an attempted change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Succeeded,
    /// AWS already reflected the desired state; no request was needed.
    Skipped,
    /// Failed transiently; it will be tried again.
    Retrying,
    Failed,
    /// Not sent: a newer deactivation or the grant's end made it pointless.
    Superseded,
    /// A removal held back (a cycle over its removal threshold).
    Held,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Skipped => "skipped",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
            Self::Superseded => "superseded",
            Self::Held => "held",
        }
    }
}

/// The step an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogAction {
    Add,
    Remove,
    CreateUser,
    UpdateUser,
    CreateGroup,
}

impl LogAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Remove => "remove",
            Self::CreateUser => "create_user",
            Self::UpdateUser => "update_user",
            Self::CreateGroup => "create_group",
        }
    }
}

impl From<Action> for LogAction {
    fn from(action: Action) -> Self {
        match action {
            Action::Add => Self::Add,
            Action::Remove => Self::Remove,
        }
    }
}

/// One log entry.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub cycle_id: Option<i64>,
    pub job_id: Option<i64>,
    /// The event behind the change, and the grant that decided it.
    pub event_id: Option<i64>,
    pub grant_id: Option<i64>,
    pub action: LogAction,
    pub subject: &'a Subject,
    pub status: Status,
    pub error_code: Option<&'a str>,
    pub reason: Option<&'a str>,
    /// Seconds the change took, so that `started_at` can be derived from the database clock.
    pub elapsed_secs: f64,
}

/// Appends an entry.
pub async fn append(client: &impl GenericClient, entry: &Entry<'_>) -> Result<(), StoreError> {
    append_many(client, std::slice::from_ref(entry)).await
}

/// Appends entries in one statement, in the order given (a cycle's hundred changes are one round
/// trip, not a hundred).
pub async fn append_many(
    client: &impl GenericClient,
    entries: &[Entry<'_>],
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let columns = EntryColumns::of(entries);
    client
        .execute(
            &client.prepare_cached(APPEND_MANY_SQL).await?,
            &columns.params(),
        )
        .await?;
    Ok(())
}

/// The arguments of [`APPEND_MANY_SQL`]: one array per column.
pub(crate) struct EntryColumns<'a> {
    applications: Vec<&'a str>,
    cycles: Vec<Option<i64>>,
    jobs: Vec<Option<i64>>,
    actions: Vec<&'static str>,
    principals: Vec<&'a str>,
    groups: Vec<&'a str>,
    statuses: Vec<&'static str>,
    codes: Vec<Option<&'a str>>,
    reasons: Vec<Option<&'a str>>,
    elapsed: Vec<f64>,
    events: Vec<Option<i64>>,
    grants: Vec<Option<i64>>,
}

impl<'a> EntryColumns<'a> {
    pub(crate) fn of(entries: &[Entry<'a>]) -> Self {
        Self {
            applications: entries
                .iter()
                .map(|e| e.subject.application.as_str())
                .collect(),
            cycles: entries.iter().map(|e| e.cycle_id).collect(),
            jobs: entries.iter().map(|e| e.job_id).collect(),
            actions: entries.iter().map(|e| e.action.as_str()).collect(),
            principals: entries
                .iter()
                .map(|e| e.subject.principal_id.as_str())
                .collect(),
            groups: entries
                .iter()
                .map(|e| e.subject.group_id.as_str())
                .collect(),
            statuses: entries.iter().map(|e| e.status.as_str()).collect(),
            codes: entries.iter().map(|e| e.error_code).collect(),
            reasons: entries.iter().map(|e| e.reason).collect(),
            elapsed: entries.iter().map(|e| e.elapsed_secs).collect(),
            events: entries.iter().map(|e| e.event_id).collect(),
            grants: entries.iter().map(|e| e.grant_id).collect(),
        }
    }

    pub(crate) fn params(&self) -> [&(dyn ToSql + Sync); 12] {
        [
            &self.applications,
            &self.cycles,
            &self.jobs,
            &self.actions,
            &self.principals,
            &self.groups,
            &self.statuses,
            &self.codes,
            &self.reasons,
            &self.elapsed,
            &self.events,
            &self.grants,
        ]
    }
}

/// Appends entries (none: nothing) from arrays $1–$12 (see [`EntryColumns`]).
pub(crate) const APPEND_MANY_SQL: &str = "INSERT INTO provisioning_log (application, cycle_id, job_id, action, principal_id,
                 group_id, status, error_code, reason, started_at, event_id, grant_id)
             SELECT a, c, j, act, u, g, st, code, why,
                    clock_timestamp() - make_interval(secs => secs), ev, gr
             FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::text[], $9::text[], $10::float8[], $11::int8[], $12::int8[])
                  WITH ORDINALITY AS e(a, c, j, act, u, g, st, code, why, secs, ev, gr, n)
             ORDER BY n";

/// The statement every reconciliation's log entries take (see `store::warm`).
pub(crate) fn hot_statements() -> Vec<String> {
    vec![APPEND_MANY_SQL.to_owned()]
}
