//! What is on disk for a stream: its segment files (regular files named by their UTC start,
//! never through a symlink), their ends read from the files themselves, and the listing the API
//! shows (contiguous spans, and the gaps between them). Nothing is kept beside the files, so a
//! listing after a crash needs no repair step: a segment cut by `kill -9` lists up to its last
//! complete part.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

pub use super::nofollow::{open_nofollow, real_dir};
use super::{mkv, mp4};
use crate::utc::{self, Nanos};

/// Two segments closer than this count as one span (rotation leaves them back to back; a
/// camera restart or a pause leaves a real gap).
pub const CONTIGUOUS: Nanos = 100_000_000;

/// A segment file, as named on disk.
#[derive(Debug, Clone)]
pub struct Stored {
    /// File name (`20261202T025317.123Z.mp4`).
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// UTC start, from the name.
    pub start: Nanos,
    /// Size in bytes.
    pub bytes: u64,
    /// Last modification.
    pub mtime: SystemTime,
}

/// The start of the segment a file name stands for (`<UTC start>.mp4|.mkv`); `None` for any
/// other name.
fn segment_start(name: &str) -> Option<Nanos> {
    let (stem, ext) = name.rsplit_once('.')?;
    if ext != "mp4" && ext != "mkv" {
        return None;
    }
    utc::parse_basic(stem)
}

/// The segment files in `dir`, oldest first: regular files named `<UTC start>.mp4|.mkv`.
/// Anything else (other files, symlinks, folders) is not ours and is left alone.
pub fn files(dir: &Path) -> io::Result<Vec<Stored>> {
    if !real_dir(dir)? {
        return Ok(Vec::new());
    }
    let mut v = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(start) = segment_start(&name) else {
            continue;
        };
        // DirEntry::metadata does not follow symlinks.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.file_type().is_file() {
            continue;
        }
        v.push(Stored {
            path: entry.path(),
            name,
            start,
            bytes: meta.len(),
            mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    v.sort_by(|a, b| a.start.cmp(&b.start).then(a.name.cmp(&b.name)));
    Ok(v)
}

/// Reads a segment of either format.
pub fn scan(path: &Path, samples: bool) -> io::Result<mp4::Scan> {
    if path.extension().is_some_and(|e| e == "mkv") {
        mkv::scan(path, samples)
    } else {
        mp4::scan(path, samples)
    }
}

/// A segment with its extent.
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    /// File name.
    pub name: String,
    /// UTC start.
    #[serde(serialize_with = "ser_time")]
    pub start: Nanos,
    /// UTC end of its last complete part.
    #[serde(serialize_with = "ser_time")]
    pub end: Nanos,
    /// Seconds it covers.
    pub duration_s: f64,
    /// Size in bytes.
    pub bytes: u64,
    #[serde(skip)]
    /// Full path.
    pub path: PathBuf,
}

fn ser_time<S: serde::Serializer>(t: &Nanos, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&utc::rfc3339(*t))
}

type CacheKey = (PathBuf, u64, SystemTime);

/// Durations already read, by path, size and mtime: a finished segment is read once.
static DURATIONS: Mutex<Option<HashMap<CacheKey, Nanos>>> = Mutex::new(None);

fn duration_of(f: &Stored) -> io::Result<Nanos> {
    let key = (f.path.clone(), f.bytes, f.mtime);
    if let Some(d) = DURATIONS.lock().unwrap().as_ref().and_then(|m| m.get(&key)) {
        return Ok(*d);
    }
    let s = scan(&f.path, false)?;
    let ticks = if s.declared > 0 {
        s.declared
    } else {
        s.duration()
    };
    let d = (ticks as i128 * 1_000_000_000 / i128::from(mp4::TIMESCALE)) as Nanos;
    let mut cache = DURATIONS.lock().unwrap();
    let m = cache.get_or_insert_with(HashMap::new);
    if m.len() > 100_000 {
        m.clear();
    }
    m.insert(key, d);
    Ok(d)
}

/// The segments of `dir` that overlap `[from, to)`, oldest first. Files that cannot be read
/// (cut before their header, foreign) are skipped.
pub fn segments(dir: &Path, from: Nanos, to: Nanos) -> io::Result<Vec<Segment>> {
    let files = files(dir)?;
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        if f.start >= to {
            break;
        }
        // A segment never reaches past the next one's start: skip reading the ones that end
        // before the range for sure.
        if files.get(i + 1).is_some_and(|n| n.start <= from) {
            continue;
        }
        let Ok(d) = duration_of(f) else { continue };
        let end = f.start + d;
        if end <= from || d == 0 {
            continue;
        }
        out.push(Segment {
            name: f.name.clone(),
            start: f.start,
            end,
            duration_s: d as f64 / 1e9,
            bytes: f.bytes,
            path: f.path.clone(),
        });
    }
    Ok(out)
}

/// One page of a listing: segments overlapping `[from, to)` whose names sort after `after`,
/// at most `limit`, oldest first, and the cursor of the next page (the last name) when more
/// follow. Only the page's files are opened (the folder's names are read, nothing else).
pub fn page(
    dir: &Path,
    from: Nanos,
    to: Nanos,
    after: Option<&str>,
    limit: usize,
) -> io::Result<(Vec<Segment>, Option<String>)> {
    if !real_dir(dir)? {
        return Ok((Vec::new(), None));
    }
    let mut names: Vec<(Nanos, String)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let Ok(name) = entry?.file_name().into_string() else {
            continue;
        };
        let Some(start) = segment_start(&name) else {
            continue;
        };
        if start < to {
            names.push((start, name));
        }
    }
    names.sort();
    // The last segment starting at or before `from` may reach into the range.
    let first = names.partition_point(|(s, _)| *s <= from).saturating_sub(1);
    let mut out = Vec::new();
    let mut next = None;
    for (start, name) in &names[first..] {
        if after.is_some_and(|a| name.as_str() <= a) {
            continue;
        }
        if out.len() == limit {
            next = out.last().map(|s: &Segment| s.name.clone());
            break;
        }
        let path = dir.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.file_type().is_file() {
            continue;
        }
        let f = Stored {
            name: name.clone(),
            path,
            start: *start,
            bytes: meta.len(),
            mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        };
        let Ok(d) = duration_of(&f) else { continue };
        if f.start + d <= from || d == 0 {
            continue;
        }
        out.push(Segment {
            name: f.name,
            start: f.start,
            end: f.start + d,
            duration_s: d as f64 / 1e9,
            bytes: f.bytes,
            path: f.path,
        });
    }
    Ok((out, next))
}

/// Contiguous recording.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    /// UTC start.
    #[serde(serialize_with = "ser_time")]
    pub start: Nanos,
    /// UTC end.
    #[serde(serialize_with = "ser_time")]
    pub end: Nanos,
    /// Seconds covered.
    pub duration_s: f64,
    /// Bytes of its segments.
    pub bytes: u64,
    /// Its segments.
    pub segments: Vec<Segment>,
}

/// Time without recording between two spans.
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    /// UTC start (end of the span before).
    #[serde(serialize_with = "ser_time")]
    pub start: Nanos,
    /// UTC end (start of the span after).
    #[serde(serialize_with = "ser_time")]
    pub end: Nanos,
    /// Seconds missing.
    pub duration_s: f64,
}

/// Groups segments (oldest first) into spans and the gaps between them.
pub fn spans(segments: Vec<Segment>) -> (Vec<Span>, Vec<Gap>) {
    let mut spans: Vec<Span> = Vec::new();
    let mut gaps = Vec::new();
    for s in segments {
        match spans.last_mut() {
            Some(last) if s.start - last.end <= CONTIGUOUS => {
                last.end = last.end.max(s.end);
                last.bytes += s.bytes;
                last.segments.push(s);
            }
            last => {
                if let Some(l) = last {
                    gaps.push(Gap {
                        start: l.end,
                        end: s.start,
                        duration_s: (s.start - l.end) as f64 / 1e9,
                    });
                }
                spans.push(Span {
                    start: s.start,
                    end: s.end,
                    duration_s: 0.0,
                    bytes: s.bytes,
                    segments: vec![s],
                });
            }
        }
    }
    for s in &mut spans {
        s.duration_s = (s.end - s.start) as f64 / 1e9;
    }
    (spans, gaps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start_s: i64, end_s: i64) -> Segment {
        Segment {
            name: String::new(),
            start: start_s * utc::SECOND,
            end: end_s * utc::SECOND,
            duration_s: (end_s - start_s) as f64,
            bytes: 10,
            path: PathBuf::new(),
        }
    }

    #[test]
    fn gaps_split_spans() {
        let (spans, gaps) = spans(vec![seg(0, 5), seg(5, 10), seg(12, 15)]);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].segments.len(), 2);
        assert_eq!(spans[0].bytes, 20);
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0].duration_s, 2.0);
    }

    #[test]
    fn only_our_regular_files_count() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("20261202T025317.123Z.mp4"), b"x").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        std::fs::write(dir.path().join("20261202T025317.123Z.txt"), b"x").unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("20261202T025318.000Z.mp4");
        std::fs::write(&target, b"x").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("20261202T025318.000Z.mp4")).unwrap();
        let f = files(dir.path()).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].name, "20261202T025317.123Z.mp4");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        assert!(
            files(&link).is_err(),
            "a symlinked stream folder is refused"
        );
    }
}
