//! The motion detector: pure logic over small grey pictures, so it is tested on synthetic
//! frames. A running-average background; each picture is first matched to it by a global gain
//! and offset (a least-squares fit over the analysed area), so auto-exposure, a light switched
//! on or a brightness ramp leave no residual; a pixel counts as changed when its residual
//! exceeds the threshold plus a noise floor (three times the picture's median residual), and
//! has a changed neighbour (sensor noise is salt, motion is blobs). Motion needs a changed
//! fraction between `min_area` and [`GLOBAL_FRACTION`] for `min_duration_ms`, and ends after
//! `cooldown_ms` without.

use crate::config::motion::{MotionConfig, ZoneMode};

/// A changed fraction above this is a change of the whole scene (the camera moved, the lights
/// changed in a way no gain explains), not motion: the background is re-learnt at once.
pub const GLOBAL_FRACTION: f64 = 0.6;
/// Background learning rate of unchanged pixels per picture (≈ 2 s memory at 5 fps).
const ALPHA: f32 = 0.1;
/// Learning rate of changed pixels: an object that stops is absorbed in tens of seconds,
/// while a one-picture flicker barely marks the background.
const ALPHA_CHANGED: f32 = 0.01;
/// Pictures used to learn the background before anything may trigger.
const WARM_UP: u32 = 3;
/// Grey levels at or beyond which a pixel is clipped and carries no information.
const DARK: f32 = 4.0;
const BRIGHT: f32 = 251.0;

/// The detector's settings, resolved from `[motion]` (sensitivity applied).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Residual (grey levels) above the noise floor that marks a changed pixel.
    pub threshold: f32,
    /// Fraction of the analysed area that must change.
    pub min_area: f64,
    /// How long changes must last before motion starts, ms.
    pub min_duration_ms: u64,
    /// Quiet time before motion ends, ms.
    pub cooldown_ms: u64,
}

impl Params {
    /// The settings of `c`: sensitivity 0.5 leaves threshold and area as set, 1 halves, 0
    /// doubles them.
    pub fn of(c: &MotionConfig) -> Self {
        let scale = 2f64.powf(1.0 - 2.0 * c.sensitivity.clamp(0.0, 1.0));
        Params {
            threshold: (f64::from(c.threshold) * scale) as f32,
            min_area: c.min_area * scale,
            min_duration_ms: u64::from(c.min_duration_ms),
            cooldown_ms: u64::from(c.cooldown_ms),
        }
    }
}

/// Which pixels are analysed, and which include zone each belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    width: usize,
    height: usize,
    /// Per pixel: 0 = not analysed, else 1 + index into `names` (0 in `names` is "all").
    zone: Vec<u8>,
    names: Vec<String>,
    analysed: usize,
}

/// Whether (x, y) lies inside the polygon (even-odd rule).
fn inside(points: &[[f64; 2]], x: f64, y: f64) -> bool {
    let mut c = false;
    let n = points.len();
    for i in 0..n {
        let [xi, yi] = points[i];
        let [xj, yj] = points[(i + n - 1) % n];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            c = !c;
        }
    }
    c
}

impl Mask {
    /// The mask of `c`'s zones at `width`×`height`: include zones (none = the whole picture)
    /// minus exclude zones; a pixel in two include zones belongs to the first.
    pub fn of(c: &MotionConfig, width: usize, height: usize) -> Self {
        let includes: Vec<(usize, &crate::config::motion::ZoneConfig)> = c
            .zones
            .iter()
            .enumerate()
            .filter(|(_, z)| z.mode == ZoneMode::Include)
            .take(254)
            .collect();
        let mut names = vec!["all".to_string()];
        names.extend(includes.iter().map(|(i, z)| z.label(*i)));
        let mut zone = vec![0u8; width * height];
        let mut analysed = 0;
        for y in 0..height {
            let fy = (y as f64 + 0.5) / height as f64;
            for x in 0..width {
                let fx = (x as f64 + 0.5) / width as f64;
                let z = if includes.is_empty() {
                    1
                } else {
                    includes
                        .iter()
                        .position(|(_, z)| inside(&z.points, fx, fy))
                        .map_or(0, |i| i as u8 + 2)
                };
                let excluded = c
                    .zones
                    .iter()
                    .any(|z| z.mode == ZoneMode::Exclude && inside(&z.points, fx, fy));
                if z != 0 && !excluded {
                    zone[y * width + x] = z;
                    analysed += 1;
                }
            }
        }
        Mask {
            width,
            height,
            zone,
            names,
            analysed,
        }
    }

    /// Pixels analysed.
    pub fn analysed(&self) -> usize {
        self.analysed
    }
}

/// What a picture changed in the motion state.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Motion began.
    Start {
        /// Changed fraction of the analysed area.
        score: f64,
        /// The include zone with the most change, or "all".
        zone: String,
    },
    /// Motion ended.
    End {
        /// The highest score of the event.
        peak_score: f64,
        /// The zone the event started in.
        zone: String,
        /// From start to end, ms (the cooldown not counted).
        duration_ms: u64,
    },
}

/// One picture's result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Analysis {
    /// Changed fraction of the analysed area (0 when the picture was a global change).
    pub score: f64,
    /// Whether this picture alone looks like motion.
    pub candidate: bool,
    /// Whether the whole scene changed (re-learnt, not motion).
    pub global: bool,
    /// Whether this picture is the highest-scoring of the running event so far.
    pub peak: bool,
    /// A start or end caused by this picture.
    pub transition: Option<Transition>,
}

#[derive(Debug, Clone)]
struct Active {
    start_ms: u64,
    last_change_ms: u64,
    peak: f64,
    zone: String,
}

/// The detector of one stream.
#[derive(Debug)]
pub struct Detector {
    params: Params,
    mask: Mask,
    background: Vec<f32>,
    seen: u32,
    candidate_since: Option<u64>,
    active: Option<Active>,
    changed: Vec<bool>,
}

impl Detector {
    /// A detector for `width`×`height` pictures.
    pub fn new(c: &MotionConfig, width: usize, height: usize) -> Self {
        Detector {
            params: Params::of(c),
            mask: Mask::of(c, width, height),
            background: Vec::new(),
            seen: 0,
            candidate_since: None,
            active: None,
            changed: vec![false; width * height],
        }
    }

    /// Takes new settings, keeping the background (zones are re-rasterised).
    pub fn reconfigure(&mut self, c: &MotionConfig) {
        self.params = Params::of(c);
        self.mask = Mask::of(c, self.mask.width, self.mask.height);
    }

    /// Whether motion is on now.
    pub fn active(&self) -> bool {
        self.active.is_some()
    }

    /// Ends a running event now (detection switched off); `None` when none runs.
    pub fn finish(&mut self, now_ms: u64) -> Option<Transition> {
        self.candidate_since = None;
        self.active.take().map(|a| Transition::End {
            peak_score: a.peak,
            zone: a.zone,
            duration_ms: now_ms.saturating_sub(a.start_ms),
        })
    }

    /// Ends a running event whose cooldown has passed by `now_ms` without a picture (the
    /// camera stopped sending).
    pub fn idle(&mut self, now_ms: u64) -> Option<Transition> {
        let last = self.active.as_ref()?.last_change_ms;
        if now_ms.saturating_sub(last) >= self.params.cooldown_ms {
            self.finish(last)
        } else {
            None
        }
    }

    /// Analyses one grey picture (`width`×`height` bytes, row after row) taken at `t_ms`
    /// (a monotonic clock).
    pub fn analyse(&mut self, frame: &[u8], t_ms: u64) -> Analysis {
        let (w, h) = (self.mask.width, self.mask.height);
        if frame.len() < w * h {
            return Analysis::default();
        }
        if self.background.len() != w * h {
            self.background = frame[..w * h].iter().map(|&v| f32::from(v)).collect();
            self.seen = 1;
            return Analysis::default();
        }
        let (a, b) = self.fit(frame);
        // Residuals, and their histogram for the noise floor.
        let mut hist = [0u32; 256];
        let mut residual = vec![0f32; w * h];
        for (i, r) in residual.iter_mut().enumerate() {
            if self.mask.zone[i] == 0 {
                continue;
            }
            let (f, g) = (f32::from(frame[i]), self.background[i]);
            if !(DARK..=BRIGHT).contains(&f) || !(DARK..=BRIGHT).contains(&g) {
                continue;
            }
            *r = (f - (a * g + b)).abs();
            hist[(*r as usize).min(255)] += 1;
        }
        let median = {
            let half = self.mask.analysed as u32 / 2;
            let mut acc = 0;
            hist.iter()
                .position(|&n| {
                    acc += n;
                    acc > half
                })
                .unwrap_or(0) as f32
        };
        let limit = self.params.threshold + 3.0 * median;
        for (c, r) in self.changed.iter_mut().zip(&residual) {
            *c = *r > limit;
        }
        // A changed pixel counts only with a changed 4-neighbour.
        let mut per_zone = vec![0usize; self.mask.names.len() + 1];
        let mut changed = 0usize;
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                if !self.changed[i] {
                    continue;
                }
                let n = (x > 0 && self.changed[i - 1])
                    || (x + 1 < w && self.changed[i + 1])
                    || (y > 0 && self.changed[i - w])
                    || (y + 1 < h && self.changed[i + w]);
                if n {
                    changed += 1;
                    per_zone[self.mask.zone[i] as usize] += 1;
                }
            }
        }
        let fraction = changed as f64 / self.mask.analysed.max(1) as f64;
        let global = fraction > GLOBAL_FRACTION;
        if global {
            self.background = frame[..w * h].iter().map(|&v| f32::from(v)).collect();
        } else {
            for ((bg, &f), &changed) in self.background.iter_mut().zip(frame).zip(&self.changed) {
                let alpha = if changed { ALPHA_CHANGED } else { ALPHA };
                *bg += alpha * (f32::from(f) - *bg);
            }
        }
        self.seen = self.seen.saturating_add(1);
        let score = if global { 0.0 } else { fraction };
        let candidate = !global && self.seen > WARM_UP && fraction >= self.params.min_area;
        let mut out = Analysis {
            score,
            candidate,
            global,
            ..Analysis::default()
        };
        let zone = || {
            per_zone
                .iter()
                .enumerate()
                .skip(1)
                .max_by_key(|(_, n)| **n)
                .and_then(|(z, _)| self.mask.names.get(z - 1).cloned())
                .unwrap_or_else(|| "all".into())
        };
        match &mut self.active {
            Some(act) => {
                if candidate {
                    act.last_change_ms = t_ms;
                    if score > act.peak {
                        act.peak = score;
                        out.peak = true;
                    }
                } else if t_ms.saturating_sub(act.last_change_ms) >= self.params.cooldown_ms {
                    // The event lasted until its last change, not until the cooldown ran out.
                    let last = act.last_change_ms;
                    out.transition = self.finish(last);
                }
            }
            None => {
                if !candidate {
                    self.candidate_since = None;
                } else {
                    let since = *self.candidate_since.get_or_insert(t_ms);
                    let long_enough = t_ms.saturating_sub(since) >= self.params.min_duration_ms
                        && (t_ms > since || self.params.min_duration_ms == 0);
                    if long_enough {
                        let zone = zone();
                        self.active = Some(Active {
                            start_ms: since,
                            last_change_ms: t_ms,
                            peak: score,
                            zone: zone.clone(),
                        });
                        out.peak = true;
                        out.transition = Some(Transition::Start { score, zone });
                    }
                }
            }
        }
        out
    }

    /// Gain and offset that best map the background onto `frame` over the analysed, unclipped
    /// pixels (least squares), clamped to what an exposure change can do.
    fn fit(&self, frame: &[u8]) -> (f32, f32) {
        let (mut n, mut sf, mut sg, mut sgg, mut sfg) = (0f64, 0f64, 0f64, 0f64, 0f64);
        for (i, &z) in self.mask.zone.iter().enumerate() {
            if z == 0 {
                continue;
            }
            let (f, g) = (f32::from(frame[i]), self.background[i]);
            if !(DARK..=BRIGHT).contains(&f) || !(DARK..=BRIGHT).contains(&g) {
                continue;
            }
            let (f, g) = (f64::from(f), f64::from(g));
            n += 1.0;
            sf += f;
            sg += g;
            sgg += g * g;
            sfg += f * g;
        }
        if n < 2.0 {
            return (1.0, 0.0);
        }
        let (mf, mg) = (sf / n, sg / n);
        let var = sgg / n - mg * mg;
        let gain = if var > 4.0 {
            ((sfg / n - mf * mg) / var).clamp(0.5, 2.0)
        } else {
            1.0
        };
        (gain as f32, (mf - gain * mg) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::motion::ZoneConfig;

    const W: usize = 160;
    const H: usize = 90;

    /// A textured static scene (a cheap LCG keeps the tests deterministic).
    struct Scene {
        seed: u64,
    }

    impl Scene {
        fn rand(&mut self) -> f32 {
            self.seed = self
                .seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.seed >> 33) as f32) / (1u64 << 31) as f32
        }

        /// The scene with `gain`/`offset` applied, `noise` grey levels of noise, and a bright
        /// 12×12 square at `square` (top-left corner) if any.
        fn frame(
            &mut self,
            gain: f32,
            offset: f32,
            noise: f32,
            square: Option<(usize, usize)>,
        ) -> Vec<u8> {
            let mut f = vec![0u8; W * H];
            for y in 0..H {
                for x in 0..W {
                    let base =
                        60.0 + (x as f32 * 0.6) + if (x / 8 + y / 8) % 2 == 0 { 30.0 } else { 0.0 };
                    let mut v = base * gain + offset + (self.rand() - 0.5) * 2.0 * noise;
                    if let Some((sx, sy)) = square
                        && (sx..sx + 12).contains(&x)
                        && (sy..sy + 12).contains(&y)
                    {
                        v = 240.0;
                    }
                    f[y * W + x] = v.clamp(0.0, 255.0) as u8;
                }
            }
            f
        }
    }

    fn config() -> MotionConfig {
        MotionConfig {
            enabled: true,
            ..MotionConfig::default()
        }
    }

    /// Runs `frames` at 5 fps from t = 0; returns the transitions with their times.
    fn run(d: &mut Detector, frames: impl IntoIterator<Item = Vec<u8>>) -> Vec<(u64, Transition)> {
        frames
            .into_iter()
            .enumerate()
            .filter_map(|(i, f)| {
                let t = i as u64 * 200;
                d.analyse(&f, t).transition.map(|tr| (t, tr))
            })
            .collect()
    }

    #[test]
    fn a_moving_square_starts_within_two_pictures_and_ends_after_the_cooldown() {
        let mut s = Scene { seed: 1 };
        let mut d = Detector::new(&config(), W, H);
        let frames: Vec<Vec<u8>> = (0..60)
            .map(|i| {
                let square = (10..20).contains(&i).then(|| (10 + (i - 10) * 6, 40));
                s.frame(1.0, 0.0, 3.0, square)
            })
            .collect();
        let t = run(&mut d, frames);
        assert_eq!(t.len(), 2, "{t:?}");
        // The square appears at picture 10 (2000 ms); min_duration 200 ms: the next picture.
        assert_eq!(t[0].0, 2200, "{t:?}");
        assert!(
            matches!(&t[0].1, Transition::Start { zone, score } if zone == "all" && *score > 0.005)
        );
        // Last change at picture 19 (3800 ms) or 20 (the square leaving); ends 3 s later.
        assert!((6800..=7200).contains(&t[1].0), "{t:?}");
        assert!(
            matches!(&t[1].1, Transition::End { duration_ms, .. } if (1600..=2000).contains(duration_ms)),
            "{t:?}"
        );
    }

    #[test]
    fn brightness_ramps_and_steps_do_not_trigger() {
        let mut s = Scene { seed: 2 };
        let mut d = Detector::new(&config(), W, H);
        // A ramp of gain and offset over 10 s (auto-exposure), then the lights switched on.
        let mut frames: Vec<Vec<u8>> = (0..50)
            .map(|i| s.frame(0.6 + i as f32 * 0.012, i as f32 * 0.8, 3.0, None))
            .collect();
        frames.extend((0..20).map(|_| s.frame(1.4, 30.0, 3.0, None)));
        frames.extend((0..20).map(|_| s.frame(0.7, -10.0, 3.0, None)));
        assert_eq!(run(&mut d, frames), []);
    }

    #[test]
    fn sensor_noise_and_a_one_picture_flicker_do_not_trigger() {
        let mut s = Scene { seed: 3 };
        let mut d = Detector::new(&config(), W, H);
        let mut frames: Vec<Vec<u8>> = (0..50).map(|_| s.frame(1.0, 0.0, 20.0, None)).collect();
        // One picture with a bright patch (an insect, a reflection), and one all white.
        frames.push(s.frame(1.0, 0.0, 3.0, Some((70, 30))));
        frames.extend((0..10).map(|_| s.frame(1.0, 0.0, 3.0, None)));
        frames.push(vec![250; W * H]);
        frames.extend((0..10).map(|_| s.frame(1.0, 0.0, 3.0, None)));
        assert_eq!(run(&mut d, frames), []);
    }

    #[test]
    fn motion_inside_an_exclude_zone_is_ignored_and_include_zones_are_named() {
        let mut c = config();
        c.zones = vec![ZoneConfig {
            name: "tree".into(),
            points: vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]],
            mode: ZoneMode::Exclude,
        }];
        let moving = |s: &mut Scene, x0: usize| -> Vec<Vec<u8>> {
            (0..30)
                .map(|i| s.frame(1.0, 0.0, 3.0, (i >= 10).then(|| (x0 + (i % 5) * 4, 40))))
                .collect()
        };
        let mut s = Scene { seed: 4 };
        let mut d = Detector::new(&c, W, H);
        assert_eq!(run(&mut d, moving(&mut s, 10)), [], "left half is excluded");
        c.zones.push(ZoneConfig {
            name: "door".into(),
            points: vec![[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]],
            mode: ZoneMode::Include,
        });
        let mut d = Detector::new(&c, W, H);
        let t = run(&mut d, moving(&mut s, 100));
        assert!(
            matches!(t.first(), Some((_, Transition::Start { zone, .. })) if zone == "door"),
            "{t:?}"
        );
    }

    #[test]
    fn sensitivity_scales_threshold_and_area() {
        let mut c = config();
        c.sensitivity = 1.0;
        let p = Params::of(&c);
        assert!((p.threshold - 12.5).abs() < 0.01 && (p.min_area - 0.0025).abs() < 1e-9);
        c.sensitivity = 0.0;
        assert!((Params::of(&c).threshold - 50.0).abs() < 0.01);
    }

    #[test]
    fn switching_off_ends_a_running_event() {
        let mut s = Scene { seed: 5 };
        let mut d = Detector::new(&config(), W, H);
        let frames: Vec<Vec<u8>> = (0..12)
            .map(|i| s.frame(1.0, 0.0, 3.0, (i >= 8).then(|| (i * 8, 30))))
            .collect();
        assert_eq!(run(&mut d, frames).len(), 1);
        assert!(d.active());
        assert!(matches!(d.finish(5000), Some(Transition::End { .. })));
        assert!(!d.active());
    }
}
