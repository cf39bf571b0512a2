//! Low-latency HLS, measured (issue #28): glass-to-glass latency of HLS (hls.js in headless
//! Chromium) beside WebRTC (the page, Chromium) and RTSP (GStreamer) of the same camstream in one
//! run, and camstream's CPU with N LL-HLS clients against the same stream without them (the HLS
//! muxer repackages the hub's H.264: no second encode).
//!
//! - Latency: the stamping source of the camstream bench (benches/camstream/stamp.rs: the wall
//!   clock painted into each 1280x720@30 frame) feeds camstream through shm; x264 at 4 Mb/s, GOP
//!   30 (segments of 1 s, parts of 200 ms). The RTSP viewer reads the stamp after decoding
//!   throughout; Chromium reads it from each composited frame, first on the page (WebRTC), then
//!   with hls.js 1.7.4 in low-latency mode (tests/hls/hlsjs.py, served from its own fixture).
//! - CPU: 640x480@30 test pattern, `hls.mode = "on_demand"`; camstream's CPU over a window with
//!   no HLS client, then with N clients each following the playlist as an LL-HLS player does
//!   (blocking reload for the next part, then that part), then again after they left and the
//!   muxer stopped.
//!
//! Run: `cargo bench --bench hls` (about 2 minutes) or `cargo bench --bench hls -- --quick`.
//! Needs Chromium, the driver's venv and hls.js (`scripts/setup.sh --test`). Prints JSON and a
//! table and writes `target/bench/hls-bench.json`; docs/hls.md has figures.

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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use proc::{clk_tck, cpu_ticks, free_port, percentile, wall};

use rawclient::Proto;
use viewer::Viewer;

const HLS_CLIENTS: usize = 8;

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
        while get(d.http, "/readyz").0 != 200 {
            assert!(Instant::now() < deadline, "camstream did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn metric(&self, sample: &str) -> f64 {
        String::from_utf8_lossy(&get(self.http, "/metrics").1)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (n, v) = l.rsplit_once(' ')?;
                (n == sample).then(|| v.parse().ok()).flatten()
            })
            .unwrap_or(0.0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One GET with `Connection: close`: status and body.
fn get(port: u16, path: &str) -> (u16, Vec<u8>) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, Vec::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (0, Vec::new());
    };
    let code = String::from_utf8_lossy(&raw[..split])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, raw[split + 4..].to_vec())
}

/// Runs a Python driver with the venv the Chromium tests use and returns its JSON.
fn driver(script: &str, args: &[&str]) -> Value {
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
        .arg(root().join(script))
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

fn summary(v: &[f64]) -> Value {
    json!({
        "frames": v.len(),
        "p50_ms": percentile(v, 50.0),
        "p95_ms": percentile(v, 95.0),
        "min_ms": percentile(v, 0.0),
        "max_ms": percentile(v, 100.0),
    })
}

fn samples(v: &Value) -> Vec<f64> {
    v["latencies_ms"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

fn latency(seconds: u32) -> Value {
    let ok = Command::new("bash")
        .arg(root().join("tests/hls/setup-hlsjs.sh"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "tests/hls/setup-hlsjs.sh failed (npm needed)");
    let socket = std::env::temp_dir().join(format!("camstream-hls-{}.sock", std::process::id()));
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
        ("encoder.keyframe_interval", "30".into()),
        ("hls.part_ms", "200".into()),
        // Steady state: the muxer runs before the player comes (start-up is not latency).
        ("hls.mode", "always".into()),
    ]);
    let rtsp = Viewer::rtsp(
        &format!("rtsp://127.0.0.1:{}/video", d.rtsp),
        Proto::Tcp,
        true,
    );
    assert!(
        rtsp.wait_first(Duration::from_secs(15)).is_some(),
        "the RTSP viewer got no picture"
    );
    std::thread::sleep(Duration::from_secs(2));
    let _ = rtsp.take_latencies();
    let playlist = format!("http://127.0.0.1:{}/hls/video/index.m3u8", d.http);
    let h = driver(
        "tests/hls/hlsjs.py",
        &[&playlist, "--stamp", "--seconds", &seconds.to_string()],
    );
    // What the player was given: longest segment against the target, discontinuities.
    let text = String::from_utf8_lossy(&get(d.http, "/hls/video/index.m3u8").1).into_owned();
    let longest = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|v| v.trim_end_matches(',').parse::<f64>().ok())
        .fold(0.0, f64::max);
    let playlist_seen = json!({
        "target_s": text.lines().find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:")),
        "longest_segment_s": longest,
        "discontinuities": text.matches("#EXT-X-DISCONTINUITY\n").count(),
        "encoded_fps": d.metric("camstream_frames_per_second{stream=\"video\"}"),
    });
    let page = format!("http://127.0.0.1:{}/view/video", d.http);
    let w = driver(
        "tests/webrtc/browser.py",
        &["latency", &page, "video", "--seconds", &seconds.to_string()],
    );
    let r_ms: Vec<f64> = rtsp
        .take_latencies()
        .iter()
        .map(|&u| u as f64 / 1000.0)
        .collect();
    drop(rtsp);
    drop(d);
    drop(stamper);
    let mut hls = summary(&samples(&h));
    hls["unreadable"] = h["unreadable"].clone();
    hls["hlsjs_latency_s"] = h["hls_latency_s"].clone();
    hls["fps_decoded"] = h["fps_decoded"].clone();
    hls["error"] = h["error"].clone();
    hls["playlist"] = playlist_seen;
    let mut webrtc = summary(&samples(&w));
    webrtc["unreadable"] = w["unreadable"].clone();
    webrtc["error"] = w["error"].clone();
    json!({
        "picture": "1280x720@30, x264 4 Mb/s, GOP 30, parts 200 ms",
        "window_s": seconds,
        "hls_hlsjs_chromium": hls,
        "webrtc_chromium": webrtc,
        "rtsp_tcp": summary(&r_ms),
        "target_ms": 1500,
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

/// The last part URI of a media playlist and where the next one is: (msn, part index).
fn live_edge(text: &str) -> Option<(String, u64, u64)> {
    let mut msn: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))?
        .parse()
        .ok()?;
    let (mut parts, mut last) = (0, None);
    for l in text.lines() {
        if l.starts_with("#EXT-X-PART:") {
            parts += 1;
            last = l
                .split("URI=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(String::from);
        } else if !l.starts_with('#') && !l.is_empty() {
            msn += 1;
            parts = 0;
        }
    }
    Some((last?, msn, parts))
}

/// An LL-HLS client: blocking reload for the next part, then that part, until `stop`.
fn client(port: u16, stop: Arc<AtomicBool>, bytes: Arc<AtomicU64>) {
    let mut next: Option<(u64, u64)> = None;
    while !stop.load(Ordering::Relaxed) {
        let path = match next {
            Some((m, p)) => format!("/hls/video/index.m3u8?_HLS_msn={m}&_HLS_part={p}"),
            None => "/hls/video/index.m3u8".to_string(),
        };
        let (code, body) = get(port, &path);
        if code != 200 {
            next = None;
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let text = String::from_utf8_lossy(&body);
        let Some((uri, msn, parts)) = live_edge(&text) else {
            continue;
        };
        let (_, part) = get(port, &format!("/hls/video/{uri}"));
        bytes.fetch_add(part.len() as u64, Ordering::Relaxed);
        next = Some((msn, parts));
    }
}

fn cpu(seconds: u32) -> Value {
    let d = Daemon::start(&[
        ("source.kind", "test".into()),
        ("video.width", "640".into()),
        ("video.height", "480".into()),
        ("video.fps", "30".into()),
        ("encoder.bitrate_kbps", "1500".into()),
        ("encoder.keyframe_interval", "30".into()),
        ("hls.idle_stop_s", "5".into()),
    ]);
    let sampler = Sampler::start(d.child.id());
    std::thread::sleep(Duration::from_secs(2));
    let window = || {
        let a = wall();
        std::thread::sleep(Duration::from_secs(seconds.into()));
        (a, wall())
    };
    let before = window();
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..HLS_CLIENTS)
        .map(|_| {
            let (s, b, port) = (stop.clone(), bytes.clone(), d.http);
            std::thread::spawn(move || client(port, s, b))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let b0 = bytes.load(Ordering::Relaxed);
    let during = window();
    let served = bytes.load(Ordering::Relaxed) - b0;
    let encoded = d.metric("camstream_frames_encoded_total{stream=\"video\"}");
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while d.metric("camstream_hls_muxers_active{stream=\"video\"}") > 0.0
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = window();
    let (b, w, a) = (
        sampler.core_share(before.0, before.1),
        sampler.core_share(during.0, during.1),
        sampler.core_share(after.0, after.1),
    );
    let without = match (b, a) {
        (Some(x), Some(y)) => Some((x + y) / 2.0),
        (x, y) => x.or(y),
    };
    json!({
        "picture": "640x480@30, x264 1.5 Mb/s, GOP 30",
        "window_s": seconds,
        "hls_clients": HLS_CLIENTS,
        "cpu_core_without_hls_before": b,
        "cpu_core_with_hls": w,
        "cpu_core_without_hls_after": a,
        "cpu_percent_of_core_added_by_hls": match (w, without) {
            (Some(w), Some(o)) => Some((w - o) * 100.0),
            _ => None,
        },
        "hls_part_bytes_per_s_per_client": served as f64 / f64::from(seconds) / HLS_CLIENTS as f64,
        "frames_encoded_total": encoded,
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
    eprintln!("latency: HLS (hls.js), WebRTC (page) and RTSP, same camstream ({seconds} s)...");
    let lat = latency(seconds);
    eprintln!(
        "cpu: no HLS client, {HLS_CLIENTS} LL-HLS clients, none again ({seconds} s windows)..."
    );
    let cpu = cpu(seconds);
    let report = json!({
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        },
        "latency": lat,
        "cpu": cpu,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    let l = &report["latency"];
    println!();
    println!("| glass-to-glass, 1280x720@30, one run | frames | p50 ms | p95 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (name, key) in [
        ("LL-HLS, hls.js in Chromium", "hls_hlsjs_chromium"),
        ("WebRTC, Chromium (baseline)", "webrtc_chromium"),
        ("RTSP/TCP, GStreamer (baseline)", "rtsp_tcp"),
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
    let c = &report["cpu"];
    println!();
    println!("| camstream CPU, 640x480@30 | share of a core |");
    println!("|---|---|");
    println!(
        "| no HLS client (baseline, before / after) | {} / {} |",
        f(&c["cpu_core_without_hls_before"], 3),
        f(&c["cpu_core_without_hls_after"], 3)
    );
    println!(
        "| {HLS_CLIENTS} LL-HLS clients | {} |",
        f(&c["cpu_core_with_hls"], 3)
    );
    println!(
        "| added by HLS | {} % of a core |",
        f(&c["cpu_percent_of_core_added_by_hls"], 2)
    );
    let out = root().join("target/bench/hls-bench.json");
    let _ = std::fs::create_dir_all(out.parent().unwrap());
    let _ = std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap());
    eprintln!("written {}", out.display());
}
