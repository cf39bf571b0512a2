//! Fan-out from the one capture pipeline to every RTSP media: a long-lived hub that outlives
//! camera restarts. Each media's `appsrc` is linked once; when the supervisor builds a new
//! capture pipeline the hub moves every link to the new producer, so viewers stay connected and
//! their picture resumes without a reconnect.

use std::collections::HashMap;
use std::sync::Mutex;

use gst::prelude::*;
use gst_utils::streamproducer::{ConsumerSettings, ProducerSettings};
use gst_utils::{ConsumptionLink, StreamProducer};

/// Identifies one linked consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkId(u64);

#[derive(Default)]
struct Inner {
    producer: Option<StreamProducer>,
    links: HashMap<LinkId, ConsumptionLink>,
    next: u64,
}

/// The hub between the capture pipeline's `appsink` and the media `appsrc`s.
#[derive(Default)]
pub struct Fanout {
    inner: Mutex<Inner>,
}

/// How a consumer queues: bounded, leaking the oldest, so a stuck media pipeline can never make
/// the capture pipeline wait or grow memory.
fn consumer_settings() -> ConsumerSettings {
    ConsumerSettings {
        max_buffer: 60,
        max_bytes: gst::format::Bytes::from_u64(16 * 1024 * 1024),
        max_time: gst::ClockTime::from_mseconds(1000),
        event_types: Vec::new(),
    }
}

impl Fanout {
    /// An empty hub with no producer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `appsink` the source of every consumer (or detaches all with `None`).
    pub fn set_producer(&self, appsink: Option<&gst_app::AppSink>) {
        let producer = appsink.map(|sink| {
            // No clock sync at the appsink: frames go out the moment they are encoded.
            let p = StreamProducer::with(sink, ProducerSettings { sync: false });
            // EOS from a failing camera must not end the viewers' streams: the supervisor
            // restarts the camera and the same media carries on.
            p.set_forward_events([]);
            p
        });
        let mut inner = self.inner.lock().unwrap();
        for link in inner.links.values_mut() {
            match &producer {
                Some(p) => {
                    if let Err(e) = link.change_producer(p, false) {
                        tracing::warn!(error = %e, "Could not move a viewer to the new capture");
                    }
                }
                None => link.disconnect(),
            }
        }
        inner.producer = producer;
    }

    /// Links a media's `appsrc`; it receives frames from the current and every later producer.
    pub fn add(&self, appsrc: &gst_app::AppSrc) -> LinkId {
        let mut inner = self.inner.lock().unwrap();
        let mut link = ConsumptionLink::disconnected_with(appsrc.clone(), consumer_settings());
        if let Some(p) = &inner.producer
            && let Err(e) = link.change_producer(p, false)
        {
            tracing::warn!(error = %e, "Could not link a media to the capture");
        }
        inner.next += 1;
        let id = LinkId(inner.next);
        inner.links.insert(id, link);
        id
    }

    /// Unlinks a consumer; dropping the link disconnects it.
    pub fn remove(&self, id: LinkId) {
        let link = self.inner.lock().unwrap().links.remove(&id);
        drop(link);
    }

    /// Number of linked consumers (one per prepared media).
    pub fn consumers(&self) -> usize {
        self.inner.lock().unwrap().links.len()
    }

    /// Buffers dropped so far across the current consumers because their queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner
            .lock()
            .unwrap()
            .links
            .values()
            .map(|l| l.dropped())
            .sum()
    }

    /// Asks the encoder for an IDR with SPS/PPS now, so a viewer who just joined a running
    /// stream gets a picture within a frame interval rather than at the next scheduled keyframe.
    pub fn request_keyframe(&self) {
        let sink = self
            .inner
            .lock()
            .unwrap()
            .producer
            .as_ref()
            .map(|p| p.appsink().clone());
        let Some(sink) = sink else { return };
        let Some(pad) = sink.static_pad("sink") else {
            return;
        };
        // Pushed on the pad, not sent to the element, which would take the state lock.
        pad.push_event(
            gst_video::UpstreamForceKeyUnitEvent::builder()
                .all_headers(true)
                .build(),
        );
    }

    /// The latest encoded sample, for snapshots.
    pub fn last_sample(&self) -> Option<gst::Sample> {
        let inner = self.inner.lock().unwrap();
        inner.producer.as_ref().and_then(|p| p.last_sample())
    }
}
