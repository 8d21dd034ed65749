//! Microsoft Graph change and lifecycle notifications, however they arrive: posted to
//! `/webhooks/graph` (`{"value": [...]}`) or as the `data` of Event Grid events from a Graph
//! partner topic. Both routes use [`verify`], [`record`] and [`count`], so that one notification
//! is judged, stored and counted alike on either.
//!
//! Graph has no notifications for PIM: a group-membership notification only says "this group
//! changed". So a notification is checked (its `clientState`, in constant time) and stored as a
//! hint for the resolver (`resolve`), which asks Graph what is active. A `reauthorizationRequired`
//! lifecycle item marks its subscription for renewal (`resolve::subscriptions`); `missed` and
//! `subscriptionRemoved` resolve every assigned group.

use deadpool_postgres::Pool;
use serde_json::Value;

use super::counting::{self, Outcome, GRAPH_NOTIFICATION};
use super::Intake;
use crate::domain::EventSource;
use crate::metrics::Metrics;
use crate::secret::SecretString;
use crate::store::{graph_hints, graph_subscriptions, StoreError};

/// Why a delivery of Graph notifications is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    /// The body is not a notification collection.
    #[error("{0}")]
    Malformed(String),
    /// A notification's `clientState` is wrong or missing: none of the delivery is trusted.
    #[error("notification {index} has a wrong or missing clientState")]
    ClientState { index: usize },
}

/// What one notification asks of us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// The membership of this group changed.
    GroupChanged(String),
    /// Graph says notifications were lost or the subscription is gone: resolve every group.
    Resync(String),
    /// A lifecycle event about one subscription (e.g. `reauthorizationRequired`): renew it.
    Lifecycle { event: String, subscription: String },
    /// A change to something that is not a group.
    Other,
}

/// The notifications of a `/webhooks/graph` body: its `value` array.
pub fn parse_collection(body: &[u8]) -> Result<Vec<Value>, NotificationError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| NotificationError::Malformed(format!("the body is not JSON: {e}")))?;
    match value.get("value") {
        Some(Value::Array(items)) => Ok(items.clone()),
        _ => Err(NotificationError::Malformed(
            "the body has no `value` array of notifications".into(),
        )),
    }
}

/// Checks every notification's `clientState` (constant time) and says what each asks for. One
/// wrong or missing `clientState` refuses them all.
pub fn verify(
    client_state: &SecretString,
    notifications: &[Value],
) -> Result<Vec<Item>, NotificationError> {
    notifications
        .iter()
        .enumerate()
        .map(|(index, notification)| {
            let presented = notification.get("clientState").and_then(Value::as_str);
            if presented.is_some_and(|p| client_state.ct_eq(p.as_bytes())) {
                Ok(classify(notification))
            } else {
                tracing::warn!(
                    index,
                    "Graph notification with a wrong or missing clientState refused"
                );
                Err(NotificationError::ClientState { index })
            }
        })
        .collect()
}

/// What [`record`] did with a delivery's notifications.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Groups given a hint (each once).
    pub hints: usize,
    /// Notifications acted on: a hint stored, or every group resolved.
    pub accepted: usize,
    /// Notifications about something else: an unassigned group, another resource, or a
    /// subscription lifecycle event (handled, but nothing to resolve).
    pub ignored: usize,
}

/// Stores one hint per assigned group and the renewal requests, in one transaction.
pub async fn record(
    pool: &Pool,
    intake: &Intake,
    items: Vec<Item>,
) -> Result<Recorded, StoreError> {
    let mut groups: Vec<String> = Vec::new();
    let mut renewals: Vec<(String, String)> = Vec::new();
    let mut recorded = Recorded::default();
    for item in items {
        match item {
            Item::GroupChanged(group) if intake.is_routed(&group) => {
                recorded.accepted += 1;
                groups.push(group);
            }
            Item::Resync(event) => {
                tracing::warn!(lifecycle = %event,
                    "Graph lost notifications; resolving every assigned group");
                recorded.accepted += 1;
                groups.extend(intake.routed_groups().map(str::to_owned));
            }
            Item::Lifecycle {
                event,
                subscription,
            } => {
                recorded.ignored += 1;
                renewals.push((event, subscription));
            }
            Item::GroupChanged(_) | Item::Other => recorded.ignored += 1,
        }
    }
    groups.sort();
    groups.dedup();
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;
    for group in &groups {
        graph_hints::record(&tx, group).await?;
    }
    for (event, subscription) in &renewals {
        if graph_subscriptions::request_renewal(&tx, subscription).await? {
            tracing::info!(lifecycle = %event, subscription = %subscription,
                "Graph asked for reauthorization; the subscription is renewed at the next check");
        } else {
            tracing::warn!(lifecycle = %event, subscription = %subscription,
                "Graph asked for reauthorization of a subscription pimbridge does not manage: \
                 renew it");
        }
    }
    tx.commit().await?;
    recorded.hints = groups.len();
    tracing::info!(
        hints = recorded.hints,
        ignored = recorded.ignored,
        "Graph notifications stored as hints"
    );
    Ok(recorded)
}

/// Counts recorded notifications (`type="graph_notification"`) under the route's `source`.
pub fn count(metrics: &Metrics, source: EventSource, recorded: &Recorded) {
    counting::count(
        metrics,
        source,
        GRAPH_NOTIFICATION,
        Outcome::Accepted,
        recorded.accepted as u64,
    );
    counting::count(
        metrics,
        source,
        GRAPH_NOTIFICATION,
        Outcome::Ignored,
        recorded.ignored as u64,
    );
}

/// What a notification is about: a group from `resourceData.id` or the `resource` path
/// (`Groups/{id}`, `groups/{id}/members`), or a lifecycle event.
pub fn classify(notification: &Value) -> Item {
    if let Some(event) = notification.get("lifecycleEvent").and_then(Value::as_str) {
        return match event {
            "missed" | "subscriptionRemoved" => Item::Resync(event.to_owned()),
            other => Item::Lifecycle {
                event: other.to_owned(),
                subscription: notification
                    .get("subscriptionId")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            },
        };
    }
    let resource = notification
        .get("resource")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut parts = resource.trim_start_matches('/').split('/');
    let from_path = match (parts.next(), parts.next()) {
        (Some(kind), Some(id)) if kind.eq_ignore_ascii_case("groups") && !id.is_empty() => {
            Some(id.to_owned())
        }
        _ => None,
    };
    let data = notification.get("resourceData");
    let is_group = data
        .and_then(|d| d.get("@odata.type"))
        .and_then(Value::as_str)
        .is_none_or(|t| t.eq_ignore_ascii_case("#microsoft.graph.group"));
    match (from_path, is_group) {
        (Some(group), true) => Item::GroupChanged(group),
        _ => Item::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn notifications_name_their_group_by_path_in_either_case() {
        let group = |resource: &str| classify(&json!({"resource": resource}));
        assert_eq!(group("Groups/g-1"), Item::GroupChanged("g-1".into()));
        assert_eq!(
            group("groups/g-2/members"),
            Item::GroupChanged("g-2".into())
        );
        assert_eq!(group("/groups/g-3"), Item::GroupChanged("g-3".into()));
        assert_eq!(group("Users/u-1"), Item::Other);
        assert_eq!(group("groups"), Item::Other);
    }

    #[test]
    fn lifecycle_events_resync_or_need_attention() {
        let life = |event: &str| classify(&json!({"lifecycleEvent": event}));
        assert_eq!(life("missed"), Item::Resync("missed".into()));
        assert_eq!(
            life("subscriptionRemoved"),
            Item::Resync("subscriptionRemoved".into())
        );
        assert_eq!(
            classify(
                &json!({"lifecycleEvent": "reauthorizationRequired", "subscriptionId": "s-1"})
            ),
            Item::Lifecycle {
                event: "reauthorizationRequired".into(),
                subscription: "s-1".into()
            }
        );
    }

    #[test]
    fn a_resource_of_another_type_is_not_a_group() {
        let n = json!({"resource": "Groups/g-1",
                       "resourceData": {"@odata.type": "#Microsoft.Graph.User"}});
        assert_eq!(classify(&n), Item::Other);
        let g = json!({"resource": "Groups/g-1",
                       "resourceData": {"@odata.type": "#Microsoft.Graph.Group"}});
        assert_eq!(classify(&g), Item::GroupChanged("g-1".into()));
    }

    #[test]
    fn one_wrong_client_state_refuses_the_delivery() {
        let secret = SecretString::new("s3cret-state");
        let good = json!({"clientState": "s3cret-state", "resource": "Groups/g-1"});
        let bad = json!({"clientState": "guess", "resource": "Groups/g-1"});
        let none = json!({"resource": "Groups/g-1"});

        assert_eq!(
            verify(&secret, std::slice::from_ref(&good)).unwrap(),
            vec![Item::GroupChanged("g-1".into())]
        );
        assert_eq!(
            verify(&secret, &[good.clone(), bad]).unwrap_err(),
            NotificationError::ClientState { index: 1 }
        );
        assert_eq!(
            verify(&secret, &[none, good]).unwrap_err(),
            NotificationError::ClientState { index: 0 }
        );
    }

    #[test]
    fn a_collection_is_an_object_with_a_value_array() {
        assert_eq!(
            parse_collection(br#"{"value": [{"a": 1}]}"#).unwrap(),
            vec![json!({"a": 1})]
        );
        for body in [&b"{"[..], b"[]", br#"{"value": {}}"#] {
            assert!(matches!(
                parse_collection(body),
                Err(NotificationError::Malformed(_))
            ));
        }
    }
}
