//! Recordings, snapshots and picture sizes through the real binary: a many-hour export streamed
//! as fragmented MP4 that ffprobe plays, the export cap (503 + Retry-After), the paginated
//! listing, snapshot widths limited to a small set, and a quarter turn stated as H×W by the
//! status, the snapshot, ONVIF and the analysis picture.

mod common;
mod media_util;
mod reliability_util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Proto, Viewer, daemon, http_request, wait_until};
use media_util::{long_recording, rfc3339};
use reliability_util::Raw;

/// Width and height of an image or video file, as ffprobe reads it.
fn size_of(path: &std::path::Path) -> (i64, i64) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=width,height",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["streams"][0]["width"].as_i64().unwrap_or(0),
        v["streams"][0]["height"].as_i64().unwrap_or(0),
    )
}

/// ffprobe's packet count, whether the first is a keyframe, and the time they cover.
fn packets(path: &std::path::Path) -> (usize, bool, f64) {
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
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = v["packets"].as_array().cloned().unwrap_or_default();
    let f = |x: &serde_json::Value, k: &str| {
        x[k].as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let end = p
        .iter()
        .map(|x| f(x, "pts_time") + f(x, "duration_time"))
        .fold(0.0, f64::max);
    let first = p.first().map_or(0.0, |x| f(x, "pts_time"));
    let key = p
        .first()
        .is_some_and(|x| x["flags"].as_str().unwrap_or("").starts_with('K'));
    (p.len(), key, end - first)
}

#[test]
fn a_six_hour_export_streams_and_the_listing_pages() {
    let dir = tempfile::tempdir().unwrap();
    // 120 segments of 5 s, 3 minutes apart: 6 hours.
    let first = long_recording(dir.path(), 120, 180);
    let d = daemon()
        .set("record.path", dir.path().display())
        .set("record.min_free_mb", "0")
        .start();

    // The listing, 50 segments a page, followed to the end.
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let q = after
            .as_ref()
            .map_or(String::new(), |a| format!("&after={a}"));
        let l = d
            .get(&format!("/api/v1/recordings?stream=video&limit=50{q}"))
            .json();
        assert_eq!(l["limit"], 50);
        for s in l["spans"].as_array().unwrap() {
            for seg in s["segments"].as_array().unwrap() {
                names.push(seg["name"].as_str().unwrap().to_string());
            }
        }
        match l["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(names.len(), 120, "every segment, once, in three pages");
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, names);
    assert_eq!(d.get("/api/v1/recordings?stream=video&limit=0").status, 400);
    assert_eq!(
        d.get("/api/v1/recordings?stream=video&limit=100000").status,
        400
    );

    // Six hours in one file: streamed, no length, no byte ranges; it plays from a keyframe
    // and covers the six hours (the gaps hold the frame before them).
    let rss0 = d.rss_kib();
    let path = format!(
        "/recordings/video.mp4?start={}&duration=21600",
        rfc3339(first)
    );
    let r = http_request(d.http_port, "GET", &path, &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("accept-ranges"), Some("none"));
    let file = dir.path().join("export.mp4");
    std::fs::write(&file, &r.body).unwrap();
    let (n, key, covered) = packets(&file);
    assert!(key, "the export starts with a keyframe");
    assert!(
        n >= 120 * 70,
        "{n} packets for 120 segments of 5 s at 15 fps"
    );
    let expected = (119 * 180 + 5) as f64;
    assert!(
        (covered - expected).abs() < 10.0,
        "the export covers {covered:.0} s, the recording {expected} s"
    );
    assert_eq!(size_of(&file), (320, 240));
    let grown = d.rss_kib().saturating_sub(rss0);
    println!(
        "6-hour export: {} bytes, {n} packets, {covered:.0} s, RSS growth {grown} KiB",
        r.body.len()
    );
    assert!(grown < 20 * 1024, "RSS grew {grown} KiB sending the export");

    // A short range still has a length and byte ranges.
    let short = format!("/recordings/video.mp4?start={}&duration=4", rfc3339(first));
    let whole = d.get(&short);
    assert_eq!(whole.status, 200);
    let len: usize = whole.header("content-length").unwrap().parse().unwrap();
    assert_eq!(len, whole.body.len());
    let part = http_request(
        d.http_port,
        "GET",
        &short,
        &[("Range", "bytes=1000-1999")],
        b"",
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.body, whole.body[1000..2000]);
    // Twenty minutes (seven segments): a range in the middle skips whole segments by their
    // measured sizes and must still be the same bytes.
    let mid = format!(
        "/recordings/video.mp4?start={}&duration=1200",
        rfc3339(first)
    );
    let whole = d.get(&mid);
    assert_eq!(whole.status, 200);
    let len = whole.body.len();
    assert_eq!(
        whole.header("content-length"),
        Some(len.to_string().as_str())
    );
    let (a, b) = (len / 2, len / 2 + 99_999);
    let part = http_request(
        d.http_port,
        "GET",
        &mid,
        &[("Range", &format!("bytes={a}-{b}"))],
        b"",
    );
    assert_eq!(part.status, 206);
    assert!(
        part.body == whole.body[a..=b],
        "the middle range differs from the whole file's bytes"
    );
    let file = dir.path().join("twenty.mp4");
    std::fs::write(&file, &whole.body).unwrap();
    let (_, key, covered) = packets(&file);
    assert!(
        key && (covered - 1085.0).abs() < 10.0,
        "twenty minutes cover {covered:.0} s"
    );

    // Every slot taken by readers that do not read: the next export is refused with a time to
    // come back, and counted; a slot frees when its reader goes.
    let mut holders = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(("127.0.0.1", d.http_port)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut b = [0u8; 64];
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert!(s.read(&mut b).unwrap() > 0);
        holders.push(s);
    }
    let busy = d.get(&path);
    assert_eq!(busy.status, 503, "{}", busy.text());
    assert_eq!(busy.header("retry-after"), Some("5"));
    assert_eq!(
        d.metric("camstream_recording_exports_rejected_total"),
        Some(1.0)
    );
    assert_eq!(d.metric("camstream_recording_exports_active"), Some(4.0));
    holders.pop();
    assert!(
        wait_until(Duration::from_secs(10), || d
            .metric("camstream_recording_exports_active")
            == Some(3.0)),
        "the slot of a reader that left is not freed"
    );
    assert_eq!(d.get(&short).status, 200);
}

#[test]
fn snapshots_come_in_a_few_widths() {
    let d = daemon().start();
    let r = d.get("/snapshot.jpg?width=100");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("80, 160, 320"), "{}", r.text());
    let half = d.get("/snapshot.jpg?width=160");
    assert_eq!(half.status, 200);
    let ok = d.get("/snapshot.jpg");
    assert_eq!(ok.status, 200);
    assert_eq!(&ok.body[..2], &[0xFF, 0xD8]);
    assert_eq!(
        d.metric("camstream_snapshots_total{stream=\"video\",result=\"refused\"}"),
        Some(1.0)
    );
    // Parallel requests for one size share an encode.
    let port = d.http_port;
    let threads: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || http_request(port, "GET", "/snapshot.jpg", &[], b"").status)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    let decoded = d
        .metric("camstream_snapshots_total{stream=\"video\",result=\"encoded\"}")
        .unwrap_or(0.0);
    let shared = d
        .metric("camstream_snapshots_total{stream=\"video\",result=\"shared\"}")
        .unwrap_or(0.0);
    println!("8 snapshots (2 sizes): {decoded} encodes, {shared} shared");
    assert_eq!(decoded + shared, 8.0);
}

/// A one-request-at-a-time fake of Ollama's `/api/generate` that keeps the JSON bodies.
fn fake_model() -> (u16, Arc<Mutex<Vec<serde_json::Value>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut raw = Vec::new();
            let mut buf = [0u8; 65536];
            let body = loop {
                let Ok(n) = c.read(&mut buf) else { break None };
                if n == 0 {
                    break None;
                }
                raw.extend_from_slice(&buf[..n]);
                let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if raw.len() >= at + 4 + len {
                    break Some(raw[at + 4..at + 4 + len].to_vec());
                }
            };
            if let Some(v) = body.and_then(|b| serde_json::from_slice(&b).ok()) {
                s2.lock().unwrap().push(v);
            }
            let answer = br#"{"response":"a test card","done":true}"#;
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                answer.len()
            );
            let _ = c.write_all(answer);
        }
    });
    (port, seen)
}

#[test]
fn a_quarter_turn_is_h_by_w_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (port, seen) = fake_model();
    let d = daemon()
        .set("image.rotation", "90")
        .set("onvif.enabled", "true")
        .set("onvif.discovery", "false")
        .set("analysis.enabled", "true")
        .set("analysis.url", format!("http://127.0.0.1:{port}"))
        .set("analysis.model", "llava:7b")
        .set("analysis.interval_s", "1")
        .set("analysis.width", "320")
        .start();
    // Status.
    let st = d.get("/api/v1/streams/video").json();
    let enc = &st["encodings"][0];
    assert_eq!(
        (enc["width"].as_i64(), enc["height"].as_i64()),
        (Some(240), Some(320)),
        "{st}"
    );
    // Snapshot.
    let snap = d.get("/snapshot.jpg");
    assert_eq!(snap.status, 200, "{}", snap.text());
    let f = dir.path().join("snap.jpg");
    std::fs::write(&f, &snap.body).unwrap();
    assert_eq!(size_of(&f), (240, 320), "the snapshot");
    // ONVIF.
    let body = r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:trt="http://www.onvif.org/ver10/media/wsdl"><s:Body><trt:GetProfiles/></s:Body></s:Envelope>"#;
    let r = http_request(
        d.http_port,
        "POST",
        "/onvif/media_service",
        &[("Content-Type", "application/soap+xml; charset=utf-8")],
        body.as_bytes(),
    );
    let x = r.text();
    assert_eq!(r.status, 200, "{x}");
    let res = x
        .find("<tt:Resolution>")
        .map(|i| &x[i..(i + 120).min(x.len())]);
    assert!(
        res.is_some_and(
            |r| r.contains("<tt:Width>240</tt:Width>") && r.contains("<tt:Height>320</tt:Height>")
        ),
        "ONVIF states 240x320: {x}"
    );
    // Analysis: the picture sent to the model.
    assert!(
        wait_until(Duration::from_secs(20), || !seen.lock().unwrap().is_empty()),
        "no analysis request:\n{}",
        d.log()
    );
    let req = seen.lock().unwrap()[0].clone();
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(req["images"][0].as_str().unwrap())
        .unwrap();
    let f = dir.path().join("analysis.jpg");
    std::fs::write(&f, &jpeg).unwrap();
    assert_eq!(size_of(&f), (240, 320), "the analysis picture");
}

#[test]
fn a_play_loop_gets_coalesced_keyframes_and_viewers_keep_every_frame() {
    let d = daemon().start();
    let viewer = Viewer::start(&d.url(), Proto::Tcp);
    assert!(
        viewer.wait_frames(15, Duration::from_secs(20)),
        "the viewer plays"
    );
    let mut raw = Raw::connect(&d);
    let (session, _) = raw.play("RTP/AVP/TCP;unicast;interleaved=0-1", true);
    let keyframes = || {
        d.metric("camstream_keyframes_total{stream=\"video\"}")
            .expect("the keyframe counter")
    };
    let key0 = keyframes();
    let frames0 = viewer.frames();
    let t0 = Instant::now();
    let mut plays = 0u32;
    // PLAY at 50/s for 20 s.
    while t0.elapsed() < Duration::from_secs(20) {
        let url = raw.url.clone();
        raw.ok("PLAY", &url, &[&format!("Session: {session}")]);
        plays += 1;
        let next = t0 + Duration::from_millis(20) * plays;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let secs = t0.elapsed().as_secs_f64();
    let keys = keyframes() - key0;
    let frames = (viewer.frames() - frames0) as f64;
    let expected = secs * 15.0;
    let coalesced = d
        .metric("camstream_keyframe_requests_total{stream=\"video\",result=\"coalesced\"}")
        .unwrap_or(0.0);
    // 15 fps with a keyframe every 30 frames: 0.5/s of its own, plus at most 1/s forced and
    // the burst of 3.
    let budget = secs * (0.5 + 1.0) + 3.0 + 2.0;
    let scheduled = d
        .metric("camstream_keyframe_requests_total{stream=\"video\",result=\"scheduled\"}")
        .unwrap_or(0.0);
    println!(
        "PLAY loop: {plays} PLAYs in {secs:.1} s ({:.0}/s), {keys} keyframes ({:.2}/s, budget {budget:.0}), \
         {coalesced} coalesced, {scheduled} scheduled, viewer {frames}/{expected:.0} frames ({:.1} %)",
        f64::from(plays) / secs,
        keys / secs,
        100.0 * frames / expected
    );
    assert!(
        f64::from(plays) / secs >= 45.0,
        "the loop ran at {plays} PLAYs in {secs:.1} s"
    );
    assert!(keys <= budget, "{keys} keyframes in {secs:.1} s");
    assert!(
        keys >= secs * 0.8,
        "coalesced requests still get keyframes: {keys} in {secs:.1} s"
    );
    assert!(
        coalesced >= f64::from(plays) * 0.9,
        "{coalesced} of {plays} coalesced"
    );
    assert!(
        frames >= 0.99 * expected,
        "the viewer got {frames} of {expected:.0} frames"
    );
}
