//! Wall-clock stamps carried inside the picture, so end-to-end latency can be measured through
//! any server without trusting its timestamps.
//!
//! The bench process runs the only source: a live test pattern whose frames get the current
//! CLOCK_REALTIME in microseconds painted into the top-left corner as black/white 16×16 luma
//! blocks (64 bits, then the same 64 bits inverted as a check row), right before they enter a
//! `shmsink`. The server under test (camstream, the baseline, or the encoder-alone pipeline) reads
//! raw frames from that socket with `shmsrc`, so every candidate gets identical frames through an
//! identical local transport. A viewer decodes the picture, reads the blocks back and subtracts
//! them from its own clock. Blocks are macroblock-aligned and far apart in luma, so they survive
//! H.264 at the bitrates used; a frame whose check row disagrees is counted as unreadable.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use gst::prelude::*;
use gst_video::prelude::*;

/// Side of one stamp block in pixels (a macroblock).
const BLOCK: usize = 16;
/// Bits in a stamp.
const BITS: usize = 64;
const BLACK: u8 = 16;
const WHITE: u8 = 235;

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn paint(y: &mut [u8], stride: usize, value: u64) {
    for row in 0..2 {
        let word = if row == 0 { value } else { !value };
        for bit in 0..BITS {
            let on = (word >> (BITS - 1 - bit)) & 1 == 1;
            let luma = if on { WHITE } else { BLACK };
            for line in 0..BLOCK {
                let start = (row * BLOCK + line) * stride + bit * BLOCK;
                y[start..start + BLOCK].fill(luma);
            }
        }
    }
}

/// Reads a stamp from a decoded luma plane; `None` when the check row does not match.
pub fn read(y: &[u8], stride: usize) -> Option<u64> {
    let mut words = [0u64; 2];
    for (row, word) in words.iter_mut().enumerate() {
        for bit in 0..BITS {
            // The centre 8×8 of the block: edges carry the most coding error.
            let mut sum = 0u32;
            for line in 4..12 {
                let start = (row * BLOCK + line) * stride + bit * BLOCK + 4;
                sum += y
                    .get(start..start + 8)?
                    .iter()
                    .map(|&v| u32::from(v))
                    .sum::<u32>();
            }
            *word = (*word << 1) | u64::from(sum / 64 > 128);
        }
    }
    (words[0] == !words[1]).then_some(words[0])
}

/// The raw caps every candidate reads from the stamp socket.
pub fn raw_caps(width: u32, height: u32, fps: u32) -> String {
    format!("video/x-raw,format=I420,width={width},height={height},framerate={fps}/1")
}

/// A launch fragment producing the stamped raw video from `socket`.
pub fn source_fragment(socket: &Path, width: u32, height: u32, fps: u32) -> String {
    format!(
        "shmsrc socket-path={} is-live=true do-timestamp=true ! {}",
        socket.display(),
        raw_caps(width, height, fps)
    )
}

/// The stamping source, running in the bench process.
pub struct Stamper {
    pipeline: gst::Pipeline,
    /// The control socket candidates connect to.
    pub socket: PathBuf,
}

impl Stamper {
    /// Starts a live pattern at `width`×`height`@`fps`, stamped, served on `socket`.
    pub fn start(socket: &Path, width: u32, height: u32, fps: u32) -> Stamper {
        assert!(
            width as usize >= BLOCK * BITS,
            "stamps need a picture at least 1024 wide"
        );
        let _ = std::fs::remove_file(socket);
        let desc = format!(
            "videotestsrc is-live=true pattern=smpte ! {} \
             ! shmsink name=shm socket-path={} wait-for-connection=false sync=false \
               shm-size=67108864",
            raw_caps(width, height, fps),
            socket.display()
        );
        let pipeline = gst::parse::launch(&desc)
            .expect("stamper pipeline")
            .downcast::<gst::Pipeline>()
            .expect("a pipeline");
        let sink = pipeline.by_name("shm").expect("shmsink");
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, width, height)
            .fps(gst::Fraction::new(fps as i32, 1))
            .build()
            .expect("video info");
        sink.static_pad("sink").expect("sink pad").add_probe(
            gst::PadProbeType::BUFFER,
            move |_, probe| {
                if let Some(gst::PadProbeData::Buffer(buffer)) = &mut probe.data {
                    let buffer = buffer.make_mut();
                    if let Ok(mut frame) =
                        gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &info)
                    {
                        let stride = frame.plane_stride()[0] as usize;
                        if let Ok(y) = frame.plane_data_mut(0) {
                            // Stamped last, as close as possible to the hand-over.
                            paint(y, stride, now_us());
                        }
                    }
                }
                gst::PadProbeReturn::Ok
            },
        );
        pipeline
            .set_state(gst::State::Playing)
            .expect("stamper plays");
        // shmsink creates the socket once it is PLAYING; candidates must not start before.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !socket.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Stamper {
            pipeline,
            socket: socket.to_path_buf(),
        }
    }
}

impl Drop for Stamper {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Checks that painting and reading agree on an uncompressed plane (run at start-up, cheap).
pub fn self_check() {
    let stride = 1280;
    let mut y = vec![128u8; stride * 64];
    let v = now_us();
    paint(&mut y, stride, v);
    assert_eq!(read(&y, stride), Some(v), "stamp round trip");
}
