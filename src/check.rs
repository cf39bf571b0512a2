//! `camstream check`: prints the effective configuration and probes everything it needs, so an
//! operator learns what is missing (and which Debian package provides it) before starting.

use std::path::Path;

use crate::config::{Config, SourceKind, StreamConfig};
use crate::stream::elements::{has_element, package_for};
use crate::stream::encoder;
use crate::stream::source::{self, Source};

/// One line of the report.
struct Finding {
    ok: bool,
    what: String,
    detail: String,
}

/// Runs every probe, prints the report to stdout, and returns whether all passed.
pub fn run(config: &Config) -> bool {
    match toml::to_string_pretty(&config.redacted()) {
        Ok(t) => println!("# Effective configuration\n{t}"),
        Err(e) => println!("# Effective configuration could not be printed: {e}"),
    }
    let streams = config.streams().unwrap_or_default();
    for s in &streams {
        match s.level() {
            Ok(l) if s.encoder.level.is_empty() => {
                println!("# {}: H.264 level {l} (derived)", s.name)
            }
            Ok(l) => println!("# {}: H.264 level {l} (configured)", s.name),
            Err(_) => {}
        }
    }
    println!();
    let mut findings = probe(config);
    for s in &streams {
        findings.extend(probe_stream(s));
        // No connection is made: URL, secret and elements only.
        findings.extend(crate::output::push::check(s).into_iter().map(|c| Finding {
            ok: c.ok,
            what: c.what,
            detail: c.detail,
        }));
    }
    let nvr = crate::hooks::check(&config.hooks)
        .into_iter()
        .chain(crate::analysis::check(&config.analysis))
        .chain(crate::output::onvif::discovery::check(&config.onvif));
    findings.extend(nvr.map(|(ok, what, detail)| Finding { ok, what, detail }));
    println!("# Checks");
    for f in &findings {
        let mark = match (f.ok, f.detail.starts_with(WARN)) {
            (false, _) => "FAIL",
            (true, true) => "warn",
            (true, false) => "ok  ",
        };
        println!("{mark} {}: {}", f.what, f.detail);
    }
    let failed = findings.iter().filter(|f| !f.ok).count();
    if failed == 0 {
        println!("all {} checks passed", findings.len());
    } else {
        println!("{failed} of {} checks failed", findings.len());
    }
    failed == 0
}

/// Frames `check` captures from a camera, and how long it waits for them.
const CAPTURE_FRAMES: u32 = 3;
const CAPTURE_WITHIN: std::time::Duration = std::time::Duration::from_secs(4);

/// Detail prefix of a finding that passes with a warning (printed as `warn`).
const WARN: &str = "software fallback: ";

/// The image settings of a stream: what carries each, software fallbacks as warnings, and
/// settings nothing can honour as failures.
fn image_findings(stream: &StreamConfig) -> Vec<Finding> {
    use crate::stream::image::{self, Caps};
    let name = &stream.name;
    let caps = match stream.source.kind {
        SourceKind::Test | SourceKind::Pipeline => Caps::SoftwareOnly {
            source: if stream.source.kind == SourceKind::Test {
                "test pattern".into()
            } else {
                "pipeline fragment".into()
            },
        },
        _ => match source::resolve(&stream.source) {
            Ok(s) => image::probe(&s),
            // The camera finding already says why.
            Err(_) => return Vec::new(),
        },
    };
    match image::plan::plan(&stream.image, &caps) {
        Err(e) => {
            e.0.into_iter()
                .map(|m| Finding {
                    ok: false,
                    what: format!("{name}: image"),
                    detail: m,
                })
                .collect()
        }
        Ok(p) => {
            let mut out: Vec<Finding> = p
                .warnings
                .iter()
                .map(|w| Finding {
                    ok: true,
                    what: format!("{name}: image"),
                    detail: format!("{WARN}{w}"),
                })
                .collect();
            if !p.uses.is_empty() {
                let list: Vec<String> = p
                    .uses
                    .iter()
                    .map(|u| format!("{} by {}", u.setting, u.backend.as_str()))
                    .collect();
                let software = p.uses.iter().any(|u| u.backend == image::Backend::Software);
                out.push(Finding {
                    ok: true,
                    what: format!("{name}: image"),
                    detail: if software && p.warnings.is_empty() {
                        format!(
                            "{WARN}{} (this source has no camera controls; costs CPU)",
                            list.join(", ")
                        )
                    } else {
                        list.join(", ")
                    },
                });
            }
            out
        }
    }
}

fn element(name: &str) -> Finding {
    let ok = has_element(name);
    Finding {
        ok,
        what: format!("element {name}"),
        detail: if ok {
            "present".into()
        } else {
            format!("missing (install Debian package {})", package_for(name))
        },
    }
}

/// Whether a TCP port can be bound now.
fn port(what: &str, addr: std::net::SocketAddr) -> Finding {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Finding {
            ok: true,
            what: what.into(),
            detail: format!("{addr} is free"),
        },
        Err(e) => Finding {
            ok: false,
            what: what.into(),
            detail: format!("{addr} cannot be bound: {e}"),
        },
    }
}

fn probe(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    out.push(port(
        "rtsp.port",
        std::net::SocketAddr::new(config.rtsp.address, config.rtsp.port),
    ));
    if config.http.enabled {
        out.push(port(
            "http.port",
            std::net::SocketAddr::new(config.http.address, config.http.port),
        ));
    }
    for name in ["appsrc", "appsink", "h264parse", "rtph264pay"] {
        out.push(element(name));
    }
    out
}

/// Probes one stream: its source elements and camera, and its encoder with a test encode.
fn probe_stream(stream: &StreamConfig) -> Vec<Finding> {
    let name = &stream.name;
    let mut out = Vec::new();
    let src = &stream.source;
    let mut opened = None;
    match src.kind {
        SourceKind::Test => out.push(element("videotestsrc")),
        SourceKind::Libcamera => out.push(element("libcamerasrc")),
        SourceKind::V4l2 => {
            out.push(element("v4l2src"));
            out.extend(["videoconvert", "videoscale", "videorate"].map(element));
        }
        SourceKind::Pipeline => {
            out.extend(["videoconvert", "videoscale", "videorate"].map(element));
        }
        SourceKind::Auto => {}
    }
    if !stream.renditions.is_empty() {
        out.extend(["tee", "queue", "videoscale", "videorate"].map(element));
    }
    // Always in the capture (passthrough at defaults) so flips and balance change live.
    out.extend(["videoflip", "videobalance"].map(element));
    out.push(match src.kind {
        SourceKind::Test => Finding {
            ok: true,
            what: format!("{name}: camera"),
            detail: "none needed: streaming a TEST PATTERN".into(),
        },
        // Only the source part: a board without x264 must not fail a check of its camera.
        SourceKind::Pipeline => {
            let d = format!(
                "{} ! fakesink",
                source::describe(
                    &Source::Pipeline {
                        fragment: src.pipeline.clone(),
                    },
                    &stream.video
                )
            );
            match gst::parse::launch_full(&d, None, gst::ParseFlags::FATAL_ERRORS) {
                Ok(_) => Finding {
                    ok: true,
                    what: format!("{name}: source pipeline"),
                    detail: "parses".into(),
                },
                Err(e) => Finding {
                    ok: false,
                    what: format!("{name}: source pipeline"),
                    detail: format!("{e} (pipeline: {d})"),
                },
            }
        }
        SourceKind::V4l2 if !src.device.is_empty() => {
            let present = Path::new(&src.device).exists();
            if present {
                opened = Some(Source::V4l2 {
                    device: src.device.clone(),
                });
            }
            Finding {
                ok: present,
                what: format!("{name}: camera device"),
                detail: if present {
                    format!("{} present", src.device)
                } else {
                    format!("{} does not exist", src.device)
                },
            }
        }
        _ => match source::resolve(src) {
            Ok(s) => {
                let detail = format!("found {s}");
                opened = Some(s);
                Finding {
                    ok: true,
                    what: format!("{name}: camera"),
                    detail,
                }
            }
            Err(e) => Finding {
                ok: false,
                what: format!("{name}: camera"),
                detail: e.to_string(),
            },
        },
    });
    // A camera that lists may still not stream (no buffers, busy): capture a few frames.
    if let Some(s) = opened {
        out.push(
            match source::test_capture(&s, &stream.video, CAPTURE_FRAMES, CAPTURE_WITHIN) {
                Ok(()) => Finding {
                    ok: true,
                    what: format!("{name}: capture"),
                    detail: format!("{CAPTURE_FRAMES} frames from {s}"),
                },
                Err(e) => Finding {
                    ok: false,
                    what: format!("{name}: capture"),
                    detail: e,
                },
            },
        );
    }
    out.extend(image_findings(stream));
    match encoder::select(stream) {
        Ok(sel) => {
            let enc = sel.encoder;
            out.push(Finding {
                ok: true,
                what: format!("{name}: encoder {}", enc.element()),
                detail: sel.reason(),
            });
            out.push(match encoder::test_encode(stream, enc) {
                Ok(()) => Finding {
                    ok: true,
                    what: format!("{name}: test encode"),
                    detail: format!(
                        "5 frames at {}x{} through {}",
                        stream.video.width,
                        stream.video.height,
                        enc.element()
                    ),
                },
                Err(e) => Finding {
                    ok: false,
                    what: format!("{name}: test encode"),
                    detail: e,
                },
            });
            if let Some(c) = encoder::caveats(stream, enc) {
                out.push(Finding {
                    ok: true,
                    what: format!("{name}: note"),
                    detail: c,
                });
            }
        }
        Err(e) => out.push(Finding {
            ok: false,
            what: format!("{name}: encoder"),
            detail: e.to_string(),
        }),
    }
    out
}
