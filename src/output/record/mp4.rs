//! The MP4 boxes the recorder writes and reads: a fragmented MP4 segment (an init part, then one
//! `moof`+`mdat` per part, each complete on disk before the next begins, so a crash loses at most
//! the part being gathered), the scan that reads a segment back (and finds where a crash cut
//! it), and the progressive MP4 header the playback endpoint puts in front of stored samples.
//! Only what the recorder itself writes is read: one H.264 video track.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The media timescale of every recording (ticks per second).
pub const TIMESCALE: u32 = 90_000;
/// The movie timescale (mvhd, tkhd, mehd).
const MOVIE_TIMESCALE: u32 = 1000;

/// The video track's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The `avcC` record (H.264 codec data: SPS, PPS).
    pub avcc: Vec<u8>,
}

/// One stored frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Decode time from the segment's start, in [`TIMESCALE`] ticks.
    pub dts: u64,
    /// Duration in ticks.
    pub duration: u32,
    /// Presentation minus decode time, in ticks.
    pub cto: u32,
    /// Whether it is a keyframe (IDR).
    pub key: bool,
    /// Size in bytes.
    pub size: u32,
    /// Where its bytes start in the segment file.
    pub offset: u64,
}

fn open_box(out: &mut Vec<u8>, kind: &[u8; 4]) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(kind);
    start
}

fn open_full(out: &mut Vec<u8>, kind: &[u8; 4], version: u8, flags: u32) -> usize {
    let start = open_box(out, kind);
    out.push(version);
    out.extend_from_slice(&flags.to_be_bytes()[1..]);
    start
}

fn close_box(out: &mut [u8], start: usize) {
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

fn u16s(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn u32s(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn u64s(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

fn ftyp(out: &mut Vec<u8>, fragmented: bool) {
    let s = open_box(out, b"ftyp");
    out.extend_from_slice(b"isom");
    u32s(out, 0x200);
    out.extend_from_slice(b"isom");
    if fragmented {
        out.extend_from_slice(b"iso6");
    }
    out.extend_from_slice(b"avc1mp41");
    close_box(out, s);
}

/// mvhd, tkhd and mdhd with the given durations (ticks of their timescales).
fn movie_header(out: &mut Vec<u8>, movie_duration: u32) {
    let s = open_full(out, b"mvhd", 0, 0);
    u32s(out, 0);
    u32s(out, 0);
    u32s(out, MOVIE_TIMESCALE);
    u32s(out, movie_duration);
    u32s(out, 0x0001_0000);
    u16s(out, 0x0100);
    out.extend_from_slice(&[0; 10]);
    MATRIX.iter().for_each(|m| u32s(out, *m));
    out.extend_from_slice(&[0; 24]);
    u32s(out, 2);
    close_box(out, s);
}

/// Writes tkhd and opens mdia (returned) with its mdhd and hdlr; the caller adds minf.
fn track_start(
    out: &mut Vec<u8>,
    track: &Track,
    movie_duration: u32,
    media_duration: u32,
) -> usize {
    let s = open_full(out, b"tkhd", 0, 3);
    u32s(out, 0);
    u32s(out, 0);
    u32s(out, 1);
    u32s(out, 0);
    u32s(out, movie_duration);
    out.extend_from_slice(&[0; 8]);
    u16s(out, 0);
    u16s(out, 0);
    u16s(out, 0);
    u16s(out, 0);
    MATRIX.iter().for_each(|m| u32s(out, *m));
    u32s(out, track.width << 16);
    u32s(out, track.height << 16);
    close_box(out, s);
    let mdia = open_box(out, b"mdia");
    let s = open_full(out, b"mdhd", 0, 0);
    u32s(out, 0);
    u32s(out, 0);
    u32s(out, TIMESCALE);
    u32s(out, media_duration);
    u16s(out, 0x55c4); // "und"
    u16s(out, 0);
    close_box(out, s);
    let s = open_full(out, b"hdlr", 0, 0);
    u32s(out, 0);
    out.extend_from_slice(b"vide");
    out.extend_from_slice(&[0; 12]);
    out.extend_from_slice(b"camstream\0");
    close_box(out, s);
    mdia
}

fn sample_entry(out: &mut Vec<u8>, track: &Track) {
    let s = open_full(out, b"stsd", 0, 0);
    u32s(out, 1);
    let a = open_box(out, b"avc1");
    out.extend_from_slice(&[0; 6]);
    u16s(out, 1);
    out.extend_from_slice(&[0; 16]);
    u16s(out, track.width as u16);
    u16s(out, track.height as u16);
    u32s(out, 0x0048_0000);
    u32s(out, 0x0048_0000);
    u32s(out, 0);
    u16s(out, 1);
    out.extend_from_slice(&[0; 32]);
    u16s(out, 0x0018);
    u16s(out, 0xffff);
    let c = open_box(out, b"avcC");
    out.extend_from_slice(&track.avcc);
    close_box(out, c);
    close_box(out, a);
    close_box(out, s);
}

fn media_info_open(out: &mut Vec<u8>) -> (usize, usize) {
    let minf = open_box(out, b"minf");
    let s = open_full(out, b"vmhd", 0, 1);
    out.extend_from_slice(&[0; 8]);
    close_box(out, s);
    let dinf = open_box(out, b"dinf");
    let dref = open_full(out, b"dref", 0, 0);
    u32s(out, 1);
    let url = open_full(out, b"url ", 0, 1);
    close_box(out, url);
    close_box(out, dref);
    close_box(out, dinf);
    let stbl = open_box(out, b"stbl");
    (minf, stbl)
}

/// The start of a fragmented segment: `ftyp` and a `moov` whose durations are 0 until
/// [`finalize`] sets them.
pub fn init_segment(track: &Track) -> Vec<u8> {
    init_segment_av(track, None)
}

/// The start of a fragmented segment with the video track (ID 1) and, when given, an AAC
/// track (ID 2); durations are 0 until [`finalize`] sets them.
pub fn init_segment_av(track: &Track, audio: Option<&AudioTrack>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    ftyp(&mut out, true);
    let moov = open_box(&mut out, b"moov");
    movie_header(&mut out, 0);
    let trak = open_box(&mut out, b"trak");
    let mdia = track_start(&mut out, track, 0, 0);
    let (minf, stbl) = media_info_open(&mut out);
    sample_entry(&mut out, track);
    for kind in [b"stts", b"stsc", b"stco"] {
        let s = open_full(&mut out, kind, 0, 0);
        u32s(&mut out, 0);
        close_box(&mut out, s);
    }
    let s = open_full(&mut out, b"stsz", 0, 0);
    u32s(&mut out, 0);
    u32s(&mut out, 0);
    close_box(&mut out, s);
    close_box(&mut out, stbl);
    close_box(&mut out, minf);
    close_box(&mut out, mdia);
    close_box(&mut out, trak);
    if let Some(a) = audio {
        audio_trak(&mut out, a);
    }
    let mvex = open_box(&mut out, b"mvex");
    let s = open_full(&mut out, b"mehd", 0, 0);
    u32s(&mut out, 0);
    close_box(&mut out, s);
    let ids: &[u32] = if audio.is_some() { &[1, 2] } else { &[1] };
    for id in ids {
        let s = open_full(&mut out, b"trex", 0, 0);
        u32s(&mut out, *id);
        u32s(&mut out, 1);
        u32s(&mut out, 0);
        u32s(&mut out, 0);
        u32s(&mut out, 0);
        close_box(&mut out, s);
    }
    close_box(&mut out, mvex);
    close_box(&mut out, moov);
    out
}

const SAMPLE_KEY: u32 = 0x0200_0000;
const SAMPLE_DELTA: u32 = 0x0101_0000;

/// One part: a `moof` (sequence `seq`, decode time `base_dts`) and its `mdat` holding `data`,
/// the samples' bytes in order (`samples[i].size` each).
pub fn fragment(seq: u32, base_dts: u64, samples: &[Sample], data: &[&[u8]]) -> Vec<u8> {
    let mut out = fragment_head(seq, base_dts, samples);
    for d in data {
        out.extend_from_slice(d);
    }
    out
}

/// One track's share of a part: its decode time (in its own timescale), samples and bytes.
pub struct Run<'a> {
    /// Decode time of the first sample, in the track's timescale.
    pub base_dts: u64,
    /// The samples, in order.
    pub samples: &'a [Sample],
    /// Their bytes (`samples[i].size` each).
    pub data: &'a [&'a [u8]],
}

/// One part of a two-track segment: a `moof` with a `traf` for the video (track 1) and one for
/// the sound (track 2, left out when it has no sample), then one `mdat` with the video's bytes
/// followed by the sound's.
pub fn fragment_av(seq: u32, video: &Run, audio: &Run) -> Vec<u8> {
    let mut out = fragment_head_av(seq, video, audio);
    for run in [video, audio] {
        for d in run.data {
            out.extend_from_slice(d);
        }
    }
    out
}

/// The front of a two-track part ([`fragment_av`] without the samples' bytes, which follow
/// in order: the picture's, then the sound's; `data` of the runs is not read).
pub fn fragment_head_av(seq: u32, video: &Run, audio: &Run) -> Vec<u8> {
    let runs: Vec<(u32, &Run)> = [(1, video), (2, audio)]
        .into_iter()
        .filter(|(_, r)| !r.samples.is_empty())
        .collect();
    let payload: u64 = runs
        .iter()
        .flat_map(|(_, r)| r.samples.iter())
        .map(|s| u64::from(s.size))
        .sum();
    let mut out = Vec::with_capacity(128 + 16 * (video.samples.len() + audio.samples.len()));
    let moof = open_box(&mut out, b"moof");
    let s = open_full(&mut out, b"mfhd", 0, 0);
    u32s(&mut out, seq);
    close_box(&mut out, s);
    let mut offsets = Vec::new();
    for (id, run) in &runs {
        offsets.push(traf(&mut out, *id, run.base_dts, run.samples));
    }
    close_box(&mut out, moof);
    let large = payload + 8 > u64::from(u32::MAX);
    let header = if large { 16 } else { 8 };
    let mut data_offset = (out.len() - moof + header) as u64;
    for ((_, run), at) in runs.iter().zip(offsets) {
        out[at..at + 4].copy_from_slice(&(data_offset as u32).to_be_bytes());
        data_offset += run.samples.iter().map(|s| u64::from(s.size)).sum::<u64>();
    }
    if large {
        u32s(&mut out, 1);
        out.extend_from_slice(b"mdat");
        u64s(&mut out, payload + 16);
    } else {
        u32s(&mut out, (payload + 8) as u32);
        out.extend_from_slice(b"mdat");
    }
    out
}

/// Writes a `traf` of track `id`; returns where its trun's data offset is to be written.
fn traf(out: &mut Vec<u8>, id: u32, base_dts: u64, samples: &[Sample]) -> usize {
    let traf = open_box(out, b"traf");
    let s = open_full(out, b"tfhd", 0, 0x02_0000);
    u32s(out, id);
    close_box(out, s);
    let s = open_full(out, b"tfdt", 1, 0);
    u64s(out, base_dts);
    close_box(out, s);
    let s = open_full(out, b"trun", 0, 0x0001 | 0x0100 | 0x0200 | 0x0400 | 0x0800);
    u32s(out, samples.len() as u32);
    let data_offset_at = out.len();
    u32s(out, 0);
    for x in samples {
        u32s(out, x.duration);
        u32s(out, x.size);
        u32s(out, if x.key { SAMPLE_KEY } else { SAMPLE_DELTA });
        u32s(out, x.cto);
    }
    close_box(out, s);
    close_box(out, traf);
    data_offset_at
}

/// The AAC track's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioTrack {
    /// Sample rate (Hz), also the track's timescale.
    pub rate: u32,
    /// Channel count.
    pub channels: u16,
    /// The AudioSpecificConfig (the AAC caps' `codec_data`).
    pub asc: Vec<u8>,
}

/// An MPEG-4 descriptor header with a 4-byte length, as most muxers write it.
fn descriptor(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    let l = len as u32;
    out.extend_from_slice(&[
        0x80 | ((l >> 21) & 0x7f) as u8,
        0x80 | ((l >> 14) & 0x7f) as u8,
        0x80 | ((l >> 7) & 0x7f) as u8,
        (l & 0x7f) as u8,
    ]);
}

/// The sound's `trak` (ID 2): an `mp4a` entry with an `esds` holding the AudioSpecificConfig.
fn audio_trak(out: &mut Vec<u8>, a: &AudioTrack) {
    let trak = open_box(out, b"trak");
    let s = open_full(out, b"tkhd", 0, 3);
    u32s(out, 0);
    u32s(out, 0);
    u32s(out, 2);
    u32s(out, 0);
    u32s(out, 0);
    out.extend_from_slice(&[0; 8]);
    u16s(out, 0);
    u16s(out, 1); // alternate group
    u16s(out, 0x0100); // volume
    u16s(out, 0);
    MATRIX.iter().for_each(|m| u32s(out, *m));
    u32s(out, 0);
    u32s(out, 0);
    close_box(out, s);
    let mdia = open_box(out, b"mdia");
    let s = open_full(out, b"mdhd", 0, 0);
    u32s(out, 0);
    u32s(out, 0);
    u32s(out, a.rate);
    u32s(out, 0);
    u16s(out, 0x55c4);
    u16s(out, 0);
    close_box(out, s);
    let s = open_full(out, b"hdlr", 0, 0);
    u32s(out, 0);
    out.extend_from_slice(b"soun");
    out.extend_from_slice(&[0; 12]);
    out.extend_from_slice(b"camstream\0");
    close_box(out, s);
    let minf = open_box(out, b"minf");
    let s = open_full(out, b"smhd", 0, 0);
    out.extend_from_slice(&[0; 4]);
    close_box(out, s);
    let dinf = open_box(out, b"dinf");
    let dref = open_full(out, b"dref", 0, 0);
    u32s(out, 1);
    let url = open_full(out, b"url ", 0, 1);
    close_box(out, url);
    close_box(out, dref);
    close_box(out, dinf);
    let stbl = open_box(out, b"stbl");
    let s = open_full(out, b"stsd", 0, 0);
    u32s(out, 1);
    let e = open_box(out, b"mp4a");
    out.extend_from_slice(&[0; 6]);
    u16s(out, 1);
    out.extend_from_slice(&[0; 8]);
    u16s(out, a.channels);
    u16s(out, 16);
    u16s(out, 0);
    u16s(out, 0);
    u32s(out, a.rate.min(0xffff) << 16);
    let esds = open_full(out, b"esds", 0, 0);
    let dsi = 5 + a.asc.len();
    let dcd = 13 + dsi;
    let es = 3 + 5 + dcd + 5 + 1;
    descriptor(out, 0x03, es);
    u16s(out, 2); // ES_ID
    out.push(0);
    descriptor(out, 0x04, dcd);
    out.push(0x40); // MPEG-4 audio
    out.push(0x15); // audio stream
    out.extend_from_slice(&[0; 3]); // buffer size
    u32s(out, 0); // max bitrate
    u32s(out, 0); // average bitrate
    descriptor(out, 0x05, a.asc.len());
    out.extend_from_slice(&a.asc);
    descriptor(out, 0x06, 1);
    out.push(2);
    close_box(out, esds);
    close_box(out, e);
    close_box(out, s);
    for kind in [b"stts", b"stsc", b"stco"] {
        let s = open_full(out, kind, 0, 0);
        u32s(out, 0);
        close_box(out, s);
    }
    let s = open_full(out, b"stsz", 0, 0);
    u32s(out, 0);
    u32s(out, 0);
    close_box(out, s);
    close_box(out, stbl);
    close_box(out, minf);
    close_box(out, mdia);
    close_box(out, trak);
}

/// The front of one part: its `moof` and the `mdat` header, after which the samples' bytes
/// (`samples[i].size` each, in order) follow. Exports put the bytes straight from the stored
/// files behind it, so a part is never gathered in memory.
pub fn fragment_head(seq: u32, base_dts: u64, samples: &[Sample]) -> Vec<u8> {
    let payload: u64 = samples.iter().map(|s| u64::from(s.size)).sum();
    let mut out = Vec::with_capacity(64 + 16 * samples.len());
    let moof = open_box(&mut out, b"moof");
    let s = open_full(&mut out, b"mfhd", 0, 0);
    u32s(&mut out, seq);
    close_box(&mut out, s);
    let traf = open_box(&mut out, b"traf");
    let s = open_full(&mut out, b"tfhd", 0, 0x02_0000);
    u32s(&mut out, 1);
    close_box(&mut out, s);
    let s = open_full(&mut out, b"tfdt", 1, 0);
    u64s(&mut out, base_dts);
    close_box(&mut out, s);
    let s = open_full(
        &mut out,
        b"trun",
        0,
        0x0001 | 0x0100 | 0x0200 | 0x0400 | 0x0800,
    );
    u32s(&mut out, samples.len() as u32);
    let data_offset_at = out.len();
    u32s(&mut out, 0);
    for x in samples {
        u32s(&mut out, x.duration);
        u32s(&mut out, x.size);
        u32s(&mut out, if x.key { SAMPLE_KEY } else { SAMPLE_DELTA });
        u32s(&mut out, x.cto);
    }
    close_box(&mut out, s);
    close_box(&mut out, traf);
    close_box(&mut out, moof);
    let large = payload + 8 > u64::from(u32::MAX);
    let header = if large { 16 } else { 8 };
    let data_offset = (out.len() - moof + header) as u32;
    out[data_offset_at..data_offset_at + 4].copy_from_slice(&data_offset.to_be_bytes());
    if large {
        u32s(&mut out, 1);
        out.extend_from_slice(b"mdat");
        u64s(&mut out, payload + 16);
    } else {
        u32s(&mut out, (payload + 8) as u32);
        out.extend_from_slice(b"mdat");
    }
    out
}

/// The start of a fragmented MP4 that declares `ticks` (at [`TIMESCALE`]) as its duration, so
/// players show the length before reading every part.
pub fn init_with_duration(track: &Track, ticks: u64) -> Vec<u8> {
    init_with_duration_av(track, None, ticks)
}

/// [`init_with_duration`] with the sound's track too, when given (its own durations stay 0:
/// players take them from the fragments).
pub fn init_with_duration_av(track: &Track, audio: Option<&AudioTrack>, ticks: u64) -> Vec<u8> {
    let mut out = init_segment_av(track, audio);
    let movie =
        (ticks * u64::from(MOVIE_TIMESCALE) / u64::from(TIMESCALE)).min(u64::from(u32::MAX)) as u32;
    let media = ticks.min(u64::from(u32::MAX)) as u32;
    let Some((_, moov)) = find(&out, &[b"moov"]) else {
        return out;
    };
    let mut patch = |path: &[&[u8; 4]], field: usize, v: u32| {
        if let Some((_, off)) = find(&out[moov..], path) {
            let at = moov + off + field;
            out[at..at + 4].copy_from_slice(&v.to_be_bytes());
        }
    };
    patch(&[b"mvhd"], 16, movie);
    patch(&[b"trak", b"tkhd"], 20, movie);
    patch(&[b"trak", b"mdia", b"mdhd"], 16, media);
    patch(&[b"mvex", b"mehd"], 4, movie);
    out
}

/// A box header read from a file.
#[derive(Debug, Clone, Copy)]
struct Header {
    kind: [u8; 4],
    start: u64,
    /// Header length (8, or 16 with a 64-bit size).
    head: u64,
    size: u64,
}

fn read_header(f: &mut File, at: u64, len: u64) -> io::Result<Option<Header>> {
    if at + 8 > len {
        return Ok(None);
    }
    let mut b = [0u8; 16];
    f.read_exact_at(&mut b[..8], at)?;
    let mut size = u64::from(u32::from_be_bytes(b[0..4].try_into().unwrap()));
    let kind: [u8; 4] = b[4..8].try_into().unwrap();
    let mut head = 8;
    if size == 1 {
        if at + 16 > len {
            return Ok(None);
        }
        f.read_exact_at(&mut b[8..16], at + 8)?;
        size = u64::from_be_bytes(b[8..16].try_into().unwrap());
        head = 16;
    } else if size == 0 {
        size = len - at;
    }
    if size < head {
        return Ok(None);
    }
    Ok(Some(Header {
        kind,
        start: at,
        head,
        size,
    }))
}

/// Children of a box body held in memory: (kind, body start, body end).
fn children(buf: &[u8]) -> Vec<([u8; 4], usize, usize)> {
    let mut v = Vec::new();
    let mut i = 0;
    while i + 8 <= buf.len() {
        let size = u32::from_be_bytes(buf[i..i + 4].try_into().unwrap()) as usize;
        if size < 8 || i + size > buf.len() {
            break;
        }
        v.push((buf[i + 4..i + 8].try_into().unwrap(), i + 8, i + size));
        i += size;
    }
    v
}

fn find<'a>(buf: &'a [u8], path: &[&[u8; 4]]) -> Option<(&'a [u8], usize)> {
    let mut cur = buf;
    let mut base = 0;
    for kind in path {
        let (_, s, e) = children(cur).into_iter().find(|(k, _, _)| k == *kind)?;
        base += s;
        cur = &cur[s..e];
    }
    Some((cur, base))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A segment as read back from disk.
#[derive(Debug, Clone)]
pub struct Scan {
    /// The track description.
    pub track: Track,
    /// Every complete sample.
    pub samples: Vec<Sample>,
    /// End of the last complete fragment: bytes past it are a part a crash cut short.
    pub good_len: u64,
    /// The file's length when read.
    pub file_len: u64,
    /// The duration the file itself declares (0 until finalized), in ticks.
    pub declared: u64,
    /// The sound track, when the segment has one (fMP4 only).
    pub audio: Option<AudioTrack>,
    /// The sound's samples (decode times in the sound's timescale, its sample rate).
    pub audio_samples: Vec<Sample>,
}

impl Scan {
    /// Duration of the complete samples, in ticks.
    pub fn duration(&self) -> u64 {
        self.samples
            .last()
            .map_or(0, |s| s.dts + u64::from(s.duration))
    }
}

/// Why a file is not a readable segment.
fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Reads the `moov` of a segment: the track and the declared duration.
fn parse_moov(buf: &[u8]) -> io::Result<(Track, u64)> {
    let (mdhd, _) = find(buf, &[b"trak", b"mdia", b"mdhd"]).ok_or_else(|| invalid("no mdhd"))?;
    let declared = u64::from(be32(mdhd, 16).ok_or_else(|| invalid("short mdhd"))?);
    let (tkhd, _) = find(buf, &[b"trak", b"tkhd"]).ok_or_else(|| invalid("no tkhd"))?;
    let width = be32(tkhd, 76).unwrap_or(0) >> 16;
    let height = be32(tkhd, 80).unwrap_or(0) >> 16;
    let (stsd, _) = find(buf, &[b"trak", b"mdia", b"minf", b"stbl", b"stsd"])
        .ok_or_else(|| invalid("no stsd"))?;
    // stsd: version/flags, count, then the avc1 entry (78 bytes of fields before its boxes).
    let entry = stsd.get(8..).ok_or_else(|| invalid("short stsd"))?;
    let (kind, s, e) = *children(entry)
        .first()
        .ok_or_else(|| invalid("empty stsd"))?;
    if &kind != b"avc1" {
        return Err(invalid("not an H.264 recording"));
    }
    let avc1 = &entry[s..e];
    let (avcc, _) =
        find(avc1.get(78..).unwrap_or_default(), &[b"avcC"]).ok_or_else(|| invalid("no avcC"))?;
    Ok((
        Track {
            width,
            height,
            avcc: avcc.to_vec(),
        },
        declared,
    ))
}

/// Reads the sound's track of a `moov`: the second `trak`, with an `mp4a` entry.
fn parse_audio(buf: &[u8]) -> Option<AudioTrack> {
    let (_, s, e) = children(buf)
        .into_iter()
        .filter(|(k, _, _)| k == b"trak")
        .nth(1)?;
    let trak = &buf[s..e];
    let (mdhd, _) = find(trak, &[b"mdia", b"mdhd"])?;
    let rate = be32(mdhd, 12)?;
    let (stsd, _) = find(trak, &[b"mdia", b"minf", b"stbl", b"stsd"])?;
    let entry = stsd.get(8..)?;
    let (kind, s, e) = *children(entry).first()?;
    if &kind != b"mp4a" {
        return None;
    }
    let mp4a = &entry[s..e];
    let channels = u16::from_be_bytes(mp4a.get(16..18)?.try_into().ok()?);
    let (esds, _) = find(mp4a.get(28..)?, &[b"esds"])?;
    // The DecoderSpecificInfo (tag 5) as this writer lays it out: a 4-byte length.
    let at = esds
        .windows(2)
        .position(|w| w[0] == 0x05 && w[1] & 0x80 != 0)?;
    let n = esds
        .get(at + 1..at + 5)?
        .iter()
        .fold(0usize, |n, b| (n << 7) | usize::from(b & 0x7f));
    let asc = esds.get(at + 5..at + 5 + n)?.to_vec();
    Some(AudioTrack {
        rate,
        channels,
        asc,
    })
}

/// Reads a `moof` (at file offset `start`) into samples (the picture's, then the sound's).
fn parse_moof(
    buf: &[u8],
    start: u64,
    samples: &mut Vec<Sample>,
    audio: &mut Vec<Sample>,
) -> io::Result<()> {
    for (kind, s, e) in children(buf) {
        if &kind != b"traf" {
            continue;
        }
        let traf = &buf[s..e];
        match find(traf, &[b"tfhd"]).and_then(|(t, _)| be32(t, 4)) {
            Some(1) => parse_traf(traf, start, samples)?,
            Some(2) => parse_traf(traf, start, audio)?,
            _ => return Err(invalid("a track this recorder did not write")),
        }
    }
    Ok(())
}

/// Reads one `traf` into samples, with the decode time it declares.
fn parse_traf(buf: &[u8], start: u64, samples: &mut Vec<Sample>) -> io::Result<()> {
    let traf_err = || invalid("bad traf");
    let (tfdt, _) = find(buf, &[b"tfdt"]).ok_or_else(traf_err)?;
    let mut dts = if tfdt.first() == Some(&1) {
        be64(tfdt, 4).ok_or_else(traf_err)?
    } else {
        u64::from(be32(tfdt, 4).ok_or_else(traf_err)?)
    };
    let (trun, _) = find(buf, &[b"trun"]).ok_or_else(traf_err)?;
    let flags = be32(trun, 0).ok_or_else(traf_err)? & 0xff_ffff;
    if flags != 0x0f01 {
        return Err(invalid("a trun this recorder did not write"));
    }
    let count = be32(trun, 4).ok_or_else(traf_err)? as usize;
    let mut offset = start + u64::from(be32(trun, 8).ok_or_else(traf_err)?);
    for i in 0..count {
        let at = 12 + i * 16;
        let duration = be32(trun, at).ok_or_else(traf_err)?;
        let size = be32(trun, at + 4).ok_or_else(traf_err)?;
        let fl = be32(trun, at + 8).ok_or_else(traf_err)?;
        let cto = be32(trun, at + 12).ok_or_else(traf_err)?;
        samples.push(Sample {
            dts,
            duration,
            cto,
            key: fl & 0x0001_0000 == 0,
            size,
            offset,
        });
        dts += u64::from(duration);
        offset += u64::from(size);
    }
    Ok(())
}

/// Reads a segment file: its track and every sample of its complete fragments. With
/// `samples` false only the header is read when the file declares its duration (a finalized
/// segment), which is what listings need.
pub fn scan(path: &Path, samples: bool) -> io::Result<Scan> {
    let mut f = super::nofollow::open_nofollow(path)?;
    let len = f.metadata()?.len();
    let mut at = 0;
    let mut track = None;
    let mut audio = None;
    let mut declared = 0;
    let mut out = Vec::new();
    let mut sound = Vec::new();
    let mut good_len = 0;
    while let Some(h) = read_header(&mut f, at, len)? {
        let end = h.start + h.size;
        if end > len {
            break;
        }
        match &h.kind {
            b"ftyp" => good_len = end,
            b"moov" => {
                let mut buf = vec![0; (h.size - h.head) as usize];
                f.read_exact_at(&mut buf, h.start + h.head)?;
                let (t, d) = parse_moov(&buf)?;
                track = Some(t);
                audio = parse_audio(&buf);
                declared = d;
                good_len = end;
                if declared > 0 && !samples {
                    break;
                }
            }
            b"moof" => {
                // A fragment counts once its mdat is complete too.
                let Some(m) = read_header(&mut f, end, len)? else {
                    break;
                };
                if &m.kind != b"mdat" || m.start + m.size > len || h.size > 1 << 24 {
                    break;
                }
                let mut buf = vec![0; (h.size - h.head) as usize];
                f.read_exact_at(&mut buf, h.start + h.head)?;
                let (before, before_sound) = (out.len(), sound.len());
                let past = |s: &Sample| s.offset + u64::from(s.size) > m.start + m.size;
                if parse_moof(&buf, h.start, &mut out, &mut sound).is_err()
                    || out[before..].last().is_some_and(past)
                    || sound[before_sound..].last().is_some_and(past)
                {
                    out.truncate(before);
                    sound.truncate(before_sound);
                    break;
                }
                good_len = m.start + m.size;
                at = good_len;
                continue;
            }
            _ => {}
        }
        at = end;
    }
    let track =
        track.ok_or_else(|| invalid("no moov: not a recording, or cut before its header"))?;
    if !samples && declared > 0 {
        good_len = len;
    }
    Ok(Scan {
        track,
        samples: out,
        good_len,
        file_len: len,
        declared,
        audio,
        audio_samples: sound,
    })
}

/// Writes the durations of a finished segment (`ticks` at [`TIMESCALE`]) into its `moov`, so
/// tools that read only the header know its length.
pub fn finalize(f: &File, ticks: u64) -> io::Result<()> {
    let len = f.metadata()?.len();
    let mut at = 0;
    let mut file = f.try_clone()?;
    while let Some(h) = read_header(&mut file, at, len)? {
        if &h.kind == b"moov" {
            let mut buf = vec![0; (h.size - h.head) as usize];
            f.read_exact_at(&mut buf, h.start + h.head)?;
            let base = h.start + h.head;
            let movie = (ticks * u64::from(MOVIE_TIMESCALE) / u64::from(TIMESCALE)) as u32;
            let media = ticks.min(u64::from(u32::MAX)) as u32;
            let patch = |path: &[&[u8; 4]], field: usize, v: u32| -> io::Result<()> {
                let (_, off) = find(&buf, path).ok_or_else(|| invalid("moov without a box"))?;
                f.write_all_at(&v.to_be_bytes(), base + (off + field) as u64)
            };
            patch(&[b"mvhd"], 16, movie)?;
            patch(&[b"trak", b"tkhd"], 20, movie)?;
            patch(&[b"trak", b"mdia", b"mdhd"], 16, media)?;
            patch(&[b"mvex", b"mehd"], 4, movie)?;
            // The sound's track (a second trak) in its own timescale.
            for (kind, s, e) in children(&buf) {
                if &kind != b"trak" {
                    continue;
                }
                let trak = &buf[s..e];
                let (Some((_, tk)), Some((mdhd, md))) =
                    (find(trak, &[b"tkhd"]), find(trak, &[b"mdia", b"mdhd"]))
                else {
                    continue;
                };
                if find(&buf, &[b"trak", b"tkhd"]).is_some_and(|(_, o)| o == s + tk) {
                    continue;
                }
                let scale = u64::from(be32(mdhd, 12).unwrap_or(TIMESCALE));
                let own = (u128::from(ticks) * u128::from(scale) / u128::from(TIMESCALE))
                    .min(u128::from(u32::MAX)) as u32;
                f.write_all_at(&movie.to_be_bytes(), base + (s + tk + 20) as u64)?;
                f.write_all_at(&own.to_be_bytes(), base + (s + md + 16) as u64)?;
            }
            return Ok(());
        }
        at = h.start + h.size;
    }
    Err(invalid("no moov"))
}

/// The front of a progressive MP4 of `samples` (with `track`): `ftyp`, `moov` and the `mdat`
/// header, after which the samples' bytes follow in order. `total` is the sum of their sizes.
pub fn progressive_head(track: &Track, samples: &[Sample]) -> Vec<u8> {
    let total: u64 = samples.iter().map(|s| u64::from(s.size)).sum();
    let ticks: u64 = samples.iter().map(|s| u64::from(s.duration)).sum();
    let movie = (ticks * u64::from(MOVIE_TIMESCALE) / u64::from(TIMESCALE)) as u32;
    let mut out = Vec::with_capacity(1024 + samples.len() * 12);
    ftyp(&mut out, false);
    let moov = open_box(&mut out, b"moov");
    movie_header(&mut out, movie);
    let trak = open_box(&mut out, b"trak");
    let mdia = track_start(
        &mut out,
        track,
        movie,
        ticks.min(u64::from(u32::MAX)) as u32,
    );
    let (minf, stbl) = media_info_open(&mut out);
    sample_entry(&mut out, track);
    // stts: runs of equal durations.
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for s in samples {
        match runs.last_mut() {
            Some((n, d)) if *d == s.duration => *n += 1,
            _ => runs.push((1, s.duration)),
        }
    }
    let s = open_full(&mut out, b"stts", 0, 0);
    u32s(&mut out, runs.len() as u32);
    runs.iter().for_each(|(n, d)| {
        u32s(&mut out, *n);
        u32s(&mut out, *d);
    });
    close_box(&mut out, s);
    if samples.iter().any(|s| s.cto != 0) {
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for s in samples {
            match runs.last_mut() {
                Some((n, c)) if *c == s.cto => *n += 1,
                _ => runs.push((1, s.cto)),
            }
        }
        let s = open_full(&mut out, b"ctts", 0, 0);
        u32s(&mut out, runs.len() as u32);
        runs.iter().for_each(|(n, c)| {
            u32s(&mut out, *n);
            u32s(&mut out, *c);
        });
        close_box(&mut out, s);
    }
    let keys: Vec<u32> = (1..)
        .zip(samples)
        .filter(|(_, s)| s.key)
        .map(|(i, _)| i)
        .collect();
    let s = open_full(&mut out, b"stss", 0, 0);
    u32s(&mut out, keys.len() as u32);
    keys.iter().for_each(|k| u32s(&mut out, *k));
    close_box(&mut out, s);
    // One chunk holding every sample: they follow each other in the mdat.
    let s = open_full(&mut out, b"stsc", 0, 0);
    u32s(&mut out, 1);
    u32s(&mut out, 1);
    u32s(&mut out, samples.len() as u32);
    u32s(&mut out, 1);
    close_box(&mut out, s);
    let s = open_full(&mut out, b"stsz", 0, 0);
    u32s(&mut out, 0);
    u32s(&mut out, samples.len() as u32);
    samples.iter().for_each(|x| u32s(&mut out, x.size));
    close_box(&mut out, s);
    let s = open_full(&mut out, b"co64", 0, 0);
    u32s(&mut out, 1);
    let chunk_at = out.len();
    u64s(&mut out, 0);
    close_box(&mut out, s);
    close_box(&mut out, stbl);
    close_box(&mut out, minf);
    close_box(&mut out, mdia);
    close_box(&mut out, trak);
    close_box(&mut out, moov);
    let large = total + 8 > u64::from(u32::MAX);
    if large {
        u32s(&mut out, 1);
        out.extend_from_slice(b"mdat");
        u64s(&mut out, total + 16);
    } else {
        u32s(&mut out, (total + 8) as u32);
        out.extend_from_slice(b"mdat");
    }
    let data_start = out.len() as u64;
    out[chunk_at..chunk_at + 8].copy_from_slice(&data_start.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn track() -> Track {
        Track {
            width: 320,
            height: 240,
            avcc: vec![
                1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 1, 2, 3, 1, 0, 2, 0x68, 9,
            ],
        }
    }

    #[test]
    fn a_cut_fragment_is_not_counted_and_finalize_sets_durations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.mp4");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        f.write_all(&init_segment(&track())).unwrap();
        let mk = |dts: u64, key: bool| Sample {
            dts,
            duration: 6000,
            cto: 0,
            key,
            size: 3,
            offset: 0,
        };
        let a = [mk(0, true), mk(6000, false)];
        f.write_all(&fragment(1, 0, &a, &[b"abc", b"def"])).unwrap();
        let b = [mk(12000, false)];
        let second = fragment(2, 12000, &b, &[b"ghi"]);
        f.write_all(&second[..second.len() - 1]).unwrap();
        let s = scan(&path, true).unwrap();
        assert_eq!(s.track, track());
        assert_eq!(s.samples.len(), 2);
        assert!(s.samples[0].key && !s.samples[1].key);
        assert_eq!(s.duration(), 12000);
        assert!(s.good_len < s.file_len);
        let mut buf = [0u8; 3];
        f.read_exact_at(&mut buf, s.samples[1].offset).unwrap();
        assert_eq!(&buf, b"def");
        f.set_len(s.good_len).unwrap();
        finalize(&f, s.duration()).unwrap();
        let s = scan(&path, false).unwrap();
        assert_eq!(s.declared, 12000);
    }

    #[test]
    fn a_two_track_segment_scans_its_video_and_finalizes_both_durations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("av.mp4");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let sound = AudioTrack {
            rate: 48_000,
            channels: 1,
            asc: vec![0x11, 0x88],
        };
        f.write_all(&init_segment_av(&track(), Some(&sound)))
            .unwrap();
        let v = [Sample {
            dts: 0,
            duration: 9000,
            cto: 0,
            key: true,
            size: 3,
            offset: 0,
        }];
        let a = [Sample {
            dts: 0,
            duration: 1024,
            cto: 0,
            key: true,
            size: 2,
            offset: 0,
        }];
        let part = fragment_av(
            1,
            &Run {
                base_dts: 0,
                samples: &v,
                data: &[b"vid"],
            },
            &Run {
                base_dts: 0,
                samples: &a,
                data: &[b"au"],
            },
        );
        f.write_all(&part).unwrap();
        let s = scan(&path, true).unwrap();
        assert_eq!(s.samples.len(), 1, "only the picture's samples are listed");
        let mut buf = [0u8; 3];
        f.read_exact_at(&mut buf, s.samples[0].offset).unwrap();
        assert_eq!(&buf, b"vid");
        finalize(&f, 90_000).unwrap();
        let all = std::fs::read(&path).unwrap();
        let (moov, _) = find(&all, &[b"moov"]).unwrap();
        let traks: Vec<_> = children(moov)
            .into_iter()
            .filter(|(k, _, _)| k == b"trak")
            .collect();
        assert_eq!(traks.len(), 2);
        let (_, s2, e2) = traks[1];
        let (mdhd, _) = find(&moov[s2..e2], &[b"mdia", b"mdhd"]).unwrap();
        assert_eq!(be32(mdhd, 12), Some(48_000));
        assert_eq!(
            be32(mdhd, 16),
            Some(48_000),
            "one second in the sound's timescale"
        );
        let (stsd, _) = find(&moov[s2..e2], &[b"mdia", b"minf", b"stbl", b"stsd"]).unwrap();
        assert!(stsd.windows(2).any(|w| w == [0x11, 0x88]));
    }

    #[test]
    fn the_progressive_head_points_at_its_data() {
        let samples = [Sample {
            dts: 0,
            duration: 3000,
            cto: 0,
            key: true,
            size: 5,
            offset: 0,
        }];
        let head = progressive_head(&track(), &samples);
        assert_eq!(&head[head.len() - 4..], b"mdat");
        let (co64, _) = find(
            &head,
            &[b"moov", b"trak", b"mdia", b"minf", b"stbl", b"co64"],
        )
        .unwrap();
        assert_eq!(be64(co64, 8), Some(head.len() as u64));
    }
}
