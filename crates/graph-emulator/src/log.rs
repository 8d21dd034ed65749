//! The request log: token and Graph requests (control-API requests are not logged).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One request as the emulator saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggedRequest {
    pub method: String,
    /// Path as received (not normalised, not percent-decoded).
    pub path: String,
    /// Raw query string without `?` (empty when none).
    pub query: String,
    pub status: u16,
    /// When the request arrived, in Graph's timestamp format.
    pub at: String,
    pub duration_ms: u64,
    /// Also sent in the `request-id` header.
    pub request_id: String,
    /// The injected fault that shaped this reply, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// Not recorded by this emulator; kept so the log reads like the SCIM emulator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}
