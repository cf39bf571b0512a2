//! The running daemon: starts the RTSP server, the capture supervisor and the HTTP sidecar,
//! then waits for a signal or for the supervisor to give up, and shuts everything down in order.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::{Config, ConfigError, SourceKind};
use crate::http::{self, HttpError};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::output::rtsp::{Heartbeat, RtspError, RtspServer, SharedTime};
use crate::output::snapshot::{GopCache, Snapshotter};
use crate::stream::capture::{self, FrameStats};
use crate::stream::hub::Fanout;
use crate::stream::supervisor::{self, Exit, State, Status, Supervisor};

/// Why the daemon could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad configuration (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A required element or device is missing.
    #[error(transparent)]
    Capture(#[from] capture::CaptureError),
    /// The RTSP server could not start.
    #[error(transparent)]
    Rtsp(#[from] RtspError),
    /// The HTTP sidecar could not start.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The metrics recorder could not be installed.
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(String),
    /// GStreamer itself failed to initialise.
    #[error("GStreamer failed to initialise: {0}")]
    Gst(String),
}

impl AppError {
    /// The process exit code for this error: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// Fails with a configuration error when `port` on `address` cannot be bound now.
fn check_port(what: &str, addr: SocketAddr) -> Result<(), ConfigError> {
    if addr.port() == 0 {
        return Ok(());
    }
    TcpListener::bind(addr).map(drop).map_err(|e| {
        ConfigError::Invalid(format!(
            "{what} = {} cannot be used on {}: {e}",
            addr.port(),
            addr.ip()
        ))
    })
}

/// Checks that need the host, not just the values: the RTSP port is free (gst-rtsp-server
/// binds it later, on its own thread; the HTTP port is bound for real before that).
pub fn preflight(config: &Config) -> Result<(), ConfigError> {
    check_port(
        "rtsp.port",
        SocketAddr::new(config.rtsp.address, config.rtsp.port),
    )
}

/// Publishes frame rate and last-frame age once a second.
async fn publish_flow(
    stats: Arc<FrameStats>,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = (Instant::now(), stats.frames());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = supervisor::wait_shutdown(&mut shutdown) => return,
        }
        let now = (Instant::now(), stats.frames());
        let secs = now.0.duration_since(last.0).as_secs_f64().max(1e-3);
        let fps = (now.1 - last.1) as f64 / secs;
        let age = stats
            .last_frame_age()
            .map(|d| d.as_secs_f64())
            .unwrap_or(-1.0);
        metrics.set_flow(fps, age);
        last = now;
    }
}

/// Tells systemd the supervisor state, and pings its watchdog while the GLib loop answers
/// (a wedged RTSP loop stops the pings, and systemd restarts the service).
async fn notify_systemd(
    notifier: Notifier,
    heartbeat: Heartbeat,
    mut status: watch::Receiver<Status>,
    mut shutdown: watch::Receiver<bool>,
) {
    let interval = Notifier::watchdog_interval().map(|d| d / 2);
    let mut tick = tokio::time::interval(interval.unwrap_or(Duration::from_secs(3600)));
    let describe = |s: &Status| match &s.state {
        State::Backoff {
            attempt, reason, ..
        } => {
            format!(
                "camera down ({}), restart attempt {attempt}",
                reason.as_str()
            )
        }
        other => format!("{}; {} restarts", other.name(), s.restarts),
    };
    notifier.status(&describe(&status.borrow_and_update()));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if interval.is_some() && heartbeat.beat(Duration::from_secs(2)).await {
                    notifier.watchdog();
                }
            }
            changed = status.changed() => {
                if changed.is_err() { return; }
                let text = describe(&status.borrow_and_update());
                notifier.status(&text);
            }
            _ = supervisor::wait_shutdown(&mut shutdown) => return,
        }
    }
}

/// Waits for SIGINT or SIGTERM; a second one ends the process at once.
async fn wait_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("Cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "Shutting down"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "Shutting down"),
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("Second signal: exiting immediately");
        // The line is queued for stderr (telemetry.rs); exit() would drop it unwritten.
        crate::telemetry::flush(Duration::from_millis(100));
        std::process::exit(130);
    });
}

/// Runs the daemon until a signal (exit code 0) or until `max_retries` is exceeded (1).
pub async fn run(config: Config) -> Result<u8, AppError> {
    gst::init().map_err(|e| AppError::Gst(e.to_string()))?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        gstreamer = %gst::version_string(),
        "camstream starting"
    );
    preflight(&config)?;
    let config = Arc::new(config);

    if config.source.kind == SourceKind::Test {
        tracing::warn!(
            pattern = %config.source.pattern,
            "Streaming a TEST PATTERN, not a camera (source.kind = \"test\")"
        );
    }
    let cfg = config.clone();
    let (encoder, why) = tokio::task::spawn_blocking(move || capture::select_encoder(&cfg))
        .await
        .map_err(|e| AppError::Gst(e.to_string()))??;
    tracing::info!(encoder = encoder.element(), reason = %why, "Encoder selected");
    if let Some(caveat) = capture::encoder_caveats(&config, encoder) {
        tracing::info!("{caveat}");
    }

    // Bound before anything else starts so a taken port fails fast, with exit code 2.
    let http_listener = if config.http.enabled {
        let addr = SocketAddr::new(config.http.address, config.http.port);
        let listener = http::bind(addr)
            .await
            .map_err(|e| ConfigError::Invalid(format!("http.port = {}: {e}", config.http.port)))?;
        Some(listener)
    } else {
        None
    };
    let api_listener = if config.http.enabled && !config.http.api_address.is_empty() {
        let ip = config.http.api_address.parse().map_err(|_| {
            ConfigError::Invalid(format!("http.api_address = {:?}", config.http.api_address))
        })?;
        let addr = SocketAddr::new(ip, config.http.api_port);
        let listener = http::bind(addr).await.map_err(|e| {
            ConfigError::Invalid(format!("http.api_port = {}: {e}", config.http.api_port))
        })?;
        Some(listener)
    } else {
        None
    };
    let http_token = config.http_token()?;
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| AppError::Metrics(e.to_string()))?;
    let metrics = Metrics::new();
    metrics.build_info(config.source.kind.as_str(), encoder.element());
    let fanout = Arc::new(Fanout::new());
    let stats = Arc::new(FrameStats::default());
    let time = SharedTime::now();
    let gop = Arc::new(GopCache::default());

    let rtsp = RtspServer::start(&config, fanout.clone(), time.clone(), metrics.clone())?;
    let shown = if config.rtsp.address.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        config.rtsp.address.to_string()
    };
    tracing::info!(
        url = %format!(
            "{}://{shown}:{}{}",
            if config.tls.enabled() { "rtsps" } else { "rtsp" },
            rtsp.port(),
            config.rtsp.mount
        ),
        "RTSP server listening"
    );

    let rtsp_listening = Arc::new(AtomicBool::new(true));
    let notifier = Notifier::from_env();
    if let Some(n) = &notifier {
        n.ready();
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (status_tx, status_rx) = watch::channel(Status {
        state: State::Starting,
        restarts: 0,
        last_error: None,
        source: None,
        encoder: encoder.element().to_string(),
    });
    let sup = Supervisor {
        config: config.clone(),
        encoder,
        fanout: fanout.clone(),
        stats: stats.clone(),
        time,
        metrics: metrics.clone(),
        status: status_tx,
        gop: gop.clone(),
    };
    let mut supervisor = tokio::spawn(sup.run(shutdown_rx.clone()));
    let flow = tokio::spawn(publish_flow(stats.clone(), metrics, shutdown_rx.clone()));
    let upkeep = {
        let (p, mut rx) = (prometheus.clone(), shutdown_rx.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => p.run_upkeep(),
                    _ = supervisor::wait_shutdown(&mut rx) => return,
                }
            }
        })
    };
    let shared = http::Shared {
        config: config.clone(),
        status: status_rx.clone(),
        stats,
        heartbeat: rtsp.heartbeat(),
        rtsp_listening: rtsp_listening.clone(),
        viewers: rtsp.viewers(),
        prometheus,
        gop,
        snapshots: Arc::new(Snapshotter::default()),
        started: Instant::now(),
        token: http_token,
    };
    let main_part = if api_listener.is_some() {
        http::Part::Public
    } else {
        http::Part::All
    };
    let mut http_tasks = Vec::new();
    for (listener, part) in [(http_listener, main_part), (api_listener, http::Part::Api)] {
        let Some(listener) = listener else { continue };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(address = %addr, endpoints = ?part, "HTTP sidecar listening");
        }
        let app = http::router(shared.clone(), part);
        http_tasks.push(tokio::spawn(http::serve(
            listener,
            app,
            shutdown_rx.clone(),
        )));
    }
    let systemd = notifier.clone().map(|n| {
        tokio::spawn(notify_systemd(
            n,
            rtsp.heartbeat(),
            status_rx.clone(),
            shutdown_rx.clone(),
        ))
    });

    let code = tokio::select! {
        _ = wait_signal() => {
            let _ = shutdown_tx.send(true);
            // Bounded: the whole shutdown must fit in 2 s.
            let _ = tokio::time::timeout(Duration::from_millis(1500), &mut supervisor).await;
            0
        }
        exit = &mut supervisor => {
            let _ = shutdown_tx.send(true);
            match exit {
                Ok(Exit::MaxRetriesExceeded) => 1,
                Ok(Exit::Shutdown) => 0,
                Err(e) => {
                    tracing::error!(error = %e, "Supervisor panicked");
                    1
                }
            }
        }
    };
    if let Some(n) = &notifier {
        n.stopping();
    }
    let _ = flow.await;
    let _ = upkeep.await;
    if let Some(t) = systemd {
        let _ = t.await;
    }
    rtsp_listening.store(false, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || rtsp.stop(Duration::from_millis(400)))
        .await
        .ok();
    for t in http_tasks {
        let _ = tokio::time::timeout(Duration::from_millis(400), t).await;
    }
    tracing::info!(exit_code = code, "camstream stopped");
    Ok(code)
}
