//! Browser viewing, measured: glass-to-glass latency in headless Chromium (WebRTC) beside an RTSP
//! viewer of the same camstream in the same run, and ten WebRTC viewers with ten RTSP viewers at
//! once (frames each keeps, and camstream's CPU per WebRTC viewer against the RTSP-only windows
//! before and after).
//!
//! - Latency: the stamping source of the camstream bench (benches/camstream/stamp.rs: the wall
//!   clock painted into each 1280x720@30 frame) feeds camstream through shm; x264 at 4 Mb/s.
//!   Chromium reads the stamp of every frame it composites (`requestVideoFrameCallback`,
//!   `presentationTime`); the RTSP viewer (rtspsrc latency=0 over TCP, avdec_h264) reads it at
//!   its appsink after decoding. Same machine, same clock.
//! - Load: 320x240@30 test pattern, ten RTSP viewers (decoding, in this process) and ten
//!   Chromium tabs on `/view/video`, all at once; frames counted over the same window.
//!
//! Run: `cargo bench --bench webrtc` (about 2 minutes) or `cargo bench --bench webrtc -- --quick`.
//! Needs Chromium and the driver's venv (`scripts/setup.sh --test`). Prints a table and writes
//! `target/bench/webrtc-bench.json`; docs/web.md has figures.

#[allow(dead_code)]
#[path = "../common/proc.rs"]
mod proc;
#[allow(dead_code)]
#[path = "../camstream/rawclient.rs"]
mod rawclient;
#[path = "../../tests/common/rtsp_wire.rs"]
mod rtsp_wire;
#[allow(dead_code)]
#[path = "../camstream/stamp.rs"]
mod stamp;
#[allow(dead_code)]
#[path = "../camstream/viewer.rs"]
mod viewer;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use proc::{clk_tck, cpu_ticks, free_port, percentile, wall};

use rawclient::Proto;
use viewer::Viewer;

const TABS: usize = 10;
const RTSP_VIEWERS: usize = 10;
const FPS: f64 = 30.0;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// camstream as a child process, on free loopback ports.
struct Daemon {
    child: Child,
    http: u16,
    rtsp: u16,
}

impl Daemon {
    fn start(sets: &[(&str, String)]) -> Daemon {
        let bin = std::env::var_os("CAMSTREAM_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_camstream")));
        let (http, rtsp) = (free_port(), free_port());
        let mut cmd = Command::new(bin);
        let base = [
            ("rtsp.address", "127.0.0.1".to_string()),
            ("rtsp.port", rtsp.to_string()),
            ("http.address", "127.0.0.1".to_string()),
            ("http.port", http.to_string()),
            ("webrtc.address", "127.0.0.1".to_string()),
            ("webrtc.udp_port", "0".to_string()),
            ("webrtc.session_timeout_s", "3".to_string()),
            ("encoder.kind", "x264".to_string()),
            ("log.level", "warn".to_string()),
        ];
        for (k, v) in base.iter().chain(sets.iter()) {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        cmd.env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("camstream starts");
        let d = Daemon { child, http, rtsp };
        let deadline = Instant::now() + Duration::from_secs(30);
        while d.get("/readyz").0 != 200 {
            assert!(Instant::now() < deadline, "camstream did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn get(&self, path: &str) -> (u16, String) {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.http)) else {
            return (0, String::new());
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        );
        let mut raw = String::new();
        let _ = s.read_to_string(&mut raw);
        let code = raw
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = raw
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        (code, body)
    }

    fn metric(&self, sample: &str) -> f64 {
        self.get("/metrics")
            .1
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (n, v) = l.rsplit_once(' ')?;
                (n == sample).then(|| v.parse().ok()).flatten()
            })
            .unwrap_or(0.0)
    }

    fn rtsp_url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/video", self.rtsp)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs tests/webrtc/browser.py and returns its JSON.
fn browser(args: &[&str]) -> Value {
    let venv = root().join("target/recording-venv/bin/python");
    if !venv.exists() {
        let ok = Command::new("bash")
            .arg(root().join("tests/recording/setup-venv.sh"))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "tests/recording/setup-venv.sh failed");
    }
    let out = Command::new("timeout")
        .arg("300")
        .arg(venv)
        .arg(root().join("tests/webrtc/browser.py"))
        .args(args)
        .output()
        .expect("the Chromium driver runs");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "driver output: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn latency(seconds: u32) -> Value {
    let socket = std::env::temp_dir().join(format!("camstream-webrtc-{}.sock", std::process::id()));
    let stamper = stamp::Stamper::start(&socket, 1280, 720, 30);
    let d = Daemon::start(&[
        ("source.kind", "pipeline".into()),
        (
            "source.pipeline",
            stamp::source_fragment(&socket, 1280, 720, 30),
        ),
        ("video.width", "1280".into()),
        ("video.height", "720".into()),
        ("video.fps", "30".into()),
        ("encoder.bitrate_kbps", "4000".into()),
        ("encoder.keyframe_interval", "60".into()),
    ]);
    let rtsp = Viewer::rtsp(&d.rtsp_url(), Proto::Tcp, true);
    assert!(
        rtsp.wait_first(Duration::from_secs(15)).is_some(),
        "the RTSP viewer got no picture"
    );
    std::thread::sleep(Duration::from_secs(2));
    let _ = rtsp.take_latencies();
    let unreadable0 = rtsp.unreadable();
    let url = format!("http://127.0.0.1:{}/view/video", d.http);
    let b = browser(&["latency", &url, "video", "--seconds", &seconds.to_string()]);
    let r_ms: Vec<f64> = rtsp
        .take_latencies()
        .iter()
        .map(|&u| u as f64 / 1000.0)
        .collect();
    let r_unreadable = rtsp.unreadable() - unreadable0;
    drop(rtsp);
    drop(d);
    drop(stamper);
    let w_ms: Vec<f64> = b["latencies_ms"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let summary = |v: &[f64]| {
        json!({
            "frames": v.len(),
            "p50_ms": percentile(v, 50.0),
            "p95_ms": percentile(v, 95.0),
            "min_ms": percentile(v, 0.0),
            "max_ms": percentile(v, 100.0),
        })
    };
    let mut webrtc = summary(&w_ms);
    webrtc["unreadable"] = b["unreadable"].clone();
    webrtc["error"] = b["error"].clone();
    let mut rtsp = summary(&r_ms);
    rtsp["unreadable"] = json!(r_unreadable);
    json!({
        "picture": "1280x720@30, x264 4 Mb/s, GOP 60",
        "window_s": seconds,
        "webrtc_chromium": webrtc,
        "rtsp_tcp": rtsp,
    })
}

/// CPU samples of a process: (wall time, ticks).
struct Sampler {
    samples: Arc<Mutex<Vec<(f64, u64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (samples.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                s.lock().unwrap().push((wall(), cpu_ticks(pid)));
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Sampler {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// Share of one core used between wall times `a` and `b` (nearest samples inside).
    fn core_share(&self, a: f64, b: f64) -> Option<f64> {
        let s = self.samples.lock().unwrap();
        let first = s.iter().find(|(t, _)| *t >= a)?;
        let last = s.iter().rev().find(|(t, _)| *t <= b)?;
        let dt = last.0 - first.0;
        (dt > 0.5).then(|| (last.1 - first.1) as f64 / clk_tck() / dt)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn load(seconds: u32) -> Value {
    let d = Daemon::start(&[
        ("source.kind", "test".into()),
        ("video.width", "320".into()),
        ("video.height", "240".into()),
        ("video.fps", "30".into()),
        ("encoder.bitrate_kbps", "500".into()),
        ("encoder.keyframe_interval", "60".into()),
    ]);
    let sampler = Sampler::start(d.child.id());
    let start = (Instant::now(), wall());
    let to_instant = |w: f64| start.0 + Duration::from_secs_f64((w - start.1).max(0.0));
    let viewers: Vec<Viewer> = (0..RTSP_VIEWERS)
        .map(|_| Viewer::rtsp(&d.rtsp_url(), Proto::Tcp, false))
        .collect();
    for v in &viewers {
        assert!(
            v.wait_first(Duration::from_secs(15)).is_some(),
            "an RTSP viewer got no picture"
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    // RTSP only, before.
    let before = (wall(), {
        std::thread::sleep(Duration::from_secs(seconds.into()));
        wall()
    });
    let url = format!("http://127.0.0.1:{}/view/video", d.http);
    let b = browser(&[
        "tabs",
        &url,
        "video",
        &TABS.to_string(),
        "--seconds",
        &seconds.to_string(),
    ]);
    // RTSP only, after the tabs are gone (their sessions freed).
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.metric("camstream_webrtc_viewers{stream=\"video\"}") > 0.0 && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = (wall(), {
        std::thread::sleep(Duration::from_secs(seconds.into()));
        wall()
    });
    let window = (
        b["window"]["start"].as_f64().unwrap_or(0.0),
        b["window"]["end"].as_f64().unwrap_or(0.0),
    );
    let rtsp_kept: Vec<f64> = viewers
        .iter()
        .map(|v| {
            let (a, z) = (to_instant(window.0), to_instant(window.1));
            let n = v.arrivals().iter().filter(|t| **t >= a && **t < z).count();
            n as f64 / (FPS * (window.1 - window.0))
        })
        .collect();
    let tabs_kept: Vec<f64> = b["tabs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| t["fps"].as_f64().unwrap_or(0.0) / FPS)
                .collect()
        })
        .unwrap_or_default();
    let cpu_before = sampler.core_share(before.0, before.1);
    let cpu_during = sampler.core_share(window.0, window.1);
    let cpu_after = sampler.core_share(after.0, after.1);
    let rtsp_only = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some((a + b) / 2.0),
        (a, b) => a.or(b),
    };
    let per_viewer = match (cpu_during, rtsp_only) {
        (Some(d), Some(r)) => Some((d - r) / TABS as f64 * 100.0),
        _ => None,
    };
    drop(viewers);
    json!({
        "picture": "320x240@30, x264 500 kb/s",
        "window_s": seconds,
        "webrtc_tabs": TABS,
        "rtsp_viewers": RTSP_VIEWERS,
        "driver_error": b["error"],
        "webrtc_kept_min": tabs_kept.iter().copied().reduce(f64::min),
        "webrtc_kept": tabs_kept,
        "rtsp_kept_min": rtsp_kept.iter().copied().reduce(f64::min),
        "rtsp_kept": rtsp_kept,
        "cpu_core_rtsp_only_before": cpu_before,
        "cpu_core_with_webrtc": cpu_during,
        "cpu_core_rtsp_only_after": cpu_after,
        "cpu_percent_of_core_per_webrtc_viewer": per_viewer,
    })
}

fn f(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
}

fn main() {
    gst::init().expect("GStreamer");
    stamp::self_check();
    let quick = std::env::args().any(|a| a == "--quick");
    let seconds = if quick { 6 } else { 15 };
    eprintln!("latency: WebRTC in Chromium and RTSP, same run ({seconds} s)...");
    let lat = latency(seconds);
    eprintln!("load: {TABS} WebRTC tabs + {RTSP_VIEWERS} RTSP viewers ({seconds} s windows)...");
    let load = load(seconds);
    let report = json!({
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        },
        "latency": lat,
        "load": load,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    let l = &report["latency"];
    let w = &report["load"];
    println!();
    println!("| glass-to-glass, 1280x720@30 | frames | p50 ms | p95 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (name, key) in [
        ("WebRTC, Chromium", "webrtc_chromium"),
        ("RTSP/TCP, GStreamer", "rtsp_tcp"),
    ] {
        let r = &l[key];
        println!(
            "| {name} | {} | {} | {} | {} |",
            r["frames"],
            f(&r["p50_ms"], 1),
            f(&r["p95_ms"], 1),
            f(&r["max_ms"], 1)
        );
    }
    println!();
    println!(
        "| {TABS} WebRTC + {RTSP_VIEWERS} RTSP, 320x240@30 | min frames kept | camstream CPU (core) |"
    );
    println!("|---|---|---|");
    println!(
        "| WebRTC tabs | {} | {} with, {} RTSP only (before/after avg) |",
        f(&w["webrtc_kept_min"], 3),
        f(&w["cpu_core_with_webrtc"], 3),
        f(
            &json!(
                (w["cpu_core_rtsp_only_before"].as_f64().unwrap_or(0.0)
                    + w["cpu_core_rtsp_only_after"].as_f64().unwrap_or(0.0))
                    / 2.0
            ),
            3
        )
    );
    println!("| RTSP viewers | {} | |", f(&w["rtsp_kept_min"], 3));
    println!(
        "| per WebRTC viewer | | {} % of a core |",
        f(&w["cpu_percent_of_core_per_webrtc_viewer"], 2)
    );
    let out = root().join("target/bench/webrtc-bench.json");
    let _ = std::fs::create_dir_all(out.parent().unwrap());
    let _ = std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap());
    eprintln!("written {}", out.display());
}
