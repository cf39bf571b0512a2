//! The sound in recordings (issue #24): with a stream that has audio, each fMP4 segment carries
//! an AAC track beside the H.264 one, both with their durations, and the decoded file keeps the
//! test picture's flashes and the test beeps together.

mod av_sync;
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{daemon, wait_until};

/// Flash-to-beep tolerance the issue sets.
const SYNC_MS: f64 = 40.0;

/// The segment files of stream `video`, oldest first.
fn segments(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("video"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn fmp4_segments_carry_the_aac_track_in_sync() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon()
        .set("source.pattern", "black")
        .set("video.fps", "30")
        .set("audio.kind", "test")
        .set("record.enabled", "true")
        .set("record.path", dir.path().display())
        .set("record.min_free_mb", "0")
        .set("record.segment_s", "4")
        .set("record.part_ms", "500")
        .start();
    // A third segment means the second one is finished (durations written); the first may
    // start before the first sound arrives (the AAC encoder starts with its first subscriber).
    assert!(
        wait_until(Duration::from_secs(30), || segments(dir.path(), "mp4")
            .len()
            >= 3),
        "no finished segment: {:?}",
        segments(dir.path(), "mp4")
    );
    drop(d);
    let first = segments(dir.path(), "mp4")[1].clone();
    let streams = av_sync::durations(&first);
    println!("streams of {}: {streams:?}", first.display());
    let video = streams.iter().find(|(c, _)| c == "h264").map(|s| s.1);
    let sound = streams.iter().find(|(c, _)| c == "aac").map(|s| s.1);
    assert!(
        video.is_some_and(|v| v > 3.5) && sound.is_some_and(|a| a > 3.5),
        "{streams:?}"
    );
    let sync = av_sync::measure(&first);
    println!("flash-to-beep in the recorded segment: {}", sync.summary());
    assert!(sync.offsets_ms.len() >= 3, "{}", sync.summary());
    assert!(sync.worst_ms().abs() <= SYNC_MS, "{}", sync.summary());
}

#[test]
fn mkv_segments_carry_the_aac_track_in_sync() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon()
        .set("source.pattern", "black")
        .set("video.fps", "30")
        .set("audio.kind", "test")
        .set("record.enabled", "true")
        .set("record.format", "mkv")
        .set("record.path", dir.path().display())
        .set("record.min_free_mb", "0")
        .set("record.segment_s", "4")
        .set("record.part_ms", "500")
        .start();
    assert!(
        wait_until(Duration::from_secs(30), || segments(dir.path(), "mkv")
            .len()
            >= 3),
        "no finished segment: {:?}",
        segments(dir.path(), "mkv")
    );
    drop(d);
    let second = segments(dir.path(), "mkv")[1].clone();
    let streams = av_sync::durations(&second);
    println!("streams of {}: {streams:?}", second.display());
    let video = streams.iter().find(|(c, _)| c == "h264").map(|s| s.1);
    let sound = streams.iter().find(|(c, _)| c == "aac").map(|s| s.1);
    assert!(
        video.is_some_and(|v| v > 3.5) && sound.is_some_and(|a| a > 3.5),
        "{streams:?}"
    );
    let sync = av_sync::measure(&second);
    println!(
        "flash-to-beep in the recorded MKV segment: {}",
        sync.summary()
    );
    assert!(sync.offsets_ms.len() >= 3, "{}", sync.summary());
    assert!(sync.worst_ms().abs() <= SYNC_MS, "{}", sync.summary());
}
