//! Flash-to-beep offset from decoded output (issue #24). With `source.kind = "test"`,
//! `source.pattern = "black"` and `audio.kind = "test"`, the daemon paints the frame nearest
//! each whole second of running time white and starts a 1 kHz beep on each whole second. A
//! client's recording is decoded by ffmpeg: the picture's flashes are frames whose mean luma
//! jumps (signalstats YAVG), the sound's onsets are the ends of silence (silencedetect), both
//! on the file's one timeline. Each flash is paired with the nearest onset; the offset is onset
//! minus flash (positive: the sound is late). At 30 fps the flash itself sits within half a
//! frame (±16.7 ms) of the beep.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// What one recording showed.
#[derive(Debug, Clone, Default)]
pub struct Sync {
    /// Times (s) of flashed frames.
    pub flashes: Vec<f64>,
    /// Times (s) where a beep starts.
    pub onsets: Vec<f64>,
    /// Onset minus flash, in ms, for every flash with an onset within 0.5 s.
    pub offsets_ms: Vec<f64>,
}

impl Sync {
    /// The offset farthest from zero, in ms.
    pub fn worst_ms(&self) -> f64 {
        self.offsets_ms
            .iter()
            .copied()
            .fold(0.0, |w: f64, o| if o.abs() > w.abs() { o } else { w })
    }

    /// The median offset, in ms.
    pub fn median_ms(&self) -> f64 {
        let mut v = self.offsets_ms.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }

    /// One line for the test log and the closing note.
    pub fn summary(&self) -> String {
        format!(
            "{} pairs, median {:+.1} ms, worst {:+.1} ms, offsets {:?}",
            self.offsets_ms.len(),
            self.median_ms(),
            self.worst_ms(),
            self.offsets_ms
                .iter()
                .map(|o| (o * 10.0).round() / 10.0)
                .collect::<Vec<_>>()
        )
    }
}

/// Runs ffmpeg with `args` (bounded by `timeout 60`); panics with its stderr when it fails.
pub fn ffmpeg(args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("60")
        .arg("ffmpeg")
        .args(["-hide_banner", "-nostdin"])
        .args(args)
        .output()
        .expect("ffmpeg runs (install ffmpeg)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ffmpeg {args:?} failed:\n{text}");
    text
}

/// Copies `seconds` of `input` (after the input options `input_opts`) into `out` without
/// re-encoding, as an NVR does.
pub fn record(input_opts: &[&str], input: &str, seconds: u32, out: &Path) {
    let t = seconds.to_string();
    let out = out.to_str().expect("utf-8 path");
    let mut args: Vec<&str> = vec!["-v", "error"];
    args.extend_from_slice(input_opts);
    args.extend_from_slice(&["-i", input, "-t", &t, "-map", "0", "-c", "copy", "-y", out]);
    ffmpeg(&args);
}

/// Frames whose mean luma is above 128 (the black test picture is ~16, a flash 235).
pub fn flashes(file: &Path) -> Vec<f64> {
    let f = file.to_str().expect("utf-8 path");
    let text = ffmpeg(&[
        "-v",
        "error",
        "-i",
        f,
        "-map",
        "0:v:0",
        "-vf",
        "signalstats,metadata=print:key=lavfi.signalstats.YAVG:file=-",
        "-f",
        "null",
        "-",
    ]);
    let mut out = Vec::new();
    let mut t = None;
    for line in text.lines() {
        if let Some(p) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("pts_time:"))
        {
            t = p.parse::<f64>().ok();
        } else if let Some(y) = line.strip_prefix("lavfi.signalstats.YAVG=")
            && let (Some(t), Ok(y)) = (t, y.trim().parse::<f64>())
            && y > 128.0
        {
            out.push(t);
        }
    }
    out
}

/// Where the sound rises out of silence (-30 dBFS) after at least 100 ms of it.
pub fn onsets(file: &Path) -> Vec<f64> {
    let f = file.to_str().expect("utf-8 path");
    let text = ffmpeg(&[
        "-v",
        "info",
        "-i",
        f,
        "-map",
        "0:a:0",
        "-af",
        "silencedetect=noise=-30dB:d=0.1",
        "-f",
        "null",
        "-",
    ]);
    text.lines()
        .filter_map(|l| l.split("silence_end: ").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse::<f64>().ok())
        .collect()
}

/// Pairs flashes with onsets.
pub fn pair(flashes: Vec<f64>, onsets: Vec<f64>) -> Sync {
    let offsets_ms = flashes
        .iter()
        .filter_map(|f| {
            onsets
                .iter()
                .map(|o| o - f)
                .filter(|d| d.abs() < 0.5)
                .min_by(|a, b| a.abs().total_cmp(&b.abs()))
                .map(|d| d * 1000.0)
        })
        .collect();
    Sync {
        flashes,
        onsets,
        offsets_ms,
    }
}

/// The flash-to-beep offsets of a recording.
pub fn measure(file: &Path) -> Sync {
    pair(flashes(file), onsets(file))
}

/// Stream durations (s) by codec name, from ffprobe (0 when unknown).
pub fn durations(file: &Path) -> Vec<(String, f64)> {
    let out = Command::new("timeout")
        .args(["30", "ffprobe", "-v", "error", "-show_entries"])
        .arg("stream=codec_name,duration:format=duration")
        .args(["-of", "json"])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let whole = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse::<f64>().ok())
        .unwrap_or(0.0);
    v["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let d = s["duration"]
                        .as_str()
                        .and_then(|d| d.parse::<f64>().ok())
                        .unwrap_or(whole);
                    (s["codec_name"].as_str().unwrap_or("").to_string(), d)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn pairing_takes_the_nearest_onset_and_ignores_far_ones() {
    let s = pair(vec![1.0, 2.0, 3.0], vec![1.01, 1.99, 3.7]);
    assert_eq!(s.offsets_ms.len(), 2);
    assert!((s.offsets_ms[0] - 10.0).abs() < 1e-6);
    assert!((s.worst_ms() - 10.0).abs() < 1e-6 || (s.worst_ms() + 10.0).abs() < 1e-6);
}
