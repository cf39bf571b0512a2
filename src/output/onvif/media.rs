//! The media service (`/onvif/media_service`): one profile per stream and rendition, its video
//! source and encoder configuration, and the URIs an NVR plays and snapshots from.

use super::audio::{self, AudioProfile};
use super::soap::{Fault, Request, Xml};
use super::{Onvif, Reached, base_url};

/// Operations implemented here.
pub const OPERATIONS: &[&str] = &[
    "GetProfiles",
    "GetProfile",
    "GetVideoSources",
    "GetVideoSourceConfigurations",
    "GetVideoEncoderConfigurations",
    "GetVideoEncoderConfiguration",
    "GetStreamUri",
    "GetSnapshotUri",
];

/// One encoding as a media profile.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaProfile {
    /// The encoding's name (stream or rendition); the profile token is `profile_<name>`.
    pub name: String,
    /// The camera (stream) it comes from: its video source.
    pub camera: String,
    /// RTSP mount path.
    pub mount: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Target bitrate.
    pub bitrate_kbps: u32,
    /// Frames between keyframes.
    pub gop: u32,
    /// ONVIF H.264 profile name: Baseline, Main or High.
    pub h264_profile: &'static str,
    /// The camera's own size (the video source's resolution).
    pub source_size: (u32, u32),
    /// The camera's microphone, when it has one (`[audio]`).
    pub audio: Option<AudioProfile>,
}

impl MediaProfile {
    fn token(&self) -> String {
        format!("profile_{}", self.name)
    }
    fn source_token(&self) -> String {
        format!("source_{}", self.camera)
    }
    fn source_config_token(&self) -> String {
        format!("source_config_{}", self.camera)
    }
    fn encoder_token(&self) -> String {
        format!("encoder_{}", self.name)
    }
}

fn source_configuration(x: &mut Xml, element: &str, p: &MediaProfile, use_count: usize) {
    x.node(
        element,
        &[("token", p.source_config_token().as_str())],
        |x| {
            x.leaf("tt:Name", &p.camera);
            x.leaf("tt:UseCount", &use_count.to_string());
            x.leaf("tt:SourceToken", &p.source_token());
            let (w, h) = (p.source_size.0.to_string(), p.source_size.1.to_string());
            x.node(
                "tt:Bounds",
                &[
                    ("x", "0"),
                    ("y", "0"),
                    ("width", w.as_str()),
                    ("height", h.as_str()),
                ],
                |_| {},
            );
        },
    );
}

fn encoder_configuration(x: &mut Xml, element: &str, p: &MediaProfile) {
    x.node(element, &[("token", p.encoder_token().as_str())], |x| {
        x.leaf("tt:Name", &p.name);
        x.leaf("tt:UseCount", "1");
        x.leaf("tt:Encoding", "H264");
        x.node("tt:Resolution", &[], |x| {
            x.leaf("tt:Width", &p.width.to_string());
            x.leaf("tt:Height", &p.height.to_string());
        });
        x.leaf("tt:Quality", "5");
        x.node("tt:RateControl", &[], |x| {
            x.leaf("tt:FrameRateLimit", &p.fps.to_string());
            x.leaf("tt:EncodingInterval", "1");
            x.leaf("tt:BitrateLimit", &p.bitrate_kbps.to_string());
        });
        x.node("tt:H264", &[], |x| {
            x.leaf("tt:GovLength", &p.gop.to_string());
            x.leaf("tt:H264Profile", p.h264_profile);
        });
        x.node("tt:Multicast", &[], |x| {
            x.node("tt:Address", &[], |x| {
                x.leaf("tt:Type", "IPv4");
                x.leaf("tt:IPv4Address", "0.0.0.0");
            });
            x.leaf("tt:Port", "0");
            x.leaf("tt:TTL", "1");
            x.leaf("tt:AutoStart", "false");
        });
        x.leaf("tt:SessionTimeout", "PT60S");
    });
}

fn profile(x: &mut Xml, element: &str, p: &MediaProfile, all: &[MediaProfile]) {
    let uses = all.iter().filter(|q| q.camera == p.camera).count();
    x.node(
        element,
        &[("token", p.token().as_str()), ("fixed", "true")],
        |x| {
            x.leaf("tt:Name", &p.name);
            // tt:Profile's sequence: video source, audio source, video encoder, audio encoder.
            source_configuration(x, "tt:VideoSourceConfiguration", p, uses);
            if p.audio.is_some() {
                audio::source_configuration(x, "tt:AudioSourceConfiguration", p, all);
            }
            encoder_configuration(x, "tt:VideoEncoderConfiguration", p);
            audio::encoder_configuration(x, "tt:AudioEncoderConfiguration", p, all);
        },
    );
}

fn by_token<'a>(
    all: &'a [MediaProfile],
    token: Option<&str>,
    of: fn(&MediaProfile) -> String,
    sub: &'static str,
    what: &str,
) -> Result<&'a MediaProfile, Fault> {
    let token = token.map(str::trim).unwrap_or_default();
    all.iter()
        .find(|p| of(p) == token)
        .ok_or_else(|| Fault::invalid_arg(sub, format!("no {what} with token {token:?}")))
}

fn uri(x: &mut Xml, element: &str, uri: &str) {
    x.node(element, &[], |x| {
        x.node("trt:MediaUri", &[], |x| {
            x.leaf("tt:Uri", uri);
            x.leaf("tt:InvalidAfterConnect", "false");
            x.leaf("tt:InvalidAfterReboot", "false");
            x.leaf("tt:Timeout", "PT0S");
        });
    });
}

/// Writes the answer to `req` if it is a media operation.
pub fn answer(o: &Onvif, req: &Request, at: &Reached, x: &mut Xml) -> Option<Result<(), Fault>> {
    let all = at.profiles;
    let result = match req.operation.as_str() {
        "GetProfiles" => {
            x.node("trt:GetProfilesResponse", &[], |x| {
                for p in all {
                    profile(x, "trt:Profiles", p, all);
                }
            });
            Ok(())
        }
        "GetProfile" => by_token(
            all,
            req.arg("ProfileToken"),
            MediaProfile::token,
            "ter:NoProfile",
            "profile",
        )
        .map(|p| {
            x.node("trt:GetProfileResponse", &[], |x| {
                profile(x, "trt:Profile", p, all)
            })
        }),
        "GetVideoSources" => {
            x.node("trt:GetVideoSourcesResponse", &[], |x| {
                let mut seen = Vec::new();
                for p in all.iter().filter(|p| {
                    let new = !seen.contains(&p.camera);
                    seen.push(p.camera.clone());
                    new
                }) {
                    x.node(
                        "trt:VideoSources",
                        &[("token", p.source_token().as_str())],
                        |x| {
                            x.leaf("tt:Framerate", &p.fps.to_string());
                            x.node("tt:Resolution", &[], |x| {
                                x.leaf("tt:Width", &p.source_size.0.to_string());
                                x.leaf("tt:Height", &p.source_size.1.to_string());
                            });
                        },
                    );
                }
            });
            Ok(())
        }
        "GetVideoSourceConfigurations" => {
            x.node("trt:GetVideoSourceConfigurationsResponse", &[], |x| {
                let mut seen = Vec::new();
                for p in all {
                    if !seen.contains(&p.camera) {
                        seen.push(p.camera.clone());
                        let uses = all.iter().filter(|q| q.camera == p.camera).count();
                        source_configuration(x, "trt:Configurations", p, uses);
                    }
                }
            });
            Ok(())
        }
        "GetVideoEncoderConfigurations" => {
            x.node("trt:GetVideoEncoderConfigurationsResponse", &[], |x| {
                for p in all {
                    encoder_configuration(x, "trt:Configurations", p);
                }
            });
            Ok(())
        }
        "GetVideoEncoderConfiguration" => by_token(
            all,
            req.arg("ConfigurationToken"),
            MediaProfile::encoder_token,
            "ter:NoConfig",
            "video encoder configuration",
        )
        .map(|p| {
            x.node("trt:GetVideoEncoderConfigurationResponse", &[], |x| {
                encoder_configuration(x, "trt:Configuration", p)
            })
        }),
        "GetStreamUri" => {
            let transport = req
                .get("Body/GetStreamUri/StreamSetup/Transport/Protocol")
                .unwrap_or("RTSP");
            if req.get("Body/GetStreamUri/StreamSetup/Stream") == Some("RTP-Multicast") {
                Err(Fault::invalid_arg(
                    "ter:InvalidStreamSetup",
                    "multicast is not offered through ONVIF; use RTP-Unicast",
                ))
            } else if !["RTSP", "TCP", "UDP"].contains(&transport) {
                Err(Fault::invalid_arg(
                    "ter:InvalidStreamSetup",
                    format!("transport {transport:?} is not offered; use RTSP"),
                ))
            } else {
                by_token(
                    all,
                    req.arg("ProfileToken"),
                    MediaProfile::token,
                    "ter:NoProfile",
                    "profile",
                )
                .map(|p| {
                    let u = format!("{}://{}:{}{}", o.rtsp_scheme, at.host, o.rtsp_port, p.mount);
                    uri(x, "trt:GetStreamUriResponse", &u)
                })
            }
        }
        "GetSnapshotUri" => by_token(
            all,
            req.arg("ProfileToken"),
            MediaProfile::token,
            "ter:NoProfile",
            "profile",
        )
        .map(|p| {
            let u = format!("{}/snapshot.jpg?stream={}", base_url(at), p.name);
            uri(x, "trt:GetSnapshotUriResponse", &u)
        }),
        _ => return None,
    };
    Some(result)
}
