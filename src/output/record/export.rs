//! One playable MP4 of a time range, made from stored segments without re-encoding: a
//! progressive MP4 header built in memory, followed by the stored samples read straight from
//! the segment files. Nothing is copied to a temporary file; the whole file's length is known
//! up front, so it is served with `Content-Length`, a strong ETag and byte ranges.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::index::{self, CONTIGUOUS};
use super::mp4::{self, Sample, TIMESCALE};
use crate::utc::{self, Nanos};

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

/// A byte range of a stored segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Piece {
    path: PathBuf,
    offset: u64,
    len: u64,
}

/// A virtual MP4: `head`, then the pieces' bytes.
#[derive(Debug, Clone)]
pub struct Export {
    head: Vec<u8>,
    pieces: Vec<Piece>,
    /// Total length in bytes.
    pub len: u64,
    /// Strong ETag (quoted).
    pub etag: String,
    /// UTC of its first frame (the keyframe at or before the requested start).
    pub start: Nanos,
    /// Seconds it plays.
    pub duration_s: f64,
}

fn ticks_to_ns(t: u64) -> Nanos {
    (i128::from(t) * 1_000_000_000 / i128::from(TIMESCALE)) as Nanos
}

/// Builds the MP4 of `[start, start + duration)` from the segments in `dir`.
pub fn build(dir: &Path, start: Nanos, duration: Nanos) -> Result<Export, ExportError> {
    let end = start + duration;
    let empty = || ExportError::Empty(utc::rfc3339(start), utc::rfc3339(end));
    let segments = index::segments(dir, start, end)?;
    // (UTC, sample, path), in order.
    let mut all: Vec<(Nanos, Sample, PathBuf)> = Vec::new();
    let mut track = None;
    let mut prev_end: Option<Nanos> = None;
    for seg in &segments {
        let Ok(scan) = index::scan(&seg.path, true) else {
            continue;
        };
        match &track {
            None => track = Some(scan.track.clone()),
            // A new picture size cannot share the track: the file ends before it.
            Some(t) if *t != scan.track => break,
            Some(_) => {}
        }
        // A gap between segments: the frame before it stays on screen for the gap, so the
        // file's time line matches the wall clock.
        if let (Some(pe), Some(last)) = (prev_end, all.last_mut())
            && seg.start - pe > CONTIGUOUS
        {
            let gap = ((seg.start - pe) as i128 * i128::from(TIMESCALE) / 1_000_000_000) as u64;
            last.1.duration = (u64::from(last.1.duration) + gap).min(u64::from(u32::MAX)) as u32;
        }
        for s in scan.samples {
            all.push((seg.start + ticks_to_ns(s.dts), s, seg.path.clone()));
        }
        prev_end = Some(seg.end);
    }
    let track = track.ok_or_else(empty)?;
    let first = all
        .iter()
        .rposition(|(t, s, _)| s.key && *t <= start)
        .or_else(|| all.iter().position(|(_, s, _)| s.key))
        .ok_or_else(empty)?;
    let last = all
        .iter()
        .rposition(|(t, _, _)| *t < end)
        .ok_or_else(empty)?;
    if last < first {
        return Err(empty());
    }
    let chosen = &all[first..=last];
    let samples: Vec<Sample> = chosen.iter().map(|(_, s, _)| *s).collect();
    let mut pieces: Vec<Piece> = Vec::new();
    for (_, s, path) in chosen {
        match pieces.last_mut() {
            Some(p) if p.path == *path && p.offset + p.len == s.offset => {
                p.len += u64::from(s.size)
            }
            _ => pieces.push(Piece {
                path: path.clone(),
                offset: s.offset,
                len: u64::from(s.size),
            }),
        }
    }
    let head = mp4::progressive_head(&track, &samples);
    let len = head.len() as u64 + pieces.iter().map(|p| p.len).sum::<u64>();
    let mut h = std::hash::DefaultHasher::new();
    head.hash(&mut h);
    pieces.hash(&mut h);
    let ticks: u64 = samples.iter().map(|s| u64::from(s.duration)).sum();
    Ok(Export {
        head,
        pieces,
        len,
        etag: format!("\"{:016x}-{len:x}\"", h.finish()),
        start: chosen[0].0,
        duration_s: ticks as f64 / f64::from(TIMESCALE),
    })
}

impl Export {
    /// Reads up to `max` bytes from `from` into `out`, keeping the last opened segment in
    /// `open` for the next call.
    pub fn read(
        &self,
        from: u64,
        max: usize,
        open: &mut Option<(PathBuf, File)>,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let mut at = from;
        let stop = (from + max as u64).min(self.len);
        let head = self.head.len() as u64;
        if at < head {
            let n = stop.min(head);
            out.extend_from_slice(&self.head[at as usize..n as usize]);
            at = n;
        }
        let mut base = head;
        for p in &self.pieces {
            if at >= stop {
                break;
            }
            let p_end = base + p.len;
            if at < p_end {
                let n = (stop.min(p_end) - at) as usize;
                if open.as_ref().is_none_or(|(path, _)| *path != p.path) {
                    *open = Some((p.path.clone(), index::open_nofollow(&p.path)?));
                }
                let f = &open.as_ref().unwrap().1;
                let old = out.len();
                out.resize(old + n, 0);
                f.read_exact_at(&mut out[old..], p.offset + (at - base))?;
                at += n as u64;
            }
            base = p_end;
        }
        Ok(())
    }
}
