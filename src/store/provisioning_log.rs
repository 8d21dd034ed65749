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
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Skipped => "skipped",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
        }
    }
}

/// One log entry.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub cycle_id: Option<i64>,
    pub job_id: Option<i64>,
    pub action: Action,
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
            "INSERT INTO provisioning_log (application, cycle_id, job_id, action, principal_id,
                 group_id, status, error_code, reason, started_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
                     clock_timestamp() - make_interval(secs => $10))",
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
            ],
        )
        .await?;
    Ok(())
}
