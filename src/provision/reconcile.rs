//! One reconciliation of some pairs of one application: lock the pairs, read what they should be
//! and what pimbridge knows of AWS, optionally look in AWS, decide, write ahead, send, record,
//! unlock. Changes go out grouped per AWS group, at most 100 members per PATCH (the client chunks).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Object;

use super::decide::{self, decide, Step};
use super::resolve::CachedUser;
use super::{Journal, LogIds, PendingId, PendingStep, ProvisionError, Provisioner, Target};
use crate::domain::{Action, Subject};
use crate::scim::MAX_MEMBER_CHANGES_PER_PATCH;
use crate::store::aws_memberships::{self, AwsState, Pair, PairView, Provenance, Settlement};
use crate::store::jobs::JobEnd;
use crate::store::outcomes::{self, Outcomes};
use crate::store::provisioning_log::{self, Status};
use crate::store::{scim_ids, StoreError};
use crate::telemetry::error_chain;

/// Who asked, for the provisioning log and for what the record must say before a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    /// An immediate-lane job, held under `lease_owner`'s lease: its claim already marked the pair
    /// `unknown`; it only ever adds. The job is settled with the outcome when it needs no retry.
    /// A claim not yet known to be on disk (`claim_on_disk` false: the intake handed the job over
    /// at its commit) is flushed before any membership change is sent.
    Job {
        job_id: i64,
        lease_owner: &'a str,
        claim_on_disk: bool,
    },
    /// A sync cycle.
    Cycle { cycle_id: i64 },
    /// An operator, through the admin API.
    Operator,
}

/// One pair to reconcile, with the user and group attributes known for it.
#[derive(Debug, Clone)]
pub struct PairRequest {
    pub subject: Subject,
    /// The event that asked for it, for the log.
    pub event_id: Option<i64>,
    pub job_id: Option<i64>,
}

impl<'a> LogIds<'a> {
    /// The ids of a request reconciled for `origin`, its steps waiting in `steps`.
    fn of(origin: Origin<'_>, request: &PairRequest, journal: &'a Journal) -> Self {
        Self {
            cycle_id: match origin {
                Origin::Cycle { cycle_id } => Some(cycle_id),
                _ => None,
            },
            job_id: request.job_id,
            event_id: request.event_id,
            journal: Some(journal),
        }
    }
}

/// How a reconciliation behaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Look in AWS first for the pairs pimbridge owns whose step depends on it (drift check,
    /// `decide::worth_checking`), rather than trusting the record.
    pub verify: bool,
    /// Hold every removal, with this reason (a cycle over its removal threshold).
    pub hold_removals: Option<String>,
    /// Whether a transient failure will be tried again (the log says `retrying`, else `failed`).
    pub retry_transient: bool,
    /// Group listings of the drift check, shared by a cycle's reconciliations so that a group is
    /// listed once per cycle rather than once per reconciliation.
    pub listings: Option<Arc<Listings>>,
}

/// The members AWS listed for groups (AWS ids), taken during one cycle. A cycle reconciles each
/// pair once, so a listing still tells the truth for the pairs it has not reached; what changes
/// meanwhile (by hand, or an immediate add) is found by the next cycle, and an add or removal
/// sent on a stale listing is one AWS treats as a no-op.
#[derive(Debug, Default)]
pub struct Listings(std::sync::Mutex<BTreeMap<String, Arc<BTreeSet<String>>>>);

impl Listings {
    fn get(&self, group: &str) -> Option<Arc<BTreeSet<String>>> {
        let listed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        listed.get(group).cloned()
    }

    fn put(&self, group: String, members: BTreeSet<String>) -> Arc<BTreeSet<String>> {
        let members = Arc::new(members);
        let mut listed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        listed.insert(group, members.clone());
        members
    }
}

/// Why a change did not happen, shareable by all changes of a failed PATCH.
#[derive(Debug, Clone)]
pub struct Failure {
    /// False when nothing was sent (the request could not be built, e.g. missing attributes).
    pub attempted: bool,
    pub transient: bool,
    pub auth: bool,
    pub code: String,
    pub reason: String,
    pub retry_after: Option<Duration>,
}

impl From<&ProvisionError> for Failure {
    fn from(e: &ProvisionError) -> Self {
        Self {
            attempted: matches!(e, ProvisionError::Scim(_)),
            transient: e.is_transient(),
            auth: e.is_auth(),
            code: e.code(),
            reason: error_chain(e),
            retry_after: e.retry_after(),
        }
    }
}

/// How one pair ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Added,
    Removed,
    /// Nothing was sent, for this reason (AWS already matches, or pimbridge does not own it).
    Unchanged(&'static str),
    /// An immediate add whose pair no longer has an active grant (a deactivation or its end came
    /// first): not sent.
    NotWanted,
    /// A removal held back, with the reason.
    Held(String),
    Failed(Failure),
}

/// What became of the job that asked (`Origin::Job`), settled in the transaction that recorded
/// the outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JobSettled {
    /// Done: seconds from the event's receipt to now by the database clock, or `None` when the
    /// lease was lost meanwhile (another replica owns the job).
    Completed { latency: Option<f64> },
    /// Not sent: the pair has no active grant any more.
    Superseded,
}

/// The outcome of each request, in order, and the drift found in AWS.
#[derive(Debug, Clone, Default)]
pub struct Reconciled {
    pub outcomes: Vec<Outcome>,
    /// Whether each pair should be a member (an active grant), as decided under its lock.
    pub desired: Vec<bool>,
    /// Owned pairs pimbridge knew AWS held, found missing (someone removed them).
    pub drift_missing: u32,
    /// Owned pairs pimbridge knew AWS did not hold, found there (someone added them back).
    pub drift_lingering: u32,
    /// The asking job, when settled with the outcome; `None` leaves it to the caller (a failure,
    /// whose retry policy is the caller's).
    pub job: Option<JobSettled>,
}

/// From how many owned pairs of one group a drift check lists the group's members once instead of
/// asking about each pair (a listing costs a request per 100 members).
const LIST_MEMBERS_FROM: usize = 10;

/// Why nothing is sent when AWS does not know the user or the group.
const UNKNOWN_TO_AWS: &str = "AWS does not know the user or the group: there is no membership";
/// Why a first add is not sent: the member was already there.
const FOUND_STANDING: &str =
    "AWS already held the membership before pimbridge's first add: recorded as standing";

/// The AWS ids of a pair, and whether AWS created the user just now (it is in no group yet).
struct AwsIds {
    group: String,
    user: String,
    fresh_user: bool,
}

/// A pair on its way: what to send and the AWS ids.
struct Planned {
    index: usize,
    group: String,
    user: String,
}

impl Provisioner {
    /// Makes AWS reflect the grants of `requests` (pairs of `application`), recording each
    /// outcome, the new record of AWS and a provisioning-log entry. Holds the pairs' locks on `db`
    /// throughout. Store errors end it early; the record then stays `unknown` where a request may
    /// have gone out.
    pub async fn reconcile(
        &self,
        db: &mut Object,
        application: &str,
        origin: Origin<'_>,
        requests: &[PairRequest],
        options: &Options,
    ) -> Result<Reconciled, StoreError> {
        let pairs: Vec<Pair> = requests
            .iter()
            .map(|r| Pair {
                principal_id: r.subject.principal_id.clone(),
                group_id: r.subject.group_id.clone(),
            })
            .collect();
        // Taken by the first step of `reconcile_locked`, together with its reads.
        let lock = aws_memberships::lock_statement(&*db).await?;
        let locks = PairLocks {
            application,
            pairs: &pairs,
            generic_plans: matches!(origin, Origin::Job { .. }),
            released: AtomicBool::new(false),
        };
        let result = self
            .reconcile_locked(db, &lock, &locks, origin, requests, options)
            .await;
        locks.release(db).await;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn reconcile_locked(
        &self,
        db: &mut Object,
        lock: &tokio_postgres::Statement,
        locks: &PairLocks<'_>,
        origin: Origin<'_>,
        requests: &[PairRequest],
        options: &Options,
    ) -> Result<Reconciled, StoreError> {
        let (application, pairs) = (locks.application, locks.pairs);
        let started = Instant::now();
        let journal = Journal::default();
        // For look-ups and repeats not linked to one request: what they learn waits in the journal too.
        let unlinked = LogIds {
            journal: Some(&journal),
            ..LogIds::default()
        };
        let users: Vec<&str> = pairs.iter().map(|p| p.principal_id.as_str()).collect();
        let groups: Vec<&str> = pairs.iter().map(|p| p.group_id.as_str()).collect();
        // The locks and two reads, sent together: the reads run once the locks are granted (the
        // lock's statement is prepared, so it leaves first). A job's statements, always of one
        // pair, run on plans made once per connection, from here until the locks are released.
        let ((), (), mut views, cached) = futures_util::try_join!(
            async {
                if !locks.generic_plans {
                    return Ok(());
                }
                crate::store::plan_once(&*db).await
            },
            aws_memberships::lock_with(&*db, lock, application, pairs),
            aws_memberships::view(&*db, application, pairs),
            scim_ids::get_many(&*db, application, &users, &groups),
        )?;
        journal.prefetched(application, &users, &groups, cached);
        let mut report = Reconciled::default();
        let target = match self.target(application) {
            Ok(target) => target,
            Err(e) => {
                let failure = Failure::from(&e);
                report.outcomes = vec![Outcome::Failed(failure); requests.len()];
                report.desired = views.iter().map(|v| v.desired).collect();
                return Ok(report);
            }
        };
        let mut verified = vec![false; requests.len()];
        if options.verify {
            let local = Listings::default();
            let listings = options.listings.as_deref().unwrap_or(&local);
            self.verify(
                db,
                target,
                unlinked,
                listings,
                requests,
                &mut views,
                &mut verified,
                &mut report,
            )
            .await;
        }

        let mut outcomes: Vec<Option<Outcome>> = vec![None; requests.len()];
        let mut adds = Vec::new();
        let mut removals = Vec::new();
        let mut refresh = Vec::new();
        for (i, view) in views.iter().enumerate() {
            match decide(view) {
                Step::Skip(_) | Step::Remove
                    if !view.desired && matches!(origin, Origin::Job { .. }) =>
                {
                    outcomes[i] = Some(Outcome::NotWanted);
                }
                Step::Skip(reason) => {
                    // An event for a membership AWS already holds may still bring new attributes.
                    if view.desired && requests[i].event_id.is_some() {
                        refresh.push(i);
                    }
                    outcomes[i] = Some(Outcome::Unchanged(reason));
                }
                Step::Add { first } => adds.push((i, first)),
                Step::Remove => match &options.hold_removals {
                    Some(reason) => outcomes[i] = Some(Outcome::Held(reason.clone())),
                    None => removals.push(i),
                },
            }
        }

        for i in refresh {
            let log = LogIds::of(origin, &requests[i], &journal);
            if let Err(e) = self
                .refresh_user(db, target, &requests[i].subject, log)
                .await
            {
                tracing::warn!(error.message = %error_chain(&e), "cannot keep the user's attributes current");
            }
        }

        // Entra may still make the user a member for another reason, or Graph may lag behind.
        let mut confirmed_removals = Vec::with_capacity(removals.len());
        for i in removals {
            match self.entra_keeps(&requests[i].subject).await {
                Some(reason) => outcomes[i] = Some(Outcome::Held(reason.to_owned())),
                None => confirmed_removals.push(i),
            }
        }
        let removals = confirmed_removals;

        // Resolve the AWS ids; a first add asks AWS whether the member is already there.
        let mut owned_new = vec![false; requests.len()];
        let mut to_add = Vec::new();
        let mut first_adds = Vec::new();
        let mut groups: BTreeMap<String, Option<String>> = BTreeMap::new();
        for (i, first) in adds {
            let subject = &requests[i].subject;
            let log = LogIds::of(origin, &requests[i], &journal);
            match self.ids(db, target, subject, true, &mut groups, log).await {
                Ok(Some(ids)) => {
                    let planned = Planned {
                        index: i,
                        group: ids.group,
                        user: ids.user,
                    };
                    if first && ids.fresh_user {
                        // A user AWS created just now is in no group: nothing to look up.
                        owned_new[i] = true;
                        to_add.push(planned);
                    } else if first {
                        first_adds.push(planned);
                    } else {
                        to_add.push(planned);
                    }
                }
                Ok(None) => outcomes[i] = Some(Outcome::Unchanged(UNKNOWN_TO_AWS)),
                Err(e) => outcomes[i] = Some(failed(&e)),
            }
        }
        for (planned, standing) in self.members_already(target, first_adds).await {
            let i = planned.index;
            match standing {
                Ok(true) => {
                    views[i].provenance = Some(Provenance::Standing);
                    views[i].aws = AwsState::Present;
                    verified[i] = true;
                    outcomes[i] = Some(Outcome::Unchanged(FOUND_STANDING));
                }
                Ok(false) => {
                    owned_new[i] = true;
                    to_add.push(planned);
                }
                Err(failure) => outcomes[i] = Some(Outcome::Failed(failure)),
            }
        }
        let mut to_remove = Vec::new();
        for i in removals {
            match self
                .ids(
                    db,
                    target,
                    &requests[i].subject,
                    false,
                    &mut groups,
                    unlinked,
                )
                .await
            {
                Ok(Some(ids)) => to_remove.push(Planned {
                    index: i,
                    group: ids.group,
                    user: ids.user,
                }),
                Ok(None) => {
                    views[i].aws = AwsState::Absent;
                    verified[i] = true;
                    outcomes[i] = Some(Outcome::Unchanged(UNKNOWN_TO_AWS));
                }
                Err(e) => outcomes[i] = Some(failed(&e)),
            }
        }

        // Write ahead: the record says `unknown` (and who owns a first add) before anything is
        // sent. A job's claim has already written `unknown`; only a first add needs more.
        //
        // A job the intake handed over at its commit may not be on disk yet: if the server
        // crashed now, its event would be lost, and a membership added for it would look like
        // someone else's doing and never be removed. So no membership change goes out before a
        // synchronous commit of ours (the write-ahead, or a flush), which flushes the log up to
        // and past the intake's. What went out before it creates or updates users and groups,
        // which grants nothing (and is what Entra's own provisioning would do for them).
        let sending: Vec<usize> = to_add.iter().chain(&to_remove).map(|p| p.index).collect();
        let needs_write_ahead = match origin {
            Origin::Job { .. } => sending.iter().any(|&i| owned_new[i]),
            _ => !sending.is_empty(),
        };
        if needs_write_ahead {
            let in_flight: Vec<Pair> = sending.iter().map(|&i| pairs[i].clone()).collect();
            let owned: Vec<bool> = sending.iter().map(|&i| owned_new[i]).collect();
            // Committed synchronously: it also puts a handed-over claim on disk.
            aws_memberships::mark_in_flight(&*db, application, &in_flight, &owned).await?;
        } else if !sending.is_empty()
            && matches!(
                origin,
                Origin::Job {
                    claim_on_disk: false,
                    ..
                }
            )
        {
            crate::store::events::flush(&*db).await?;
        }

        // Removals first, so that access is revoked before more is granted.
        for (i, result) in self
            .send(db, target, unlinked, Action::Remove, &to_remove, requests)
            .await
        {
            outcomes[i] = Some(match result {
                Ok(()) => Outcome::Removed,
                Err(failure) => Outcome::Failed(failure),
            });
        }
        for (i, result) in self
            .send(db, target, unlinked, Action::Add, &to_add, requests)
            .await
        {
            outcomes[i] = Some(match result {
                Ok(()) => Outcome::Added,
                Err(failure) => Outcome::Failed(failure),
            });
        }

        report.outcomes = outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::Unchanged(decide::ALREADY_PRESENT)))
            .collect();
        report.desired = views.iter().map(|v| v.desired).collect();
        let elapsed = started.elapsed().as_secs_f64() / requests.len().max(1) as f64;
        report.job = self
            .record(
                db, locks, origin, requests, &views, &verified, &owned_new, &report, &journal,
                options, elapsed,
            )
            .await?;
        Ok(report)
    }

    /// Looks in AWS for each owned pair and counts where AWS differs from the grants.
    #[allow(clippy::too_many_arguments)]
    async fn verify(
        &self,
        db: &Object,
        target: &Target,
        unlinked: LogIds<'_>,
        listings: &Listings,
        requests: &[PairRequest],
        views: &mut [PairView],
        verified: &mut [bool],
        report: &mut Reconciled,
    ) {
        let mut groups = BTreeMap::new();
        // Several pairs of one group to check are checked with one listing of its members (a page
        // per 100) rather than one request each.
        let mut checked_per_group: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, view) in views.iter().enumerate() {
            if decide::worth_checking(view) {
                *checked_per_group
                    .entry(requests[i].subject.group_id.as_str())
                    .or_default() += 1;
            }
        }
        for (i, view) in views.iter_mut().enumerate() {
            if !decide::worth_checking(view) {
                continue;
            }
            let subject = &requests[i].subject;
            let list = checked_per_group
                .get(subject.group_id.as_str())
                .is_some_and(|&n| n >= LIST_MEMBERS_FROM);
            let actual = match self
                .ids(db, target, subject, false, &mut groups, unlinked)
                .await
            {
                Ok(Some(AwsIds { group, user, .. })) if list || listings.get(&group).is_some() => {
                    match listings.get(&group) {
                        Some(members) => Ok(members.contains(&user)),
                        None => match target.client.list_group_members(&group).await {
                            Ok(members) => {
                                let members = members.into_iter().filter_map(|u| u.id).collect();
                                Ok(listings.put(group, members).contains(&user))
                            }
                            Err(e) => Err(e),
                        },
                    }
                }
                Ok(Some(AwsIds { group, user, .. })) => {
                    target.client.is_member(&group, &user).await
                }
                Ok(None) => Ok(false),
                Err(ProvisionError::Scim(e)) => Err(e),
                Err(_) => continue,
            };
            match actual {
                Ok(present) => {
                    // Drift is AWS differing from what pimbridge knows it left there, not from
                    // the grants: a grant that ended is still in AWS until this cycle removes it,
                    // and an unknown record is a request of pimbridge's whose outcome was lost.
                    let drifted = match view.aws {
                        AwsState::Present => !present,
                        AwsState::Absent => present,
                        AwsState::Unknown => false,
                    };
                    if drifted {
                        if present {
                            report.drift_lingering += 1;
                        } else {
                            report.drift_missing += 1;
                        }
                        tracing::warn!(application = %subject.application,
                            principal_id = %subject.principal_id, group_id = %subject.group_id,
                            in_aws = present, "drift: AWS differs from what pimbridge left there; repairing");
                    }
                    view.aws = AwsState::known(present);
                    verified[i] = true;
                }
                // The record stays as it was (an unknown one is sent anyway). AWS is failing:
                // checking the rest would only wait out more retries.
                Err(e) => {
                    tracing::warn!(error.message = %error_chain(&e),
                        "cannot check memberships in AWS; the rest are not checked this time");
                    break;
                }
            }
        }
    }

    /// Whether AWS already holds each first add: one membership check for a lone pair, one
    /// listing of the group's members when several pairs of one group are first added together.
    async fn members_already(
        &self,
        target: &Target,
        planned: Vec<Planned>,
    ) -> Vec<(Planned, Result<bool, Failure>)> {
        let mut by_group: BTreeMap<String, Vec<Planned>> = BTreeMap::new();
        for p in planned {
            by_group.entry(p.group.clone()).or_default().push(p);
        }
        let mut answers = Vec::new();
        for (group, pairs) in by_group {
            if let [_] = pairs.as_slice() {
                for p in pairs {
                    let answer = target.client.is_member(&group, &p.user).await;
                    answers.push((
                        p,
                        answer.map_err(|e| Failure::from(&ProvisionError::from(e))),
                    ));
                }
                continue;
            }
            match target.client.list_group_members(&group).await {
                Ok(members) => {
                    let ids: BTreeSet<String> = members.into_iter().filter_map(|u| u.id).collect();
                    for p in pairs {
                        let held = ids.contains(&p.user);
                        answers.push((p, Ok(held)));
                    }
                }
                Err(e) => {
                    let failure = Failure::from(&ProvisionError::from(e));
                    answers.extend(pairs.into_iter().map(|p| (p, Err(failure.clone()))));
                }
            }
        }
        answers
    }

    /// The AWS ids of a subject's group and user; `None` when AWS has neither to remove from.
    async fn ids(
        &self,
        db: &Object,
        target: &Target,
        subject: &Subject,
        create: bool,
        groups: &mut BTreeMap<String, Option<String>>,
        log: LogIds<'_>,
    ) -> Result<Option<AwsIds>, ProvisionError> {
        let cached = self.cached(db, subject, log.journal).await?;
        let cached_user = CachedUser::from(&cached);
        let group = match groups.get(&subject.group_id) {
            Some(known) => known.clone(),
            None => {
                let group = self
                    .group_id(db, target, subject, cached.group, create, log)
                    .await?;
                groups.insert(subject.group_id.clone(), group.clone());
                group
            }
        };
        let Some(group) = group else {
            return Ok(None);
        };
        let user = self
            .user_id(db, target, subject, cached_user, create, log)
            .await?;
        Ok(user.map(|(user, fresh_user)| AwsIds {
            group,
            user,
            fresh_user,
        }))
    }

    /// Sends one kind of change, grouped per AWS group. When a PATCH fails for a reason that is
    /// not transient, each change is sent alone so the failure lands on the right one; a cached
    /// id AWS no longer knows is resolved again once.
    async fn send(
        &self,
        db: &Object,
        target: &Target,
        unlinked: LogIds<'_>,
        action: Action,
        planned: &[Planned],
        requests: &[PairRequest],
    ) -> Vec<(usize, Result<(), Failure>)> {
        let mut by_group: BTreeMap<&str, Vec<&Planned>> = BTreeMap::new();
        for p in planned {
            by_group.entry(p.group.as_str()).or_default().push(p);
        }
        let mut results = Vec::with_capacity(planned.len());
        // One PATCH per chunk, so that a failure lands on the chunk that met it.
        let mut chunks: Vec<(&str, &[&Planned])> = Vec::new();
        for (group, members) in &by_group {
            for chunk in members.chunks(MAX_MEMBER_CHANGES_PER_PATCH) {
                chunks.push((group, chunk));
            }
        }
        for (group, members) in chunks {
            let ids: Vec<&str> = members.iter().map(|p| p.user.as_str()).collect();
            match patch(target, action, group, &ids).await {
                Ok(()) => results.extend(members.iter().map(|p| (p.index, Ok(())))),
                Err(e)
                    if e.is_transient()
                        || e.is_auth()
                        || members.len() == 1 && !e.is_not_found() =>
                {
                    let failure = Failure::from(&ProvisionError::from(e));
                    results.extend(members.iter().map(|p| (p.index, Err(failure.clone()))));
                }
                Err(_) => {
                    for p in members {
                        let result = self
                            .send_alone(db, target, unlinked, action, p, &requests[p.index].subject)
                            .await;
                        results.push((p.index, result.map_err(|e| Failure::from(&e))));
                    }
                }
            }
        }
        results
    }

    async fn send_alone(
        &self,
        db: &Object,
        target: &Target,
        unlinked: LogIds<'_>,
        action: Action,
        planned: &Planned,
        subject: &Subject,
    ) -> Result<(), ProvisionError> {
        match patch(target, action, &planned.group, &[planned.user.as_str()]).await {
            Err(e) if e.is_not_found() => {
                tracing::info!("cached AWS id is stale; resolving again");
                self.forget(db, subject, unlinked.journal).await?;
                let create = action == Action::Add;
                let mut groups = BTreeMap::new();
                match self
                    .ids(db, target, subject, create, &mut groups, unlinked)
                    .await?
                {
                    Some(ids) => Ok(patch(target, action, &ids.group, &[ids.user.as_str()]).await?),
                    // Nothing left to remove.
                    None => Ok(()),
                }
            }
            other => Ok(other?),
        }
    }

    /// Records the outcomes in one transaction: the steps taken on the way, the record of AWS, a
    /// log entry per pair and, for a job whose outcome needs no retry, the job's end.
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        db: &mut Object,
        locks: &PairLocks<'_>,
        origin: Origin<'_>,
        requests: &[PairRequest],
        views: &[PairView],
        verified: &[bool],
        owned_new: &[bool],
        report: &Reconciled,
        journal: &Journal,
        options: &Options,
        elapsed_secs: f64,
    ) -> Result<Option<JobSettled>, StoreError> {
        let application = locks.application;
        let cycle_id = match origin {
            Origin::Cycle { cycle_id } => Some(cycle_id),
            _ => None,
        };
        let origin_is_cycle = cycle_id.is_some();
        let learnt = journal.take();
        let ids: Vec<scim_ids::NewId<'_>> = learnt.ids.values().map(PendingId::new_id).collect();
        // The steps taken on the way come first in the log, then one entry per pair.
        let mut entries: Vec<provisioning_log::Entry<'_>> =
            learnt.steps.iter().map(PendingStep::entry).collect();
        let mut settlements = Vec::with_capacity(requests.len());
        for (i, outcome) in report.outcomes.iter().enumerate() {
            let request = &requests[i];
            let view = &views[i];
            let pair = &view.pair;
            let owner = owned_new[i].then_some(Provenance::Owned);
            let (action, status, failure, reason): (
                Action,
                Status,
                Option<&Failure>,
                Option<&str>,
            ) = match outcome {
                Outcome::Added => {
                    settlements.push(Settlement {
                        pair,
                        state: AwsState::Present,
                        provenance: owner,
                        verified: true,
                    });
                    (Action::Add, Status::Succeeded, None, None)
                }
                Outcome::Removed => {
                    settlements.push(Settlement {
                        pair,
                        state: AwsState::Absent,
                        provenance: None,
                        verified: true,
                    });
                    let why = if view.deactivated {
                        "deactivated"
                    } else {
                        "the activation has ended"
                    };
                    (Action::Remove, Status::Succeeded, None, Some(why))
                }
                Outcome::Unchanged(reason) => {
                    if verified[i] {
                        settlements.push(Settlement {
                            pair,
                            state: view.aws,
                            provenance: view.provenance,
                            verified: true,
                        });
                    }
                    // A cycle's check of a pair that needed nothing is not a step worth a log
                    // entry; anything asked for by an event or an operator is.
                    if origin_is_cycle && request.job_id.is_none() {
                        continue;
                    }
                    (action_for(view), Status::Skipped, None, Some(*reason))
                }
                Outcome::NotWanted => (
                    Action::Add,
                    Status::Superseded,
                    None,
                    Some("no active grant any more (deactivated or ended): not sent"),
                ),
                Outcome::Held(reason) => {
                    (Action::Remove, Status::Held, None, Some(reason.as_str()))
                }
                Outcome::Failed(failure) => {
                    let status = if failure.transient && options.retry_transient {
                        Status::Retrying
                    } else {
                        Status::Failed
                    };
                    (action_for(view), status, Some(failure), None)
                }
            };
            entries.push(provisioning_log::Entry {
                cycle_id,
                job_id: request.job_id,
                event_id: request.event_id,
                grant_id: view.grant_id,
                action: action.into(),
                subject: &request.subject,
                status,
                error_code: failure.map(|f| f.code.as_str()),
                reason: failure.map(|f| f.reason.as_str()).or(reason),
                elapsed_secs: if matches!(outcome, Outcome::Added | Outcome::Removed) {
                    elapsed_secs
                } else {
                    0.0
                },
            });
        }
        // One statement however many pairs: a cycle's hundred cost what one does. The pairs'
        // locks are released right behind it: it is its own transaction, committed before the
        // unlock runs, and the reconciliation waits for no round trip after it.
        let own_job = match origin {
            Origin::Job {
                job_id,
                lease_owner,
                ..
            } => Some((job_id, lease_owner)),
            _ => None,
        };
        // A job's reconciliation has its one pair's outcome.
        let job_end = match report.outcomes.as_slice() {
            [outcome] if own_job.is_some() => job_end(outcome),
            _ => None,
        };
        let outcomes = Outcomes {
            application,
            ids: &ids,
            entries: &entries,
            settlements: &settlements,
            own_job,
            job_end,
            note: NOT_WANTED,
        };
        let client: &Object = db;
        let statement = outcomes::statement(client).await?;
        let (latency, ()) = futures_util::join!(
            outcomes::record(client, &statement, &outcomes),
            locks.release(db)
        );
        let latency = latency?;
        Ok(job_end.map(|end| match end {
            JobEnd::Done => JobSettled::Completed { latency },
            JobEnd::Superseded => JobSettled::Superseded,
        }))
    }
}

/// The pairs' locks a reconciliation holds on its connection: released right behind the `COMMIT`
/// that records the outcome, or when it ends without one.
struct PairLocks<'a> {
    application: &'a str,
    pairs: &'a [Pair],
    /// Whether the connection plans statements once while the locks are held (an immediate job:
    /// planning its statements for each job cost more Postgres time than running them, and a
    /// connection runs each statement too rarely for Postgres to settle on one plan by itself).
    /// A cycle's batches keep plans made for their own size.
    generic_plans: bool,
    released: AtomicBool,
}

impl PairLocks<'_> {
    /// Releases the locks, once, and puts back the connection's default planning. Sent on the
    /// first poll.
    async fn release(&self, db: &Object) {
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        let planning = async {
            if !self.generic_plans {
                return Ok(());
            }
            crate::store::plan_per_run(db).await
        };
        let unlock = aws_memberships::unlock(db, self.application, self.pairs);
        let (unlocked, planning) = futures_util::join!(unlock, planning);
        if let Err(e) = unlocked.and(planning) {
            tracing::warn!(error.message = %e, "cannot release pair locks");
        }
    }
}

/// How an immediate job ends with its pair's outcome; `None` for a failure (the caller decides
/// whether and when to try again).
fn job_end(outcome: &Outcome) -> Option<JobEnd> {
    match outcome {
        Outcome::Added | Outcome::Unchanged(_) => Some(JobEnd::Done),
        Outcome::NotWanted | Outcome::Removed | Outcome::Held(_) => Some(JobEnd::Superseded),
        Outcome::Failed(_) => None,
    }
}

/// Why an immediate job was not sent.
const NOT_WANTED: &str = "no active grant any more (deactivated or ended)";

/// The change a pair's desired state calls for (for log entries of steps that sent nothing).
fn action_for(view: &PairView) -> Action {
    if view.desired {
        Action::Add
    } else {
        Action::Remove
    }
}

fn failed(e: &ProvisionError) -> Outcome {
    Outcome::Failed(Failure::from(e))
}

async fn patch(
    target: &Target,
    action: Action,
    group: &str,
    users: &[&str],
) -> Result<(), crate::scim::ScimError> {
    match action {
        Action::Add => target.client.add_members(group, users).await,
        Action::Remove => target.client.remove_members(group, users).await,
    }
}
