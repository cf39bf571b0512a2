//! Helpers for the media tests (tests/media.rs, tests/hostile_media.rs): a recording of many
//! hours made in seconds (one short segment recorded by the daemon, hard-linked under names
//! whose start times span the hours), and time formatting.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{daemon, wait_until};

/// Civil date (y, m, d) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A segment file name for a start at `unix_s` (`20261202T025317.000Z.mp4`).
pub fn segment_name(unix_s: i64) -> String {
    let (y, m, d) = civil(unix_s.div_euclid(86_400));
    let s = unix_s.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.000Z.mp4",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// RFC 3339 of `unix_s`.
pub fn rfc3339(unix_s: i64) -> String {
    let (y, m, d) = civil(unix_s.div_euclid(86_400));
    let s = unix_s.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Now, in whole Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A long recording of stream `video` under `root`: `count` copies (hard links) of one
/// 5-second segment, `spacing_s` apart, the last one ending about an hour ago. Returns the
/// first one's start (Unix seconds).
pub fn long_recording(root: &Path, count: usize, spacing_s: i64) -> i64 {
    let made = tempfile::tempdir().unwrap();
    let mut d = daemon()
        .set("record.enabled", "true")
        .set("record.path", made.path().display())
        .set("record.min_free_mb", "0")
        .set("record.segment_s", "5")
        .set("encoder.bitrate_kbps", "200")
        .start();
    let video = made.path().join("video");
    let files = || -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(&video)
            .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    assert!(
        wait_until(Duration::from_secs(30), || files().len() >= 2),
        "the recorder made no finished segment:\n{}",
        d.log()
    );
    d.terminate();
    let source = files()[0].clone();
    let dest = root.join("video");
    std::fs::create_dir_all(&dest).unwrap();
    let first = unix_now() - 3600 - count as i64 * spacing_s;
    for i in 0..count as i64 {
        std::fs::hard_link(&source, dest.join(segment_name(first + i * spacing_s))).unwrap();
    }
    first
}

#[test]
fn names_are_utc() {
    assert_eq!(segment_name(0), "19700101T000000.000Z.mp4");
    assert_eq!(rfc3339(1_796_179_997), "2026-12-02T02:53:17Z");
}
