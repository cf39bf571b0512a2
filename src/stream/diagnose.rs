//! Why a camera failed, in libcamera's own words: a table from what libcamera logs (and what
//! libcamerasrc posts on the bus) to a known cause with a hint the operator can act on. The
//! table is the only place these patterns live; the capture runner, `camstream check` and the
//! docs (docs/troubleshooting.md, one section per [`Cause`]) follow it.

use std::fmt;
use std::path::Path;

/// A cause libcamera reports often enough to have a fix written down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// No dma-buf provider could be opened: `/dev/dma_heap/*` and `/dev/udmabuf` are missing
    /// (kernel, container) or not readable by this user.
    DmaBuf,
    /// Buffers could not be allocated from the heap: the CMA area is too small.
    Cma,
    /// Another process holds the camera.
    Busy,
    /// libcamera sees no camera: no pipeline handler for this board, or the sensor is not
    /// detected.
    NoCamera,
    /// The sensor's tuning file (IPA configuration) is missing.
    Tuning,
}

impl Cause {
    /// Whether libcamera naming this cause means no frame will come, so the start can fail at
    /// once. A missing tuning file is not: libcamera may fall back, or the sensor's module may
    /// carry its own tuning (Arducam's Pivariety logs it at ERROR and streams).
    pub fn fatal(self) -> bool {
        !matches!(self, Cause::Tuning)
    }

    /// The anchor of this cause's section in docs/troubleshooting.md.
    pub fn anchor(self) -> &'static str {
        match self {
            Cause::DmaBuf => "libcamera-dma-buf",
            Cause::Cma => "libcamera-cma",
            Cause::Busy => "libcamera-busy",
            Cause::NoCamera => "libcamera-no-camera",
            Cause::Tuning => "libcamera-tuning",
        }
    }
}

/// What the device nodes a dma-buf provider needs look like to this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaBufNodes {
    /// Neither `/dev/dma_heap/*` nor `/dev/udmabuf` exists.
    Missing,
    /// They exist, but none can be opened for reading by this user.
    Unreadable,
    /// At least one can be opened.
    Readable,
}

impl DmaBufNodes {
    /// Looks at `/dev/dma_heap/*` and `/dev/udmabuf` now.
    pub fn probe() -> Self {
        Self::probe_in(Path::new("/dev"))
    }

    fn probe_in(dev: &Path) -> Self {
        let mut nodes: Vec<std::path::PathBuf> = std::fs::read_dir(dev.join("dma_heap"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        let udmabuf = dev.join("udmabuf");
        if udmabuf.exists() {
            nodes.push(udmabuf);
        }
        if nodes.is_empty() {
            DmaBufNodes::Missing
        } else if nodes.iter().any(|n| std::fs::File::open(n).is_ok()) {
            DmaBufNodes::Readable
        } else {
            DmaBufNodes::Unreadable
        }
    }
}

/// libcamera's reason for a failure, the cause it points to (if known) and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// The known cause, or `None` for an error libcamera reported that the table does not know.
    pub cause: Option<Cause>,
    /// libcamera's (or libcamerasrc's) own words, without the log line's prefix.
    pub reason: String,
    /// What to do about it; empty when the cause is unknown.
    pub hint: String,
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "libcamera: {}", self.reason)?;
        if !self.hint.is_empty() {
            write!(f, " — {}", self.hint)?;
        }
        if let Some(c) = self.cause {
            write!(f, " (docs/troubleshooting.md#{})", c.anchor())?;
        }
        Ok(())
    }
}

/// Severity of a libcamera log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// DEBUG.
    Debug,
    /// INFO.
    Info,
    /// WARN.
    Warn,
    /// ERROR.
    Error,
    /// FATAL.
    Fatal,
}

/// One parsed libcamera log line:
/// `[0:00:00.123456789] [1234] ERROR DmaBufAllocator dma_buf_allocator.cpp:120 message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its severity.
    pub level: Level,
    /// The log category (`DmaBufAllocator`, `Camera`, `V4L2`, ...).
    pub category: String,
    /// The message, without timestamp, thread, level, category and source location.
    pub message: String,
}

impl LogLine {
    /// Parses a line of libcamera's log; `None` for anything else (a blank or foreign line).
    pub fn parse(line: &str) -> Option<LogLine> {
        let rest = line.trim_end().strip_prefix('[')?;
        let (_, rest) = rest.split_once("] [")?;
        let (_, rest) = rest.split_once("] ")?;
        // Levels are padded to five characters (" INFO", " WARN").
        let mut words = rest.trim_start().splitn(4, ' ');
        let level = match words.next()? {
            "DEBUG" => Level::Debug,
            "INFO" => Level::Info,
            "WARN" => Level::Warn,
            "ERROR" => Level::Error,
            "FATAL" => Level::Fatal,
            _ => return None,
        };
        let category = words.next()?.to_string();
        let location = words.next()?;
        // The source location ("file.cpp:123") is optional in some builds; keep the word when
        // it is not one.
        let message = match words.next() {
            Some(m) if location.contains(".cpp:") || location.contains(".h:") => m.to_string(),
            Some(m) => format!("{location} {m}"),
            None => location.to_string(),
        };
        Some(LogLine {
            level,
            category,
            message,
        })
    }
}

/// One row of the table: a fragment of libcamera's message (matched case-insensitively) and
/// the cause it means.
struct Pattern {
    fragment: &'static str,
    cause: Cause,
    /// The least severe log line that counts (a tuning file libcamera falls back from is only
    /// a warning; a camera another process holds is logged at INFO).
    min_level: Level,
}

/// libcamera's and libcamerasrc's messages for the known causes. Fragments come from real logs
/// (libcamera 0.4/0.5 upstream and Raspberry Pi's fork) and are lower case.
const PATTERNS: &[Pattern] = &[
    Pattern {
        fragment: "could not open any dma-buf provider",
        cause: Cause::DmaBuf,
        min_level: Level::Error,
    },
    Pattern {
        fragment: "dma-heap allocation failure",
        cause: Cause::Cma,
        min_level: Level::Error,
    },
    Pattern {
        fragment: "dmaheap allocation failure",
        cause: Cause::Cma,
        min_level: Level::Error,
    },
    Pattern {
        fragment: "buffers: cannot allocate memory",
        cause: Cause::Cma,
        min_level: Level::Error,
    },
    Pattern {
        fragment: "cma_alloc",
        cause: Cause::Cma,
        min_level: Level::Error,
    },
    Pattern {
        fragment: "failed to acquire camera",
        cause: Cause::Busy,
        min_level: Level::Error,
    },
    Pattern {
        fragment: "pipeline handler failed to acquire camera",
        cause: Cause::Busy,
        min_level: Level::Info,
    },
    Pattern {
        fragment: "device or resource busy",
        cause: Cause::Busy,
        min_level: Level::Error,
    },
    Pattern {
        fragment: "could not find any supported camera",
        cause: Cause::NoCamera,
        min_level: Level::Error,
    },
    Pattern {
        fragment: "could not find a camera named",
        cause: Cause::NoCamera,
        min_level: Level::Error,
    },
    Pattern {
        fragment: "not found for ipa module",
        cause: Cause::Tuning,
        min_level: Level::Error,
    },
    Pattern {
        fragment: "failed to load tuning data file",
        cause: Cause::Tuning,
        min_level: Level::Error,
    },
    Pattern {
        fragment: "failed to open tuning file",
        cause: Cause::Tuning,
        min_level: Level::Error,
    },
];

fn pattern_of(message: &str) -> Option<&'static Pattern> {
    let lower = message.to_lowercase();
    PATTERNS.iter().find(|p| lower.contains(p.fragment))
}

/// The cause a message names, if the table knows it.
pub fn cause_of(message: &str) -> Option<Cause> {
    pattern_of(message).map(|p| p.cause)
}

/// What to do about `cause`, given what the dma-buf nodes look like here.
pub fn hint(cause: Cause, nodes: DmaBufNodes) -> String {
    match cause {
        Cause::DmaBuf => match nodes {
            DmaBufNodes::Missing => "this system has no dma-buf provider (/dev/dma_heap/* or \
                /dev/udmabuf): on a Raspberry Pi use Raspberry Pi OS's kernel; in a container \
                pass /dev/dma_heap into it (docker --device /dev/dma_heap, a Kubernetes \
                hostPath or device plugin); a PC kernel needs CONFIG_DMABUF_HEAPS or udmabuf"
                .into(),
            DmaBufNodes::Unreadable => format!(
                "/dev/dma_heap exists but this user ({}) cannot open it: add the service user \
                 to the video group (or give the nodes a udev rule making them group video)",
                current_user()
            ),
            DmaBufNodes::Readable => "a dma-buf provider exists but libcamera could not use \
                it: check the kernel log (dmesg) for dma-heap errors"
                .into(),
        },
        Cause::Cma => "the contiguous memory (CMA) area is too small for the camera's buffers: \
            raise it (Raspberry Pi: dtoverlay=vc4-kms-v3d,cma-512 in /boot/firmware/config.txt), \
            lower video.width/height, or stop other users of CMA"
            .into(),
        Cause::Busy => "another process holds the camera (rpicam-*, libcamera-*, another \
            camstream or a desktop app): stop it (`fuser -v /dev/media* /dev/video*` shows who)"
            .into(),
        Cause::NoCamera => "libcamera found no camera: check the ribbon cable, the sensor's \
            dtoverlay (or camera_auto_detect=1) in config.txt, and that this libcamera has a \
            pipeline handler for this board (Raspberry Pi needs Raspberry Pi's libcamera \
            build); `cam -l` lists what libcamera sees"
            .into(),
        Cause::Tuning => "the sensor's tuning file is missing: install the IPA data for this \
            camera (Raspberry Pi: package libcamera-ipa) or point LIBCAMERA_RPI_TUNING_FILE at \
            one"
        .into(),
    }
}

fn current_user() -> String {
    let uid = rustix::process::getuid().as_raw();
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .map_or_else(|| format!("uid {uid}"), |u| format!("{u}, uid {uid}"))
}

/// Diagnoses one message (a libcamera log message or a libcamerasrc error) with the nodes as
/// they are now; `None` when the table does not know it.
pub fn diagnose(message: &str) -> Option<Diagnosis> {
    diagnose_with(message, DmaBufNodes::probe)
}

fn diagnose_with(message: &str, nodes: impl FnOnce() -> DmaBufNodes) -> Option<Diagnosis> {
    let cause = cause_of(message)?;
    Some(Diagnosis {
        cause: Some(cause),
        reason: message.trim().to_string(),
        hint: hint(cause, nodes()),
    })
}

/// The best explanation among libcamera's log lines: the first line of a known cause, else the
/// first ERROR or FATAL line (libcamera's words, no hint); `None` when nothing was said.
pub fn explain<'a>(lines: impl IntoIterator<Item = &'a LogLine>) -> Option<Diagnosis> {
    explain_with(lines, DmaBufNodes::probe)
}

/// The first line naming a fatal cause (see [`Cause::fatal`]); `None` when there is none.
pub fn fatal<'a>(lines: impl IntoIterator<Item = &'a LogLine>) -> Option<Diagnosis> {
    explain(
        lines
            .into_iter()
            .filter(|l| pattern_of(&l.message).is_some_and(|p| p.cause.fatal())),
    )
}

fn explain_with<'a>(
    lines: impl IntoIterator<Item = &'a LogLine>,
    nodes: impl FnOnce() -> DmaBufNodes,
) -> Option<Diagnosis> {
    let mut first_error: Option<&LogLine> = None;
    for l in lines {
        if pattern_of(&l.message).is_some_and(|p| l.level >= p.min_level) {
            return diagnose_with(&l.message, nodes);
        }
        if l.level >= Level::Error {
            first_error.get_or_insert(l);
        }
    }
    first_error.map(|l| Diagnosis {
        cause: None,
        reason: l.message.clone(),
        hint: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as libcamera 0.4.0 (Debian 13) printed them with its virtual camera and no
    /// dma-buf provider (captured in the trixie root); the other causes' lines below are in
    /// the same format, with the messages of libcamera's and Raspberry Pi's sources.
    const VIRTUAL_NO_DMABUF: &str = "[6:18:41.366023716] [4432]  WARN IPAManager ipa_manager.cpp:148 No IPA found in '/usr/lib/x86_64-linux-gnu/libcamera'\n\
[6:18:41.366098156] [4432]  INFO Camera camera_manager.cpp:327 libcamera v0.4.0\n\
[6:08:11.060397892] [24147] ERROR DmaBufAllocator dma_buf_allocator.cpp:119 Could not open any dma-buf provider\n\
[6:18:41.368304806] [4437]  INFO Camera camera.cpp:1202 configuring streams: (0) 640x480-NV12";

    fn parse_all(text: &str) -> Vec<LogLine> {
        text.lines().filter_map(LogLine::parse).collect()
    }

    #[test]
    fn parses_libcamera_log_lines() {
        let lines = parse_all(VIRTUAL_NO_DMABUF);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].level, Level::Warn);
        assert_eq!(lines[1].level, Level::Info);
        assert_eq!(lines[1].message, "libcamera v0.4.0");
        assert_eq!(lines[2].level, Level::Error);
        assert_eq!(lines[2].category, "DmaBufAllocator");
        assert_eq!(lines[2].message, "Could not open any dma-buf provider");
        assert_eq!(lines[3].message, "configuring streams: (0) 640x480-NV12");
        assert!(LogLine::parse("0:00:00.1 not a libcamera line").is_none());
        assert!(LogLine::parse("").is_none());
    }

    #[test]
    fn the_dma_buf_line_wins_and_names_what_is_missing() {
        let lines = parse_all(VIRTUAL_NO_DMABUF);
        let d = explain_with(&lines, || DmaBufNodes::Missing).expect("a diagnosis");
        assert_eq!(d.cause, Some(Cause::DmaBuf));
        assert_eq!(d.reason, "Could not open any dma-buf provider");
        assert!(d.hint.contains("/dev/dma_heap"), "{}", d.hint);
        let text = d.to_string();
        assert!(text.starts_with("libcamera: Could not open any dma-buf provider — "));
        assert!(text.ends_with("(docs/troubleshooting.md#libcamera-dma-buf)"));
        let unreadable = explain_with(&lines, || DmaBufNodes::Unreadable).expect("a diagnosis");
        assert!(
            unreadable.hint.contains("video group"),
            "{}",
            unreadable.hint
        );
    }

    #[test]
    fn known_causes_from_real_lines() {
        let cases = [
            (
                "[0:00:01.801497418] [1433] ERROR DmaBufAllocator dma_buf_allocator.cpp:173 dma-heap allocation failure for frame-0",
                Cause::Cma,
            ),
            (
                "[3:12:40.552913461] [1650] ERROR V4L2 v4l2_videodevice.cpp:1314 /dev/video0[13:cap]: Unable to request 4 buffers: Cannot allocate memory",
                Cause::Cma,
            ),
            (
                "[0:00:00.301222456] [1988]  INFO Camera camera.cpp:1011 Pipeline handler failed to acquire camera",
                Cause::Busy,
            ),
            (
                "[0:00:00.223145112] [902] ERROR IPAProxy ipa_proxy.cpp:149 Configuration file 'imx708.json' not found for IPA module 'rpi/vc4'",
                Cause::Tuning,
            ),
            (
                "[0:00:00.200381111] [903] ERROR IPARPI ipa_base.cpp:153 Failed to load tuning data file /usr/share/libcamera/ipa/rpi/vc4/imx708.json",
                Cause::Tuning,
            ),
        ];
        for (line, cause) in cases {
            let parsed = LogLine::parse(line).expect(line);
            assert_eq!(cause_of(&parsed.message), Some(cause), "{line}");
        }
    }

    #[test]
    fn a_tuning_file_is_a_cause_but_not_fatal_and_a_fallback_is_no_cause() {
        // Real lines: libcamera 0.5's soft ISP falling back (WARN), an IPU3 that gave up
        // (ERROR), and Arducam's Pivariety, which logs it at ERROR and streams anyway.
        let fallback = parse_all(
            "[0:09:56.873712857] [6216]  WARN IPAProxy ipa_proxy.cpp:160 Configuration file 'ov08x40.yaml' not found for IPA module 'simple', falling back to 'uncalibrated.yaml'",
        );
        assert_eq!(explain_with(&fallback, || DmaBufNodes::Readable), None);
        let ipu3 = parse_all(
            "[0:01:41.965587917] [4548] ERROR IPAProxy ipa_proxy.cpp:149 Configuration file 'ov2680.yaml' not found for IPA module 'ipu3'\n\
             [0:01:41.965986849] [4548] ERROR IPAIPU3 ipu3.cpp:307 ipu3: Failed to create camera sensor helper for ov2680",
        );
        let d = explain_with(&ipu3, || DmaBufNodes::Readable).expect("a diagnosis");
        assert_eq!(d.cause, Some(Cause::Tuning));
        assert!(!Cause::Tuning.fatal());
        assert_eq!(fatal(&ipu3), None);
        let both: Vec<LogLine> = ipu3
            .iter()
            .cloned()
            .chain(parse_all(VIRTUAL_NO_DMABUF))
            .collect();
        assert_eq!(fatal(&both).and_then(|d| d.cause), Some(Cause::DmaBuf));
        assert!(Cause::DmaBuf.fatal() && Cause::Cma.fatal() && Cause::Busy.fatal());
    }

    #[test]
    fn libcamerasrc_bus_errors() {
        // GST_ELEMENT_ERROR texts of gstlibcamerasrc.cpp.
        assert_eq!(
            cause_of("Could not find any supported camera on this system."),
            Some(Cause::NoCamera)
        );
        assert_eq!(
            cause_of("Could not find a camera named 'imx219'."),
            Some(Cause::NoCamera)
        );
        assert_eq!(
            cause_of("Failed to acquire camera: Device or resource busy"),
            Some(Cause::Busy)
        );
        assert_eq!(cause_of("Internal data stream error."), None);
    }

    #[test]
    fn an_unknown_error_is_still_reported_in_libcameras_words() {
        let lines = parse_all(
            "[0:00:00.1] [1]  WARN Camera camera.cpp:100 something odd\n\
             [0:00:00.2] [1] ERROR RkISP1 rkisp1.cpp:400 Failed to start ISP",
        );
        let d = explain_with(&lines, || DmaBufNodes::Missing).expect("a diagnosis");
        assert_eq!(d.cause, None);
        assert_eq!(d.reason, "Failed to start ISP");
        assert_eq!(d.to_string(), "libcamera: Failed to start ISP");
        assert!(
            explain_with(&parse_all("[0:0] [1] WARN X a.cpp:1 w"), || {
                DmaBufNodes::Missing
            })
            .is_none()
        );
    }

    #[test]
    fn every_cause_has_its_section_in_the_troubleshooting_guide() {
        let doc = include_str!("../../docs/troubleshooting.md");
        for c in [
            Cause::DmaBuf,
            Cause::Cma,
            Cause::Busy,
            Cause::NoCamera,
            Cause::Tuning,
        ] {
            let anchor = format!("<a id=\"{}\"></a>", c.anchor());
            assert!(
                doc.contains(&anchor),
                "docs/troubleshooting.md lacks {anchor}"
            );
        }
    }

    #[test]
    fn nodes_are_probed_from_the_device_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(DmaBufNodes::probe_in(dir.path()), DmaBufNodes::Missing);
        std::fs::create_dir(dir.path().join("dma_heap")).expect("mkdir");
        std::fs::write(dir.path().join("dma_heap/linux,cma"), b"").expect("write");
        assert_eq!(DmaBufNodes::probe_in(dir.path()), DmaBufNodes::Readable);
    }
}
