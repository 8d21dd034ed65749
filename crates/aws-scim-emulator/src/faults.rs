//! Run-time fault injection for the SCIM routes.

use std::time::Duration;

use actix_web::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::errors::ApiError;

fn one() -> u64 {
    1
}

fn internal_error() -> u16 {
    500
}

/// What a fault does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum FaultKind {
    /// 429 ThrottlingException with `Retry-After: retry_after_seconds`; nothing is applied.
    Throttle {
        #[serde(default = "one")]
        retry_after_seconds: u64,
    },
    /// An error status (default 500 InternalServerException); nothing is applied.
    Error {
        #[serde(default = "internal_error")]
        status: u16,
    },
    /// Sleeps `millis` before handling the request.
    Latency { millis: u64 },
    /// By-id operations (GET/PUT/PATCH/DELETE `/Users/{id}`, `/Groups/{id}`) answer 404 for a
    /// resource until `millis` have passed since it was created; such users also count as
    /// unknown members in group writes. Lists and filters are not affected.
    DelayedVisibility { millis: u64 },
    /// The request is applied, then the connection is shut down before any response byte is
    /// written: the client sees a transport error, never a status.
    LostReply,
}

/// One injected fault: a kind plus when it fires.
///
/// `count` limits how many matching requests it fires on; `ratio` (0..=1) is the chance it
/// fires on each matching request. With neither it fires on every matching request until
/// removed. `methods` and `pathContains` narrow the matching requests (default: all SCIM
/// requests).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    #[serde(flatten)]
    pub kind: FaultKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_contains: Option<String>,
}

impl Fault {
    fn of(kind: FaultKind) -> Self {
        Self {
            kind,
            count: None,
            ratio: None,
            methods: None,
            path_contains: None,
        }
    }

    /// 429 with `Retry-After: retry_after_seconds` on the next `count` requests.
    pub fn throttle(count: u64, retry_after_seconds: u64) -> Self {
        Self::of(FaultKind::Throttle {
            retry_after_seconds,
        })
        .times(count)
    }

    /// `status` (e.g. 500) on the next `count` requests.
    pub fn error(status: u16, count: u64) -> Self {
        Self::of(FaultKind::Error { status }).times(count)
    }

    /// `millis` of added latency on every request.
    pub fn latency(millis: u64) -> Self {
        Self::of(FaultKind::Latency { millis })
    }

    /// Resources stay invisible to by-id operations for `millis` after their creation.
    pub fn delayed_visibility(millis: u64) -> Self {
        Self::of(FaultKind::DelayedVisibility { millis })
    }

    /// The next `count` requests are applied and their replies lost.
    pub fn lost_reply(count: u64) -> Self {
        Self::of(FaultKind::LostReply).times(count)
    }

    /// Fires on at most `count` requests.
    pub fn times(mut self, count: u64) -> Self {
        self.count = Some(count);
        self
    }

    /// Fires on each matching request with probability `ratio` (and without a count limit).
    pub fn with_ratio(mut self, ratio: f64) -> Self {
        self.ratio = Some(ratio);
        self.count = None;
        self
    }

    /// Only requests with one of these methods match.
    pub fn for_methods(mut self, methods: &[&str]) -> Self {
        self.methods = Some(methods.iter().map(|m| (*m).to_owned()).collect());
        self
    }

    /// Only requests whose path contains `fragment` match.
    pub fn for_paths_containing(mut self, fragment: &str) -> Self {
        self.path_contains = Some(fragment.to_owned());
        self
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(r) = self.ratio {
            if !(0.0..=1.0).contains(&r) {
                return Err("ratio must be between 0 and 1".to_owned());
            }
        }
        if let FaultKind::Error { status } = self.kind {
            if !(400..=599).contains(&status) {
                return Err("status must be between 400 and 599".to_owned());
            }
        }
        Ok(())
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok = self
            .methods
            .as_ref()
            .is_none_or(|ms| ms.iter().any(|m| m.eq_ignore_ascii_case(method)));
        let path_ok = self
            .path_contains
            .as_ref()
            .is_none_or(|p| path.contains(p.as_str()));
        method_ok && path_ok
    }
}

/// An installed fault with its id and counters, as listed by `GET /_emulator/faults`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveFault {
    pub id: u64,
    #[serde(flatten)]
    pub fault: Fault,
    /// Firings left when a count was given.
    pub remaining: Option<u64>,
    /// Times it has fired so far.
    pub hits: u64,
}

impl ActiveFault {
    fn fire(&mut self) -> bool {
        if self.remaining == Some(0) {
            return false;
        }
        if let Some(r) = self.fault.ratio {
            if rand::random::<f64>() >= r {
                return false;
            }
        }
        if let Some(n) = self.remaining.as_mut() {
            *n -= 1;
        }
        self.hits += 1;
        true
    }
}

/// What the faults decided for one request.
#[derive(Debug, Default)]
pub(crate) struct Decision {
    pub latency: Duration,
    /// Answer this instead of handling the request; the `&str` names the fault.
    pub reject: Option<(ApiError, &'static str)>,
    pub lost_reply: bool,
    pub visibility_delay: Option<Duration>,
}

#[derive(Debug, Default)]
pub(crate) struct FaultSet {
    next_id: u64,
    faults: Vec<ActiveFault>,
}

impl FaultSet {
    pub fn add(&mut self, fault: Fault) -> Result<u64, String> {
        fault.validate()?;
        self.next_id += 1;
        let remaining = fault.count;
        self.faults.push(ActiveFault {
            id: self.next_id,
            fault,
            remaining,
            hits: 0,
        });
        Ok(self.next_id)
    }

    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.faults.len();
        self.faults.retain(|f| f.id != id);
        before != self.faults.len()
    }

    pub fn clear(&mut self) {
        self.faults.clear();
    }

    pub fn list(&self) -> Vec<ActiveFault> {
        self.faults.clone()
    }

    pub fn decide(&mut self, method: &str, path: &str) -> Decision {
        let mut d = Decision::default();
        for f in self
            .faults
            .iter_mut()
            .filter(|f| f.fault.matches(method, path))
        {
            match f.fault.kind {
                FaultKind::DelayedVisibility { millis } => {
                    let delay = Duration::from_millis(millis);
                    d.visibility_delay = Some(d.visibility_delay.map_or(delay, |v| v.max(delay)));
                }
                FaultKind::Latency { millis } => {
                    if f.fire() {
                        d.latency += Duration::from_millis(millis);
                    }
                }
                FaultKind::Throttle {
                    retry_after_seconds,
                } => {
                    if d.reject.is_none() && f.fire() {
                        d.reject = Some((ApiError::throttled(retry_after_seconds), "throttle"));
                    }
                }
                FaultKind::Error { status } => {
                    if d.reject.is_none() && f.fire() {
                        let status = StatusCode::from_u16(status)
                            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                        d.reject = Some((ApiError::injected(status), "error"));
                    }
                }
                FaultKind::LostReply => {}
            }
        }
        if d.reject.is_none() {
            for f in self
                .faults
                .iter_mut()
                .filter(|f| f.fault.matches(method, path))
            {
                if matches!(f.fault.kind, FaultKind::LostReply) && f.fire() {
                    d.lost_reply = true;
                    break;
                }
            }
        }
        self.faults.retain(|f| f.remaining != Some(0));
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn faults_read_the_documented_json_shapes() {
        let parse = |v: serde_json::Value| serde_json::from_value::<Fault>(v).ok();
        assert_eq!(
            parse(json!({"kind": "throttle", "count": 3, "retryAfterSeconds": 2})),
            Some(Fault::throttle(3, 2))
        );
        assert_eq!(
            parse(json!({"kind": "error", "status": 500, "count": 2})),
            Some(Fault::error(500, 2))
        );
        assert_eq!(
            parse(json!({"kind": "latency", "millis": 50})),
            Some(Fault::latency(50))
        );
        assert_eq!(
            parse(json!({"kind": "delayedVisibility", "millis": 500})),
            Some(Fault::delayed_visibility(500))
        );
        assert_eq!(
            parse(json!({"kind": "lostReply", "count": 1})),
            Some(Fault::lost_reply(1))
        );
        assert_eq!(
            parse(json!({"kind": "error", "ratio": 0.5})),
            Some(Fault::error(500, 0).with_ratio(0.5))
        );
        assert_eq!(parse(json!({"kind": "nonsense"})), None);
    }

    #[test]
    fn a_counted_fault_fires_exactly_count_times_then_disappears() {
        let mut set = FaultSet::default();
        assert!(set.add(Fault::throttle(2, 1)).is_ok());
        let fired: Vec<bool> = (0..4)
            .map(|_| set.decide("GET", "/x").reject.is_some())
            .collect();
        assert_eq!(fired, vec![true, true, false, false]);
        assert!(set.list().is_empty());
    }

    #[test]
    fn method_filters_limit_which_requests_a_fault_hits() {
        let mut set = FaultSet::default();
        assert!(set.add(Fault::lost_reply(1).for_methods(&["POST"])).is_ok());
        assert!(!set.decide("GET", "/Users").lost_reply);
        assert!(set.decide("POST", "/Users").lost_reply);
    }

    #[test]
    fn out_of_range_ratios_and_statuses_are_refused() {
        let mut set = FaultSet::default();
        assert!(set.add(Fault::error(500, 1).with_ratio(1.5)).is_err());
        assert!(set.add(Fault::error(200, 1)).is_err());
    }
}
