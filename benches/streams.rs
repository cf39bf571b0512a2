//! Cost of several cameras: CPU and RSS of one camstream serving 1, 2 and 4 test-pattern streams,
//! side by side with the baseline of one camstream process per stream (what running a separate
//! daemon per camera would cost), in the same run. Prints a table and writes JSON.
//!
//! `cargo bench --bench streams [-- --seconds N --out PATH]`

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_camstream");
const WIDTH: u32 = 640;
const HEIGHT: u32 = 360;
const FPS: u32 = 30;

/// A daemon started for the measurement.
struct Daemon {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn config(streams: usize) -> String {
    let mut text = format!(
        "[rtsp]\naddress = \"127.0.0.1\"\nport = 0\n[http]\naddress = \"127.0.0.1\"\nport = 0\n\
         [video]\nwidth = {WIDTH}\nheight = {HEIGHT}\nfps = {FPS}\n\
         [encoder]\nkind = \"x264\"\nbitrate_kbps = 2000\n[log]\nlevel = \"warn,camstream=info\"\n"
    );
    for i in 0..streams {
        text.push_str(&format!(
            "[[streams]]\nname = \"cam{i}\"\nsource = {{ kind = \"test\", pattern = \"ball\" }}\n"
        ));
    }
    text
}

/// Starts a daemon with `streams` cameras and waits until every one streams.
fn start(streams: usize) -> Daemon {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config(streams)).expect("write config");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("camstream starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("Streaming source=") {
                let _ = tx.send(());
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..streams {
        let left = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left)
            .expect("every stream starts within 60 s");
    }
    Daemon { child, _dir: dir }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15; after the ')' they are at 11 and 12.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU (% of one core) and RSS (MiB) summed over `pids`, over `secs` after a warm-up.
fn measure(pids: &[u32], secs: f64) -> (f64, f64) {
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    let c0: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let c1: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    // USER_HZ is 100 on every Linux this runs on.
    let cpu = (c1 - c0) as f64 / 100.0 / t0.elapsed().as_secs_f64() * 100.0;
    let rss = pids.iter().map(|p| rss_kib(*p)).sum::<u64>() as f64 / 1024.0;
    (cpu, rss)
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
    let out = arg("--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/bench/streams.json"));
    println!(
        "camstream streams bench: {WIDTH}x{HEIGHT}@{FPS} x264 2 Mb/s test pattern, {secs} s windows"
    );
    let mut rows = Vec::new();
    for n in [1usize, 2, 4] {
        let one = start(n);
        let (cpu, rss) = measure(&[one.child.id()], secs);
        drop(one);
        let separate: Vec<Daemon> = (0..n).map(|_| start(1)).collect();
        let pids: Vec<u32> = separate.iter().map(|d| d.child.id()).collect();
        let (base_cpu, base_rss) = measure(&pids, secs);
        drop(separate);
        println!(
            "{n} stream(s): one process {cpu:.1} % CPU {rss:.1} MiB; {n} processes {base_cpu:.1} % CPU {base_rss:.1} MiB"
        );
        rows.push(json!({
            "streams": n,
            "camstream": { "cpu_percent": cpu, "rss_mib": rss },
            "baseline_process_per_stream": { "cpu_percent": base_cpu, "rss_mib": base_rss },
        }));
    }
    let cpu1 = rows[0]["camstream"]["cpu_percent"].as_f64().unwrap_or(1.0);
    let rss1 = rows[0]["camstream"]["rss_mib"].as_f64().unwrap_or(1.0);
    println!(
        "\n| streams | CPU (% core) | CPU / (n × CPU₁) | RSS (MiB) | baseline CPU | baseline RSS |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &mut rows {
        let n = r["streams"].as_f64().unwrap_or(1.0);
        let cpu = r["camstream"]["cpu_percent"].as_f64().unwrap_or(0.0);
        let rss = r["camstream"]["rss_mib"].as_f64().unwrap_or(0.0);
        let ratio = cpu / (n * cpu1);
        r["cpu_linearity"] = json!(ratio);
        r["rss_per_stream_mib"] = json!(if n > 1.0 {
            (rss - rss1) / (n - 1.0)
        } else {
            rss
        });
        println!(
            "| {n} | {cpu:.1} | {ratio:.2} | {rss:.1} | {:.1} | {:.1} |",
            r["baseline_process_per_stream"]["cpu_percent"]
                .as_f64()
                .unwrap_or(0.0),
            r["baseline_process_per_stream"]["rss_mib"]
                .as_f64()
                .unwrap_or(0.0)
        );
    }
    let report: Value =
        json!({ "window_s": secs, "picture": format!("{WIDTH}x{HEIGHT}@{FPS}"), "rows": rows });
    if let Some(dir) = out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(
        &out,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    ) {
        Ok(()) => println!("wrote {}", out.display()),
        Err(e) => eprintln!("could not write {}: {e}", out.display()),
    }
}
