//! The segmenter: access units in, CMAF out. Each segment is one GOP (it starts on a keyframe),
//! cut into partial segments of whole frames no longer than the part target; every part is one
//! `moof`+`mdat` made by the recorder's fMP4 writer, and a segment's bytes are its parts in
//! order. Only a bounded window of segments is kept, in memory.
//!
//! A part is finished when the frame after it arrives (its last frame's duration is only known
//! then), so a part is published one frame interval after its end. Parts carry a global id
//! (`p{id}`), not a (segment, index) pair, so the preload hint names the next part before anyone
//! knows whether a keyframe will start a new segment with it.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use crate::output::record::mp4::{self, Sample, TIMESCALE, Track};
use crate::utc::Nanos;

/// One access unit from the hub, in AVC form (length-prefixed NAL units).
#[derive(Debug, Clone)]
pub struct Frame {
    /// The access unit's bytes.
    pub data: Bytes,
    /// Presentation time (running time, ns).
    pub pts: u64,
    /// Decode time (running time, ns).
    pub dts: u64,
    /// Whether it is a keyframe (IDR).
    pub key: bool,
    /// UTC of `pts`.
    pub utc: Nanos,
    /// The picture's description (SPS/PPS, size).
    pub track: Arc<Track>,
}

/// A published partial segment.
#[derive(Debug, Clone)]
pub struct Part {
    /// Global part id (its file name is `p{id}`).
    pub id: u64,
    /// Duration in [`TIMESCALE`] ticks.
    pub ticks: u64,
    /// Whether it starts with a keyframe.
    pub independent: bool,
    /// `moof`+`mdat`.
    pub bytes: Bytes,
}

/// A segment: finished (every part, its bytes joined) or the one being made.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// Its parts so far.
    pub parts: Vec<Part>,
    /// Duration in ticks (of the parts so far).
    pub ticks: u64,
    /// UTC of its first frame.
    pub start_utc: Nanos,
    /// Which init segment it needs.
    pub init: u32,
    /// Whether a discontinuity (camera restart, new picture) comes before it.
    pub discontinuity: bool,
    /// The whole segment, once finished.
    pub bytes: Option<Bytes>,
}

/// A new track (first or changed picture): its init segment.
#[derive(Debug, Clone)]
pub struct Init {
    /// Init id (its file name is `init{id}.mp4`).
    pub id: u32,
    /// The track.
    pub track: Arc<Track>,
    /// `ftyp`+`moov`.
    pub bytes: Bytes,
}

/// Where a frame on the hold goes once its duration is known.
struct Pending {
    frames: Vec<(Frame, u64)>,
    /// Decode tick of the part's first frame.
    start_tick: u64,
}

/// The segmenter's state. Not thread-safe by itself: the channel holds it under a mutex.
pub struct Muxer {
    part_ticks: u64,
    /// A keyframe sooner than this after a segment's start does not start another one (the
    /// keyframe asked for at start-up often follows a scheduled one by a frame or two).
    min_segment_ticks: u64,
    keep: usize,
    /// Finished segments, oldest first.
    pub done: VecDeque<Segment>,
    /// The segment being made (its finished parts), if a keyframe started one.
    pub current: Option<Segment>,
    /// Init segments still referenced, oldest first.
    pub inits: VecDeque<Init>,
    /// Frames of the part being gathered (each with its decode tick).
    pending: Option<Pending>,
    next_msn: u64,
    next_part: u64,
    /// Decode tick the next frame after a gap continues from.
    last_end_tick: u64,
    /// Running-time ns that maps to tick 0 (shifted across gaps so ticks never go back).
    origin_ns: i128,
    last_dts: Option<u64>,
    frame_ns: u64,
    /// A gap or new picture happened: the next segment carries a discontinuity.
    gap: bool,
    /// Discontinuities that left the window (EXT-X-DISCONTINUITY-SEQUENCE).
    pub discontinuity_seq: u64,
}

/// Rounded, so 30 fps frames of 33 333 333 ns make whole 3000-tick steps.
fn ns_to_ticks(ns: i128) -> u64 {
    ((ns.max(0) * i128::from(TIMESCALE) + 500_000_000) / 1_000_000_000) as u64
}

impl Muxer {
    /// A segmenter making parts of at most `part_ms`, segments of at least `min_segment_ms`
    /// (when keyframes allow) and keeping `keep` finished segments.
    pub fn new(part_ms: u32, min_segment_ms: u32, keep: usize) -> Self {
        Muxer {
            part_ticks: u64::from(part_ms) * u64::from(TIMESCALE) / 1000,
            min_segment_ticks: u64::from(min_segment_ms) * u64::from(TIMESCALE) / 1000,
            keep: keep.max(1),
            done: VecDeque::new(),
            current: None,
            inits: VecDeque::new(),
            pending: None,
            next_msn: 0,
            next_part: 0,
            last_end_tick: 0,
            origin_ns: 0,
            last_dts: None,
            frame_ns: 33_333_333,
            gap: false,
            discontinuity_seq: 0,
        }
    }

    /// The id the next part will carry (the preload hint).
    pub fn next_part_id(&self) -> u64 {
        self.next_part
    }

    /// The MSN of the segment being made, or that the next one will get.
    pub fn current_msn(&self) -> u64 {
        self.current.as_ref().map_or(self.next_msn, |s| s.msn)
    }

    /// Takes one frame; returns whether something was published (a part or a segment).
    pub fn push(&mut self, f: Frame) -> bool {
        let mut published = false;
        // A jump back or forward in time (camera restart): finish what is open, then continue
        // the time line where it ended, after a discontinuity.
        let jump = self
            .last_dts
            .is_some_and(|l| f.dts < l || f.dts - l > (4 * self.frame_ns).max(1_000_000_000));
        let new_track = self.inits.back().is_none_or(|i| *i.track != *f.track);
        if jump || (new_track && self.current.is_some()) {
            published |= self.close_segment(None);
            self.gap = true;
        }
        if jump {
            self.origin_ns = i128::from(f.dts)
                - i128::from(self.last_end_tick) * 1_000_000_000 / i128::from(TIMESCALE);
        }
        if let Some(l) = self.last_dts
            && f.dts > l
            && !jump
        {
            self.frame_ns = f.dts - l;
        }
        if self.last_dts.is_none() {
            self.origin_ns = i128::from(f.dts);
        }
        self.last_dts = Some(f.dts);
        let tick = ns_to_ticks(i128::from(f.dts) - self.origin_ns);
        let open_ticks = self.current.as_ref().map_or(0, |c| c.ticks)
            + self
                .pending
                .as_ref()
                .map_or(0, |p| tick.saturating_sub(p.start_tick));
        let starts_segment =
            f.key && (self.current.is_none() || new_track || open_ticks >= self.min_segment_ticks);
        if starts_segment {
            // A new segment (one GOP each); its first part starts here.
            published |= self.close_segment(Some(tick));
            if new_track || self.inits.is_empty() {
                let id = self.inits.back().map_or(0, |i| i.id + 1);
                self.inits.push_back(Init {
                    id,
                    bytes: Bytes::from(mp4::init_segment(&f.track)),
                    track: f.track.clone(),
                });
                if id > 0 {
                    self.gap = true;
                }
            }
            let init = self.inits.back().map_or(0, |i| i.id);
            self.current = Some(Segment {
                msn: self.next_msn,
                parts: Vec::new(),
                ticks: 0,
                start_utc: f.utc,
                init,
                discontinuity: std::mem::take(&mut self.gap),
                bytes: None,
            });
            self.next_msn += 1;
            self.pending = Some(Pending {
                frames: vec![(f, tick)],
                start_tick: tick,
            });
            return published;
        }
        if self.current.is_none() {
            // Before the first keyframe (or after a gap): nothing decodes without one.
            return published;
        }
        let half = ns_to_ticks(i128::from(self.frame_ns)) / 2;
        if let Some(p) = &self.pending
            && tick.saturating_sub(p.start_tick) + half > self.part_ticks
        {
            published |= self.close_part(tick);
        }
        match &mut self.pending {
            Some(p) => p.frames.push((f, tick)),
            None => {
                self.pending = Some(Pending {
                    frames: vec![(f, tick)],
                    start_tick: tick,
                })
            }
        }
        published
    }

    /// Publishes the gathered frames as one part ending at `end_tick`.
    fn close_part(&mut self, end_tick: u64) -> bool {
        let Some(p) = self.pending.take() else {
            return false;
        };
        let Some(seg) = self.current.as_mut() else {
            return false;
        };
        if p.frames.is_empty() {
            return false;
        }
        let mut samples = Vec::with_capacity(p.frames.len());
        for (i, (f, t)) in p.frames.iter().enumerate() {
            let next = p.frames.get(i + 1).map_or(end_tick, |n| n.1);
            samples.push(Sample {
                dts: *t,
                duration: next.saturating_sub(*t).min(u64::from(u32::MAX)) as u32,
                cto: ns_to_ticks(i128::from(f.pts) - i128::from(f.dts)) as u32,
                key: f.key,
                size: f.data.len() as u32,
                offset: 0,
            });
        }
        let data: Vec<&[u8]> = p.frames.iter().map(|(f, _)| &f.data[..]).collect();
        let id = self.next_part;
        self.next_part += 1;
        // The fragment's sequence number only has to grow; the part id does.
        let bytes = mp4::fragment((id + 1) as u32, p.start_tick, &samples, &data);
        let ticks = end_tick.saturating_sub(p.start_tick);
        seg.ticks += ticks;
        seg.parts.push(Part {
            id,
            ticks,
            independent: p.frames[0].0.key,
            bytes: Bytes::from(bytes),
        });
        self.last_end_tick = end_tick;
        true
    }

    /// Finishes the open segment; its last frame ends at `end_tick` (unknown after a gap: one
    /// frame interval is assumed).
    fn close_segment(&mut self, end_tick: Option<u64>) -> bool {
        if self.current.is_none() {
            self.pending = None;
            return false;
        }
        let end = end_tick.unwrap_or_else(|| {
            let last = self
                .pending
                .as_ref()
                .and_then(|p| p.frames.last().map(|f| f.1))
                .unwrap_or(self.last_end_tick);
            last + ns_to_ticks(i128::from(self.frame_ns))
        });
        self.close_part(end);
        let Some(mut seg) = self.current.take() else {
            return false;
        };
        let mut joined = Vec::with_capacity(seg.parts.iter().map(|p| p.bytes.len()).sum());
        for p in &seg.parts {
            joined.extend_from_slice(&p.bytes);
        }
        seg.bytes = Some(Bytes::from(joined));
        self.done.push_back(seg);
        while self.done.len() > self.keep {
            if let Some(old) = self.done.pop_front()
                && old.discontinuity
            {
                self.discontinuity_seq += 1;
            }
        }
        // Init segments no listed segment needs any more.
        let oldest = self.done.front().map(|s| s.init);
        while self.inits.len() > 1 && oldest.is_some_and(|o| self.inits[0].id < o) {
            self.inits.pop_front();
        }
        true
    }

    /// A finished segment by MSN.
    pub fn segment(&self, msn: u64) -> Option<Bytes> {
        self.done
            .iter()
            .find(|s| s.msn == msn)
            .and_then(|s| s.bytes.clone())
    }

    /// A published part by id.
    pub fn part(&self, id: u64) -> Option<Bytes> {
        self.done
            .iter()
            .chain(self.current.iter())
            .flat_map(|s| s.parts.iter())
            .find(|p| p.id == id)
            .map(|p| p.bytes.clone())
    }

    /// An init segment by id.
    pub fn init(&self, id: u32) -> Option<Bytes> {
        self.inits
            .iter()
            .find(|i| i.id == id)
            .map(|i| i.bytes.clone())
    }

    /// The newest track, once a keyframe arrived.
    pub fn track(&self) -> Option<Arc<Track>> {
        self.inits.back().map(|i| i.track.clone())
    }

    /// Whether the part of segment `msn` at index `part` (or the whole segment, `None`) is
    /// published: what a blocking playlist reload waits for.
    pub fn has(&self, msn: u64, part: Option<usize>) -> bool {
        if self.done.back().is_some_and(|s| s.msn >= msn) {
            return true;
        }
        match (&self.current, part) {
            (Some(c), Some(p)) => c.msn > msn || (c.msn == msn && c.parts.len() > p),
            (Some(c), None) => c.msn > msn,
            (None, _) => false,
        }
    }

    /// Bytes held (parts and joined segments), for the status.
    pub fn held_bytes(&self) -> usize {
        self.done
            .iter()
            .chain(self.current.iter())
            .map(|s| {
                s.parts.iter().map(|p| p.bytes.len()).sum::<usize>()
                    + s.bytes.as_ref().map_or(0, |b| b.len())
            })
            .sum()
    }

    /// The longest finished segment, in ticks.
    pub fn longest_segment(&self) -> u64 {
        self.done.iter().map(|s| s.ticks).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(w: u32) -> Arc<Track> {
        Arc::new(Track {
            width: w,
            height: 240,
            avcc: vec![
                1, 0x42, 0xc0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x42, 0xc0, 0x1f, 1, 0, 2, 0x68, 9,
            ],
        })
    }

    fn frame(i: u64, key: bool, t: &Arc<Track>) -> Frame {
        let dts = i * 33_333_333;
        Frame {
            data: Bytes::from(vec![0, 0, 0, 2, 0x65, i as u8]),
            pts: dts,
            dts,
            key,
            utc: dts as Nanos,
            track: t.clone(),
        }
    }

    #[test]
    fn segments_are_gops_and_parts_stay_within_the_target() {
        let t = track(320);
        let mut m = Muxer::new(200, 500, 3);
        for i in 0..200 {
            m.push(frame(i, i % 60 == 0, &t));
        }
        // 200 frames, GOP 60: segments 0..2 finished, 3 open; the window keeps 3.
        assert_eq!(m.done.len(), 3);
        assert_eq!(m.current_msn(), 3);
        for s in &m.done {
            assert_eq!(s.ticks, 180_000, "one GOP of 60 frames at 30 fps");
            assert_eq!(s.parts.len(), 10);
            assert!(s.parts[0].independent);
            assert!(s.parts[1..].iter().all(|p| !p.independent));
            assert!(s.parts.iter().all(|p| p.ticks <= 18_000));
            let joined: usize = s.parts.iter().map(|p| p.bytes.len()).sum();
            assert_eq!(s.bytes.as_ref().map(|b| b.len()), Some(joined));
        }
        let ids: Vec<u64> = m
            .done
            .iter()
            .chain(m.current.iter())
            .flat_map(|s| s.parts.iter().map(|p| p.id))
            .collect();
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(m.next_part_id(), ids.last().unwrap() + 1);
        assert!(m.has(3, Some(0)) && !m.has(3, Some(5)) && m.has(2, None) && !m.has(3, None));
    }

    #[test]
    fn a_keyframe_right_after_a_segment_start_does_not_make_a_one_frame_segment() {
        let t = track(320);
        let mut m = Muxer::new(200, 500, 3);
        for i in 0..70 {
            m.push(frame(i, i == 0 || i == 1 || i == 31, &t));
        }
        assert_eq!(m.done.len(), 1);
        assert_eq!(m.done[0].ticks, 31 * 3000);
        // The second keyframe still starts an independent part where it begins one.
        assert!(m.done[0].parts[0].independent);
    }

    #[test]
    fn frames_before_a_keyframe_are_dropped_and_a_new_picture_is_a_discontinuity() {
        let (a, b) = (track(320), track(640));
        let mut m = Muxer::new(200, 500, 5);
        assert!(!m.push(frame(0, false, &a)));
        assert!(m.current.is_none());
        for i in 1..=61 {
            m.push(frame(i, i == 1 || i == 61, &a));
        }
        for i in 62..=130 {
            m.push(frame(i, i == 70 || i == 130, &b));
        }
        assert_eq!(m.inits.len(), 2);
        let after: Vec<_> = m.done.iter().filter(|s| s.init == 1).collect();
        assert!(after[0].discontinuity);
        assert!(m.done.iter().all(|s| s.init == 0 || s.init == 1));
        // Ticks never go back across the change.
        let starts: Vec<u64> = m.done.iter().map(|s| s.ticks).collect();
        assert!(starts.iter().all(|t| *t > 0));
    }

    #[test]
    fn a_time_jump_continues_the_time_line() {
        let t = track(320);
        let mut m = Muxer::new(200, 500, 5);
        for i in 0..40 {
            m.push(frame(i, i == 0, &t));
        }
        // The camera restarted: running time starts again near zero.
        for i in 0..40 {
            m.push(frame(i, i == 0 || i == 30, &t));
        }
        assert!(m.done[1].discontinuity);
        let first_end: u64 = m.done[0].ticks;
        let p = &m.done[1].parts[0].bytes;
        // tfdt of the part after the jump: just after the first segment's end.
        let at = p.windows(4).position(|w| w == b"tfdt").unwrap() + 8;
        let tfdt = u64::from_be_bytes(p[at..at + 8].try_into().unwrap());
        assert_eq!(tfdt, first_end);
    }
}
