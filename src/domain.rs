//! The few domain words every module shares: what happened, and where it goes.

use std::fmt;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

/// What an event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A membership became active (PIM activation, admin assignment, extension, renewal).
    Activation,
    /// A membership ended (self-deactivation, admin removal, expiry).
    Deactivation,
}

impl EventKind {
    /// The stored and labelled name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Activation => "activation",
            Self::Deactivation => "deactivation",
        }
    }

    /// The SCIM membership change this event leads to.
    pub fn action(self) -> Action {
        match self {
            Self::Activation => Action::Add,
            Self::Deactivation => Action::Remove,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The membership change a job makes in AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Add,
    Remove,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Remove => "remove",
        }
    }
}

/// Whose membership in which group of which application, with what the event said about them.
#[derive(Debug, Clone)]
pub struct Subject {
    pub application: String,
    /// Entra user object id.
    pub principal_id: String,
    /// Entra group object id.
    pub group_id: String,
    pub user_attributes: Option<Value>,
    pub group_attributes: Option<Value>,
}

/// Which path a job takes to AWS (docs/architecture.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    /// Sent at once by the dispatcher.
    Immediate,
    /// Left for the next sync cycle.
    Deferred,
}

impl Lane {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Immediate => "immediate",
            Self::Deferred => "deferred",
        }
    }
}

/// Where an event came from; part of its idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventSource {
    /// Our own JSON event on `POST /v1/events`.
    Api,
    /// An Entra audit-log record on `POST /webhooks/audit`; the id is the record's `id`.
    Audit,
    /// An Entra audit-log record inside an Event Grid event on `POST /webhooks/eventgrid`; the id
    /// is the record's `id`, not the Event Grid event's, so a record is stored once however many
    /// events carry it.
    EventGrid,
    /// A PIM assignment instance Graph reported active (or no longer active) when a change
    /// notification was resolved; the id names the instance and its end.
    Graph,
}

impl EventSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Audit => "audit",
            Self::EventGrid => "eventgrid",
            Self::Graph => "graph",
        }
    }
}

/// A validated event, ready to store (parsed by `intake` from any source).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub id: String,
    pub kind: EventKind,
    pub occurred_at: OffsetDateTime,
    pub group_id: String,
    pub principal_id: String,
    pub ends_at: Option<OffsetDateTime>,
    /// The grant the event starts, extends or ends: `grantId` (a PIM instance id, say) when the
    /// sender has one. Without it an activation's grant is the event itself, and a deactivation
    /// ends every grant of the pair from the same source that started before it.
    pub grant_id: Option<String>,
    /// The optional `user` object, as sent (string attributes only).
    pub user: Option<Value>,
    /// The optional `group` object, as sent.
    pub group: Option<Value>,
}
