//! Refused logins, at every door that takes a password (RTSP, the page's sign-in): each is
//! counted in `camstream_auth_failures_total` and logged with the peer and the user name tried
//! (never the password), at most a few lines a minute plus a count of the suppressed ones, so a
//! brute force cannot fill the disk.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::access::Door;

/// Lines logged per window before the rest are only counted.
pub const LOG_BURST: u32 = 5;
/// The window the burst refills in.
pub const LOG_WINDOW: Duration = Duration::from_secs(60);

/// Logs at most `burst` times per `window`, then one summary line, so a flood of events cannot
/// flood the log.
pub struct LogLimiter {
    window: Duration,
    burst: u32,
    state: Mutex<(Instant, u32, u64)>,
}

impl LogLimiter {
    /// A limiter allowing `burst` lines per `window`.
    pub fn new(burst: u32, window: Duration) -> Self {
        LogLimiter {
            window,
            burst,
            state: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    /// Whether to log now; `Some(n)` also reports `n` lines suppressed since the last one.
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(s.0) >= self.window {
            *s = (now, 0, s.2);
        }
        if s.1 < self.burst {
            s.1 += 1;
            let suppressed = std::mem::take(&mut s.2);
            Some(suppressed)
        } else {
            s.2 += 1;
            None
        }
    }
}

/// Counts and logs refused logins at one door, with the caps every door shares.
pub struct RefusedLogins {
    door: Door,
    message: &'static str,
    limiter: LogLimiter,
    counter: metrics::Counter,
}

impl RefusedLogins {
    /// The counter and a rate-capped log for `door`, whose lines say `message`.
    pub fn new(door: Door, message: &'static str) -> Self {
        RefusedLogins {
            door,
            message,
            limiter: LogLimiter::new(LOG_BURST, LOG_WINDOW),
            counter: metrics::counter!(crate::metrics::names::AUTH_FAILURES),
        }
    }

    /// Notes one refused login from `peer` that tried the user name `user`.
    pub fn refused(&self, peer: &str, user: &str) {
        self.counter.increment(1);
        if let Some(suppressed) = self.limiter.allow(Instant::now()) {
            tracing::warn!(
                door = self.door.as_str(),
                peer,
                user,
                suppressed,
                "{}",
                self.message
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_capped_per_window_and_reports_what_it_dropped() {
        let l = LogLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0), None);
        assert_eq!(l.allow(t0), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(61)), Some(2));
    }
}
