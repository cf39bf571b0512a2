//! Opening recordings without following symlinks: the recorder never reads, writes or deletes
//! through a link someone put in its folder. A leaf, shared by the index, the file scanners
//! (mp4, mkv) and the export.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens a file for reading without following a symlink at its last component.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// Whether `dir` is a real folder (not a symlink); a missing folder is `Ok(false)`.
pub fn real_dir(dir: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_dir() => Ok(true),
        Ok(_) => Err(io::Error::other(format!(
            "{} is not a folder (a symlink or a file): recordings are never written or deleted \
             through a symlink",
            dir.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
