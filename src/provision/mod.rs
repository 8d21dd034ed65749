//! The one way into AWS: make AWS reflect the grants of some (user, group) pairs, and record what
//! happened (docs/architecture.md, docs/correctness.md).
//!
//! The dispatcher (immediate lane), sync cycles and the admin API all call [`Provisioner::reconcile`];
//! nothing else calls the SCIM client for writes. A reconciliation holds each pair's lock while it
//! reads the pair's desired state and record, sends what differs, and records the outcome, so no two
//! requests for one pair are ever in flight together and a policy fix is made in one place.

mod decide;
mod graph_check;
mod reconcile;
mod resolve;
mod user_attributes;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::UserNameAttribute;
use crate::graph::{GraphClient, GraphError};
use crate::scim::{ScimClient, ScimError};
use crate::store::{provisioning_log, StoreError};

pub use decide::{decide, Step};
pub use reconcile::{Failure, JobSettled, Options, Origin, Outcome, PairRequest, Reconciled};

/// Why a change could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// AWS (or the way to it) failed; `is_transient` tells whether to retry.
    #[error(transparent)]
    Scim(#[from] ScimError),
    /// The event carries too little to create the user or group, and AWS does not know it yet.
    #[error("missing attributes: {0}")]
    MissingAttributes(String),
    /// The id cache could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job names an application that is no longer configured.
    #[error("application `{0}` is not configured")]
    UnknownApplication(String),
    /// Graph, asked for attributes the event lacks, failed.
    #[error("cannot read the user's attributes from Microsoft Graph: {0}")]
    Graph(#[from] GraphError),
}

impl ProvisionError {
    /// True when trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Scim(e) => e.is_transient(),
            Self::Store(e) => e.is_transient(),
            Self::Graph(e) => e.is_transient(),
            Self::MissingAttributes(_) | Self::UnknownApplication(_) => false,
        }
    }

    /// A short code for the provisioning log: `scim_<status>`, `scim_transport`, `invalid_user`,
    /// `missing_attributes`, `database` or `unknown_application`.
    pub fn code(&self) -> String {
        match self {
            Self::Scim(e) => scim_code(e),
            Self::MissingAttributes(_) => "missing_attributes".into(),
            Self::Store(_) => "database".into(),
            Self::UnknownApplication(_) => "unknown_application".into(),
            Self::Graph(_) => "graph".into(),
        }
    }

    /// True when AWS refused our credentials (401/403): the application needs an operator.
    pub fn is_auth(&self) -> bool {
        match self {
            Self::Scim(ScimError::RetryBudgetExhausted { last, .. }) => last.is_auth(),
            Self::Scim(e) => e.is_auth(),
            _ => false,
        }
    }

    /// How long AWS asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Scim(e) => e.retry_after(),
            Self::Graph(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// The ids a provisioning-log entry links to, for the steps taken on the way to a change (user
/// created or updated, group created), and where those entries wait within a reconciliation.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LogIds<'a> {
    pub cycle_id: Option<i64>,
    pub job_id: Option<i64>,
    pub event_id: Option<i64>,
    /// When set, entries wait here and are written in the transaction that records the change's
    /// outcome (one durable commit instead of one per step); else each is written at once.
    pub steps: Option<&'a PendingSteps>,
}

impl LogIds<'_> {
    /// Logs a step taken on the way to a change, linked to these ids.
    pub(super) async fn append(
        self,
        db: &deadpool_postgres::Object,
        subject: &crate::domain::Subject,
        action: provisioning_log::LogAction,
        status: provisioning_log::Status,
        error_code: Option<&str>,
        reason: &str,
    ) -> Result<(), ProvisionError> {
        let step = PendingStep {
            cycle_id: self.cycle_id,
            job_id: self.job_id,
            event_id: self.event_id,
            subject: subject.clone(),
            action,
            status,
            error_code: error_code.map(str::to_owned),
            reason: reason.to_owned(),
        };
        match self.steps {
            Some(steps) => steps.push(step),
            None => provisioning_log::append(db, &step.entry()).await?,
        }
        Ok(())
    }
}

/// Provisioning-log entries of steps taken during one reconciliation, not written yet.
#[derive(Debug, Default)]
pub(crate) struct PendingSteps(std::sync::Mutex<Vec<PendingStep>>);

impl PendingSteps {
    fn push(&self, step: PendingStep) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(step);
    }

    /// The entries waiting, oldest first; none are left.
    pub(super) fn take(&self) -> Vec<PendingStep> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One step's provisioning-log entry, owned until it is written.
#[derive(Debug)]
pub(crate) struct PendingStep {
    cycle_id: Option<i64>,
    job_id: Option<i64>,
    event_id: Option<i64>,
    subject: crate::domain::Subject,
    action: provisioning_log::LogAction,
    status: provisioning_log::Status,
    error_code: Option<String>,
    reason: String,
}

impl PendingStep {
    pub(super) fn entry(&self) -> provisioning_log::Entry<'_> {
        provisioning_log::Entry {
            cycle_id: self.cycle_id,
            job_id: self.job_id,
            event_id: self.event_id,
            grant_id: None,
            action: self.action,
            subject: &self.subject,
            status: self.status,
            error_code: self.error_code.as_deref(),
            reason: Some(&self.reason),
            elapsed_secs: 0.0,
        }
    }
}

/// One application as the provisioner sees it: its SCIM client and its attribute mapping.
pub struct Target {
    pub client: ScimClient,
    pub user_name_attribute: UserNameAttribute,
}

/// Applies membership changes through each application's SCIM client.
///
/// Every database step runs on the connection the caller holds (with the pairs' locks), so a
/// reconciliation never waits for a second connection from the pool.
pub struct Provisioner {
    targets: BTreeMap<String, Target>,
    /// Completes users whose event lacks what AWS requires (`[graph]` configured).
    graph: Option<GraphClient>,
}

impl Provisioner {
    pub fn new(targets: BTreeMap<String, Target>) -> Self {
        Self {
            targets,
            graph: None,
        }
    }

    /// Reads from Graph what an event lacks to create its user in AWS.
    pub fn with_graph(mut self, graph: GraphClient) -> Self {
        self.graph = Some(graph);
        self
    }

    /// The SCIM target of an application.
    pub fn target(&self, application: &str) -> Result<&Target, ProvisionError> {
        self.targets
            .get(application)
            .ok_or_else(|| ProvisionError::UnknownApplication(application.to_owned()))
    }
}

fn scim_code(error: &ScimError) -> String {
    match error {
        ScimError::Validation(_) => "invalid_user".into(),
        ScimError::RetryBudgetExhausted { last, .. } => scim_code(last),
        ScimError::Unanswered(crate::outbound::SendError::Timeout { .. }) => "scim_timeout".into(),
        other => other
            .status()
            .map_or_else(|| "scim_transport".into(), |s| format!("scim_{s}")),
    }
}
