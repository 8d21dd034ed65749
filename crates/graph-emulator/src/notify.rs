//! What the emulator sends to subscribers: the validation handshake on create, change
//! notifications, and lifecycle notifications.
//!
//! Deliveries are made once; the emulator does not retry a failed one for four hours as
//! Graph would. Each outcome is returned to the caller as a [`Delivery`].

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use url::Url;

use super::directory::EmulatedSubscription;
use crate::wire::format_graph_time;

/// The lifecycle event documented for group and user subscriptions.
pub const REAUTHORIZATION_REQUIRED: &str = "reauthorizationRequired";
/// Lifecycle events Graph defines; the emulator sends any of them on demand.
pub const LIFECYCLE_EVENTS: [&str; 3] = [REAUTHORIZATION_REQUIRED, "subscriptionRemoved", "missed"];
/// Graph's message when the handshake fails.
pub const VALIDATION_FAILED: &str = "Subscription validation request failed.";

/// The outcome of one POST to a subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub subscription_id: String,
    pub url: String,
    /// The receiver's status, if it answered in time.
    pub status: Option<u16>,
    /// Why the delivery failed (no answer, non-2xx); `None` when it was accepted.
    pub error: Option<String>,
}

impl Delivery {
    /// True when the receiver answered 2xx in time.
    pub fn accepted(&self) -> bool {
        self.error.is_none()
    }
}

/// A validation token in Graph's style: opaque text with spaces and colons, so a receiver
/// that forgets to URL-decode it fails the handshake as it would against Graph.
pub(crate) fn validation_token() -> String {
    format!(
        "Validation: Testing client application reachability for subscription Request-Id: {}",
        uuid::Uuid::new_v4()
    )
}

/// `POST {url}?validationToken=…` with `text/plain`; the receiver must answer 200,
/// `text/plain`, the decoded token, within `timeout`. The error is Graph's message.
pub(crate) async fn validate(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<(), String> {
    let token = validation_token();
    let mut target = Url::parse(url)
        .map_err(|e| format!("{VALIDATION_FAILED} Invalid notification URL: {e}."))?;
    target
        .query_pairs_mut()
        .append_pair("validationToken", &token);
    let response = http
        .post(target)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                format!("{VALIDATION_FAILED} The notification endpoint did not respond within {} seconds.", timeout.as_secs())
            } else {
                format!("{VALIDATION_FAILED} The notification endpoint could not be reached.")
            }
        })?;
    let status = response.status();
    let plain = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/plain")
        });
    let body = response.text().await.unwrap_or_default();
    if status != reqwest::StatusCode::OK {
        return Err(format!("{VALIDATION_FAILED} Notification endpoint must respond with 200 OK to validation request (it answered {}).", status.as_u16()));
    }
    if !plain {
        return Err(format!(
            "{VALIDATION_FAILED} The response must have Content-Type text/plain."
        ));
    }
    if body != token {
        return Err(format!("{VALIDATION_FAILED} The response must exactly match the validationToken query parameter."));
    }
    Ok(())
}

/// One change notification collection for a change of group `group_id`.
pub(crate) fn group_changed(
    subscription: &EmulatedSubscription,
    group_id: &str,
    tenant_id: &str,
) -> Value {
    json!({
        "value": [{
            "id": uuid::Uuid::new_v4().to_string(),
            "subscriptionId": subscription.id,
            "subscriptionExpirationDateTime": format_graph_time(subscription.expiration),
            "changeType": "updated",
            "resource": format!("Groups/{group_id}"),
            "resourceData": {
                "@odata.type": "#Microsoft.Graph.Group",
                "@odata.id": format!("Groups/{group_id}"),
                "id": group_id,
                "organizationId": tenant_id,
            },
            "clientState": client_state(subscription),
            "tenantId": tenant_id,
        }]
    })
}

/// One lifecycle notification collection.
pub(crate) fn lifecycle(
    subscription: &EmulatedSubscription,
    event: &str,
    tenant_id: &str,
) -> Value {
    json!({
        "value": [{
            "subscriptionId": subscription.id,
            "subscriptionExpirationDateTime": format_graph_time(subscription.expiration),
            "tenantId": tenant_id,
            "clientState": client_state(subscription),
            "lifecycleEvent": event,
        }]
    })
}

fn client_state(subscription: &EmulatedSubscription) -> Value {
    let state = subscription.client_state.expose();
    if state.is_empty() {
        Value::Null
    } else {
        Value::String(state.to_owned())
    }
}

/// POSTs a notification collection as JSON and reports the outcome.
pub(crate) async fn deliver(
    http: &reqwest::Client,
    subscription_id: &str,
    url: &str,
    body: &Value,
    timeout: Duration,
) -> Delivery {
    let outcome = http
        .post(url)
        .timeout(timeout)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )
        .body(body.to_string())
        .send()
        .await;
    let (status, error) = match outcome {
        Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None),
        Ok(response) => (
            Some(response.status().as_u16()),
            Some(format!(
                "the receiver answered {}",
                response.status().as_u16()
            )),
        ),
        Err(e) if e.is_timeout() => (None, Some(format!("no answer within {timeout:?}"))),
        Err(e) => (None, Some(format!("not delivered: {}", e.without_url()))),
    };
    Delivery {
        subscription_id: subscription_id.to_owned(),
        url: url.to_owned(),
        status,
        error,
    }
}
