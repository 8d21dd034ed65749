//! Exponential backoff, the one shape every retry loop in pimbridge waits by: outbound HTTP
//! retries, failed jobs and Graph hints, the start-up bootstrap, the LISTEN reconnects.
//!
//! The wait before retry `n` is `first · 2^(n-1)`, capped at `max`. With jitter it is drawn
//! uniformly from `[step/2, step]` ("equal jitter": half fixed so it never collapses to zero,
//! half random so clients that failed together do not retry together). A floor (a server's
//! `Retry-After`) raises the wait, never lowers it, and is not capped: the server knows best.
//!
//! Pure functions: the random draw is a parameter, so the shape is tested without a clock.

use std::time::Duration;

/// A backoff shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait before the first retry.
    pub first: Duration,
    /// Ceiling of the exponential step.
    pub max: Duration,
    /// Whether the wait is drawn from `[step/2, step]` rather than being the step.
    pub jitter: bool,
}

impl Backoff {
    /// Doubling from `first` up to `max`, without jitter.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            jitter: false,
        }
    }

    /// The same shape with equal jitter.
    pub const fn jittered(self) -> Self {
        Self {
            jitter: true,
            ..self
        }
    }

    /// The exponential step before retry number `retry` (1 for the first; 0 counts as 1).
    pub fn step(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(31);
        self.first.saturating_mul(1u32 << exponent).min(self.max)
    }

    /// The wait before retry number `retry`: the step (jittered by `draw ∈ [0, 1)` if this
    /// shape has jitter), at least `floor`.
    pub fn delay(&self, retry: u32, floor: Option<Duration>, draw: f64) -> Duration {
        let step = self.step(retry);
        let wait = if self.jitter {
            let draw = draw.clamp(0.0, 1.0);
            step / 2 + step.mul_f64(draw) / 2
        } else {
            step
        };
        floor.map_or(wait, |floor| wait.max(floor))
    }

    /// [`Self::delay`] with a fresh random draw.
    pub fn delay_now(&self, retry: u32, floor: Option<Duration>) -> Duration {
        self.delay(retry, floor, random_draw())
    }
}

/// A uniform draw in `[0, 1)` for [`Backoff::delay`].
pub fn random_draw() -> f64 {
    rand::random::<f64>()
}

/// A retry count kept as `i32` in the database (attempts so far) as the `retry` argument.
pub fn retry_number(attempts: i32) -> u32 {
    u32::try_from(attempts).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn steps_double_from_the_first_wait_up_to_the_cap() {
        let b = Backoff::new(ms(100), ms(2_000));
        let steps: Vec<u64> = (0..=7).map(|n| b.step(n).as_millis() as u64).collect();
        assert_eq!(steps, [100, 100, 200, 400, 800, 1_600, 2_000, 2_000]);
        assert_eq!(
            b.step(u32::MAX),
            ms(2_000),
            "huge retry numbers stay capped"
        );
        let huge = Backoff::new(Duration::from_secs(u64::MAX / 4), Duration::MAX);
        assert!(huge.step(40) >= huge.step(3), "no overflow");
    }

    #[test]
    fn without_jitter_the_wait_is_the_step_whatever_the_draw() {
        let b = Backoff::new(ms(250), Duration::from_secs(10));
        for draw in [0.0, 0.3, 0.999] {
            assert_eq!(b.delay(3, None, draw), ms(1_000));
        }
    }

    #[test]
    fn jitter_keeps_the_wait_between_half_the_step_and_the_step() {
        let b = Backoff::new(ms(100), ms(2_000)).jittered();
        for retry in 1..=8 {
            let step = b.step(retry);
            assert_eq!(b.delay(retry, None, 0.0), step / 2, "retry {retry}");
            let mut previous = Duration::ZERO;
            for i in 0..100 {
                let wait = b.delay(retry, None, f64::from(i) / 100.0);
                assert!(step / 2 <= wait && wait <= step, "retry {retry}: {wait:?}");
                assert!(wait >= previous, "grows with the draw");
                previous = wait;
            }
            assert!(b.delay(retry, None, 0.999_999) > step * 99 / 100);
            // Out-of-range draws are clamped, not trusted.
            assert_eq!(b.delay(retry, None, -3.0), step / 2);
            assert_eq!(b.delay(retry, None, 7.0), step);
        }
        for _ in 0..1_000 {
            let wait = b.delay_now(2, None);
            assert!(ms(100) <= wait && wait <= ms(200), "{wait:?}");
            assert!((0.0..1.0).contains(&random_draw()));
        }
    }

    #[test]
    fn a_floor_raises_the_wait_but_never_lowers_it_and_is_not_capped() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(20)), 0.0),
            Duration::from_secs(20)
        );
        assert_eq!(
            b.delay(5, Some(Duration::from_secs(2)), 0.0),
            Duration::from_secs(16)
        );
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(3_600)), 0.0),
            Duration::from_secs(3_600),
            "the cap is for the computed step only"
        );
        let jittered = b.jittered();
        for draw in [0.0, 0.5, 0.99] {
            assert!(
                jittered.delay(1, Some(Duration::from_secs(2)), draw) >= Duration::from_secs(2)
            );
        }
    }

    #[test]
    fn database_attempt_counts_map_to_retry_numbers() {
        assert_eq!(retry_number(-1), 0);
        assert_eq!(retry_number(0), 0);
        assert_eq!(retry_number(4), 4);
    }
}
