//! camstream against a plain gst-rtsp-server baseline, measured the same way in the same run:
//! start-up, time to first picture for a late joiner, end-to-end latency (and the encoder alone),
//! CPU and memory per viewer, how many viewers fit, and recovery from a capture fault.
//!
//! Run: `cargo bench --bench camstream` (full, about 10 minutes on 2 cores) or
//! `cargo bench --bench camstream -- --quick`. Prints a table and writes
//! `target/bench/camstream-bench.json`. The method is written up in docs/performance.md.

mod rawclient;
// The tests' RTSP wire helpers, so the benchmark and the tests parse RTSP the same way.
#[path = "../../tests/common/rtsp_wire.rs"]
mod rtsp_wire;
mod servers;
mod stamp;
mod viewer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};

use rawclient::{Proto, RawViewer};
use servers::{CLK_TCK, Kind, Server, Setup, Source};
use viewer::Viewer;

/// How long each part runs; `--quick` shrinks everything for a smoke run.
struct Plan {
    quick: bool,
    startup_trials: usize,
    joins: usize,
    latency_window: Duration,
    cost_counts: Vec<usize>,
    cost_settle: Duration,
    cost_window: Duration,
    scale_steps: Vec<usize>,
    scale_window: Duration,
    faults: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                startup_trials: 2,
                joins: 6,
                latency_window: Duration::from_secs(4),
                cost_counts: vec![0, 1, 10, 50],
                cost_settle: Duration::from_secs(1),
                cost_window: Duration::from_secs(3),
                scale_steps: vec![50, 100],
                scale_window: Duration::from_secs(4),
                faults: 2,
            }
        } else {
            Plan {
                quick,
                startup_trials: 5,
                joins: 20,
                latency_window: Duration::from_secs(10),
                cost_counts: vec![0, 1, 10, 50, 100],
                cost_settle: Duration::from_secs(2),
                cost_window: Duration::from_secs(6),
                scale_steps: vec![50, 100, 150, 200, 250, 300],
                scale_window: Duration::from_secs(8),
                faults: 4,
            }
        }
    }
}

fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    // Nearest rank: the smallest sample with at least p % of samples at or below it.
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    Some(s[rank.min(s.len()) - 1])
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn say(msg: impl AsRef<str>) {
    eprintln!(
        "[bench {:>7}] {}",
        loadavg().split(' ').next().unwrap_or("?"),
        msg.as_ref()
    );
}

fn self_ticks() -> u64 {
    servers::proc_cpu_ticks(std::process::id())
}

// ---------------------------------------------------------------------------------------------
// Start-up

fn startup(kind: Kind, plan: &Plan) -> Value {
    let setup = Setup::hd(Source::Test);
    let (mut bound, mut described, mut pictured) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.startup_trials {
        let s = Server::spawn(kind, &setup);
        let Some(b) = s.wait_bound(Duration::from_secs(20)) else {
            say(format!("{}: port never bound:\n{}", kind.name(), s.log()));
            continue;
        };
        bound.push(ms(b));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if rawclient::describe_once(s.port) == Some(200) {
                described.push(ms(s.spawned.elapsed()));
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let v = Viewer::rtsp(&s.url(), Proto::Tcp, false);
        if let Some(first) = v.wait_first(Duration::from_secs(10)) {
            pictured.push(ms(v.started - s.spawned + first));
        }
        drop(v);
        drop(s);
    }
    json!({
        "trials": plan.startup_trials,
        "bound_ms": {"p50": percentile(&bound, 50.0), "samples": bound},
        "describe_ms": {"p50": percentile(&described, 50.0), "samples": described},
        "first_picture_ms": {"p50": percentile(&pictured, 50.0), "samples": pictured},
    })
}

// ---------------------------------------------------------------------------------------------
// Time to first picture for a late joiner

fn first_picture(kind: Kind, plan: &Plan) -> Value {
    let setup = Setup::hd(Source::Test);
    let s = Server::start(kind, &setup);
    let watcher = RawViewer::start(s.port, Proto::Tcp);
    let deadline = Instant::now() + Duration::from_secs(20);
    while watcher.frames() < 30 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut rng = rand::rng();
    let (mut samples, mut failed) = (Vec::new(), 0);
    for _ in 0..plan.joins {
        // Each join ends just after a keyframe on a server that waits for one, so only a pause
        // uniform over a whole GOP puts the next join at a uniformly random point of it.
        let gop_ms = u64::from(setup.gop) * 1000 / u64::from(setup.fps);
        std::thread::sleep(Duration::from_millis(rng.random_range(50..50 + gop_ms)));
        let v = Viewer::rtsp(&s.url(), Proto::Tcp, false);
        match v.wait_first(Duration::from_secs(6)) {
            Some(t) => samples.push(ms(t)),
            None => failed += 1,
        }
    }
    json!({
        "joins": plan.joins,
        "failed": failed,
        "gop_frames": setup.gop,
        "fps": setup.fps,
        "p50_ms": percentile(&samples, 50.0),
        "p95_ms": percentile(&samples, 95.0),
        "max_ms": percentile(&samples, 100.0),
        "samples_ms": samples,
        "watcher_frames": watcher.frames(),
    })
}

// ---------------------------------------------------------------------------------------------
// End-to-end latency

fn latency_of(v: &Viewer, plan: &Plan) -> Value {
    if v.wait_first(Duration::from_secs(15)).is_none() {
        return json!({"error": "no picture"});
    }
    // The first second holds the join's own transient (IDR, queues filling).
    std::thread::sleep(Duration::from_secs(2));
    let _ = v.take_latencies();
    let unreadable0 = v.unreadable();
    std::thread::sleep(plan.latency_window);
    let us = v.take_latencies();
    let msv: Vec<f64> = us.iter().map(|&u| u as f64 / 1000.0).collect();
    json!({
        "frames": msv.len(),
        "unreadable": v.unreadable() - unreadable0,
        "p50_ms": percentile(&msv, 50.0),
        "p99_ms": percentile(&msv, 99.0),
        "max_ms": percentile(&msv, 100.0),
        "min_ms": percentile(&msv, 0.0),
    })
}

fn latency(plan: &Plan) -> BTreeMap<&'static str, Value> {
    let socket = std::env::temp_dir().join(format!("camstream-bench-{}.sock", std::process::id()));
    let mut out = BTreeMap::new();
    let stamper = stamp::Stamper::start(&socket, 1280, 720, 30);
    let setup = Setup::hd(Source::Stamped(socket.clone()));
    {
        let v = Viewer::encoder_alone(
            &stamp::source_fragment(&socket, setup.width, setup.height, setup.fps),
            &setup.encoder(),
        );
        out.insert("encoder_alone", latency_of(&v, plan));
        say(format!("latency encoder alone: {}", out["encoder_alone"]));
    }
    {
        // camstream's own capture description up to its appsink, decoded in-process: splits
        // camstream's added latency into the capture chain and the RTSP side.
        let v = Viewer::launch_description(&format!(
            "{} ! {}",
            setup.camstream_capture_chain(),
            viewer::DECODE
        ));
        out.insert("camstream_capture_alone", latency_of(&v, plan));
        say(format!(
            "latency camstream capture chain alone: {}",
            out["camstream_capture_alone"]
        ));
    }
    for kind in [Kind::Camstream, Kind::Baseline] {
        let s = Server::start(kind, &setup);
        let v = Viewer::rtsp(&s.url(), Proto::Tcp, true);
        let r = latency_of(&v, plan);
        say(format!("latency {}: {r}", kind.name()));
        out.insert(kind.name(), r);
    }
    drop(stamper);
    out
}

// ---------------------------------------------------------------------------------------------
// Cost per viewer, and scale

/// One measurement window over a group of viewers.
struct Window {
    cpu_pct: f64,
    bench_cpu_pct: f64,
    rss_kib: u64,
    /// Frames each viewer received, as a fraction of what the source produced.
    fractions: Vec<f64>,
    packets: u64,
}

fn measure(s: &Server, group: &[RawViewer], fps: u32, window: Duration) -> Window {
    let f0: Vec<u64> = group.iter().map(|v| v.frames()).collect();
    let p0: u64 = group.iter().map(|v| v.packets()).sum();
    let (c0, b0, t0) = (s.cpu_ticks(), self_ticks(), Instant::now());
    std::thread::sleep(window);
    let (c1, b1, dt) = (s.cpu_ticks(), self_ticks(), t0.elapsed().as_secs_f64());
    let expected = f64::from(fps) * dt;
    Window {
        cpu_pct: (c1 - c0) as f64 / CLK_TCK / dt * 100.0,
        bench_cpu_pct: (b1 - b0) as f64 / CLK_TCK / dt * 100.0,
        rss_kib: s.rss_kib(),
        fractions: group
            .iter()
            .zip(&f0)
            .map(|(v, f)| (v.frames() - f) as f64 / expected)
            .collect(),
        packets: group.iter().map(|v| v.packets()).sum::<u64>() - p0,
    }
}

fn cost(kind: Kind, proto: Proto, plan: &Plan) -> Value {
    let setup = Setup::hd(Source::Test);
    let s = Server::start(kind, &setup);
    std::thread::sleep(Duration::from_secs(if plan.quick { 2 } else { 3 }));
    let mut group = Vec::new();
    let mut points = Vec::new();
    for &n in &plan.cost_counts {
        let playing = rawclient::grow(&mut group, n, s.port, proto);
        std::thread::sleep(plan.cost_settle);
        let w = measure(&s, &group, setup.fps, plan.cost_window);
        let min = w.fractions.iter().copied().fold(f64::INFINITY, f64::min);
        say(format!(
            "cost {} {} n={n} playing={playing} cpu={:.1}% rss={:.1}MB min_frames={:.3} bench_cpu={:.0}%",
            kind.name(),
            proto.name(),
            w.cpu_pct,
            w.rss_kib as f64 / 1024.0,
            if n == 0 { 1.0 } else { min },
            w.bench_cpu_pct
        ));
        points.push(json!({
            "viewers": n,
            "playing": playing,
            "cpu_pct_of_core": w.cpu_pct,
            "rss_mib": w.rss_kib as f64 / 1024.0,
            "min_frame_fraction": (n > 0).then_some(min),
            "packets_per_s": w.packets as f64 / plan.cost_window.as_secs_f64(),
            "bench_cpu_pct": w.bench_cpu_pct,
        }));
    }
    rawclient::stop_all(&mut group);
    // From one viewer up: the baseline builds its pipeline only for the first viewer, and that
    // step is start-up, not a per-viewer cost.
    let xy = |key: &str| -> Vec<(f64, f64)> {
        points
            .iter()
            .filter(|p| p["viewers"].as_u64().unwrap_or(0) >= 1)
            .map(|p| {
                (
                    p["viewers"].as_f64().unwrap_or(0.0),
                    p[key].as_f64().unwrap_or(0.0),
                )
            })
            .collect()
    };
    let at = |n: usize, key: &str| {
        points
            .iter()
            .find(|p| p["viewers"].as_u64() == Some(n as u64))
            .and_then(|p| p[key].as_f64())
    };
    json!({
        "points": points,
        "cpu_pct_per_viewer": slope(&xy("cpu_pct_of_core")),
        "rss_mib_per_viewer": slope(&xy("rss_mib")),
        "cpu_pct_at_10": at(10, "cpu_pct_of_core"),
        "cpu_pct_at_0": at(0, "cpu_pct_of_core"),
    })
}

fn scale(kind: Kind, plan: &Plan) -> Value {
    let setup = Setup::hd(Source::Test);
    let s = Server::start(kind, &setup);
    std::thread::sleep(Duration::from_secs(2));
    let mut group = Vec::new();
    let mut steps = Vec::new();
    let mut best = 0;
    for &n in &plan.scale_steps {
        let playing = rawclient::grow(&mut group, n, s.port, Proto::Tcp);
        std::thread::sleep(Duration::from_secs(3));
        let w = measure(&s, &group, setup.fps, plan.scale_window);
        let worst = w.fractions.iter().copied().fold(f64::INFINITY, f64::min);
        let mean = w.fractions.iter().sum::<f64>() / w.fractions.len().max(1) as f64;
        let ok = playing == n && worst >= 0.99;
        let mut errors: Vec<String> = group.iter().filter_map(|v| v.error()).collect();
        errors.sort();
        errors.dedup();
        say(format!(
            "scale {} n={n} playing={playing} worst={worst:.3} mean={mean:.3} cpu={:.0}% bench_cpu={:.0}%",
            kind.name(),
            w.cpu_pct,
            w.bench_cpu_pct
        ));
        steps.push(json!({
            "viewers": n,
            "playing": playing,
            "worst_frame_fraction": worst,
            "mean_frame_fraction": mean,
            "cpu_pct_of_core": w.cpu_pct,
            "bench_cpu_pct": w.bench_cpu_pct,
            "ok": ok,
            "client_errors": errors,
        }));
        if !ok {
            break;
        }
        best = n;
    }
    rawclient::stop_all(&mut group);
    json!({
        "max_viewers_99pct": best,
        "capped_at": plan.scale_steps.last(),
        "bitrate_kbps": setup.bitrate_kbps,
        "transport": "tcp",
        "steps": steps,
    })
}

// ---------------------------------------------------------------------------------------------
// Recovery from a capture fault

fn recovery(kind: Kind, plan: &Plan) -> Value {
    // 90 frames = 3 s of streaming between faults, longer than the 1 s stable period set in
    // `Setup`, so each fault is a first failure with the initial backoff.
    let setup = Setup::hd(Source::Faulty(90));
    let s = Server::start(kind, &setup);
    let v = Viewer::rtsp(&s.url(), Proto::Tcp, false);
    if v.wait_first(Duration::from_secs(15)).is_none() {
        return json!({"error": "no first picture"});
    }
    let frame = Duration::from_secs(1) / setup.fps;
    match kind {
        Kind::Camstream => {
            let (mut from_error, mut freeze) = (Vec::new(), Vec::new());
            for k in 1..=plan.faults {
                let deadline = Instant::now() + Duration::from_secs(15);
                let fault = loop {
                    if let Some(t) = s.log_times("Pipeline crashed").get(k - 1) {
                        break Some(*t);
                    }
                    if Instant::now() > deadline {
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                };
                let Some(fault) = fault else { break };
                // Frames already encoded keep arriving for a moment after the error; recovery
                // ends with the first picture after the freeze that follows it.
                let deadline = Instant::now() + Duration::from_secs(10);
                let resumed = loop {
                    let gap = v
                        .arrivals()
                        .windows(2)
                        .find(|w| w[1] > fault && w[1] - w[0] > 3 * frame)
                        .map(|w| (w[0], w[1]));
                    if gap.is_some() {
                        break gap;
                    }
                    if Instant::now() > deadline {
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                };
                let Some((last, next)) = resumed else { break };
                from_error.push(ms(next - fault));
                freeze.push(ms(next - last) - ms(frame));
            }
            let a = v.arrivals();
            let gaps: Vec<f64> = a
                .windows(2)
                .map(|w| ms(w[1] - w[0]))
                .filter(|g| *g > 3.0 * ms(frame))
                .collect();
            json!({
                "viewer_gaps_over_3_frames_ms": gaps,
                "backoff_ms": setup.backoff_ms,
                "faults": from_error.len(),
                "from_error_log_ms": {"p50": percentile(&from_error, 50.0), "max": percentile(&from_error, 100.0), "samples": from_error},
                "freeze_minus_interval_ms": {"p50": percentile(&freeze, 50.0), "max": percentile(&freeze, 100.0), "samples": freeze},
                "viewer_errored": v.errored(),
                "viewer_eos": v.eos(),
            })
        }
        Kind::Baseline => {
            // No supervisor: wait for the fault (pictures stop), then see whether any return.
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut stopped_at = None;
            while Instant::now() < deadline {
                let last = v.arrivals().last().copied();
                if let Some(l) = last
                    && l.elapsed() > Duration::from_millis(500)
                {
                    stopped_at = Some(l);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let before = v.frames();
            std::thread::sleep(Duration::from_secs(5));
            json!({
                "fault_seen": stopped_at.is_some(),
                "pictures_in_5s_after_fault": v.frames() - before,
                "viewer_errored": v.errored(),
                "viewer_eos": v.eos(),
                "recovered": v.frames() > before,
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Report

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    json!({
        "cpu": model,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory": mem,
        "kernel": kernel,
        "gstreamer": gst::version_string().to_string(),
    })
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{x:.digits$}"))
}

fn get(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_f64()
}

fn table(r: &Value) -> String {
    let mut rows: Vec<[String; 4]> = Vec::new();
    // `path` is the section, then the keys inside each candidate's result.
    let mut row = |name: &str, path: &[&str], digits: usize, target: &str| {
        let cell = |who: &str| {
            let mut p = vec![path[0], who];
            p.extend_from_slice(&path[1..]);
            fmt(get(r, &p), digits)
        };
        rows.push([
            name.to_string(),
            cell("camstream"),
            cell("baseline"),
            target.to_string(),
        ]);
    };
    row(
        "start-up: spawn → RTSP port bound (ms, p50)",
        &["startup", "bound_ms", "p50"],
        0,
        "",
    );
    row(
        "start-up: spawn → DESCRIBE 200 (ms, p50)",
        &["startup", "describe_ms", "p50"],
        0,
        "",
    );
    row(
        "start-up: spawn → first picture (ms, p50)",
        &["startup", "first_picture_ms", "p50"],
        0,
        "",
    );
    row(
        "first picture, late joiner, 2 s GOP (ms, p50)",
        &["first_picture", "p50_ms"],
        0,
        "≤ 150",
    );
    row(
        "first picture, late joiner (ms, p95)",
        &["first_picture", "p95_ms"],
        0,
        "",
    );
    row(
        "end-to-end latency (ms, p50)",
        &["latency", "p50_ms"],
        1,
        "",
    );
    row(
        "end-to-end latency (ms, p99)",
        &["latency", "p99_ms"],
        1,
        "",
    );
    row(
        "CPU, 0 viewers (% of a core)",
        &["cost_tcp", "cpu_pct_at_0"],
        1,
        "",
    );
    row(
        "CPU, 10 viewers TCP (% of a core)",
        &["cost_tcp", "cpu_pct_at_10"],
        1,
        "≤ baseline",
    );
    row(
        "CPU, 10 viewers UDP (% of a core)",
        &["cost_udp", "cpu_pct_at_10"],
        1,
        "≤ baseline",
    );
    row(
        "CPU per extra viewer TCP (% of a core)",
        &["cost_tcp", "cpu_pct_per_viewer"],
        3,
        "≤ 0.1",
    );
    row(
        "CPU per extra viewer UDP (% of a core)",
        &["cost_udp", "cpu_pct_per_viewer"],
        3,
        "≤ 0.1",
    );
    row(
        "RSS per extra viewer TCP (MiB)",
        &["cost_tcp", "rss_mib_per_viewer"],
        3,
        "≤ 0.1",
    );
    row(
        "RSS per extra viewer UDP (MiB)",
        &["cost_udp", "rss_mib_per_viewer"],
        3,
        "≤ 0.1",
    );
    row(
        "max viewers with ≥ 99 % frames (TCP, 2 Mb/s)",
        &["scale", "max_viewers_99pct"],
        0,
        "≥ 200",
    );
    row(
        "recovery: error → next picture (ms, p50)",
        &["recovery", "from_error_log_ms", "p50"],
        0,
        "≤ backoff + 300",
    );
    row(
        "recovery: error → next picture (ms, max)",
        &["recovery", "from_error_log_ms", "max"],
        0,
        "",
    );

    let enc = |k: &str| get(r, &["latency", "encoder_alone", k]);
    let cam = |k: &str| get(r, &["latency", "camstream", k]);
    let base = |k: &str| get(r, &["latency", "baseline", k]);
    let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
    rows.push([
        "encoder alone, no RTSP (ms, p50 / p99)".into(),
        format!("{} / {}", fmt(enc("p50_ms"), 1), fmt(enc("p99_ms"), 1)),
        String::new(),
        String::new(),
    ]);
    rows.push([
        "camstream capture chain alone (ms, p50 / p99)".into(),
        format!(
            "{} / {}",
            fmt(get(r, &["latency", "camstream_capture_alone", "p50_ms"]), 1),
            fmt(get(r, &["latency", "camstream_capture_alone", "p99_ms"]), 1)
        ),
        String::new(),
        String::new(),
    ]);
    rows.push([
        "added latency over encoder alone (ms, p50 / p99)".into(),
        format!(
            "{} / {}",
            fmt(diff(cam("p50_ms"), enc("p50_ms")), 1),
            fmt(diff(cam("p99_ms"), enc("p99_ms")), 1)
        ),
        format!(
            "{} / {}",
            fmt(diff(base("p50_ms"), enc("p50_ms")), 1),
            fmt(diff(base("p99_ms"), enc("p99_ms")), 1)
        ),
        "p99 ≤ 2".into(),
    ]);
    let w = [48, 14, 14, 16];
    let mut out = format!(
        "{:<w0$} {:>w1$} {:>w2$}  {:<w3$}\n",
        "metric",
        "camstream",
        "baseline",
        "target",
        w0 = w[0],
        w1 = w[1],
        w2 = w[2],
        w3 = w[3]
    );
    out.push_str(&"-".repeat(w.iter().sum::<usize>() + 4));
    out.push('\n');
    for r in rows {
        out.push_str(&format!(
            "{:<w0$} {:>w1$} {:>w2$}  {:<w3$}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        ));
    }
    out
}

fn out_path(args: &[String]) -> PathBuf {
    if let Some(i) = args.iter().position(|a| a == "--out")
        && let Some(p) = args.get(i + 1)
    {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench").join("camstream-bench.json")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--baseline-server") {
        servers::serve_baseline(&args[2], &args[3]);
    }
    gst::init().expect("gst init");
    stamp::self_check();
    let plan = Plan::new(args.iter().any(|a| a == "--quick"));
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(str::to_string).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    say(format!(
        "camstream bench ({}); camstream binary {}",
        if plan.quick { "quick" } else { "full" },
        servers::camstream_bin().display()
    ));
    let started = Instant::now();
    let load_before = loadavg();
    let mut loads = Vec::new();
    let mut results = serde_json::Map::new();
    let both = |f: &dyn Fn(Kind) -> Value| -> Value {
        json!({"camstream": f(Kind::Camstream), "baseline": f(Kind::Baseline)})
    };

    if wanted("startup") {
        results.insert("startup".into(), both(&|k| startup(k, &plan)));
        say(format!("startup: {}", results["startup"]));
        loads.push(loadavg());
    }
    if wanted("first_picture") {
        results.insert("first_picture".into(), both(&|k| first_picture(k, &plan)));
        say(format!("first picture: {}", results["first_picture"]));
        loads.push(loadavg());
    }
    if wanted("latency") {
        let l = latency(&plan);
        results.insert("latency".into(), json!(l));
        loads.push(loadavg());
    }
    if wanted("cost") {
        results.insert("cost_tcp".into(), both(&|k| cost(k, Proto::Tcp, &plan)));
        loads.push(loadavg());
        results.insert("cost_udp".into(), both(&|k| cost(k, Proto::Udp, &plan)));
        loads.push(loadavg());
    }
    if wanted("scale") {
        results.insert("scale".into(), both(&|k| scale(k, &plan)));
        loads.push(loadavg());
    }
    if wanted("recovery") {
        results.insert("recovery".into(), both(&|k| recovery(k, &plan)));
        say(format!("recovery: {}", results["recovery"]));
        loads.push(loadavg());
    }

    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%dT%H:%M:%SZ")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let report = json!({
        "date": date,
        "mode": if plan.quick { "quick" } else { "full" },
        "duration_s": started.elapsed().as_secs_f64(),
        "machine": machine(),
        "loadavg_before": load_before,
        "loadavg_after_each_part": loads,
        "setup": {
            "picture": "1280x720@30, I420, videotestsrc smpte (latency: stamped, see stamp.rs)",
            "encoder": Setup::hd(Source::Test).encoder(),
            "baseline_launch": Setup::hd(Source::Test).baseline_launch(),
        },
        "results": Value::Object(results.clone()),
    });
    let text = table(&Value::Object(results));
    println!("\n{text}");
    println!(
        "load average before: {load_before}; after each part: {}",
        loads.join(" | ")
    );
    let path = out_path(&args);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(
        &path,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    ) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}
