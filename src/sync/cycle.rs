//! One sync cycle of one application (docs/correctness.md): take the pending deferred jobs, the
//! pairs with an active grant and the owned pairs AWS may still hold, and reconcile them in AWS
//! group by group (up to 1,000 pairs at a time, ≤ 100 per PATCH, paced by the client's governor) through the one way into AWS,
//! [`Provisioner::reconcile`], checking AWS first for the pairs pimbridge owns (drift repair).
//!
//! A crash at any point loses nothing: jobs stay pending until their pair is reconciled, the
//! record of AWS says `unknown` where a request may have gone out, and the next cycle sends again.

use deadpool_postgres::Object;
use tokio_util::sync::CancellationToken;

use super::CycleRunner;
use crate::domain::Action;
use crate::provision::{Listings, Options, Origin, Outcome, PairRequest};
use crate::store::cycles::{self, CycleCounts, StartedCycle, WorkPair};
use crate::store::StoreError;
use crate::store::{aws_memberships, removal_holds};

/// Pairs per reconciliation: ten PATCHes' worth (AWS takes at most 100 changes per PATCH; the
/// reconciliation sends them in chunks of 100). A reconciliation commits three times whatever
/// its size (ownership written ahead, the outcomes, the jobs), so ten PATCHes share those commits:
/// an unpaced cycle ran 1.7x as many changes a second as with one PATCH per reconciliation
/// (docs/performance.md). It holds one advisory lock per pair meanwhile, a thousand out of
/// Postgres's shared lock table (docs/operations.md).
const PAIRS_PER_BATCH: usize = 1000;

/// Pairs of the plan read at a time: what a cycle holds in memory however large its backlog.
const PLAN_PAGE: i64 = 1000;

/// How often a running cycle's counts are saved for operators.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How a cycle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CycleOutcome {
    Succeeded,
    /// Some changes failed.
    Partial,
    Failed,
    /// Stopped before the end (shutdown); the next cycle is due at once.
    Interrupted,
    /// Removals held back: more than `max_removals_per_cycle` were due.
    Held,
}

impl CycleOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Partial => "partial",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
            Self::Held => "held",
        }
    }
}

/// How a cycle ended.
#[derive(Debug, Clone)]
pub struct CycleReport {
    pub id: i64,
    pub outcome: CycleOutcome,
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
        let plan = cycles::plan(db, application, cycle.cutoff).await?;
        let mut counts = CycleCounts {
            // Changes asked for by events; checks that turn into a change are added as they do.
            planned: i32::try_from(plan.asked).unwrap_or(i32::MAX),
            ..CycleCounts::default()
        };
        cycles::progress(db, cycle.id, &counts).await?;
        let mut saved = std::time::Instant::now();
        let hold_removals = self.removal_threshold(db, application, cycle.id).await?;
        tracing::info!(cycle.id = cycle.id, application = %application, pairs = plan.pairs,
            initial = cycle.initial, "cycle started");

        let mut auth_failure = None;
        let mut interrupted = false;
        // One listing per group for the whole cycle (the drift check's).
        let listings = std::sync::Arc::new(Listings::default());
        // The plan is read a page at a time, ordered by group: each batch is one group's pairs,
        // one PATCH per kind.
        let mut after: Option<(String, String)> = None;
        'pages: loop {
            let from = after.as_ref().map(|(g, p)| (g.as_str(), p.as_str()));
            let page = cycles::plan_page(db, application, from, PLAN_PAGE).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some((
                last.subject.group_id.clone(),
                last.subject.principal_id.clone(),
            ));
            for batch in batches(&page) {
                if shutdown.is_cancelled() {
                    // Stopping: the rest stays pending for the next cycle, which is due at once.
                    interrupted = true;
                    break 'pages;
                }
                if auth_failure.is_some() {
                    // AWS refuses our credentials: every further request would too. Keep the jobs.
                    counts.retrying += i32::try_from(batch.len()).unwrap_or(i32::MAX);
                    continue;
                }
                let requests: Vec<PairRequest> = batch
                    .iter()
                    .map(|pair| PairRequest {
                        subject: pair.subject.clone(),
                        event_id: pair.event_id,
                        job_id: pair.job_id,
                    })
                    .collect();
                let options = Options {
                    verify: true,
                    hold_removals: hold_removals.clone(),
                    retry_transient: true,
                    listings: Some(listings.clone()),
                };
                let origin = Origin::Cycle { cycle_id: cycle.id };
                let report = self
                    .provisioner
                    .reconcile(db, application, origin, &requests, &options)
                    .await?;
                for (kind, found) in [
                    ("missing", report.drift_missing),
                    ("lingering", report.drift_lingering),
                ] {
                    if found > 0 {
                        self.metrics
                            .drift
                            .with_label_values(&[application, kind])
                            .inc_by(u64::from(found));
                    }
                }
                auth_failure = report.outcomes.iter().find_map(|o| match o {
                    Outcome::Failed(f) if f.auth => Some(f.reason.clone()),
                    _ => None,
                });
                self.settle(
                    db,
                    &cycle,
                    batch,
                    &report.outcomes,
                    &report.desired,
                    &mut counts,
                )
                .await?;
                // Saved for operators at most once a second: a commit per batch would cost an
                // unpaced cycle a tenth of its time. `finish` saves the final counts.
                if saved.elapsed() >= PROGRESS_EVERY {
                    cycles::progress(db, cycle.id, &counts).await?;
                    saved = std::time::Instant::now();
                }
            }
            if page.len() < PLAN_PAGE as usize {
                break;
            }
        }

        let outcome = if interrupted {
            CycleOutcome::Interrupted
        } else if hold_removals.is_some() && auth_failure.is_none() {
            CycleOutcome::Held
        } else if auth_failure.is_some()
            || (counts.applied == 0 && counts.failed + counts.retrying > 0)
        {
            CycleOutcome::Failed
        } else if counts.failed + counts.retrying > 0 {
            CycleOutcome::Partial
        } else {
            CycleOutcome::Succeeded
        };
        Ok(CycleReport {
            id: cycle.id,
            outcome,
            counts,
            auth_failure,
            duration_secs: 0.0,
        })
    }

    /// The deletion threshold (Entra's accidental-deletions prevention): when more removals are
    /// due than the application's `max_removals_per_cycle` and than an operator confirmed, the
    /// reason every removal of this cycle is held for; `None` when the cycle may remove. Grants
    /// ending one by one stay below the threshold and are never held. A confirmation is used up
    /// by the cycle it lets through.
    async fn removal_threshold(
        &self,
        db: &Object,
        application: &str,
        cycle_id: i64,
    ) -> Result<Option<String>, StoreError> {
        let limit = i64::from(
            self.max_removals
                .get(application)
                .copied()
                .unwrap_or(u32::MAX),
        );
        let due = aws_memberships::removals_due(db, application).await?;
        removal_holds::record_due(db, cycle_id, due).await?;
        if due <= limit {
            return Ok(None);
        }
        let confirmed = removal_holds::confirmed(db, application).await?;
        if due <= confirmed {
            removal_holds::consume(db, application).await?;
            tracing::warn!(cycle.id = cycle_id, application = %application, removals = due,
                limit, "removals above the threshold, confirmed by an operator: removing");
            return Ok(None);
        }
        tracing::error!(cycle.id = cycle_id, application = %application, removals = due, limit,
            "more removals due than max_removals_per_cycle: none are made until an operator confirms");
        Ok(Some(format!(
            "{due} removals were due, more than max_removals_per_cycle ({limit}): held until an operator confirms (POST /admin/applications/{application}/removals/confirm) or the limit is raised"
        )))
    }

    /// Settles the jobs of a batch in one transaction (one durable commit per PATCH rather than
    /// per change); latency metrics follow the commit.
    async fn settle(
        &self,
        db: &mut Object,
        cycle: &StartedCycle,
        batch: &[WorkPair],
        outcomes: &[Outcome],
        desired: &[bool],
        counts: &mut CycleCounts,
    ) -> Result<(), StoreError> {
        let tx = db.transaction().await?;
        // Pairs whose jobs end now: written together after the loop.
        let mut applied: Vec<(&[i64], bool)> = Vec::new();
        for ((pair, outcome), &member) in batch.iter().zip(outcomes).zip(desired) {
            let checked_only = pair.job_ids.is_empty();
            if checked_only {
                if matches!(outcome, Outcome::Unchanged(_)) {
                    continue;
                }
                // A check found something to do (drift, an ended grant): it is a change too.
                counts.planned += 1;
            }
            match outcome {
                Outcome::Added | Outcome::Removed => {
                    counts.applied += 1;
                    applied.push((&pair.job_ids, member));
                }
                Outcome::Unchanged(_) | Outcome::NotWanted => {
                    counts.skipped += 1;
                    applied.push((&pair.job_ids, member));
                }
                // A held removal keeps its jobs: the next cycle asks again (Graph may have
                // caught up, or an operator confirmed). Not a failure, so it does not count as one.
                Outcome::Held(_) => counts.skipped += 1,
                Outcome::Failed(failure) => {
                    let max = self.settings.max_attempts;
                    // Refused credentials are the application's problem, not the change's: keep
                    // the change for when they work again (the application is quarantined).
                    let transient = failure.transient || failure.auth;
                    let failed = cycles::settle_failed(
                        &tx,
                        cycle.id,
                        &pair.job_ids,
                        &failure.reason,
                        transient,
                        failure.attempted,
                        max,
                    )
                    .await?;
                    if failed > 0 || !transient {
                        counts.failed += 1;
                        tracing::error!(cycle.id = cycle.id, application = %cycle.application,
                            error.message = %failure.reason, "change failed");
                    } else {
                        counts.retrying += 1;
                        tracing::warn!(cycle.id = cycle.id, application = %cycle.application,
                            error.message = %failure.reason, "change failed; the next cycle retries it");
                    }
                }
            }
        }
        let completed = cycles::settle_applied(&tx, cycle.id, &applied).await?;
        tx.commit().await?;
        for job in completed {
            let action = if job.action == Action::Add.as_str() {
                Action::Add
            } else {
                Action::Remove
            };
            self.metrics
                .provisioning_latency
                .with_label_values(&[&cycle.application, "deferred", action.as_str()])
                .observe(job.latency_secs);
        }
        Ok(())
    }
}

/// Splits the work (ordered by group) into batches of one group, at most [`PAIRS_PER_BATCH`] each.
fn batches(work: &[WorkPair]) -> Vec<&[WorkPair]> {
    let mut batches = Vec::new();
    let mut start = 0;
    for i in 1..=work.len() {
        let group_ends =
            i == work.len() || work[i].subject.group_id != work[start].subject.group_id;
        if group_ends || i - start == PAIRS_PER_BATCH {
            if i > start {
                batches.push(&work[start..i]);
            }
            start = i;
        }
    }
    batches
}
