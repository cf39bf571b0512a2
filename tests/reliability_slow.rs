//! A viewer that stops reading: it PLAYs over interleaved TCP and never reads again, beside two
//! normal viewers. The normal ones must keep their frames, the slow one must be dropped within
//! a bound, and the daemon's memory must stay bounded while its socket is full.

mod common;
mod reliability_util;

use std::time::{Duration, Instant};

use common::{Proto, Viewer, daemon};
use reliability_util::{Raw, alive, clients_listed, eventually, tail};

const FPS: u64 = 30;

#[test]
fn stalled_tcp_reader_is_dropped_and_harms_nobody() {
    // A high bitrate fills the socket buffers within a second or two.
    let mut d = daemon()
        .set("video.width", 640)
        .set("video.height", 480)
        .set("video.fps", FPS)
        .set("encoder.bitrate_kbps", 8000)
        .set("encoder.keyframe_interval", FPS)
        .start();
    let a = Viewer::start(&d.url(), Proto::Tcp);
    let b = Viewer::start(&d.url(), Proto::Udp);
    for v in [&a, &b] {
        assert!(
            v.wait_frames(FPS, Duration::from_secs(20)),
            "viewer never started\n{}",
            d.log()
        );
    }
    let rss0 = d.rss_kib();

    let mut slow = Raw::connect(&d);
    slow.play("RTP/AVP/TCP;unicast;interleaved=0-1", true);
    // From here on the slow client never reads.
    assert!(eventually(Duration::from_secs(5), || clients_listed(&d) == 3));

    let window = Duration::from_secs(20);
    let (a0, b0) = (a.frames(), b.frames());
    let t0 = Instant::now();
    let mut dropped_after = None;
    let mut peak_rss = rss0;
    while t0.elapsed() < window {
        std::thread::sleep(Duration::from_millis(200));
        peak_rss = peak_rss.max(d.rss_kib());
        if dropped_after.is_none() && clients_listed(&d) == 2 {
            dropped_after = Some(t0.elapsed());
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let (da, db) = (a.frames() - a0, b.frames() - b0);
    let expected = secs * FPS as f64;
    eprintln!(
        "slow viewer: dropped after {dropped_after:?}; normal viewers decoded {da} (tcp) and {db} (udp) of ~{expected:.0} frames in {secs:.1} s; RSS {rss0} -> peak {peak_rss} KiB"
    );
    assert!(alive(&mut d), "daemon died\n{}", tail(&d.log(), 40));
    for (name, n) in [("tcp", da), ("udp", db)] {
        assert!(
            n as f64 >= 0.95 * expected,
            "{name} viewer decoded {n} of ~{expected:.0} frames while a reader was stalled\n{}",
            tail(&d.log(), 30)
        );
    }
    let dropped = dropped_after.expect("the stalled reader was never dropped");
    assert!(
        dropped < Duration::from_secs(15),
        "dropped only after {dropped:?}"
    );
    assert!(peak_rss < rss0 + 64 * 1024, "RSS {rss0} -> {peak_rss} KiB");
    assert!(!a.errored() && !b.errored());
}
