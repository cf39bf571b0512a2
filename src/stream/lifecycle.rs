//! Starting and stopping GStreamer pipelines from async code: state changes run off the async
//! workers and are bounded, so a wedged driver can never hang a restart loop.

use std::time::Duration;

use gst::prelude::*;

/// Error text from a GStreamer error message, with its source element and debug string.
pub fn describe_error(err: &gst::message::Error) -> String {
    let src = err
        .src()
        .map(|s| s.path_string().to_string())
        .unwrap_or_else(|| "?".into());
    match err.debug() {
        Some(debug) => format!("{} (from {src}; debug: {debug})", err.error()),
        None => format!("{} (from {src})", err.error()),
    }
}

/// Sets `pipeline` to PLAYING; on failure, the error it posted (or a generic reason).
pub async fn start(pipeline: &gst::Pipeline) -> Result<(), String> {
    let p = pipeline.clone();
    let started = tokio::task::spawn_blocking(move || p.set_state(gst::State::Playing)).await;
    if matches!(started, Ok(Ok(_))) {
        return Ok(());
    }
    Err(pipeline
        .bus()
        .and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]))
        .and_then(|m| match m.view() {
            gst::MessageView::Error(e) => Some(describe_error(e)),
            _ => None,
        })
        .unwrap_or_else(|| "the pipeline refused to start".into()))
}

/// Sets `pipeline` to NULL, waiting at most 3 s; past that it is abandoned with a log line.
pub async fn stop(pipeline: gst::Pipeline, what: &str) {
    let stop = tokio::task::spawn_blocking(move || {
        let _ = pipeline.set_state(gst::State::Null);
    });
    if tokio::time::timeout(Duration::from_secs(3), stop)
        .await
        .is_err()
    {
        tracing::error!(
            pipeline = what,
            "Pipeline did not stop within 3 s; abandoning it"
        );
    }
}
