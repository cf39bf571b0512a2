//! Event hooks: `[[hooks]]` entries run a command (argv, no shell; the event's fields as
//! `CAMSTREAM_*` environment variables) or POST the event as JSON to a webhook. Bounded on every
//! side: at most `hook_limits.max_concurrent` at once, started in event order; events waiting
//! for a slot stay in the event bus (256 deep; beyond that the oldest are dropped and counted);
//! each run is killed (its whole process group) or abandoned at its `timeout_s`. Failures are logged and counted
//! (`camstream_hooks_runs_total`). Nothing here can hold up a stream: hooks only listen to the
//! event bus, and a listener that falls behind loses events, not frames.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::config::{HookConfig, HookEvent, HookLimits};
use crate::events::{self, Event};
use crate::metrics::names;

/// Largest webhook answer read (the body is only logged on failure).
const MAX_ANSWER: usize = 4096;

/// How a run ended, as the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Failed,
    Timeout,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
        }
    }
}

fn kind(h: &HookConfig) -> &'static str {
    if h.run.is_empty() { "webhook" } else { "run" }
}

fn count(event: HookEvent, kind: &'static str, outcome: Outcome) {
    metrics::counter!(names::HOOK_RUNS, "event" => event.as_str(), "kind" => kind, "result" => outcome.as_str())
        .increment(1);
}

/// Starts the hook runner when hooks are configured; it listens until `cancel`.
pub fn start(hooks: &[HookConfig], limits: &HookLimits, cancel: CancellationToken) {
    if hooks.is_empty() {
        return;
    }
    for h in hooks {
        if let Some(e) = h.on {
            for o in [Outcome::Ok, Outcome::Failed, Outcome::Timeout] {
                let _ = metrics::counter!(names::HOOK_RUNS, "event" => e.as_str(), "kind" => kind(h), "result" => o.as_str());
            }
        }
    }
    metrics::gauge!(names::HOOKS_RUNNING).set(0.0);
    let _ = metrics::counter!(names::HOOK_EVENTS_MISSED);
    tracing::info!(
        hooks = hooks.len(),
        max_concurrent = limits.max_concurrent,
        "Event hooks active"
    );
    let hooks: Arc<[HookConfig]> = hooks.into();
    let slots = Arc::new(Semaphore::new(limits.max_concurrent as usize));
    // Subscribed before returning, so no event published after start is missed.
    let mut rx = events::subscribe();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                r = rx.recv() => match r {
                    Ok(e) => e,
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "Hooks fell behind; events were dropped");
                        metrics::counter!(names::HOOK_EVENTS_MISSED).increment(n);
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = cancel.cancelled() => return,
            };
            for h in hooks.iter() {
                if h.on != Some(event.kind) || !(h.stream.is_empty() || h.stream == event.stream) {
                    continue;
                }
                // Runs start in event order; while every slot is busy, events wait in the
                // bus (which drops and counts the oldest when full), never in the stream.
                let permit = tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                    _ = cancel.cancelled() => return,
                };
                let (h, e) = (h.clone(), event.clone());
                tokio::spawn(async move {
                    metrics::gauge!(names::HOOKS_RUNNING).increment(1.0);
                    let outcome = run_one(&h, &e).await;
                    metrics::gauge!(names::HOOKS_RUNNING).decrement(1.0);
                    count(e.kind, kind(&h), outcome);
                    drop(permit);
                });
            }
        }
    });
}

async fn run_one(h: &HookConfig, e: &Event) -> Outcome {
    let timeout = Duration::from_secs(u64::from(h.timeout_s));
    if h.run.is_empty() {
        webhook(h, e, timeout).await
    } else {
        command(h, e, timeout).await
    }
}

async fn webhook(h: &HookConfig, e: &Event, timeout: Duration) -> Outcome {
    let body = e.to_json().to_string().into_bytes();
    match crate::webclient::post_json(&h.webhook, body, timeout, MAX_ANSWER).await {
        Ok(a) if (200..300).contains(&a.status) => {
            tracing::debug!(event = e.kind.as_str(), url = %h.webhook, status = a.status, "Webhook delivered");
            Outcome::Ok
        }
        Ok(a) => {
            let text = String::from_utf8_lossy(&a.body[..a.body.len().min(200)]).to_string();
            tracing::warn!(event = e.kind.as_str(), url = %h.webhook, status = a.status, answer = %text, "Webhook refused");
            Outcome::Failed
        }
        Err(err @ crate::webclient::WebError::Timeout { .. }) => {
            tracing::warn!(event = e.kind.as_str(), url = %h.webhook, error = %err, "Webhook timed out");
            Outcome::Timeout
        }
        Err(err) => {
            tracing::warn!(event = e.kind.as_str(), url = %h.webhook, error = %err, "Webhook failed");
            Outcome::Failed
        }
    }
}

async fn command(h: &HookConfig, e: &Event, timeout: Duration) -> Outcome {
    let program = &h.run[0];
    let mut cmd = tokio::process::Command::new(program);
    // A clean environment: the daemon's holds secrets (RTSP_PASSWORD, tokens, push keys) that a
    // hook has no business seeing. PATH and LANG so the command runs as expected, and the
    // event's own CAMSTREAM_* variables.
    cmd.env_clear();
    for key in ["PATH", "LANG"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
    }
    cmd.args(&h.run[1..])
        .envs(e.env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so a timeout kills whatever the command started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(err) => {
            tracing::warn!(event = e.kind.as_str(), program = %program, error = %err, "Hook command could not start");
            return Outcome::Failed;
        }
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            tracing::debug!(event = e.kind.as_str(), program = %program, "Hook command finished");
            Outcome::Ok
        }
        Ok(Ok(status)) => {
            tracing::warn!(event = e.kind.as_str(), program = %program, status = %status, "Hook command failed");
            Outcome::Failed
        }
        Ok(Err(err)) => {
            tracing::warn!(event = e.kind.as_str(), program = %program, error = %err, "Hook command could not be waited for");
            Outcome::Failed
        }
        Err(_) => {
            if let Some(pid) = child
                .id()
                .and_then(|p| rustix::process::Pid::from_raw(p as i32))
            {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = child.kill().await;
            tracing::warn!(event = e.kind.as_str(), program = %program, timeout_s = h.timeout_s, "Hook command killed at its timeout");
            Outcome::Timeout
        }
    }
}

/// Where a program given as `run[0]` resolves to: a path as is, a bare name through `PATH`.
fn resolve_program(program: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = std::path::PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| executable(p))
    })
}

/// `camstream check` lines for `[[hooks]]`, as `(ok, what, detail)`: each program is looked up
/// (nothing is run).
pub fn check(hooks: &[HookConfig]) -> Vec<(bool, String, String)> {
    let mut out = Vec::new();
    for (i, h) in hooks.iter().enumerate() {
        let on = h.on.map_or("?", HookEvent::as_str);
        let what = format!("hooks[{i}] ({on})");
        if let Some(program) = h.run.first() {
            out.push(match resolve_program(program) {
                Some(p) => (true, what, format!("runs {}", p.display())),
                None => (
                    false,
                    what,
                    format!("{program:?} is not an executable file (nor found in PATH)"),
                ),
            });
        } else {
            out.push((true, what, format!("POSTs to {}", h.webhook)));
        }
    }
    out
}
