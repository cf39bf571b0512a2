//! MJPEG over HTTP (`multipart/x-mixed-replace`), for OctoPrint, crowsnest, Home Assistant's
//! MJPEG camera and plain `<img>` tags: one shared JPEG encoder per camera and size
//! ([`encoder::SharedEncoder`]), fed from the raw-picture tap and running only while a client
//! is connected. Each client holds only the newest JPEG, so a slow client skips pictures
//! instead of queueing memory. The HTTP side is `http::mjpeg`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use axum::body::Bytes;
use tokio::sync::watch;

use crate::config::mjpeg::MjpegConfig;
use crate::metrics::names;
use crate::stream::tap::RawTap;

pub mod encoder;

use encoder::{JpegFrame, SharedEncoder, Spec};

/// The boundary between pictures, as mjpg-streamer names it (some clients expect it).
pub const BOUNDARY: &str = "boundarydonotcross";

/// Why no MJPEG stream could be started.
#[derive(Debug, thiserror::Error)]
pub enum MjpegError {
    /// `mjpeg.enabled = false`.
    #[error("MJPEG is off (mjpeg.enabled = false)")]
    Disabled,
    /// Every client slot is taken.
    #[error("too many MJPEG clients: mjpeg.max_clients = {0} are connected")]
    TooMany(u32),
    /// The JPEG encoder pipeline could not be started.
    #[error("the MJPEG encoder could not start: {0}")]
    Encoder(String),
}

/// MJPEG clients connected now, over every stream (for `mjpeg.max_clients`).
static CLIENTS: AtomicUsize = AtomicUsize::new(0);

/// The MJPEG side of one camera: its shared encoders by what they make.
pub struct Mjpeg {
    stream: String,
    tap: Arc<RawTap>,
    encoders: Mutex<HashMap<Spec, Weak<SharedEncoder>>>,
}

impl Mjpeg {
    /// The MJPEG output of the camera `stream`, whose raw pictures `tap` gives.
    pub fn new(stream: &str, tap: Arc<RawTap>) -> Self {
        metrics::gauge!(names::MJPEG_CLIENTS, "stream" => stream.to_string()).set(0.0);
        metrics::gauge!(names::MJPEG_ENCODERS, "stream" => stream.to_string()).set(0.0);
        Mjpeg {
            stream: stream.to_string(),
            tap,
            encoders: Mutex::new(HashMap::new()),
        }
    }

    /// Encoders running now.
    pub fn encoders_running(&self) -> usize {
        self.encoders
            .lock()
            .unwrap()
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    /// A new client of pictures at `width` × `height` under `config`: it joins the encoder
    /// already making them, or starts one.
    pub async fn client(
        &self,
        width: u32,
        height: u32,
        config: &MjpegConfig,
    ) -> Result<Client, MjpegError> {
        if !config.enabled {
            return Err(MjpegError::Disabled);
        }
        let slot = ClientSlot::take(config.max_clients, &self.stream)?;
        let spec = Spec {
            width,
            height,
            fps: config.fps,
            quality: config.quality,
        };
        let running = self
            .encoders
            .lock()
            .unwrap()
            .get(&spec)
            .and_then(Weak::upgrade);
        let encoder = match running {
            Some(e) => e,
            None => {
                let (stream, tap) = (self.stream.clone(), self.tap.clone());
                let rt = tokio::runtime::Handle::current();
                let started = tokio::task::spawn_blocking(move || {
                    SharedEncoder::start(&stream, &tap, spec, &rt)
                })
                .await
                .map_err(|e| MjpegError::Encoder(e.to_string()))??;
                let mut encoders = self.encoders.lock().unwrap();
                // Two first clients may have started one each: keep the first, drop ours.
                match encoders.get(&spec).and_then(Weak::upgrade) {
                    Some(e) => e,
                    None => {
                        encoders.retain(|_, w| w.strong_count() > 0);
                        encoders.insert(spec, Arc::downgrade(&started));
                        started
                    }
                }
            }
        };
        let rx = encoder.subscribe();
        Ok(Client {
            stream: self.stream.clone(),
            _encoder: encoder,
            rx,
            last_seq: None,
            _slot: slot,
            sent: metrics::counter!(names::MJPEG_FRAMES_SENT, "stream" => self.stream.clone()),
            skipped: metrics::counter!(names::MJPEG_FRAMES_SKIPPED, "stream" => self.stream.clone()),
        })
    }
}

/// One of the `mjpeg.max_clients` places, given back when the client goes.
struct ClientSlot {
    stream: String,
}

impl ClientSlot {
    fn take(max: u32, stream: &str) -> Result<Self, MjpegError> {
        let taken = CLIENTS.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max as usize).then_some(n + 1)
        });
        if taken.is_err() {
            return Err(MjpegError::TooMany(max));
        }
        metrics::gauge!(names::MJPEG_CLIENTS, "stream" => stream.to_string()).increment(1.0);
        Ok(ClientSlot {
            stream: stream.to_string(),
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        CLIENTS.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(names::MJPEG_CLIENTS, "stream" => self.stream.clone()).decrement(1.0);
    }
}

/// One connected client; dropping it leaves the encoder (the last one stops it).
pub struct Client {
    stream: String,
    _encoder: Arc<SharedEncoder>,
    rx: watch::Receiver<Option<Arc<JpegFrame>>>,
    last_seq: Option<u64>,
    _slot: ClientSlot,
    sent: metrics::Counter,
    skipped: metrics::Counter,
}

impl Client {
    /// The stream watched.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The next picture newer than the last one returned (waiting for it); `None` when the
    /// encoder has gone. Pictures made while this client was not asking are skipped.
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            let frame = self.rx.borrow_and_update().clone();
            if let Some(f) = frame
                && self.last_seq.is_none_or(|s| f.seq > s)
            {
                if let Some(s) = self.last_seq {
                    self.skipped.increment(f.seq - s - 1);
                }
                self.last_seq = Some(f.seq);
                self.sent.increment(1);
                return Some(f.data.clone());
            }
            self.rx.changed().await.ok()?;
        }
    }

    /// One multipart part: the part's head, the JPEG and the line ending after it.
    pub fn part(jpeg: Bytes) -> [Bytes; 3] {
        let head = format!(
            "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        );
        [Bytes::from(head), jpeg, Bytes::from_static(b"\r\n")]
    }
}
