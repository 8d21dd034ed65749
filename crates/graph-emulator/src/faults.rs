//! Fault injection: the next N Graph (`/v1.0`) requests answer an error status instead.
//!
//! Faults queue up in the order they were added; each request consumes one unit of the
//! oldest. The token endpoint and the control API are never faulted.

use serde::{Deserialize, Serialize};

/// "Answer `status` to the next `count` Graph requests", with `Retry-After` if given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphFault {
    /// 400..=599, e.g. 429, 500, 503, or 401/403 to test the client's handling.
    pub status: u16,
    /// How many requests it answers before it is used up.
    pub count: u32,
    /// `Retry-After` seconds sent with the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

impl GraphFault {
    /// 429 with `Retry-After: retry_after_seconds` on the next `count` requests.
    pub fn throttle(count: u32, retry_after_seconds: u64) -> Self {
        Self {
            status: 429,
            count,
            retry_after_seconds: Some(retry_after_seconds),
        }
    }

    /// `status` on the next `count` requests.
    pub fn error(status: u16, count: u32) -> Self {
        Self {
            status,
            count,
            retry_after_seconds: None,
        }
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if !(400..=599).contains(&self.status) {
            return Err("status must be between 400 and 599".to_owned());
        }
        if self.count == 0 {
            return Err("count must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// The queue of pending faults.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    pending: Vec<GraphFault>,
}

impl FaultQueue {
    pub fn push(&mut self, fault: GraphFault) -> Result<(), String> {
        fault.check()?;
        self.pending.push(fault);
        Ok(())
    }

    /// The status (and Retry-After) for the next request, if a fault is pending.
    pub fn take(&mut self) -> Option<(u16, Option<u64>)> {
        let first = self.pending.first_mut()?;
        let answer = (first.status, first.retry_after_seconds);
        first.count -= 1;
        if first.count == 0 {
            self.pending.remove(0);
        }
        Some(answer)
    }

    pub fn list(&self) -> Vec<GraphFault> {
        self.pending.clone()
    }

    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_used_up_in_order() {
        let mut queue = FaultQueue::default();
        queue.push(GraphFault::throttle(2, 1)).unwrap();
        queue.push(GraphFault::error(500, 1)).unwrap();
        let answers: Vec<_> = std::iter::from_fn(|| queue.take()).collect();
        assert_eq!(answers, vec![(429, Some(1)), (429, Some(1)), (500, None)]);
        assert!(queue.list().is_empty());
    }

    #[test]
    fn statuses_outside_4xx_5xx_and_zero_counts_are_refused() {
        let mut queue = FaultQueue::default();
        assert!(queue.push(GraphFault::error(200, 1)).is_err());
        assert!(queue.push(GraphFault::error(500, 0)).is_err());
        assert!(queue.take().is_none());
    }

    #[test]
    fn faults_read_the_documented_json() {
        let fault: GraphFault =
            serde_json::from_str(r#"{"status":429,"count":3,"retryAfterSeconds":2}"#).unwrap();
        assert_eq!(fault, GraphFault::throttle(3, 2));
    }
}
