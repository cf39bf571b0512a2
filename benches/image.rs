//! CPU added by each software image fallback (`[image]` done by GStreamer elements because the
//! camera cannot): flip, quarter-turn rotation, colour balance, digital zoom (crop + scale) and
//! the clock overlay, at 720p30 and 1080p30. Each runs as camstream builds it
//! (`stream::image::software::describe`) between a live test-pattern source and a sink, next to
//! the baseline of the same pipeline with every setting at its default (the elements in
//! passthrough), in the same run. The encoder is left out: it is the same with or without a
//! fallback, and its cost would drown the difference. Prints a table and writes JSON.
//!
//! `cargo bench --bench image [-- --seconds N --out PATH]`

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use camstream::config::VideoConfig;
use camstream::config::image::{ImageConfig, OverlayConfig};
use camstream::stream::image::plan::{self, Caps};
use camstream::stream::image::software;
use gst::prelude::*;
use serde_json::{Value, json};

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

fn variants() -> Vec<(&'static str, ImageConfig)> {
    let d = ImageConfig::default;
    vec![
        ("baseline", d()),
        ("hflip", ImageConfig { hflip: true, ..d() }),
        (
            "rotation 90",
            ImageConfig {
                rotation: 90,
                ..d()
            },
        ),
        (
            "balance",
            ImageConfig {
                brightness: 0.1,
                contrast: 1.2,
                saturation: 1.3,
                ..d()
            },
        ),
        (
            "roi (centre quarter)",
            ImageConfig {
                roi: [0.25, 0.25, 0.5, 0.5],
                ..d()
            },
        ),
        (
            "overlay",
            ImageConfig {
                overlay: OverlayConfig {
                    text: "cam1 %Y-%m-%d %H:%M:%S".into(),
                    ..OverlayConfig::default()
                },
                ..d()
            },
        ),
    ]
}

/// Runs one pipeline for `secs`; returns (CPU % of one core, frames per second).
fn measure(video: &VideoConfig, cfg: &ImageConfig, secs: f64) -> (f64, f64) {
    let caps = Caps::SoftwareOnly {
        source: "test pattern".into(),
    };
    let p = plan::plan(cfg, &caps).expect("software settings plan");
    let desc = format!(
        "videotestsrc is-live=true pattern=smpte \
         ! video/x-raw,format=I420,width={},height={},framerate={}/1{} \
         ! fakesink name=sink sync=false",
        video.width,
        video.height,
        video.fps,
        software::describe(&p, video)
    );
    let pipeline = gst::parse::launch(&desc)
        .expect("bench pipeline parses")
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
    let frames = Arc::new(AtomicU64::new(0));
    let f = frames.clone();
    pipeline
        .by_name("sink")
        .and_then(|s| s.static_pad("sink"))
        .expect("sink pad")
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            f.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
    pipeline.set_state(gst::State::Playing).expect("plays");
    // Settle (negotiation, first frames), then measure.
    std::thread::sleep(Duration::from_millis(1000));
    let (c0, n0, t0) = (
        cpu_seconds(),
        frames.load(Ordering::Relaxed),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (c1, n1, wall) = (
        cpu_seconds(),
        frames.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
    );
    let _ = pipeline.set_state(gst::State::Null);
    (100.0 * (c1 - c0) / wall, (n1 - n0) as f64 / wall)
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
        .unwrap_or(10.0);
    let out = PathBuf::from(arg("--out").unwrap_or_else(|| "target/bench-image.json".into()));
    gst::init().expect("gst init");

    let mut results = Vec::new();
    println!(
        "{:<10} {:<22} {:>9} {:>11} {:>7}",
        "size", "fallback", "CPU %", "added %", "fps"
    );
    for (label, width, height) in [("720p30", 1280, 720), ("1080p30", 1920, 1080)] {
        let video = VideoConfig {
            width,
            height,
            fps: 30,
        };
        let mut base = None;
        for (name, cfg) in variants() {
            let (cpu, fps) = measure(&video, &cfg, secs);
            let b = *base.get_or_insert(cpu);
            let added = cpu - b;
            println!("{label:<10} {name:<22} {cpu:>9.1} {added:>+11.1} {fps:>7.1}");
            results.push(json!({
                "size": label,
                "fallback": name,
                "cpu_percent": (cpu * 10.0).round() / 10.0,
                "added_cpu_percent": (added * 10.0).round() / 10.0,
                "fps": (fps * 10.0).round() / 10.0,
            }));
        }
        // The baseline again, to show how much the machine drifted during the run.
        let (cpu, fps) = measure(&video, &ImageConfig::default(), secs);
        println!(
            "{label:<10} {:<22} {cpu:>9.1} {:>+11.1} {fps:>7.1}",
            "baseline (again)",
            cpu - base.unwrap_or(cpu)
        );
        results.push(json!({
            "size": label, "fallback": "baseline (again)",
            "cpu_percent": (cpu * 10.0).round() / 10.0, "fps": (fps * 10.0).round() / 10.0,
        }));
    }
    let report: Value = json!({
        "bench": "image software fallbacks",
        "seconds_each": secs,
        "cpu": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())),
        "results": results,
    });
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    println!("{text}");
    if let Some(dir) = out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&out, text) {
        eprintln!("cannot write {}: {e}", out.display());
    }
}
