//! The WHEP side of a session: what H.264 profile the stream carries, what the browser's offer
//! accepts, and the SDP answer str0m makes from them. A browser that cannot take the stream's
//! profile gets a clear refusal here instead of a silent `a=inactive` answer. A stream with
//! sound adds Opus, which str0m answers on the offer's audio section, if there is one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::config::CryptoProvider;
use str0m::net::TcpType;
use str0m::{Candidate, Rtc, RtcConfig};

/// How often the sound's RTCP sender reports go out (the picture's: every second).
const AUDIO_REPORTS: std::time::Duration = std::time::Duration::from_secs(1);

/// Why an offer was refused.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// The body is not an SDP offer str0m can read, or has no video to receive.
    #[error("bad SDP offer: {0}")]
    Bad(String),
    /// The browser accepts none of the profiles the stream could be sent as.
    #[error(
        "the browser cannot take this stream: it is H.264 {stream} but the offer only accepts {offered}; {hint}"
    )]
    Profile {
        /// The stream's profile, e.g. "high (640028)".
        stream: String,
        /// What the offer lists, e.g. "constrained-baseline (42e01f)".
        offered: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// The stream has produced no picture yet, so its profile is unknown.
    #[error("stream {0} has no picture yet; retry in a moment")]
    NoPicture(String),
    /// str0m refused the offer.
    #[error("cannot answer the offer: {0}")]
    Rtc(String),
}

/// The stream's profile as the RTP `profile-level-id` (profile_idc, constraint flags, level),
/// from the caps `h264parse` put on the encoded stream.
pub fn profile_level_id(caps: &gst::CapsRef) -> Option<u32> {
    let s = caps.structure(0)?;
    let profile = s.get::<&str>("profile").ok()?;
    let level = s.get::<&str>("level").ok().unwrap_or("3.1");
    let (idc, constraints): (u32, u32) = match profile {
        "constrained-baseline" => (0x42, 0xe0),
        "baseline" => (0x42, 0x00),
        "main" => (0x4d, 0x00),
        "extended" => (0x58, 0x00),
        "high" => (0x64, 0x00),
        "constrained-high" => (0x64, 0x0c),
        "progressive-high" => (0x64, 0x08),
        "high-10" => (0x6e, 0x00),
        "high-4:2:2" => (0x7a, 0x00),
        "high-4:4:4" => (0xf4, 0x00),
        _ => return None,
    };
    let level_idc = match level {
        "1b" => 11,
        l => {
            let (major, minor) = l.split_once('.').unwrap_or((l, "0"));
            major.parse::<u32>().ok()? * 10 + minor.parse::<u32>().ok()?
        }
    };
    Some(idc << 16 | constraints << 8 | level_idc)
}

/// A readable name for a `profile-level-id`, e.g. "high (640028)".
pub fn profile_name(plid: u32) -> String {
    let idc = plid >> 16;
    let constraints = (plid >> 8) & 0xff;
    // RFC 6184, table 5: which constraint flags make a profile Constrained Baseline.
    let name = match idc {
        0x42 if constraints & 0x40 != 0 => "constrained-baseline",
        0x4d if constraints & 0x80 != 0 => "constrained-baseline",
        0x58 if constraints & 0xc0 == 0xc0 => "constrained-baseline",
        0x42 => "baseline",
        0x4d => "main",
        0x58 => "extended",
        0x64 if constraints & 0x0c == 0x0c => "constrained-high",
        0x64 => "high",
        0x6e => "high-10",
        0x7a => "high-4:2:2",
        0xf4 => "high-4:4:4",
        _ => "unknown",
    };
    format!("{name} ({plid:06x})")
}

/// The H.264 `profile-level-id`s an offer lists for packetization mode 1.
pub fn offered_profiles(sdp: &str) -> Vec<u32> {
    let h264: Vec<&str> = sdp
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=rtpmap:"))
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, codec)| codec.to_ascii_uppercase().starts_with("H264/"))
        .map(|(pt, _)| pt)
        .collect();
    let mut out = Vec::new();
    for l in sdp.lines().filter_map(|l| l.trim().strip_prefix("a=fmtp:")) {
        let Some((pt, params)) = l.split_once(' ') else {
            continue;
        };
        if !h264.contains(&pt) {
            continue;
        }
        let mut plid = None;
        let mut mode1 = false;
        for kv in params.split(';') {
            match kv.trim().split_once('=') {
                Some(("profile-level-id", v)) => plid = u32::from_str_radix(v.trim(), 16).ok(),
                Some(("packetization-mode", v)) => mode1 = v.trim() == "1",
                _ => {}
            }
        }
        if let (Some(p), true) = (plid, mode1)
            && !out.contains(&p)
        {
            out.push(p);
        }
    }
    out
}

/// Whether the answer sends video: str0m answers an offer it cannot serve with an inactive or
/// rejected (port 0) video section rather than an error.
fn answer_sends_video(answer: &str) -> bool {
    answer_sends(answer, "video")
}

/// Whether the answer sends media of `kind` ("video", "audio") in a section that is neither
/// rejected (port 0) nor inactive.
fn answer_sends(answer: &str, kind: &str) -> bool {
    let mut in_kind = false;
    let mut sends = false;
    for l in answer.lines().map(str::trim) {
        if let Some(m) = l.strip_prefix("m=") {
            in_kind = m
                .strip_prefix(kind)
                .and_then(|rest| rest.strip_prefix(' '))
                .is_some_and(|rest| !rest.starts_with("0 "));
            continue;
        }
        if in_kind && (l == "a=sendonly" || l == "a=sendrecv") {
            sends = true;
        }
    }
    sends
}

/// Gives every rejected media section of the answer (port 0) the formats its offer listed:
/// str0m writes a section it declines (the browser's audio, for a stream without sound) with no
/// format at all, which browsers refuse to parse ("m=audio 0 UDP/TLS/RTP/SAVPF  Invalid
/// value"), and RFC 3264 (6) wants at least one there.
fn rejected_with_formats(answer: &str, offer: &str) -> String {
    let offered: Vec<&str> = offer
        .lines()
        .filter_map(|l| l.trim().strip_prefix("m="))
        .collect();
    let mut index = 0;
    let mut out = String::with_capacity(answer.len() + 16);
    for line in answer.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        let Some(m) = body.strip_prefix("m=") else {
            out.push_str(line);
            continue;
        };
        let i = index;
        index += 1;
        let parts: Vec<&str> = m.split_whitespace().collect();
        if parts.len() == 3 && parts[1] == "0" {
            let formats = offered
                .get(i)
                .map(|o| o.split_whitespace().skip(3).collect::<Vec<_>>().join(" "))
                .filter(|f| !f.is_empty())
                .unwrap_or_else(|| "0".to_string());
            out.push_str(&format!("m={} 0 {} {formats}{ending}", parts[0], parts[2]));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Puts every track of the answer in one media stream (the first section's msid stream id):
/// browsers keep audio and video in sync only within one stream, and str0m gives each section
/// it answers a random one.
fn one_media_stream(answer: &str) -> String {
    let first = answer.lines().find_map(|l| {
        l.trim()
            .strip_prefix("a=msid:")
            .and_then(|v| v.split_whitespace().next())
            .map(str::to_string)
    });
    let Some(id) = first else {
        return answer.to_string();
    };
    let mut out = String::with_capacity(answer.len());
    for line in answer.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        if let Some(v) = body.strip_prefix("a=msid:") {
            let track = v.split_whitespace().nth(1).unwrap_or_default();
            out.push_str(&format!("a=msid:{id} {track}{ending}"));
        } else if let Some((ssrc, track)) = body
            .strip_prefix("a=ssrc:")
            .and_then(|v| v.split_once(" msid:"))
            .map(|(ssrc, v)| (ssrc, v.split_whitespace().nth(1).unwrap_or_default()))
        {
            out.push_str(&format!("a=ssrc:{ssrc} msid:{id} {track}{ending}"));
        } else if body.starts_with("a=msid-semantic:") {
            out.push_str(&format!("a=msid-semantic: WMS {id}{ending}"));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// A session's str0m state and the answer to send back.
pub struct Answered {
    /// The str0m instance, ready for the UDP task.
    pub rtc: Rtc,
    /// The SDP answer.
    pub sdp: String,
    /// Whether the answer sends Opus (the stream has sound and the offer takes audio).
    pub audio: bool,
}

/// Which host candidates to advertise.
#[derive(Debug, Clone, Copy)]
pub struct Transports {
    /// UDP candidates.
    pub udp: bool,
    /// ICE-TCP passive candidates.
    pub tcp: bool,
}

/// Answers `offer` for a stream whose caps are `caps`, advertising `locals` as host candidates.
/// Only the stream's own profile is configured, so str0m picks the browser's matching payload
/// type or none; none is refused with [`OfferError::Profile`]. With `audio` (the stream has
/// sound) Opus is configured too, and sent when the offer has an audio section.
pub fn answer(
    offer: &str,
    stream: &str,
    caps: Option<&gst::Caps>,
    audio: bool,
    locals: &[SocketAddr],
    transports: Transports,
    crypto: &Arc<CryptoProvider>,
) -> Result<Answered, OfferError> {
    if !offer.contains("m=video") {
        return Err(OfferError::Bad("the offer has no video section".into()));
    }
    let plid = caps
        .and_then(|c| profile_level_id(c))
        .ok_or_else(|| OfferError::NoPicture(stream.to_string()))?;
    let parsed = SdpOffer::from_sdp_string(offer).map_err(|e| OfferError::Bad(e.to_string()))?;
    let mut config = RtcConfig::new()
        .set_ice_lite(true)
        .set_crypto_provider(crypto.clone())
        // A browser lines the sound up with the picture only once it has a sender report of
        // each: str0m's 5 s default for audio left the first seconds out of sync.
        .set_rtcp_report_interval_audio(AUDIO_REPORTS)
        .clear_codecs();
    config
        .codec_config()
        .add_h264(96.into(), Some(97.into()), true, plid);
    if audio {
        // No RED: the hub's packets go out as they are, one Opus frame per RTP packet.
        config.codec_config().enable_opus(true, false);
    }
    let mut rtc = config.build(Instant::now());
    for addr in locals {
        let mut candidates = Vec::new();
        if transports.udp {
            candidates.push(Candidate::host(*addr, "udp"));
        }
        if transports.tcp {
            candidates.push(
                Candidate::builder()
                    .tcp()
                    .host(*addr)
                    .tcptype(TcpType::Passive)
                    .build(),
            );
        }
        for c in candidates {
            match c {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "Address not advertised to a browser")
                }
            }
        }
    }
    let answer = rtc
        .sdp_api()
        .accept_offer(parsed)
        .map_err(|e| OfferError::Rtc(e.to_string()))?;
    let sdp = answer.to_sdp_string();
    if !answer_sends_video(&sdp) {
        let offered = offered_profiles(offer);
        let offered = if offered.is_empty() {
            "no H.264 (packetization-mode 1)".to_string()
        } else {
            offered
                .into_iter()
                .map(profile_name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let hint = if plid >> 8 == 0x42e0 {
            "this browser offers no Constrained Baseline H.264 with packetization-mode 1, which \
             every WebRTC browser is expected to decode"
        } else {
            "set the stream's encoder profile to constrained-baseline, which every browser plays"
        };
        return Err(OfferError::Profile {
            stream: profile_name(plid),
            offered,
            hint,
        });
    }
    let audio = audio && answer_sends(&sdp, "audio");
    let sdp = rejected_with_formats(&sdp, offer);
    let sdp = if audio { one_media_stream(&sdp) } else { sdp };
    Ok(Answered { rtc, sdp, audio })
}

/// Runs what a stranger's WHEP offer reaches before any session exists (the profile scan and
/// str0m's SDP parser), as the fuzz target and its stable smoke test do. Panics on a violated
/// invariant.
pub fn fuzz_offer(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for p in offered_profiles(&text) {
        assert!(p <= 0xff_ffff, "a profile-level-id is three bytes: {p:x}");
        let _ = profile_name(p);
    }
    if let Ok(offer) = SdpOffer::from_sdp_string(&text) {
        // What parses must print back.
        let _ = offer.to_sdp_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: Transports = Transports {
        udp: true,
        tcp: true,
    };

    #[test]
    fn profiles_from_caps() {
        gst::init().unwrap();
        let caps = gst::Caps::builder("video/x-h264")
            .field("profile", "high")
            .field("level", "4")
            .build();
        assert_eq!(profile_level_id(&caps), Some(0x640028));
        let caps = gst::Caps::builder("video/x-h264")
            .field("profile", "constrained-baseline")
            .field("level", "3.1")
            .build();
        assert_eq!(profile_level_id(&caps), Some(0x42e01f));
        let caps = gst::Caps::builder("video/x-h264").build();
        assert_eq!(profile_level_id(&caps), None);
    }

    #[test]
    fn profiles_from_offer() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102 103 104\r\n\
                   a=rtpmap:102 H264/90000\r\n\
                   a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
                   a=rtpmap:103 H264/90000\r\n\
                   a=fmtp:103 packetization-mode=0;profile-level-id=640c1f\r\n\
                   a=rtpmap:104 rtx/90000\r\na=fmtp:104 apt=102\r\n";
        assert_eq!(offered_profiles(sdp), vec![0x42e01f]);
        assert_eq!(profile_name(0x42e01f), "constrained-baseline (42e01f)");
        assert_eq!(profile_name(0x640028), "high (640028)");
        assert_eq!(profile_name(0x4d801f), "constrained-baseline (4d801f)");
        assert_eq!(profile_name(0x4d001f), "main (4d001f)");
        assert_eq!(profile_name(0x640c1f), "constrained-high (640c1f)");
    }

    /// A Firefox-style offer (Constrained Baseline only) against a High stream is refused with
    /// both profiles named, and answered once the stream is Constrained Baseline.
    #[test]
    fn high_stream_and_baseline_only_offer() {
        gst::init().unwrap();
        let offer = "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            a=fingerprint:sha-256 9B:3C:2A:0D:6E:41:55:8F:90:1A:2B:3C:4D:5E:6F:70:81:92:A3:B4:C5:D6:E7:F8:09:1A:2B:3C:4D:5E:6F:70\r\n\
            a=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 126\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\n\
            a=fmtp:126 profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1\r\n\
            a=ice-pwd:4e1dc6b1c7a3c2d4e5f60718293a4b5c\r\na=ice-ufrag:8f2a91c4\r\na=mid:0\r\n\
            a=rtcp-fb:126 nack pli\r\na=rtcp-mux\r\na=rtpmap:126 H264/90000\r\na=setup:actpass\r\n";
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let locals = ["127.0.0.1:8189".parse().unwrap()];
        let high = gst::Caps::builder("video/x-h264")
            .field("profile", "high")
            .field("level", "3.1")
            .build();
        match answer(offer, "video", Some(&high), false, &locals, BOTH, &crypto) {
            Err(e @ OfferError::Profile { .. }) => {
                let m = e.to_string();
                assert!(m.contains("high (64001f)"), "{m}");
                assert!(m.contains("constrained-baseline (42e01f)"), "{m}");
                assert!(m.contains("set the stream's encoder profile"), "{m}");
            }
            Err(e) => panic!("wrong refusal: {e}"),
            Ok(a) => panic!("answered: {}", a.sdp),
        }
        let cb = gst::Caps::builder("video/x-h264")
            .field("profile", "constrained-baseline")
            .field("level", "3.1")
            .build();
        let a = answer(offer, "video", Some(&cb), false, &locals, BOTH, &crypto).unwrap();
        assert!(a.sdp.contains("a=sendonly"), "{}", a.sdp);
        let candidates: Vec<&str> = a
            .sdp
            .lines()
            .filter(|l| l.starts_with("a=candidate:"))
            .collect();
        assert!(
            candidates
                .iter()
                .any(|l| l.to_ascii_lowercase().contains(" udp ")
                    && l.contains("127.0.0.1 8189 typ host ufrag")),
            "{}",
            a.sdp
        );
        assert!(
            candidates
                .iter()
                .any(|l| l.to_ascii_lowercase().contains(" tcp ")
                    && l.contains("127.0.0.1 8189 typ host tcptype passive")),
            "{}",
            a.sdp
        );
        assert!(matches!(
            answer(offer, "video", None, false, &locals, BOTH, &crypto),
            Err(OfferError::NoPicture(_))
        ));
    }

    /// A Chrome-style offer: receive-only video and audio, bundled.
    const AV_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1\r\na=msid-semantic: WMS\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
        a=ice-ufrag:Ab12\r\na=ice-pwd:0123456789abcdef01234567\r\n\
        a=fingerprint:sha-256 9B:3C:2A:0D:6E:41:55:8F:90:1A:2B:3C:4D:5E:6F:70:81:92:A3:B4:C5:D6:E7:F8:09:1A:2B:3C:4D:5E:6F:70\r\n\
        a=setup:actpass\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:102 H264/90000\r\n\
        a=rtcp-fb:102 nack pli\r\n\
        a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
        a=ice-ufrag:Ab12\r\na=ice-pwd:0123456789abcdef01234567\r\n\
        a=fingerprint:sha-256 9B:3C:2A:0D:6E:41:55:8F:90:1A:2B:3C:4D:5E:6F:70:81:92:A3:B4:C5:D6:E7:F8:09:1A:2B:3C:4D:5E:6F:70\r\n\
        a=setup:actpass\r\na=mid:1\r\na=recvonly\r\na=rtcp-mux\r\n\
        a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
        a=rtpmap:0 PCMU/8000\r\n";

    /// Sound goes out as Opus in the same stream as the picture when the stream has it and
    /// the browser asks for it; otherwise the audio section is not sent and no feed starts.
    #[test]
    fn audio_is_answered_in_the_pictures_stream() {
        gst::init().unwrap();
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let locals = ["127.0.0.1:8189".parse().unwrap()];
        let cb = gst::Caps::builder("video/x-h264")
            .field("profile", "constrained-baseline")
            .field("level", "3.1")
            .build();
        let a = answer(AV_OFFER, "cam", Some(&cb), true, &locals, BOTH, &crypto).unwrap();
        assert!(a.audio, "{}", a.sdp);
        assert!(answer_sends(&a.sdp, "audio"), "{}", a.sdp);
        assert!(answer_sends_video(&a.sdp), "{}", a.sdp);
        assert!(
            a.sdp.to_ascii_lowercase().contains("opus/48000/2"),
            "{}",
            a.sdp
        );
        let streams: Vec<&str> = a
            .sdp
            .lines()
            .filter_map(|l| l.strip_prefix("a=msid:"))
            .filter_map(|v| v.split_whitespace().next())
            .collect();
        assert_eq!(streams.len(), 2, "{}", a.sdp);
        assert_eq!(streams[0], streams[1], "one media stream: {}", a.sdp);
        // No sound on the stream: the browser's audio section is declined, the picture plays.
        let v = answer(AV_OFFER, "cam", Some(&cb), false, &locals, BOTH, &crypto).unwrap();
        assert!(!v.audio);
        assert!(!answer_sends(&v.sdp, "audio"), "{}", v.sdp);
        // Declined with the offer's formats: an empty list does not parse in browsers.
        assert!(
            v.sdp.contains("m=audio 0 UDP/TLS/RTP/SAVPF 111 0\r\n"),
            "{}",
            v.sdp
        );
        assert!(answer_sends_video(&v.sdp), "{}", v.sdp);
        // A WHEP client that offers no audio gets video only.
        let video_only: String = AV_OFFER
            .split("m=audio")
            .next()
            .unwrap()
            .replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0");
        let w = answer(&video_only, "cam", Some(&cb), true, &locals, BOTH, &crypto).unwrap();
        assert!(!w.audio);
        assert!(!w.sdp.contains("m=audio"), "{}", w.sdp);
    }

    #[test]
    fn one_stream_keeps_line_endings_and_tracks() {
        let sdp = "v=0\r\na=msid-semantic: WMS a b\r\nm=video 9 X 96\r\na=msid:a t1\r\n\
                   a=ssrc:1 msid:a t1\r\nm=audio 9 X 111\r\na=msid:b t2\r\na=ssrc:2 msid:b t2\r\n";
        assert_eq!(
            one_media_stream(sdp),
            "v=0\r\na=msid-semantic: WMS a\r\nm=video 9 X 96\r\na=msid:a t1\r\n\
             a=ssrc:1 msid:a t1\r\nm=audio 9 X 111\r\na=msid:a t2\r\na=ssrc:2 msid:a t2\r\n"
        );
    }

    #[test]
    fn inactive_answer_is_no_video() {
        assert!(answer_sends_video(
            "v=0\r\nm=video 9 X 96\r\na=sendonly\r\n"
        ));
        assert!(!answer_sends_video(
            "v=0\r\nm=video 9 X 96\r\na=inactive\r\n"
        ));
        assert!(!answer_sends_video(
            "v=0\r\nm=video 0 X 96\r\na=sendonly\r\n"
        ));
    }
}
