//! Audio (issue #24), end to end with real clients: the RTSP session's second track (AAC by
//! default, Opus on request) as ffprobe, ffmpeg (TCP and UDP) and GStreamer's rtspsrc see it;
//! the flash-to-beep offset of the test source measured from ffmpeg's decode of an NVR-style
//! `-c copy` recording; live gain and mute; and a failing audio source that restarts alone
//! while the picture and the session carry on.

mod av_sync;
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, DaemonBuilder, daemon, ffprobe, gst_init, http_request, wait_until};
use gst::prelude::*;

/// The admin token of the tests that change settings.
const TOKEN: &str = "audio-test-token-0123456789";

/// Flash-to-beep tolerance the issue sets.
const SYNC_MS: f64 = 40.0;

/// The test picture flashes on black at 30 fps, with the test beep.
fn av_daemon() -> DaemonBuilder {
    daemon()
        .set("source.pattern", "black")
        .set("video.fps", "30")
        .set("audio.kind", "test")
}

fn codecs(probe: &serde_json::Value) -> Vec<String> {
    probe["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["codec_name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Decodes `seconds` of both tracks with ffmpeg over `transport`; returns the bytes of decoded
/// video and audio ffmpeg reports.
fn ffmpeg_decodes(url: &str, transport: &str, seconds: u32) -> (f64, f64) {
    let t = seconds.to_string();
    let text = av_sync::ffmpeg(&[
        "-v",
        "info",
        "-rtsp_transport",
        transport,
        "-i",
        url,
        "-t",
        &t,
        "-map",
        "0:v:0",
        "-map",
        "0:a:0",
        "-f",
        "null",
        "-",
    ]);
    // The last line reads e.g. "video:12345kB audio:281kB subtitle:0kB ...".
    let size = |kind: &str| {
        text.lines()
            .rev()
            .find_map(|l| l.split(&format!("{kind}:")).nth(1))
            .and_then(|r| r.split("kB").next())
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (size("video"), size("audio"))
}

/// A GStreamer client playing both tracks: rtspsrc, then decodebin and an appsink per track.
struct AvViewer {
    pipeline: gst::Pipeline,
    video: Arc<Mutex<Vec<Instant>>>,
    audio: Arc<Mutex<Vec<Instant>>>,
    errored: Arc<AtomicBool>,
}

impl AvViewer {
    fn start(url: &str, protocols: &str) -> AvViewer {
        gst_init();
        let pipeline = gst::Pipeline::new();
        let src = gst::ElementFactory::make("rtspsrc")
            .property("location", url)
            .property("latency", 0u32)
            .property_from_str("protocols", protocols)
            .build()
            .expect("rtspsrc (gstreamer1.0-plugins-good)");
        pipeline.add(&src).unwrap();
        let video = Arc::new(Mutex::new(Vec::new()));
        let audio = Arc::new(Mutex::new(Vec::new()));
        let weak = pipeline.downgrade();
        let (v, a) = (video.clone(), audio.clone());
        src.connect_pad_added(move |_, pad| {
            let Some(pipeline) = weak.upgrade() else {
                return;
            };
            let encoding = pad
                .current_caps()
                .and_then(|c| {
                    c.structure(0)
                        .and_then(|s| s.get::<String>("encoding-name").ok())
                })
                .unwrap_or_default();
            let (arrivals, chain) = match encoding.as_str() {
                "H264" => (v.clone(), "rtph264depay ! h264parse ! avdec_h264"),
                "MPEG4-GENERIC" => (a.clone(), "rtpmp4gdepay ! aacparse ! avdec_aac"),
                "OPUS" => (a.clone(), "rtpopusdepay ! opusdec"),
                other => {
                    eprintln!("viewer: unexpected track {other:?}");
                    return;
                }
            };
            let Ok(bin) = gst::parse::bin_from_description(
                &format!("{chain} ! appsink name=out sync=false"),
                true,
            ) else {
                eprintln!("viewer: cannot build {chain}");
                return;
            };
            let Some(sink) = bin
                .by_name("out")
                .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
            else {
                return;
            };
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |s| {
                        s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        arrivals.lock().unwrap().push(Instant::now());
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
            if pipeline.add(&bin).is_err() || bin.sync_state_with_parent().is_err() {
                eprintln!("viewer: cannot start {chain}");
                return;
            }
            if let Some(sinkpad) = bin.static_pad("sink")
                && let Err(e) = pad.link(&sinkpad)
            {
                eprintln!("viewer: cannot link {encoding}: {e:?}");
            }
        });
        let errored = Arc::new(AtomicBool::new(false));
        let e = errored.clone();
        pipeline.bus().unwrap().set_sync_handler(move |_, msg| {
            if let gst::MessageView::Error(err) = msg.view() {
                eprintln!("viewer error: {} {:?}", err.error(), err.debug());
                e.store(true, Ordering::SeqCst);
            }
            gst::BusSyncReply::Drop
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        AvViewer {
            pipeline,
            video,
            audio,
            errored,
        }
    }

    fn counts(&self) -> (usize, usize) {
        (
            self.video.lock().unwrap().len(),
            self.audio.lock().unwrap().len(),
        )
    }

    /// The longest gap between arrivals after `since` (and up to now).
    fn max_gap(arrivals: &Mutex<Vec<Instant>>, since: Instant) -> Duration {
        let a = arrivals.lock().unwrap();
        let mut prev = since;
        let mut gap = Duration::ZERO;
        for t in a.iter().filter(|t| **t >= since) {
            gap = gap.max(*t - prev);
            prev = *t;
        }
        gap.max(Instant::now() - prev)
    }
}

impl Drop for AvViewer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn stream_status(d: &Daemon) -> serde_json::Value {
    d.get("/api/v1/streams/video").json()
}

fn stream_status_as_admin(d: &Daemon) -> serde_json::Value {
    let auth = format!("Bearer {TOKEN}");
    http_request(
        d.http_port,
        "GET",
        "/api/v1/streams/video",
        &[("Authorization", &auth)],
        b"",
    )
    .json()
}

#[test]
fn rtsp_carries_aac_every_client_plays_it_and_it_stays_in_sync() {
    let d = av_daemon().start();
    let url = d.url();
    assert!(
        wait_until(
            Duration::from_secs(10),
            || stream_status(&d)["audio"]["state"] == "streaming"
        ),
        "audio never streamed: {}",
        stream_status(&d)["audio"]
    );
    for transport in ["tcp", "udp"] {
        let c = codecs(&ffprobe(&url, transport));
        assert_eq!(c, ["h264", "aac"], "ffprobe over {transport}");
        let (video, audio) = ffmpeg_decodes(&url, transport, 2);
        assert!(
            video > 0.0 && audio > 0.0,
            "ffmpeg over {transport} decoded video {video} kB, audio {audio} kB"
        );
    }
    // GStreamer's client, both tracks decoded.
    let viewer = AvViewer::start(&url, "tcp");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (v, a) = viewer.counts();
            v >= 30 && a >= 50
        }),
        "rtspsrc decoded (video, audio) = {:?}",
        viewer.counts()
    );
    assert!(!viewer.errored.load(Ordering::SeqCst));
    drop(viewer);
    // What an NVR does: copy both tracks into MP4 without re-encoding.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nvr.mp4");
    av_sync::record(&["-rtsp_transport", "tcp"], &url, 6, &file);
    let durations = av_sync::durations(&file);
    assert!(
        durations.iter().any(|(c, d)| c == "h264" && *d > 3.0)
            && durations.iter().any(|(c, d)| c == "aac" && *d > 3.0),
        "{durations:?}"
    );
    let sync = av_sync::measure(&file);
    println!(
        "RTSP (TCP, ffmpeg -c copy to MP4) flash-to-beep: {}",
        sync.summary()
    );
    assert!(sync.offsets_ms.len() >= 4, "{sync:?}");
    assert!(sync.worst_ms().abs() <= SYNC_MS, "{}", sync.summary());
}

#[test]
fn rtsp_carries_opus_on_request() {
    let d = av_daemon().set("audio.rtsp_codec", "opus").start();
    let url = d.url();
    assert!(wait_until(
        Duration::from_secs(10),
        || stream_status(&d)["audio"]["state"] == "streaming"
    ));
    assert_eq!(codecs(&ffprobe(&url, "tcp")), ["h264", "opus"]);
    let (video, audio) = ffmpeg_decodes(&url, "udp", 2);
    assert!(
        video > 0.0 && audio > 0.0,
        "video {video} kB, audio {audio} kB"
    );
    let viewer = AvViewer::start(&url, "udp");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (v, a) = viewer.counts();
            v >= 30 && a >= 50
        }),
        "rtspsrc decoded (video, audio) = {:?}",
        viewer.counts()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("opus.mkv");
    av_sync::record(&["-rtsp_transport", "tcp"], &url, 5, &file);
    let sync = av_sync::measure(&file);
    println!(
        "RTSP Opus (TCP, -c copy to MKV) flash-to-beep: {}",
        sync.summary()
    );
    assert!(sync.offsets_ms.len() >= 3, "{sync:?}");
    assert!(sync.worst_ms().abs() <= SYNC_MS, "{}", sync.summary());
}

#[test]
fn gain_and_mute_change_live() {
    let d = av_daemon().set("http.token", TOKEN).start();
    let level = || d.metric("camstream_audio_level_dbfs{stream=\"video\"}");
    // The beep (half scale, 50 ms a second) is about -22 dBFS over a second.
    assert!(
        wait_until(Duration::from_secs(10), || level()
            .is_some_and(|l| l > -30.0)),
        "level {:?}",
        level()
    );
    let patch = |body: &str| {
        let r = http_request(
            d.http_port,
            "PATCH",
            "/api/v1/streams/video",
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &format!("Bearer {TOKEN}")),
            ],
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    assert_eq!(patch(r#"{"audio":{"gain_db":-20}}"#)["applied"], "live");
    assert!(
        wait_until(Duration::from_secs(5), || level()
            .is_some_and(|l| l < -38.0)),
        "level after -20 dB: {:?}",
        level()
    );
    assert_eq!(patch(r#"{"audio":{"mute":true}}"#)["applied"], "live");
    let s = stream_status_as_admin(&d);
    assert_eq!(s["audio"]["mute"], true, "{s}");
    assert_eq!(s["audio"]["gain_db"], -20.0);
    // Not a live setting: the source stays as the file says.
    let r = http_request(
        d.http_port,
        "PATCH",
        "/api/v1/streams/video",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {TOKEN}")),
        ],
        br#"{"audio":{"kind":"alsa"}}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(stream_status_as_admin(&d)["audio"]["restarts"], 0);
}

#[test]
fn a_failing_audio_source_restarts_alone_while_picture_and_session_carry_on() {
    // 1.5 s of sound, then the source ends; again after every restart.
    let d = daemon()
        .set("video.fps", "30")
        .set("audio.kind", "pipeline")
        .set(
            "audio.pipeline",
            "audiotestsrc is-live=true wave=sine num-buffers=150 samplesperbuffer=480",
        )
        .start();
    let viewer = AvViewer::start(&d.url(), "tcp");
    assert!(
        wait_until(Duration::from_secs(10), || viewer.counts().0 >= 15),
        "no picture: {:?}",
        viewer.counts()
    );
    let watch_from = Instant::now();
    let restarts = || {
        d.metric("camstream_audio_restarts_total{stream=\"video\",reason=\"eos\"}")
            .unwrap_or(0.0)
    };
    // Each failure: backoff, then streaming again; the return is timed from the status API.
    let mut returns = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while returns.len() < 2 && Instant::now() < deadline {
        assert!(wait_until(
            Duration::from_secs(5),
            || stream_status(&d)["audio"]["state"] == "backoff"
        ));
        let down = Instant::now();
        assert!(
            wait_until(
                Duration::from_secs(5),
                || stream_status(&d)["audio"]["state"] == "streaming"
            ),
            "audio did not come back"
        );
        returns.push(down.elapsed());
    }
    println!("audio back after {returns:?}; restarts {}", restarts());
    assert!(returns.len() >= 2 && returns.iter().all(|r| *r <= Duration::from_secs(2)));
    assert!(restarts() >= 2.0);
    let video_gap = AvViewer::max_gap(&viewer.video, watch_from);
    let audio_gap = AvViewer::max_gap(&viewer.audio, watch_from);
    println!("largest gap while audio restarted: video {video_gap:?}, audio {audio_gap:?}");
    assert!(!viewer.errored.load(Ordering::SeqCst), "the session ended");
    assert!(
        video_gap <= Duration::from_millis(100),
        "video gap {video_gap:?}"
    );
    // Silence fills the restarts: the audio track never stops either.
    assert!(
        audio_gap <= Duration::from_millis(500),
        "audio gap {audio_gap:?}"
    );
    let s = stream_status(&d);
    assert_eq!(s["restarts"], 0, "the video never restarted: {s}");
}

/// The sound is behind the picture's door: a visitor without credentials gets neither track, a
/// viewer gets both.
#[test]
fn rtsp_sound_asks_for_the_same_password_as_the_picture() {
    let d = av_daemon()
        .set("auth.username", "alice")
        .set("auth.password", "audio-secret-pw")
        .start();
    let anonymous = ffprobe(&d.url(), "tcp");
    assert!(codecs(&anonymous).is_empty(), "{anonymous}");
    let with_password = d.url().replace("rtsp://", "rtsp://alice:audio-secret-pw@");
    assert_eq!(codecs(&ffprobe(&with_password, "tcp")), ["h264", "aac"]);
}
