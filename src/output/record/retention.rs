//! Retention: the oldest segments of a stream's folder are deleted first until `keep_hours`,
//! `max_bytes` and `min_free_mb` hold. Only regular files named like segments in that one
//! folder are ever deleted (see [`index::files`]), never the segment being written, and never
//! through a symlink.

use std::io;
use std::path::Path;

use super::index::{self, Stored};
use crate::utc::{self, Nanos};

/// The limits of one stream's recordings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Delete segments that ended before `now - keep`; `None` keeps them.
    pub keep: Option<Nanos>,
    /// Most bytes in the folder; `None` = no limit.
    pub max_bytes: Option<u64>,
    /// Free bytes to keep on the file system; 0 = no limit.
    pub min_free: u64,
    /// The configured segment length: a segment ends no later than this after its start.
    pub segment: Nanos,
}

impl Limits {
    /// From the configuration.
    pub fn of(c: &crate::config::RecordConfig) -> Self {
        Limits {
            keep: (c.keep_hours > 0).then(|| i64::from(c.keep_hours) * 3600 * utc::SECOND),
            max_bytes: (c.max_bytes > 0).then_some(c.max_bytes),
            min_free: c.min_free_mb * 1024 * 1024,
            segment: i64::from(c.segment_s) * utc::SECOND,
        }
    }
}

/// What a retention pass found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    /// Names deleted, oldest first.
    pub deleted: Vec<String>,
    /// Start of the oldest segment kept.
    pub oldest: Option<Nanos>,
    /// Bytes in the folder after the pass.
    pub bytes: u64,
    /// Free bytes on the file system after the pass, if known.
    pub free: Option<u64>,
}

/// Bytes available to an unprivileged writer on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// The end of `files[i]` for the age rule: the next segment's start, and never later than one
/// segment length after its own start.
fn end_of(files: &[Stored], i: usize, segment: Nanos) -> Nanos {
    let own = files[i].start + segment + utc::SECOND;
    files.get(i + 1).map_or(own, |n| n.start.min(own))
}

/// One pass over `dir` at time `now`; `current` names the segment being written (kept).
pub fn enforce(dir: &Path, limits: &Limits, now: Nanos, current: Option<&str>) -> io::Result<Pass> {
    let files = index::files(dir)?;
    let mut pass = Pass::default();
    if files.is_empty() {
        pass.free = free_bytes(dir).ok();
        return Ok(pass);
    }
    let mut total: u64 = files.iter().map(|f| f.bytes).sum();
    let mut free = free_bytes(dir).ok();
    let mut kept = 0;
    for (i, f) in files.iter().enumerate() {
        if current == Some(f.name.as_str()) || i + 1 == files.len() && current.is_none() {
            // The newest file is left to the writer while it may still be writing it.
            break;
        }
        let too_old = limits
            .keep
            .is_some_and(|k| end_of(&files, i, limits.segment) < now - k);
        let too_big = limits.max_bytes.is_some_and(|m| total > m);
        let too_full = limits.min_free > 0 && free.is_some_and(|fr| fr < limits.min_free);
        if !(too_old || too_big || too_full) {
            break;
        }
        match std::fs::remove_file(&f.path) {
            Ok(()) => {
                tracing::info!(file = %f.path.display(), bytes = f.bytes, reason = if too_old { "keep_hours" } else if too_big { "max_bytes" } else { "min_free_mb" }, "Recording deleted by retention");
                total -= f.bytes;
                pass.deleted.push(f.name.clone());
                if too_full {
                    free = free_bytes(dir).ok();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => total -= f.bytes,
            Err(e) => return Err(e),
        }
        kept = i + 1;
    }
    // Event clips' thumbnails go with their segments.
    super::clips::remove_orphans(dir, &pass.deleted);
    pass.oldest = files.get(kept).map(|f| f.start);
    pass.bytes = total;
    pass.free = free_bytes(dir).ok();
    Ok(pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_first_and_never_the_current() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..5)
            .map(|i| format!("{}.mp4", utc::basic(i * 10 * utc::SECOND)))
            .collect();
        for n in &names {
            std::fs::write(dir.path().join(n), vec![0u8; 100]).unwrap();
        }
        std::fs::write(dir.path().join("keep.txt"), vec![0u8; 1000]).unwrap();
        let limits = Limits {
            keep: None,
            max_bytes: Some(250),
            min_free: 0,
            segment: 10 * utc::SECOND,
        };
        let pass = enforce(dir.path(), &limits, 60 * utc::SECOND, Some(&names[4])).unwrap();
        assert_eq!(pass.deleted, names[..3].to_vec());
        assert_eq!(pass.bytes, 200);
        assert_eq!(pass.oldest, Some(30 * utc::SECOND));
        assert!(dir.path().join("keep.txt").exists());
        // By age: everything that ended more than 15 s before now, except the current one.
        let limits = Limits {
            keep: Some(15 * utc::SECOND),
            max_bytes: None,
            ..limits
        };
        let pass = enforce(dir.path(), &limits, 60 * utc::SECOND, Some(&names[4])).unwrap();
        assert_eq!(pass.deleted, vec![names[3].clone()]);
    }
}
