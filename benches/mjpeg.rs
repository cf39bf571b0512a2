//! What pictures from the raw tap cost (issue 28), measured on the real daemon at a 720p30 test
//! source with x264, each case a fresh daemon beside the baseline of the same run:
//!
//! - RSS: one RTSP viewer only (baseline), then with a client polling `/snapshot.jpg` once a
//!   second, then with two MJPEG clients as well. Target: snapshots and MJPEG add at most
//!   15 MiB (the issue measured 49 → 119 MiB with the old decode-the-GOP snapshots).
//! - One encode for many: 1 and 10 MJPEG clients of 640x480 at `mjpeg.fps = 15` (camera
//!   640x480@30): encoders running, JPEG pictures made a second and the daemon's CPU.
//!
//! The clients are plain sockets in this process that read and drop the bytes (ffmpeg as the
//! RTSP viewer), so only the daemon's cost is measured. Prints a table and writes JSON.
//!
//! `cargo bench --bench mjpeg [-- --seconds N --out PATH]`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_camstream");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A field of /proc/PID/status in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

/// A GET, its whole answer.
fn get(port: u16, path: &str) -> Vec<u8> {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return Vec::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// A metric's value from `/metrics`, summed over its label sets that contain `labels`.
fn metric(port: u16, name: &str) -> f64 {
    let text = String::from_utf8_lossy(&get(port, "/metrics")).into_owned();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

struct Daemon {
    child: Child,
    http: u16,
    rtsp: u16,
}

impl Daemon {
    fn start(sets: &[(&str, &str)]) -> Daemon {
        let (http, rtsp) = (free_port(), free_port());
        let mut cmd = Command::new(BIN);
        let base = [
            ("source.kind", "test".to_string()),
            ("source.pattern", "ball".to_string()),
            ("encoder.kind", "x264".to_string()),
            ("rtsp.address", "127.0.0.1".to_string()),
            ("http.address", "127.0.0.1".to_string()),
            ("rtsp.port", rtsp.to_string()),
            ("http.port", http.to_string()),
            ("webrtc.enabled", "false".to_string()),
        ];
        for (k, v) in base {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        for (k, v) in sets {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        cmd.env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("the camstream binary runs");
        let d = Daemon { child, http, rtsp };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !String::from_utf8_lossy(&get(http, "/readyz")).contains("200 OK") {
            assert!(Instant::now() < deadline, "the daemon did not get ready");
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ffmpeg decoding the RTSP stream (the baseline viewer).
struct RtspViewer(Child);

impl RtspViewer {
    fn start(port: u16) -> RtspViewer {
        RtspViewer(
            Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
                .args(["-rtsp_transport", "tcp", "-i"])
                .arg(format!("rtsp://127.0.0.1:{port}/video"))
                .args(["-f", "null", "-"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("ffmpeg runs"),
        )
    }
}

impl Drop for RtspViewer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Background clients in this process, stopped together.
#[derive(Default)]
struct Clients {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Clients {
    /// A client polling `/snapshot.jpg` once a second.
    fn snapshots(&mut self, port: u16) {
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let _ = get(port, "/snapshot.jpg");
                std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
            }
        }));
    }

    /// An MJPEG client that reads and drops everything.
    fn mjpeg(&mut self, port: u16, path: &str) {
        let stop = self.stop.clone();
        let path = path.to_string();
        self.threads.push(std::thread::spawn(move || {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                return;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            let mut buf = vec![0u8; 1 << 16];
            while !stop.load(Ordering::Relaxed) {
                if matches!(s.read(&mut buf), Ok(0)) {
                    return;
                }
            }
        }));
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// RSS (median and max of 4 samples a second, in MiB) and CPU (% of one core) over `secs`
/// after `warmup`.
fn sample(d: &Daemon, warmup: f64, secs: f64) -> (f64, f64, f64) {
    std::thread::sleep(Duration::from_secs_f64(warmup));
    let (t0, c0) = (Instant::now(), cpu_seconds(d.pid()));
    let mut rss = Vec::new();
    while t0.elapsed().as_secs_f64() < secs {
        rss.push(rss_kib(d.pid()) as f64 / 1024.0);
        std::thread::sleep(Duration::from_millis(250));
    }
    let cpu = (cpu_seconds(d.pid()) - c0) / t0.elapsed().as_secs_f64() * 100.0;
    rss.sort_by(f64::total_cmp);
    let median = rss.get(rss.len() / 2).copied().unwrap_or(0.0);
    let max = rss.last().copied().unwrap_or(0.0);
    (median, max, cpu)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let secs: f64 = opt("--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(20.0);
    let out = opt("--out").unwrap_or_else(|| "target/bench-mjpeg.json".into());
    let warmup = 5.0;
    let hd = [
        ("video.width", "1280"),
        ("video.height", "720"),
        ("video.fps", "30"),
    ];

    // RSS: RTSP only, + snapshots, + MJPEG.
    let mut rss_rows = Vec::new();
    for case in [
        "rtsp only",
        "+ /snapshot.jpg every 1 s",
        "+ 2 MJPEG clients",
    ] {
        let d = Daemon::start(&hd);
        let _viewer = RtspViewer::start(d.rtsp);
        let mut clients = Clients::default();
        if case != "rtsp only" {
            clients.snapshots(d.http);
        }
        if case == "+ 2 MJPEG clients" {
            clients.mjpeg(d.http, "/mjpeg/video");
            clients.mjpeg(d.http, "/mjpeg/video");
        }
        let (median, max, cpu) = sample(&d, warmup, secs);
        drop(clients);
        rss_rows.push((case, median, max, cpu));
    }
    let base = rss_rows[0].1;

    // One encode for many: 640x480 at mjpeg.fps = 15 from a 30 fps camera.
    let mut share_rows = Vec::new();
    for n in [1usize, 10] {
        let d = Daemon::start(&[
            ("video.width", "640"),
            ("video.height", "480"),
            ("video.fps", "30"),
            ("mjpeg.fps", "15"),
        ]);
        let mut clients = Clients::default();
        for _ in 0..n {
            clients.mjpeg(d.http, "/mjpeg/video");
        }
        std::thread::sleep(Duration::from_secs_f64(warmup));
        let e0 = metric(d.http, "camstream_mjpeg_frames_encoded_total");
        let s0 = metric(d.http, "camstream_mjpeg_frames_sent_total");
        let t0 = Instant::now();
        let (_, max, cpu) = sample(&d, 0.0, secs);
        let dt = t0.elapsed().as_secs_f64();
        let encoded = (metric(d.http, "camstream_mjpeg_frames_encoded_total") - e0) / dt;
        let sent = (metric(d.http, "camstream_mjpeg_frames_sent_total") - s0) / dt;
        let encoders = metric(d.http, "camstream_mjpeg_encoders");
        drop(clients);
        share_rows.push((n, encoders, encoded, sent, cpu, max));
    }

    println!("\nRSS at 1280x720@30 (x264, one RTSP viewer), {secs} s after {warmup} s warm-up");
    println!(
        "{:28} {:>11} {:>9} {:>10} {:>7}",
        "case", "RSS MiB", "max MiB", "added MiB", "CPU %"
    );
    let mut rss_json = Vec::new();
    for (case, median, max, cpu) in &rss_rows {
        println!(
            "{case:28} {median:>11.1} {max:>9.1} {:>10.1} {cpu:>7.1}",
            median - base
        );
        rss_json.push(json!({"case": case, "rss_mib": median, "rss_max_mib": max,
            "added_mib": median - base, "cpu_percent": cpu}));
    }
    println!(
        "target: at most 15 MiB added; the issue's figure for the old snapshot path: 49 → 119 MiB"
    );
    println!("\nMJPEG 640x480, mjpeg.fps = 15 (camera 30 fps)");
    println!(
        "{:8} {:>9} {:>12} {:>10} {:>7} {:>8}",
        "clients", "encoders", "encoded/s", "sent/s", "CPU %", "RSS MiB"
    );
    let mut share_json = Vec::new();
    for (n, encoders, encoded, sent, cpu, max) in &share_rows {
        println!("{n:8} {encoders:>9} {encoded:>12.1} {sent:>10.1} {cpu:>7.1} {max:>8.1}");
        share_json.push(
            json!({"clients": n, "encoders": encoders, "encoded_per_s": encoded,
            "sent_per_s": sent, "cpu_percent": cpu, "rss_max_mib": max}),
        );
    }
    let v: Value = json!({"seconds": secs, "rss": rss_json, "sharing": share_json});
    let _ = std::fs::write(&out, serde_json::to_string_pretty(&v).unwrap_or_default());
    println!("\n{}", v);
}
