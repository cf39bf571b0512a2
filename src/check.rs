//! `camstream check`: prints the effective configuration and probes everything it needs, so an
//! operator learns what is missing (and which Debian package provides it) before starting.

use std::path::Path;

use crate::config::{Config, SourceKind};
use crate::stream::capture::{self, Encoder, Source, has_element, package_for};

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
    match config.effective_level() {
        Ok(l) if config.encoder.level.is_empty() => println!("# H.264 level {l} (derived)\n"),
        Ok(l) => println!("# H.264 level {l} (configured)\n"),
        Err(_) => {}
    }
    let findings = probe(config);
    println!("# Checks");
    for f in &findings {
        let mark = if f.ok { "ok  " } else { "FAIL" };
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
    let src = &config.source;
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
    out.push(match src.kind {
        SourceKind::Test => Finding {
            ok: true,
            what: "camera".into(),
            detail: "none needed: streaming a TEST PATTERN".into(),
        },
        SourceKind::Pipeline => {
            let d = capture::describe(
                config,
                &Source::Pipeline {
                    fragment: src.pipeline.clone(),
                },
                Encoder::X264,
            );
            match capture::build(&d) {
                Ok(_) => Finding {
                    ok: true,
                    what: "source pipeline".into(),
                    detail: "parses".into(),
                },
                Err(e) => Finding {
                    ok: false,
                    what: "source pipeline".into(),
                    detail: e.to_string(),
                },
            }
        }
        SourceKind::V4l2 if !src.device.is_empty() => Finding {
            ok: Path::new(&src.device).exists(),
            what: "camera device".into(),
            detail: if Path::new(&src.device).exists() {
                format!("{} present", src.device)
            } else {
                format!("{} does not exist", src.device)
            },
        },
        _ => match capture::resolve_source(config) {
            Ok(s) => Finding {
                ok: true,
                what: "camera".into(),
                detail: format!("found {s}"),
            },
            Err(e) => Finding {
                ok: false,
                what: "camera".into(),
                detail: e.to_string(),
            },
        },
    });
    match capture::select_encoder(config) {
        Ok((enc, why)) => {
            out.push(Finding {
                ok: true,
                what: format!("encoder {}", enc.element()),
                detail: why,
            });
            out.push(match capture::test_encode(config, enc) {
                Ok(()) => Finding {
                    ok: true,
                    what: "test encode".into(),
                    detail: format!(
                        "5 frames at {}x{} through {}",
                        config.video.width,
                        config.video.height,
                        enc.element()
                    ),
                },
                Err(e) => Finding {
                    ok: false,
                    what: "test encode".into(),
                    detail: e,
                },
            });
        }
        Err(e) => out.push(Finding {
            ok: false,
            what: "encoder".into(),
            detail: e.to_string(),
        }),
    }
    out
}
