//! Restart delays: exponential growth with a cap and random spread, so a fleet of cameras that
//! fail together does not retry in lock-step.

use std::time::Duration;

use crate::config::SupervisorConfig;

/// The delay policy, taken from `[supervisor]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: f64,
}

impl Backoff {
    /// The policy configured in `[supervisor]`.
    pub fn from_config(c: &SupervisorConfig) -> Self {
        Backoff {
            initial: Duration::from_millis(c.initial_backoff_ms),
            max: Duration::from_millis(c.max_backoff_ms),
            multiplier: c.multiplier,
            jitter: c.jitter,
        }
    }

    /// The delay before restart `attempt` (1-based) without jitter: initial × multiplier^(k-1),
    /// capped.
    pub fn nominal(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The delay with jitter applied; `unit` is a uniform sample in [0, 1) (passed in so the
    /// policy stays a pure function). The result never exceeds the cap.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let nominal = self.nominal(attempt).as_secs_f64();
        let spread = nominal * self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        let secs = (nominal + spread).clamp(0.0, self.max.as_secs_f64());
        Duration::from_secs_f64(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> Backoff {
        Backoff::from_config(&SupervisorConfig {
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
            multiplier: 2.0,
            jitter,
            ..Default::default()
        })
    }

    #[test]
    fn grows_then_caps() {
        let b = policy(0.0);
        let ms: Vec<u128> = (1..=9).map(|k| b.nominal(k).as_millis()).collect();
        assert_eq!(
            ms,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(b.nominal(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_within_spread_and_cap() {
        let b = policy(0.2);
        assert_eq!(b.delay(1, 0.0).as_millis(), 400);
        assert_eq!(b.delay(1, 0.5).as_millis(), 500);
        assert!(b.delay(1, 0.999_999).as_millis() <= 600);
        assert!(b.delay(20, 0.999_999) <= Duration::from_secs(30));
    }
}
