//! `POST /webhooks/graph`: Microsoft Graph change notifications (DESIGN.md §2; facts:
//! entra-graph.md §1).
//!
//! Graph has no notifications for PIM: a group-membership notification only says "this group
//! changed". So the handler does the least it can within Graph's 3-second budget: answer the
//! `validationToken` handshake, check every item's `clientState` (constant time), store one hint
//! per assigned group in Postgres, and answer 202. The resolver (`resolve`) asks Graph what is
//! active and turns the differences into events. A `reauthorizationRequired` lifecycle item marks
//! its subscription for renewal (`resolve::subscriptions`).

use actix_web::http::header::ContentType;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::events::read_body;
use crate::error::ApiError;
use crate::secret::SecretString;
use crate::state::AppState;
use crate::store::{graph_hints, graph_subscriptions, StoreError};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/graph", web::post().to(post_graph));
}

#[derive(Deserialize)]
struct Handshake {
    #[serde(rename = "validationToken")]
    validation_token: Option<String>,
}

/// What one notification asks of us.
#[derive(Debug, PartialEq, Eq)]
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

#[tracing::instrument(name = "intake", skip_all, fields(source = "graph"))]
async fn post_graph(
    request: HttpRequest,
    handshake: web::Query<Handshake>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let client_state = state
        .graph_client_state
        .as_ref()
        .ok_or(ApiError::GraphDisabled)?;
    // The subscription handshake carries no JSON: echo the token before anything else.
    if let Some(token) = &handshake.validation_token {
        tracing::info!("Graph subscription validation answered");
        return Ok(HttpResponse::Ok()
            .content_type(ContentType::plaintext())
            .insert_header(("x-content-type-options", "nosniff"))
            .body(token.clone()));
    }
    let body = read_body(&request, payload, state.max_body_bytes).await?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidNotification(format!("the body is not JSON: {e}")))?;
    let notifications = value
        .get("value")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::InvalidNotification("the body has no `value` array of notifications".into())
        })?;
    let items = verify(client_state, notifications)?;
    if !state.is_bootstrapped() {
        return Err(ApiError::NotReady);
    }
    let stored = record(&state, items).await?;
    Ok(HttpResponse::Accepted().json(json!({ "hints": stored.hints, "ignored": stored.ignored })))
}

/// Checks every notification's `clientState` (constant time) and says what each asks for. One
/// wrong or missing `clientState` refuses them all.
pub fn verify(client_state: &SecretString, notifications: &[Value]) -> Result<Vec<Item>, ApiError> {
    let mut items = Vec::with_capacity(notifications.len());
    for (i, notification) in notifications.iter().enumerate() {
        let presented = notification.get("clientState").and_then(Value::as_str);
        if !presented.is_some_and(|p| client_state.ct_eq(p.as_bytes())) {
            tracing::warn!(
                index = i,
                "Graph notification with a wrong or missing clientState refused"
            );
            return Err(ApiError::InvalidClientState);
        }
        items.push(classify(notification));
    }
    Ok(items)
}

/// What [`record`] stored.
pub(crate) struct Stored {
    pub hints: usize,
    pub ignored: usize,
}

/// Stores one hint per assigned group and the renewal requests, in one transaction, and counts
/// them (`source="graph"`, `type="notification"`).
pub(crate) async fn record(state: &AppState, items: Vec<Item>) -> Result<Stored, ApiError> {
    let mut groups: Vec<String> = Vec::new();
    let mut renewals: Vec<(String, String)> = Vec::new();
    let mut ignored = 0usize;
    for item in items {
        match item {
            Item::GroupChanged(group) if state.intake.is_routed(&group) => groups.push(group),
            Item::Resync(event) => {
                tracing::warn!(lifecycle = %event, "Graph lost notifications; resolving every assigned group");
                groups.extend(state.intake.routed_groups().map(str::to_owned));
            }
            Item::Lifecycle {
                event,
                subscription,
            } => renewals.push((event, subscription)),
            Item::GroupChanged(_) | Item::Other => ignored += 1,
        }
    }
    groups.sort();
    groups.dedup();
    let mut db = state.pool.get().await.map_err(StoreError::from)?;
    let tx = db.transaction().await.map_err(StoreError::from)?;
    for group in &groups {
        graph_hints::record(&tx, group).await?;
    }
    for (event, subscription) in &renewals {
        if graph_subscriptions::request_renewal(&tx, subscription).await? {
            tracing::info!(lifecycle = %event, subscription = %subscription,
                "Graph asked for reauthorization; the subscription is renewed at the next check");
        } else {
            tracing::warn!(lifecycle = %event, subscription = %subscription,
                "Graph asked for reauthorization of a subscription pimbridge does not manage: renew it");
        }
    }
    ignored += renewals.len();
    tx.commit().await.map_err(StoreError::from)?;
    let metrics = &state.metrics.events_received;
    metrics
        .with_label_values(&["graph", "notification", "accepted"])
        .inc_by(groups.len() as u64);
    metrics
        .with_label_values(&["graph", "notification", "ignored"])
        .inc_by(ignored as u64);
    tracing::info!(
        groups = groups.len(),
        ignored,
        "Graph notifications stored as hints"
    );
    Ok(Stored {
        hints: groups.len(),
        ignored,
    })
}

/// What a notification is about: a group from `resourceData.id` or the `resource` path
/// (`Groups/{id}`, `groups/{id}/members`), or a lifecycle event.
fn classify(notification: &Value) -> Item {
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
}
