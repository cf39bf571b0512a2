//! The playlists, written from the segmenter's state: the low-latency media playlist (RFC 8216bis
//! with partial segments, blocking reload and preload hints) and the multivariant playlist that
//! lists a camera's encodings. File names carry the muxer's start id, so a name is never reused
//! for other bytes (parts and segments may be cached as immutable).

use std::fmt::Write;

use super::muxer::Muxer;
use crate::output::record::mp4::{TIMESCALE, Track};
use crate::utc;

/// How far ahead of the newest part a blocking reload may ask (the spec's Advance Part Limit).
pub const ADVANCE_PARTS: usize = 3;
/// How far ahead of the newest segment a blocking reload may ask.
pub const ADVANCE_SEGMENTS: u64 = 2;

/// What the media playlist needs besides the segmenter.
pub struct Media {
    /// The muxer's start id, in every file name.
    pub run: u64,
    /// EXT-X-TARGETDURATION, whole seconds.
    pub target_s: u64,
    /// Part target, in ms.
    pub part_ms: u32,
}

fn secs(ticks: u64) -> f64 {
    ticks as f64 / f64::from(TIMESCALE)
}

/// Name of init segment `id`.
pub fn init_name(run: u64, id: u32) -> String {
    format!("{run}-init{id}.mp4")
}

/// Name of segment `msn`.
pub fn segment_name(run: u64, msn: u64) -> String {
    format!("{run}-s{msn}.m4s")
}

/// Name of part `id`.
pub fn part_name(run: u64, id: u64) -> String {
    format!("{run}-p{id}.m4s")
}

/// The media playlist, or `None` before the first segment started.
pub fn media(m: &Muxer, p: &Media) -> Option<String> {
    let first = m.done.front().or(m.current.as_ref())?;
    let part_target = f64::from(p.part_ms) / 1000.0;
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{}\n\
         #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}\n\
         #EXT-X-PART-INF:PART-TARGET={:.3}\n#EXT-X-INDEPENDENT-SEGMENTS\n\
         #EXT-X-MEDIA-SEQUENCE:{}\n",
        p.target_s,
        3.0 * part_target,
        part_target,
        first.msn,
    );
    if m.discontinuity_seq > 0 {
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", m.discontinuity_seq);
    }
    // Parts are listed for the segments within three target durations of the end (the spec's
    // minimum), older segments only whole.
    let segments: Vec<_> = m.done.iter().chain(m.current.iter()).collect();
    let mut with_parts = 0;
    let mut covered = 0;
    for s in segments.iter().rev() {
        if covered >= 3 * p.target_s * u64::from(TIMESCALE) {
            break;
        }
        covered += s.ticks;
        with_parts += 1;
    }
    let mut init = None;
    for (i, s) in segments.iter().enumerate() {
        if s.parts.is_empty() && s.bytes.is_none() {
            // Just opened, nothing published yet: listed once its first part is.
            continue;
        }
        if s.discontinuity && i > 0 {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if init != Some(s.init) {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", init_name(p.run, s.init));
            init = Some(s.init);
        }
        let _ = writeln!(
            out,
            "#EXT-X-PROGRAM-DATE-TIME:{}",
            utc::rfc3339(s.start_utc)
        );
        if i + with_parts >= segments.len() {
            for part in &s.parts {
                let _ = writeln!(
                    out,
                    "#EXT-X-PART:DURATION={:.5},URI=\"{}\"{}",
                    secs(part.ticks),
                    part_name(p.run, part.id),
                    if part.independent {
                        ",INDEPENDENT=YES"
                    } else {
                        ""
                    }
                );
            }
        }
        if s.bytes.is_some() {
            let _ = writeln!(
                out,
                "#EXTINF:{:.5},\n{}",
                secs(s.ticks),
                segment_name(p.run, s.msn)
            );
        }
    }
    let _ = writeln!(
        out,
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
        part_name(p.run, m.next_part_id())
    );
    Some(out)
}

/// The RFC 6381 codec of an `avcC` record: `avc1.PPCCLL` from its profile, constraints and level.
pub fn codec(track: &Track) -> String {
    match track.avcc.get(1..4) {
        Some(b) => format!("avc1.{:02x}{:02x}{:02x}", b[0], b[1], b[2]),
        None => "avc1.42e01f".to_string(),
    }
}

/// One rendition in the multivariant playlist.
pub struct Variant {
    /// Its stream (encoding) name: its media playlist is `../{name}/index.m3u8`.
    pub name: String,
    /// Peak bit rate, bits per second.
    pub bandwidth: u64,
    /// Picture size.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// RFC 6381 codec.
    pub codec: String,
}

/// The multivariant playlist (served at `/hls/{stream}/main.m3u8`), highest rate first.
pub fn multivariant(variants: &[Variant]) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let mut v: Vec<&Variant> = variants.iter().collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.bandwidth));
    for x in v {
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},RESOLUTION={}x{},FRAME-RATE={}.000,CODECS=\"{}\"\n../{}/index.m3u8\n",
            x.bandwidth, x.width, x.height, x.fps, x.codec, x.name
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::output::hls::muxer::Frame;

    #[test]
    fn the_media_playlist_lists_parts_hints_and_maps() {
        let t = Arc::new(Track {
            width: 320,
            height: 240,
            avcc: vec![1, 0x64, 0, 0x1f, 0xff],
        });
        let mut m = Muxer::new(200, 500, 4);
        assert!(
            media(
                &m,
                &Media {
                    run: 7,
                    target_s: 2,
                    part_ms: 200
                }
            )
            .is_none()
        );
        for i in 0..130u64 {
            let dts = i * 33_333_333;
            m.push(Frame {
                data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
                pts: dts,
                dts,
                key: i % 60 == 0,
                utc: 1_700_000_000_000_000_000 + dts as i64,
                track: t.clone(),
            });
        }
        let text = media(
            &m,
            &Media {
                run: 7,
                target_s: 2,
                part_ms: 200,
            },
        )
        .unwrap();
        assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n"));
        assert!(text.contains("CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600"));
        assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.200"));
        assert!(text.contains("#EXT-X-MAP:URI=\"7-init0.mp4\""));
        assert!(text.contains("#EXTINF:2.00000,\n7-s0.m4s"));
        assert!(text.contains("#EXT-X-PART:DURATION=0.20000,URI=\"7-p0.m4s\",INDEPENDENT=YES"));
        assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z"));
        let hint = format!(
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"7-p{}.m4s\"\n",
            m.next_part_id()
        );
        assert!(text.ends_with(&hint), "{text}");
        assert_eq!(codec(&t), "avc1.64001f");
    }
}
