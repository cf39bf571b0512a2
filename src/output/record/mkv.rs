//! Matroska segments, for `format = "mkv"`: a header (EBML, a Segment of unknown size, Info
//! with a Duration patched on close, Tracks with the `avcC` as CodecPrivate), then one Cluster
//! of known size per part, written whole. Like the MP4 writer, a crash loses at most the part
//! being gathered. Read back into the same [`Scan`] as MP4 segments: Matroska blocks hold the
//! same length-prefixed H.264 as MP4 samples, so playback copies them as they are.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::mp4::{AudioTrack, Sample, Scan, TIMESCALE, Track};

const EBML: u32 = 0x1A45_DFA3;
const SEGMENT: u32 = 0x1853_8067;
const INFO: u32 = 0x1549_A966;
const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
const DURATION: u32 = 0x4489;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const CODEC_PRIVATE: u32 = 0x63A2;
const VIDEO: u32 = 0xE0;
const PIXEL_WIDTH: u32 = 0xB0;
const PIXEL_HEIGHT: u32 = 0xBA;
const CLUSTER: u32 = 0x1F43_B675;
const CLUSTER_TIMESTAMP: u32 = 0xE7;
const SIMPLE_BLOCK: u32 = 0xA3;
const TRACK_NUMBER: u32 = 0xD7;
const AUDIO: u32 = 0xE1;
/// Block timestamps are in ms.
const SCALE_NS: u64 = 1_000_000;
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

fn id(out: &mut Vec<u8>, id: u32) {
    let b = id.to_be_bytes();
    let skip = b.iter().take_while(|x| **x == 0).count();
    out.extend_from_slice(&b[skip..]);
}

/// An element with an 8-byte size.
fn element(out: &mut Vec<u8>, eid: u32, body: &[u8]) {
    id(out, eid);
    out.push(0x01);
    out.extend_from_slice(&(body.len() as u64).to_be_bytes()[1..]);
    out.extend_from_slice(body);
}

fn uint(out: &mut Vec<u8>, eid: u32, v: u64) {
    element(out, eid, &v.to_be_bytes());
}

fn ms(ticks: u64) -> u64 {
    ticks * 1000 / u64::from(TIMESCALE)
}

/// The start of a Matroska segment for `track` (track 1) and, when given, an AAC track (2).
pub fn header_av(track: &Track, audio: Option<&AudioTrack>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let mut h = Vec::new();
    uint(&mut h, 0x4286, 1);
    uint(&mut h, 0x42F7, 1);
    uint(&mut h, 0x42F2, 4);
    uint(&mut h, 0x42F3, 8);
    element(&mut h, 0x4282, b"matroska");
    uint(&mut h, 0x4287, 4);
    uint(&mut h, 0x4285, 2);
    element(&mut out, EBML, &h);
    id(&mut out, SEGMENT);
    out.extend_from_slice(&UNKNOWN_SIZE);
    let mut info = Vec::new();
    uint(&mut info, TIMESTAMP_SCALE, SCALE_NS);
    element(&mut info, DURATION, &0f64.to_be_bytes());
    element(&mut info, 0x4D80, b"camstream");
    element(&mut info, 0x5741, b"camstream");
    element(&mut out, INFO, &info);
    let mut entry = Vec::new();
    uint(&mut entry, 0xD7, 1);
    uint(&mut entry, 0x73C5, 1);
    uint(&mut entry, 0x83, 1);
    element(&mut entry, 0x86, b"V_MPEG4/ISO/AVC");
    element(&mut entry, CODEC_PRIVATE, &track.avcc);
    let mut video = Vec::new();
    uint(&mut video, PIXEL_WIDTH, u64::from(track.width));
    uint(&mut video, PIXEL_HEIGHT, u64::from(track.height));
    element(&mut entry, VIDEO, &video);
    let mut tracks = Vec::new();
    element(&mut tracks, TRACK_ENTRY, &entry);
    if let Some(a) = audio {
        let mut entry = Vec::new();
        uint(&mut entry, TRACK_NUMBER, 2);
        uint(&mut entry, 0x73C5, 2);
        uint(&mut entry, 0x83, 2);
        element(&mut entry, 0x86, b"A_AAC");
        element(&mut entry, CODEC_PRIVATE, &a.asc);
        let mut sound = Vec::new();
        element(&mut sound, 0xB5, &f64::from(a.rate).to_be_bytes());
        uint(&mut sound, 0x9F, u64::from(a.channels));
        element(&mut entry, AUDIO, &sound);
        element(&mut tracks, TRACK_ENTRY, &entry);
    }
    element(&mut out, TRACKS, &tracks);
    out
}

/// One part of a two-track segment as a Cluster starting at `base` ticks: the picture's
/// blocks (track 1) and the sound's (track 2: each its time in ticks and its bytes), in time
/// order.
pub fn cluster_av(
    base: u64,
    samples: &[Sample],
    data: &[&[u8]],
    sound: &[(u64, &[u8])],
) -> Vec<u8> {
    let base_ms = ms(base);
    let size = data
        .iter()
        .chain(sound.iter().map(|s| &s.1))
        .map(|d| d.len() + 16);
    let mut body = Vec::with_capacity(size.sum::<usize>() + 16);
    uint(&mut body, CLUSTER_TIMESTAMP, base_ms);
    // The picture's blocks stay in decode order; each sound block goes before the first
    // picture block that decodes after it.
    let mut blocks: Vec<(u64, u8, bool, &[u8])> = Vec::with_capacity(data.len() + sound.len());
    let mut next = sound.iter().peekable();
    for (s, d) in samples.iter().zip(data) {
        while let Some((t, a)) = next.next_if(|(t, _)| *t <= s.dts) {
            blocks.push((ms(*t), 0x82, true, *a));
        }
        blocks.push((ms(s.dts + u64::from(s.cto)), 0x81, s.key, *d));
    }
    blocks.extend(next.map(|(t, a)| (ms(*t), 0x82, true, *a)));
    for (pts, track, key, d) in blocks {
        let rel = (pts as i64 - base_ms as i64).clamp(i64::from(i16::MIN), i64::from(i16::MAX));
        let mut block = Vec::with_capacity(d.len() + 4);
        block.push(track);
        block.extend_from_slice(&(rel as i16).to_be_bytes());
        block.push(if key { 0x80 } else { 0 });
        block.extend_from_slice(d);
        element(&mut body, SIMPLE_BLOCK, &block);
    }
    let mut out = Vec::with_capacity(body.len() + 12);
    element(&mut out, CLUSTER, &body);
    out
}

/// One part as a Cluster starting at `base` ticks.
pub fn cluster(base: u64, samples: &[Sample], data: &[&[u8]]) -> Vec<u8> {
    let base_ms = ms(base);
    let mut body = Vec::with_capacity(data.iter().map(|d| d.len() + 16).sum::<usize>() + 16);
    uint(&mut body, CLUSTER_TIMESTAMP, base_ms);
    for (s, d) in samples.iter().zip(data) {
        let pts = ms(s.dts + u64::from(s.cto));
        let rel = (pts as i64 - base_ms as i64).clamp(i64::from(i16::MIN), i64::from(i16::MAX));
        let mut block = Vec::with_capacity(d.len() + 4);
        block.push(0x81);
        block.extend_from_slice(&(rel as i16).to_be_bytes());
        block.push(if s.key { 0x80 } else { 0 });
        block.extend_from_slice(d);
        element(&mut body, SIMPLE_BLOCK, &block);
    }
    let mut out = Vec::with_capacity(body.len() + 12);
    element(&mut out, CLUSTER, &body);
    out
}

/// A variable-length integer at `b[at..]`: (value, length); `marker` keeps the length bits
/// (element IDs) or strips them (sizes). All-ones sizes mean "unknown" (`u64::MAX`).
fn vint(b: &[u8], at: usize, marker: bool) -> Option<(u64, usize)> {
    let first = *b.get(at)?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return None;
    }
    let mut v = if marker {
        u64::from(first)
    } else {
        u64::from(first) & ((1u64 << (8 - len)) - 1)
    };
    let mut all_ones = v == (1u64 << (8 - len)) - 1;
    for i in 1..len {
        let x = *b.get(at + i)?;
        all_ones &= x == 0xFF;
        v = (v << 8) | u64::from(x);
    }
    if !marker && all_ones {
        v = u64::MAX;
    }
    Some((v, len))
}

/// (id, body start, body end) of each element in `b`.
fn elements(b: &[u8]) -> Vec<(u32, usize, usize)> {
    let mut v = Vec::new();
    let mut i = 0;
    while let Some((eid, il)) = vint(b, i, true) {
        let Some((size, sl)) = vint(b, i + il, false) else {
            break;
        };
        let start = i + il + sl;
        if size == u64::MAX || start as u64 + size > b.len() as u64 {
            break;
        }
        let end = start + size as usize;
        v.push((eid as u32, start, end));
        i = end;
    }
    v
}

fn be_uint(b: &[u8]) -> u64 {
    b.iter().fold(0, |a, x| (a << 8) | u64::from(*x))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Reads an element header from the file at `at`: (id, header length, body size).
fn header_at(f: &File, at: u64, len: u64) -> io::Result<Option<(u32, u64, u64)>> {
    let mut b = [0u8; 12];
    let n = (len.saturating_sub(at)).min(12) as usize;
    if n < 2 {
        return Ok(None);
    }
    f.read_exact_at(&mut b[..n], at)?;
    let Some((eid, il)) = vint(&b[..n], 0, true) else {
        return Ok(None);
    };
    let Some((size, sl)) = vint(&b[..n], il, false) else {
        return Ok(None);
    };
    Ok(Some((eid as u32, (il + sl) as u64, size)))
}

/// Reads a Matroska segment this recorder wrote (see [`super::mp4::scan`]).
pub fn scan(path: &Path, samples: bool) -> io::Result<Scan> {
    let f = super::nofollow::open_nofollow(path)?;
    let len = f.metadata()?.len();
    let Some((EBML, hl, size)) = header_at(&f, 0, len)? else {
        return Err(invalid("not a Matroska file"));
    };
    let seg_at = hl + size;
    let Some((SEGMENT, shl, _)) = header_at(&f, seg_at, len)? else {
        return Err(invalid("no Matroska segment"));
    };
    let mut at = seg_at + shl;
    let mut track = None;
    let mut declared = 0;
    let mut pts: Vec<(u64, Sample)> = Vec::new();
    let mut good_len = at;
    while let Some((eid, hl, size)) = header_at(&f, at, len)? {
        let end = at + hl + size;
        if size == u64::MAX || end > len || size > 1 << 28 {
            break;
        }
        // Without a declared duration (a segment being written, or cut) the blocks give it.
        let want = samples || declared == 0;
        let mut body = vec![0; size as usize];
        if eid == INFO || eid == TRACKS || eid == CLUSTER && want {
            f.read_exact_at(&mut body, at + hl)?;
        }
        match eid {
            INFO => {
                for (e, s, t) in elements(&body) {
                    if e == DURATION && t - s == 8 {
                        let d = f64::from_be_bytes(body[s..t].try_into().unwrap());
                        declared = (d * SCALE_NS as f64 * f64::from(TIMESCALE) / 1e9) as u64;
                    }
                }
            }
            TRACKS => {
                for (_, s, t) in elements(&body).into_iter().filter(|e| e.0 == TRACK_ENTRY) {
                    let entry = &body[s..t];
                    let mut tr = Track {
                        width: 0,
                        height: 0,
                        avcc: Vec::new(),
                    };
                    let mut number = 1;
                    for (e, s, t) in elements(entry) {
                        match e {
                            TRACK_NUMBER => number = be_uint(&entry[s..t]),
                            CODEC_PRIVATE => tr.avcc = entry[s..t].to_vec(),
                            VIDEO => {
                                for (e, a, b) in elements(&entry[s..t]) {
                                    let v = be_uint(&entry[s + a..s + b]) as u32;
                                    match e {
                                        PIXEL_WIDTH => tr.width = v,
                                        PIXEL_HEIGHT => tr.height = v,
                                        _ => {}
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    // The picture is track 1; the sound's entry (2) is not read back.
                    if number == 1 {
                        track = Some(tr);
                    }
                }
                if declared > 0 && !samples {
                    good_len = len;
                    break;
                }
            }
            CLUSTER if want => {
                let mut base = 0;
                for (e, s, t) in elements(&body) {
                    match e {
                        CLUSTER_TIMESTAMP => base = be_uint(&body[s..t]),
                        SIMPLE_BLOCK if t - s > 4 && body[s] == 0x81 => {
                            let rel = i16::from_be_bytes([body[s + 1], body[s + 2]]);
                            let p = (base as i64 + i64::from(rel)).max(0) as u64;
                            pts.push((
                                p * u64::from(TIMESCALE) / 1000,
                                Sample {
                                    dts: 0,
                                    duration: 0,
                                    cto: 0,
                                    key: body[s + 3] & 0x80 != 0,
                                    size: (t - s - 4) as u32,
                                    offset: at + hl + s as u64 + 4,
                                },
                            ));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        at = end;
        good_len = end;
    }
    let track = track.ok_or_else(|| invalid("no track: cut before its header"))?;
    // Blocks carry presentation times; decode times are the same times in order.
    let mut sorted: Vec<u64> = pts.iter().map(|p| p.0).collect();
    sorted.sort_unstable();
    let mut out: Vec<Sample> = Vec::with_capacity(pts.len());
    for (i, (p, mut s)) in pts.into_iter().enumerate() {
        s.dts = sorted[i];
        s.cto = (p.saturating_sub(s.dts)) as u32;
        out.push(s);
    }
    for i in 0..out.len() {
        let d = match out.get(i + 1) {
            Some(n) => n.dts - out[i].dts,
            None if i > 0 => u64::from(out[i - 1].duration),
            None => u64::from(TIMESCALE) / 30,
        };
        out[i].duration = d as u32;
    }
    Ok(Scan {
        track,
        samples: out,
        good_len,
        file_len: len,
        declared,
        // The sound is not read back from Matroska segments (exports take the picture).
        audio: None,
        audio_samples: Vec::new(),
    })
}

/// Writes the segment's Duration (`ticks` at the MP4 timescale).
pub fn finalize(f: &File, ticks: u64) -> io::Result<()> {
    let len = f.metadata()?.len();
    let Some((EBML, hl, size)) = header_at(f, 0, len)? else {
        return Err(invalid("not a Matroska file"));
    };
    let seg_at = hl + size;
    let Some((SEGMENT, shl, _)) = header_at(f, seg_at, len)? else {
        return Err(invalid("no Matroska segment"));
    };
    let at = seg_at + shl;
    let Some((INFO, ihl, isize)) = header_at(f, at, len)? else {
        return Err(invalid("no Matroska Info"));
    };
    let mut body = vec![0; isize as usize];
    f.read_exact_at(&mut body, at + ihl)?;
    let (_, s, _) = elements(&body)
        .into_iter()
        .find(|e| e.0 == DURATION)
        .ok_or_else(|| invalid("no Duration"))?;
    let d = (ticks as f64 / f64::from(TIMESCALE)) * 1e9 / SCALE_NS as f64;
    f.write_all_at(&d.to_be_bytes(), at + ihl + s as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn writes_and_reads_back() {
        let track = Track {
            width: 320,
            height: 240,
            avcc: vec![1, 2, 3],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mkv");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        f.write_all(&header_av(&track, None)).unwrap();
        let mk = |dts: u64, key: bool| Sample {
            dts,
            duration: 9000,
            cto: 0,
            key,
            size: 2,
            offset: 0,
        };
        f.write_all(&cluster(
            0,
            &[mk(0, true), mk(9000, false)],
            &[b"ab", b"cd"],
        ))
        .unwrap();
        let c = cluster(18000, &[mk(18000, false)], &[b"ef"]);
        f.write_all(&c[..c.len() - 1]).unwrap();
        let s = scan(&path, true).unwrap();
        assert_eq!(s.track, track);
        assert_eq!(s.samples.len(), 2);
        assert!(s.samples[0].key && !s.samples[1].key);
        assert_eq!(s.samples[1].dts, 9000);
        let mut b = [0u8; 2];
        f.read_exact_at(&mut b, s.samples[1].offset).unwrap();
        assert_eq!(&b, b"cd");
        finalize(&f, 18000).unwrap();
        assert_eq!(scan(&path, false).unwrap().declared, 18000);
    }
}
