//! The camera backends of `[image]`, without a camera: what camstream would set is checked
//! against the real elements' property specs. libcamera: Debian 12's `libcamerasrc` has no
//! control properties, so the element of Debian 13 (libcamera 0.4) is inspected inside a
//! debootstrap root (scripts/trixie-root.sh). V4L2: the `extra-controls` structure is handed to
//! a real `v4l2src`.

use std::path::Path;
use std::process::Command;

use camstream::config::image::{
    AfMode, AfRange, Awb, Denoise, Exposure, ImageConfig, Metering, OverlayConfig,
};
use camstream::stream::image::libcamera::{self, PropKind, PropSpec};
use camstream::stream::image::plan::{self, Backend, Caps, SETTINGS};
use camstream::stream::image::v4l2;
use gst::prelude::*;

fn init() {
    gst::init().expect("gst init");
}

/// `gst-inspect-1.0 ELEMENT` on this machine.
fn inspect(element: &str) -> String {
    let out = Command::new("gst-inspect-1.0")
        .arg(element)
        .output()
        .expect("gst-inspect-1.0 runs (package gstreamer1.0-tools)");
    assert!(out.status.success(), "gst-inspect-1.0 {element} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

/// The `gst-inspect-1.0` parser (used on the trixie element) reads what the live element's
/// specs say, on elements of this machine with the same kinds of properties.
#[test]
fn inspect_parser_agrees_with_the_live_property_specs() {
    init();
    for element in [
        "videoflip",
        "videobalance",
        "x264enc",
        "videotestsrc",
        "v4l2src",
    ] {
        // gst-inspect-1.0 lists properties by name.
        let mut live = libcamera::specs_of(&gst::ElementFactory::make(element).build().unwrap());
        live.sort_by(|a, b| a.name.cmp(&b.name));
        let parsed = libcamera::parse_inspect(&inspect(element));
        assert_eq!(
            parsed.iter().map(|p| &p.name).collect::<Vec<_>>(),
            live.iter().map(|p| &p.name).collect::<Vec<_>>(),
            "{element}: property names"
        );
        for (p, l) in parsed.iter().zip(&live) {
            let same = match (&p.kind, &l.kind) {
                (PropKind::Float { min: a, max: b }, PropKind::Float { min: c, max: d }) => {
                    close(*a, *c) && close(*b, *d)
                }
                (a, b) => a == b,
            };
            assert!(
                same,
                "{element}.{}: parsed {:?}, live {:?}",
                p.name, p.kind, l.kind
            );
            assert_eq!(p.live, l.live, "{element}.{}: live flag", p.name);
        }
    }
}

/// Every setting at a value away from its default.
fn everything() -> ImageConfig {
    ImageConfig {
        hflip: true,
        vflip: false,
        rotation: 0,
        brightness: -0.25,
        contrast: 1.5,
        saturation: 0.5,
        sharpness: 2.0,
        exposure: Exposure::Short,
        shutter_us: 20_000,
        gain: 4.0,
        ev: -1.5,
        metering: Metering::Spot,
        awb: Awb::Daylight,
        awb_gains: [1.8, 1.4],
        denoise: Denoise::Fast,
        af_mode: Some(AfMode::Continuous),
        af_range: Some(AfRange::Macro),
        lens_position: Some(2.0),
        hdr: true,
        flicker_period: 10_000,
        roi: [0.25, 0.25, 0.5, 0.5],
        sensor_mode: "2304:1296:10:P".into(),
        tuning_file: "/usr/share/libcamera/ipa/rpi/vc4/imx708.json".into(),
        overlay: OverlayConfig::default(),
    }
}

/// `gst-inspect-1.0 libcamerasrc` inside the trixie root, made or reused by the script; `None`
/// (with a loud message) only when this machine cannot make the root.
fn trixie_libcamerasrc() -> Option<String> {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let has_debootstrap = Command::new("sh")
        .args(["-c", "command -v debootstrap"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !is_root || !has_debootstrap {
        eprintln!(
            "\n\n*** SKIPPED: the trixie libcamerasrc check needs root and debootstrap \
             (root: {is_root}, debootstrap: {has_debootstrap}); run scripts/setup.sh --test as \
             root ***\n"
        );
        return None;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("bash")
        .arg(repo.join("scripts/trixie-root.sh"))
        .args(["gstreamer1.0-tools", "gstreamer1.0-libcamera"])
        .status()
        .expect("scripts/trixie-root.sh runs");
    assert!(status.success(), "scripts/trixie-root.sh failed");
    let root = repo.join("target/trixie-root");
    let out = Command::new("chroot")
        .arg(&root)
        .args(["gst-inspect-1.0", "libcamerasrc"])
        .env("GST_REGISTRY", "/tmp/camstream-test-registry.bin")
        .output()
        .expect("chroot runs");
    assert!(
        out.status.success(),
        "gst-inspect-1.0 libcamerasrc in {}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn libcamera_properties_match_the_trixie_libcamerasrc() {
    let Some(text) = trixie_libcamerasrc() else {
        return;
    };
    let specs: Vec<PropSpec> = libcamera::parse_inspect(&text);
    assert!(
        specs.iter().any(|s| s.name == "camera-name"),
        "not libcamerasrc's properties:\n{text}"
    );
    // Every value each setting can take, property by property, against the element's spec.
    let mut cases: Vec<ImageConfig> = vec![everything()];
    for e in [Exposure::Short, Exposure::Long, Exposure::Manual] {
        cases.push(ImageConfig {
            exposure: e,
            ..everything()
        });
    }
    for a in [
        Awb::Incandescent,
        Awb::Tungsten,
        Awb::Fluorescent,
        Awb::Indoor,
        Awb::Daylight,
        Awb::Cloudy,
    ] {
        cases.push(ImageConfig {
            awb: a,
            ..everything()
        });
    }
    for m in [Metering::Spot, Metering::Matrix] {
        cases.push(ImageConfig {
            metering: m,
            ..everything()
        });
    }
    for (m, r) in [
        (AfMode::Manual, AfRange::Normal),
        (AfMode::Auto, AfRange::Full),
        (AfMode::Continuous, AfRange::Macro),
    ] {
        cases.push(ImageConfig {
            af_mode: Some(m),
            af_range: Some(r),
            ..everything()
        });
    }
    cases.push(ImageConfig {
        brightness: 1.0,
        contrast: 16.0,
        saturation: 0.0,
        sharpness: 16.0,
        ev: 10.0,
        gain: 64.0,
        shutter_us: 10_000_000,
        ..everything()
    });
    // What libcamera 0.4 carries, and the properties it uses.
    let carried = [
        ("brightness", vec!["brightness"]),
        ("contrast", vec!["contrast"]),
        ("saturation", vec!["saturation"]),
        ("sharpness", vec!["sharpness"]),
        ("exposure", vec!["ae-exposure-mode", "ae-enable"]),
        ("shutter_us", vec!["exposure-time"]),
        ("gain", vec!["analogue-gain"]),
        ("ev", vec!["exposure-value"]),
        ("metering", vec!["ae-metering-mode"]),
        ("awb", vec!["awb-mode"]),
        ("awb_gains", vec!["awb-enable", "colour-gains"]),
        ("af_mode", vec!["af-mode"]),
        ("af_range", vec!["af-range"]),
        ("lens_position", vec!["lens-position"]),
        ("flicker_period", vec!["ae-flicker-period"]),
    ];
    let mut checked = 0;
    for cfg in &cases {
        for (setting, props) in &carried {
            let wanted = libcamera::wanted(setting, cfg).expect("a value away from the default");
            for (name, value) in &wanted {
                assert!(props.contains(name), "{setting} sets {name}");
                let spec = specs
                    .iter()
                    .find(|s| s.name == *name)
                    .unwrap_or_else(|| panic!("trixie's libcamerasrc has no {name}"));
                spec.accepts(value).unwrap_or_else(|e| {
                    panic!(
                        "{setting}: {name}={value} refused by the spec ({:?}): {e}",
                        spec.kind
                    )
                });
                assert!(spec.live, "{name} is not controllable while playing");
                checked += 1;
            }
        }
    }
    eprintln!("{checked} property values checked against trixie's libcamerasrc");
    // The plan on that element: the camera carries what it can; flips (no orientation
    // property in libcamera 0.4) and the zoom fall back to software; what nothing can honour
    // is refused by name.
    let caps = Caps::Libcamera(specs.clone());
    let err = plan::plan(&everything(), &caps).unwrap_err().to_string();
    for s in ["denoise", "hdr", "sensor_mode", "tuning_file"] {
        assert!(
            err.contains(&format!("image.{s} = ")),
            "{s} not refused: {err}"
        );
    }
    let ok = ImageConfig {
        denoise: Denoise::Auto,
        hdr: false,
        sensor_mode: String::new(),
        tuning_file: String::new(),
        ..everything()
    };
    let p = plan::plan(&ok, &caps).unwrap();
    let backend = |s: &str| p.uses.iter().find(|u| u.setting == s).map(|u| u.backend);
    for (setting, _) in &carried {
        assert_eq!(backend(setting), Some(Backend::Libcamera), "{setting}");
    }
    let orientation_in_camera = specs.iter().any(|s| s.name == "orientation");
    assert_eq!(
        backend("hflip"),
        Some(if orientation_in_camera {
            Backend::Libcamera
        } else {
            Backend::Software
        })
    );
    assert_eq!(backend("roi"), Some(Backend::Software));
    assert!(p.warnings.iter().any(|w| w.contains("videoflip")) || orientation_in_camera);
    for (name, value) in &p.libcamera {
        let spec = specs.iter().find(|s| s.name == *name).unwrap();
        spec.accepts(value).unwrap();
    }
    // The controls API view of the same element.
    for s in SETTINGS {
        let c = plan::carrier(s, &caps);
        if carried.iter().any(|(n, _)| n == s) {
            assert_eq!(c, Ok((Backend::Libcamera, true)), "{s}");
        }
    }
}

#[test]
fn libcamera_0_0_3_has_no_controls_so_only_software_settings_start() {
    // Debian 12's libcamerasrc exposes camera-name only: nothing of the camera's own.
    let caps = Caps::Libcamera(vec![PropSpec {
        name: "camera-name".into(),
        kind: PropKind::String,
        live: false,
    }]);
    let p = plan::plan(
        &ImageConfig {
            hflip: true,
            brightness: 0.2,
            ..Default::default()
        },
        &caps,
    )
    .unwrap();
    assert!(p.uses.iter().all(|u| u.backend == Backend::Software));
    assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    let err = plan::plan(
        &ImageConfig {
            exposure: Exposure::Long,
            ..Default::default()
        },
        &caps,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("this libcamerasrc has no property ae-exposure-mode"),
        "{err}"
    );
}

/// `v4l2-ctl --list-ctrls` of a Raspberry Pi camera through the bcm2835 V4L2 driver (as the tool
/// prints it): it flips itself.
const PI_V4L2: &str = "
User Controls

                     brightness 0x00980900 (int)    : min=0 max=100 step=1 default=50 value=50 flags=slider
                       contrast 0x00980901 (int)    : min=-100 max=100 step=1 default=0 value=0 flags=slider
                     saturation 0x00980902 (int)    : min=-100 max=100 step=1 default=0 value=0 flags=slider
                horizontal_flip 0x00980914 (bool)   : default=0 value=0
                  vertical_flip 0x00980915 (bool)   : default=0 value=0
           power_line_frequency 0x00980918 (menu)   : min=0 max=3 default=1 value=1 (50 Hz)
                      sharpness 0x0098091b (int)    : min=-100 max=100 step=1 default=0 value=0 flags=slider

Camera Controls

                  auto_exposure 0x009a0901 (menu)   : min=0 max=3 default=0 value=0 (Auto Mode)
         exposure_time_absolute 0x009a0902 (int)    : min=1 max=10000 step=1 default=1000 value=1000
      white_balance_auto_preset 0x009a0914 (menu)   : min=0 max=10 default=1 value=1 (Auto)
         exposure_metering_mode 0x009a0919 (menu)   : min=0 max=3 default=0 value=0 (Average)
";

#[test]
fn v4l2_extra_controls_are_taken_by_a_real_v4l2src() {
    init();
    let controls = v4l2::parse_list(PI_V4L2);
    let caps = Caps::V4l2 {
        device: "/dev/video0".into(),
        controls: Ok(controls),
    };
    let cfg = ImageConfig {
        hflip: true,
        vflip: true,
        rotation: 0,
        brightness: 0.5,
        contrast: 2.0,
        exposure: Exposure::Manual,
        shutter_us: 30_000,
        awb: Awb::Cloudy,
        metering: Metering::Matrix,
        flicker_period: 8_333,
        ..Default::default()
    };
    let p = plan::plan(&cfg, &caps).unwrap();
    assert!(
        p.uses.iter().all(|u| u.backend == Backend::V4l2 && u.live),
        "{:?}",
        p.uses
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let want: Vec<(String, i64)> = vec![
        ("horizontal_flip".into(), 1),
        ("vertical_flip".into(), 1),
        ("brightness".into(), 75),
        // 2 on the 0..16 scale with 1 at the default (0) and 16 at the maximum (100).
        ("contrast".into(), 7),
        ("auto_exposure".into(), 1),
        ("exposure_time_absolute".into(), 300),
        ("exposure_metering_mode".into(), 3),
        ("white_balance_auto_preset".into(), 8),
        ("power_line_frequency".into(), 2),
    ];
    let mut got = p.v4l2.clone();
    got.sort();
    let mut w = want.clone();
    w.sort();
    assert_eq!(got, w);

    // The structure as v4l2src's extra-controls property takes it, read back field by field.
    let text = v4l2::structure(&p.v4l2);
    let s: gst::Structure = text.parse().expect("a GstStructure");
    let src = gst::ElementFactory::make("v4l2src").build().unwrap();
    let pspec = src.find_property("extra-controls").unwrap();
    assert_eq!(pspec.value_type(), gst::Structure::static_type());
    src.set_property("extra-controls", &s);
    let back: gst::Structure = src.property("extra-controls");
    assert_eq!(back.name(), "controls");
    for (name, value) in &want {
        assert_eq!(
            back.get::<i32>(name.as_str()).unwrap(),
            *value as i32,
            "{name}"
        );
    }
    // A quarter turn is beyond the device's flips: software, with a warning.
    let p = plan::plan(
        &ImageConfig {
            rotation: 90,
            ..Default::default()
        },
        &caps,
    )
    .unwrap();
    assert_eq!(p.uses[0].backend, Backend::Software);
    assert!(p.warnings[0].contains("rotate by 90"), "{:?}", p.warnings);
}
