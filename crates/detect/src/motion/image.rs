//! The motion check's image work on the small working image, in integers
//! and in buffers kept from frame to frame: tens of cameras a core.

use super::{Grey, WORK_WIDTH};

/// Buffers reused from frame to frame (not state: never checkpointed).
#[derive(Clone, Default)]
pub(super) struct Scratch {
    raw: Vec<u8>,
    pairs: Vec<u16>,
    sums: Vec<u16>,
    /// The working image, reduced and blurred.
    pub small: Vec<u8>,
    /// 1 where the pixel differs from the scene's average.
    pub moved: Vec<u8>,
    grown: Vec<u8>,
    rows: Vec<u8>,
    runs: Vec<Run>,
    parent: Vec<u32>,
    /// Per run that is a blob's root: its pixels and box.
    areas: Vec<(usize, [u16; 4])>,
}

/// Set pixels `x0..x1` of row `y`.
#[derive(Clone, Copy, Default)]
struct Run {
    y: u16,
    x0: u16,
    x1: u16,
}

fn find(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        let up = parent[parent[i as usize] as usize];
        parent[i as usize] = up;
        i = up;
    }
    i
}

fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        parent[ra.max(rb) as usize] = ra.min(rb);
    }
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scratch")
    }
}

/// Buffers hold no state: any two are alike.
impl PartialEq for Scratch {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The working size `reduce` makes of a source size.
pub fn working_size(iw: usize, ih: usize) -> (usize, usize) {
    let k = iw.div_ceil(WORK_WIDTH).max(1);
    (iw / k, ih / k)
}

impl Scratch {
    /// `image` reduced to about `WORK_WIDTH` wide into `small`, then
    /// blurred (3 × 3 box; the border as it is). Each working pixel is the
    /// mean of the 2 × 2 source pixels at its block's centre, as OpenCV's
    /// bilinear resize reads them when shrinking: two source rows in `k`
    /// are read, so a 1080p image costs little more than a sub stream's.
    /// The working size, or `None` for an image too small or shorter than
    /// it says.
    pub fn reduce(&mut self, image: &Grey) -> Option<(usize, usize)> {
        let (iw, ih, stride) = (image.width, image.height, image.stride);
        if iw == 0 || ih == 0 || stride < iw || image.pixels.len() < stride * (ih - 1) + iw {
            return None;
        }
        let k = iw.div_ceil(WORK_WIDTH).max(1);
        let (w, h) = working_size(iw, ih);
        if w < 3 || h < 3 {
            return None;
        }
        let (c0, c1) = ((k - 1) / 2, k / 2);
        self.raw.resize(w * h, 0);
        for y in 0..h {
            let r0 = &image.pixels[(y * k + c0) * stride..][..w * k];
            let r1 = &image.pixels[(y * k + c1) * stride..][..w * k];
            // Both rows summed whole (sequential, vectorised: every cache
            // line of them is read anyway), then each block's centre pair.
            // A large image (its rows far apart, likely not in cache):
            // touch the rows after next now, so their loads from memory
            // overlap this row's work. (A small one is read faster without.)
            if k > 2 && y + 2 < h {
                let next = |c: usize| &image.pixels[((y + 2) * k + c) * stride..][..w * k];
                let (n0, n1) = (next(c0), next(c1));
                let touched = n0.iter().step_by(64).zip(n1.iter().step_by(64)).fold(0u8, |t, (a, b)| t ^ a ^ b);
                std::hint::black_box(touched);
            }
            self.pairs.resize(w * k, 0);
            for (p, (a, b)) in self.pairs.iter_mut().zip(r0.iter().zip(r1)) {
                *p = u16::from(*a) + u16::from(*b);
            }
            let out = &mut self.raw[y * w..][..w];
            if k == 2 {
                // A sub stream's: each block is the pair (vectorises).
                for (o, [a, b]) in out.iter_mut().zip(self.pairs.as_chunks::<2>().0) {
                    *o = ((a + b + 2) / 4) as u8;
                }
            } else {
                for (o, block) in out.iter_mut().zip(self.pairs.chunks_exact(k)) {
                    *o = ((block[c0] + block[c1] + 2) / 4) as u8;
                }
            }
        }
        self.sums.resize(w * h - 2, 0);
        for (s, ((a, b), c)) in self.sums.iter_mut().zip(self.raw.iter().zip(&self.raw[1..]).zip(&self.raw[2..])) {
            *s = u16::from(*a) + u16::from(*b) + u16::from(*c);
        }
        // sums[i] is the row sum centred on raw[i + 1] (meaningless where
        // the window straddles two rows: those are border pixels).
        self.small.clone_from(&self.raw);
        for y in 1..h - 1 {
            let (up, mid, down) =
                (&self.sums[(y - 1) * w..][..w - 2], &self.sums[y * w..][..w - 2], &self.sums[(y + 1) * w..][..w - 2]);
            let out = &mut self.small[y * w + 1..][..w - 2];
            for (((o, a), b), c) in out.iter_mut().zip(up).zip(mid).zip(down) {
                *o = ((a + b + c + 4) / 9) as u8;
            }
        }
        Some((w, h))
    }

    /// Moving pixels grown by one in every direction (a moving object's
    /// broken outline joins into one blob), then its blobs (4-neighbour)
    /// of at least `min_area` of the image: the pixels in them, and the
    /// box around them all (working pixels, inclusive).
    pub fn blobs(&mut self, w: usize, h: usize, min_area: f32) -> (usize, Option<[usize; 4]>) {
        // Grow: along rows into `rows`, then along columns into `grown`.
        let n = w * h;
        self.rows.resize(n, 0);
        for (src, dst) in self.moved.chunks_exact(w).zip(self.rows.chunks_exact_mut(w)) {
            dst[0] = src[0] | src[1];
            for x in 1..w - 1 {
                dst[x] = src[x - 1] | src[x] | src[x + 1];
            }
            dst[w - 1] = src[w - 2] | src[w - 1];
        }
        self.grown.resize(n, 0);
        for y in 0..h {
            let (up, down) = (y.saturating_sub(1), (y + 1).min(h - 1));
            let (a, b, c) = (&self.rows[up * w..][..w], &self.rows[y * w..][..w], &self.rows[down * w..][..w]);
            for (((g, a), b), c) in self.grown[y * w..][..w].iter_mut().zip(a).zip(b).zip(c) {
                *g = a | b | c;
            }
        }
        let least = ((min_area * n as f32).ceil() as usize).max(1);
        // Blobs as runs of set pixels along rows, joined (union-find) with
        // the runs they touch in the row above: work by runs, not pixels.
        self.runs.clear();
        self.parent.clear();
        let mut above = 0..0;
        for y in 0..h {
            let row = &self.grown[y * w..][..w];
            let here = self.runs.len();
            let mut x = 0;
            while let Some(p) = row[x..].iter().position(|&g| g != 0) {
                let x0 = x + p;
                let x1 = x0 + row[x0..].iter().position(|&g| g == 0).unwrap_or(w - x0);
                let id = self.runs.len() as u32;
                self.runs.push(Run { y: y as u16, x0: x0 as u16, x1: x1 as u16 });
                self.parent.push(id);
                for j in above.clone() {
                    let r = self.runs[j];
                    if usize::from(r.x0) < x1 && x0 < usize::from(r.x1) {
                        union(&mut self.parent, j as u32, id);
                    }
                }
                x = x1;
            }
            above = here..self.runs.len();
        }
        // Area and box per blob, at its root.
        self.areas.clear();
        self.areas.resize(self.runs.len(), (0, [u16::MAX, u16::MAX, 0, 0]));
        for i in 0..self.runs.len() {
            let r = self.runs[i];
            let root = find(&mut self.parent, i as u32) as usize;
            let (area, b) = &mut self.areas[root];
            *area += usize::from(r.x1 - r.x0);
            *b = [b[0].min(r.x0), b[1].min(r.y), b[2].max(r.x1 - 1), b[3].max(r.y)];
        }
        let (mut total, mut region): (usize, Option<[usize; 4]>) = (0, None);
        for &(area, b) in self.areas.iter().filter(|(area, _)| *area >= least) {
            total += area;
            let b = b.map(usize::from);
            region = Some(region.map_or(b, |r| [r[0].min(b[0]), r[1].min(b[1]), r[2].max(b[2]), r[3].max(b[3])]));
        }
        (total, region)
    }
}
