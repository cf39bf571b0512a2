//! Everything that leaves the box: each output is a subscriber of a stream's hub and never a
//! second encode. A failing or stalled output never touches the capture or the other outputs.
//!
//! Where a new output goes: a module here that (1) takes its settings from its own section of
//! `StreamConfig`, (2) runs each of its pipelines through [`pipeline::spawn`] (appsrc fed by the
//! hub, its own restart loop), (3) follows configuration changes through
//! `Camera::watch_config()`, and (4) registers what it runs in the stream's [`Outputs`] so the
//! status API shows it. [`registry::start_camera`] is where each output's manager is started for
//! a stream, beside its RTSP mounts and its snapshot maker.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::stream::clock::SharedTime;
use crate::stream::status::Health;

pub mod hls;
pub mod mjpeg;
pub mod onvif;
pub mod pipeline;
pub mod push;
pub mod record;
pub mod registry;
pub mod rtsp;
pub mod snapshot;
pub mod webrtc;

/// One running output of a stream, as the status API shows it.
#[derive(Clone)]
pub struct OutputHandle {
    /// Its name, unique within the stream (e.g. "record", "push:ground").
    pub name: String,
    /// Its state and history.
    pub health: watch::Receiver<Health>,
    /// Output-specific figures for the status API (bytes sent, current file, ...).
    pub detail: Arc<dyn Fn() -> Value + Send + Sync>,
}

/// The outputs of one stream; their managers add and remove entries as configuration changes.
#[derive(Clone, Default)]
pub struct Outputs {
    inner: Arc<Mutex<Vec<OutputHandle>>>,
}

impl Outputs {
    /// Adds or replaces the output named `handle.name`.
    pub fn set(&self, handle: OutputHandle) {
        let mut v = self.inner.lock().unwrap();
        v.retain(|h| h.name != handle.name);
        v.push(handle);
    }

    /// Removes an output.
    pub fn remove(&self, name: &str) {
        self.inner.lock().unwrap().retain(|h| h.name != name);
    }

    /// Every output, as JSON for the status API.
    pub fn describe(&self) -> Vec<Value> {
        let v = self.inner.lock().unwrap().clone();
        v.iter()
            .map(|h| {
                let health = h.health.borrow().clone();
                json!({
                    "name": h.name,
                    "health": health,
                    "detail": (h.detail)(),
                })
            })
            .collect()
    }
}

/// What output managers need besides the camera.
#[derive(Clone)]
pub struct Context {
    /// The clock every pipeline shares.
    pub time: SharedTime,
    /// `[hls]` (daemon-wide).
    pub hls: crate::config::HlsConfig,
}
