//! One counting rule for everything that arrives, whichever route or resolver it came through:
//! `pimbridge_events_received_total{source, type, outcome}`.
//!
//! The HTTP routes and the Graph resolver both call these functions, so the same outcome gets the
//! same labels everywhere: an activation stored with jobs is `accepted` whether it came from
//! `/v1/events`, an audit record, an Event Grid delivery or Graph.

use crate::domain::{EventKind, EventSource};
use crate::metrics::Metrics;

use super::{EventOutcome, IntakeSummary};

/// The `type` label of a Microsoft Graph change or lifecycle notification, on every route.
pub const GRAPH_NOTIFICATION: &str = "graph_notification";
/// The `type` label of something whose kind is not known (a refused request, an unrelated record).
pub const UNKNOWN: &str = "unknown";

/// What happened to one item, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored (with jobs, or as a hint for the resolver).
    Accepted,
    /// Already stored; nothing changed.
    Duplicate,
    /// Stored for a group assigned to no application.
    Unrouted,
    /// Not ours (another activity, log category, failed activity, …); nothing stored.
    Ignored,
    /// A PIM change of a group's *owners*: pimbridge provisions memberships only.
    IgnoredOwner,
    /// Looks like a PIM-for-Groups change but cannot be read as one; logged at warning.
    Unusable,
    /// The whole request was refused.
    Rejected,
}

impl Outcome {
    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Unrouted => "unrouted",
            Self::Ignored => "ignored",
            Self::IgnoredOwner => "ignored_owner",
            Self::Unusable => "unusable",
            Self::Rejected => "rejected",
        }
    }
}

/// Counts `n` items from `source` of `kind` (`activation`, `deactivation`, [`UNKNOWN`], …).
pub fn count(metrics: &Metrics, source: EventSource, kind: &str, outcome: Outcome, n: u64) {
    if n > 0 {
        metrics
            .events_received
            .with_label_values(&[source.as_str(), kind, outcome.as_str()])
            .inc_by(n);
    }
}

/// Counts and logs what happened to each event of a committed intake transaction, and counts
/// the admitted activations per application and lane.
pub fn count_summary(metrics: &Metrics, source: EventSource, summary: &IntakeSummary) {
    for (id, kind, outcome) in &summary.outcomes {
        let counted = match outcome {
            EventOutcome::Accepted { event_row, jobs } => {
                for (application, lane) in jobs {
                    if *kind == EventKind::Activation {
                        metrics
                            .activations
                            .with_label_values(&[application.as_str(), lane.as_str()])
                            .inc();
                    }
                    tracing::info!(event.id = %id, event.row = event_row, event.type = %kind,
                        application = %application, lane = lane.as_str(), "event accepted");
                }
                Outcome::Accepted
            }
            EventOutcome::Unrouted { event_row } => {
                tracing::info!(event.id = %id, event.row = event_row, event.type = %kind,
                    "event accepted for a group assigned to no application; ignored");
                Outcome::Unrouted
            }
            EventOutcome::Duplicate => {
                tracing::debug!(event.id = %id, "redelivered event; nothing changed");
                Outcome::Duplicate
            }
        };
        count(metrics, source, kind.as_str(), counted, 1);
    }
}
