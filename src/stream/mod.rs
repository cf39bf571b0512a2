//! One camera, encoded once: the source and encoder choice, the always-on capture pipeline, the
//! restart loop it runs under, and the hub of each encoding that every output subscribes to.
//! Depends on `config` and `metrics` names only: nothing here knows about outputs or HTTP.

// Audio (issue #24).
pub mod audio;
pub mod backoff;
pub mod camera;
pub mod capture;
pub mod clock;
pub mod diagnose;
pub mod elements;
pub mod encoder;
pub mod gop;
pub mod hub;
pub mod image;
pub mod libcamera_log;
pub mod lifecycle;
pub mod metrics;
pub mod restart;
pub mod source;
pub mod status;

pub use capture::CaptureError;
