//! camstream: turns a camera into a reliable stream.
//!
//! Per camera, one always-on, supervised capture pipeline (camera → H.264 encoder → access units)
//! feeds a hub; every output (RTSP today) is a subscriber of that hub. An HTTP sidecar exposes
//! health, metrics, status and control. `docs/architecture.md` describes the layout.

pub(crate) mod access;
pub(crate) mod analysis;
pub mod app;
pub mod check;
pub mod cli;
pub mod config;
pub(crate) mod control;
pub(crate) mod events;
pub(crate) mod hooks;
pub(crate) mod http;
pub(crate) mod logins;
pub(crate) mod metrics;
pub(crate) mod motion;
/// MQTT and Home Assistant discovery (issue #25, branch events).
pub(crate) mod mqtt;
pub(crate) mod notify;
pub mod output;
pub(crate) mod process_metrics;
pub mod stream;
pub mod telemetry;
pub mod utc;
pub(crate) mod webclient;

/// Entry points of fuzz targets whose parsers live in private modules (fuzz/, and the stable
/// smoke runs in tests/hostile_fuzz_smoke.rs).
#[doc(hidden)]
pub mod fuzz {
    pub use crate::http::fuzz_range;
}
