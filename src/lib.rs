//! camstream: turns a camera into a reliable RTSP stream.
//!
//! One always-on, supervised capture pipeline (camera → H.264 encoder → access units) feeds a
//! shared gst-rtsp-server media that any number of viewers play from; an HTTP sidecar exposes
//! health, metrics and status. See `docs/` for operators and `shared/design.md` for the design.

pub mod app;
pub mod auth;
pub mod backoff;
pub mod capture;
pub mod check;
pub mod cli;
pub mod config;
pub mod fanout;
pub mod guard;
pub mod h264;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod rtsp;
pub mod rtsp_ffi;
pub mod snapshot;
pub mod supervisor;
pub mod telemetry;
