//! What recording costs: one daemon streaming 720p30 at 4 Mb/s (x264, test pattern), with
//! recording switched off and on through the API in alternating windows of the same run, so
//! the machine's other load hits both sides alike. Reports the process's CPU with and without
//! recording, the recorder's own threads' CPU (its writer thread, read per thread from /proc),
//! and the write rate against the encoder's output rate.
//!
//! Run: `cargo bench --bench recording` (about 2 minutes) or `-- --quick`. Prints a table and
//! writes `target/bench/recording-bench.json`. Written up in docs/performance.md.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use serde_json::json;

/// USER_HZ for /proc/PID/stat.
const CLK_TCK: f64 = 100.0;

/// utime + stime of a /proc stat line.
fn ticks(stat: &str) -> u64 {
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn process_ticks(pid: u32) -> u64 {
    ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// CPU ticks of the threads whose name starts with `prefix` (live ones only).
fn thread_ticks(pid: u32, prefix: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|c| c.trim().starts_with(prefix))
        })
        .map(|e| ticks(&std::fs::read_to_string(e.path().join("stat")).unwrap_or_default()))
        .sum()
}

fn patch(d: &common::Daemon, on: bool) {
    let body = format!("{{\"record\": {{\"enabled\": {on}}}}}");
    let r = common::http_request(
        d.http_port,
        "PATCH",
        "/api/v1/streams/video",
        &[
            ("Authorization", "Bearer bench"),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

struct Window {
    cpu: f64,
    writer_cpu: f64,
    write_bps: f64,
    encoded_bps: f64,
}

fn measure(d: &common::Daemon, window: Duration) -> Window {
    let metric = |m: &str| d.metric(m).unwrap_or(0.0);
    let (p0, w0) = (process_ticks(d.pid()), thread_ticks(d.pid(), "record-"));
    let b0 = metric("camstream_recording_bytes_total{stream=\"video\"}");
    let e0 = metric("camstream_encoded_bytes_total{stream=\"video\"}");
    let t0 = Instant::now();
    std::thread::sleep(window);
    let secs = t0.elapsed().as_secs_f64();
    let (p1, w1) = (process_ticks(d.pid()), thread_ticks(d.pid(), "record-"));
    let b1 = metric("camstream_recording_bytes_total{stream=\"video\"}");
    let e1 = metric("camstream_encoded_bytes_total{stream=\"video\"}");
    Window {
        cpu: (p1 - p0) as f64 / CLK_TCK / secs * 100.0,
        writer_cpu: w1.saturating_sub(w0) as f64 / CLK_TCK / secs * 100.0,
        write_bps: (b1 - b0) / secs,
        encoded_bps: (e1 - e0) / secs,
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, window) = if quick {
        (2, Duration::from_secs(5))
    } else {
        (4, Duration::from_secs(12))
    };
    common::gst_init();
    let dir = tempfile::tempdir().unwrap();
    let d = common::daemon()
        .set("video.width", 1280)
        .set("video.height", 720)
        .set("video.fps", 30)
        .set("encoder.bitrate_kbps", 4000)
        .set("encoder.keyframe_interval", 60)
        .set("record.path", dir.path().display())
        .set("record.min_free_mb", 0)
        .set("http.token", "bench")
        .start();
    std::thread::sleep(Duration::from_secs(3));
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        off.push(measure(&d, window));
        patch(&d, true);
        // The first keyframe opens the segment; the window starts once writing.
        std::thread::sleep(Duration::from_secs(3));
        on.push(measure(&d, window));
        patch(&d, false);
        std::thread::sleep(Duration::from_secs(1));
    }
    let cpu_off = mean(&off.iter().map(|w| w.cpu).collect::<Vec<_>>());
    let cpu_on = mean(&on.iter().map(|w| w.cpu).collect::<Vec<_>>());
    let writer = mean(&on.iter().map(|w| w.writer_cpu).collect::<Vec<_>>());
    let write = mean(&on.iter().map(|w| w.write_bps).collect::<Vec<_>>());
    let encoded = mean(&on.iter().map(|w| w.encoded_bps).collect::<Vec<_>>());
    let spread = |v: &[Window]| {
        let c: Vec<f64> = v.iter().map(|w| w.cpu).collect();
        c.iter().cloned().fold(f64::MIN, f64::max) - c.iter().cloned().fold(f64::MAX, f64::min)
    };
    let report = json!({
        "setup": {"video": "1280x720@30", "encoder": "x264", "bitrate_kbps": 4000,
                  "rounds": rounds, "window_s": window.as_secs(), "segment_s": 60, "part_ms": 1000},
        "process_cpu_percent": {"recording_off": cpu_off, "recording_on": cpu_on,
                                 "added": cpu_on - cpu_off,
                                 "spread_off": spread(&off), "spread_on": spread(&on)},
        "writer_thread_cpu_percent": writer,
        "write_bytes_per_s": write,
        "encoded_bytes_per_s": encoded,
        "write_overhead_percent": if encoded > 0.0 { (write / encoded - 1.0) * 100.0 } else { 0.0 },
    });
    println!("| measure | value |");
    println!("|---|---|");
    println!("| process CPU, recording off | {cpu_off:.1} % of a core |");
    println!("| process CPU, recording on | {cpu_on:.1} % of a core |");
    println!(
        "| added by recording (on - off) | {:+.1} % (windows spread {:.1} / {:.1}) |",
        cpu_on - cpu_off,
        spread(&off),
        spread(&on)
    );
    println!("| recorder writer thread | {writer:.2} % of a core |");
    println!(
        "| write rate | {:.0} kB/s ({:.2} Mb/s) |",
        write / 1000.0,
        write * 8.0 / 1e6
    );
    println!("| encoder output | {:.0} kB/s |", encoded / 1000.0);
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("recording-bench.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
