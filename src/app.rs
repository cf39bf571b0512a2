//! The running daemon: starts the RTSP server, the capture supervisor and the HTTP sidecar,
//! then waits for a signal or for the supervisor to give up, and shuts everything down in order.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::capture::{self, FrameStats};
use crate::config::{Config, ConfigError, SourceKind};
use crate::fanout::Fanout;
use crate::metrics::Metrics;
use crate::rtsp::{RtspError, RtspServer, SharedTime};
use crate::supervisor::{self, Exit, State, Status, Supervisor};

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

/// Checks that need the host, not just the values: ports free.
pub fn preflight(config: &Config) -> Result<(), ConfigError> {
    check_port(
        "rtsp.port",
        SocketAddr::new(config.rtsp.address, config.rtsp.port),
    )?;
    if config.http.enabled {
        check_port(
            "http.port",
            SocketAddr::new(config.http.address, config.http.port),
        )?;
    }
    Ok(())
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
            .unwrap_or(f64::INFINITY);
        metrics.set_flow(fps, age);
        last = now;
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
        tracing::warn!("{caveat}");
    }

    let metrics = Metrics::new();
    metrics.build_info(config.source.kind.as_str(), encoder.element());
    let fanout = Arc::new(Fanout::new());
    let stats = Arc::new(FrameStats::default());
    let time = SharedTime::now();

    let rtsp = RtspServer::start(&config.rtsp, fanout.clone(), time.clone(), metrics.clone())?;
    let shown = if config.rtsp.address.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        config.rtsp.address.to_string()
    };
    tracing::info!(
        url = %format!("rtsp://{shown}:{}{}", rtsp.port(), config.rtsp.mount),
        "RTSP server listening"
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (status_tx, _status_rx) = watch::channel(Status {
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
    };
    let mut supervisor = tokio::spawn(sup.run(shutdown_rx.clone()));
    let flow = tokio::spawn(publish_flow(stats, metrics, shutdown_rx.clone()));

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
    let _ = flow.await;
    tokio::task::spawn_blocking(move || rtsp.stop(Duration::from_millis(400)))
        .await
        .ok();
    tracing::info!(exit_code = code, "camstream stopped");
    Ok(code)
}
