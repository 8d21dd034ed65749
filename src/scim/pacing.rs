//! Client-side pacing of SCIM requests.
//!
//! AWS does not publish a SCIM rate limit and throttles bursts of a few hundred requests
//! (docs/emulator.md: ~200 users hit 429 within 10–15 s). Rather than learn the limit from 429s,
//! each client (one per AWS application and lane) spends tokens from a local bucket before every
//! request, retries included. The default of 5 requests per second follows docs/emulator.md;
//! the burst lets a single PIM activation (lookup + PATCH + verify) go out at once.
//!
//! The configured rate and burst are the application's budget across all replicas: each
//! replica's bucket holds its share, the budget divided by the live replicas
//! ([`Pacer::set_replicas`], told by the heartbeat; docs/architecture.md, "Outbound budgets").
//!
//! Rounding: governor takes the time between two tokens, so the rate is divided exactly (the
//! period `replicas / requests_per_second` is rounded up to the nanosecond): the sum of the
//! replicas' rates never exceeds the configured rate, however many there are, and a share may be
//! below one request per second. The burst is a whole number of requests: floor division with a
//! minimum of 1, so the sum of the bursts never exceeds the configured burst unless there are more
//! replicas than it (then it is one per replica).

use std::num::NonZeroU32;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::Notify;

use super::error::ScimError;

/// Default sustained rate: conservative next to the 10 req/s some clients use.
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 5;
/// Default burst: one activation's handful of calls without waiting.
pub const DEFAULT_BURST: u32 = 5;

/// The buckets' clock: tokio's, so that the waits in [`Pacer::ready`] sleep on the clock the
/// bucket measures, and a paused test runtime drives both exactly.
#[derive(Debug, Clone, Copy)]
struct TokioClock {
    origin: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.origin.elapsed())
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// One replica's part of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Live replicas the budget is divided among.
    pub replicas: u32,
    /// Time between two tokens: `replicas / requests_per_second`, rounded up to the nanosecond.
    pub period: Duration,
    /// Requests allowed at once: `burst / replicas`, rounded down, at least 1.
    pub burst: u32,
}

impl Share {
    /// The share of `replicas` (taken as 1 when 0) in a budget of `requests_per_second` and
    /// `burst`.
    pub fn of(requests_per_second: NonZeroU32, burst: NonZeroU32, replicas: u32) -> Self {
        let replicas = replicas.max(1);
        let rate = u128::from(requests_per_second.get());
        let nanos = (1_000_000_000 * u128::from(replicas)).div_ceil(rate);
        Self {
            replicas,
            // At most 2^32 s; a u64 of nanoseconds holds 584 years.
            period: Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)),
            burst: (burst.get() / replicas).max(1),
        }
    }

    /// The sustained rate of this share.
    pub fn requests_per_second(&self) -> f64 {
        1.0 / self.period.as_secs_f64()
    }

    fn quota(&self) -> Quota {
        // The period is at least 1 ns (a rate of at most 2^32 per second) and the burst at
        // least 1, so neither fallback is ever taken.
        let per_token =
            Quota::with_period(self.period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN));
        per_token.allow_burst(NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN))
    }
}

/// A token bucket in front of one SCIM endpoint, holding this replica's share of the
/// application's budget.
#[derive(Debug)]
pub struct Pacer {
    requests_per_second: NonZeroU32,
    burst: NonZeroU32,
    clock: TokioClock,
    current: RwLock<(Share, Arc<Limiter>)>,
    /// Wakes the requests waiting on a bucket that was just replaced.
    rebuilt: Notify,
}

impl Pacer {
    /// A pacer allowing `requests_per_second` sustained and `burst` at once, as if this were
    /// the only replica (until [`Pacer::set_replicas`] says otherwise).
    pub fn new(requests_per_second: u32, burst: u32) -> Result<Self, ScimError> {
        let rate = NonZeroU32::new(requests_per_second).ok_or_else(|| {
            ScimError::Config("requests_per_second must be at least 1".to_owned())
        })?;
        let burst = NonZeroU32::new(burst)
            .ok_or_else(|| ScimError::Config("burst must be at least 1".to_owned()))?;
        let clock = TokioClock {
            origin: tokio::time::Instant::now(),
        };
        let share = Share::of(rate, burst, 1);
        let limiter = Limiter::direct_with_clock(share.quota(), clock);
        Ok(Self {
            requests_per_second: rate,
            burst,
            clock,
            current: RwLock::new((share, Arc::new(limiter))),
            rebuilt: Notify::new(),
        })
    }

    /// Waits until a request may go out.
    pub async fn ready(&self) {
        loop {
            // Registered before the check, so that a rebuild between the two is not missed: a
            // wait measured on the old bucket (e.g. the smaller share) ends with it.
            let rebuilt = self.rebuilt.notified();
            let limiter = self.limiter();
            match limiter.check() {
                Ok(()) => return,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = rebuilt => {}
                    }
                }
            }
        }
    }

    /// The configured budget: requests per second and burst, across all replicas.
    pub fn budget(&self) -> (u32, u32) {
        (self.requests_per_second.get(), self.burst.get())
    }

    /// This replica's current share of the budget.
    pub fn share(&self) -> Share {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    /// Divides the budget among `replicas` live replicas (0 is taken as 1) and rebuilds the
    /// bucket; returns the new share, or `None` when it did not change. The tokens the old
    /// bucket had left carry over (up to the new burst), so a rebuild never hands out a fresh
    /// burst: a replica that just spent its share does not get another because one joined.
    pub fn set_replicas(&self, replicas: u32) -> Option<Share> {
        let share = Share::of(self.requests_per_second, self.burst, replicas);
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.0 == share {
            return None;
        }
        let left = available(&current.1, current.0.burst);
        let limiter = Limiter::direct_with_clock(share.quota(), self.clock);
        if let Some(spent) = NonZeroU32::new(share.burst.saturating_sub(left)) {
            // A new bucket is full; `spent <= burst`, so this succeeds.
            let _ = limiter.check_n(spent);
        }
        *current = (share, Arc::new(limiter));
        drop(current);
        self.rebuilt.notify_waiters();
        Some(share)
    }

    fn limiter(&self) -> Arc<Limiter> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }
}

/// Whole tokens `limiter` (of burst `burst`) has left. Empties it: it is being replaced. A
/// request of `n` takes nothing unless all `n` are there, so the first `n` that succeeds, from
/// the top, is what was left.
fn available(limiter: &Limiter, burst: u32) -> u32 {
    (1..=burst)
        .rev()
        .find(|&n| NonZeroU32::new(n).is_some_and(|n| matches!(limiter.check_n(n), Ok(Ok(())))))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    /// How many requests `pacer` lets out within `window` when asked without pause (a request
    /// due exactly at the end is not counted).
    async fn sent_within(pacer: &Pacer, window: Duration) -> u32 {
        let deadline = Instant::now() + window;
        let mut sent = 0;
        loop {
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline) => return sent,
                () = pacer.ready() => sent += 1,
            }
        }
    }

    #[test]
    fn zero_rate_or_burst_is_a_configuration_error() {
        assert!(matches!(Pacer::new(0, 5), Err(ScimError::Config(_))));
        assert!(matches!(Pacer::new(5, 0), Err(ScimError::Config(_))));
    }

    #[test]
    fn the_rate_is_divided_exactly_and_the_burst_rounded_down_to_at_least_one() {
        let one = Share::of(nz(5), nz(5), 1);
        assert_eq!((one.period, one.burst), (Duration::from_millis(200), 5));
        let two = Share::of(nz(5), nz(5), 2);
        assert_eq!((two.period, two.burst), (Duration::from_millis(400), 2));
        // The immediate lane's defaults over four replicas: 0.75/s and 6 at once each.
        let four = Share::of(nz(3), nz(25), 4);
        assert_eq!(four.period, Duration::from_nanos(1_333_333_334));
        assert_eq!(four.burst, 6);
        // More replicas than requests per second: below 1/s each, never 1/s each.
        let eight = Share::of(nz(5), nz(5), 8);
        assert_eq!(
            (eight.period, eight.burst),
            (Duration::from_millis(1600), 1)
        );
        assert_eq!(Share::of(nz(5), nz(5), 0), one, "no replica counts as one");
    }

    #[test]
    fn the_shares_of_all_replicas_never_add_up_to_more_than_the_budget() {
        for (rate, burst) in [(1, 1), (3, 25), (5, 5), (7, 3), (200, 50), (1000, 1)] {
            for replicas in 1..=40u32 {
                let share = Share::of(nz(rate), nz(burst), replicas);
                let total_rate = f64::from(replicas) * share.requests_per_second();
                assert!(
                    total_rate <= f64::from(rate) * (1.0 + 1e-12),
                    "{rate}/s over {replicas}: {total_rate}"
                );
                assert!(
                    replicas * share.burst <= burst.max(replicas),
                    "burst {burst} over {replicas}: {}",
                    share.burst
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_burst_goes_out_at_once_and_the_next_request_waits_one_period() {
        let pacer = Pacer::new(10, 3).unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            pacer.ready().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "burst was paced");
        pacer.ready().await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(100) && waited <= Duration::from_millis(101),
            "fourth request at 10/s should wait 100 ms, waited {waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_replica_halves_the_share_and_its_departure_restores_it() {
        let pacer = Pacer::new(10, 4).unwrap();
        assert_eq!(pacer.set_replicas(1), None, "already alone");
        // Alone: the burst, then 10/s.
        let window = Duration::from_millis(10_550);
        assert_eq!(sent_within(&pacer, window).await, 4 + 105);

        // Two replicas: 5/s and 2 at once. The bucket was just emptied, and stays empty.
        let share = pacer.set_replicas(2).expect("the share changed");
        assert_eq!((share.period, share.burst), (Duration::from_millis(200), 2));
        assert_eq!(pacer.share(), share);
        assert_eq!(sent_within(&pacer, window).await, 52);

        // Idle, the half bucket fills up to its 2; alone again, those 2 carry over (not a fresh
        // 4), then 10/s.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(pacer.set_replicas(1).is_some());
        assert_eq!(pacer.set_replicas(1), None);
        assert_eq!(sent_within(&pacer, window).await, 2 + 105);
        assert_eq!(pacer.budget(), (10, 4));
    }

    #[tokio::test(start_paused = true)]
    async fn three_replicas_busy_together_send_what_one_alone_would() {
        let window = Duration::from_millis(60_050);
        let alone = Pacer::new(5, 5).unwrap();
        let by_one = sent_within(&alone, window).await;
        assert_eq!(by_one, 5 + 300);

        let replicas: Vec<Pacer> = (0..3).map(|_| Pacer::new(5, 5).unwrap()).collect();
        for pacer in &replicas {
            pacer.set_replicas(3);
        }
        let sent =
            futures_util::future::join_all(replicas.iter().map(|p| sent_within(p, window))).await;
        // Each: a burst of 1 (its full bucket of 5 carried over, capped at the new burst), then
        // one every 600 ms.
        assert_eq!(sent, vec![1 + 100; 3]);
        assert!(sent.iter().sum::<u32>() <= by_one);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_move_to_the_rebuilt_bucket() {
        let pacer = Arc::new(Pacer::new(1, 1).unwrap());
        pacer.ready().await;
        // Alone, the next token comes after 1 s; over 4 replicas after 4 s.
        pacer.set_replicas(4);
        let start = Instant::now();
        let waiter = tokio::spawn({
            let pacer = pacer.clone();
            async move { pacer.ready().await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Alone again at 0.5 s: the waiter goes one period (1 s) of the new bucket later, not at
        // the 4 s it was waiting for.
        pacer.set_replicas(1);
        waiter.await.unwrap();
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(1_500) && waited <= Duration::from_millis(1_501),
            "waited {waited:?}"
        );
    }
}
