//! The segment writer: a thread of its own that takes the recorder's frames from a bounded
//! queue and does every file operation, so a slow or full disk blocks nobody but itself. A
//! segment starts on a keyframe; frames are gathered into parts of `part_ms` and each part is
//! written whole with one `write` (no user-space buffer), so after `kill -9` the file holds every
//! part before the one being gathered; `fsync` runs every `fsync_s` for power cuts. A segment
//! is rotated at the first keyframe after `segment_s` (a keyframe is asked for just before, so
//! segments come out at their length whatever the GOP). A time jump (camera restart), a change
//! of picture, or frames lost on a full queue close the segment; the next one starts at the
//! next keyframe, so the gap shows in the listing.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::clips::{self, Ring};
use super::index;
use super::mkv;
use super::mp4::{self, AudioTrack, Run, Sample, TIMESCALE, Track};
use super::retention::{self, Limits};
use crate::config::{RecordConfig, RecordFormat, RecordMode};
use crate::stream::hub::Hub;
use crate::utc::{self, Nanos};

/// One encoded frame on its way to disk.
#[derive(Clone)]
pub struct Frame {
    /// The access unit (AVC: length-prefixed NAL units).
    pub buffer: gst::Buffer,
    /// Presentation time (running time, ns).
    pub pts: u64,
    /// Decode time (running time, ns).
    pub dts: u64,
    /// Whether it is a keyframe.
    pub key: bool,
    /// UTC of `pts`.
    pub utc: Nanos,
    /// Counted at the queue's entry, dropped frames included: a jump means frames were lost.
    pub seq: u64,
    /// The picture's description.
    pub track: Arc<Track>,
}

/// One AAC frame on its way to disk (the segment's second track).
pub struct AudioFrame {
    /// The raw AAC frame.
    pub buffer: gst::Buffer,
    /// Presentation time (running time, ns), on the video's time line.
    pub pts: u64,
    /// Counted at the queue's entry with the video frames.
    pub seq: u64,
    /// The sound's description.
    pub track: Arc<AudioTrack>,
}

/// How many AAC frames are kept while no segment is open (about 1.3 s at 48 kHz), so a
/// segment starting on a keyframe gets the sound that arrived before its picture.
const AUDIO_BACKLOG: usize = 64;
/// Samples per AAC frame.
const AAC_FRAME: u64 = 1024;

/// What the writer is told.
pub enum Msg {
    /// A video frame.
    Frame(Frame),
    /// A sound frame.
    Audio(AudioFrame),
    /// Close the segment now (camera restarted, pipeline rebuilt); the reason is logged.
    Break(&'static str),
    // Event clips (`record.mode = "events"`).
    /// Motion began (event id, detection time): a clip starts from the pre-roll (or the
    /// running clip goes on).
    MotionStart(String, Nanos),
    /// Motion ended (event id, its peak picture): the clip ends `post_s` from now; the picture
    /// becomes the clip's thumbnail.
    MotionEnd(String, Option<Vec<u8>>),
}

/// The writer's phase, as status and metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for the first keyframe (at start, after a gap or a pause).
    Waiting,
    /// Writing a segment.
    Recording,
    /// Not writing because of a disk problem; retried by itself.
    Paused,
    /// Recording is turned off.
    Off,
}

impl Phase {
    /// Every phase name, for metrics.
    pub const NAMES: &'static [&'static str] = &["waiting", "recording", "paused", "off"];

    /// The name in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Recording => "recording",
            Phase::Paused => "paused",
            Phase::Off => "off",
        }
    }
}

/// What the writer shares with the status API and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Current phase.
    pub phase: Phase,
    /// Why it is paused, or the last write problem.
    pub error: Option<String>,
    /// The segment being written.
    pub file: Option<String>,
    /// Bytes written since start.
    pub bytes_written: u64,
    /// Segments finished since start.
    pub segments_written: u64,
    /// Write failures (full disk, I/O errors) and frames lost to a slow disk.
    pub write_errors: u64,
    /// Frames dropped because the disk did not keep up.
    pub frames_dropped: u64,
    /// Free bytes on the recording file system at the last check.
    pub disk_free_bytes: Option<u64>,
}

impl Default for Report {
    fn default() -> Self {
        Report {
            phase: Phase::Waiting,
            error: None,
            file: None,
            bytes_written: 0,
            segments_written: 0,
            write_errors: 0,
            frames_dropped: 0,
            disk_free_bytes: None,
        }
    }
}

/// Shared view of a writer.
pub type Shared = Arc<Mutex<Report>>;

struct Open {
    file: File,
    path: PathBuf,
    name: String,
    start_utc: Nanos,
    start_dts: u64,
    track: Arc<Track>,
    /// Fragment (cluster) sequence number.
    seq: u32,
    /// Frames of the part being gathered.
    pending: Vec<Frame>,
    /// The sound track of this segment, if it has one.
    audio: Option<Arc<AudioTrack>>,
    /// Sound frames not yet written.
    audio_pending: Vec<AudioFrame>,
    /// Length of what is complete on disk.
    len: u64,
    /// Duration written, in ticks.
    ticks: u64,
    samples: u64,
    last_sync: Instant,
    keyframe_asked: bool,
    last_dts: u64,
    frame_ns: u64,
}

/// Writes a stream's segments into `dir` until the queue closes.
pub struct Writer {
    dir: PathBuf,
    config: RecordConfig,
    hub: Arc<Hub>,
    shared: Shared,
    current: Arc<Mutex<Option<String>>>,
    open: Option<Open>,
    paused_until: Option<Instant>,
    retry: Duration,
    last_seq: Option<u64>,
    last_ask: Option<Instant>,
    last_space_check: Instant,
    /// Where the segment just rotated ended (UTC, decode time), so the next one starts there
    /// exactly and the listing shows no gap between them.
    chain: Option<(Nanos, u64)>,
    stream: String,
    /// The last sound description seen: a new fMP4 segment gets an AAC track.
    audio: Option<Arc<AudioTrack>>,
    /// Sound frames that arrived while no segment was open, or after the last one's end.
    audio_backlog: VecDeque<AudioFrame>,
    // Event clips: the pre-roll ring (`events` mode only) and the clip being written.
    ring: Option<Ring>,
    clip: Option<Clip>,
}

/// The event clip being written.
struct Clip {
    /// The event that started it.
    event_id: String,
    /// When it ends (UTC): unset while the motion lasts.
    until: Option<Nanos>,
    /// The file name of its first segment, once open.
    segment: Option<String>,
}

const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// How often free space is checked while writing.
const SPACE_CHECK: Duration = Duration::from_secs(2);

fn ns_to_ticks(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(TIMESCALE) / 1_000_000_000) as u64
}

impl Writer {
    /// A writer for `stream` into `dir`; `current` names the segment being written for
    /// retention.
    pub fn new(
        stream: &str,
        dir: PathBuf,
        config: RecordConfig,
        hub: Arc<Hub>,
        shared: Shared,
        current: Arc<Mutex<Option<String>>>,
    ) -> Self {
        let ring = (config.mode == RecordMode::Events)
            .then(|| Ring::new(config.pre_s, config.ring_max_bytes));
        Writer {
            dir,
            config,
            hub,
            shared,
            current,
            open: None,
            paused_until: None,
            retry: RETRY_FIRST,
            last_seq: None,
            last_ask: None,
            last_space_check: Instant::now(),
            chain: None,
            stream: stream.to_string(),
            ring,
            clip: None,
            audio: None,
            audio_backlog: VecDeque::new(),
        }
    }

    /// Runs until the sender is dropped; closes the segment cleanly at the end.
    pub fn run(mut self, rx: Receiver<Msg>) {
        if let Err(e) = self.recover() {
            tracing::warn!(stream = %self.stream, error = %e, "Could not check earlier recordings for a cut segment");
        }
        loop {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(Msg::Frame(f)) if self.ring.is_some() => self.event_frame(f),
                Ok(Msg::Frame(f)) => self.frame(f),
                Ok(Msg::MotionStart(id, at)) => self.motion_start(id, at),
                Ok(Msg::MotionEnd(id, jpeg)) => self.motion_end(id, jpeg),
                Ok(Msg::Audio(a)) => self.audio_frame(a),
                Ok(Msg::Break(why)) => {
                    if let Some(r) = &mut self.ring {
                        // The pictures before a break do not continue into the ones after.
                        *r = Ring::new(self.config.pre_s, self.config.ring_max_bytes);
                    }
                    if self.open.is_some() {
                        tracing::info!(stream = %self.stream, reason = why, "Recording segment closed at a break");
                    }
                    self.close(None);
                    self.set_phase_waiting();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.housekeeping();
        }
        self.close(None);
        let mut r = self.shared.lock().unwrap();
        r.phase = Phase::Off;
        r.file = None;
    }

    /// `events` mode: every picture goes into the pre-roll ring; a clip being written takes
    /// it too, until `post_s` after the motion's end.
    fn event_frame(&mut self, f: Frame) {
        if let Some(r) = &mut self.ring {
            r.push(f.clone());
        }
        let Some(clip) = &self.clip else {
            return;
        };
        if clip.until.is_some_and(|u| f.utc > u) {
            tracing::info!(stream = %self.stream, event_id = %clip.event_id, "Event clip finished");
            self.clip = None;
            self.close(None);
            self.set_phase_waiting();
            return;
        }
        self.frame(f);
        self.note_clip_segment();
    }

    /// The motion ended: the clip ends after the post-roll, and the event's picture is saved
    /// beside the clip's first segment.
    fn motion_end(&mut self, id: String, jpeg: Option<Vec<u8>>) {
        let post = i64::from(self.config.post_s) * 1_000_000_000;
        let Some(c) = &mut self.clip else {
            return;
        };
        tracing::debug!(stream = %self.stream, event_id = %id, post_s = self.config.post_s, "Motion ended; the clip ends after the post-roll");
        c.until = Some(utc::now() + post);
        let (Some(segment), Some(jpeg)) = (&c.segment, jpeg) else {
            return;
        };
        if !clips::valid_event_id(&id) {
            return;
        }
        let path = self.dir.join(clips::thumbnail_name(segment, &id));
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &jpeg));
        if let Err(e) = written {
            tracing::warn!(stream = %self.stream, file = %path.display(), error = %e, "Event clip thumbnail not written");
        }
    }

    /// A clip starts from the ring's keyframe at least `pre_s` before the detection at `at`;
    /// motion during a clip's post-roll extends that clip.
    fn motion_start(&mut self, event_id: String, at: Nanos) {
        let Some(ring) = &self.ring else {
            return;
        };
        if let Some(c) = &mut self.clip {
            c.until = None;
            return;
        }
        let preroll = ring.preroll(at);
        tracing::info!(stream = %self.stream, event_id = %event_id, preroll_s = preroll.first().zip(preroll.last()).map_or(0.0, |(a, b)| (b.utc - a.utc) as f64 / 1e9), "Event clip started");
        self.clip = Some(Clip {
            event_id,
            until: None,
            segment: None,
        });
        // The ring's pictures were counted when they came; their numbers restart here.
        self.last_seq = None;
        for f in preroll {
            self.frame(f);
        }
        self.note_clip_segment();
    }

    /// Remembers the segment a clip begins with (its thumbnail is named after it).
    fn note_clip_segment(&mut self) {
        if let (Some(c), Some(o)) = (&mut self.clip, &self.open)
            && c.segment.is_none()
        {
            c.segment = Some(o.name.clone());
        }
    }

    /// Finishes segments a crash left behind: cuts the part that was being written and writes
    /// the durations, so every tool reads them. Only unfinished files are touched.
    fn recover(&self) -> io::Result<()> {
        for f in index::files(&self.dir)? {
            let Ok(scan) = index::scan(&f.path, false) else {
                continue;
            };
            if scan.declared > 0 {
                continue;
            }
            let scan = index::scan(&f.path, true)?;
            if scan.samples.is_empty() {
                std::fs::remove_file(&f.path)?;
                tracing::info!(stream = %self.stream, file = %f.name, "Removed an empty segment left by a crash");
                continue;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&f.path)?;
            if scan.good_len < scan.file_len {
                file.set_len(scan.good_len)?;
            }
            finalize(&f.path, &file, scan.duration())?;
            file.sync_all()?;
            tracing::info!(stream = %self.stream, file = %f.name, duration_s = scan.duration() as f64 / f64::from(TIMESCALE), cut_bytes = scan.file_len - scan.good_len, "Recovered a segment cut by a crash");
        }
        Ok(())
    }

    fn set_phase_waiting(&self) {
        let mut r = self.shared.lock().unwrap();
        if r.phase != Phase::Paused {
            r.phase = Phase::Waiting;
        }
        r.file = None;
    }

    fn ask_keyframe(&mut self) {
        if self
            .last_ask
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.last_ask = Some(Instant::now());
            self.hub.request_keyframe();
        }
    }

    /// Takes a sound frame: into the open segment's sound track, else into the backlog.
    fn audio_frame(&mut self, a: AudioFrame) {
        self.check_loss(a.seq);
        if self.audio.as_ref() != Some(&a.track) {
            self.audio = Some(a.track.clone());
        }
        match &mut self.open {
            Some(o) if o.audio.as_ref() == Some(&a.track) => {
                if a.pts >= o.start_dts {
                    o.audio_pending.push(a);
                }
            }
            Some(_) => {}
            None => {
                if self.audio_backlog.len() >= AUDIO_BACKLOG {
                    self.audio_backlog.pop_front();
                }
                self.audio_backlog.push_back(a);
            }
        }
    }

    /// Closes the segment when the queue dropped messages (a jump in sequence numbers).
    fn check_loss(&mut self, seq: u64) {
        let lost = self.last_seq.is_some_and(|s| seq > s + 1);
        let lost_n = self.last_seq.map_or(0, |s| seq.saturating_sub(s + 1));
        self.last_seq = Some(seq);
        if lost {
            let mut r = self.shared.lock().unwrap();
            r.frames_dropped += lost_n;
            r.write_errors += 1;
            r.error = Some(format!(
                "the disk did not keep up: {lost_n} frames dropped; the segment was closed and \
                 recording goes on from the next keyframe"
            ));
            drop(r);
            if self.open.is_some() {
                tracing::warn!(stream = %self.stream, frames = lost_n, "Recording lost frames (slow disk); segment closed");
            }
            self.close(None);
            self.set_phase_waiting();
        }
    }

    fn frame(&mut self, f: Frame) {
        self.check_loss(f.seq);
        if let Some(o) = &self.open {
            let jump =
                f.dts < o.last_dts || f.dts - o.last_dts > (4 * o.frame_ns).max(1_000_000_000);
            if jump || *o.track != *f.track {
                let why = if jump {
                    "a gap in the stream (camera restart)"
                } else {
                    "a change of picture"
                };
                tracing::info!(stream = %self.stream, reason = why, "Recording segment closed");
                self.close(None);
                self.set_phase_waiting();
            }
        }
        if let Some(until) = self.paused_until {
            if Instant::now() < until {
                return;
            }
            self.paused_until = None;
        }
        if let Some(o) = &self.open {
            let elapsed = f.dts.saturating_sub(o.start_dts);
            let segment = u64::from(self.config.segment_s) * 1_000_000_000;
            // A keyframe is asked for one frame before the segment's end, so it arrives at
            // about the end; without one (an encoder that ignores the request) the next
            // scheduled keyframe ends the segment.
            if f.key && elapsed + o.frame_ns / 2 >= segment {
                self.close(Some(f.dts));
            } else if !o.keyframe_asked && elapsed + o.frame_ns >= segment {
                self.open.as_mut().unwrap().keyframe_asked = true;
                self.hub.request_keyframe();
            }
        }
        if self.open.is_none() {
            if !f.key {
                self.ask_keyframe();
                return;
            }
            if let Err(e) = self.start_segment(&f) {
                self.pause(e);
                return;
            }
        }
        if let Err(e) = self.push(f) {
            self.pause(e);
        }
    }

    fn start_segment(&mut self, f: &Frame) -> Result<(), String> {
        let free = self.ensure_space()?;
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            format!(
                "cannot create the recording folder {}: {e}",
                self.dir.display()
            )
        })?;
        index::real_dir(&self.dir).map_err(|e| e.to_string())?;
        // Continue the time line of a rotation unless the clocks have drifted apart.
        let start_utc = match self.chain.take() {
            Some((u, dts)) if dts == f.dts && (u - f.utc).abs() < utc::SECOND => u,
            _ => f.utc,
        };
        let name = format!(
            "{}.{}",
            utc::basic(start_utc),
            self.config.format.extension()
        );
        let path = self.dir.join(&name);
        // Read access too: finishing a segment reads its header back.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let audio = self.audio.clone();
        let init = match self.config.format {
            RecordFormat::Fmp4 => mp4::init_segment_av(&f.track, audio.as_deref()),
            RecordFormat::Mkv => mkv::header_av(&f.track, audio.as_deref()),
        };
        if let Err(e) = file.write_all(&init) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(format!("cannot write {}: {e}", path.display()));
        }
        // The new name must survive a power cut too.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        *self.current.lock().unwrap() = Some(name.clone());
        {
            let mut r = self.shared.lock().unwrap();
            r.phase = Phase::Recording;
            r.file = Some(name.clone());
            r.bytes_written += init.len() as u64;
            r.disk_free_bytes = Some(free);
            if r.error.is_some() {
                tracing::info!(stream = %self.stream, file = %name, "Recording resumed");
            }
            r.error = None;
        }
        self.retry = RETRY_FIRST;
        tracing::debug!(stream = %self.stream, file = %name, "Recording segment started");
        self.open = Some(Open {
            file,
            path,
            name,
            start_utc,
            start_dts: f.dts,
            track: f.track.clone(),
            seq: 0,
            pending: Vec::new(),
            audio_pending: match &audio {
                Some(t) => self
                    .audio_backlog
                    .drain(..)
                    .filter(|a| a.pts >= f.dts && a.track == *t)
                    .collect(),
                None => Vec::new(),
            },
            audio,
            len: init.len() as u64,
            ticks: 0,
            samples: 0,
            last_sync: Instant::now(),
            keyframe_asked: false,
            last_dts: f.dts,
            frame_ns: 33_333_333,
        });
        Ok(())
    }

    /// Checks free space, deleting the oldest recordings if `min_free_mb` needs it; fails when
    /// that is not enough.
    fn ensure_space(&mut self) -> Result<u64, String> {
        let min = self.config.min_free_mb * 1024 * 1024;
        let dir = if self.dir.exists() {
            self.dir.clone()
        } else {
            PathBuf::from(&self.config.path)
        };
        let free = match retention::free_bytes(&dir) {
            Ok(f) => f,
            // The folder may not exist yet; creating it will say what is wrong.
            Err(_) => return Ok(u64::MAX),
        };
        self.shared.lock().unwrap().disk_free_bytes = Some(free);
        if min == 0 || free >= min {
            return Ok(free);
        }
        let current = self.current.lock().unwrap().clone();
        let limits = Limits {
            keep: None,
            max_bytes: None,
            ..Limits::of(&self.config)
        };
        let free = retention::enforce(&self.dir, &limits, utc::now(), current.as_deref())
            .ok()
            .and_then(|p| p.free)
            .unwrap_or(free);
        self.shared.lock().unwrap().disk_free_bytes = Some(free);
        if free >= min {
            return Ok(free);
        }
        Err(format!(
            "only {} MiB free on the recording file system, below record.min_free_mb = {}",
            free / (1024 * 1024),
            self.config.min_free_mb
        ))
    }

    fn push(&mut self, f: Frame) -> Result<(), String> {
        let part_ns = u64::from(self.config.part_ms) * 1_000_000;
        let o = self.open.as_mut().expect("a segment is open");
        if f.dts > o.last_dts {
            o.frame_ns = f.dts - o.last_dts;
        }
        o.last_dts = f.dts;
        let flush = o
            .pending
            .first()
            .is_some_and(|first| f.dts.saturating_sub(first.dts) >= part_ns);
        if flush {
            self.write_part(Some(f.dts))?;
        }
        self.open.as_mut().unwrap().pending.push(f);
        Ok(())
    }

    /// Writes the gathered frames as one part; `next_dts` ends the last frame (else it gets
    /// the usual frame length).
    fn write_part(&mut self, next_dts: Option<u64>) -> Result<(), String> {
        let o = self.open.as_mut().expect("a segment is open");
        if o.pending.is_empty() {
            return Ok(());
        }
        let frames = std::mem::take(&mut o.pending);
        let tick = |dts: u64| ns_to_ticks(dts.saturating_sub(o.start_dts));
        let end = next_dts.unwrap_or(frames.last().unwrap().dts + o.frame_ns);
        let maps: Vec<gst::MappedBuffer<gst::buffer::Readable>> = frames
            .iter()
            .filter_map(|f| f.buffer.clone().into_mapped_buffer_readable().ok())
            .collect();
        if maps.len() != frames.len() {
            return Err("a frame could not be read".into());
        }
        let base = tick(frames[0].dts);
        let samples: Vec<Sample> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let next = frames.get(i + 1).map_or(end, |n| n.dts);
                Sample {
                    dts: tick(f.dts),
                    duration: (tick(next) - tick(f.dts)) as u32,
                    cto: ns_to_ticks(f.pts.saturating_sub(f.dts)) as u32,
                    key: f.key,
                    size: maps[i].len() as u32,
                    offset: 0,
                }
            })
            .collect();
        let data: Vec<&[u8]> = maps.iter().map(|m| m.as_slice()).collect();
        // The sound up to the picture's end goes into this part; the rest waits for the next.
        let split = o.audio_pending.partition_point(|a| a.pts < end);
        let sound: Vec<AudioFrame> = o.audio_pending.drain(..split).collect();
        let sound_maps: Vec<gst::MappedBuffer<gst::buffer::Readable>> = sound
            .iter()
            .filter_map(|a| a.buffer.clone().into_mapped_buffer_readable().ok())
            .collect();
        if sound_maps.len() != sound.len() {
            return Err("a sound frame could not be read".into());
        }
        let rate = o.audio.as_ref().map_or(48_000, |t| u64::from(t.rate));
        let atick = |pts: u64| {
            (u128::from(pts.saturating_sub(o.start_dts)) * u128::from(rate) / 1_000_000_000) as u64
        };
        let sound_samples: Vec<Sample> = sound
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let duration = sound
                    .get(i + 1)
                    .map_or(AAC_FRAME, |n| atick(n.pts).saturating_sub(atick(a.pts)));
                Sample {
                    dts: atick(a.pts),
                    duration: duration as u32,
                    cto: 0,
                    key: true,
                    size: sound_maps[i].len() as u32,
                    offset: 0,
                }
            })
            .collect();
        let sound_data: Vec<&[u8]> = sound_maps.iter().map(|m| m.as_slice()).collect();
        o.seq += 1;
        let bytes = match self.config.format {
            RecordFormat::Fmp4 if o.audio.is_some() => mp4::fragment_av(
                o.seq,
                &Run {
                    base_dts: base,
                    samples: &samples,
                    data: &data,
                },
                &Run {
                    base_dts: sound_samples.first().map_or(0, |s| s.dts),
                    samples: &sound_samples,
                    data: &sound_data,
                },
            ),
            RecordFormat::Fmp4 => mp4::fragment(o.seq, base, &samples, &data),
            RecordFormat::Mkv if o.audio.is_some() => {
                let sound: Vec<(u64, &[u8])> = sound
                    .iter()
                    .zip(&sound_data)
                    .map(|(a, d)| (tick(a.pts), *d))
                    .collect();
                mkv::cluster_av(base, &samples, &data, &sound)
            }
            RecordFormat::Mkv => mkv::cluster(base, &samples, &data),
        };
        if let Err(e) = o.file.write_all(&bytes) {
            // Cut what did not fit, so the file ends at its last complete part.
            let _ = o.file.set_len(o.len);
            return Err(format!("cannot write {}: {e}", o.path.display()));
        }
        o.len += bytes.len() as u64;
        o.ticks = tick(end);
        o.samples += samples.len() as u64;
        self.shared.lock().unwrap().bytes_written += bytes.len() as u64;
        let fsync = Duration::from_secs(u64::from(self.config.fsync_s));
        if o.last_sync.elapsed() >= fsync {
            o.last_sync = Instant::now();
            o.file
                .sync_data()
                .map_err(|e| format!("cannot fsync {}: {e}", o.path.display()))?;
        }
        Ok(())
    }

    /// Closes the open segment: writes what is gathered (ending at `end_dts`), its
    /// durations, and syncs it. A segment with no frame is removed.
    fn close(&mut self, end_dts: Option<u64>) {
        if self.open.is_none() {
            return;
        }
        let written = self.write_part(end_dts);
        let mut o = self.open.take().unwrap();
        // Sound past the segment's end belongs to the next one.
        self.audio_backlog.extend(o.audio_pending.drain(..));
        while self.audio_backlog.len() > AUDIO_BACKLOG {
            self.audio_backlog.pop_front();
        }
        *self.current.lock().unwrap() = None;
        if let Err(e) = &written {
            self.note_error(e);
        }
        if o.samples == 0 {
            drop(o.file);
            let _ = std::fs::remove_file(&o.path);
            return;
        }
        let done = finalize(&o.path, &o.file, o.ticks).and_then(|_| o.file.sync_all());
        match done {
            Ok(()) => {
                let mut r = self.shared.lock().unwrap();
                r.segments_written += 1;
                r.file = None;
                tracing::debug!(stream = %self.stream, file = %o.name, duration_s = o.ticks as f64 / f64::from(TIMESCALE), start = %utc::rfc3339(o.start_utc), "Recording segment finished");
                crate::events::publish(
                    crate::events::Event::new(
                        crate::events::HookEvent::RecordingSegment,
                        &self.stream,
                    )
                    .with("file", o.path.display())
                    .with("start", utc::rfc3339(o.start_utc))
                    .with(
                        "duration_s",
                        format!("{:.3}", o.ticks as f64 / f64::from(TIMESCALE)),
                    ),
                );
            }
            Err(e) => self.note_error(&format!("cannot finish {}: {e}", o.path.display())),
        }
        self.chain = end_dts.map(|d| (o.start_utc + (d - o.start_dts) as Nanos, d));
        // Retention also runs at each rotation, so `max_bytes` is never exceeded by more than
        // the segment being written, whatever the timer's period.
        if end_dts.is_some() {
            let limits = Limits::of(&self.config);
            if let Err(e) = retention::enforce(&self.dir, &limits, utc::now(), None) {
                tracing::warn!(stream = %self.stream, error = %e, "Retention pass failed");
            }
        }
    }

    fn note_error(&self, e: &str) {
        let mut r = self.shared.lock().unwrap();
        r.write_errors += 1;
        r.error = Some(e.to_string());
    }

    fn pause(&mut self, error: String) {
        self.close(None);
        tracing::error!(stream = %self.stream, error = %error, retry_s = self.retry.as_secs(), "Recording paused");
        {
            let mut r = self.shared.lock().unwrap();
            r.phase = Phase::Paused;
            r.write_errors += 1;
            r.error = Some(error);
            r.file = None;
        }
        self.paused_until = Some(Instant::now() + self.retry);
        self.retry = (self.retry * 2).min(RETRY_MAX);
    }

    fn housekeeping(&mut self) {
        if self.paused_until.is_some_and(|t| Instant::now() >= t) {
            // Leave the paused phase only by writing again; until the next keyframe the status
            // keeps the reason.
            self.ask_keyframe();
        }
        if self.last_space_check.elapsed() >= SPACE_CHECK {
            self.last_space_check = Instant::now();
            if self.open.is_some()
                && let Err(e) = self.ensure_space()
            {
                self.pause(e);
            }
        }
    }
}

fn finalize(path: &Path, file: &File, ticks: u64) -> io::Result<()> {
    if path.extension().is_some_and(|e| e == "mkv") {
        mkv::finalize(file, ticks)
    } else {
        mp4::finalize(file, ticks)
    }
}
