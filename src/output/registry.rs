//! Every output in one table, with its door and the rule [`Access::check`] applies there, and
//! the one place outputs start: the daemon-wide ones once ([`start_rtsp`], [`start_services`]:
//! RTSP, WebRTC, ONVIF and its discovery), a camera's own with the camera ([`start_camera`]: its
//! RTSP mounts, its snapshot maker, record and push). The analysis reads pictures through the
//! control layer, which sits above this module, so the app starts it next to [`start_services`].
//!
//! A unit test checks that every module of `src/output` is in [`OUTPUTS`] and that every door
//! served over HTTP has its routes declared, so an output cannot land without a rule.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access::{Access, Action, Door};
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::stream::clock::SharedTime;

use super::onvif::Onvif;
use super::rtsp::{RtspError, RtspServer};
use super::snapshot::Snapshotter;
use super::webrtc::Server as WebrtcServer;
use super::{Context, Outputs, push, record};
use crate::stream::camera::Camera;

/// How an output is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Clients come to it through a door, and `Access::check` decides with this action.
    Door(Door, Action),
    /// It only sends, to destinations the configuration file names (no door to open).
    Outbound,
}

/// One output and how it is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    /// The module name under `src/output` (or the crate root, for `analysis`).
    pub name: &'static str,
    /// Its door and rule.
    pub reach: Reach,
    /// Where it is started.
    pub started_by: &'static str,
}

/// Every output of camstream.
pub const OUTPUTS: &[Output] = &[
    Output {
        name: "rtsp",
        reach: Reach::Door(Door::Rtsp, Action::View),
        started_by: "output::registry::start_rtsp; its mounts by output::registry::start_camera",
    },
    Output {
        name: "webrtc",
        reach: Reach::Door(Door::Webrtc, Action::View),
        started_by: "output::registry::start_services",
    },
    Output {
        name: "onvif",
        reach: Reach::Door(Door::Onvif, Action::View),
        started_by: "output::registry::start_services (and its discovery)",
    },
    Output {
        name: "snapshot",
        reach: Reach::Door(Door::Http, Action::View),
        started_by: "output::registry::start_camera (one snapshot maker per camera)",
    },
    Output {
        name: "record",
        reach: Reach::Door(Door::Http, Action::View),
        started_by: "output::registry::start_camera",
    },
    Output {
        name: "push",
        reach: Reach::Outbound,
        started_by: "output::registry::start_camera",
    },
    // MJPEG (issue 28).
    Output {
        name: "mjpeg",
        reach: Reach::Door(Door::Http, Action::View),
        started_by: "output::registry::start_camera (its encoders start with their first client)",
    },
    // HLS (issue #28)
    Output {
        name: "hls",
        reach: Reach::Door(Door::Http, Action::View),
        started_by: "output::registry::start_camera (on demand, or always)",
    },
    Output {
        name: "analysis",
        reach: Reach::Outbound,
        started_by: "app::start, next to output::registry::start_services",
    },
    // MQTT (issue #25, branch events): publishes to the broker the configuration names, and
    // takes Home Assistant's switches, checked as `control` at the MQTT door.
    Output {
        name: "mqtt",
        reach: Reach::Door(Door::Mqtt, Action::Control),
        started_by: "app::start, next to output::registry::start_services (crate::mqtt)",
    },
];

/// Starts the RTSP server with its accounts and rules; blocks until the GLib thread reports,
/// so call it from a blocking context.
pub fn start_rtsp(
    config: &Config,
    access: Arc<Access>,
    time: SharedTime,
    metrics: Metrics,
) -> Result<RtspServer, RtspError> {
    RtspServer::start(config, access, time, metrics)
}

/// A camera's own outputs, as started.
pub struct CameraOutputs {
    /// What runs (record, push), for the status API.
    pub outputs: Outputs,
    /// The camera's snapshot maker (one encode per size at a time).
    pub snapshots: Arc<Snapshotter>,
    /// The camera's MJPEG encoders (issue 28).
    pub mjpeg: Arc<super::mjpeg::Mjpeg>,
    /// Its HLS channels, one per encoding.
    pub hls: Arc<super::hls::Hls>,
}

/// Starts the outputs of one camera: mounts its encodings on the RTSP server, makes its
/// snapshot maker and starts every output manager (record, push), each running until `cancel`
/// and keeping the returned [`Outputs`] current. The camera's down/up events are followed here
/// too, for hooks.
pub fn start_camera(
    camera: &Camera,
    rtsp: &RtspServer,
    ctx: &Context,
    cancel: &CancellationToken,
) -> CameraOutputs {
    for e in &camera.encodings {
        // Audio (issue #24): the sound rides in every mount of the camera, behind its door.
        rtsp.mount_with_audio(&camera.name, e, camera.audio());
        tracing::info!(stream = %e.name, mount = %e.mount, size = %format!("{}x{}@{}", e.width, e.height, e.fps), "Mounted");
    }
    crate::events::follow(
        camera.watch_status(),
        (
            crate::events::HookEvent::CameraDown,
            crate::events::HookEvent::CameraUp,
        ),
        camera.name.clone(),
        Vec::new(),
        cancel.child_token(),
    );
    let outputs = Outputs::default();
    // Output managers are started here, one line each, as they land.
    record::start(camera, ctx, &outputs, cancel);
    push::start(camera, ctx, &outputs, cancel);
    let hls = super::hls::start(camera, ctx, &outputs, cancel);
    CameraOutputs {
        hls,
        outputs,
        snapshots: Arc::new(Snapshotter::new(camera.tap.clone())),
        mjpeg: Arc::new(super::mjpeg::Mjpeg::new(&camera.name, camera.tap.clone())),
    }
}

/// The daemon-wide outputs besides RTSP, as started.
pub struct Services {
    /// The WebRTC (WHEP) server, when enabled and its port could be opened.
    pub webrtc: Option<Arc<WebrtcServer>>,
    /// The ONVIF services, when enabled.
    pub onvif: Option<Arc<Onvif>>,
    /// Tasks to wait for at shutdown (ONVIF discovery).
    pub tasks: Vec<JoinHandle<()>>,
}

/// Starts WebRTC and ONVIF (with discovery, advertising `http_bound`, the address the HTTP
/// sidecar really listens on).
pub async fn start_services(
    config: &Config,
    access: Arc<Access>,
    rtsp_port: u16,
    http_bound: Option<SocketAddr>,
    shutdown: &CancellationToken,
) -> Result<Services, ConfigError> {
    // Browser viewing is an extra: a busy UDP port (another WebRTC server on 8189) must not
    // keep the camera off the air. The page falls back to snapshots and says so.
    let webrtc = if config.webrtc.enabled && config.http.enabled {
        match WebrtcServer::start(&config.webrtc, shutdown.child_token()).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "WebRTC is off");
                None
            }
        }
    } else {
        None
    };
    let onvif = if config.onvif.enabled {
        Some(Arc::new(Onvif::new(config, access, rtsp_port)?))
    } else {
        None
    };
    if let Some(o) = &onvif {
        o.events.listen(shutdown.child_token());
    }
    let mut tasks = Vec::new();
    if let Some(o) = onvif.as_ref().filter(|_| config.onvif.discovery) {
        let port = http_bound.map_or(config.http.port, |a| a.port());
        let task = super::onvif::discovery::start(
            o.identity.clone(),
            config.http.address,
            port,
            config.onvif.discovery_port,
            shutdown.child_token(),
        )
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        tasks.push(task);
    }
    Ok(Services {
        webrtc,
        onvif,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module under `src/output` is an output in the table (or named here as a helper),
    /// so a new output cannot be added without its door and rule.
    #[test]
    fn every_output_is_registered_with_a_rule() {
        const HELPERS: &[&str] = &["mod", "pipeline", "registry"];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/output");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let module = name.strip_suffix(".rs").unwrap_or(&name).to_string();
            if HELPERS.contains(&module.as_str()) {
                continue;
            }
            assert!(
                OUTPUTS.iter().any(|o| o.name == module),
                "src/output/{name} is not in output::registry::OUTPUTS: declare its door and rule"
            );
            found.push(module);
        }
        assert!(found.len() >= 6, "{found:?}");
    }
}
