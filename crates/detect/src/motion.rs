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
}

impl Motion {
    /// One frame at capture time `t`; changes inside `mask` are never motion.
    pub fn frame(&mut self, cfg: &MotionConfig, image: &Grey, mask: Option<&mut Mask>, t: i64) -> MotionOut {
        let mut out = MotionOut::default();
        let Some((small, w, h)) = reduce(image) else { return out };
        if self.size != (w, h) || self.average.len() != small.len() {
            self.learn(&small, (w, h), t);
            return out;
        }
        let average: Vec<f32> = self.average.iter().map(|&a| f32::from(a) / 256.0).collect();
        let last_frame = std::mem::replace(&mut self.last_frame, t);
        let ignored = mask.and_then(|m| {
            m.prepare(w, h);
            m.for_size(w, h)
        });
        let moved: Vec<bool> = small
            .iter()
            .zip(&average)
            .enumerate()
            .map(|(i, (&p, &a))| (p - a).abs() > f32::from(cfg.threshold) && !ignored.is_some_and(|m| m[i]))
            .collect();
        let share = moved.iter().filter(|&&m| m).count() as f32 / moved.len() as f32;
        if share >= cfg.global {
            // Light, or a new scene: which, with the brightness taken out.
            let (mp, ma) = (mean(&small), mean(&average));
            let structural = small
                .iter()
                .zip(&average)
                .filter(|(p, a)| ((*p - mp) - (*a - ma)).abs() > f32::from(cfg.threshold))
                .count() as f32
                / small.len() as f32;
            if structural < cfg.global / 2.0 {
                self.learn(&small, (w, h), t);
                self.recalibrations += 1;
                self.changed_since = None;
                out.recalibrated = true;
                return self.quiet(cfg, t, out);
            }
            let since = *self.changed_since.get_or_insert(t);
            if (t - since) as f64 / 1e6 >= f64::from(cfg.tamper_s) {
                self.learn(&small, (w, h), t);
                self.changed_since = None;
                out.tamper = true;
            }
            return self.quiet(cfg, t, out);
        }
        self.changed_since = None;
        let dt = (t - last_frame).clamp(0, 60_000_000) as f32 / 1e6;
        let alpha = 1.0 - (-dt / cfg.settle_s.max(0.01)).exp();
        for ((stored, a), &p) in self.average.iter_mut().zip(average).zip(&small) {
            *stored = fixed(a + alpha * (p - a));
        }
        let (moving, region) = blobs(&dilate(&moved, w, h), w, h, cfg.min_area);
        out.score = moving as f32 / moved.len() as f32;
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

    fn learn(&mut self, small: &[f32], size: (usize, usize), t: i64) {
        self.average = small.iter().map(|&p| fixed(p)).collect();
        self.size = size;
        self.changed = t;
        self.last_frame = t;
    }

    /// Motion is on: started and not yet ended.
    pub fn moving(&self) -> bool {
        self.moving_since.is_some()
    }

    /// Seconds since the last motion or change of the scene (light,
    /// tamper, the first frame) before `t`.
    pub fn still_for(&self, t: i64) -> f64 {
        (t - self.changed) as f64 / 1e6
    }
}

/// A grey level in 8.8 fixed point.
fn fixed(v: f32) -> u16 {
    (v * 256.0).round().clamp(0.0, 65535.0) as u16
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

/// The working size `reduce` makes of a source size.
pub fn working_size(iw: usize, ih: usize) -> (usize, usize) {
    let k = iw.div_ceil(WORK_WIDTH).max(1);
    (iw / k, ih / k)
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len().max(1) as f32
}

/// The image box-averaged to about `WORK_WIDTH` wide, then blurred (3 × 3).
fn reduce(image: &Grey) -> Option<(Vec<f32>, usize, usize)> {
    let (iw, ih, stride) = (image.width, image.height, image.stride);
    if iw == 0 || ih == 0 || stride < iw || image.pixels.len() < stride * (ih - 1) + iw {
        return None;
    }
    let k = iw.div_ceil(WORK_WIDTH).max(1);
    let (w, h) = working_size(iw, ih);
    if w < 3 || h < 3 {
        return None;
    }
    let mut small = vec![0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let mut sum = 0u32;
            for dy in 0..k {
                let row = &image.pixels[(y * k + dy) * stride + x * k..][..k];
                sum += row.iter().map(|&p| u32::from(p)).sum::<u32>();
            }
            small[y * w + x] = sum as f32 / (k * k) as f32;
        }
    }
    let mut blurred = small.clone();
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let mut s = 0.0;
            for dy in 0..3 {
                for dx in 0..3 {
                    s += small[(y + dy - 1) * w + x + dx - 1];
                }
            }
            blurred[y * w + x] = s / 9.0;
        }
    }
    Some((blurred, w, h))
}

/// Moving pixels grown by one in every direction: a moving object's
/// broken outline joins into one blob.
fn dilate(m: &[bool], w: usize, h: usize) -> Vec<bool> {
    let mut out = m.to_vec();
    for y in 0..h {
        for x in 0..w {
            if m[y * w + x] {
                for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                    for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                        out[ny * w + nx] = true;
                    }
                }
            }
        }
    }
    out
}

/// Connected blobs (4-neighbour) of at least `min_area` of the image: the
/// pixels in them, and the box around them all.
fn blobs(m: &[bool], w: usize, h: usize, min_area: f32) -> (usize, Option<[usize; 4]>) {
    let least = ((min_area * (w * h) as f32).ceil() as usize).max(1);
    let mut seen = vec![false; m.len()];
    let (mut total, mut region): (usize, Option<[usize; 4]>) = (0, None);
    let mut stack = Vec::new();
    for start in 0..m.len() {
        if !m[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut n, mut b) = (0, [w, h, 0, 0]);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            n += 1;
            b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
            let mut push = |j: usize| {
                if m[j] && !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            };
            if x > 0 {
                push(i - 1);
            }
            if x + 1 < w {
                push(i + 1);
            }
            if y > 0 {
                push(i - w);
            }
            if y + 1 < h {
                push(i + w);
            }
        }
        if n >= least {
            total += n;
            region = Some(region.map_or(b, |r| [r[0].min(b[0]), r[1].min(b[1]), r[2].max(b[2]), r[3].max(b[3])]));
        }
    }
    (total, region)
}

#[cfg(test)]
mod tests;
