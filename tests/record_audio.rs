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

/// The first finished segment (one newer exists) after the first, with at least 3.5 s of
/// picture: the first may begin before the first sound arrives (the AAC encoder starts with its
/// first subscriber), and a start-up break can cut one short.
fn full_segment(dir: &Path, ext: &str) -> Option<PathBuf> {
    let all = segments(dir, ext);
    let finished = all.len().saturating_sub(1);
    all.into_iter().take(finished).skip(1).find(|f| {
        av_sync::durations(f)
            .iter()
            .any(|(c, d)| c == "h264" && *d > 3.5)
    })
}

/// The UTC start of a segment, from its name (`20261207T171629.538Z.mp4`), as RFC 3339.
fn rfc3339_of(path: &Path) -> String {
    let n = path.file_stem().unwrap().to_str().unwrap();
    format!(
        "{}-{}-{}T{}:{}:{}",
        &n[0..4],
        &n[4..6],
        &n[6..8],
        &n[9..11],
        &n[11..13],
        &n[13..]
    )
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
    // A newer segment means this one is finished (durations written).
    assert!(
        wait_until(Duration::from_secs(40), || full_segment(dir.path(), "mp4")
            .is_some()),
        "no full finished segment: {:?}",
        segments(dir.path(), "mp4")
    );
    let first = full_segment(dir.path(), "mp4").expect("a full segment");
    // The time-range MP4 from the second segment's start, across into the third one.
    let start = rfc3339_of(&first);
    let r = d.get(&format!("/recordings/video.mp4?start={start}&duration=6"));
    assert_eq!(r.status, 200, "{}", r.text());
    let export = dir.path().join("range.mp4");
    std::fs::write(&export, &r.body).unwrap();
    drop(d);
    let streams = av_sync::durations(&export);
    println!("streams of the exported range: {streams:?}");
    assert!(
        streams.iter().any(|(c, d)| c == "h264" && *d > 3.5)
            && streams.iter().any(|(c, d)| c == "aac" && *d > 3.5),
        "{streams:?}"
    );
    let sync = av_sync::measure(&export);
    println!("flash-to-beep in the exported range: {}", sync.summary());
    assert!(sync.offsets_ms.len() >= 3, "{}", sync.summary());
    assert!(sync.worst_ms().abs() <= SYNC_MS, "{}", sync.summary());
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
        wait_until(Duration::from_secs(40), || full_segment(dir.path(), "mkv")
            .is_some()),
        "no full finished segment: {:?}",
        segments(dir.path(), "mkv")
    );
    drop(d);
    let second = full_segment(dir.path(), "mkv").expect("a full segment");
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
