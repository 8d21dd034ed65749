//! The request log of SCIM requests (control-API requests are not logged).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One SCIM request as the emulator saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggedRequest {
    pub method: String,
    /// Path as received (not normalised, not percent-decoded).
    pub path: String,
    /// Raw query string without `?` (empty when none).
    pub query: String,
    /// Status answered (for a lost reply: the status that was not delivered).
    pub status: u16,
    /// When the request arrived, RFC 3339 UTC with milliseconds.
    pub at: String,
    pub duration_ms: u64,
    /// Also sent as `x-amzn-RequestId` and as `exceptionRequestId` in errors.
    pub request_id: String,
    /// The injected fault that shaped this reply: `throttle`, `error` or `lostReply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// The JSON request body (a string when it was not JSON), for POST/PUT/PATCH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    entries: VecDeque<LoggedRequest>,
}

impl RequestLog {
    pub fn push(&mut self, entry: LoggedRequest, capacity: usize) {
        self.entries.push_back(entry);
        while self.entries.len() > capacity.max(1) {
            self.entries.pop_front();
        }
    }

    pub fn entries(&self) -> Vec<LoggedRequest> {
        self.entries.iter().cloned().collect()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}
