//! Sound, measured (issue #24): the CPU and memory audio adds, and whether sound and picture
//! are still in step at the end of a long run.
//!
//! - Cost: one camstream at 640x480@30 (test pattern, x264 at 1 Mb/s) with one RTSP viewer
//!   (ffmpeg over TCP, copying every track) and one WebRTC viewer (headless Chromium on
//!   `/view/video`), first without sound, then with `audio.kind = "test"` at 48 kHz mono, so
//!   Opus (WebRTC) and AAC (RTSP) are both encoded. camstream's CPU (utime + stime from /proc,
//!   share of one core) and RSS over the same window of each run.
//! - Sync: one camstream with the flashing test picture and its beep, an RTSP viewer connected
//!   throughout, and the flash-to-beep offset measured from a decoded RTSP recording at the
//!   start and at the end (tests/av_sync: ffmpeg's signalstats and silencedetect).
//!
//! Run: `cargo bench --bench audio_cost` (cost, about 1 minute, then a 30-minute sync run), or
//! `cargo bench --bench audio_cost -- --quick --sync-minutes 2`. `--sync-minutes 0` skips the sync
//! run. Needs ffmpeg, Chromium and the driver's venv (`scripts/setup.sh --test`). Prints a
//! table and writes `target/bench/audio-bench.json`; docs/audio.md has figures.

#[path = "../../tests/av_sync/mod.rs"]
mod av_sync;
#[allow(dead_code)]
#[path = "../common/proc.rs"]
mod proc;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use proc::{clk_tck, cpu_ticks, free_port, rss_kib};

/// The bound on the flash-to-beep offset, in ms.
const SYNC_LIMIT_MS: f64 = 40.0;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A camstream child, killed on drop.
struct Daemon {
    child: Child,
    http: u16,
    rtsp: u16,
}

impl Daemon {
    fn start(sets: &[(&str, &str)]) -> Daemon {
        let bin = std::env::var_os("CAMSTREAM_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_camstream")));
        let (http, rtsp) = (free_port(), free_port());
        let mut cmd = Command::new(bin);
        let (http_s, rtsp_s) = (http.to_string(), rtsp.to_string());
        let base: [(&str, &str); 12] = [
            ("rtsp.address", "127.0.0.1"),
            ("rtsp.port", &rtsp_s),
            ("http.address", "127.0.0.1"),
            ("http.port", &http_s),
            ("webrtc.address", "127.0.0.1"),
            ("webrtc.udp_port", "0"),
            ("source.kind", "test"),
            ("video.fps", "30"),
            ("encoder.kind", "x264"),
            ("encoder.bitrate_kbps", "1000"),
            ("encoder.keyframe_interval", "60"),
            ("log.level", "warn"),
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

    fn pid(&self) -> u32 {
        self.child.id()
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
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        (status, body)
    }

    fn rtsp_url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/video", self.rtsp)
    }

    /// A metric's value (the first sample whose line starts with `sample`).
    fn metric(&self, sample: &str) -> Option<f64> {
        self.get("/metrics")
            .1
            .lines()
            .find(|l| l.starts_with(sample))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed on drop (the viewers).
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An RTSP viewer: ffmpeg over TCP copying every track into nothing, for `seconds`.
fn rtsp_viewer(url: &str, seconds: u64) -> Kid {
    Kid(Command::new("timeout")
        .arg((seconds + 30).to_string())
        .args(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error"])
        .args([
            "-rtsp_transport",
            "tcp",
            "-i",
            url,
            "-map",
            "0",
            "-c",
            "copy",
        ])
        .args(["-t", &seconds.to_string(), "-f", "null", "-"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg runs"))
}

/// A WebRTC viewer: headless Chromium playing the full-window page for `seconds`.
fn webrtc_viewer(d: &Daemon, seconds: u64) -> Kid {
    let url = format!("http://127.0.0.1:{}/view/video", d.http);
    Kid(Command::new("timeout")
        .arg((seconds + 60).to_string())
        .arg(root().join("target/recording-venv/bin/python"))
        .arg(root().join("tests/webrtc/browser.py"))
        .args(["play", &url, "video", "--seconds", &seconds.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the Chromium driver runs (scripts/setup.sh --test)"))
}

/// One cost run: camstream with `sets`, an RTSP and a WebRTC viewer, CPU and RSS over
/// `window` seconds once both play.
fn cost(name: &str, sets: &[(&str, &str)], window: u64) -> Value {
    let d = Daemon::start(sets);
    let total = window + 15;
    let _rtsp = rtsp_viewer(&d.rtsp_url(), total);
    let _web = webrtc_viewer(&d, total);
    let deadline = Instant::now() + Duration::from_secs(30);
    while d
        .metric("camstream_webrtc_frames_sent_total{stream=\"video\"}")
        .unwrap_or(0.0)
        < 30.0
    {
        assert!(Instant::now() < deadline, "{name}: no WebRTC viewer played");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Past the joins' transients.
    std::thread::sleep(Duration::from_secs(3));
    let (t0, c0) = (Instant::now(), cpu_ticks(d.pid()));
    let mut rss = Vec::new();
    while t0.elapsed() < Duration::from_secs(window) {
        rss.push(rss_kib(d.pid()));
        std::thread::sleep(Duration::from_millis(500));
    }
    let (t1, c1) = (t0.elapsed().as_secs_f64(), cpu_ticks(d.pid()));
    let cpu = (c1 - c0) as f64 / clk_tck() / t1;
    rss.sort_unstable();
    let opus = d
        .metric("camstream_webrtc_audio_packets_sent_total{stream=\"video\"}")
        .unwrap_or(0.0);
    json!({
        "run": name,
        "window_s": t1,
        "cpu_core": cpu,
        "rss_kib_median": rss.get(rss.len() / 2).copied().unwrap_or(0),
        "rss_kib_max": rss.last().copied().unwrap_or(0),
        "webrtc_opus_packets": opus,
    })
}

/// Flash-to-beep offsets of `seconds` of the RTSP stream, recorded and decoded by ffmpeg.
fn rtsp_sync(d: &Daemon, seconds: u32, tag: &str) -> av_sync::Sync {
    let dir = root().join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("audio-sync-{tag}.mkv"));
    av_sync::record(&["-rtsp_transport", "tcp"], &d.rtsp_url(), seconds, &file);
    let s = av_sync::measure(&file);
    let _ = std::fs::remove_file(&file);
    s
}

fn sync_json(s: &av_sync::Sync) -> Value {
    json!({
        "pairs": s.offsets_ms.len(),
        "median_ms": s.median_ms(),
        "worst_ms": s.worst_ms(),
        "offsets_ms": s.offsets_ms,
        "within_limit": !s.offsets_ms.is_empty()
            && s.offsets_ms.iter().all(|o| o.abs() <= SYNC_LIMIT_MS),
    })
}

/// The long run: the flashing, beeping test stream with an RTSP viewer throughout, measured at
/// the start and after `minutes`.
fn sync_run(minutes: u64) -> Value {
    let d = Daemon::start(&[
        ("source.pattern", "black"),
        ("video.width", "320"),
        ("video.height", "240"),
        ("audio.kind", "test"),
    ]);
    let secs = minutes * 60;
    let _viewer = rtsp_viewer(&d.rtsp_url(), secs);
    let start = rtsp_sync(&d, 8, "start");
    eprintln!("sync at the start: {}", start.summary());
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_secs(10).min(until - Instant::now()));
    }
    let end = rtsp_sync(&d, 8, "end");
    eprintln!("sync after {minutes} min: {}", end.summary());
    json!({
        "minutes": minutes,
        "start": sync_json(&start),
        "end": sync_json(&end),
        "audio_restarts": d.metric("camstream_audio_restarts_total").unwrap_or(0.0),
    })
}

fn opt(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let window = if quick { 10 } else { 30 };
    let minutes: u64 = opt("--sync-minutes")
        .and_then(|m| m.parse().ok())
        .unwrap_or(30);
    let size = [("video.width", "640"), ("video.height", "480")];
    eprintln!("cost: video only, then with sound ({window} s windows)...");
    let video = cost("video only", &size, window);
    let mut with = size.to_vec();
    with.extend([
        ("audio.kind", "test"),
        ("audio.rate", "48000"),
        ("audio.channels", "1"),
    ]);
    let audio = cost("video + audio (Opus + AAC, 48 kHz mono)", &with, window);
    let sync = if minutes > 0 {
        eprintln!("sync: {minutes} min with an RTSP viewer...");
        sync_run(minutes)
    } else {
        Value::Null
    };
    let report = json!({
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        },
        "cost": [video, audio],
        "sync": sync,
    });
    let dir = root().join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join("audio-bench.json"),
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    println!();
    println!(
        "| 640x480@30, 1 RTSP + 1 WebRTC viewer | camstream CPU (core) | RSS median (MiB) | Opus packets to WebRTC |"
    );
    println!("|---|---|---|---|");
    for r in report["cost"].as_array().into_iter().flatten() {
        println!(
            "| {} | {:.3} | {:.1} | {} |",
            r["run"].as_str().unwrap_or(""),
            r["cpu_core"].as_f64().unwrap_or(f64::NAN),
            r["rss_kib_median"].as_f64().unwrap_or(f64::NAN) / 1024.0,
            r["webrtc_opus_packets"]
        );
    }
    let (v, a) = (&report["cost"][0], &report["cost"][1]);
    println!(
        "| added by audio | {:+.3} | {:+.1} | |",
        a["cpu_core"].as_f64().unwrap_or(f64::NAN) - v["cpu_core"].as_f64().unwrap_or(f64::NAN),
        (a["rss_kib_median"].as_f64().unwrap_or(f64::NAN)
            - v["rss_kib_median"].as_f64().unwrap_or(f64::NAN))
            / 1024.0
    );
    if !report["sync"].is_null() {
        let s = &report["sync"];
        println!();
        println!(
            "| RTSP flash-to-beep | pairs | median ms | worst ms | within ±{SYNC_LIMIT_MS} ms |"
        );
        println!("|---|---|---|---|---|");
        for (name, key) in [("at the start", "start"), ("at the end", "end")] {
            let r = &s[key];
            println!(
                "| {name} ({} min run) | {} | {:+.1} | {:+.1} | {} |",
                s["minutes"],
                r["pairs"],
                r["median_ms"].as_f64().unwrap_or(f64::NAN),
                r["worst_ms"].as_f64().unwrap_or(f64::NAN),
                r["within_limit"]
            );
        }
    }
}
