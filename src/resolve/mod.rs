//! The Graph resolver: turns stored change-notification hints into events (docs/webhooks.md).
//!
//! Every replica with `[graph]` configured polls `graph_hints` every `graph.resolve_interval`
//! and claims due hints under a lease. For a hint's group it asks Graph which PIM assignment
//! instances are active, compares them with the Graph-sourced events already stored
//! ([`plan::changes`]), reads the attributes of new users and of the group, and records the
//! activations and deactivations through the intake, where admission sends activations to the
//! immediate lane. Event ids name the instance, so resolving a group twice changes nothing.

pub mod plan;
pub mod subscriptions;

use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::domain::{EventKind, EventSource};
use crate::graph::{users, AssignmentInstance, GraphClient, GraphError};
use crate::intake::counting::{self, Outcome};
use crate::intake::event::NewEvent;
use crate::intake::validate;
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::store::graph_hints::{self, ClaimedHint};
use crate::store::StoreError;
use plan::Known;

/// Seconds a claimed hint stays leased.
const LEASE_SECS: f64 = 60.0;
/// Hints one replica resolves per round.
const BATCH: i64 = 4;
/// Attempts before a hint is marked failed.
const MAX_ATTEMPTS: i32 = 8;

/// Why a group could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ResolveError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Graph(e) => e.is_transient(),
            Self::Store(e) => e.is_transient(),
        }
    }
}

/// Resolves Graph hints from this replica.
pub struct Resolver {
    /// The request pool (hints and events live there).
    pub pool: deadpool_postgres::Pool,
    /// Records resolved activations and deactivations like any other source.
    pub intake: Intake,
    pub metrics: Metrics,
    /// Set once the schema is in place: resolving waits for it.
    pub bootstrapped: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// How far ahead of our clock Graph's times may be.
    pub max_clock_skew: Duration,
    pub graph: GraphClient,
    pub interval: Duration,
    pub owner: String,
}

impl Resolver {
    /// Resolves hints every `interval` until `shutdown`. The first round is one interval after
    /// start, whether bootstrap took more or less time than that, so a replica's first look does
    /// not depend on how fast it started.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
            }
            if self.bootstrapped.load(std::sync::atomic::Ordering::Acquire) {
                if let Err(e) = self.round().await {
                    tracing::warn!(error.message = %e, "cannot claim Graph hints");
                }
            }
        }
    }

    async fn round(&self) -> Result<(), StoreError> {
        let hints = {
            let db = self.pool.get().await?;
            graph_hints::claim(&db, &self.owner, LEASE_SECS, BATCH).await?
        };
        for hint in hints {
            self.handle(hint).await;
        }
        Ok(())
    }

    #[tracing::instrument(name = "hint", skip_all, fields(hint.id = hint.id, group = %hint.group_id))]
    async fn handle(&self, hint: ClaimedHint) {
        let result = self.resolve(&hint.group_id).await;
        let recorded = match self.pool.get().await {
            Ok(db) => match &result {
                Ok(events) => {
                    tracing::info!(events, "Graph notification resolved");
                    graph_hints::complete(&db, hint.id, &self.owner).await
                }
                Err(e) => {
                    let give_up = !e.is_transient() || hint.attempts >= MAX_ATTEMPTS;
                    let delay = retry_delay(hint.attempts, e);
                    let reason = crate::telemetry::error_chain(e);
                    tracing::warn!(error.message = %reason, give_up, "cannot resolve the Graph notification");
                    graph_hints::fail(&db, hint.id, &self.owner, &reason, delay, give_up).await
                }
            },
            Err(e) => Err(e.into()),
        };
        if let Err(e) = recorded {
            // The lease runs out and the hint is resolved again; resolving is idempotent.
            tracing::warn!(error.message = %e, "cannot record the hint's outcome");
        }
    }

    /// Records the events that Graph's view of `group_id` implies; returns how many were new.
    pub async fn resolve(&self, group_id: &str) -> Result<usize, ResolveError> {
        let (instances, owners): (Vec<_>, Vec<_>) = self
            .graph
            .active_assignments(group_id, None)
            .await?
            .into_iter()
            .partition(|i| i.is_member());
        self.ignore_owners(&owners);
        let db = self.pool.get().await.map_err(StoreError::from)?;
        let known = latest_graph_events(&db, group_id).await?;
        let candidates: Vec<String> = plan::active_by_user(&instances)
            .into_iter()
            .map(plan::activation_id)
            .collect();
        let recorded = recorded_ids(&db, group_id, &candidates).await?;
        drop(db);
        let (activations, deactivations) = plan::changes(&instances, &known, &recorded);
        if activations.is_empty() && deactivations.is_empty() {
            return Ok(0);
        }
        let now = OffsetDateTime::now_utc();
        let group = if activations.is_empty() {
            None
        } else {
            self.graph.group(group_id).await?
        };
        let group_attributes = group
            .and_then(|g| g.display_name)
            .map(|name| json!({ "displayName": name }));
        let mut events = Vec::new();
        for activation in activations {
            let Some(user) = self.graph.user(&activation.principal_id).await? else {
                tracing::warn!(principal = %activation.principal_id,
                    "an active PIM instance names a user Graph does not know; skipped");
                continue;
            };
            let occurred_at = activation.start.unwrap_or(now).min(now);
            events.push(NewEvent {
                id: activation.id,
                kind: EventKind::Activation,
                occurred_at,
                group_id: group_id.to_owned(),
                principal_id: activation.principal_id,
                // Graph may write "never" as a far-future date: that is no end.
                ends_at: activation
                    .end
                    .filter(|end| *end > occurred_at && *end < validate::LATEST),
                grant_id: Some(activation.grant_id),
                user: Some(users::event_attributes(&user)),
                group: group_attributes.clone(),
            });
        }
        for deactivation in deactivations {
            events.push(NewEvent {
                id: deactivation.id,
                kind: EventKind::Deactivation,
                occurred_at: now,
                group_id: group_id.to_owned(),
                principal_id: deactivation.principal_id,
                ends_at: None,
                grant_id: None,
                user: None,
                group: None,
            });
        }
        // Graph's values pass the same bounds as every sender's; one that fails is skipped
        // (retrying would not change what Graph says).
        let bounds = validate::Bounds::now(self.max_clock_skew);
        let events: Vec<NewEvent> = events
            .iter()
            .filter_map(|event| match validate::event_in(event, "", &bounds) {
                Ok(checked) => Some(checked),
                Err(e) => {
                    tracing::warn!(event.id = %event.id.escape_debug(), error.message = %e,
                        "an event resolved from Graph is out of bounds; skipped");
                    None
                }
            })
            .collect();
        if events.is_empty() {
            return Ok(0);
        }
        let summary = self.intake.record(EventSource::Graph, &events).await?;
        counting::count_summary(&self.metrics, EventSource::Graph, &summary);
        Ok(summary.accepted())
    }
}

impl Resolver {
    /// Owner instances are not memberships: logged and counted as `ignored_owner`, never turned
    /// into events. They are counted each time their group is resolved.
    fn ignore_owners(&self, others: &[AssignmentInstance]) {
        let owners: Vec<_> = others
            .iter()
            .filter(|i| i.access_id.eq_ignore_ascii_case("owner"))
            .collect();
        for owner in &owners {
            tracing::info!(instance = %owner.id, principal = %owner.principal_id,
                access = %owner.access_id, "a PIM ownership is not a membership; ignored");
        }
        counting::count(
            &self.metrics,
            EventSource::Graph,
            EventKind::Activation.as_str(),
            Outcome::IgnoredOwner,
            owners.len() as u64,
        );
    }
}

/// Backoff between attempts to resolve a hint: 1 s doubling to 5 min, at least what Graph asked.
fn retry_delay(attempts: i32, error: &ResolveError) -> f64 {
    let retry_after = match error {
        ResolveError::Graph(e) => e.retry_after(),
        ResolveError::Store(_) => None,
    };
    crate::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(300))
        .delay(crate::backoff::retry_number(attempts), retry_after, 0.0)
        .as_secs_f64()
}

/// The newest Graph-sourced event of each user in `group_id`.
async fn latest_graph_events(
    db: &impl deadpool_postgres::GenericClient,
    group_id: &str,
) -> Result<Vec<Known>, StoreError> {
    let rows = db
        .query(
            "SELECT DISTINCT ON (principal_id) principal_id, kind, source_event_id
             FROM events WHERE source = 'graph' AND group_id = $1
             ORDER BY principal_id, occurred_at DESC, id DESC",
            &[&group_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Known {
            principal_id: r.get(0),
            activation: r.get::<_, &str>(1) == "activation",
            source_event_id: r.get(2),
        })
        .collect())
}

/// Which of `ids` are already stored as Graph-sourced events.
async fn recorded_ids(
    db: &impl deadpool_postgres::GenericClient,
    group_id: &str,
    ids: &[String],
) -> Result<Vec<String>, StoreError> {
    let rows = db
        .query(
            "SELECT source_event_id FROM events
             WHERE source = 'graph' AND group_id = $1 AND source_event_id = ANY($2)",
            &[&group_id, &ids],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
