//! The sound's level and liveness, counted on the streaming thread with atomics only: the sum of
//! squared samples and their number since the last reading, and when the last buffer passed. The
//! supervisor reads them on its tick (dBFS for the metric and the status, the age for stall
//! detection).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gst::prelude::*;

/// What [`Meter::take_dbfs`] reports for digital silence (and for no samples at all).
pub const SILENCE_DBFS: f64 = -120.0;

/// Level and liveness of one stream's raw audio.
#[derive(Debug)]
pub struct Meter {
    epoch: Instant,
    sum_sq: AtomicU64,
    samples: AtomicU64,
    /// Nanoseconds after `epoch` of the last buffer; 0 = none yet.
    last_ns: AtomicU64,
    /// The last reading, as f64 bits.
    last_dbfs: AtomicU64,
}

impl Default for Meter {
    fn default() -> Self {
        Meter {
            epoch: Instant::now(),
            sum_sq: AtomicU64::new(0),
            samples: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            last_dbfs: AtomicU64::new(SILENCE_DBFS.to_bits()),
        }
    }
}

impl Meter {
    /// Counts interleaved S16LE samples (streaming thread).
    pub fn record(&self, bytes: &[u8]) {
        let mut sum: u64 = 0;
        for s in bytes.chunks_exact(2) {
            let v = i64::from(i16::from_le_bytes([s[0], s[1]]));
            sum += (v * v) as u64;
        }
        self.sum_sq.fetch_add(sum, Ordering::Relaxed);
        self.samples
            .fetch_add((bytes.len() / 2) as u64, Ordering::Relaxed);
        let ns = self.epoch.elapsed().as_nanos().max(1) as u64;
        self.last_ns.store(ns, Ordering::Relaxed);
    }

    /// The RMS level since the previous call, in dBFS (a full-scale sine is about -3), and
    /// resets the sums; [`SILENCE_DBFS`] when nothing or only zeros arrived.
    pub fn take_dbfs(&self) -> f64 {
        let sum = self.sum_sq.swap(0, Ordering::Relaxed);
        let n = self.samples.swap(0, Ordering::Relaxed);
        let db = dbfs(sum, n);
        self.last_dbfs.store(db.to_bits(), Ordering::Relaxed);
        db
    }

    /// The last reading of [`Meter::take_dbfs`].
    pub fn last_dbfs(&self) -> f64 {
        f64::from_bits(self.last_dbfs.load(Ordering::Relaxed))
    }

    /// Age of the last buffer, if any.
    pub fn last_buffer_age(&self) -> Option<Duration> {
        match self.last_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(
                self.epoch
                    .elapsed()
                    .saturating_sub(Duration::from_nanos(ns)),
            ),
        }
    }

    /// Forgets the last buffer (a new pipeline starts).
    pub fn reset(&self) {
        self.last_ns.store(0, Ordering::Relaxed);
        self.sum_sq.store(0, Ordering::Relaxed);
        self.samples.store(0, Ordering::Relaxed);
    }
}

/// RMS of `n` samples whose squares sum to `sum_sq`, in dBFS.
pub fn dbfs(sum_sq: u64, n: u64) -> f64 {
    if n == 0 || sum_sq == 0 {
        return SILENCE_DBFS;
    }
    let mean = sum_sq as f64 / n as f64;
    (10.0 * (mean / (32768.0 * 32768.0)).log10()).max(SILENCE_DBFS)
}

/// Counts every buffer leaving `element`'s src pad into `meter`.
pub fn attach(element: &gst::Element, meter: std::sync::Arc<Meter>) {
    let Some(pad) = element.static_pad("src") else {
        return;
    };
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buffer) = info.buffer()
            && let Ok(map) = buffer.map_readable()
        {
            meter.record(map.as_slice());
        }
        gst::PadProbeReturn::Ok
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_scale_square_is_zero_dbfs_and_silence_is_the_floor() {
        let full: Vec<u8> = (0..480)
            .flat_map(|i| if i % 2 == 0 { 32767i16 } else { -32768 }.to_le_bytes())
            .collect();
        let m = Meter::default();
        m.record(&full);
        assert!(m.take_dbfs().abs() < 0.01);
        assert_eq!(m.take_dbfs(), SILENCE_DBFS, "the sums were reset");
        m.record(&[0; 960]);
        assert_eq!(m.take_dbfs(), SILENCE_DBFS);
        assert!(m.last_buffer_age().is_some());
        // A tenth of full scale is -20 dB.
        assert!((dbfs(3277 * 3277 * 10, 10) + 20.0).abs() < 0.01);
    }
}
