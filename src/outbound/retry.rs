//! When to try an outbound request again, and how long to wait first.
//!
//! AWS and Graph publish no rate limits and answer bursts with 429, sometimes with a
//! `Retry-After` header. Clients that ignore it, or retry without jitter, turn one throttle
//! into a cascade. So: the jittered exponential [`Backoff`], never shorter than the server
//! asked for, inside a budget of attempts *and* elapsed time so a caller's job cannot hang on
//! a sick endpoint.
//!
//! The functions here are pure (the random draw is a parameter) so they are unit-tested
//! without a clock.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::backoff::{random_draw, Backoff};

/// Default first backoff step.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(200);
/// Default ceiling for one computed backoff step (not for `Retry-After`, which wins).
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);
/// Longest `Retry-After` we believe; a larger value is treated as this so a confused proxy
/// cannot park us for a day (the elapsed-time budget then decides).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Retry budget and backoff shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 = never retry).
    pub max_attempts: u32,
    /// No retry starts once this much time has passed since the first attempt, nor one
    /// whose wait would end past it.
    pub max_elapsed: Duration,
    /// First backoff step; doubled per retry.
    pub base_delay: Duration,
    /// Ceiling of the exponential step.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(30),
            base_delay: DEFAULT_BASE_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first retry).
    ///
    /// The exponential step is `base · 2^(retry-1)`, capped at `max_delay`; the wait is
    /// uniformly in `[step/2, step]` driven by `jitter ∈ [0, 1)`. A server `Retry-After`
    /// raises the wait to at least that long.
    pub fn backoff(&self, retry: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        Backoff::new(self.base_delay, self.max_delay)
            .jittered()
            .delay(retry, retry_after.map(|d| d.min(MAX_RETRY_AFTER)), jitter)
    }

    /// Whether another attempt fits: `attempts` made so far, `elapsed` since the first,
    /// and the `wait` that would precede it.
    pub fn allows(&self, attempts: u32, elapsed: Duration, wait: Duration) -> bool {
        attempts < self.max_attempts && elapsed.saturating_add(wait) <= self.max_elapsed
    }
}

/// One operation's spending of a [`RetryPolicy`]: attempts made, time since the first.
#[derive(Debug)]
pub struct Budget {
    policy: RetryPolicy,
    started: Instant,
    attempts: u32,
}

/// A spent budget: what the caller's "gave up" error reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    pub attempts: u32,
    pub elapsed: Duration,
}

impl Budget {
    /// Starts the clock.
    pub fn start(policy: RetryPolicy) -> Self {
        Self {
            policy,
            started: Instant::now(),
            attempts: 0,
        }
    }

    /// Counts one attempt; returns its number (1 for the first).
    pub fn count_attempt(&mut self) -> u32 {
        self.attempts += 1;
        self.attempts
    }

    /// Attempts counted so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The jittered wait before the next attempt, at least `retry_after`.
    pub fn next_wait(&self, retry_after: Option<Duration>) -> Duration {
        self.policy
            .backoff(self.attempts, retry_after, random_draw())
    }

    /// `Err` when another attempt after `wait` would break the budget.
    pub fn check(&self, wait: Duration) -> Result<(), Spent> {
        let elapsed = self.started.elapsed();
        if self.policy.allows(self.attempts, elapsed, wait) {
            Ok(())
        } else {
            Err(Spent {
                attempts: self.attempts,
                elapsed,
            })
        }
    }
}

/// Parses `Retry-After` as delta-seconds (RFC 9110 §10.2.3). The HTTP-date form is not
/// seen from AWS and is ignored (the jittered backoff applies instead).
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let seconds: u64 = text.parse().ok()?;
    Some(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(30),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }

    #[test]
    fn backoff_doubles_per_retry_within_jitter_bounds() {
        let p = policy();
        for (retry, step_ms) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1600)] {
            let low = p.backoff(retry, None, 0.0);
            let high = p.backoff(retry, None, 0.999_999);
            assert_eq!(low, Duration::from_millis(step_ms / 2), "retry {retry} low");
            assert!(
                high <= Duration::from_millis(step_ms),
                "retry {retry} high {high:?}"
            );
            assert!(
                high > Duration::from_millis(step_ms * 99 / 100),
                "retry {retry}"
            );
            let mid = p.backoff(retry, None, 0.5);
            assert!(low <= mid && mid <= high);
        }
    }

    #[test]
    fn backoff_is_capped_at_the_max_delay_even_for_huge_retry_numbers() {
        let p = policy();
        assert_eq!(p.backoff(6, None, 1.0), Duration::from_secs(2));
        assert_eq!(p.backoff(u32::MAX, None, 1.0), Duration::from_secs(2));
        assert_eq!(p.backoff(u32::MAX, None, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_is_a_floor_for_the_wait() {
        let p = policy();
        let two = Duration::from_secs(2);
        for jitter in [0.0, 0.5, 0.99] {
            assert!(p.backoff(1, Some(two), jitter) >= two);
        }
        // A short Retry-After does not shorten a longer backoff step.
        let step = p.backoff(5, Some(Duration::from_millis(10)), 0.0);
        assert_eq!(step, Duration::from_millis(800));
        // Retry-After is not capped by max_delay, only by MAX_RETRY_AFTER.
        assert_eq!(
            p.backoff(1, Some(Duration::from_secs(7)), 0.0),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.backoff(1, Some(Duration::from_secs(86_400)), 0.0),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn budget_stops_at_max_attempts_or_max_elapsed() {
        let p = policy();
        assert!(p.allows(1, Duration::ZERO, Duration::from_secs(1)));
        assert!(p.allows(4, Duration::from_secs(29), Duration::from_secs(1)));
        assert!(
            !p.allows(5, Duration::ZERO, Duration::ZERO),
            "attempts spent"
        );
        assert!(
            !p.allows(1, Duration::from_secs(29), Duration::from_secs(2)),
            "time spent"
        );
    }

    #[test]
    fn a_budget_counts_attempts_and_reports_what_was_spent() {
        let mut budget = Budget::start(RetryPolicy {
            max_attempts: 3,
            ..policy()
        });
        assert_eq!(budget.count_attempt(), 1);
        let wait = budget.next_wait(None);
        assert!(Duration::from_millis(50) <= wait && wait <= Duration::from_millis(100));
        assert_eq!(budget.check(wait), Ok(()));
        assert!(budget.next_wait(Some(Duration::from_secs(4))) >= Duration::from_secs(4));
        assert!(
            budget.check(Duration::from_secs(31)).is_err(),
            "a wait past max_elapsed"
        );
        budget.count_attempt();
        assert_eq!(budget.count_attempt(), 3);
        let spent = budget.check(Duration::ZERO).unwrap_err();
        assert_eq!(spent.attempts, 3);
        assert_eq!(budget.attempts(), 3);
    }

    #[test]
    fn retry_after_parses_delta_seconds_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(parse_retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static(" 2 "));
        assert_eq!(parse_retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("-1"));
        assert_eq!(parse_retry_after(&headers), None);
    }
}
