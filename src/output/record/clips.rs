//! Event clips (`record.mode = "events"`): the encoded pictures of the last seconds kept in
//! memory, whole GOPs, bounded by `pre_s` (plus the GOP that reaches back that far) and by
//! `ring_max_bytes`, so a clip written on `motion_start` can begin at a keyframe at least
//! `pre_s` before the motion. The writer owns the ring; nothing here touches the disk.

use std::collections::VecDeque;

use super::writer::Frame;
use crate::utc::Nanos;

/// The pre-roll ring.
pub struct Ring {
    frames: VecDeque<Frame>,
    bytes: u64,
    pre_ns: u64,
    max_bytes: u64,
}

impl Ring {
    /// A ring keeping `pre_s` seconds (from a keyframe) within `max_bytes`.
    pub fn new(pre_s: u32, max_bytes: u64) -> Self {
        Ring {
            frames: VecDeque::new(),
            bytes: 0,
            pre_ns: u64::from(pre_s) * 1_000_000_000,
            max_bytes,
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds a picture, then drops whole GOPs from the front that the pre-roll no longer needs
    /// or the byte bound cannot keep. A ring never starts with a picture that is not a keyframe.
    pub fn push(&mut self, f: Frame) {
        if self.frames.is_empty() && !f.key {
            return;
        }
        self.bytes += f.buffer.size() as u64;
        let newest = f.utc;
        self.frames.push_back(f);
        // The latest keyframe at least `pre_ns` old is where a clip would start: everything
        // before it can go.
        let horizon = newest - self.pre_ns as Nanos;
        if let Some(k) = self
            .frames
            .iter()
            .rposition(|f| f.key && f.utc <= horizon)
            .filter(|k| *k > 0)
        {
            self.drop_front(k);
        }
        while self.bytes > self.max_bytes && !self.frames.is_empty() {
            let next = self
                .frames
                .iter()
                .skip(1)
                .position(|f| f.key)
                .map_or(self.frames.len(), |k| k + 1);
            self.drop_front(next);
        }
    }

    fn drop_front(&mut self, n: usize) {
        for f in self.frames.drain(..n) {
            self.bytes -= f.buffer.size() as u64;
        }
    }

    /// The pictures a clip triggered at `trigger` (UTC) starts with: from the latest keyframe
    /// at least `pre_s` before it (or the oldest kept, when the ring holds less), to the newest.
    /// The ring keeps them, for a next event.
    pub fn preroll(&self, trigger: Nanos) -> Vec<Frame> {
        let start = trigger - self.pre_ns as Nanos;
        let k = self
            .frames
            .iter()
            .rposition(|f| f.key && f.utc <= start)
            .unwrap_or(0);
        self.frames.iter().skip(k).cloned().collect()
    }
}

/// The thumbnail of event `event_id` whose clip begins with segment `segment` (a file name):
/// `<segment start>.<event_id>.jpg`, beside the segment.
pub fn thumbnail_name(segment: &str, event_id: &str) -> String {
    let stem = segment.rsplit_once('.').map_or(segment, |(s, _)| s);
    format!("{stem}.{event_id}.jpg")
}

/// Whether `id` can be an event id (`<stream>-<unix ms>`): safe as part of a file name.
pub fn valid_event_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Splits a thumbnail's file name into its segment's start stem and its event id.
fn parse_thumbnail(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_suffix(".jpg")?;
    // The segment stem is a basic UTC time ending in 'Z' (`20261207T163851.566Z`).
    let (stem, id) = rest.split_once("Z.")?;
    valid_event_id(id).then_some((&rest[..stem.len() + 1], id))
}

/// One event clip in a listing.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClipEvent {
    /// The motion event.
    pub event_id: String,
    /// The segment the clip begins with.
    pub segment: String,
    /// The thumbnail's path on the HTTP API.
    pub thumbnail: String,
}

/// The event clips among `segments` of `stream` in `dir`, from their thumbnails.
pub fn events_of(dir: &std::path::Path, stream: &str, segments: &[String]) -> Vec<ClipEvent> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let stems: std::collections::HashMap<&str, &String> = segments
        .iter()
        .map(|s| (s.rsplit_once('.').map_or(s.as_str(), |(a, _)| a), s))
        .collect();
    let mut v: Vec<ClipEvent> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            let (stem, id) = parse_thumbnail(&name)?;
            let segment = stems.get(stem)?;
            Some(ClipEvent {
                event_id: id.to_string(),
                segment: (*segment).clone(),
                thumbnail: format!("/recordings/{stream}/events/{id}.jpg"),
            })
        })
        .collect();
    v.sort_by(|a, b| a.segment.cmp(&b.segment));
    v
}

/// The thumbnail file of `event_id` in `dir`, if any.
pub fn find_thumbnail(dir: &std::path::Path, event_id: &str) -> Option<std::path::PathBuf> {
    if !valid_event_id(event_id) {
        return None;
    }
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name()
                .to_str()
                .and_then(parse_thumbnail)
                .is_some_and(|(_, id)| id == event_id)
        })
        .map(|e| e.path())
}

/// Removes thumbnails whose segment is gone (after retention deleted it).
pub fn remove_orphans(dir: &std::path::Path, deleted: &[String]) {
    if deleted.is_empty() {
        return;
    }
    let gone: std::collections::HashSet<&str> = deleted
        .iter()
        .map(|s| s.rsplit_once('.').map_or(s.as_str(), |(a, _)| a))
        .collect();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if parse_thumbnail(&name).is_some_and(|(stem, _)| gone.contains(stem)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::output::record::mp4::Track;

    fn frame(i: u64, key: bool, size: usize) -> Frame {
        let ns = i * 100_000_000;
        Frame {
            buffer: gst::Buffer::with_size(size).unwrap(),
            pts: ns,
            dts: ns,
            key,
            utc: 1_000_000_000_000 + ns as Nanos,
            seq: i,
            track: Arc::new(Track {
                width: 16,
                height: 16,
                avcc: Vec::new(),
            }),
        }
    }

    #[test]
    fn keeps_a_keyframe_at_least_pre_s_back_and_whole_gops_within_the_bytes() {
        gst::init().unwrap();
        // 10 fps, a keyframe every 10 pictures (1 s), pre-roll 2 s.
        let mut r = Ring::new(2, 1 << 20);
        r.push(frame(0, false, 10));
        assert_eq!(r.bytes(), 0, "a ring never starts mid-GOP");
        for i in 1..=55 {
            r.push(frame(i, i % 10 == 0, 1000));
        }
        let first = &r.frames[0];
        assert!(first.key);
        // Newest at 5.5 s: the latest keyframe at or before 3.5 s is at 3.0 s.
        assert_eq!(first.seq, 30);
        let p = r.preroll(frames_utc(55));
        assert!(p[0].key && p[0].seq == 30, "{}", p[0].seq);
        assert_eq!(p.len(), 26);
        // Bytes bound: whole GOPs go from the front.
        let mut small = Ring::new(2, 15_000);
        for i in 10..=55 {
            small.push(frame(i, i % 10 == 0, 1000));
        }
        assert!(small.bytes() <= 15_000);
        assert!(small.frames[0].key && small.frames[0].seq == 50);
        // Less than pre_s held: the clip starts at the oldest keyframe.
        assert_eq!(small.preroll(frames_utc(55))[0].seq, 50);
    }

    #[test]
    fn thumbnails_name_their_segment_and_event() {
        let seg = "20261207T163851.566Z.mp4";
        let t = thumbnail_name(seg, "cam-1796660");
        assert_eq!(t, "20261207T163851.566Z.cam-1796660.jpg");
        assert_eq!(
            parse_thumbnail(&t),
            Some(("20261207T163851.566Z", "cam-1796660"))
        );
        assert_eq!(parse_thumbnail("20261207T163851.566Z.../x.jpg"), None);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(seg), b"x").unwrap();
        std::fs::write(dir.path().join(&t), b"jpg").unwrap();
        let ev = events_of(dir.path(), "cam", &[seg.to_string()]);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].thumbnail, "/recordings/cam/events/cam-1796660.jpg");
        assert!(find_thumbnail(dir.path(), "cam-1796660").is_some());
        assert!(find_thumbnail(dir.path(), "../etc").is_none());
        remove_orphans(dir.path(), &[seg.to_string()]);
        assert!(!dir.path().join(&t).exists());
    }

    fn frames_utc(i: u64) -> Nanos {
        1_000_000_000_000 + (i * 100_000_000) as Nanos
    }
}
