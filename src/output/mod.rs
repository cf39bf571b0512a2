//! Everything that leaves the box: each output is a consumer of a stream's hub and never a
//! second encode. A failing or stalled output never touches the capture or the other outputs.

pub mod rtsp;
pub mod snapshot;
