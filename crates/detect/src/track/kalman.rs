//! The tracker's Kalman filter: one box moving at constant velocity, in
//! time (BoT-SORT's state, steps by capture time).
//!
//! State `[cx, cy, w, h, vcx, vcy, vw, vh]`: centre, width, height and
//! their rates of change **per second**. A step is the time between two
//! analysed frames, whatever it is: a camera sampled twice a second and a
//! video analysed at 25 frames a second give the same velocities, and a
//! frame lost now and then is a longer step, not a change of speed.
//!
//! Noise scales with the box (a near object's box jitters by more pixels
//! than a far one's): measurements are trusted to `MEASURE` of the box's
//! size; motion is constant velocity disturbed by white-noise acceleration
//! of `ACCEL` box sizes per second², so the uncertainty of a prediction
//! grows with the time since the last sighting (large for a track seen
//! seconds ago, or seen once); a new track's velocity is unknown to
//! about `SPEED0` box sizes per second.
//!
//! Arithmetic is plain f64 (no fused multiply-add, correctly rounded
//! `sqrt`), so a state evolves bit for bit the same on every machine.

use crate::BBox;
use serde::{Deserialize, Serialize};

/// A measured box's error, as a share of its width (x, w) or height (y, h).
const MEASURE: f64 = 0.05;
/// Random acceleration, box sizes per second². Small: people and cars keep
/// their speed over a second; a larger value lets predictions wander (and
/// ids switch) where detections jitter (measured: `scripts/bench-track`).
const ACCEL: f64 = 0.1;
/// A new track's unknown speed, box sizes per second.
const SPEED0: f64 = 1.5;
/// Steps shorter than this are taken as this long (seconds): frames with
/// the same capture time still move the state on.
const MIN_STEP: f64 = 1e-3;

/// Each of cx, cy, w, h with its velocity is a filter of its own: the
/// motion, the noise and the measurement never couple two of them, so the
/// 8 × 8 covariance is four 2 × 2 blocks, kept as such (exact, and a
/// fraction of the arithmetic).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "Bits", from = "Bits")]
pub(super) struct Kalman {
    /// `[cx, cy, w, h, vcx, vcy, vw, vh]`.
    x: [f64; 8],
    /// Per axis: variance of the value, their covariance, variance of the rate.
    p: [[f64; 3]; 4],
}

/// A [`Kalman`] as it is checkpointed: each float as its bit pattern.
/// Decimal text would have to round-trip every bit, which serde_json, for
/// one, does not by default, and a restored tracker must continue exactly.
#[derive(Serialize, Deserialize)]
struct Bits {
    x: [u64; 8],
    p: [[u64; 3]; 4],
}

impl From<Kalman> for Bits {
    fn from(k: Kalman) -> Self {
        Bits { x: k.x.map(f64::to_bits), p: k.p.map(|row| row.map(f64::to_bits)) }
    }
}

impl From<Bits> for Kalman {
    fn from(b: Bits) -> Self {
        Kalman { x: b.x.map(f64::from_bits), p: b.p.map(|row| row.map(f64::from_bits)) }
    }
}

/// `[cx, cy, w, h]` of a box, or `None` for a box that can be neither
/// followed nor compared: a coordinate not finite, no width or height, or
/// an area too big for the f32 IoU.
pub(super) fn measure(b: &BBox) -> Option<[f64; 4]> {
    let [x1, y1, x2, y2] = [b.x1, b.y1, b.x2, b.y2].map(f64::from);
    let (w, h) = (x2 - x1, y2 - y1);
    // Written so that NaN fails too.
    let finite = x1.is_finite() && y1.is_finite() && x2.is_finite() && y2.is_finite() && b.area().is_finite();
    if !(finite && w > 0.0 && h > 0.0) {
        return None;
    }
    Some([x1 + w / 2.0, y1 + h / 2.0, w, h])
}

/// `x²`, by plain multiplication (`powi`'s precision is unspecified).
trait Squared {
    fn squared(self) -> Self;
}

impl Squared for f64 {
    fn squared(self) -> f64 {
        self * self
    }
}

/// What axis `i`'s measurement noise scales with: the width for x and w,
/// the height for y and h.
fn scale(z: &[f64], i: usize) -> f64 {
    if i.is_multiple_of(2) { z[2].abs() } else { z[3].abs() }
}

impl Kalman {
    /// A filter at the measured box `z` (from [`measure`]), speed unknown.
    pub(super) fn new(z: [f64; 4]) -> Self {
        let mut x = [0.0; 8];
        x[..4].copy_from_slice(&z);
        // Motion is as likely along x as along y: the centre's speed in
        // the box's larger size.
        let big = z[2].max(z[3]);
        let p = std::array::from_fn(|i| {
            let speed = if i < 2 { big } else { scale(&z, i) };
            [(2.0 * MEASURE * scale(&z, i)).squared(), 0.0, (SPEED0 * speed).squared()]
        });
        Kalman { x, p }
    }

    /// Advances the state by `dt` seconds.
    pub(super) fn predict(&mut self, dt: f64) {
        let dt = if dt.is_finite() { dt.max(MIN_STEP) } else { MIN_STEP };
        // A box shrinking through zero would have no size: stop the
        // shrinking instead (as SORT does).
        for i in 2..4 {
            if self.x[i] + self.x[i + 4] * dt <= 0.0 {
                self.x[i + 4] = 0.0;
            }
        }
        let big = self.x[2].abs().max(self.x[3].abs());
        for i in 0..4 {
            let size = if i < 2 { big } else { scale(&self.x, i) };
            self.x[i] += self.x[i + 4] * dt;
            // P = F P Fᵀ + Q with F = [[1, dt], [0, 1]] and Q the
            // white-noise acceleration's.
            let q = (ACCEL * size).squared();
            let [a, b, c] = self.p[i];
            self.p[i] =
                [a + 2.0 * dt * b + dt * dt * c + q * dt * dt * dt / 3.0, b + dt * c + q * dt * dt / 2.0, c + q * dt];
        }
    }

    /// Corrects the state with the measured box `z` (from [`measure`]).
    pub(super) fn update(&mut self, z: [f64; 4]) {
        for i in 0..4 {
            let r = (MEASURE * scale(&z, i)).squared();
            let [a, b, c] = self.p[i];
            let s = a + r;
            // S is positive unless the state has blown up (infinite or NaN
            // entries): then the prediction stands, and the track, which no
            // longer matches anything, ages out.
            if !(s.is_finite() && s > 1e-12) {
                continue;
            }
            let (k0, k1) = (a / s, b / s);
            let y = z[i] - self.x[i];
            self.x[i] += k0 * y;
            self.x[i + 4] += k1 * y;
            // Joseph form, (I - KH) P (I - KH)ᵀ + K r Kᵀ: stays symmetric
            // and positive semi-definite under rounding.
            let g = 1.0 - k0;
            self.p[i] =
                [g * g * a + r * k0 * k0, g * (b - k1 * a) + r * k0 * k1, k1 * k1 * a - 2.0 * k1 * b + c + r * k1 * k1];
        }
    }

    /// How far the measured centre `z` lies from the predicted one, in
    /// standard deviations of their difference (the Mahalanobis distance
    /// of the centre); `None` for a blown-up state.
    pub(super) fn centre_distance(&self, z: &[f64; 4]) -> Option<f64> {
        let (rx, ry) = ((MEASURE * z[2]).squared(), (MEASURE * z[3]).squared());
        let (vx, vy) = (self.p[0][0] + rx, self.p[1][0] + ry);
        let (dx, dy) = (z[0] - self.x[0], z[1] - self.x[1]);
        let d2 = dx * dx / vx + dy * dy / vy;
        d2.is_finite().then(|| d2.sqrt())
    }

    /// The state's box, or `None` when it has no finite, non-empty box (a
    /// filter driven by absurd input).
    pub(super) fn bbox(&self) -> Option<BBox> {
        let [cx, cy, w, h] = [self.x[0], self.x[1], self.x[2], self.x[3]];
        let b = BBox {
            x1: (cx - w / 2.0) as f32,
            y1: (cy - h / 2.0) as f32,
            x2: (cx + w / 2.0) as f32,
            y2: (cy + h / 2.0) as f32,
        };
        // Checked on the f32 box the IoU will see: a huge f64 box may
        // round to infinity or lose its width.
        measure(&b).map(|_| b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(x1: f32, y1: f32, x2: f32, y2: f32) -> BBox {
        BBox { x1, y1, x2, y2 }
    }

    fn close(a: &BBox, b: &BBox, tol: f32) -> bool {
        [a.x1 - b.x1, a.y1 - b.y1, a.x2 - b.x2, a.y2 - b.y2].iter().all(|d| d.abs() <= tol)
    }

    #[test]
    fn measure_refuses_boxes_without_size_or_finite_corners() {
        let cases = [
            (bx(0.0, 0.0, 10.0, 20.0), true),
            (bx(-5.0, -5.0, 5.0, 5.0), true),
            (bx(0.0, 0.0, 0.0, 20.0), false),
            (bx(0.0, 0.0, 10.0, 0.0), false),
            (bx(10.0, 0.0, 0.0, 20.0), false),
            (bx(f32::NAN, 0.0, 10.0, 20.0), false),
            (bx(0.0, 0.0, f32::INFINITY, 20.0), false),
            (bx(f32::NEG_INFINITY, 0.0, 10.0, 20.0), false),
            (bx(-1e30, -1e30, 1e30, 1e30), false),
        ];
        for (b, ok) in cases {
            assert_eq!(measure(&b).is_some(), ok, "{b:?}");
        }
    }

    #[test]
    fn a_new_filter_sits_on_its_box() {
        for b in [bx(0.0, 0.0, 10.0, 20.0), bx(100.5, 30.25, 180.0, 300.0), bx(-40.0, -10.0, -39.0, -9.0)] {
            let kf = Kalman::new(measure(&b).unwrap());
            assert!(close(&kf.bbox().unwrap(), &b, 1e-3), "{b:?} -> {:?}", kf.bbox());
        }
    }

    #[test]
    fn constant_velocity_is_learnt_whatever_the_step() {
        // (dx, dy, growth in width and height) per second, and the step.
        for (dx, dy, dg, step) in
            [(50.0, 20.0, 0.0, 0.04), (-120.0, 0.0, 0.0, 0.5), (0.0, 0.0, 5.0, 0.1), (30.0, -40.0, 2.0, 2.5)]
        {
            let at = |t: f32| bx(100.0 + dx * t, 200.0 + dy * t, 150.0 + dx * t + dg * t, 300.0 + dy * t + dg * t);
            let mut kf = Kalman::new(measure(&at(0.0)).unwrap());
            for i in 1..30 {
                kf.predict(step);
                kf.update(measure(&at(i as f32 * step as f32)).unwrap());
            }
            kf.predict(step);
            let p = kf.bbox().unwrap();
            let want = at(30.0 * step as f32);
            assert!(close(&p, &want, 1.0), "{dx},{dy},{dg} every {step} s: {p:?} vs {want:?}");
        }
    }

    #[test]
    fn uncertainty_grows_with_time_unseen() {
        let mut kf = Kalman::new(measure(&bx(0.0, 0.0, 50.0, 100.0)).unwrap());
        let z = measure(&bx(100.0, 0.0, 150.0, 100.0)).unwrap();
        let mut after = Vec::new();
        for dt in [0.1, 1.0, 5.0] {
            let mut k = kf.clone();
            k.predict(dt);
            after.push(k.centre_distance(&z).unwrap());
        }
        assert!(after[0] > after[1] && after[1] > after[2], "{after:?}");
        kf.predict(0.1);
        assert!(kf.centre_distance(&[f64::NAN, 0.0, 1.0, 1.0]).is_none());
    }

    #[test]
    fn a_shrinking_box_keeps_a_size() {
        let mut kf = Kalman::new(measure(&bx(0.0, 0.0, 100.0, 100.0)).unwrap());
        for w in [80.0, 60.0, 40.0, 20.0, 5.0] {
            kf.predict(0.1);
            kf.update(measure(&bx(0.0, 0.0, w, w)).unwrap());
        }
        for _ in 0..100 {
            kf.predict(0.1);
            assert!(kf.bbox().is_some(), "{kf:?}");
        }
    }

    #[test]
    fn a_long_run_stays_finite_and_positive() {
        let mut kf = Kalman::new(measure(&bx(0.0, 0.0, 50.0, 100.0)).unwrap());
        for i in 1..10_000 {
            kf.predict(0.04);
            let x = (i % 200) as f32;
            kf.update(measure(&bx(x, 0.0, x + 50.0, 100.0)).unwrap());
        }
        for [a, b, c] in kf.p {
            assert!(a > 0.0 && c > 0.0 && b.is_finite(), "{:?}", kf.p);
            assert!(b * b <= a * c * (1.0 + 1e-9), "a covariance, not more: {:?}", kf.p);
        }
    }

    #[test]
    fn a_blown_up_state_gives_no_box_and_no_panic() {
        let mut kf = Kalman::new(measure(&bx(0.0, 0.0, 10.0, 10.0)).unwrap());
        kf.x[0] = f64::NAN;
        kf.p[0][0] = f64::INFINITY;
        kf.p[1][0] = f64::NAN;
        kf.predict(0.1);
        kf.update([1.0, 1.0, 1.0, 1.0]);
        assert_eq!(kf.bbox(), None);
        // Finite but beyond f32: the box would have infinite corners.
        let mut kf = Kalman::new([1e39, 0.0, 100.0, 1.0]);
        kf.predict(0.1);
        assert_eq!(kf.bbox(), None);
        // Steps that are no time, or no number, still step.
        let mut kf = Kalman::new(measure(&bx(0.0, 0.0, 10.0, 10.0)).unwrap());
        kf.predict(0.0);
        kf.predict(f64::NAN);
        kf.predict(-3.0);
        assert!(kf.bbox().is_some());
    }

    #[test]
    fn checkpoint_form_keeps_every_bit() {
        let mut kf = Kalman::new(measure(&bx(0.1, 0.2, 33.3, 77.7)).unwrap());
        kf.predict(0.04);
        kf.update(measure(&bx(1.1, 0.3, 34.7, 78.9)).unwrap());
        assert_eq!(Kalman::from(Bits::from(kf.clone())), kf);
    }
}
