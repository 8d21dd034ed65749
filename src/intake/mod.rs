//! Intake: from validated events to durable rows (docs/architecture.md).
//!
//! [`Intake::record`] writes the events of one request and one job per application their group is
//! assigned to, deciding each activation's lane, all in one transaction; the caller answers 2xx only
//! after it returns. A redelivered event (same source and id) changes nothing and takes no slot.

pub mod audit;
pub mod counting;
pub mod event;
pub mod eventgrid;
pub mod graph;
pub mod validate;

use std::collections::BTreeMap;

use deadpool_postgres::Pool;

use crate::admission::{self, AdmissionRule};
use crate::domain::{EventKind, EventSource, Lane};
use crate::store::{events as store, grants, StoreError};
use event::NewEvent;

/// Times a transaction that hit a deadlock or serialisation failure is tried again.
const CONFLICT_RETRIES: usize = 3;

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
}

impl Intake {
    pub fn new(pool: Pool, routing: Routing) -> Self {
        Self {
            pool,
            routing: std::sync::Arc::new(routing),
        }
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
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.sort_by(|a, b| events[*a].id.cmp(&events[*b].id));

        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;

        // Admission and grants are serialised per application: an activation and a deactivation
        // of one pair never race, and N replicas admit as one would.
        let routed: Vec<&str> = events
            .iter()
            .flat_map(|e| self.routing.applications_for(&e.group_id))
            .map(String::as_str)
            .collect();
        if !routed.is_empty() {
            store::lock_applications(&tx, &routed).await?;
        }

        let mut outcomes = vec![None; events.len()];
        let mut any_immediate = false;
        for index in order {
            let event = &events[index];
            let applications = self.routing.applications_for(&event.group_id);
            let outcome = match store::insert_event(&tx, source, event, !applications.is_empty())
                .await?
            {
                None => EventOutcome::Duplicate,
                Some(event_row) if applications.is_empty() => EventOutcome::Unrouted { event_row },
                Some(event_row) => {
                    let mut jobs = Vec::with_capacity(applications.len());
                    for application in applications {
                        let decision = match (event.kind, self.routing.rules.get(application)) {
                            (EventKind::Activation, Some(rule)) => {
                                admission::decide(&tx, application, *rule).await?
                            }
                            _ => admission::Decision {
                                lane: Lane::Deferred,
                                admitted_at: None,
                            },
                        };
                        store::insert_job(
                            &tx,
                            event_row,
                            application,
                            event.kind.action(),
                            decision.lane,
                            decision.admitted_at,
                        )
                        .await?;
                        self.record_grant(&tx, source, event, event_row, application)
                            .await?;
                        any_immediate |= decision.lane == Lane::Immediate;
                        jobs.push((application.clone(), decision.lane));
                    }
                    EventOutcome::Accepted { event_row, jobs }
                }
            };
            outcomes[index] = Some((event.id.clone(), event.kind, outcome));
        }
        if any_immediate {
            store::notify_dispatchers(&tx).await?;
        }
        tx.commit().await?;
        Ok(IntakeSummary {
            outcomes: outcomes.into_iter().flatten().collect(),
        })
    }

    /// Starts, extends or ends the grants an event names in one application.
    async fn record_grant(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        source: EventSource,
        event: &NewEvent,
        event_row: i64,
        application: &str,
    ) -> Result<(), StoreError> {
        let family = grants::source_family(source.as_str());
        match event.kind {
            EventKind::Activation => {
                let max = self
                    .routing
                    .max_grant
                    .get(application)
                    .copied()
                    .unwrap_or(DEFAULT_MAX_GRANT);
                let (ends_at, note) = grant_end(event, max, time::OffsetDateTime::now_utc());
                grants::record_activation(
                    tx,
                    &grants::Activation {
                        application,
                        source: family,
                        grant_key: event.grant_id.as_deref().unwrap_or(&event.id),
                        principal_id: &event.principal_id,
                        group_id: &event.group_id,
                        occurred_at: event.occurred_at,
                        ends_at,
                        event_id: event_row,
                        note,
                    },
                )
                .await?;
            }
            EventKind::Deactivation => {
                grants::record_deactivation(
                    tx,
                    &grants::Deactivation {
                        application,
                        source: family,
                        grant_key: event.grant_id.as_deref(),
                        principal_id: &event.principal_id,
                        group_id: &event.group_id,
                        occurred_at: event.occurred_at,
                        event_id: event_row,
                    },
                )
                .await?;
            }
        }
        Ok(())
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
