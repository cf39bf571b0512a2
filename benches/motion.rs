//! CPU of motion detection (issue 25): the capture pipeline camstream builds
//! (`stream::capture::describe`) at 720p30 with x264, a live test pattern with a moving ball,
//! once without `[motion]` and once with it at its defaults (160x90 at 5 fps), in the same run;
//! the detector's worker thread runs as in the daemon (`stream::motion::Motion`). Prints a table
//! and writes JSON with the baseline beside it.
//!
//! `cargo bench --bench motion [-- --seconds N --out PATH]`

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use camstream::config::StreamConfig;
use camstream::stream::capture;
use camstream::stream::encoder::Encoder;
use camstream::stream::motion::Motion;
use camstream::stream::source::Source;
use gst::prelude::*;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// CPU time of this process so far (user + system), in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // USER_HZ is 100 on every Linux camstream runs on.
    f.iter().sum::<u64>() as f64 / 100.0
}

/// Runs the capture for `secs`; returns (CPU % of one core, encoded fps, pictures analysed).
fn measure(motion: bool, secs: f64) -> (f64, f64, u64) {
    let mut stream = StreamConfig {
        name: "bench".into(),
        ..StreamConfig::default()
    };
    stream.video.width = 1280;
    stream.video.height = 720;
    stream.video.fps = 30;
    stream.motion.enabled = motion;
    let source = Source::Test {
        pattern: "ball".into(),
    };
    let desc = capture::describe(&stream, &source, Encoder::X264);
    let pipeline = capture::build(&desc).expect("capture pipeline builds");
    let (_tx, rx) = watch::channel(Arc::new(stream));
    let cancel = CancellationToken::new();
    let detector = Motion::start(rx, cancel.clone());
    detector.attach(&pipeline);
    let frames = Arc::new(AtomicU64::new(0));
    let f = frames.clone();
    let sink = pipeline
        .by_name(capture::SINK_NAME)
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .expect("appsink");
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let _ = s.pull_sample();
                f.fetch_add(1, Ordering::Relaxed);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing).expect("plays");
    // Settle (negotiation, encoder start-up), then measure.
    std::thread::sleep(Duration::from_millis(2000));
    let (c0, n0, a0, t0) = (
        cpu_seconds(),
        frames.load(Ordering::Relaxed),
        detector.state().frames_analysed,
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (c1, n1, a1, wall) = (
        cpu_seconds(),
        frames.load(Ordering::Relaxed),
        detector.state().frames_analysed,
        t0.elapsed().as_secs_f64(),
    );
    let _ = pipeline.set_state(gst::State::Null);
    cancel.cancel();
    (100.0 * (c1 - c0) / wall, (n1 - n0) as f64 / wall, a1 - a0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let secs: f64 = arg("--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(20.0);
    let out = PathBuf::from(arg("--out").unwrap_or_else(|| "target/bench-motion.json".into()));
    gst::init().expect("gst init");

    // Alternate the two, twice, so a busy neighbour weighs on both alike.
    let mut runs: Vec<(bool, f64, f64, u64)> = Vec::new();
    for _ in 0..2 {
        for motion in [false, true] {
            let (cpu, fps, analysed) = measure(motion, secs);
            runs.push((motion, cpu, fps, analysed));
        }
    }
    let mean = |m: bool, i: usize| {
        let v: Vec<f64> = runs
            .iter()
            .filter(|r| r.0 == m)
            .map(|r| [r.1, r.2, r.3 as f64][i])
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let (base_cpu, base_fps) = (mean(false, 0), mean(false, 1));
    let (cpu, fps, analysed) = (mean(true, 0), mean(true, 1), mean(true, 2));
    println!("capture 1280x720@30, x264 ultrafast, {secs} s per run, mean of 2 runs each");
    println!("| variant | CPU % of one core | encoded fps | pictures analysed |");
    println!("|---|---|---|---|");
    println!("| baseline (no motion) | {base_cpu:.1} | {base_fps:.1} | 0 |");
    println!("| motion 160x90@5 | {cpu:.1} | {fps:.1} | {analysed:.0} |");
    println!("detection adds {:.1} % of one core", cpu - base_cpu);
    let report: Value = json!({
        "bench": "motion",
        "capture": "1280x720@30 x264",
        "seconds_per_run": secs,
        "baseline": { "cpu_percent": base_cpu, "fps": base_fps },
        "motion": { "cpu_percent": cpu, "fps": fps, "pictures_analysed": analysed,
                    "width": 160, "height": 90, "analysis_fps": 5 },
        "added_cpu_percent": cpu - base_cpu,
        "runs": runs.iter().map(|r| json!({"motion": r.0, "cpu_percent": r.1, "fps": r.2, "analysed": r.3})).collect::<Vec<_>>(),
    });
    if let Some(dir) = out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&out, serde_json::to_vec_pretty(&report).unwrap_or_default()) {
        Ok(()) => println!("wrote {}", out.display()),
        Err(e) => eprintln!("cannot write {}: {e}", out.display()),
    }
}
