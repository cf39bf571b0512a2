//! A camera's microphone in the media service: its audio source, the source configuration and
//! the AAC encoder configuration that its profiles carry, and the operations that list them.
//! Profile S only names G.711, G.726 and AAC: a stream whose RTSP track is Opus
//! (`audio.rtsp_codec = "opus"`) shows its audio source but no encoder configuration.

use super::media::MediaProfile;
use super::soap::{Fault, Request, Xml};

/// Operations implemented here.
pub const OPERATIONS: &[&str] = &[
    "GetAudioSources",
    "GetAudioSourceConfigurations",
    "GetAudioSourceConfiguration",
    "GetCompatibleAudioSourceConfigurations",
    "GetAudioEncoderConfigurations",
    "GetAudioEncoderConfiguration",
    "GetCompatibleAudioEncoderConfigurations",
    "GetAudioEncoderConfigurationOptions",
];

/// A stream's audio, as its profiles describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioProfile {
    /// Channels captured (1 or 2).
    pub channels: u32,
    /// Sample rate in Hz.
    pub rate_hz: u32,
    /// The RTSP track's AAC bitrate in kbit/s; `None` when the track is Opus, which ONVIF's
    /// Profile S cannot name.
    pub aac_kbps: Option<u32>,
}

fn source_token(p: &MediaProfile) -> String {
    format!("audio_source_{}", p.camera)
}

fn source_config_token(p: &MediaProfile) -> String {
    format!("audio_source_config_{}", p.camera)
}

fn encoder_token(p: &MediaProfile) -> String {
    format!("audio_encoder_{}", p.camera)
}

/// How many profiles use the camera's audio configurations.
fn uses(p: &MediaProfile, all: &[MediaProfile]) -> usize {
    all.iter()
        .filter(|q| q.camera == p.camera && q.audio.is_some())
        .count()
}

/// The profiles with audio, one per camera (the configurations are the camera's, shared by its
/// renditions).
fn cameras(all: &[MediaProfile]) -> Vec<&MediaProfile> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for p in all.iter().filter(|p| p.audio.is_some()) {
        if !seen.contains(&p.camera.as_str()) {
            seen.push(&p.camera);
            out.push(p);
        }
    }
    out
}

/// Writes the audio source configuration of `p`'s camera as `element`.
pub fn source_configuration(x: &mut Xml, element: &str, p: &MediaProfile, all: &[MediaProfile]) {
    x.node(
        element,
        &[("token", source_config_token(p).as_str())],
        |x| {
            x.leaf("tt:Name", &format!("{} microphone", p.camera));
            x.leaf("tt:UseCount", &uses(p, all).to_string());
            x.leaf("tt:SourceToken", &source_token(p));
        },
    );
}

/// Writes the AAC encoder configuration of `p`'s camera as `element`; nothing when its track is
/// not AAC.
pub fn encoder_configuration(x: &mut Xml, element: &str, p: &MediaProfile, all: &[MediaProfile]) {
    let Some((a, kbps)) = p.audio.as_ref().and_then(|a| a.aac_kbps.map(|k| (a, k))) else {
        return;
    };
    x.node(element, &[("token", encoder_token(p).as_str())], |x| {
        x.leaf("tt:Name", &format!("{} AAC", p.camera));
        x.leaf("tt:UseCount", &uses(p, all).to_string());
        x.leaf("tt:Encoding", "AAC");
        // Profile S counts the bitrate in kbit/s and the sample rate in kHz.
        x.leaf("tt:Bitrate", &kbps.to_string());
        x.leaf("tt:SampleRate", &(a.rate_hz / 1000).to_string());
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

fn has_encoder(p: &MediaProfile) -> bool {
    p.audio.as_ref().is_some_and(|a| a.aac_kbps.is_some())
}

/// The camera whose configuration has `token` (as named by `of`), among those with audio.
fn by_token<'a>(
    all: &'a [MediaProfile],
    token: Option<&str>,
    of: fn(&MediaProfile) -> String,
    what: &str,
) -> Result<&'a MediaProfile, Fault> {
    let token = token.map(str::trim).unwrap_or_default();
    all.iter()
        .filter(|p| p.audio.is_some())
        .find(|p| of(p) == token)
        .ok_or_else(|| {
            Fault::invalid_arg("ter:NoConfig", format!("no {what} with token {token:?}"))
        })
}

/// The profile named by the request's `ProfileToken`.
fn profile<'a>(all: &'a [MediaProfile], req: &Request) -> Result<&'a MediaProfile, Fault> {
    let token = req.arg("ProfileToken").map(str::trim).unwrap_or_default();
    all.iter()
        .find(|p| format!("profile_{}", p.name) == token)
        .ok_or_else(|| {
            Fault::invalid_arg("ter:NoProfile", format!("no profile with token {token:?}"))
        })
}

fn options(x: &mut Xml, ps: &[&MediaProfile]) {
    x.node(
        "trt:GetAudioEncoderConfigurationOptionsResponse",
        &[],
        |x| {
            x.node("trt:Options", &[], |x| {
                for p in ps {
                    let Some(a) = &p.audio else { continue };
                    let Some(kbps) = a.aac_kbps else { continue };
                    // The encoding is fixed by the configuration file: one option, as it runs.
                    x.node("tt:Options", &[], |x| {
                        x.leaf("tt:Encoding", "AAC");
                        x.node("tt:BitrateList", &[], |x| {
                            x.leaf("tt:Items", &kbps.to_string())
                        });
                        x.node("tt:SampleRateList", &[], |x| {
                            x.leaf("tt:Items", &(a.rate_hz / 1000).to_string())
                        });
                    });
                }
            });
        },
    );
}

/// Writes the answer to `req` if it is an audio operation; `all` are the profiles the caller
/// may see.
pub fn answer(req: &Request, all: &[MediaProfile], x: &mut Xml) -> Option<Result<(), Fault>> {
    let result = match req.operation.as_str() {
        "GetAudioSources" => {
            x.node("trt:GetAudioSourcesResponse", &[], |x| {
                for p in cameras(all) {
                    let channels = p.audio.as_ref().map_or(1, |a| a.channels);
                    x.node(
                        "trt:AudioSources",
                        &[("token", source_token(p).as_str())],
                        |x| x.leaf("tt:Channels", &channels.to_string()),
                    );
                }
            });
            Ok(())
        }
        "GetAudioSourceConfigurations" => {
            x.node("trt:GetAudioSourceConfigurationsResponse", &[], |x| {
                for p in cameras(all) {
                    source_configuration(x, "trt:Configurations", p, all);
                }
            });
            Ok(())
        }
        "GetAudioSourceConfiguration" => by_token(
            all,
            req.arg("ConfigurationToken"),
            source_config_token,
            "audio source configuration",
        )
        .map(|p| {
            x.node("trt:GetAudioSourceConfigurationResponse", &[], |x| {
                source_configuration(x, "trt:Configuration", p, all)
            })
        }),
        "GetCompatibleAudioSourceConfigurations" => profile(all, req).map(|p| {
            x.node(
                "trt:GetCompatibleAudioSourceConfigurationsResponse",
                &[],
                |x| {
                    if p.audio.is_some() {
                        source_configuration(x, "trt:Configurations", p, all);
                    }
                },
            )
        }),
        "GetAudioEncoderConfigurations" => {
            x.node("trt:GetAudioEncoderConfigurationsResponse", &[], |x| {
                for p in cameras(all) {
                    encoder_configuration(x, "trt:Configurations", p, all);
                }
            });
            Ok(())
        }
        "GetAudioEncoderConfiguration" => all
            .iter()
            .filter(|p| has_encoder(p))
            .find(|p| {
                Some(encoder_token(p).as_str()) == req.arg("ConfigurationToken").map(str::trim)
            })
            .ok_or_else(|| {
                Fault::invalid_arg(
                    "ter:NoConfig",
                    format!(
                        "no audio encoder configuration with token {:?}",
                        req.arg("ConfigurationToken").unwrap_or_default()
                    ),
                )
            })
            .map(|p| {
                x.node("trt:GetAudioEncoderConfigurationResponse", &[], |x| {
                    encoder_configuration(x, "trt:Configuration", p, all)
                })
            }),
        "GetCompatibleAudioEncoderConfigurations" => profile(all, req).map(|p| {
            x.node(
                "trt:GetCompatibleAudioEncoderConfigurationsResponse",
                &[],
                |x| encoder_configuration(x, "trt:Configurations", p, all),
            )
        }),
        "GetAudioEncoderConfigurationOptions" => {
            // Either token narrows the options to one camera; neither lists every camera's.
            let config = req.arg("ConfigurationToken").map(str::trim);
            let by_profile = req.arg("ProfileToken").map(str::trim);
            let chosen: Result<Vec<&MediaProfile>, Fault> = match (config, by_profile) {
                (Some(t), _) if !t.is_empty() => all
                    .iter()
                    .filter(|p| has_encoder(p))
                    .find(|p| encoder_token(p) == t)
                    .map(|p| vec![p])
                    .ok_or_else(|| {
                        Fault::invalid_arg(
                            "ter:NoConfig",
                            format!("no audio encoder configuration with token {t:?}"),
                        )
                    }),
                (_, Some(t)) if !t.is_empty() => profile(all, req).map(|p| vec![p]),
                _ => Ok(cameras(all)),
            };
            chosen.map(|ps| options(x, &ps))
        }
        _ => return None,
    };
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(name: &str, camera: &str, audio: Option<AudioProfile>) -> MediaProfile {
        MediaProfile {
            name: name.into(),
            camera: camera.into(),
            mount: format!("/{name}"),
            width: 640,
            height: 480,
            fps: 30,
            bitrate_kbps: 1000,
            gop: 30,
            h264_profile: "Baseline",
            source_size: (640, 480),
            audio,
        }
    }

    fn run(op: &str, body_args: &str, all: &[MediaProfile]) -> Result<String, Fault> {
        let body = format!(
            r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:trt="http://www.onvif.org/ver10/media/wsdl"><s:Body><trt:{op}>{body_args}</trt:{op}></s:Body></s:Envelope>"#
        );
        let req = super::super::soap::parse(body.as_bytes()).expect("parses");
        let mut fault = None;
        let envelope = super::super::soap::envelope(&[], |x| match answer(&req, all, x) {
            Some(Ok(())) => {}
            Some(Err(f)) => fault = Some(f),
            None => panic!("{op} not answered here"),
        });
        match fault {
            Some(f) => Err(f),
            None => Ok(String::from_utf8(envelope).unwrap()),
        }
    }

    fn aac() -> Option<AudioProfile> {
        Some(AudioProfile {
            channels: 1,
            rate_hz: 48000,
            aac_kbps: Some(64),
        })
    }

    #[test]
    fn sources_and_encoders_are_the_cameras_with_audio() {
        let all = [
            profile("cam", "cam", aac()),
            profile("cam_low", "cam", aac()),
            profile("quiet", "quiet", None),
        ];
        let s = run("GetAudioSources", "", &all).unwrap();
        assert_eq!(s.matches("<trt:AudioSources ").count(), 1, "{s}");
        assert!(s.contains(r#"token="audio_source_cam""#), "{s}");
        assert!(s.contains("<tt:Channels>1</tt:Channels>"), "{s}");
        let e = run("GetAudioEncoderConfigurations", "", &all).unwrap();
        assert_eq!(e.matches("<trt:Configurations ").count(), 1, "{e}");
        assert!(e.contains("<tt:Encoding>AAC</tt:Encoding>"), "{e}");
        assert!(e.contains("<tt:Bitrate>64</tt:Bitrate>"), "{e}");
        assert!(e.contains("<tt:SampleRate>48</tt:SampleRate>"), "{e}");
        assert!(e.contains("<tt:UseCount>2</tt:UseCount>"), "{e}");
        let o = run(
            "GetAudioEncoderConfigurationOptions",
            "<trt:ProfileToken>profile_cam_low</trt:ProfileToken>",
            &all,
        )
        .unwrap();
        assert!(o.contains("<tt:Items>64</tt:Items>"), "{o}");
        assert!(o.contains("<tt:Items>48</tt:Items>"), "{o}");
        let c = run(
            "GetAudioSourceConfiguration",
            "<trt:ConfigurationToken>audio_source_config_cam</trt:ConfigurationToken>",
            &all,
        )
        .unwrap();
        assert!(
            c.contains("<tt:SourceToken>audio_source_cam</tt:SourceToken>"),
            "{c}"
        );
        let none = run(
            "GetAudioEncoderConfiguration",
            "<trt:ConfigurationToken>audio_encoder_quiet</trt:ConfigurationToken>",
            &all,
        )
        .unwrap_err();
        assert_eq!(none.subcodes, vec!["ter:InvalidArgVal", "ter:NoConfig"]);
        let compatible = run(
            "GetCompatibleAudioEncoderConfigurations",
            "<trt:ProfileToken>profile_quiet</trt:ProfileToken>",
            &all,
        )
        .unwrap();
        assert!(!compatible.contains("<trt:Configurations"), "{compatible}");
    }

    /// An Opus track has a source but no encoder configuration: Profile S cannot name Opus.
    #[test]
    fn opus_has_no_encoder_configuration() {
        let all = [profile(
            "cam",
            "cam",
            Some(AudioProfile {
                channels: 2,
                rate_hz: 48000,
                aac_kbps: None,
            }),
        )];
        let s = run("GetAudioSourceConfigurations", "", &all).unwrap();
        assert!(s.contains("audio_source_config_cam"), "{s}");
        let e = run("GetAudioEncoderConfigurations", "", &all).unwrap();
        assert!(!e.contains("<trt:Configurations"), "{e}");
        let o = run("GetAudioEncoderConfigurationOptions", "", &all).unwrap();
        assert!(!o.contains("<tt:Options>"), "{o}");
    }
}
