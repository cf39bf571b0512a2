//! Request limits that hold under load (issue 15). A first request over
//! `rtsp.max_request_bytes` is refused by camstream's own acceptor before gst-rtsp-server reads
//! any of it, so whether a flood is cut off no longer depends on scheduling. Measured here with
//! both cores busy: 20 floods of a 1 MiB header value and 20 of 100 000 header lines, each
//! refused or closed; the daemon's RSS stays flat; a viewer keeps its frames; and an OPTIONS on
//! another connection, sent while each flood is being refused, is answered promptly.

mod common;
mod reliability_util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Daemon, Proto, Viewer, daemon, wait_until};
use reliability_util::{Outcome, Raw, alive, tail};

const FLOODS: usize = 20;

/// Keeps `n` threads spinning until dropped: the load of a board encoding in software.
struct Burners {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Burners {
    fn start(n: usize) -> Burners {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|i| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = i as u64 + 1;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        }
                    }
                    x
                })
            })
            .collect();
        Burners { stop, threads }
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn one_mib_value(url: &str) -> Vec<u8> {
    format!(
        "OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: {}\r\n\r\n",
        "u".repeat(1 << 20)
    )
    .into_bytes()
}

fn many_lines(url: &str) -> Vec<u8> {
    let mut s = format!("OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\n");
    for i in 0..100_000 {
        s.push_str(&format!("X-{i}: y\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// Sends `flood` on a new connection; returns what came back and how long the server took to
/// refuse it. `started` is set once the first bytes are on their way.
fn flood_once(port: u16, flood: Arc<Vec<u8>>, started: std::sync::mpsc::Sender<()>) -> Outcome {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut sent_any = false;
    for chunk in flood.chunks(64 * 1024) {
        let ok = s.write_all(chunk).is_ok();
        if !sent_any {
            sent_any = true;
            let _ = started.send(());
        }
        if !ok {
            break;
        }
    }
    let mut got = Vec::new();
    let mut b = [0u8; 1024];
    loop {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Outcome::Silent;
            }
            Err(_) => break,
        }
    }
    let status = String::from_utf8_lossy(&got)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok());
    match status {
        Some(code) => Outcome::Status(code),
        None => Outcome::Closed,
    }
}

/// One OPTIONS on a fresh connection; its latency in ms.
fn options_ms(d: &Daemon) -> u64 {
    let t = Instant::now();
    let mut r = Raw::connect(d);
    let o = r.request("OPTIONS", "*", &[]);
    assert!(
        matches!(o, Outcome::Status(200)),
        "OPTIONS during a flood: {o:?}"
    );
    t.elapsed().as_millis() as u64
}

/// The share of the frames the daemon encodes while `during` runs that the viewer decodes.
fn frame_ratio(d: &Daemon, viewer: &Viewer, during: impl FnOnce()) -> f64 {
    let encoded = || {
        d.metric("camstream_frames_encoded_total{stream=\"video\"}")
            .unwrap_or(0.0)
    };
    let (e0, v0) = (encoded(), viewer.frames());
    during();
    let e = encoded() - e0;
    // Frames encoded in the window reach the viewer within a moment.
    wait_until(Duration::from_secs(3), || {
        (viewer.frames() - v0) as f64 >= e
    });
    ((viewer.frames() - v0) as f64).min(e) / e.max(1.0)
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
fn oversized_first_requests_are_refused_under_load_without_starving_anyone() {
    let mut d = daemon().start();
    let viewer = Viewer::start(&d.url(), Proto::Tcp);
    assert!(
        viewer.wait_frames(15, Duration::from_secs(30)),
        "viewer never started\n{}",
        d.log()
    );
    // scripts/test-loaded.sh already keeps both cores busy with stress-ng; doubling the load
    // on top would measure the machine, not the floods.
    let external = std::env::var_os("CAMSTREAM_TEST_LOADED").is_some();
    let _load = (!external).then(|| Burners::start(2));
    // Let the load settle in, then what the load alone costs the viewer: a window as long as
    // the floods will take, without floods.
    std::thread::sleep(Duration::from_secs(1));
    let quiet_ratio = frame_ratio(&d, &viewer, || std::thread::sleep(Duration::from_secs(8)));
    let rss0 = d.rss_kib();
    let t0 = Instant::now();
    let mut report = Vec::new();
    let mut latencies = Vec::new();
    let mut quiet = Vec::new();
    let floods = [
        ("1 MiB header value", Arc::new(one_mib_value(&d.url()))),
        ("100 000 header lines", Arc::new(many_lines(&d.url()))),
    ];
    let ratio = frame_ratio(&d, &viewer, || {
        for (kind, flood) in &floods {
            let mut outcomes = Vec::new();
            let mut lat = Vec::new();
            for _ in 0..FLOODS {
                // The same request just before, without a flood: what the load alone costs.
                quiet.push(options_ms(&d));
                let (tx, rx) = std::sync::mpsc::channel();
                let (port, f) = (d.rtsp_port, Arc::clone(flood));
                let flooder = std::thread::spawn(move || flood_once(port, f, tx));
                rx.recv_timeout(Duration::from_secs(10))
                    .expect("the flooder never sent");
                lat.push(options_ms(&d));
                outcomes.push(flooder.join().unwrap());
                // Paced, so the run spans seconds of video for the viewer's frame count.
                std::thread::sleep(Duration::from_millis(200));
            }
            let refused = outcomes.iter().filter(|o| o.refused()).count();
            report.push(format!(
            "{kind}: {refused}/{FLOODS} refused or closed ({:?} ...); OPTIONS on another connection meanwhile: median {} ms, max {} ms, all {lat:?}",
            &outcomes[..3],
            median(&lat),
            lat.iter().max().unwrap()
        ));
            assert_eq!(
                refused,
                FLOODS,
                "{kind}: {outcomes:?}\n{}",
                tail(&d.log(), 20)
            );
            latencies.extend(lat);
        }
    });
    let took = t0.elapsed();
    let rss1 = d.rss_kib();
    for line in &report {
        eprintln!("{line}");
    }
    eprintln!(
        "{} floods in {:.1} s with both cores loaded ({}): viewer kept {:.1} % of the frames encoded ({:.1} % in as long a window without floods); RSS {rss0} -> {rss1} KiB; median OPTIONS {} ms during floods, {} ms just before each (no flood, same load)",
        2 * FLOODS,
        took.as_secs_f64(),
        if external {
            "external load"
        } else {
            "two spinning threads"
        },
        ratio * 100.0,
        quiet_ratio * 100.0,
        median(&latencies),
        median(&quiet)
    );
    assert!(alive(&mut d), "daemon died\n{}", tail(&d.log(), 40));
    // 99 %, unless the load alone (the same window without floods) already cost the viewer
    // more: then the floods may cost at most one point more than the load. The viewer decodes
    // in this process, so a machine loaded far beyond two cores starves it, floods or not.
    assert!(
        ratio >= 0.99_f64.min(quiet_ratio - 0.01),
        "viewer kept {:.1} % of frames during the floods, {:.1} % without",
        ratio * 100.0,
        quiet_ratio * 100.0
    );
    assert!(
        rss1 < rss0 + 8 * 1024,
        "RSS grew {rss0} -> {rss1} KiB over the floods"
    );
    // 50 ms over what the machine's load alone costs the same request: on a quiet machine that
    // is the bound of 50 ms; before camstream read first requests itself each flood
    // held OPTIONS for 270-400 ms even there. A busy machine's scheduling delays (the load
    // average on the shared development machine reached 18 on 2 cores) are not the flood's.
    let (during, before) = (median(&latencies), median(&quiet));
    assert!(
        during <= before + 50,
        "median OPTIONS latency during floods {during} ms, {before} ms without: {latencies:?} / {quiet:?}"
    );
    assert_eq!(d.get("/healthz").status, 200);
    assert!(!viewer.errored());
    let refusals = d
        .metric("camstream_rtsp_rejected_total{reason=\"request_too_large\"}")
        .unwrap_or(0.0);
    assert!(
        refusals >= (2 * FLOODS) as f64,
        "{refusals} refusals counted"
    );
}

/// The 64 KiB request line and 8 KiB header of the hostile suite, at the limit's edge: a head of
/// exactly `max_request_bytes` is served, one byte more is refused.
#[test]
fn the_limit_is_exact() {
    let d = daemon().set("rtsp.max_request_bytes", 1024).start();
    let head = |total: usize| {
        let fixed = "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: \r\n\r\n".len();
        format!(
            "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: {}\r\n\r\n",
            "x".repeat(total - fixed)
        )
    };
    let mut r = Raw::connect(&d);
    assert!(r.send(head(1024).as_bytes()));
    assert!(matches!(
        r.outcome(Duration::from_secs(10)),
        Outcome::Status(200)
    ));
    let mut r = Raw::connect(&d);
    assert!(r.send(head(1025).as_bytes()));
    let o = r.outcome(Duration::from_secs(10));
    assert!(o.refused(), "{o:?}");
}
