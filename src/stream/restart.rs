//! The one restart loop every supervised pipeline runs under: the capture and each output that
//! can fail on its own. Exponential backoff with jitter and a cap, an attempt count that resets
//! after a stable period, `max_retries`, and restarts for reconfiguration that are not failures.
//! It runs on tokio, never on a streaming thread, and is tested under paused time.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use super::backoff::Backoff;
use super::status::{HasHealth, Health, LastError, RestartReason, State, unix_now};
use crate::config::SupervisorConfig;

/// When to restart and when to give up.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Delays between failures.
    pub backoff: Backoff,
    /// Working this long without a failure resets the attempt count.
    pub stable: Duration,
    /// Failures in a row allowed; 0 = never give up.
    pub max_retries: u32,
}

impl Policy {
    /// The policy configured in a `[supervisor]` section.
    pub fn from_config(c: &SupervisorConfig) -> Self {
        Policy {
            backoff: Backoff::from_config(c),
            stable: Duration::from_millis(c.stable_period_ms),
            max_retries: c.max_retries,
        }
    }
}

/// A pipeline lifetime that ended in failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// What kind.
    pub reason: RestartReason,
    /// For the log and the status.
    pub message: String,
    /// How long it worked before failing (`None`: it never started working).
    pub worked_for: Option<Duration>,
}

/// How one lifetime ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// Shutdown was requested.
    Shutdown,
    /// It failed; restart after the backoff delay.
    Failed(Failure),
    /// Restart at once, not counted as a failure (a setting changed).
    Restart(RestartReason),
}

/// How a backoff wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// The delay passed.
    Elapsed,
    /// Something (a reconfiguration) wants the restart now.
    RestartNow,
    /// Shutdown was requested.
    Shutdown,
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop.
    Shutdown,
    /// `max_retries` failures in a row.
    MaxRetriesExceeded,
}

/// A pipeline the loop keeps running.
pub trait Supervised: Send {
    /// Builds the pipeline and runs it until it fails, must restart, or shutdown is asked for.
    fn run_once(&mut self) -> impl Future<Output = RunEnd> + Send;
    /// Waits `delay` before the next attempt, or less when told to.
    fn wait(&mut self, delay: Duration) -> impl Future<Output = Woken> + Send;
    /// Called after every state change and restart (for metrics); default does nothing.
    fn observed(&mut self, _health: &Health, _restart: Option<RestartReason>) {}
}

/// Runs `runner` until shutdown or until `policy.max_retries` failures in a row, publishing
/// state on `status`. `what` names the pipeline in logs.
pub async fn supervise<S, R>(
    what: &str,
    policy: &Policy,
    runner: &mut R,
    status: &watch::Sender<S>,
) -> Exit
where
    S: HasHealth,
    R: Supervised,
{
    let publish = |runner: &mut R, restart: Option<RestartReason>, f: &dyn Fn(&mut Health)| {
        status.send_modify(|s| f(s.health_mut()));
        let health = status.borrow().health().clone();
        runner.observed(&health, restart);
    };
    let mut attempt: u32 = 0;
    loop {
        publish(runner, None, &|h| h.state = State::Starting);
        let failure = match runner.run_once().await {
            RunEnd::Shutdown => break,
            RunEnd::Restart(reason) => {
                tracing::info!(pipeline = what, reason = reason.as_str(), "Restarting now");
                publish(runner, Some(reason), &|h| h.restarts += 1);
                continue;
            }
            RunEnd::Failed(f) => f,
        };
        if failure.worked_for.is_some_and(|d| d >= policy.stable) {
            attempt = 0;
        }
        attempt += 1;
        let last = LastError {
            reason: failure.reason,
            message: failure.message.clone(),
            at_unix: unix_now(),
        };
        if policy.max_retries > 0 && attempt > policy.max_retries {
            tracing::error!(
                pipeline = what,
                failures = attempt,
                max_retries = policy.max_retries,
                reason = failure.reason.as_str(),
                "Max retries exceeded"
            );
            publish(runner, Some(failure.reason), &|h| {
                h.state = State::Stopped;
                h.last_error = Some(last.clone());
            });
            return Exit::MaxRetriesExceeded;
        }
        let delay = policy.backoff.delay(attempt, rand::random::<f64>());
        tracing::warn!(
            pipeline = what,
            reason = failure.reason.as_str(),
            attempt,
            delay_ms = delay.as_millis() as u64,
            "Restarting in {:.1}s (attempt {attempt})",
            delay.as_secs_f64()
        );
        let state = State::Backoff {
            attempt,
            reason: failure.reason,
            delay_ms: delay.as_millis() as u64,
        };
        publish(runner, Some(failure.reason), &|h| {
            h.restarts += 1;
            h.last_error = Some(last.clone());
            h.state = state.clone();
        });
        match runner.wait(delay).await {
            Woken::Elapsed => {}
            Woken::RestartNow => attempt = 0,
            Woken::Shutdown => break,
        }
    }
    publish(runner, None, &|h| h.state = State::Stopped);
    Exit::Shutdown
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use tokio::time::Instant;

    /// Plays back scripted lifetimes, recording when each one started.
    struct Script {
        ends: VecDeque<(Duration, RunEnd)>,
        starts: Vec<Instant>,
        restarts: Vec<RestartReason>,
    }

    impl Supervised for Script {
        async fn run_once(&mut self) -> RunEnd {
            self.starts.push(Instant::now());
            match self.ends.pop_front() {
                Some((d, end)) => {
                    tokio::time::sleep(d).await;
                    end
                }
                None => RunEnd::Shutdown,
            }
        }
        async fn wait(&mut self, delay: Duration) -> Woken {
            tokio::time::sleep(delay).await;
            Woken::Elapsed
        }
        fn observed(&mut self, _h: &Health, restart: Option<RestartReason>) {
            self.restarts.extend(restart);
        }
    }

    fn policy(max_retries: u32) -> Policy {
        Policy {
            backoff: Backoff::from_config(&SupervisorConfig {
                initial_backoff_ms: 1000,
                max_backoff_ms: 8000,
                multiplier: 2.0,
                jitter: 0.0,
                ..SupervisorConfig::default()
            }),
            stable: Duration::from_secs(30),
            max_retries,
        }
    }

    fn fail(worked_s: Option<u64>) -> RunEnd {
        RunEnd::Failed(Failure {
            reason: RestartReason::Error,
            message: "boom".into(),
            worked_for: worked_s.map(Duration::from_secs),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_resets_after_stable_and_reconfigure_is_immediate() {
        let mut s = Script {
            ends: VecDeque::from([
                (Duration::ZERO, fail(None)),
                (Duration::ZERO, fail(None)),
                (Duration::ZERO, fail(None)),
                (Duration::from_secs(40), fail(Some(40))),
                (
                    Duration::from_secs(1),
                    RunEnd::Restart(RestartReason::Reconfigure),
                ),
            ]),
            starts: Vec::new(),
            restarts: Vec::new(),
        };
        let (tx, rx) = watch::channel(Health::default());
        let exit = supervise("test", &policy(0), &mut s, &tx).await;
        assert_eq!(exit, Exit::Shutdown);
        let gaps: Vec<u64> = s
            .starts
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis() as u64)
            .collect();
        // 1 s, 2 s, 4 s; then 40 s of work + 1 s (attempt reset); then 1 s of work + no delay.
        assert_eq!(gaps, vec![1000, 2000, 4000, 41_000, 1000]);
        assert_eq!(rx.borrow().restarts, 5);
        assert_eq!(rx.borrow().state, State::Stopped);
        assert_eq!(s.restarts.last(), Some(&RestartReason::Reconfigure));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_retries() {
        let mut s = Script {
            ends: (0..10).map(|_| (Duration::ZERO, fail(None))).collect(),
            starts: Vec::new(),
            restarts: Vec::new(),
        };
        let (tx, rx) = watch::channel(Health::default());
        let exit = supervise("test", &policy(2), &mut s, &tx).await;
        assert_eq!(exit, Exit::MaxRetriesExceeded);
        assert_eq!(s.starts.len(), 3, "the first run and two retries");
        assert_eq!(rx.borrow().state, State::Stopped);
        assert!(rx.borrow().last_error.is_some());
    }
}
