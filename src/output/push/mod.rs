//! Restream pushes: each `[[push]]` of a stream is its own pipeline fed by the stream's main
//! hub (`output::pipeline`: a bounded leaky queue, a keyframe asked for at each connection, its
//! own backoff), so a dead, slow or refusing server restarts that push alone and never touches
//! the capture, the RTSP viewers or the other pushes.
//!
//! The manager follows the stream's configuration: a push added, removed, enabled, disabled or
//! changed (or whose secret changed at a reload) is started, stopped or replaced; the others are
//! left running.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::pipeline::{self, Spec};
use super::{Context, OutputHandle, Outputs};
use crate::config::PushConfig;
use crate::config::push_url::{PushUrl, expand_process_env};
use crate::stream::backoff::Backoff;
use crate::stream::camera::Camera;
use crate::stream::restart::Policy;
use crate::stream::status::{Health, LastError, RestartReason, State, unix_now};

pub mod chain;
mod metrics;

use metrics::PushMetrics;

/// The output name of a push in the status API, metrics and hub counters.
pub fn output_name(push: &str) -> String {
    format!("push:{push}")
}

/// How a push's state is shown in its status detail: the restart loop's `starting` is a push
/// connecting to its server.
pub fn state_label(state: &State) -> &'static str {
    match state {
        State::Starting => "connecting",
        other => other.name(),
    }
}

/// One line of `camstream check` for a push.
pub struct CheckLine {
    /// Whether it would start.
    pub ok: bool,
    /// What was checked, e.g. `video: push ground`.
    pub what: String,
    /// The URL (redacted) and elements, or what is missing.
    pub detail: String,
}

/// Checks every push of `stream` without connecting: the URL is well formed, the secret can be
/// read, and the elements its scheme needs are installed (naming the Debian package if not).
pub fn check(stream: &crate::config::StreamConfig) -> Vec<CheckLine> {
    stream
        .push
        .iter()
        .map(|p| {
            let what = format!("{}: push {}", stream.name, p.name);
            let url = p.shown_url();
            let fail = |detail: String| CheckLine {
                ok: false,
                what: what.clone(),
                detail,
            };
            let parsed = match expand_process_env(&p.url).and_then(|u| PushUrl::parse(&u)) {
                Ok(u) => u,
                Err(e) => return fail(format!("url {url:?} {e}")),
            };
            if !p.enabled {
                return CheckLine {
                    ok: true,
                    what,
                    detail: format!("{url} (disabled)"),
                };
            }
            let secret = match p.resolve_secret() {
                Ok(s) => s,
                Err(e) => return fail(format!("{url}: {e}")),
            };
            if let Err(e) = chain::describe(p, secret.as_deref()) {
                return fail(format!("{url}: {e}"));
            }
            let needed = chain::elements(parsed.scheme);
            let missing: Vec<String> = needed
                .iter()
                .filter(|e| !crate::stream::elements::has_element(e))
                .map(|e| {
                    format!(
                        "{e} missing (install Debian package {})",
                        crate::stream::elements::package_for(e)
                    )
                })
                .collect();
            if !missing.is_empty() {
                return fail(format!("{url}: {}", missing.join(", ")));
            }
            CheckLine {
                ok: true,
                what,
                detail: format!("{url} well formed; {} present", needed.join(", ")),
            }
        })
        .collect()
}

/// Starts the push manager of `camera`; it runs until `cancel`.
pub fn start(camera: &Camera, ctx: &Context, outputs: &Outputs, cancel: &CancellationToken) {
    let manager = Manager {
        camera: camera.clone(),
        ctx: ctx.clone(),
        outputs: outputs.clone(),
        cancel: cancel.clone(),
        active: BTreeMap::new(),
        bytes: BTreeMap::new(),
    };
    tokio::spawn(manager.run());
}

/// What a push runs with: its settings and the secret read when it started.
#[derive(Clone, PartialEq)]
struct Wanted {
    config: PushConfig,
    secret: Result<Option<String>, String>,
}

struct Active {
    wanted: Wanted,
    /// Cancels the running pipeline (none when disabled or failed before starting).
    cancel: Option<CancellationToken>,
    task: Option<tokio::task::JoinHandle<crate::stream::restart::Exit>>,
    /// Bytes of the running pipeline.
    counters: Option<Arc<pipeline::Counters>>,
}

struct Manager {
    camera: Camera,
    ctx: Context,
    outputs: Outputs,
    cancel: CancellationToken,
    active: BTreeMap<String, Active>,
    /// Bytes sent per push by pipelines already replaced, so the counter never goes back.
    bytes: BTreeMap<String, Arc<AtomicU64>>,
}

impl Manager {
    async fn run(mut self) {
        let mut config = self.camera.watch_config();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let pushes = config.borrow_and_update().push.clone();
            self.apply(&pushes).await;
            loop {
                tokio::select! {
                    changed = config.changed() => {
                        if changed.is_err() {
                            self.stop_all().await;
                            return;
                        }
                        break;
                    }
                    _ = tick.tick() => self.publish_bytes(),
                    _ = self.cancel.cancelled() => {
                        self.stop_all().await;
                        return;
                    }
                }
            }
        }
    }

    /// Brings the running pushes in line with `pushes`.
    async fn apply(&mut self, pushes: &[PushConfig]) {
        let wanted: BTreeMap<String, Wanted> = pushes
            .iter()
            .map(|p| {
                let secret = if p.enabled {
                    p.resolve_secret().map_err(|e| e.to_string())
                } else {
                    Ok(None)
                };
                (
                    p.name.clone(),
                    Wanted {
                        config: p.clone(),
                        secret,
                    },
                )
            })
            .collect();
        let names: Vec<String> = self.active.keys().cloned().collect();
        for name in names {
            match wanted.get(&name) {
                Some(w) if self.active.get(&name).is_some_and(|a| a.wanted == *w) => {}
                Some(_) => self.stop(&name, false).await,
                None => self.stop(&name, true).await,
            }
        }
        for (name, w) in wanted {
            if !self.active.contains_key(&name) {
                self.launch(w);
            }
        }
    }

    async fn stop(&mut self, name: &str, removed: bool) {
        let Some(a) = self.active.remove(name) else {
            return;
        };
        if let Some(c) = &a.cancel {
            c.cancel();
        }
        if let Some(task) = a.task {
            // The runner stops its pipeline within its own bound.
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        if let Some(c) = &a.counters {
            self.retire_bytes(name, c);
        }
        if removed {
            self.outputs.remove(&output_name(name));
            tracing::info!(stream = %self.camera.name, push = %name, "Push removed");
        }
    }

    async fn stop_all(&mut self) {
        let names: Vec<String> = self.active.keys().cloned().collect();
        for n in names {
            self.stop(&n, true).await;
        }
    }

    fn retire_bytes(&mut self, name: &str, counters: &pipeline::Counters) {
        let total = self.bytes.entry(name.to_string()).or_default();
        total.fetch_add(counters.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn publish_bytes(&self) {
        for (name, a) in &self.active {
            let retired = self
                .bytes
                .get(name)
                .map_or(0, |b| b.load(Ordering::Relaxed));
            let live = a
                .counters
                .as_ref()
                .map_or(0, |c| c.bytes.load(Ordering::Relaxed));
            PushMetrics::new(&self.camera.name, name).set_bytes(retired + live);
        }
    }

    /// Registers a push that does not run (disabled, or unable to start) with its fixed status.
    fn park(&mut self, w: Wanted, shown: OutputHandle) {
        self.outputs.set(shown);
        self.active.insert(
            w.config.name.clone(),
            Active {
                wanted: w,
                cancel: None,
                task: None,
                counters: None,
            },
        );
    }

    /// Starts a push (or registers it as disabled, or as failed when its secret is missing).
    fn launch(&mut self, w: Wanted) {
        let p = w.config.clone();
        let stream = self.camera.name.clone();
        let output = output_name(&p.name);
        let metrics = PushMetrics::new(&stream, &p.name);
        let retired = self.bytes.entry(p.name.clone()).or_default().clone();
        let url = p.shown_url();
        let scheme = expand_process_env(&p.url)
            .and_then(|u| PushUrl::parse(&u))
            .map(|u| u.scheme.as_str())
            .unwrap_or("?");
        let fixed = |health: Health| {
            let (_tx, rx) = watch::channel(health);
            rx
        };
        if !p.enabled {
            tracing::info!(%stream, push = %p.name, url = %url, "Push disabled");
            let health = Health {
                state: State::Disabled,
                ..Health::default()
            };
            metrics.set_state(&health.state);
            self.park(
                w,
                handle(
                    &output,
                    fixed(health),
                    Detail::new(&p, scheme, None, retired),
                ),
            );
            return;
        }
        // Audio (issue #24): the stream's AAC rides along where the container carries it.
        let sound = self.camera.audio();
        let built = match &w.secret {
            Ok(secret) => chain::describe_with_audio(&p, secret.as_deref(), sound.is_some())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        };
        let chain = match built {
            Ok(c) => c,
            Err(message) => {
                // Nothing to retry until the configuration (or the secret file, at a reload)
                // changes: shown as stopped with the reason.
                tracing::error!(%stream, push = %p.name, url = %url, error = %message, "Push cannot start");
                let health = Health {
                    state: State::Stopped,
                    restarts: 0,
                    last_error: Some(LastError {
                        reason: RestartReason::StateChangeFailure,
                        message,
                        at_unix: unix_now(),
                    }),
                };
                metrics.set_state(&health.state);
                metrics.set_last_error(&health);
                self.park(
                    w,
                    handle(
                        &output,
                        fixed(health),
                        Detail::new(&p, scheme, None, retired),
                    ),
                );
                return;
            }
        };
        let policy = Policy {
            backoff: Backoff::from_config(&crate::config::SupervisorConfig {
                initial_backoff_ms: p.initial_backoff_ms,
                max_backoff_ms: p.max_backoff_ms,
                ..Default::default()
            }),
            stable: Duration::from_secs(30),
            // A push never gives up: the server may come back at any time.
            max_retries: 0,
        };
        tracing::info!(%stream, push = %p.name, url = %url, elements = %chain.shown, "Push starting");
        let spec = Spec {
            output: output.clone(),
            description: chain.description,
            shown: chain.shown,
            policy,
            start_timeout: Duration::from_millis(p.start_timeout_ms),
            secrets: chain.secrets,
        };
        let cancel = self.cancel.child_token();
        let m = metrics.clone();
        let feed = sound.map(|a| {
            crate::stream::audio::Feed::new(
                a,
                crate::stream::audio::AudioCodec::Aac,
                chain::AUDIO_SOURCE_NAME,
                &output,
            )
        });
        let running = pipeline::spawn_with(
            self.camera.main().hub.clone(),
            self.ctx.time.clone(),
            spec,
            cancel.clone(),
            Box::new(move |h, restart| {
                m.set_state(&h.state);
                if let Some(r) = restart {
                    m.restart(r);
                }
                m.set_last_error(h);
            }),
            Box::new(move |built| {
                if let Some(f) = &feed {
                    f.attach(built);
                }
            }),
        );
        crate::events::follow(
            running.health.clone(),
            (
                crate::events::HookEvent::PushDown,
                crate::events::HookEvent::PushUp,
            ),
            stream.to_string(),
            vec![("push", p.name.clone())],
            cancel.clone(),
        );
        self.outputs.set(handle(
            &output,
            running.health.clone(),
            Detail::new(&p, scheme, Some(running.counters.clone()), retired),
        ));
        self.active.insert(
            p.name.clone(),
            Active {
                wanted: w,
                cancel: Some(cancel),
                task: Some(running.task),
                counters: Some(running.counters),
            },
        );
    }
}

/// What the status API shows of a push besides its health.
struct Detail {
    url: String,
    scheme: &'static str,
    enabled: bool,
    counters: Option<Arc<pipeline::Counters>>,
    retired: Arc<AtomicU64>,
}

impl Detail {
    fn new(
        p: &PushConfig,
        scheme: &'static str,
        counters: Option<Arc<pipeline::Counters>>,
        retired: Arc<AtomicU64>,
    ) -> Self {
        Detail {
            url: p.shown_url(),
            scheme,
            enabled: p.enabled,
            counters,
            retired,
        }
    }
}

fn handle(output: &str, health: watch::Receiver<Health>, d: Detail) -> OutputHandle {
    let h = health.clone();
    OutputHandle {
        name: output.to_string(),
        health,
        detail: Arc::new(move || {
            let health = h.borrow().clone();
            let live = d
                .counters
                .as_ref()
                .map_or(0, |c| c.bytes.load(Ordering::Relaxed));
            let backoff = match &health.state {
                State::Backoff {
                    attempt,
                    reason,
                    delay_ms,
                } => json!({ "attempt": attempt, "reason": reason, "delay_ms": delay_ms }),
                _ => Value::Null,
            };
            json!({
                "kind": "push",
                "url": d.url,
                "scheme": d.scheme,
                "enabled": d.enabled,
                "state": state_label(&health.state),
                "backoff": backoff,
                "bytes_sent": d.retired.load(Ordering::Relaxed) + live,
            })
        }),
    }
}
