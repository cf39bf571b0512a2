//! The software backend: GStreamer elements after the source, before the split into
//! renditions, so every encoding shows the same picture. `videoflip` and `videobalance` are
//! always there (passthrough, so free, at their neutral values) so flips and colour balance can
//! change while playing; the digital zoom (`videocrop` + `videoscale`) and the overlay
//! (`clockoverlay`) are added only when configured.

use gst::prelude::*;

use super::plan::Plan;
use crate::config::VideoConfig;
use crate::config::image::{OverlayConfig, OverlayPosition};

/// Name of the `videoflip` element.
pub const FLIP: &str = "img_flip";
/// Name of the `videobalance` element.
pub const BALANCE: &str = "img_balance";
/// Name of the `videocrop` element.
pub const CROP: &str = "img_crop";
/// Name of the `clockoverlay` element.
pub const OVERLAY: &str = "img_overlay";

/// Rounds down to an even number of pixels (4:2:0 chroma).
fn even(v: f64) -> u32 {
    (v.max(0.0) as u32) & !1
}

/// The crop (left, right, top, bottom) in pixels of a normalised region of `w`×`h`.
pub fn crop_pixels(roi: [f64; 4], w: u32, h: u32) -> [u32; 4] {
    let [x, y, rw, rh] = roi;
    let left = even(x * f64::from(w));
    let top = even(y * f64::from(h));
    let cw = even(rw * f64::from(w)).max(2).min(w - left);
    let ch = even(rh * f64::from(h)).max(2).min(h - top);
    [left, w - left - cw, top, h - top - ch]
}

fn alignment(p: OverlayPosition) -> (&'static str, &'static str) {
    match p {
        OverlayPosition::TopLeft => ("left", "top"),
        OverlayPosition::Top => ("center", "top"),
        OverlayPosition::TopRight => ("right", "top"),
        OverlayPosition::BottomLeft => ("left", "bottom"),
        OverlayPosition::Bottom => ("center", "bottom"),
        OverlayPosition::BottomRight => ("right", "bottom"),
    }
}

fn font(o: &OverlayConfig) -> String {
    format!("Sans {}px", o.font_size)
}

/// The software part of the capture description, to follow the source's raw caps.
pub fn describe(plan: &Plan, video: &VideoConfig) -> String {
    let mut d = String::new();
    if let Some(roi) = plan.roi {
        let [l, r, t, b] = crop_pixels(roi, video.width, video.height);
        d.push_str(&format!(
            " ! videocrop name={CROP} left={l} right={r} top={t} bottom={b} ! videoscale \
             ! video/x-raw,width={},height={}",
            video.width, video.height
        ));
    }
    let [br, co, sa] = plan.balance;
    d.push_str(&format!(
        " ! videoflip name={FLIP} video-direction={} \
         ! videobalance name={BALANCE} brightness={br} contrast={co} saturation={sa}",
        plan.orientation.nick()
    ));
    if let Some(o) = &plan.overlay {
        let (h, v) = alignment(o.position);
        d.push_str(&format!(
            " ! clockoverlay name={OVERLAY} time-format={} halignment={h} valignment={v} \
             font-desc={} auto-resize=false",
            super::super::source::quote(&o.text),
            super::super::source::quote(&font(o)),
        ));
    }
    d
}

/// Sets the software elements of a running pipeline to `plan` (flips, balance, overlay).
pub fn apply(pipeline: &gst::Pipeline, plan: &Plan) -> Result<(), String> {
    let get = |n: &str| {
        pipeline
            .by_name(n)
            .ok_or_else(|| format!("the capture pipeline has no element {n}"))
    };
    let flip = get(FLIP)?;
    flip.set_property_from_str("video-direction", plan.orientation.nick());
    let balance = get(BALANCE)?;
    let [br, co, sa] = plan.balance;
    balance.set_property("brightness", br);
    balance.set_property("contrast", co);
    balance.set_property("saturation", sa);
    if let Some(o) = &plan.overlay {
        let overlay = get(OVERLAY)?;
        let (h, v) = alignment(o.position);
        overlay.set_property("time-format", &o.text);
        overlay.set_property_from_str("halignment", h);
        overlay.set_property_from_str("valignment", v);
        overlay.set_property("font-desc", font(o));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_keeps_even_pixels_inside_the_picture() {
        assert_eq!(
            crop_pixels([0.25, 0.25, 0.5, 0.5], 320, 240),
            [80, 80, 60, 60]
        );
        assert_eq!(crop_pixels([0.0, 0.0, 1.0, 1.0], 320, 240), [0, 0, 0, 0]);
        assert_eq!(
            crop_pixels([0.9, 0.9, 0.1, 0.1], 321, 241),
            [288, 1, 216, 1]
        );
    }
}
