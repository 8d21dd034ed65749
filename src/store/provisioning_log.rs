//! The provisioning log: one entry per membership change attempted in AWS, for operators.

use deadpool_postgres::GenericClient;

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
    client
        .execute(
            &client.prepare_cached("INSERT INTO provisioning_log (application, cycle_id, job_id, action, principal_id,
                 group_id, status, error_code, reason, started_at, event_id, grant_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
                     clock_timestamp() - make_interval(secs => $10), $11, $12)").await?,
            &[
                &entry.subject.application,
                &entry.cycle_id,
                &entry.job_id,
                &entry.action.as_str(),
                &entry.subject.principal_id,
                &entry.subject.group_id,
                &entry.status.as_str(),
                &entry.error_code,
                &entry.reason,
                &entry.elapsed_secs,
                &entry.event_id,
                &entry.grant_id,
            ],
        )
        .await?;
    Ok(())
}
