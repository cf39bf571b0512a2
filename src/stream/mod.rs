//! One camera, encoded once: the source and encoder choice, the always-on capture pipeline, its
//! restart supervisor and the hub every output subscribes to. Depends on nothing above it.

pub mod backoff;
pub mod capture;
pub mod h264;
pub mod hub;
pub mod supervisor;
