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

use crate::store::scim_ids::{self, CachedPair, ObjectKind};
use crate::store::{provisioning_log, StoreError};

pub use decide::{decide, Step};
pub use reconcile::{
    Failure, JobSettled, Listings, Options, Origin, Outcome, PairRequest, Reconciled,
};

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
/// created or updated, group created), and the journal those entries wait in.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LogIds<'a> {
    pub cycle_id: Option<i64>,
    pub job_id: Option<i64>,
    pub event_id: Option<i64>,
    /// When set, log entries and newly learnt AWS ids wait here and are written in the
    /// transaction that records the change's outcome; else each is written at once.
    pub journal: Option<&'a Journal>,
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
        match self.journal {
            Some(journal) => journal.with(|j| j.steps.push(step)),
            None => provisioning_log::append(db, &step.entry()).await?,
        }
        Ok(())
    }
}

/// What one reconciliation learnt before its outcome is recorded: log entries of the steps it
/// took and AWS ids it resolved. Written in the transaction that records the outcome, so the
/// immediate lane pays one durable commit for all of it. Losing them in a crash costs nothing
/// but a look-up: AWS answers a repeated creation with 409 and the id is found again.
#[derive(Debug, Default)]
pub(crate) struct Journal(std::sync::Mutex<JournalEntries>);

#[derive(Debug, Default)]
pub(super) struct JournalEntries {
    pub steps: Vec<PendingStep>,
    /// By application, kind and Entra id: a cycle may learn thousands.
    pub ids: std::collections::HashMap<(String, ObjectKind, String), PendingId>,
    /// What the cache held for the reconciliation's users and groups when it started.
    pub read: Option<Prefetched>,
}

/// The cached ids of a reconciliation's users and groups, read in one query when it starts, so
/// that a hundred pairs do not cost a hundred look-ups.
#[derive(Debug, Default)]
pub(super) struct Prefetched {
    application: String,
    users: std::collections::HashSet<String>,
    groups: std::collections::HashSet<String>,
    ids: scim_ids::CachedIds,
}

impl Journal {
    fn with<T>(&self, f: impl FnOnce(&mut JournalEntries) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Everything waiting (steps oldest first); nothing is left.
    pub(super) fn take(&self) -> JournalEntries {
        self.with(std::mem::take)
    }

    /// Remembers an AWS id (and a user's attributes) until the outcome is recorded.
    pub(super) fn remember(&self, id: PendingId) {
        self.with(|j| {
            j.ids.insert(id.key(), id);
        });
    }

    /// Forgets what was learnt of the subject's user and group (AWS no longer knows one).
    pub(super) fn forget(&self, subject: &crate::domain::Subject) {
        self.with(|j| {
            j.ids.remove(&user_key(subject));
            j.ids.remove(&group_key(subject));
            if let Some(read) = j.read.as_mut() {
                read.ids.users.remove(&subject.principal_id);
                read.ids.groups.remove(&subject.group_id);
            }
        });
    }

    /// Keeps what the cache held for the `users` and `groups` of `application`.
    pub(super) fn prefetched(
        &self,
        application: &str,
        users: &[&str],
        groups: &[&str],
        ids: scim_ids::CachedIds,
    ) {
        let read = Prefetched {
            application: application.to_owned(),
            users: users.iter().map(|&u| u.to_owned()).collect(),
            groups: groups.iter().map(|&g| g.to_owned()).collect(),
            ids,
        };
        self.with(|j| j.read = Some(read));
    }

    /// What the cache held for the subject when the reconciliation started, if it was read then.
    pub(super) fn read(&self, subject: &crate::domain::Subject) -> Option<CachedPair> {
        self.with(|j| {
            let read = j.read.as_ref()?;
            let covered = read.application == subject.application
                && read.users.contains(&subject.principal_id)
                && read.groups.contains(&subject.group_id);
            covered.then(|| read.ids.pair(&subject.principal_id, &subject.group_id))
        })
    }

    /// Overlays what was learnt on the ids read from the cache.
    pub(super) fn overlay(&self, subject: &crate::domain::Subject, pair: &mut CachedPair) {
        self.with(|j| {
            if let Some(user) = j.ids.get(&user_key(subject)) {
                pair.user = Some(user.aws_id.clone());
                pair.user_attributes = user.attributes.clone();
            }
            if let Some(group) = j.ids.get(&group_key(subject)) {
                pair.group = Some(group.aws_id.clone());
            }
        });
    }
}

fn user_key(subject: &crate::domain::Subject) -> (String, ObjectKind, String) {
    let application = subject.application.clone();
    (application, ObjectKind::User, subject.principal_id.clone())
}

fn group_key(subject: &crate::domain::Subject) -> (String, ObjectKind, String) {
    let application = subject.application.clone();
    (application, ObjectKind::Group, subject.group_id.clone())
}

/// An AWS id not written to the cache yet.
#[derive(Debug, Clone)]
pub(super) struct PendingId {
    pub application: String,
    pub kind: ObjectKind,
    pub entra_id: String,
    pub aws_id: String,
    pub attributes: Option<serde_json::Value>,
}

impl PendingId {
    fn key(&self) -> (String, ObjectKind, String) {
        (self.application.clone(), self.kind, self.entra_id.clone())
    }

    /// As the cache stores it.
    pub(super) fn new_id(&self) -> scim_ids::NewId<'_> {
        scim_ids::NewId {
            application: &self.application,
            kind: self.kind,
            entra_id: &self.entra_id,
            aws_id: &self.aws_id,
            attributes: self.attributes.as_ref(),
        }
    }
}

/// One step's provisioning-log entry, owned until it is written.
#[derive(Debug)]
pub(super) struct PendingStep {
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
