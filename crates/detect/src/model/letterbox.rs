//! Source image → the model's square input, and model boxes back.
//!
//! The image is scaled to fit the square while keeping its aspect ratio,
//! centred, and the rest padded with gray 114: what the YOLO models were
//! trained on (Ultralytics' `LetterBox`), so the scores stay as calibrated.
//! Scaling is bilinear with pixel centres aligned (as OpenCV's
//! `INTER_LINEAR`); at scale 1 it is an exact copy.

use crate::BBox;

/// The gray of the padding, 0..255.
pub const PAD: u8 = 114;

/// Where a source image lies in the model's `size`×`size` input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Letterbox {
    pub src_width: u32,
    pub src_height: u32,
    /// The side of the square input.
    pub size: u32,
    /// The scaled image: `width`×`height` at (`left`, `top`).
    pub width: u32,
    pub height: u32,
    pub left: u32,
    pub top: u32,
}

impl Letterbox {
    /// The placement of a `src_width`×`src_height` image (both > 0) in a
    /// `size`×`size` square.
    pub fn new(src_width: u32, src_height: u32, size: u32) -> Letterbox {
        let scale = (size as f32 / src_width as f32).min(size as f32 / src_height as f32);
        // At least one pixel, so a 1×10000 sliver still maps somewhere.
        let width = ((src_width as f32 * scale).round() as u32).clamp(1, size);
        let height = ((src_height as f32 * scale).round() as u32).clamp(1, size);
        Letterbox { src_width, src_height, size, width, height, left: (size - width) / 2, top: (size - height) / 2 }
    }

    /// A box in model-input pixels → source pixels, clipped to the image.
    /// Each axis uses its own ratio: rounding the scaled size may have
    /// stretched one axis by a fraction of a pixel.
    pub fn to_source(&self, b: BBox) -> BBox {
        let sx = self.src_width as f32 / self.width as f32;
        let sy = self.src_height as f32 / self.height as f32;
        let (w, h) = (self.src_width as f32, self.src_height as f32);
        let x = |v: f32| ((v - self.left as f32) * sx).clamp(0.0, w);
        let y = |v: f32| ((v - self.top as f32) * sy).clamp(0.0, h);
        BBox { x1: x(b.x1), y1: y(b.y1), x2: x(b.x2), y2: y(b.y2) }
    }
}

/// Letterboxes packed RGB8 `rgb` (`src_width`×`src_height`) into `out`, the
/// model's input for one image: CHW planes of `size`×`size` f32 in 0..1.
/// `out.len()` must be 3·size·size and `rgb.len()` 3·width·height (checked
/// by the caller, which reports which image was wrong).
pub fn letterbox(rgb: &[u8], src_width: u32, src_height: u32, size: u32, out: &mut [f32]) -> Letterbox {
    let lb = Letterbox::new(src_width, src_height, size);
    let (sw, sh, n) = (src_width as usize, src_height as usize, size as usize);
    let (w, h, left, top) = (lb.width as usize, lb.height as usize, lb.left as usize, lb.top as usize);
    assert_eq!(rgb.len(), sw * sh * 3, "{sw}x{sh} RGB");
    assert_eq!(out.len(), 3 * n * n, "{n}x{n} CHW");

    // The padding only: the bars above and below, and left and right of each row.
    let gray = f32::from(PAD) / 255.0;
    for plane in out.chunks_exact_mut(n * n) {
        plane[..top * n].fill(gray);
        plane[(top + h) * n..].fill(gray);
        for row in plane[top * n..(top + h) * n].chunks_exact_mut(n) {
            row[..left].fill(gray);
            row[left + w..].fill(gray);
        }
    }
    let (r_plane, rest) = out.split_at_mut(n * n);
    let (g_plane, b_plane) = rest.split_at_mut(n * n);
    // The destination rows of the image, in the three planes.
    let rows = r_plane.chunks_exact_mut(n).zip(g_plane.chunks_exact_mut(n)).zip(b_plane.chunks_exact_mut(n));
    let rows = rows
        .skip(top)
        .take(h)
        .map(|((r, g), b)| (&mut r[left..left + w], &mut g[left..left + w], &mut b[left..left + w]));

    if (w, h) == (sw, sh) {
        // Scale 1, the common case of frames already at the model's size.
        for ((r, g, b), src) in rows.zip(rgb.chunks_exact(sw * 3)) {
            for (((r, g), b), px) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()).zip(src.chunks_exact(3)) {
                *r = f32::from(px[0]) * (1.0 / 255.0);
                *g = f32::from(px[1]) * (1.0 / 255.0);
                *b = f32::from(px[2]) * (1.0 / 255.0);
            }
        }
        return lb;
    }

    // Source coordinate of each destination column, as the byte offsets of
    // the two pixels to blend and their weights; computed once for all rows.
    let cols: Vec<(usize, usize, f32, f32)> = (0..w)
        .map(|dx| {
            let (x0, x1, f) = sample(dx, w, sw);
            (x0 * 3, x1 * 3, 1.0 - f, f)
        })
        .collect();
    for (dy, (r, g, b)) in rows.enumerate() {
        let (y0, y1, fy) = sample(dy, h, sh);
        let row0 = &rgb[y0 * sw * 3..(y0 + 1) * sw * 3];
        let row1 = &rgb[y1 * sw * 3..(y1 + 1) * sw * 3];
        // The 1/255 of the normalisation folded into the row weights.
        let (wy0, wy1) = ((1.0 - fy) * (1.0 / 255.0), fy * (1.0 / 255.0));
        for (((r, g), b), &(x0, x1, wx0, wx1)) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()).zip(&cols) {
            let (a0, a1, b0, b1) = (&row0[x0..x0 + 3], &row0[x1..x1 + 3], &row1[x0..x0 + 3], &row1[x1..x1 + 3]);
            let px = |c: usize| {
                let upper = f32::from(a0[c]) * wx0 + f32::from(a1[c]) * wx1;
                let lower = f32::from(b0[c]) * wx0 + f32::from(b1[c]) * wx1;
                upper * wy0 + lower * wy1
            };
            *r = px(0);
            *g = px(1);
            *b = px(2);
        }
    }
    lb
}

/// For destination pixel `d` of `dst` pixels over `src` source pixels: the
/// two source pixels to blend and the weight of the second. Pixel centres
/// are aligned (`(d + 0.5)·src/dst − 0.5`) and the edges clamp.
fn sample(d: usize, dst: usize, src: usize) -> (usize, usize, f32) {
    let s = ((d as f32 + 0.5) * src as f32 / dst as f32 - 0.5).clamp(0.0, (src - 1) as f32);
    let i0 = s.floor() as usize;
    let i1 = (i0 + 1).min(src - 1);
    (i0, i1, s - i0 as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement() {
        // (source w, h, size) → (width, height, left, top)
        let cases = [
            ((640, 640, 640), (640, 640, 0, 0)),
            ((768, 576, 640), (640, 480, 0, 80)),
            ((1920, 1080, 640), (640, 360, 0, 140)),
            ((1080, 1920, 640), (360, 640, 140, 0)),
            ((320, 240, 640), (640, 480, 0, 80)),
            ((100, 100, 320), (320, 320, 0, 0)),
            ((1, 10_000, 640), (1, 640, 319, 0)),
            ((641, 480, 640), (640, 479, 0, 80)),
        ];
        for ((sw, sh, size), (w, h, left, top)) in cases {
            let lb = Letterbox::new(sw, sh, size);
            assert_eq!((lb.width, lb.height, lb.left, lb.top), (w, h, left, top), "{sw}x{sh} into {size}");
        }
    }

    #[test]
    fn boxes_map_back_to_source_pixels_clipped() {
        let lb = Letterbox::new(1920, 1080, 640); // scale 1/3, 140 px bars above and below
        let b = |x1, y1, x2, y2| BBox { x1, y1, x2, y2 };
        let cases = [
            (b(0.0, 140.0, 640.0, 500.0), b(0.0, 0.0, 1920.0, 1080.0)),
            (b(100.0, 240.0, 200.0, 340.0), b(300.0, 300.0, 600.0, 600.0)),
            // In the padding: clipped to the image's edges.
            (b(-10.0, 0.0, 50.0, 150.0), b(0.0, 0.0, 150.0, 30.0)),
            (b(600.0, 480.0, 700.0, 640.0), b(1800.0, 1020.0, 1920.0, 1080.0)),
        ];
        for (model, source) in cases {
            let got = lb.to_source(model);
            for (g, s) in [(got.x1, source.x1), (got.y1, source.y1), (got.x2, source.x2), (got.y2, source.y2)] {
                assert!((g - s).abs() < 1e-3, "{model:?} → {got:?}, expected {source:?}");
            }
        }
    }

    fn run(rgb: &[u8], w: u32, h: u32, size: u32) -> (Letterbox, Vec<f32>) {
        let mut out = vec![0.0; (3 * size * size) as usize];
        let lb = letterbox(rgb, w, h, size, &mut out);
        (lb, out)
    }

    #[test]
    fn same_size_is_an_exact_copy_in_chw() {
        // 2×2: red, green / blue, white.
        let rgb = [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255];
        let (_, out) = run(&rgb, 2, 2, 2);
        assert_eq!(out, [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn scale_one_with_bars() {
        // 2×1 red, blue in a 2×2 square: the image in row 0, gray in row 1 (the
        // odd pixel of padding goes below).
        let (lb, out) = run(&[255, 0, 0, 0, 0, 255], 2, 1, 2);
        assert_eq!((lb.width, lb.height, lb.left, lb.top), (2, 1, 0, 0));
        let gray = f32::from(PAD) / 255.0;
        assert_eq!(out, [1.0, 0.0, gray, gray, 0.0, 0.0, gray, gray, 0.0, 1.0, gray, gray]);
    }

    #[test]
    fn padding_is_gray_and_centred() {
        // A 4×2 white image in an 8×8 square: 8×4 of white, 2 rows of gray above and below.
        let rgb = [255; 4 * 2 * 3];
        let (lb, out) = run(&rgb, 4, 2, 8);
        assert_eq!((lb.width, lb.height, lb.left, lb.top), (8, 4, 0, 2));
        let gray = f32::from(PAD) / 255.0;
        for c in 0..3 {
            for y in 0..8 {
                let want = if (2..6).contains(&y) { 1.0 } else { gray };
                for x in 0..8 {
                    assert_eq!(out[c * 64 + y * 8 + x], want, "channel {c} at ({x}, {y})");
                }
            }
        }
    }

    #[test]
    fn downscale_blends_neighbours() {
        // One row 0, 100, 200, 250 halved: pixel centres fall between pairs.
        let rgb: Vec<u8> = [0u8, 100, 200, 250].iter().flat_map(|&v| [v, v, v]).collect();
        let (lb, out) = run(&rgb, 4, 1, 2);
        assert_eq!((lb.width, lb.height, lb.top), (2, 1, 0));
        let row: Vec<f32> = out[..2].iter().map(|v| (v * 255.0).round()).collect();
        assert_eq!(row, [50.0, 225.0]);
    }

    #[test]
    fn upscale_clamps_at_the_edges() {
        // 2×1 → 4×2 inside a 4×4: edge pixels keep the edge colour.
        let rgb = [0, 0, 0, 200, 200, 200];
        let (lb, out) = run(&rgb, 2, 1, 4);
        assert_eq!((lb.width, lb.height, lb.top), (4, 2, 1));
        let row: Vec<f32> = out[4..8].iter().map(|v| (v * 255.0).round()).collect();
        assert_eq!(row, [0.0, 50.0, 150.0, 200.0]);
    }
}
