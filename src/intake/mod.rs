//! Intake: from validated events to durable rows (docs/architecture.md).
//!
//! [`Intake::record`] writes the events of one request and one job per application their group is
//! assigned to, deciding each activation's lane, all in one transaction; the caller answers 2xx only
//! after it returns. A redelivered event (same source and id) changes nothing and takes no slot.

pub mod audit;
pub mod batch;
pub mod counting;
pub mod event;
pub mod eventgrid;
pub mod graph;
pub mod validate;

use std::collections::{BTreeMap, HashSet};

use deadpool_postgres::Pool;

use crate::admission::{self, AdmissionRule};
use crate::domain::{EventKind, EventSource, Lane};
use crate::handoff::{Handoff, Reserved};
use crate::store::{events as store, grants, StoreError};
use event::NewEvent;

/// Times a transaction that hit a deadlock or serialisation failure is tried again.
const CONFLICT_RETRIES: usize = 3;

/// Requests of up to this many events lock the pairs and grants they touch; larger ones lock their
/// applications instead (a lock per key would fill Postgres's shared lock table, sized for about
/// 64 locks per connection).
const KEY_LOCKS_UP_TO: usize = 16;

/// Which applications an Entra group feeds, and each application's admission rule.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// Entra group id → application names.
    pub routes: BTreeMap<String, Vec<String>>,
    /// Application name → admission rule.
    pub rules: BTreeMap<String, AdmissionRule>,
    /// Application name → the longest a grant lasts.
    pub max_grant: BTreeMap<String, std::time::Duration>,
}

impl Routing {
    /// The routing described by the configuration.
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            routes: settings.group_routes(),
            rules: settings
                .applications
                .iter()
                .map(|(name, app)| {
                    (
                        name.clone(),
                        AdmissionRule {
                            limit: app.activation_limit,
                            window: app.activation_window,
                        },
                    )
                })
                .collect(),
            max_grant: settings
                .applications
                .iter()
                .map(|(name, app)| (name.clone(), app.max_grant_duration))
                .collect(),
        }
    }

    fn applications_for(&self, group_id: &str) -> &[String] {
        self.routes.get(group_id).map_or(&[], Vec::as_slice)
    }
}

/// What happened to one event of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// Stored with jobs: (application, lane) per job.
    Accepted {
        event_row: i64,
        jobs: Vec<(String, Lane)>,
    },
    /// Stored, but its group is assigned to no application.
    Unrouted { event_row: i64 },
    /// Already stored earlier; nothing changed.
    Duplicate,
}

/// The result of one request: an outcome per event, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeSummary {
    pub outcomes: Vec<(String, EventKind, EventOutcome)>,
}

impl IntakeSummary {
    /// Newly stored events (routed or not).
    pub fn accepted(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|(_, _, o)| !matches!(o, EventOutcome::Duplicate))
            .count()
    }

    /// Redelivered events.
    pub fn duplicates(&self) -> usize {
        self.outcomes.len() - self.accepted()
    }
}

/// The intake use case.
#[derive(Clone)]
pub struct Intake {
    pool: Pool,
    routing: std::sync::Arc<Routing>,
    /// This replica's dispatcher, when it runs one.
    handoff: Option<std::sync::Arc<Handoff>>,
}

impl Intake {
    pub fn new(pool: Pool, routing: Routing) -> Self {
        Self {
            pool,
            routing: std::sync::Arc::new(routing),
            handoff: None,
        }
    }

    /// Claims the jobs it admits to the immediate lane for this replica's dispatcher, while that
    /// has free slots, and hands them over at its commit.
    pub fn with_handoff(mut self, handoff: std::sync::Arc<Handoff>) -> Self {
        self.handoff = Some(handoff);
        self
    }

    /// Whether `group_id` is assigned to at least one application.
    pub fn is_routed(&self, group_id: &str) -> bool {
        !self.routing.applications_for(group_id).is_empty()
    }

    /// Whether `group_id` is assigned to `application`.
    pub fn routes_to(&self, group_id: &str, application: &str) -> bool {
        self.routing
            .applications_for(group_id)
            .iter()
            .any(|a| a == application)
    }

    /// Every Entra group assigned to an application.
    pub fn routed_groups(&self) -> impl Iterator<Item = &str> {
        self.routing.routes.keys().map(String::as_str)
    }

    /// Stores `events` from `source` with their jobs, in one transaction.
    pub async fn record(
        &self,
        source: EventSource,
        events: &[NewEvent],
    ) -> Result<IntakeSummary, StoreError> {
        let mut attempt = 0;
        loop {
            match self.try_record(source, events).await {
                Err(e) if e.is_retryable_conflict() && attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    tracing::debug!(attempt, "intake transaction conflicted; retrying");
                }
                other => return other,
            }
        }
    }

    async fn try_record(
        &self,
        source: EventSource,
        events: &[NewEvent],
    ) -> Result<IntakeSummary, StoreError> {
        // Insert in id order so that two requests sharing ids take row locks in the same order.
        // The sort is stable: of one id sent twice, the first is stored and the second is its
        // duplicate, as if it had come later.
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.sort_by(|a, b| events[*a].id.cmp(&events[*b].id));
        let mut outcomes: Vec<Option<EventOutcome>> = vec![None; events.len()];
        let mut unique: Vec<usize> = Vec::with_capacity(order.len());
        for index in order {
            match unique.last() {
                Some(&last) if events[last].id == events[index].id => {
                    outcomes[index] = Some(EventOutcome::Duplicate);
                }
                _ => unique.push(index),
            }
        }

        let client = self.pool.get().await?;
        // The locks taken below are released at commit, before the flush.
        let tx = store::IntakeTransaction::begin(client, unique.len() <= KEY_LOCKS_UP_TO).await?;
        let (stored, candidates) = match self
            .before_admission(tx.client(), source, events, &unique, &mut outcomes)
            .await
        {
            Ok(done) => done,
            Err(e) => {
                tx.rollback().await;
                return Err(e);
            }
        };
        // Last: admission, whose lock is held only while Postgres runs it and the commit.
        let Admissions {
            admitted,
            claimed,
            reserved,
        } = self.admit_and_commit(&tx, candidates).await?;
        let client = tx.into_client();

        for &(index, event_row) in &stored {
            let applications = self.routing.applications_for(&events[index].group_id);
            outcomes[index] = Some(if applications.is_empty() {
                EventOutcome::Unrouted { event_row }
            } else {
                let lanes = applications
                    .iter()
                    .map(|application| {
                        let lane = if admitted.contains(&(application.as_str(), event_row)) {
                            Lane::Immediate
                        } else {
                            Lane::Deferred
                        };
                        (application.clone(), lane)
                    })
                    .collect();
                EventOutcome::Accepted {
                    event_row,
                    jobs: lanes,
                }
            });
        }

        // Handed over at once: the dispatcher's reads and any user it creates overlap the flush,
        // and it flushes on its own before it changes a membership (`crate::handoff`).
        if let Some(handoff) = &self.handoff {
            if !claimed.is_empty() {
                handoff.hand(reserved, self.claimed_jobs(events, &stored, claimed));
            }
        }
        // Durable before anyone is told: also for a request whose events were all redeliveries,
        // as the first delivery's transaction may still be on its way to disk.
        store::flush(&client).await?;
        Ok(IntakeSummary {
            outcomes: events
                .iter()
                .zip(outcomes)
                .filter_map(|(event, outcome)| Some((event.id.clone(), event.kind, outcome?)))
                .collect(),
        })
    }

    /// The part of an intake transaction before admission: the request's events and jobs, the
    /// locks, the grants and, beside them, which applications' windows may have room. Returns
    /// (index in the request, row id) of the newly stored events, in id order (redeliveries are
    /// marked in `outcomes`), and the activations to admit per application with room.
    async fn before_admission<'a>(
        &'a self,
        tx: &deadpool_postgres::Client,
        source: EventSource,
        events: &[NewEvent],
        unique: &[usize],
        outcomes: &mut [Option<EventOutcome>],
    ) -> Result<(Vec<(usize, i64)>, Vec<admission::Asked<'a>>), StoreError> {
        // Rows first, then the locks, in one round trip: an intake that holds the locks then
        // never waits for another intake's rows (only for a redelivery of the same event does one
        // wait, for the other's commit, before it takes any), and a batch's inserts run beside the
        // locked part of another. An activation and a deactivation of one pair (or two changes of
        // one grant) never race: grants are recorded under these locks. N replicas admit as one
        // would (admission takes its own lock). Every statement covers the whole request: a batch
        // costs the round trips of one event (docs/performance.md).
        let to_insert: Vec<(&NewEvent, &[String])> = unique
            .iter()
            .map(|&i| {
                (
                    &events[i],
                    self.routing.applications_for(&events[i].group_id),
                )
            })
            .collect();
        let routed: Vec<&str> = to_insert
            .iter()
            .flat_map(|(_, applications)| applications.iter().map(String::as_str))
            .collect();
        // The keys of every event sent, as which are redeliveries is known only once inserted.
        let keys = (unique.len() <= KEY_LOCKS_UP_TO).then(|| self.keys(source, events, unique));
        let locks = (!routed.is_empty()).then(|| store::IntakeLocks {
            names: &routed,
            keys: keys.as_deref(),
        });
        // Every job is stored deferred; admission then moves the first activations of each
        // application to the immediate lane (it comes last: its lock is held until commit).
        let rows = store::insert_and_lock(tx, source, &to_insert, locks).await?;
        // (index in the request, row id) of the newly stored events, in id order.
        let mut stored: Vec<(usize, i64)> = Vec::with_capacity(unique.len());
        for (&index, row) in unique.iter().zip(rows) {
            match row {
                Some(row) => stored.push((index, row)),
                None => outcomes[index] = Some(EventOutcome::Duplicate),
            }
        }

        // The windows are counted without a lock (a full one needs none), beside the grants.
        let candidates = self.candidates(events, &stored);
        let (_, rooms) = futures_util::try_join!(
            self.record_grants(tx, source, events, &stored),
            futures_util::future::try_join_all(
                candidates
                    .iter()
                    .map(|c| admission::may_have_room(tx, c.application, c.rule))
            ),
        )?;
        let with_room = candidates
            .into_iter()
            .zip(rooms)
            .filter_map(|(candidate, room)| room.then_some(candidate))
            .collect();
        Ok((stored, with_room))
    }

    /// The new activations (`stored`, in id order) to admit, per application (no claim yet).
    fn candidates<'a>(
        &'a self,
        events: &[NewEvent],
        stored: &[(usize, i64)],
    ) -> Vec<admission::Asked<'a>> {
        let mut activations: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for &(index, event_row) in stored {
            if events[index].kind == EventKind::Activation {
                for application in self.routing.applications_for(&events[index].group_id) {
                    activations
                        .entry(application.as_str())
                        .or_default()
                        .push(event_row);
                }
            }
        }
        activations
            .into_iter()
            .filter_map(|(application, rows)| {
                let (name, rule) = self.routing.rules.get_key_value(application)?;
                Some(admission::Asked {
                    application: name,
                    rule: *rule,
                    events: rows,
                    claim: None,
                })
            })
            .collect()
    }

    /// Admission of `asked`, then the commit (`admission::admit_and_commit`). The first
    /// admitted jobs, as many as this replica's dispatcher has free slots, are claimed for it.
    async fn admit_and_commit<'a>(
        &'a self,
        tx: &store::IntakeTransaction,
        mut asked: Vec<admission::Asked<'a>>,
    ) -> Result<Admissions<'a>, StoreError> {
        let mut reserved = Vec::with_capacity(asked.len());
        for a in &mut asked {
            let slots = match &self.handoff {
                Some(handoff) => handoff.reserve(a.events.len().min(a.rule.limit as usize)),
                None => Reserved::default(),
            };
            a.claim = self
                .handoff
                .as_deref()
                .filter(|_| !slots.is_empty())
                .map(|h| admission::Claim {
                    owner: h.owner(),
                    lease_secs: h.lease_secs(),
                    slots: slots.len(),
                });
            reserved.push(slots);
        }
        let admissions = admission::admit_and_commit(tx, &asked).await?;
        let mut result = Admissions::default();
        for ((asked, mut slots), these) in asked.iter().zip(reserved).zip(admissions) {
            slots.truncate(these.iter().filter(|a| a.claimed).count());
            result.reserved.append(slots);
            for job in these {
                result.admitted.insert((asked.application, job.event_id));
                if job.claimed {
                    result.claimed.push((asked.application, job));
                }
            }
        }
        Ok(result)
    }

    /// What the dispatcher needs of the jobs claimed at admission.
    fn claimed_jobs(
        &self,
        events: &[NewEvent],
        stored: &[(usize, i64)],
        claimed: Vec<(&str, admission::Admitted)>,
    ) -> Vec<crate::store::jobs::ClaimedJob> {
        claimed
            .into_iter()
            .filter_map(|(application, job)| {
                let &(index, _) = stored.iter().find(|(_, row)| *row == job.event_id)?;
                let event = &events[index];
                Some(crate::store::jobs::ClaimedJob {
                    id: job.job_id,
                    action: event.kind.action(),
                    attempts: 1,
                    event_id: job.event_id,
                    source_event_id: event.id.clone(),
                    subject: crate::domain::Subject {
                        application: application.to_owned(),
                        principal_id: event.principal_id.clone(),
                        group_id: event.group_id.clone(),
                        user_attributes: event.user.clone(),
                        group_attributes: event.group.clone(),
                    },
                    claim_on_disk: false,
                })
            })
            .collect()
    }

    /// The pairs and grants the events at `indexes` may touch in each application they are routed
    /// to (see [`store::IntakeLock::Keys`]).
    fn keys(&self, source: EventSource, events: &[NewEvent], indexes: &[usize]) -> Vec<String> {
        let family = grants::source_family(source.as_str());
        let mut keys = Vec::new();
        for &i in indexes {
            let event = &events[i];
            for application in self.routing.applications_for(&event.group_id) {
                keys.push(store::pair_key(
                    application,
                    &event.group_id,
                    &event.principal_id,
                ));
                if event.kind == EventKind::Activation {
                    let key = event.grant_id.as_deref().unwrap_or(&event.id);
                    keys.push(store::grant_key(application, family, key));
                }
            }
        }
        keys
    }

    /// Starts, extends or ends the grants the newly stored events name, per application, with
    /// the same outcome as recording them one at a time in id order: the changes that touch
    /// nothing another one touches in one statement per kind, the others one at a time
    /// (see [`batch`]).
    async fn record_grants(
        &self,
        tx: &deadpool_postgres::Client,
        source: EventSource,
        events: &[NewEvent],
        stored: &[(usize, i64)],
    ) -> Result<(), StoreError> {
        let family = grants::source_family(source.as_str());
        let now = time::OffsetDateTime::now_utc();
        // Per application, its events in id order.
        let mut per_application: BTreeMap<&str, Vec<(&NewEvent, i64)>> = BTreeMap::new();
        for &(index, row) in stored {
            let event = &events[index];
            for application in self.routing.applications_for(&event.group_id) {
                per_application
                    .entry(application.as_str())
                    .or_default()
                    .push((event, row));
            }
        }
        for (application, changes) in per_application {
            let max = self
                .routing
                .max_grant
                .get(application)
                .copied()
                .unwrap_or(DEFAULT_MAX_GRANT);
            let activation = |event, row| activation_of(application, family, event, row, max, now);
            let deactivation = |event, row| deactivation_of(application, family, event, row);

            let shapes: Vec<batch::Change<'_>> = changes
                .iter()
                .map(|(event, _)| batch::Change {
                    activation: event.kind == EventKind::Activation,
                    pair: (&event.principal_id, &event.group_id),
                    key: event.grant_id.as_deref().unwrap_or(&event.id),
                })
                .collect();
            let dependent = if changes.len() > 1 {
                let keys: Vec<&str> = shapes
                    .iter()
                    .filter(|c| c.activation)
                    .map(|c| c.key)
                    .collect();
                let existing = grants::pairs_of(tx, application, family, &keys).await?;
                batch::dependent(&shapes, &existing)
            } else {
                vec![false; changes.len()]
            };

            let (mut together_on, mut together_off) = (Vec::new(), Vec::new());
            for (&(event, row), _) in changes.iter().zip(&dependent).filter(|(_, d)| !**d) {
                match event.kind {
                    EventKind::Activation => together_on.push(activation(event, row)),
                    EventKind::Deactivation => together_off.push(deactivation(event, row)),
                }
            }
            grants::record_activations(tx, &together_on, &[]).await?;
            grants::record_deactivations(tx, &together_off).await?;

            // One at a time, in id order. Every event of the request is stored already; an
            // activation must not see the deactivations of its pair that come after it.
            let one_by_one: Vec<(&NewEvent, i64)> = changes
                .iter()
                .zip(&dependent)
                .filter(|(_, d)| **d)
                .map(|(change, _)| *change)
                .collect();
            for (k, &(event, row)) in one_by_one.iter().enumerate() {
                match event.kind {
                    EventKind::Activation => {
                        let later: Vec<i64> = one_by_one[k + 1..]
                            .iter()
                            .filter(|(e, _)| {
                                e.kind == EventKind::Deactivation
                                    && e.principal_id == event.principal_id
                                    && e.group_id == event.group_id
                            })
                            .map(|(_, row)| *row)
                            .collect();
                        grants::record_activations(tx, &[activation(event, row)], &later).await?;
                    }
                    EventKind::Deactivation => {
                        grants::record_deactivations(tx, &[deactivation(event, row)]).await?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// What admission decided for one request.
#[derive(Default)]
struct Admissions<'a> {
    /// (application, event row) of the jobs admitted to the immediate lane.
    admitted: HashSet<(&'a str, i64)>,
    /// The admitted jobs claimed for this replica's dispatcher, with their application.
    claimed: Vec<(&'a str, admission::Admitted)>,
    /// The dispatcher slots held for them.
    reserved: Reserved,
}

/// The grant change of an activation in one application.
fn activation_of<'a>(
    application: &'a str,
    family: &'a str,
    event: &'a NewEvent,
    event_row: i64,
    max: std::time::Duration,
    now: time::OffsetDateTime,
) -> grants::Activation<'a> {
    let (ends_at, note) = grant_end(event, max, now);
    grants::Activation {
        application,
        source: family,
        grant_key: event.grant_id.as_deref().unwrap_or(&event.id),
        principal_id: &event.principal_id,
        group_id: &event.group_id,
        occurred_at: event.occurred_at,
        ends_at,
        event_id: event_row,
        note,
    }
}

/// The grant change of a deactivation in one application.
fn deactivation_of<'a>(
    application: &'a str,
    family: &'a str,
    event: &'a NewEvent,
    event_row: i64,
) -> grants::Deactivation<'a> {
    grants::Deactivation {
        application,
        source: family,
        grant_key: event.grant_id.as_deref(),
        principal_id: &event.principal_id,
        group_id: &event.group_id,
        occurred_at: event.occurred_at,
        event_id: event_row,
    }
}

/// The longest grant when an application sets no bound: PIM's longest activation.
const DEFAULT_MAX_GRANT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Why a grant ends earlier than its event asked.
const CLAMPED_NOTE: &str = "endsAt was beyond max_grant_duration from now; the grant ends then";
/// Why a grant without `endsAt` ends at all.
const NO_END_NOTE: &str = "no endsAt: the grant ends max_grant_duration after it started";

/// When an activation's grant ends: its `endsAt`, or `max` after it started, and never more than
/// `max` from `now` (so a grant dated far ahead cannot outlive the bound). With a note when the
/// end is not the one the event asked for.
pub fn grant_end(
    event: &NewEvent,
    max: std::time::Duration,
    now: time::OffsetDateTime,
) -> (time::OffsetDateTime, Option<&'static str>) {
    let bound = now + max;
    match event.ends_at {
        Some(ends) if ends > bound => (bound, Some(CLAMPED_NOTE)),
        Some(ends) => (ends, None),
        None => ((event.occurred_at + max).min(bound), Some(NO_END_NOTE)),
    }
}
