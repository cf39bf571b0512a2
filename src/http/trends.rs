//! The page's trends: each stream's frame rate, bitrate and viewers over the last 10 minutes,
//! sampled every [`INTERVAL`] into a bounded ring per stream and served as one JSON document by
//! `GET /api/v1/trends` (drawn by web/trend.js). Memory is fixed: [`KEPT`] samples a stream.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::Json;
use axum::extract::State as AxumState;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::auth::{Doors, Rule};
use crate::access::{Action, Door, Principal};
use crate::stream::status::unix_now;

/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// How far back the trend reaches.
pub const WINDOW: Duration = Duration::from_secs(600);
/// Samples kept per stream.
const KEPT: usize = (WINDOW.as_secs() / INTERVAL.as_secs()) as usize;

/// One sample of a stream.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    at_unix: u64,
    fps: f64,
    kbps: f64,
    viewers: u32,
}

/// The rings, by stream; process-wide like the event bus (one daemon, one set of streams).
fn rings() -> &'static Mutex<HashMap<String, VecDeque<Sample>>> {
    static RINGS: OnceLock<Mutex<HashMap<String, VecDeque<Sample>>>> = OnceLock::new();
    RINGS.get_or_init(Mutex::default)
}

fn push(stream: &str, sample: Sample) {
    if let Ok(mut rings) = rings().lock() {
        let ring = rings
            .entry(stream.to_string())
            .or_insert_with(|| VecDeque::with_capacity(KEPT));
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(sample);
    }
}

/// Samples every stream's main encoding every [`INTERVAL`] until `cancel`: the frame rate and
/// bitrate over the interval (so a stall shows as 0, not as the last rate), and the viewers
/// (RTSP and WebRTC) at the moment of sampling.
pub fn spawn(shared: Shared, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: HashMap<String, (Instant, u64, u64)> = HashMap::new();
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = cancel.cancelled() => return,
            }
            let viewers = shared.control.rtsp().viewers();
            let cameras = shared.control.cameras();
            // Streams removed by a reload lose their trend.
            if let Ok(mut rings) = rings().lock() {
                rings.retain(|name, _| cameras.iter().any(|c| &c.name == name));
            }
            for camera in cameras {
                let main = camera.main();
                let stats = main.hub.stats();
                let now = (Instant::now(), stats.frames(), stats.bytes());
                if let Some(&(t, frames, bytes)) = last.get(&camera.name) {
                    let secs = now.0.duration_since(t).as_secs_f64().max(1e-3);
                    let watching = viewers.playing(&main.name)
                        + shared.webrtc.as_ref().map_or(0, |w| w.viewers(&main.name));
                    push(
                        &camera.name,
                        Sample {
                            at_unix: unix_now(),
                            fps: now.1.saturating_sub(frames) as f64 / secs,
                            kbps: now.2.saturating_sub(bytes) as f64 * 8.0 / 1000.0 / secs,
                            viewers: u32::try_from(watching).unwrap_or(u32::MAX),
                        },
                    );
                }
                last.insert(camera.name.clone(), now);
            }
        }
    })
}

/// `GET /api/v1/trends`: columns per stream, oldest first, for the streams the asker may view.
pub(super) fn routes(d: &mut Doors) {
    d.route(
        "/api/v1/trends",
        "GET",
        Rule::http(Action::View),
        get(trends),
    );
}

async fn trends(AxumState(s): AxumState<Shared>, Extension(who): Extension<Principal>) -> Response {
    // An account limited to some streams sees only their trends.
    let order: Vec<String> = s
        .control
        .cameras()
        .into_iter()
        .map(|c| c.name)
        .filter(|name| {
            s.access
                .check(&who, Door::Http, Some(name), Action::View)
                .is_ok()
        })
        .collect();
    let rings = match rings().lock() {
        Ok(r) => r.clone(),
        Err(_) => HashMap::new(),
    };
    let streams: std::collections::BTreeMap<String, Column> = order
        .into_iter()
        .map(|name| {
            let ring = rings.get(&name).cloned().unwrap_or_default();
            let round = |v: f64| (v * 10.0).round() / 10.0;
            let column = Column {
                t: ring.iter().map(|x| x.at_unix).collect(),
                fps: ring.iter().map(|x| round(x.fps)).collect(),
                kbps: ring.iter().map(|x| round(x.kbps)).collect(),
                viewers: ring.iter().map(|x| x.viewers).collect(),
            };
            (name, column)
        })
        .collect();
    Json(Trends {
        interval_s: INTERVAL.as_secs(),
        window_s: WINDOW.as_secs(),
        streams,
    })
    .into_response()
}

/// The answer of the trends endpoint: each visible stream's recent samples, as columns.
#[derive(Serialize)]
struct Trends {
    interval_s: u64,
    window_s: u64,
    streams: std::collections::BTreeMap<String, Column>,
}

/// One stream's samples, oldest first, one array per measure.
#[derive(Serialize)]
struct Column {
    t: Vec<u64>,
    fps: Vec<f64>,
    kbps: Vec<f64>,
    viewers: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_ten_minutes() {
        let sample = |i: u64| Sample {
            at_unix: i,
            fps: 15.0,
            kbps: 500.0,
            viewers: 1,
        };
        for i in 0..(KEPT as u64 + 50) {
            push("ring-test", sample(i));
        }
        let rings = rings().lock().unwrap();
        let ring = &rings["ring-test"];
        assert_eq!(ring.len(), KEPT);
        assert_eq!(ring.front().map(|s| s.at_unix), Some(50));
        assert_eq!(KEPT, 300);
    }
}
