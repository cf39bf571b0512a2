//! Recording, end to end through the real binary: segments that ffprobe reads, crash safety
//! under `kill -9`, retention, a full file system, and playback of a time range over HTTP (with
//! byte ranges, and in headless Chromium).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Daemon, Proto, Viewer, daemon, http_request, wait_until};
use serde_json::Value;

/// A daemon recording into `dir` with `extra` settings.
fn recorder(dir: &Path, extra: &[(&str, &str)]) -> Daemon {
    let mut b = daemon()
        .set("record.enabled", "true")
        .set("record.path", dir.display())
        .set("record.min_free_mb", "0");
    for (k, v) in extra {
        b = b.set(k, v);
    }
    b.start()
}

/// The segment files of stream `video`, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("video"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "mp4" || x == "mkv"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// ffprobe's view of a file: packet count, first packet a keyframe, and the time from the
/// first packet's start to the last one's end.
struct Probe {
    packets: usize,
    first_key: bool,
    duration: f64,
}

fn probe(path: &str) -> Probe {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,duration_time,flags",
            "-of",
            "json",
            path,
        ])
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe failed on {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packets = v["packets"].as_array().cloned().unwrap_or_default();
    let f = |p: &Value, k: &str| {
        p[k].as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let first = packets
        .iter()
        .map(|p| f(p, "pts_time"))
        .fold(f64::MAX, f64::min);
    let last = packets
        .iter()
        .map(|p| f(p, "pts_time") + f(p, "duration_time"))
        .fold(0.0, f64::max);
    Probe {
        packets: packets.len(),
        first_key: packets
            .first()
            .is_some_and(|p| p["flags"].as_str().unwrap_or("").starts_with('K')),
        duration: if packets.is_empty() {
            0.0
        } else {
            last - first
        },
    }
}

/// The format duration ffprobe reports from the file's header.
fn header_duration(path: &str) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
            path,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0)
}

fn listing(d: &Daemon) -> Value {
    let r = d.get("/api/v1/recordings?stream=video");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn listed_names(l: &Value) -> Vec<String> {
    l["spans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["segments"].as_array().unwrap().clone())
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Seconds since the epoch of a segment named by its UTC start (`20261202T025317.123Z.mp4`).
fn start_of(name: &str) -> f64 {
    let s = &name[..20];
    let num = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (num(0, 4), num(4, 6), num(6, 8));
    // days_from_civil
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    (days * 86_400 + num(9, 11) * 3600 + num(11, 13) * 60 + num(13, 15)) as f64
        + num(16, 19) as f64 / 1000.0
}

fn rfc3339(t: f64) -> String {
    let secs = t.floor() as i64;
    let ms = ((t - t.floor()) * 1000.0).round() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 {
        yoe + era * 400 + 1
    } else {
        yoe + era * 400
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn segments_rotate_list_and_play_as_one_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = recorder(
        dir.path(),
        &[("record.segment_s", "5"), ("record.part_ms", "500")],
    );
    assert!(
        wait_until(Duration::from_secs(20), || !segments(dir.path()).is_empty()),
        "no segment file appeared:\n{}",
        d.log()
    );
    let t0 = Instant::now();
    // 20 s of recording, then a range MP4 of 8 s from the first segment's start.
    assert!(wait_until(Duration::from_secs(40), || t0.elapsed()
        >= Duration::from_secs(20)));
    let l = listing(&d);
    let names = listed_names(&l);
    // Read after the listing: a segment started since then (or with no complete part yet) may
    // be on disk but not listed; nothing else may differ.
    let files = segments(dir.path());
    let first = files[0].file_name().unwrap().to_string_lossy().to_string();
    let on_disk: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    assert!(
        names.len() >= 4 && on_disk.len() - names.len() <= 1 && names == on_disk[..names.len()],
        "the listing matches the files: {l} vs {on_disk:?}"
    );
    assert_eq!(
        l["spans"].as_array().unwrap().len(),
        1,
        "one span, no gap: {l}"
    );

    // Stop, so the segment being written is finished too; then every file is checked.
    let (status, _) = d.terminate();
    assert!(status.is_some());
    let files = segments(dir.path());
    assert!(
        (4..=5).contains(&files.len()),
        "20 s at 5 s segments: {files:?}"
    );
    for (i, f) in files.iter().enumerate() {
        let p = probe(f.to_str().unwrap());
        assert!(p.first_key, "{f:?} starts with a keyframe");
        let header = header_duration(f.to_str().unwrap());
        assert!(
            (header - p.duration).abs() < 0.2,
            "{f:?}: header says {header}, packets {}",
            p.duration
        );
        if i + 1 < files.len() {
            assert!(
                (p.duration - 5.0).abs() <= 0.5,
                "{f:?} lasts {:.2} s, not 5 ± 0.5",
                p.duration
            );
        } else {
            assert!(p.duration <= 5.5 && p.packets > 0);
        }
    }

    // The range MP4, served by a daemon that is not recording (the files stay playable).
    let d = daemon()
        .set("record.path", dir.path().display())
        .set("record.min_free_mb", "0")
        .start();
    let start = start_of(&first);
    let path = format!("/recordings/video.mp4?start={}&duration=8", rfc3339(start));
    let full = d.get(&path);
    assert_eq!(full.status, 200, "{}", full.text());
    assert_eq!(full.header("content-type"), Some("video/mp4"));
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    let len: usize = full.header("content-length").unwrap().parse().unwrap();
    assert_eq!(len, full.body.len());
    let etag = full.header("etag").unwrap().to_string();
    let mp4 = dir.path().join("range.mp4");
    std::fs::write(&mp4, &full.body).unwrap();
    let p = probe(mp4.to_str().unwrap());
    assert!(p.first_key, "the range starts with a keyframe");
    assert!(
        (p.duration - 8.0).abs() <= 1.0,
        "range MP4 plays {:.2} s for 8 s asked",
        p.duration
    );
    assert!((header_duration(mp4.to_str().unwrap()) - 8.0).abs() <= 1.0);
    let png = dir.path().join("first.png");
    let decoded = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&mp4)
        .args(["-frames:v", "1"])
        .arg(&png)
        .status()
        .unwrap();
    assert!(decoded.success(), "the first frame decodes");
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    // Byte ranges.
    let part = http_request(
        d.http_port,
        "GET",
        &path,
        &[("Range", "bytes=100-1099")],
        b"",
    );
    assert_eq!(part.status, 206);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 100-1099/{len}").as_str())
    );
    assert_eq!(part.body, full.body[100..1100]);
    let tail = http_request(d.http_port, "GET", &path, &[("Range", "bytes=-500")], b"");
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, full.body[len - 500..]);
    let beyond = format!("bytes={len}-");
    let r = http_request(d.http_port, "GET", &path, &[("Range", &beyond)], b"");
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    let same = http_request(d.http_port, "GET", &path, &[("If-None-Match", &etag)], b"");
    assert_eq!(same.status, 304);
    // Bad and empty ranges say why.
    let r = d.get("/recordings/video.mp4?start=yesterday&duration=8");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("RFC 3339"), "{}", r.text());
    let r = d.get("/recordings/video.mp4?start=2000-01-01T00:00:00Z&duration=8");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("nothing"), "{}", r.text());
    let r = d.get(&format!(
        "/recordings/video.mp4?start={}&duration=0",
        rfc3339(start)
    ));
    assert_eq!(r.status, 400);
    assert_eq!(
        d.get("/recordings/nope.mp4?start=2000-01-01T00:00:00Z&duration=1")
            .status,
        404
    );
    assert_eq!(d.get("/api/v1/recordings").status, 400);

    // Plays in a browser.
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/recording-venv/bin/python");
    let url = format!("http://127.0.0.1:{}{}", d.http_port, path);
    let out = Command::new("timeout")
        .arg("120")
        .arg(&venv)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recording/play.py"))
        .arg(&url)
        .arg("60")
        .output()
        .expect("the Chromium driver runs (scripts/setup.sh --test installs it)");
    let played: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "driver output: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        played["ok"], true,
        "Chromium did not play the range: {played}"
    );
}

#[test]
fn kill_9_loses_at_most_a_part_and_the_next_start_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let settings = [("record.segment_s", "60"), ("record.part_ms", "1000")];
    let d = recorder(dir.path(), &settings);
    assert!(wait_until(Duration::from_secs(20), || !segments(
        dir.path()
    )
    .is_empty()));
    std::thread::sleep(Duration::from_millis(6500));
    let killed_at = unix_now();
    d.signal("KILL");
    drop(d);
    let files = segments(dir.path());
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    let p = probe(files[0].to_str().unwrap());
    let end = start_of(&name) + p.duration;
    // At most one part (1 s) is lost, plus the frames between encoder and disk (a few 10 ms).
    assert!(
        end >= killed_at - 1.0 - 0.3,
        "the cut segment ends {:.2} s before the kill (plays {:.2} s)",
        killed_at - end,
        p.duration
    );
    assert!(p.first_key);

    // The next start finishes the cut segment by itself and lists it, with the gap.
    let d = recorder(dir.path(), &settings);
    assert!(d.wait_log(
        "Recovered a segment cut by a crash",
        Duration::from_secs(10)
    ));
    assert!(wait_until(Duration::from_secs(20), || segments(dir.path())
        .len()
        >= 2));
    assert!(wait_until(Duration::from_secs(10), || {
        listing(&d)["spans"].as_array().unwrap().len() == 2
    }));
    let l = listing(&d);
    let first = &l["spans"][0]["segments"][0];
    assert_eq!(first["name"], name.as_str());
    let listed = first["duration_s"].as_f64().unwrap();
    assert!(
        (listed - p.duration).abs() < 0.2,
        "listed {listed}, plays {}",
        p.duration
    );
    assert!(l["gaps"][0]["duration_s"].as_f64().unwrap() > 0.0);
    assert!((header_duration(files[0].to_str().unwrap()) - p.duration).abs() < 0.2);
}

#[test]
fn retention_deletes_oldest_first_and_leaves_other_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("video");
    std::fs::create_dir_all(&video).unwrap();
    // Old recordings (named three and two hours ago), a foreign file and a symlink named like
    // a segment that points outside: only the old recordings may go.
    let old = [unix_now() - 3.0 * 3600.0, unix_now() - 2.0 * 3600.0];
    let old_names: Vec<String> = old
        .iter()
        .map(|t| {
            let r = rfc3339(*t);
            format!(
                "{}{}{}T{}{}{}.{}Z.mp4",
                &r[0..4],
                &r[5..7],
                &r[8..10],
                &r[11..13],
                &r[14..16],
                &r[17..19],
                &r[20..23]
            )
        })
        .collect();
    for n in &old_names {
        std::fs::write(video.join(n), vec![0u8; 1000]).unwrap();
    }
    std::fs::write(video.join("notes.txt"), b"mine").unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("precious.mp4");
    std::fs::write(&target, b"precious").unwrap();
    let link = video.join(old_names[0].replace(".mp4", ".mkv"));
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let max_bytes = 200_000u64;
    let d = daemon()
        .set("record.path", dir.path().display())
        .set("record.min_free_mb", "0")
        .set("record.segment_s", "1")
        .set("record.part_ms", "500")
        .set("record.keep_hours", "1")
        .set("record.max_bytes", max_bytes)
        .set("http.token", "t0k")
        .start();
    // Turned on at run time.
    let r = http_request(
        d.http_port,
        "PATCH",
        "/api/v1/streams/video",
        &[
            ("Authorization", "Bearer t0k"),
            ("Content-Type", "application/json"),
        ],
        br#"{"record": {"enabled": true}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["applied"], "live");
    assert!(
        wait_until(Duration::from_secs(20), || !old_names
            .iter()
            .any(|n| video.join(n).exists())),
        "recordings older than keep_hours were not deleted:\n{}",
        d.log()
    );
    // Watch the folder for 12 s: its size stays within max_bytes plus the segment being
    // written, and what goes is always the oldest.
    let mut seen: Vec<String> = Vec::new();
    let mut deleted: Vec<String> = Vec::new();
    let t0 = Instant::now();
    let mut biggest = 0u64;
    while t0.elapsed() < Duration::from_secs(12) {
        let now: Vec<String> = segments(dir.path())
            .iter()
            .filter(|p| !p.is_symlink())
            .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        for n in &seen {
            if !now.contains(n) && !deleted.contains(n) {
                deleted.push(n.clone());
            }
        }
        for n in &now {
            if !seen.contains(n) {
                seen.push(n.clone());
            }
        }
        let sizes: Vec<u64> = now
            .iter()
            .filter_map(|n| std::fs::metadata(video.join(n)).ok().map(|m| m.len()))
            .collect();
        let newest = sizes.last().copied().unwrap_or(0);
        biggest = biggest.max(sizes.iter().sum::<u64>() - newest);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!deleted.is_empty(), "max_bytes deleted nothing: {seen:?}");
    assert!(
        biggest <= max_bytes + 100_000,
        "the finished segments held {biggest} bytes, max_bytes is {max_bytes}"
    );
    seen.sort();
    assert_eq!(
        deleted,
        seen[..deleted.len()].to_vec(),
        "retention deletes the oldest first"
    );
    assert!(video.join("notes.txt").exists());
    assert!(
        link.is_symlink() && target.exists(),
        "the symlink and its target stay"
    );
    assert!(
        d.metric("camstream_recording_oldest_age_seconds{stream=\"video\"}")
            .unwrap()
            < 3600.0
    );
    assert!(
        d.metric("camstream_recording_segments_total{stream=\"video\"}")
            .unwrap()
            >= 5.0
    );
}

/// A size-limited tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "mounting a tmpfs needs root (the tests run as root in CI)"
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn state(d: &Daemon, s: &str) -> f64 {
    d.metric(&format!(
        "camstream_recording_state{{state=\"{s}\",stream=\"video\"}}"
    ))
    .or_else(|| {
        d.metric(&format!(
            "camstream_recording_state{{stream=\"video\",state=\"{s}\"}}"
        ))
    })
    .unwrap_or(-1.0)
}

fn record_output(d: &Daemon) -> Value {
    let s = d.get("/api/v1/streams/video").json();
    s["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["name"] == "record").cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn a_full_disk_pauses_recording_not_the_live_stream_and_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let _fs = Tmpfs::mount(dir.path(), "2m");
    let d = recorder(
        dir.path(),
        &[("record.segment_s", "2"), ("record.part_ms", "500")],
    );
    let viewer = Viewer::start(&d.url(), Proto::Tcp);
    assert!(viewer.wait_frames(15, Duration::from_secs(20)));
    assert!(wait_until(Duration::from_secs(20), || state(
        &d,
        "recording"
    ) == 1.0));
    // Fill the file system.
    let filler = dir.path().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k", "status=none"])
        .arg(format!("of={}", filler.display()))
        .status();
    assert!(
        wait_until(Duration::from_secs(20), || state(&d, "paused") == 1.0),
        "recording did not pause on a full disk:\n{}",
        d.log()
    );
    let out = record_output(&d);
    let err = out["detail"]["error"].as_str().unwrap_or("").to_string();
    assert!(
        err.contains("No space") || err.contains("min_free"),
        "status: {out}"
    );
    assert!(
        d.metric("camstream_recording_write_errors_total{stream=\"video\"}")
            .unwrap()
            >= 1.0
    );
    assert!(d.wait_log("Recording paused", Duration::from_secs(5)));
    // While paused, the live viewer gets every frame the encoder makes.
    let encoded = |d: &Daemon| {
        d.metric("camstream_frames_encoded_total{stream=\"video\"}")
            .unwrap()
    };
    let (e0, v0) = (encoded(&d), viewer.frames());
    std::thread::sleep(Duration::from_secs(4));
    let (e1, v1) = (encoded(&d), viewer.frames());
    assert!(
        e1 - e0 >= 45.0,
        "the encoder slowed: {} frames in 4 s",
        e1 - e0
    );
    assert!(
        ((v1 - v0) as f64 - (e1 - e0)).abs() <= 3.0,
        "the viewer got {} frames while {} were encoded",
        v1 - v0,
        e1 - e0
    );
    // Space returns: recording resumes by itself.
    let before = segments(dir.path()).len();
    std::fs::remove_file(&filler).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || state(&d, "recording") == 1.0
            && segments(dir.path()).len() > before),
        "recording did not resume:\n{}",
        d.log()
    );
    assert!(d.wait_log("Recording resumed", Duration::from_secs(5)));
    assert!(!viewer.errored());
}
