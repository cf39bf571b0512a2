//! CPU per restream push: one camstream at 1280x720@30, x264 at 4 Mb/s, with 0, 1 and 4 UDP
//! pushes to local sockets that drain them, switched live through the API so the same encoder
//! runs throughout. The daemon's CPU comes from /proc: utime + stime of the whole process
//! (against the 0-push windows, measured in the same run between the others, alternating the
//! order) and of the threads created for the pushes (their streaming threads, which run the
//! parser, payloader and sink; the capture's copy into each push's queue is in the process
//! figure only).
//!
//! Run: `cargo bench --bench push` (about 3 minutes) or `cargo bench --bench push -- --quick`.
//! Prints a table and writes `target/bench/push-bench.json`; docs/performance.md has figures.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "bench-token";
/// Push counts measured, in order, each round.
const COUNTS: [usize; 3] = [0, 1, 4];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a /proc stat line (fields 14 and 15, after the parenthesised name).
fn ticks_of(stat: &str) -> u64 {
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    n(11) + n(12)
}

fn process_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| ticks_of(&s))
        .unwrap_or(0)
}

/// Ticks per thread name.
fn thread_ticks(pid: u32) -> Vec<(u64, String, u64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let tid: u64 = e.file_name().to_string_lossy().parse().unwrap_or(0);
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        out.push((tid, comm.trim().to_string(), ticks_of(&stat)));
    }
    out
}

/// A plain HTTP/1.1 request to the daemon's API; returns (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

/// UDP sockets that receive and count everything sent to them.
struct Drains {
    ports: Vec<u16>,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drains {
    fn new(n: usize) -> Drains {
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut ports = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..n {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            ports.push(sock.local_addr().unwrap().port());
            let (b, s) = (bytes.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !s.load(Ordering::Relaxed) {
                    if let Ok(n) = sock.recv(&mut buf) {
                        b.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }));
        }
        Drains {
            ports,
            bytes,
            stop,
            threads,
        }
    }
}

impl Drop for Drains {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct Daemon {
    child: Child,
    http: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon() -> Daemon {
    let bin = std::env::var_os("CAMSTREAM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_camstream")));
    let http_port = free_port();
    let mut cmd = Command::new(bin);
    for (k, v) in [
        ("source.kind", "test".to_string()),
        // Noise: every frame is new, so x264 spends the whole 4 Mb/s and each push carries it.
        ("source.pattern", "snow".into()),
        ("video.width", "1280".into()),
        ("video.height", "720".into()),
        ("video.fps", "30".into()),
        ("encoder.kind", "x264".into()),
        ("encoder.bitrate_kbps", "4000".into()),
        ("rtsp.address", "127.0.0.1".into()),
        ("rtsp.port", free_port().to_string()),
        ("http.address", "127.0.0.1".into()),
        ("http.port", http_port.to_string()),
        ("http.token", TOKEN.into()),
    ] {
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
    cmd.env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let d = Daemon {
        child: cmd.spawn().expect("camstream runs"),
        http: http_port,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = http(http_port, "GET", "/api/v1/streams/video", "");
        if code == 200
            && serde_json::from_str::<Value>(&body).is_ok_and(|j| j["state"] == "streaming")
        {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "camstream did not start streaming"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sets the pushes to the first `n` drains and waits until all stream.
fn set_pushes(d: &Daemon, drains: &Drains, n: usize) {
    let pushes: Vec<Value> = drains.ports[..n]
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"name": format!("p{i}"), "url": format!("udp://127.0.0.1:{p}")}))
        .collect();
    let (code, body) = http(
        d.http,
        "PATCH",
        "/api/v1/streams/video",
        &json!({ "push": pushes }).to_string(),
    );
    assert_eq!(code, 200, "PATCH: {body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http(d.http, "GET", "/api/v1/streams/video", "");
        let j: Value = serde_json::from_str(&body).unwrap_or_default();
        let outputs = j["outputs"].as_array().cloned().unwrap_or_default();
        let streaming = outputs
            .iter()
            .filter(|o| o["detail"]["state"] == "streaming")
            .count();
        if outputs.len() == n && streaming == n {
            return;
        }
        assert!(Instant::now() < deadline, "pushes did not start: {j}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One measured window.
#[derive(Clone, Copy)]
struct Window {
    pushes: usize,
    cpu_pct: f64,
    push_threads_pct: f64,
    push_mbps: f64,
}

/// Measures one window; also returns the threads that did work in it. `base` holds the threads
/// busy with no push (capture, encoder, servers): work on any other thread (each push's appsrc
/// streaming thread, which carries its parser, payloader and sink, possibly a pooled thread
/// that sat idle before) is the pushes' own.
fn measure(
    d: &Daemon,
    drains: &Drains,
    pushes: usize,
    window: Duration,
    hz: f64,
    base: &[u64],
) -> (Window, Vec<u64>) {
    let pid = d.child.id();
    let t0 = Instant::now();
    let p0 = process_ticks(pid);
    let th0 = thread_ticks(pid);
    let b0 = drains.bytes.load(Ordering::Relaxed);
    std::thread::sleep(window);
    let secs = t0.elapsed().as_secs_f64();
    let p1 = process_ticks(pid);
    let th1 = thread_ticks(pid);
    let b1 = drains.bytes.load(Ordering::Relaxed);
    let deltas: Vec<(u64, u64)> = th1
        .iter()
        .map(|(tid, _, t)| {
            let before = th0
                .iter()
                .find(|(t0, _, _)| t0 == tid)
                .map_or(0, |(_, _, t)| *t);
            (*tid, t.saturating_sub(before))
        })
        .collect();
    let busy: Vec<u64> = deltas.iter().filter(|d| d.1 > 0).map(|d| d.0).collect();
    let push_ticks: u64 = deltas
        .iter()
        .filter(|(tid, _)| !base.contains(tid))
        .map(|d| d.1)
        .sum();
    let w = Window {
        pushes,
        cpu_pct: (p1 - p0) as f64 / hz / secs * 100.0,
        push_threads_pct: push_ticks as f64 / hz / secs * 100.0,
        push_mbps: if pushes == 0 {
            0.0
        } else {
            (b1 - b0) as f64 * 8.0 / secs / 1e6 / pushes as f64
        },
    };
    (w, busy)
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn stdev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let (rounds, window, settle) = if quick {
        (2, Duration::from_secs(4), Duration::from_secs(1))
    } else {
        (4, Duration::from_secs(10), Duration::from_secs(3))
    };
    let hz = clk_tck();
    let drains = Drains::new(4);
    let d = start_daemon();
    eprintln!(
        "push bench: camstream streaming; {rounds} rounds of {COUNTS:?} pushes, {window:?} each"
    );
    let mut windows: Vec<Window> = Vec::new();
    let mut base: Vec<u64> = Vec::new();
    for round in 0..rounds {
        // Every other round runs backwards, so a slow drift of the encoder's cost does not
        // favour one count.
        let order: Vec<usize> = if round % 2 == 0 {
            COUNTS.to_vec()
        } else {
            COUNTS.iter().rev().copied().collect()
        };
        for n in order {
            set_pushes(&d, &drains, n);
            std::thread::sleep(settle);
            let (w, busy) = measure(&d, &drains, n, window, hz, &base);
            if n == 0 {
                base = busy;
            }
            eprintln!(
                "  round {round} pushes {n}: process {:.2} % of a core, push threads {:.2} %, {:.2} Mb/s per push",
                w.cpu_pct, w.push_threads_pct, w.push_mbps
            );
            windows.push(w);
        }
    }
    set_pushes(&d, &drains, 0);
    let by = |n: usize, f: fn(&Window) -> f64| -> Vec<f64> {
        windows.iter().filter(|w| w.pushes == n).map(f).collect()
    };
    let base = by(0, |w| w.cpu_pct);
    let mut rows = Vec::new();
    for n in COUNTS {
        let cpu = by(n, |w| w.cpu_pct);
        let threads = by(n, |w| w.push_threads_pct);
        let mbps = by(n, |w| w.push_mbps);
        let per_push = if n == 0 {
            Value::Null
        } else {
            json!((mean(&cpu) - mean(&base)) / n as f64)
        };
        rows.push(json!({
            "pushes": n,
            "process_cpu_pct": mean(&cpu),
            "process_cpu_pct_stdev": stdev(&cpu),
            // With no push there is nothing to attribute (the first window also set the base).
            "push_threads_cpu_pct": if n == 0 { Value::Null } else { json!(mean(&threads)) },
            "per_push_cpu_pct_process_delta": per_push,
            "per_push_cpu_pct_threads": if n == 0 {
                Value::Null
            } else {
                json!(mean(&threads) / n as f64)
            },
            "per_push_mbps": if n == 0 { Value::Null } else { json!(mean(&mbps)) },
        }));
    }
    let result = json!({
        "bench": "push",
        "setup": {"video": "1280x720@30", "encoder": "x264", "bitrate_kbps": 4000,
                  "source": "videotestsrc pattern=snow", "push": "udp://127.0.0.1 (RTP/H.264), drained",
                  "rounds": rounds, "window_s": window.as_secs_f64(), "quick": quick},
        "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                    "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()},
        "results": rows,
        "target": "≤ 1 % of a core per push",
    });
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    println!();
    println!(
        "| pushes | process CPU (% of a core) | push threads | per push (process Δ) | per push (threads) | Mb/s per push |"
    );
    println!("|---|---|---|---|---|---|");
    for r in result["results"].as_array().unwrap() {
        let f = |k: &str| r[k].as_f64().map_or("—".to_string(), |v| format!("{v:.2}"));
        println!(
            "| {} | {} ± {} | {} | {} | {} | {} |",
            r["pushes"],
            f("process_cpu_pct"),
            f("process_cpu_pct_stdev"),
            f("push_threads_cpu_pct"),
            f("per_push_cpu_pct_process_delta"),
            f("per_push_cpu_pct_threads"),
            f("per_push_mbps")
        );
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("push-bench.json");
    if std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap()).is_ok() {
        eprintln!("wrote {}", path.display());
    }
}
