//! Signals under load: SIGTERM with 20 viewers attached must end the process with code 0
//! within 2 s, and a second signal must end it at once.

mod common;
mod reliability_util;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{Proto, Viewer, daemon};
use reliability_util::{Raw, clients_listed, eventually, tail};

/// Attaches `decoders` real viewers and `raw` interleaved-TCP clients that keep reading.
fn load(
    d: &common::Daemon,
    decoders: usize,
    raw: usize,
) -> (Vec<Viewer>, Vec<std::thread::JoinHandle<()>>) {
    let viewers: Vec<Viewer> = (0..decoders)
        .map(|i| Viewer::start(&d.url(), if i % 2 == 0 { Proto::Tcp } else { Proto::Udp }))
        .collect();
    let readers = (0..raw)
        .map(|_| {
            let mut r = Raw::connect(d);
            r.play("RTP/AVP/TCP;unicast;interleaved=0-1", true);
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                r.s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                while matches!(r.s.read(&mut buf), Ok(n) if n > 0) {}
            })
        })
        .collect();
    for (i, v) in viewers.iter().enumerate() {
        assert!(
            v.wait_frames(5, Duration::from_secs(30)),
            "viewer {i} never started"
        );
    }
    assert!(
        eventually(Duration::from_secs(10), || clients_listed(d)
            == decoders + raw),
        "{} clients listed",
        clients_listed(d)
    );
    (viewers, readers)
}

#[test]
fn sigterm_with_twenty_viewers_exits_zero_within_two_seconds() {
    let mut d = daemon().start();
    let (viewers, readers) = load(&d, 6, 14);
    let (status, took) = d.terminate();
    eprintln!(
        "sigterm: 20 viewers attached; exit {status:?} after {} ms",
        took.as_millis()
    );
    let status = status.expect("did not exit within 10 s");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status:?}\n{}",
        tail(&d.log(), 30)
    );
    assert!(
        took < Duration::from_secs(2),
        "exit took {took:?}\n{}",
        tail(&d.log(), 30)
    );
    // Every raw client saw its connection end.
    for r in readers {
        r.join().unwrap();
    }
    drop(viewers);
}

#[test]
fn second_signal_exits_at_once() {
    let mut d = daemon().start();
    let (viewers, _readers) = load(&d, 2, 18);
    // Both signals from one shell, microseconds apart: the first starts the graceful shutdown
    // (which with 20 viewers takes only ~20 ms), the second must cut it short. Exit code 130
    // shows which path ended the process.
    let pid = d.pid();
    let t0 = Instant::now();
    let sent = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -TERM {pid}; kill -INT {pid}"))
        .status()
        .unwrap();
    assert!(sent.success());
    let status = d.wait_exit(Duration::from_secs(5));
    let took = t0.elapsed();
    eprintln!(
        "second signal: exit {status:?} {} ms after the first signal",
        took.as_millis()
    );
    let status = status.expect("still running 5 s after two signals");
    assert!(
        took < Duration::from_secs(1),
        "two signals took {took:?} to end the process"
    );
    assert_eq!(
        status.code(),
        Some(130),
        "the second signal did not take the immediate path\n{}",
        tail(&d.log(), 20)
    );
    assert!(d.wait_log("Second signal", Duration::from_secs(5)));
    drop(viewers);
}
