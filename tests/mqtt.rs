//! MQTT against a real broker (Debian's mosquitto, on a free loopback port with a temporary
//! configuration and password file), watched with `mosquitto_sub`: Home Assistant discovery
//! retained with the fields HA requires, switches applied through the control path and refused
//! for a role that may not change settings, the last will on `kill -9`, and a broker that dies
//! for 10 s while RTSP viewers keep every frame and the client comes back by itself.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, Proto, Viewer, daemon, free_port, http_request, wait_until};

const USER: &str = "cam";
const PASSWORD: &str = "s3cret pw";
const CLIENT: &str = "camtest";
const BASE: &str = "camstream/camtest";

/// A mosquitto broker on loopback, killed on drop.
struct Broker {
    child: Option<Child>,
    port: u16,
    config: PathBuf,
}

impl Broker {
    /// Starts a broker that asks for `USER`/`PASSWORD`.
    fn start(dir: &Path) -> Broker {
        Self::start_with(dir, "")
    }

    /// [`Broker::start`] with more lines for the listener (TLS).
    fn start_with(dir: &Path, listener: &str) -> Broker {
        let passwd = dir.join("passwd");
        let ok = Command::new("mosquitto_passwd")
            .args(["-c", "-b"])
            .arg(&passwd)
            .args([USER, PASSWORD])
            .status()
            .expect("mosquitto_passwd runs (scripts/setup.sh --test installs mosquitto)");
        assert!(ok.success());
        let port = free_port();
        // `user root`: a broker started as root keeps it (files in the 0700 temporary folder
        // stay readable); started as anyone else, the line does nothing.
        let config = dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "user root\nlistener {port} 127.0.0.1\n{listener}allow_anonymous false\npassword_file {}\npersistence false\n",
                passwd.display()
            ),
        )
        .unwrap();
        let mut b = Broker {
            child: None,
            port,
            config,
        };
        b.restart();
        b
    }

    /// Starts (again) the broker process on the same port.
    fn restart(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto runs (scripts/setup.sh --test installs it)");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(10), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            }),
            "mosquitto did not listen on {port}"
        );
    }

    /// SIGKILL: no goodbye to anyone.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Messages on `topic` (a filter), as (retained, topic, payload), until `count` arrived or
    /// `secs` passed.
    fn sub(&self, topic: &str, count: usize, secs: u32) -> Vec<(bool, String, String)> {
        let out = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-u", USER, "-P", PASSWORD, "-t", topic])
            .args(["-C", &count.to_string(), "-W", &secs.to_string()])
            .args(["-F", "%r\t%t\t%p"])
            .output()
            .expect("mosquitto_sub runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut p = l.splitn(3, '\t');
                Some((
                    p.next()? == "1",
                    p.next()?.to_string(),
                    p.next()?.to_string(),
                ))
            })
            .collect()
    }

    /// The retained payload of `topic`, if one is there within `secs`.
    fn retained(&self, topic: &str, secs: u32) -> Option<String> {
        self.sub(topic, 1, secs)
            .into_iter()
            .find(|(r, _, _)| *r)
            .map(|(_, _, p)| p)
    }

    fn publish(&self, topic: &str, payload: &str) {
        let ok = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-u", USER, "-P", PASSWORD, "-t", topic, "-m", payload])
            .status()
            .expect("mosquitto_pub runs");
        assert!(ok.success());
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start(broker: &Broker, dir: &Path, role: &str) -> Daemon {
    let d = daemon()
        .set("mqtt.url", format!("mqtt://127.0.0.1:{}", broker.port))
        .set("mqtt.username", USER)
        .set("mqtt.password", PASSWORD)
        .set("mqtt.client_id", CLIENT)
        .set("mqtt.role", role)
        .set("mqtt.state_interval_s", 1)
        .set("record.path", dir.join("rec").display())
        .start();
    assert!(
        d.wait_log("MQTT connected", Duration::from_secs(10)),
        "no MQTT connection:\n{}",
        d.log()
    );
    d
}

fn recording_enabled(d: &Daemon) -> bool {
    let r = http_request(d.http_port, "GET", "/api/v1/streams/video", &[], b"");
    r.json()["settings"]["record"]["enabled"] == true
}

/// Discovery is retained and complete; `online` is retained; an operator's switch turns
/// recording on through the control path (the API shows it), and the state topic follows.
#[test]
fn discovery_is_retained_and_a_switch_changes_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let d = start(&broker, dir.path(), "operator");
    assert_eq!(
        broker
            .retained(&format!("{BASE}/availability"), 5)
            .as_deref(),
        Some("online")
    );
    let configs = broker.sub("homeassistant/#", 7, 10);
    assert_eq!(configs.len(), 7, "{configs:?}");
    let mut components = Vec::new();
    for (retained, topic, payload) in &configs {
        assert!(retained, "{topic} is not retained");
        let v: serde_json::Value = serde_json::from_str(payload).unwrap();
        let component = topic.split('/').nth(1).unwrap().to_string();
        for key in ["unique_id", "name", "availability_topic", "device"] {
            assert!(!v[key].is_null(), "{topic} lacks {key}: {v}");
        }
        assert_eq!(v["device"]["identifiers"][0], CLIENT, "{v}");
        assert!(v["device"]["sw_version"].is_string(), "{v}");
        match component.as_str() {
            "binary_sensor" => {
                assert_eq!(v["device_class"], "motion");
                assert_eq!(v["state_topic"], format!("{BASE}/video/motion"));
                assert_eq!(
                    (&v["payload_on"], &v["payload_off"]),
                    (&"ON".into(), &"OFF".into())
                );
            }
            "image" => {
                assert_eq!(v["content_type"], "image/jpeg");
                assert_eq!(v["image_topic"], format!("{BASE}/video/picture"));
            }
            "switch" => {
                assert!(
                    v["command_topic"].as_str().unwrap().ends_with("/set"),
                    "{v}"
                );
                assert!(
                    v["state_topic"].is_string() && v["payload_on"] == "ON",
                    "{v}"
                );
            }
            "sensor" => assert!(v["state_topic"].is_string(), "{v}"),
            other => panic!("unexpected component {other}"),
        }
        components.push(component);
    }
    components.sort();
    assert_eq!(
        components,
        [
            "binary_sensor",
            "image",
            "sensor",
            "sensor",
            "sensor",
            "switch",
            "switch"
        ]
    );
    // The state sensors publish, measured.
    // Announced on connection, then every state_interval_s, retained.
    assert!(wait_until(Duration::from_secs(5), || {
        broker
            .retained(&format!("{BASE}/video/state"), 2)
            .as_deref()
            == Some("streaming")
    }));
    let fps = broker.sub(&format!("{BASE}/video/fps"), 1, 5);
    assert!(
        fps.first()
            .and_then(|(_, _, p)| p.parse::<f64>().ok())
            .is_some_and(|f| f > 5.0),
        "{fps:?}"
    );

    assert!(!recording_enabled(&d));
    assert_eq!(
        broker
            .retained(&format!("{BASE}/video/recording"), 5)
            .as_deref(),
        Some("OFF")
    );
    broker.publish(&format!("{BASE}/video/recording/set"), "ON");
    assert!(
        wait_until(Duration::from_secs(5), || recording_enabled(&d)),
        "the switch did not turn recording on:\n{}",
        d.log()
    );
    assert!(wait_until(Duration::from_secs(5), || {
        broker
            .retained(&format!("{BASE}/video/recording"), 2)
            .as_deref()
            == Some("ON")
    }));
    assert_eq!(
        d.metric("camstream_mqtt_commands_total{result=\"ok\"}"),
        Some(1.0)
    );
}

/// A broker whose commands have the viewer role may watch but not switch: refused, counted,
/// and the switch's state says it is still off.
#[test]
fn a_viewer_role_cannot_switch() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let d = start(&broker, dir.path(), "viewer");
    broker.publish(&format!("{BASE}/video/recording/set"), "ON");
    assert!(
        wait_until(Duration::from_secs(5), || {
            d.metric("camstream_mqtt_commands_total{result=\"refused\"}") == Some(1.0)
        }),
        "the command was not refused:\n{}",
        d.log()
    );
    assert!(!recording_enabled(&d));
    assert_eq!(
        broker
            .retained(&format!("{BASE}/video/recording"), 5)
            .as_deref(),
        Some("OFF")
    );
    assert!(d.log().contains("MQTT command refused"), "{}", d.log());
}

/// `kill -9` of camstream: the broker publishes the last will, availability `offline`.
#[test]
fn kill_9_makes_availability_offline() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut d = start(&broker, dir.path(), "operator");
    let topic = format!("{BASE}/availability");
    assert_eq!(broker.retained(&topic, 5).as_deref(), Some("online"));
    d.signal("KILL");
    assert!(d.wait_exit(Duration::from_secs(5)).is_some());
    assert!(
        wait_until(Duration::from_secs(5), || {
            broker.retained(&topic, 1).as_deref() == Some("offline")
        }),
        "no last will"
    );
}

/// The broker dies for 10 s: the RTSP viewer keeps every frame, and MQTT comes back by itself
/// and says `online` again (the restarted broker forgot everything retained).
#[test]
fn a_dead_broker_never_touches_streaming_and_mqtt_comes_back() {
    common::gst_init();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    let d = start(&broker, dir.path(), "operator");
    let viewer = Viewer::start(&d.url(), Proto::Tcp);
    assert!(viewer.wait_frames(15, Duration::from_secs(15)), "no frames");
    let since = Instant::now();
    let before = viewer.frames();
    broker.kill();
    assert!(
        wait_until(Duration::from_secs(5), || {
            d.metric("camstream_mqtt_connected") == Some(0.0)
        }),
        "the loss was not noticed"
    );
    // The outage itself is the scenario: 10 s without a broker, events still happening.
    std::thread::sleep(Duration::from_secs(10) - since.elapsed().min(Duration::from_secs(10)));
    let frames = viewer.frames() - before;
    let gap = viewer.max_gap_since(since);
    assert!(frames >= 100, "only {frames} frames in 10 s at 15 fps");
    assert!(
        gap < Duration::from_millis(700),
        "a {gap:?} gap while the broker was down"
    );
    broker.restart();
    assert!(
        wait_until(Duration::from_secs(10), || {
            broker
                .retained(&format!("{BASE}/availability"), 1)
                .as_deref()
                == Some("online")
        }),
        "MQTT did not come back:\n{}",
        d.log()
    );
    assert_eq!(d.metric("camstream_mqtt_connected"), Some(1.0));
    assert!(!viewer.errored());
}

/// A `mosquitto_sub` left running on `topic`: every message with the instant it arrived.
struct Watcher {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
}

impl Watcher {
    fn start(broker: &Broker, topic: &str) -> Watcher {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-u", USER, "-P", PASSWORD, "-t", topic, "-F", "%p"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub runs");
        let out = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                l2.lock().unwrap().push((Instant::now(), line));
            }
        });
        Watcher { child, lines }
    }

    /// When `payload` first arrived after `since`.
    fn first(&self, payload: &str, since: Instant) -> Option<Instant> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|(t, p)| *t >= since && p == payload)
            .map(|(t, _)| *t)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scene whose ball moves from 4 s for 2 s, then stands still: the motion binary_sensor says
/// ON within 1 s of the ball's first frame and OFF after the scene calms; the motion detection
/// switch then turns detection off (the API's status shows it).
#[test]
fn motion_on_within_a_second_then_off_and_the_switch_turns_detection_off() {
    const FPS: u64 = 10;
    const BALL_FRAME: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let t0 = Instant::now();
    let watcher = Watcher::start(&broker, &format!("{BASE}/video/motion"));
    let scene = format!(
        "videotestsrc is-live=true pattern=black ! video/x-raw,width=320,height=180,framerate={FPS}/1 ! c. \
         videotestsrc pattern=ball timestamp-offset={}000000000 num-buffers=20 ! video/x-raw,width=320,height=180,framerate={FPS}/1 ! c. \
         compositor name=c background=black",
        BALL_FRAME / FPS
    );
    let d = daemon()
        .set("source.kind", "pipeline")
        .set("source.pipeline", scene)
        .set("video.width", 320)
        .set("video.height", 180)
        .set("video.fps", FPS)
        .set("encoder.keyframe_interval", FPS)
        .set("motion.enabled", true)
        .set("motion.cooldown_ms", 1000)
        .set("mqtt.url", format!("mqtt://127.0.0.1:{}", broker.port))
        .set("mqtt.username", USER)
        .set("mqtt.password", PASSWORD)
        .set("mqtt.client_id", CLIENT)
        .start();
    let stream = || d.get("/api/v1/streams/video").json();
    // The encoded-frame count tells when the ball's first frame left the camera.
    let mut first_ball = None;
    assert!(
        wait_until(Duration::from_secs(15), || {
            if stream()["frames"]["encoded"].as_u64().unwrap_or(0) > BALL_FRAME {
                first_ball = Some(Instant::now());
            }
            first_ball.is_some()
        }),
        "the scene did not run:\n{}",
        d.log()
    );
    let first_ball = first_ball.unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || watcher.first("ON", t0).is_some()),
        "no motion ON:\n{}",
        d.log()
    );
    let on = watcher.first("ON", t0).unwrap();
    let latency = on.saturating_duration_since(first_ball);
    eprintln!(
        "figures: MQTT motion ON {} ms after the ball's first frame was encoded",
        latency.as_millis()
    );
    assert!(latency < Duration::from_secs(1), "ON after {latency:?}");
    assert!(
        wait_until(Duration::from_secs(10), || watcher
            .first("OFF", on)
            .is_some()),
        "no motion OFF after the scene calmed:\n{}",
        d.log()
    );
    // The last event's picture is retained for Home Assistant's image entity.
    let pic = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args([
            "-u",
            USER,
            "-P",
            PASSWORD,
            "-t",
            &format!("{BASE}/video/picture"),
        ])
        .args(["-C", "1", "-W", "5", "-N"])
        .output()
        .unwrap();
    assert_eq!(pic.stdout.get(..2), Some(&[0xff, 0xd8][..]), "not a JPEG");

    assert_eq!(stream()["motion"]["enabled"], true);
    broker.publish(&format!("{BASE}/video/motion_detection/set"), "OFF");
    assert!(
        wait_until(Duration::from_secs(10), || stream()["motion"]["enabled"]
            == false),
        "the switch did not turn detection off:\n{}",
        d.log()
    );
    assert!(wait_until(Duration::from_secs(5), || {
        broker
            .retained(&format!("{BASE}/video/motion_detection"), 2)
            .as_deref()
            == Some("OFF")
    }));
}

/// `mqtts://` with the broker's authority in `mqtt.ca_file`: camstream connects over TLS
/// (OpenSSL, through native-tls) and says `online`; without the authority it does not.
#[test]
fn mqtts_with_the_brokers_authority_connects() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(ok.success());
    let broker = Broker::start_with(
        dir.path(),
        &format!("certfile {}\nkeyfile {}\n", cert.display(), key.display()),
    );
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let d = daemon()
        .set("mqtt.url", &url)
        .set("mqtt.username", USER)
        .set("mqtt.password", PASSWORD)
        .set("mqtt.client_id", CLIENT)
        .set("mqtt.ca_file", cert.display())
        .start();
    assert!(
        d.wait_log("MQTT connected", Duration::from_secs(10)),
        "no TLS connection:\n{}",
        d.log()
    );
    // The system's authorities do not know this one: no connection, streaming unaffected.
    let untrusted = daemon()
        .set("mqtt.url", &url)
        .set("mqtt.username", USER)
        .set("mqtt.password", PASSWORD)
        .set("mqtt.client_id", "other")
        .start();
    assert!(!untrusted.wait_log("MQTT connected", Duration::from_secs(3)));
    assert_eq!(untrusted.metric("camstream_mqtt_connected"), Some(0.0));
    assert_eq!(d.metric("camstream_mqtt_connected"), Some(1.0));
}
