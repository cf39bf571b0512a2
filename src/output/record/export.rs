//! One playable MP4 of a time range, made from stored segments without re-encoding: a
//! fragmented MP4 (an init part, then one `moof`+`mdat` per GOP of each stored segment) whose
//! parts are made one segment at a time as the body is read, with the samples' bytes read
//! straight from the segment files. Memory is bounded by one segment's frame table, never by
//! the range's length.
//!
//! A short range (up to [`SEEKABLE_NS`]) is measured first (one pass over its segments'
//! frame tables, keeping one size per segment), so it is served with `Content-Length` and byte
//! ranges and a browser's `<video>` can seek; a longer one is streamed without a length.

use std::collections::VecDeque;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::index::{self, CONTIGUOUS, Segment};
use super::mp4::{self, AudioTrack, Run, Sample, TIMESCALE};
use crate::utc::{self, Nanos};

/// Longest range served with a length and byte ranges (an hour); longer ones are streamed.
pub const SEEKABLE_NS: Nanos = 3600 * utc::SECOND;
/// Most frames in one part, so a source with rare keyframes still makes small parts.
const MAX_PART_FRAMES: usize = 600;

/// Why no MP4 can be made.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Nothing recorded in the range.
    #[error("nothing was recorded between {0} and {1}")]
    Empty(String, String),
    /// The stored files could not be read.
    #[error("cannot read the recordings: {0}")]
    Io(#[from] io::Error),
}

fn ticks_to_ns(t: u64) -> Nanos {
    (i128::from(t) * 1_000_000_000 / i128::from(TIMESCALE)) as Nanos
}

fn ns_to_ticks(ns: Nanos) -> u64 {
    (i128::from(ns.max(0)) * i128::from(TIMESCALE) / 1_000_000_000) as u64
}

/// A fragmented MP4 of a range: what is known before the first byte is sent.
#[derive(Debug)]
pub struct Export {
    head: Vec<u8>,
    /// The segments it takes frames from (one picture size), in order.
    segments: Vec<Segment>,
    /// The sound's track, when the first segment has one: segments with the same one add
    /// their sound.
    audio: Option<AudioTrack>,
    /// Index, in the first segment's frames, of the keyframe it starts with.
    first_frame: usize,
    /// End of the range (exclusive).
    end: Nanos,
    /// Bytes each segment contributes, when measured (short ranges).
    sizes: Option<Vec<u64>>,
    /// Total length in bytes, when measured.
    pub len: Option<u64>,
    /// Strong ETag (quoted), from the segment files' names, sizes and times and the range.
    pub etag: String,
    /// UTC of its first frame (the keyframe at or before the requested start).
    pub start: Nanos,
    /// Seconds it plays (measured, or the recorded extent for a streamed range).
    pub duration_s: f64,
}

/// One part ready to send: its header, then byte ranges (offset, length) of a segment file.
struct Part {
    head: Vec<u8>,
    pieces: Vec<(u64, u64)>,
}

impl Part {
    fn len(&self) -> u64 {
        self.head.len() as u64 + self.pieces.iter().map(|p| p.1).sum::<u64>()
    }
}

/// Opens the MP4 of `[start, start + duration)` from the segments in `dir`: finds its first
/// keyframe and, for a short range, measures it.
pub fn open(dir: &Path, start: Nanos, duration: Nanos) -> Result<Export, ExportError> {
    let end = start + duration;
    let empty = || ExportError::Empty(utc::rfc3339(start), utc::rfc3339(end));
    let mut segments = index::segments(dir, start, end)?;
    // The first segment with a usable keyframe: the last one at or before `start`, else the
    // first one after it.
    let mut found = None;
    while !segments.is_empty() {
        if let Ok(scan) = index::scan(&segments[0].path, true) {
            let t0 = segments[0].start;
            let at = |s: &Sample| t0 + ticks_to_ns(s.dts);
            let pick = scan
                .samples
                .iter()
                .rposition(|s| s.key && at(s) <= start)
                .or_else(|| scan.samples.iter().position(|s| s.key));
            if let Some(i) = pick {
                if at(&scan.samples[i]) >= end {
                    break;
                }
                found = Some((i, at(&scan.samples[i]), scan.track, scan.audio));
                break;
            }
        }
        segments.remove(0);
    }
    let (first_frame, first_at, track, audio) = found.ok_or_else(empty)?;
    // A new picture size cannot share the track: the file ends before it.
    let mut keep = 1;
    while keep < segments.len() {
        match index::scan(&segments[keep].path, false) {
            Ok(s) if s.track == track => keep += 1,
            Ok(_) => break,
            // An unreadable segment is skipped when its turn comes.
            Err(_) => keep += 1,
        }
    }
    segments.truncate(keep);
    let mut h = std::hash::DefaultHasher::new();
    (start, end).hash(&mut h);
    for s in &segments {
        (&s.name, s.bytes, s.end).hash(&mut h);
    }
    let mut export = Export {
        head: Vec::new(),
        segments,
        audio,
        first_frame,
        end,
        sizes: None,
        len: None,
        etag: String::new(),
        start: first_at,
        duration_s: 0.0,
    };
    let recorded_end = export.segments.last().map_or(first_at, |s| s.end).min(end);
    let mut ticks = ns_to_ticks(recorded_end - first_at);
    if duration <= SEEKABLE_NS {
        let mut sizes = Vec::with_capacity(export.segments.len());
        let mut last_end = 0;
        for k in 0..export.segments.len() {
            let (parts, done, until) = export.parts_of(k)?;
            sizes.push(parts.iter().map(Part::len).sum());
            if until > 0 {
                last_end = until;
            }
            if done {
                break;
            }
        }
        ticks = last_end;
        export.sizes = Some(sizes);
    }
    export.head = mp4::init_with_duration_av(&track, export.audio.as_ref(), ticks);
    export.duration_s = ticks as f64 / f64::from(TIMESCALE);
    if let Some(sizes) = &export.sizes {
        export.len = Some(export.head.len() as u64 + sizes.iter().sum::<u64>());
    }
    let len = export.len.map_or(String::from("s"), |l| format!("{l:x}"));
    export.etag = format!("\"{:016x}-{len}\"", h.finish());
    Ok(export)
}

impl Export {
    /// The parts of segment `k`, whether the range ends in it, and the decode time its last
    /// frame ends at (0 when it gives none).
    fn parts_of(&self, k: usize) -> io::Result<(Vec<Part>, bool, u64)> {
        let seg = &self.segments[k];
        let scan = match index::scan(&seg.path, true) {
            Ok(s) => s,
            // Deleted by retention since, or unreadable: its time shows as a frozen frame.
            Err(_) if k > 0 => return Ok((Vec::new(), false, 0)),
            Err(e) => return Err(e),
        };
        let from = if k == 0 { self.first_frame } else { 0 };
        let mut chosen: Vec<(u64, Sample)> = Vec::new();
        let mut done = false;
        for s in scan.samples.iter().skip(from) {
            let at = seg.start + ticks_to_ns(s.dts);
            if at >= self.end {
                done = true;
                break;
            }
            chosen.push((ns_to_ticks(at - self.start), *s));
        }
        let next = self.segments.get(k + 1);
        if next.is_none() {
            done = true;
        }
        // A gap before the next segment: the frame before it stays on screen for the gap, so
        // the file's time line matches the wall clock.
        if !done
            && let (Some(n), Some(last)) = (next, chosen.last_mut())
            && n.start - seg.end > CONTIGUOUS
        {
            let until = ns_to_ticks(n.start.min(self.end) - self.start);
            let d = until.saturating_sub(last.0).min(u64::from(u32::MAX)) as u32;
            last.1.duration = last.1.duration.max(d);
        }
        let until = chosen.last().map_or(0, |(t, s)| t + u64::from(s.duration));
        // The sound in the range, each with its time on the export's line (90 kHz ticks, to
        // find its part) and its decode time in the sound's timescale.
        let mut sound: VecDeque<(u64, Sample)> = VecDeque::new();
        if let Some(a) = self
            .audio
            .as_ref()
            .filter(|a| scan.audio.as_ref() == Some(*a))
        {
            let rate = i128::from(a.rate);
            for x in &scan.audio_samples {
                let at = seg.start + (i128::from(x.dts) * 1_000_000_000 / rate) as Nanos;
                if at < self.start || at >= self.end {
                    continue;
                }
                let rel = at - self.start;
                let mut x = *x;
                x.dts = (i128::from(rel) * rate / 1_000_000_000) as u64;
                sound.push_back((ns_to_ticks(rel), x));
            }
        }
        let mut parts = Vec::new();
        let mut i = 0;
        while i < chosen.len() {
            let mut j = i + 1;
            while j < chosen.len() && !chosen[j].1.key && j - i < MAX_PART_FRAMES {
                j += 1;
            }
            let run = &chosen[i..j];
            let samples: Vec<Sample> = run.iter().map(|(_, s)| *s).collect();
            let seq = (k * 10_000 + parts.len() + 1).min(u32::MAX as usize) as u32;
            let last = j >= chosen.len();
            let mut audio: Vec<Sample> = Vec::new();
            while let Some((t, x)) = sound.front() {
                if !last && *t >= chosen[j].0 {
                    break;
                }
                audio.push(*x);
                sound.pop_front();
            }
            let head = if self.audio.is_some() {
                let video = Run {
                    base_dts: run[0].0,
                    samples: &samples,
                    data: &[],
                };
                let sound = Run {
                    base_dts: audio.first().map_or(0, |x| x.dts),
                    samples: &audio,
                    data: &[],
                };
                mp4::fragment_head_av(seq, &video, &sound)
            } else {
                mp4::fragment_head(seq, run[0].0, &samples)
            };
            let mut pieces: Vec<(u64, u64)> = Vec::new();
            for s in samples.iter().chain(&audio) {
                match pieces.last_mut() {
                    Some(p) if p.0 + p.1 == s.offset => p.1 += u64::from(s.size),
                    _ => pieces.push((s.offset, u64::from(s.size))),
                }
            }
            parts.push(Part { head, pieces });
            i = j;
        }
        Ok((parts, done, until))
    }

    /// A reader of bytes `[from, to)` (`to` `None`: to the end).
    pub fn reader(self: &Arc<Self>, from: u64, to: Option<u64>) -> Reader {
        let mut r = Reader {
            export: self.clone(),
            at: 0,
            from,
            to,
            items: VecDeque::new(),
            item_pos: 0,
            file: None,
            next_segment: 0,
            done: false,
            head_sent: false,
        };
        // Whole segments before `from` are skipped by their measured size, unread.
        let head = self.head.len() as u64;
        if from >= head
            && let Some(sizes) = &self.sizes
        {
            let mut base = head;
            let mut k = 0;
            while k < sizes.len() && base + sizes[k] <= from {
                base += sizes[k];
                k += 1;
            }
            r.next_segment = k;
            r.at = base;
            r.head_sent = true;
        }
        r
    }
}

/// What comes next in the body: bytes made in memory, or a byte range of the current segment.
enum Item {
    Mem(Vec<u8>),
    File(u64, u64),
}

/// Reads an export's bytes in order, one segment's frame table in memory at a time.
pub struct Reader {
    export: Arc<Export>,
    /// Position in the file of the next byte.
    at: u64,
    from: u64,
    to: Option<u64>,
    items: VecDeque<Item>,
    /// Bytes of the front item already passed.
    item_pos: u64,
    file: Option<File>,
    next_segment: usize,
    done: bool,
    head_sent: bool,
}

impl Reader {
    /// The next chunk of at most `max` bytes; empty at the end.
    pub fn next_chunk(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let stop = self.to.unwrap_or(u64::MAX);
        while out.len() < max && self.at < stop {
            if self.items.is_empty() && !self.refill()? {
                break;
            }
            let Some(item) = self.items.front() else {
                break;
            };
            let item_len = match item {
                Item::Mem(v) => v.len() as u64,
                Item::File(_, l) => *l,
            };
            let remaining = item_len - self.item_pos;
            let n = if self.at < self.from {
                // Before the requested range: passed over without reading.
                remaining.min(self.from - self.at)
            } else {
                let n = remaining.min((max - out.len()) as u64).min(stop - self.at);
                match item {
                    Item::Mem(v) => {
                        let p = self.item_pos as usize;
                        out.extend_from_slice(&v[p..p + n as usize]);
                    }
                    Item::File(offset, _) => {
                        let f = self
                            .file
                            .as_ref()
                            .ok_or_else(|| io::Error::other("segment not open"))?;
                        let old = out.len();
                        out.resize(old + n as usize, 0);
                        f.read_exact_at(&mut out[old..], offset + self.item_pos)?;
                    }
                }
                n
            };
            self.at += n;
            self.item_pos += n;
            if self.item_pos == item_len {
                self.items.pop_front();
                self.item_pos = 0;
            }
        }
        Ok(out)
    }

    /// Queues the next segment's parts (or the header); false at the end.
    fn refill(&mut self) -> io::Result<bool> {
        let e = self.export.clone();
        if !self.head_sent {
            self.head_sent = true;
            self.items.push_back(Item::Mem(e.head.clone()));
            return Ok(true);
        }
        while !self.done && self.next_segment < e.segments.len() {
            let k = self.next_segment;
            self.next_segment += 1;
            let (parts, done, _) = e.parts_of(k)?;
            self.done = done;
            if parts.is_empty() {
                continue;
            }
            self.file = Some(index::open_nofollow(&e.segments[k].path)?);
            for p in parts {
                self.items.push_back(Item::Mem(p.head));
                for (offset, len) in p.pieces {
                    self.items.push_back(Item::File(offset, len));
                }
            }
            return Ok(true);
        }
        Ok(false)
    }
}
