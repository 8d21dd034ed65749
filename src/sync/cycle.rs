//! One sync cycle of one application (DESIGN.md §5): take the pending deferred jobs and the ended
//! activations up to the cutoff, decide each pair's net state, apply the changes grouped by AWS
//! group (≤ 100 members per PATCH, paced by the client's governor), and record every change.
//!
//! A crash at any point loses nothing: jobs stay pending until their change is recorded, and a
//! change repeated by the next cycle is a no-op in AWS.

use std::collections::BTreeMap;
use std::time::Instant;

use deadpool_postgres::{Object, Transaction};
use tokio_util::sync::CancellationToken;

use super::plan::{self, Step};
use super::CycleRunner;
use crate::dispatch::provision::ProvisionError;
use crate::domain::{Action, Subject};
use crate::store::cycles::{self, CompletedJob, CycleCounts, PendingPair, StartedCycle};
use crate::store::provisioning_log::{self, Status};
use crate::store::{memberships, StoreError};

/// Why a change did not happen, in a form that can be shared by all changes of a failed PATCH.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    /// False when the change was never sent (the cycle stopped first): it costs no attempt.
    pub attempted: bool,
    pub transient: bool,
    pub auth: bool,
    pub code: String,
    pub reason: String,
}

impl From<&ProvisionError> for Failure {
    fn from(e: &ProvisionError) -> Self {
        Self {
            attempted: true,
            // Refused credentials are the application's problem, not the change's: keep the
            // change for when they work again (the application is quarantined meanwhile).
            transient: e.is_transient() || e.is_auth(),
            auth: e.is_auth(),
            code: e.code(),
            reason: crate::error::error_chain(e),
        }
    }
}

/// How a cycle ended.
#[derive(Debug, Clone)]
pub struct CycleReport {
    pub id: i64,
    pub outcome: &'static str,
    pub counts: CycleCounts,
    /// Set when AWS refused the credentials: the cycle stopped early.
    pub auth_failure: Option<String>,
    pub duration_secs: f64,
}

impl CycleRunner {
    /// Runs one cycle of `application` on `db`, the connection that holds its lock, up to its
    /// outcome; the caller finishes it (`cycles::finish`) together with its quarantine verdict.
    pub(super) async fn run_cycle(
        &self,
        db: &mut Object,
        application: &str,
        shutdown: &CancellationToken,
    ) -> Result<CycleReport, StoreError> {
        let cycle = cycles::start(db, application, &self.owner).await?;
        let pairs = cycles::pending_pairs(db, application, cycle.cutoff).await?;
        let mut counts = CycleCounts {
            planned: i32::try_from(pairs.len()).unwrap_or(i32::MAX),
            ..CycleCounts::default()
        };
        cycles::progress(db, cycle.id, &counts).await?;
        tracing::info!(cycle.id = cycle.id, application = %application, changes = pairs.len(),
            initial = cycle.initial, "cycle started");

        // Skips first (no request), then the changes grouped by group: removals before additions,
        // so that access is revoked before more is granted.
        let mut buckets: BTreeMap<(bool, String), (Action, Vec<PendingPair>)> = BTreeMap::new();
        let mut skips = Vec::new();
        for pair in pairs {
            match plan::step(&pair, cycle.cutoff) {
                Step::Skip { present } => skips.push((pair, PairResult::Skipped { present })),
                Step::Apply(action) => buckets
                    .entry((action == Action::Add, pair.subject.group_id.clone()))
                    .or_insert_with(|| (action, Vec::new()))
                    .1
                    .push(pair),
            }
        }
        self.record(
            db,
            &cycle,
            skips.iter().map(|(p, r)| (p, r.clone())),
            &mut counts,
        )
        .await?;
        let mut auth_failure = None;
        let mut interrupted = false;
        for (action, pairs) in buckets.into_values() {
            if shutdown.is_cancelled() {
                // Stopping: the rest stays pending for the next cycle, which is due at once.
                interrupted = true;
                break;
            }
            if let Some(reason) = &auth_failure {
                // AWS refuses our credentials: every further request would too. Keep the jobs.
                let failure = Failure {
                    attempted: false,
                    transient: true,
                    auth: true,
                    code: "not_attempted".into(),
                    reason: format!("not attempted: {reason}"),
                };
                let failed = pairs.iter().map(|pair| {
                    let failure = failure.clone();
                    (pair, PairResult::Failed { action, failure })
                });
                self.record(db, &cycle, failed, &mut counts).await?;
                continue;
            }
            let started = Instant::now();
            let results = self.apply_bucket(action, &pairs).await;
            // PATCHes carry many members: each change gets its share of the time.
            let elapsed_secs = started.elapsed().as_secs_f64() / pairs.len().max(1) as f64;
            if auth_failure.is_none() {
                auth_failure = results
                    .iter()
                    .find_map(|r| r.as_ref().err().filter(|f| f.auth))
                    .map(|f| f.reason.clone());
            }
            let outcomes = pairs.iter().zip(results).map(|(pair, result)| {
                let result = match result {
                    Ok(()) => PairResult::Applied {
                        action,
                        elapsed_secs,
                    },
                    Err(failure) => PairResult::Failed { action, failure },
                };
                (pair, result)
            });
            self.record(db, &cycle, outcomes, &mut counts).await?;
            cycles::progress(db, cycle.id, &counts).await?;
        }

        let outcome = if interrupted {
            "interrupted"
        } else if auth_failure.is_some()
            || (counts.applied == 0 && counts.failed + counts.retrying > 0)
        {
            "failed"
        } else if counts.failed + counts.retrying > 0 {
            "partial"
        } else {
            "succeeded"
        };
        Ok(CycleReport {
            id: cycle.id,
            outcome,
            counts,
            auth_failure,
            duration_secs: 0.0,
        })
    }

    /// Applies one kind of change for several users of one group: the group is resolved once and
    /// the members go out in PATCHes of at most 100. When a PATCH fails for a reason that is not
    /// transient, each change is retried alone so that the failure lands on the right one.
    async fn apply_bucket(
        &self,
        action: Action,
        pairs: &[PendingPair],
    ) -> Vec<Result<(), Failure>> {
        let Some(first) = pairs.first() else {
            return Vec::new();
        };
        let create = action == Action::Add;
        let group = match self.provisioner.resolve_group(&first.subject, create).await {
            Ok(Some(group)) => group,
            // A group AWS has never seen has no members to remove.
            Ok(None) => return pairs.iter().map(|_| Ok(())).collect(),
            Err(e) if e.is_transient() => {
                let failure = Failure::from(&e);
                return pairs.iter().map(|_| Err(failure.clone())).collect();
            }
            Err(_) => return self.apply_one_by_one(action, pairs).await,
        };
        let mut results: Vec<Result<(), Failure>> = vec![Ok(()); pairs.len()];
        let mut members = Vec::new();
        for (i, pair) in pairs.iter().enumerate() {
            match self.provisioner.resolve_user(&pair.subject, create).await {
                Ok(Some(user)) => members.push((i, user)),
                // A user AWS has never seen is not a member: nothing to remove.
                Ok(None) => {}
                Err(e) => results[i] = Err(Failure::from(&e)),
            }
        }
        if members.is_empty() {
            return results;
        }
        let target = match self.provisioner.target(&first.subject.application) {
            Ok(target) => target,
            Err(e) => return pairs.iter().map(|_| Err(Failure::from(&e))).collect(),
        };
        let ids: Vec<&str> = members.iter().map(|(_, id)| id.as_str()).collect();
        let sent = match action {
            Action::Add => target.client.add_members(&group, &ids).await,
            Action::Remove => target.client.remove_members(&group, &ids).await,
        };
        match sent {
            Ok(()) => results,
            Err(e) => {
                let e = ProvisionError::from(e);
                if e.is_transient() || e.is_auth() {
                    let failure = Failure::from(&e);
                    for (i, _) in &members {
                        results[*i] = Err(failure.clone());
                    }
                    results
                } else {
                    let retried: Vec<PendingPair> =
                        members.iter().map(|(i, _)| pairs[*i].clone()).collect();
                    let alone = self.apply_one_by_one(action, &retried).await;
                    for ((i, _), result) in members.iter().zip(alone) {
                        results[*i] = result;
                    }
                    results
                }
            }
        }
    }

    async fn apply_one_by_one(
        &self,
        action: Action,
        pairs: &[PendingPair],
    ) -> Vec<Result<(), Failure>> {
        let mut results = Vec::with_capacity(pairs.len());
        for pair in pairs {
            let result = self.provisioner.apply(action, &pair.subject).await;
            results.push(result.map_err(|e| Failure::from(&e)));
        }
        results
    }

    /// Records the results of several pairs in one transaction (one durable commit per PATCH
    /// rather than per change); latency metrics follow the commit.
    async fn record<'p>(
        &self,
        db: &mut Object,
        cycle: &StartedCycle,
        results: impl Iterator<Item = (&'p PendingPair, PairResult)>,
        counts: &mut CycleCounts,
    ) -> Result<(), StoreError> {
        let tx = db.transaction().await?;
        let mut completed = Vec::new();
        for (pair, result) in results {
            let done = self.record_one(&tx, cycle, pair, result, counts).await?;
            completed.extend(done.into_iter().map(|job| (pair, job)));
        }
        tx.commit().await?;
        for (pair, job) in completed {
            self.metrics
                .provisioning_latency
                .with_label_values(&[&pair.subject.application, "deferred", &job.action])
                .observe(job.latency_secs);
        }
        Ok(())
    }

    /// One pair's jobs, confirmed membership and provisioning-log entry; returns the jobs done.
    async fn record_one(
        &self,
        tx: &Transaction<'_>,
        cycle: &StartedCycle,
        pair: &PendingPair,
        result: PairResult,
        counts: &mut CycleCounts,
    ) -> Result<Vec<CompletedJob>, StoreError> {
        let subject = &pair.subject;
        let mut completed = Vec::new();
        let entry = match &result {
            PairResult::Skipped { present } => {
                completed = cycles::settle_applied(tx, cycle.id, pair).await?;
                memberships::confirm(tx, &subject.application, pair.latest_event_id, *present)
                    .await?;
                counts.skipped += 1;
                let action = if *present {
                    Action::Add
                } else {
                    Action::Remove
                };
                let reason = "AWS already reflects this (confirmed earlier)";
                entry(
                    cycle.id,
                    action,
                    subject,
                    Status::Skipped,
                    None,
                    Some(reason),
                    0.0,
                )
            }
            PairResult::Applied {
                action,
                elapsed_secs,
            } => {
                completed = cycles::settle_applied(tx, cycle.id, pair).await?;
                let present = *action == Action::Add;
                memberships::confirm(tx, &subject.application, pair.latest_event_id, present)
                    .await?;
                counts.applied += 1;
                let reason = (!present).then(|| plan::removal_reason(pair, cycle.cutoff));
                entry(
                    cycle.id,
                    *action,
                    subject,
                    Status::Succeeded,
                    None,
                    reason,
                    *elapsed_secs,
                )
            }
            PairResult::Failed { action, failure } => {
                let max = self.settings.max_attempts;
                let failed = cycles::settle_failed(
                    tx,
                    cycle.id,
                    pair,
                    &failure.reason,
                    failure.transient,
                    failure.attempted,
                    max,
                )
                .await?;
                let status = if failed > 0 || !failure.transient {
                    counts.failed += 1;
                    tracing::error!(cycle.id = cycle.id, application = %subject.application,
                        error.message = %failure.reason, "change failed");
                    Status::Failed
                } else {
                    counts.retrying += 1;
                    tracing::warn!(cycle.id = cycle.id, application = %subject.application,
                        error.message = %failure.reason, "change failed; the next cycle retries it");
                    Status::Retrying
                };
                entry(cycle.id, *action, subject, status, Some(failure), None, 0.0)
            }
        };
        provisioning_log::append(tx, &entry).await?;
        Ok(completed)
    }
}

/// How one pair ended in a cycle.
#[derive(Clone)]
enum PairResult {
    /// No request: AWS already reflects the desired state.
    Skipped {
        present: bool,
    },
    Applied {
        action: Action,
        elapsed_secs: f64,
    },
    Failed {
        action: Action,
        failure: Failure,
    },
}

/// The provisioning-log entry of a change.
fn entry<'a>(
    cycle_id: i64,
    action: Action,
    subject: &'a Subject,
    status: Status,
    failure: Option<&'a Failure>,
    reason: Option<&'a str>,
    elapsed_secs: f64,
) -> provisioning_log::Entry<'a> {
    provisioning_log::Entry {
        cycle_id: Some(cycle_id),
        job_id: None,
        action,
        subject,
        status,
        error_code: failure.map(|f| f.code.as_str()),
        reason: failure.map(|f| f.reason.as_str()).or(reason),
        elapsed_secs,
    }
}
