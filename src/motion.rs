//! Motion events on the bus: follows each camera's detector (`stream::motion`) and publishes
//! `motion_start` (fields `event_id`, `score`, `zone`) and `motion_end` (the same, `score` being
//! the event's peak, and `duration_ms`). Hooks, the recorder's event clips, ONVIF and MQTT
//! listen on the bus; the peak picture is `Camera::motion.jpeg()`.

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::events::{self, Event, HookEvent};
use crate::stream::camera::Camera;
use crate::stream::motion::Change;

/// The event a detector's change becomes.
pub fn event_of(stream: &str, change: &Change) -> Event {
    match change {
        Change::Start {
            event_id,
            score,
            zone,
        } => Event::new(HookEvent::MotionStart, stream)
            .with("event_id", event_id)
            .with("score", score)
            .with("zone", zone),
        Change::End {
            event_id,
            score,
            zone,
            duration_ms,
        } => Event::new(HookEvent::MotionEnd, stream)
            .with("event_id", event_id)
            .with("score", score)
            .with("zone", zone)
            .with("duration_ms", duration_ms),
    }
}

/// Publishes `camera`'s motion starts and ends until `cancel`.
pub fn follow(camera: &Camera, cancel: CancellationToken) {
    let mut changes = camera.motion.subscribe();
    let stream = camera.name.clone();
    tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                c = changes.recv() => c,
                _ = cancel.cancelled() => return,
            };
            match change {
                Ok(c) => {
                    tracing::info!(stream = %stream, change = ?c, "Motion");
                    events::publish(event_of(&stream, &c));
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(stream = %stream, missed = n, "Motion changes missed");
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_and_end_carry_their_fields() {
        let e = event_of(
            "cam",
            &Change::End {
                event_id: "cam-1".into(),
                score: 0.25,
                zone: "door".into(),
                duration_ms: 1200,
            },
        );
        let j = e.to_json();
        assert_eq!(j["event"], "motion_end");
        assert_eq!(j["event_id"], "cam-1");
        assert_eq!(j["score"], "0.25");
        assert_eq!(j["zone"], "door");
        assert_eq!(j["duration_ms"], "1200");
        let s = event_of(
            "cam",
            &Change::Start {
                event_id: "cam-2".into(),
                score: 0.1,
                zone: "all".into(),
            },
        );
        assert_eq!(s.kind, HookEvent::MotionStart);
        assert!(s.fields.contains(&("zone", "all".into())));
    }
}
