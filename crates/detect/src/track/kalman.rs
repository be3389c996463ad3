//! SORT's Kalman filter: one box moving at constant velocity.
//!
//! State `[cx, cy, s, r, vcx, vcy, vs]`: centre, area, aspect ratio (w/h),
//! and the per-step change of centre and area; the aspect ratio is taken as
//! constant. A measurement is `[cx, cy, s, r]` of a detected box. The noise
//! settings are SORT's: boxes are trusted to a pixel or so, velocities start
//! unknown and then change slowly.
//!
//! One step is one analysed frame (see the parent module for why).
//! Arithmetic is plain f64 (no fused multiply-add, correctly rounded
//! `sqrt`), so a state evolves bit for bit the same on every machine.

use crate::BBox;
use serde::{Deserialize, Serialize};

type Mat<const R: usize, const C: usize> = [[f64; C]; R];

/// Measurement noise: position to a pixel, area and aspect ratio looser.
const R_DIAG: [f64; 4] = [1.0, 1.0, 10.0, 10.0];
/// Process noise: boxes may jump a little, velocities change slowly, the
/// area's velocity slowest.
const Q_DIAG: [f64; 7] = [1.0, 1.0, 1.0, 1.0, 0.01, 0.01, 0.0001];
/// Initial uncertainty: the box as measured, velocities unknown.
const P0_DIAG: [f64; 7] = [10.0, 10.0, 10.0, 10.0, 10_000.0, 10_000.0, 10_000.0];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "Bits", from = "Bits")]
pub(super) struct Kalman {
    x: [f64; 7],
    p: Mat<7, 7>,
}

/// A [`Kalman`] as it is checkpointed: each float as its bit pattern.
/// Decimal text would have to round-trip every bit, which serde_json, for
/// one, does not by default, and a restored tracker must continue exactly.
#[derive(Serialize, Deserialize)]
struct Bits {
    x: [u64; 7],
    p: [[u64; 7]; 7],
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

/// `[cx, cy, s, r]` of a box, or `None` for a box that can be neither
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
    Some([x1 + w / 2.0, y1 + h / 2.0, w * h, w / h])
}

impl Kalman {
    /// A filter at the measured box `z` (from [`measure`]), not moving.
    pub(super) fn new(z: [f64; 4]) -> Self {
        let mut x = [0.0; 7];
        x[..4].copy_from_slice(&z);
        Kalman { x, p: diag(P0_DIAG) }
    }

    /// Advances one step.
    pub(super) fn predict(&mut self) {
        // An area shrinking through zero would give a box with no size:
        // stop the shrinking instead (as SORT does).
        if self.x[2] + self.x[6] <= 0.0 {
            self.x[6] = 0.0;
        }
        for i in 0..3 {
            self.x[i] += self.x[i + 4];
        }
        let f = transition();
        let mut p = mul(&mul(&f, &self.p), &transpose(&f));
        for (i, q) in Q_DIAG.iter().enumerate() {
            p[i][i] += q;
        }
        self.p = p;
    }

    /// Corrects the state with the measured box `z` (from [`measure`]).
    pub(super) fn update(&mut self, z: [f64; 4]) {
        // Innovation covariance S = H P Hᵀ + R, where H picks the first four
        // state entries.
        let mut s: Mat<4, 4> = std::array::from_fn(|i| std::array::from_fn(|j| self.p[i][j]));
        for (i, r) in R_DIAG.iter().enumerate() {
            s[i][i] += r;
        }
        // S is positive definite unless the state has blown up (infinite or
        // NaN entries): then the prediction stands, and the track, which no
        // longer matches anything, ages out.
        let Some(s_inv) = invert(s) else { return };
        let pht: Mat<7, 4> = std::array::from_fn(|i| std::array::from_fn(|j| self.p[i][j]));
        let k = mul(&pht, &s_inv);
        let y: [f64; 4] = std::array::from_fn(|i| z[i] - self.x[i]);
        for (xi, ki) in self.x.iter_mut().zip(&k) {
            *xi += (0..4).map(|j| ki[j] * y[j]).sum::<f64>();
        }
        // Joseph form, (I - KH) P (I - KH)ᵀ + K R Kᵀ: stays symmetric and
        // positive semi-definite under rounding, over thousands of steps.
        let mut ikh = diag([1.0; 7]);
        for i in 0..7 {
            for j in 0..4 {
                ikh[i][j] -= k[i][j];
            }
        }
        let a = mul(&mul(&ikh, &self.p), &transpose(&ikh));
        let b = mul(&mul(&k, &diag(R_DIAG)), &transpose(&k));
        for i in 0..7 {
            for j in 0..7 {
                self.p[i][j] = a[i][j] + b[i][j];
            }
        }
    }

    /// The state's box, or `None` when it has no finite, non-empty box (a
    /// filter driven by absurd input).
    pub(super) fn bbox(&self) -> Option<BBox> {
        let [cx, cy, s, r] = [self.x[0], self.x[1], self.x[2], self.x[3]];
        let w = (s * r).sqrt();
        let h = s / w;
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

/// x' = F x: each of cx, cy, s moves by its velocity.
fn transition() -> Mat<7, 7> {
    let mut f = diag([1.0; 7]);
    for i in 0..3 {
        f[i][i + 4] = 1.0;
    }
    f
}

fn diag<const N: usize>(d: [f64; N]) -> Mat<N, N> {
    let mut m = [[0.0; N]; N];
    for i in 0..N {
        m[i][i] = d[i];
    }
    m
}

fn mul<const R: usize, const K: usize, const C: usize>(a: &Mat<R, K>, b: &Mat<K, C>) -> Mat<R, C> {
    let mut out = [[0.0; C]; R];
    for i in 0..R {
        for k in 0..K {
            for j in 0..C {
                out[i][j] += a[i][k] * b[k][j];
            }
        }
    }
    out
}

fn transpose<const R: usize, const C: usize>(a: &Mat<R, C>) -> Mat<C, R> {
    std::array::from_fn(|j| std::array::from_fn(|i| a[i][j]))
}

/// Gauss–Jordan elimination with partial pivoting; `None` for a singular
/// or non-finite matrix.
fn invert<const N: usize>(mut a: Mat<N, N>) -> Option<Mat<N, N>> {
    let mut inv = diag([1.0; N]);
    for col in 0..N {
        // The largest pivot keeps rounding small; the first of equals, so
        // the choice is deterministic.
        let mut piv = col;
        for row in col + 1..N {
            if a[row][col].abs() > a[piv][col].abs() {
                piv = row;
            }
        }
        let d = a[piv][col];
        if !(d.is_finite() && d.abs() > 1e-12) {
            return None;
        }
        a.swap(col, piv);
        inv.swap(col, piv);
        for j in 0..N {
            a[col][j] /= d;
            inv[col][j] /= d;
        }
        for row in 0..N {
            if row != col {
                let f = a[row][col];
                for j in 0..N {
                    a[row][j] -= f * a[col][j];
                    inv[row][j] -= f * inv[col][j];
                }
            }
        }
    }
    inv.iter().flatten().all(|v| v.is_finite()).then_some(inv)
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
    fn constant_velocity_is_learnt() {
        // (dx, dy, growth in width and height per step)
        for (dx, dy, dg) in [(5.0, 2.0, 0.0), (-12.0, 0.0, 0.0), (0.0, 0.0, 0.5), (3.0, -4.0, 0.2)] {
            let at = |i: f32| bx(100.0 + dx * i, 200.0 + dy * i, 150.0 + dx * i + dg * i, 300.0 + dy * i + dg * i);
            let mut kf = Kalman::new(measure(&at(0.0)).unwrap());
            for i in 1..30 {
                kf.predict();
                kf.update(measure(&at(i as f32)).unwrap());
            }
            kf.predict();
            let p = kf.bbox().unwrap();
            assert!(close(&p, &at(30.0), 1.0), "{dx},{dy},{dg}: {p:?} vs {:?}", at(30.0));
        }
    }

    #[test]
    fn a_shrinking_box_keeps_a_size() {
        let mut kf = Kalman::new(measure(&bx(0.0, 0.0, 100.0, 100.0)).unwrap());
        for w in [80.0, 60.0, 40.0, 20.0, 5.0] {
            kf.predict();
            kf.update(measure(&bx(0.0, 0.0, w, w)).unwrap());
        }
        for _ in 0..100 {
            kf.predict();
            assert!(kf.bbox().is_some(), "{kf:?}");
        }
    }

    #[test]
    fn a_long_run_stays_finite_and_symmetric() {
        let mut kf = Kalman::new(measure(&bx(0.0, 0.0, 50.0, 100.0)).unwrap());
        for i in 1..10_000 {
            kf.predict();
            let x = (i % 200) as f32;
            kf.update(measure(&bx(x, 0.0, x + 50.0, 100.0)).unwrap());
        }
        for i in 0..7 {
            for j in 0..7 {
                assert!(kf.p[i][j].is_finite());
                assert!((kf.p[i][j] - kf.p[j][i]).abs() <= 1e-9 * kf.p[i][i].abs().max(1.0), "P[{i}][{j}]");
            }
            assert!(kf.p[i][i] > 0.0);
        }
    }

    #[test]
    fn a_blown_up_state_gives_no_box_and_no_panic() {
        let mut kf = Kalman::new(measure(&bx(0.0, 0.0, 10.0, 10.0)).unwrap());
        kf.x[0] = f64::NAN;
        kf.p[0][0] = f64::INFINITY;
        kf.predict();
        kf.update([1.0, 1.0, 1.0, 1.0]);
        assert_eq!(kf.bbox(), None);
        // Finite but beyond f32: the box would have infinite corners.
        let mut kf = Kalman::new([1e39, 0.0, 100.0, 1.0]);
        kf.predict();
        assert_eq!(kf.bbox(), None);
    }

    #[test]
    fn checkpoint_form_keeps_every_bit() {
        let mut kf = Kalman::new(measure(&bx(0.1, 0.2, 33.3, 77.7)).unwrap());
        kf.predict();
        kf.update(measure(&bx(1.1, 0.3, 34.7, 78.9)).unwrap());
        assert_eq!(Kalman::from(Bits::from(kf.clone())), kf);
    }

    #[test]
    fn invert_undoes_and_refuses_singular() {
        let a = [[4.0, 1.0, 0.5, 0.0], [1.0, 3.0, 0.0, 0.2], [0.5, 0.0, 2.0, 0.1], [0.0, 0.2, 0.1, 1.0]];
        let i = mul(&a, &invert(a).unwrap());
        for (r, row) in i.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                assert!((v - if r == c { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        // Needs a row swap.
        let swapped = [[0.0, 1.0], [1.0, 0.0]];
        assert_eq!(invert(swapped), Some(swapped));
        assert_eq!(invert([[1.0, 2.0], [2.0, 4.0]]), None);
        assert_eq!(invert([[f64::NAN, 0.0], [0.0, 1.0]]), None);
    }
}
