//! Motion on one camera: a pure state machine over small grey images, by
//! capture time (Frigate's method, sized for many cameras on a CPU).
//!
//! Each frame is reduced to a working image about `WORK_WIDTH` wide (box
//! averaging), blurred, and compared with a running average of the scene:
//! pixels that differ by more than `threshold` are moving; the moving
//! pixels, dilated, form blobs, and blobs of `min_area` or more are
//! motion. A change over most of the image is no motion: after the mean
//! brightness of both is taken out, a change that is only light (lamps,
//! clouds, the camera's night mode) leaves little, and the average is
//! reset to the new image (`recalibrated`); a change that stays large
//! (the camera moved, was covered or sprayed) for `tamper_s` is a tamper
//! alarm, once, and the scene is then learnt anew.
//!
//! The detector runs it on the frames it samples (`detector`): a camera
//! with no motion for a while is not analysed. Its state is checkpointed
//! with the tracker's, so the scene's average is kept in 8.8 fixed point
//! (exactly what a checkpoint holds, about 38 KB a camera).

use base64::Engine;
use image::Scratch;
pub use image::working_size;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Working image width, pixels: small enough for tens of cameras a core.
pub const WORK_WIDTH: usize = 160;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MotionConfig {
    /// Least difference from the scene's average (0-255) that is motion.
    pub threshold: u8,
    /// Least area of a blob, as a share of the image.
    pub min_area: f32,
    /// How fast the scene's average takes in a change, seconds (its time
    /// constant: after this, 63 % of it). By time, not per frame, so a
    /// detector sampling 2 frames a second and one sampling 10 see an
    /// object that stopped become scene equally soon.
    pub settle_s: f32,
    /// Frames in a row with motion before it has started.
    pub start_frames: u32,
    /// Seconds without motion before it has ended.
    pub end_s: f32,
    /// A share of the image changed at once that is no longer motion but
    /// a change of light or of the scene.
    pub global: f32,
    /// Seconds a change of the scene must last to be a tamper alarm.
    pub tamper_s: f32,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig {
            threshold: 25,
            min_area: 0.002,
            settle_s: 2.0,
            start_frames: 2,
            end_s: 2.0,
            global: 0.5,
            tamper_s: 10.0,
        }
    }
}

/// A grey image, row by row, `stride` bytes from one row to the next.
pub struct Grey<'a> {
    pub width: usize,
    pub height: usize,
    pub stride: usize,
    pub pixels: &'a [u8],
}

impl<'a> Grey<'a> {
    /// Rows without padding.
    pub fn packed(width: usize, height: usize, pixels: &'a [u8]) -> Self {
        Grey { width, height, stride: width, pixels }
    }
}

/// What one frame gave.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MotionOut {
    /// The share of the working image that moved (0-1): the motion score.
    pub score: f32,
    /// The moving region in source pixels (x1, y1, x2, y2), when motion.
    pub region: Option<[f32; 4]>,
    /// Motion started (held `start_frames`) with this frame.
    pub started: bool,
    /// Motion ended: it had lasted this many seconds.
    pub ended: Option<f64>,
    /// The scene's average was reset after a change of light.
    pub recalibrated: bool,
    /// The scene changed and stayed changed: tamper.
    pub tamper: bool,
    /// The frame was compared with the scene (false for an image too small
    /// or malformed, and for the first, which is learnt).
    pub compared: bool,
}

/// One camera's motion state (checkpointed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Motion {
    /// The scene's running average, working size, in 1/256 grey levels.
    #[serde(serialize_with = "to_base64", deserialize_with = "from_base64")]
    average: Vec<u16>,
    size: (usize, usize),
    /// Frames in a row with motion.
    streak: u32,
    /// Since when it moves (capture time), once started.
    moving_since: Option<i64>,
    /// Last capture time with motion.
    last_motion: i64,
    /// Last capture time with motion or a new scene learnt.
    #[serde(default)]
    changed: i64,
    /// The last frame's capture time.
    #[serde(default)]
    last_frame: i64,
    /// Since when most of the image differs from the scene.
    changed_since: Option<i64>,
    pub recalibrations: u64,
    #[serde(skip)]
    scratch: Scratch,
}

impl Motion {
    /// One frame at capture time `t`; changes inside `mask` are never motion.
    pub fn frame(&mut self, cfg: &MotionConfig, image: &Grey, mask: Option<&mut Mask>, t: i64) -> MotionOut {
        let mut s = std::mem::take(&mut self.scratch);
        let out = match s.reduce(image) {
            Some(size) => self.compare(cfg, &mut s, size, image, mask, t),
            None => MotionOut::default(),
        };
        self.scratch = s;
        out
    }

    fn compare(
        &mut self,
        cfg: &MotionConfig,
        s: &mut Scratch,
        (w, h): (usize, usize),
        image: &Grey,
        mask: Option<&mut Mask>,
        t: i64,
    ) -> MotionOut {
        if self.size != (w, h) || self.average.len() != s.small.len() {
            self.learn(&s.small, (w, h), t);
            return MotionOut::default();
        }
        let out = MotionOut { compared: true, ..Default::default() };
        let last_frame = std::mem::replace(&mut self.last_frame, t);
        // Grey levels in 8.8 fixed point, as the average is kept.
        let threshold = i32::from(cfg.threshold) << 8;
        s.moved.resize(s.small.len(), 0);
        for (m, (&p, &a)) in s.moved.iter_mut().zip(s.small.iter().zip(&self.average)) {
            *m = u8::from(((i32::from(p) << 8) - i32::from(a)).abs() > threshold);
        }
        if let Some(ignored) = mask.and_then(|m| {
            m.prepare(w, h);
            m.for_size(w, h)
        }) {
            s.moved.iter_mut().zip(ignored).filter(|(_, i)| **i).for_each(|(m, _)| *m = 0);
        }
        let moved = s.moved.iter().map(|&m| u32::from(m)).sum::<u32>();
        let share = moved as f32 / s.small.len() as f32;
        if share >= cfg.global {
            return self.global_change(cfg, s, (w, h), t, out);
        }
        self.changed_since = None;
        let dt = (t - last_frame).clamp(0, 60_000_000) as f64 / 1e6;
        // alpha in 1/32768: the product with a difference of 8.8 grey
        // levels (at most ±65280) stays within an i32, and vectorises;
        // the result lies between the old average and the pixel.
        let alpha = ((1.0 - decay(dt / f64::from(cfg.settle_s.max(0.01)))) * 32768.0).round() as i32;
        for (a, &p) in self.average.iter_mut().zip(&s.small) {
            let d = (i32::from(p) << 8) - i32::from(*a);
            *a = (i32::from(*a) + ((d * alpha + (1 << 14)) >> 15)) as u16;
        }
        if moved == 0 {
            return self.quiet(cfg, t, out);
        }
        self.moved(cfg, s, (w, h), image, t, out)
    }

    /// Most of the image changed at once: light, or a new scene. Which,
    /// with the mean brightness of both taken out.
    fn global_change(
        &mut self,
        cfg: &MotionConfig,
        s: &Scratch,
        size: (usize, usize),
        t: i64,
        mut out: MotionOut,
    ) -> MotionOut {
        let n = s.small.len() as i64;
        let mp = s.small.iter().map(|&p| i64::from(p) << 8).sum::<i64>() / n;
        let ma = self.average.iter().map(|&a| i64::from(a)).sum::<i64>() / n;
        let threshold = i64::from(cfg.threshold) << 8;
        let structural = s
            .small
            .iter()
            .zip(&self.average)
            .filter(|(p, a)| (((i64::from(**p) << 8) - mp) - (i64::from(**a) - ma)).abs() > threshold)
            .count() as f32
            / n as f32;
        if structural < cfg.global / 2.0 {
            self.learn(&s.small, size, t);
            self.recalibrations += 1;
            self.changed_since = None;
            out.recalibrated = true;
            return self.quiet(cfg, t, out);
        }
        let since = *self.changed_since.get_or_insert(t);
        if (t - since) as f64 / 1e6 >= f64::from(cfg.tamper_s) {
            self.learn(&s.small, size, t);
            self.changed_since = None;
            out.tamper = true;
        }
        self.quiet(cfg, t, out)
    }

    /// The moving pixels as blobs: motion, or none.
    fn moved(
        &mut self,
        cfg: &MotionConfig,
        s: &mut Scratch,
        (w, h): (usize, usize),
        image: &Grey,
        t: i64,
        mut out: MotionOut,
    ) -> MotionOut {
        let (moving, region) = s.blobs(w, h, cfg.min_area);
        out.score = moving as f32 / (w * h) as f32;
        let Some([x1, y1, x2, y2]) = region else { return self.quiet(cfg, t, out) };
        let (sx, sy) = (image.width as f32 / w as f32, image.height as f32 / h as f32);
        out.region = Some([x1 as f32 * sx, y1 as f32 * sy, (x2 + 1) as f32 * sx, (y2 + 1) as f32 * sy]);
        self.streak += 1;
        self.last_motion = t;
        self.changed = t;
        if self.moving_since.is_none() && self.streak >= cfg.start_frames {
            self.moving_since = Some(t);
            out.started = true;
        }
        out
    }

    /// A frame without motion: motion ends after `end_s` of them.
    fn quiet(&mut self, cfg: &MotionConfig, t: i64, mut out: MotionOut) -> MotionOut {
        self.streak = 0;
        if let Some(since) = self.moving_since
            && (t - self.last_motion) as f64 / 1e6 >= f64::from(cfg.end_s)
        {
            self.moving_since = None;
            out.ended = Some((self.last_motion - since) as f64 / 1e6);
        }
        out
    }

    fn learn(&mut self, small: &[u8], size: (usize, usize), t: i64) {
        self.average = small.iter().map(|&p| u16::from(p) << 8).collect();
        self.size = size;
        self.changed = t;
        self.last_frame = t;
    }

    /// Motion is on: started and not yet ended.
    pub fn moving(&self) -> bool {
        self.moving_since.is_some()
    }

    /// Most of the image differs from the scene (not yet light, nor yet
    /// tamper): nothing is known to be still.
    pub fn unsettled(&self) -> bool {
        self.changed_since.is_some()
    }

    /// Seconds since the last motion or change of the scene (light,
    /// tamper, the first frame) before `t`.
    pub fn still_for(&self, t: i64) -> f64 {
        (t - self.changed) as f64 / 1e6
    }
}

/// e^(-x) for x ≥ 0 with only +, × and / (exactly rounded everywhere,
/// unlike a platform's `exp`): a processor on another machine restoring a
/// checkpoint decides exactly as this one would. (1 - x/2^16)^(2^16),
/// within 0.1 % of e^(-x) where it matters here.
fn decay(x: f64) -> f64 {
    let mut y = (1.0 - x / 65536.0).max(0.0);
    for _ in 0..16 {
        y *= y;
    }
    y
}

fn to_base64<S: Serializer>(v: &[u16], s: S) -> Result<S::Ok, S::Error> {
    let bytes: Vec<u8> = v.iter().flat_map(|a| a.to_le_bytes()).collect();
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn from_base64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    let text = String::deserialize(d)?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).map_err(serde::de::Error::custom)?;
    if bytes.len() % 2 != 0 {
        return Err(serde::de::Error::custom("motion average: odd length"));
    }
    Ok(bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect())
}

/// Areas of a camera's image where changes are never motion (a tree in
/// the wind, a clock, a road seen through the fence): polygons in source
/// pixels, drawn onto the working image once per size.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mask {
    pub polygons: Vec<Vec<[f32; 2]>>,
    /// Source size the polygons are in.
    pub source: (usize, usize),
    raster: Option<((usize, usize), Vec<bool>)>,
}

impl Mask {
    pub fn new(polygons: Vec<Vec<[f32; 2]>>, source: (usize, usize)) -> Self {
        Mask { polygons, source, raster: None }
    }

    /// Rasterises for a working size, once.
    fn prepare(&mut self, w: usize, h: usize) {
        if self.raster.as_ref().is_some_and(|(size, _)| *size == (w, h)) || self.source.0 == 0 || self.source.1 == 0 {
            return;
        }
        let (sx, sy) = (self.source.0 as f32 / w as f32, self.source.1 as f32 / h as f32);
        let cells = (0..w * h)
            .map(|i| {
                let p = [((i % w) as f32 + 0.5) * sx, ((i / w) as f32 + 0.5) * sy];
                self.polygons.iter().any(|poly| inside(poly, p))
            })
            .collect();
        self.raster = Some(((w, h), cells));
    }

    fn for_size(&self, w: usize, h: usize) -> Option<&[bool]> {
        self.raster.as_ref().filter(|(size, _)| *size == (w, h)).map(|(_, cells)| cells.as_slice())
    }
}

/// Even-odd rule.
fn inside(poly: &[[f32; 2]], [x, y]: [f32; 2]) -> bool {
    let mut inside = false;
    for (i, a) in poly.iter().enumerate() {
        let b = poly[(i + 1) % poly.len()];
        if (a[1] > y) != (b[1] > y) && x < a[0] + (y - a[1]) / (b[1] - a[1]) * (b[0] - a[0]) {
            inside = !inside;
        }
    }
    inside
}

mod image;

#[cfg(test)]
mod tests;
