//! Client-side pacing of SCIM requests.
//!
//! AWS does not publish a SCIM rate limit and throttles bursts of a few hundred requests
//! (docs/emulator.md: ~200 users hit 429 within 10–15 s). Rather than learn the limit from 429s,
//! each client (one per AWS application) spends tokens from a local bucket before every
//! request, retries included. The default of 5 requests per second follows docs/emulator.md;
//! the burst lets a single PIM activation (lookup + PATCH + verify) go out at once.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::error::ScimError;

/// Default sustained rate: conservative next to the 10 req/s some clients use.
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 5;
/// Default burst: one activation's handful of calls without waiting.
pub const DEFAULT_BURST: u32 = 5;

/// A token bucket in front of one SCIM endpoint.
#[derive(Debug)]
pub struct Pacer {
    limiter: DefaultDirectRateLimiter,
}

impl Pacer {
    /// A pacer allowing `requests_per_second` sustained and `burst` at once.
    pub fn new(requests_per_second: u32, burst: u32) -> Result<Self, ScimError> {
        let rate = NonZeroU32::new(requests_per_second).ok_or_else(|| {
            ScimError::Config("requests_per_second must be at least 1".to_owned())
        })?;
        let burst = NonZeroU32::new(burst)
            .ok_or_else(|| ScimError::Config("burst must be at least 1".to_owned()))?;
        Ok(Self {
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
        })
    }

    /// Waits until a request may go out.
    pub async fn ready(&self) {
        self.limiter.until_ready().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn zero_rate_or_burst_is_a_configuration_error() {
        assert!(matches!(Pacer::new(0, 5), Err(ScimError::Config(_))));
        assert!(matches!(Pacer::new(5, 0), Err(ScimError::Config(_))));
    }

    #[tokio::test]
    async fn the_burst_goes_out_at_once_and_the_next_request_waits() {
        let pacer = Pacer::new(10, 3).unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            pacer.ready().await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(50),
            "burst was paced"
        );
        pacer.ready().await;
        assert!(
            start.elapsed() >= Duration::from_millis(80),
            "fourth request at 10/s should wait ~100 ms, waited {:?}",
            start.elapsed()
        );
    }
}
