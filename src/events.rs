//! The process-wide event bus: what happened (a camera went down or came back, a viewer came or
//! went, a segment was written, a push failed or recovered, the vision model answered), as typed
//! events on a tokio `broadcast` channel. Publishing never blocks and never fails: with nobody
//! listening, or a listener lagging, events are simply not kept. Hooks (`crate::hooks`) listen.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

pub use crate::config::HookEvent;
use crate::metrics::names;
use crate::stream::status::{HasHealth, LastError, RestartReason, State, unix_now};

/// Events kept for a listener that falls behind; older ones are dropped (and counted there).
const CAPACITY: usize = 256;

/// One event: its kind, the stream it concerns ("" when none) and its fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// What happened.
    pub kind: HookEvent,
    /// The stream (or rendition) concerned; empty for events of no stream (a viewer connecting).
    pub stream: String,
    /// When, in seconds since the Unix epoch.
    pub at_unix: u64,
    /// Kind-specific fields (reason, peer, file, answer, ...), in publishing order.
    pub fields: Vec<(&'static str, String)>,
}

impl Event {
    /// An event of `kind` about `stream`, stamped now.
    pub fn new(kind: HookEvent, stream: &str) -> Self {
        Event {
            kind,
            stream: stream.to_string(),
            at_unix: unix_now(),
            fields: Vec::new(),
        }
    }

    /// Adds a field (lower-case ASCII key).
    pub fn with(mut self, key: &'static str, value: impl ToString) -> Self {
        self.fields.push((key, value.to_string()));
        self
    }

    /// The event as a webhook's JSON body: `event`, `stream`, `at_unix` and every field.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("event".into(), json!(self.kind.as_str()));
        m.insert("stream".into(), json!(self.stream));
        m.insert("at_unix".into(), json!(self.at_unix));
        for (k, v) in &self.fields {
            m.insert((*k).into(), json!(v));
        }
        Value::Object(m)
    }

    /// The event as a command's environment: `CAMSTREAM_EVENT`, `CAMSTREAM_STREAM`,
    /// `CAMSTREAM_AT_UNIX` and `CAMSTREAM_<FIELD>` for each field.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut v = vec![
            (
                "CAMSTREAM_EVENT".to_string(),
                self.kind.as_str().to_string(),
            ),
            ("CAMSTREAM_STREAM".to_string(), self.stream.clone()),
            ("CAMSTREAM_AT_UNIX".to_string(), self.at_unix.to_string()),
        ];
        for (k, val) in &self.fields {
            v.push((format!("CAMSTREAM_{}", k.to_ascii_uppercase()), val.clone()));
        }
        v
    }
}

fn bus() -> &'static broadcast::Sender<Event> {
    static BUS: OnceLock<broadcast::Sender<Event>> = OnceLock::new();
    BUS.get_or_init(|| broadcast::channel(CAPACITY).0)
}

/// Publishes an event; never blocks (safe on GLib callbacks and writer threads).
pub fn publish(event: Event) {
    tracing::debug!(event = event.kind.as_str(), stream = %event.stream, "Event");
    metrics::counter!(names::EVENTS, "event" => event.kind.as_str()).increment(1);
    // An error only means nobody listens now.
    let _ = bus().send(event);
}

/// A receiver of every event published from now on.
pub fn subscribe() -> broadcast::Receiver<Event> {
    bus().subscribe()
}

/// Registers the event counter's series so dashboards see zeros, not gaps.
pub fn register_metrics() {
    for e in HookEvent::ALL {
        let _ = metrics::counter!(names::EVENTS, "event" => e.as_str());
    }
}

/// What a health transition means for down/up events.
#[derive(Debug, Clone, PartialEq)]
enum Transition {
    Down {
        reason: RestartReason,
        message: String,
    },
    Up,
}

/// What a follower remembers between observations.
#[derive(Debug, Default)]
struct Seen {
    /// Whether the last event published said down.
    down: bool,
    /// The last failure already accounted for.
    error: Option<LastError>,
}

/// Folds one health observation into `seen`; returns the events to publish. A reconfiguration
/// is not a failure and publishes nothing. The watch keeps only the newest state, so a whole
/// outage can fall between two looks (a busy machine, a very short backoff): a failure the
/// follower never saw in backoff still publishes down, then up.
fn transition(seen: &mut Seen, state: &State, error: Option<&LastError>) -> Vec<Transition> {
    let new_failure = error.is_some() && error != seen.error.as_ref();
    if new_failure {
        seen.error = error.cloned();
    }
    let down_from = |e: Option<&LastError>, reason: RestartReason| Transition::Down {
        reason,
        message: e.map(|e| e.message.clone()).unwrap_or_default(),
    };
    match state {
        State::Backoff { reason, .. } if *reason != RestartReason::Reconfigure && !seen.down => {
            seen.down = true;
            vec![down_from(error, *reason)]
        }
        State::Streaming if seen.down => {
            seen.down = false;
            vec![Transition::Up]
        }
        State::Streaming if new_failure => {
            let reason = error.map_or(RestartReason::Error, |e| e.reason);
            vec![down_from(error, reason), Transition::Up]
        }
        _ => Vec::new(),
    }
}

/// Follows a supervised pipeline's health and publishes `down` when it enters backoff and `up`
/// when it streams again, until `cancel`. `extra` fields (e.g. the push name) go on both.
pub fn follow<T: HasHealth + Send + Sync + 'static>(
    mut health: watch::Receiver<T>,
    (down_kind, up_kind): (HookEvent, HookEvent),
    stream: String,
    extra: Vec<(&'static str, String)>,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        loop {
            let transitions = {
                let h = health.borrow_and_update();
                let h = h.health();
                transition(&mut seen, &h.state, h.last_error.as_ref())
            };
            for t in transitions {
                let mut e = match t {
                    Transition::Down { reason, message } => Event::new(down_kind, &stream)
                        .with("reason", reason.as_str())
                        .with("message", message),
                    Transition::Up => Event::new(up_kind, &stream),
                };
                e.fields.extend(extra.iter().cloned());
                publish(e);
            }
            tokio::select! {
                r = health.changed() => if r.is_err() { return },
                _ = cancel.cancelled() => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(reason: RestartReason) -> State {
        State::Backoff {
            attempt: 1,
            reason,
            delay_ms: 10,
        }
    }

    fn failure(reason: RestartReason, at: u64) -> LastError {
        LastError {
            reason,
            message: format!("failed at {at}"),
            at_unix: at,
        }
    }

    #[test]
    fn down_then_up_once_each() {
        let mut s = Seen::default();
        assert!(transition(&mut s, &State::Starting, None).is_empty());
        assert!(
            transition(&mut s, &State::Streaming, None).is_empty(),
            "the first start is not an up"
        );
        let e1 = failure(RestartReason::Stall, 1);
        assert_eq!(
            transition(&mut s, &backoff(RestartReason::Stall), Some(&e1)),
            [Transition::Down {
                reason: RestartReason::Stall,
                message: "failed at 1".into()
            }]
        );
        let e2 = failure(RestartReason::Error, 2);
        assert!(
            transition(&mut s, &backoff(RestartReason::Error), Some(&e2)).is_empty(),
            "still down"
        );
        assert!(transition(&mut s, &State::Starting, Some(&e2)).is_empty());
        assert_eq!(
            transition(&mut s, &State::Streaming, Some(&e2)),
            [Transition::Up]
        );
        assert!(transition(&mut s, &backoff(RestartReason::Reconfigure), Some(&e2)).is_empty());
        assert!(transition(&mut s, &State::Streaming, Some(&e2)).is_empty());
    }

    #[test]
    fn an_outage_between_two_looks_is_still_down_then_up() {
        let mut s = Seen::default();
        assert!(transition(&mut s, &State::Streaming, None).is_empty());
        let e = failure(RestartReason::Eos, 5);
        assert_eq!(
            transition(&mut s, &State::Streaming, Some(&e)),
            [
                Transition::Down {
                    reason: RestartReason::Eos,
                    message: "failed at 5".into()
                },
                Transition::Up
            ]
        );
        assert!(transition(&mut s, &State::Streaming, Some(&e)).is_empty());
    }

    #[test]
    fn env_and_json_carry_every_field() {
        let e = Event::new(HookEvent::CameraDown, "cam").with("reason", "stall");
        let env = e.env();
        assert!(env.contains(&("CAMSTREAM_EVENT".into(), "camera_down".into())));
        assert!(env.contains(&("CAMSTREAM_STREAM".into(), "cam".into())));
        assert!(env.contains(&("CAMSTREAM_REASON".into(), "stall".into())));
        let j = e.to_json();
        assert_eq!(j["event"], "camera_down");
        assert_eq!(j["reason"], "stall");
    }
}
