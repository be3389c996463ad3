//! The model's raw output → detections: shape checks, box decoding,
//! thresholding, class-aware non-maximum suppression, a fixed order.
//!
//! YOLOv8, v11 and v12 detectors share one head: per image a tensor of
//! `4 + classes` rows by N anchors (one per cell of the stride 8, 16 and 32
//! grids, 8400 at 640). The first four rows are the box centre and size in
//! input pixels, the rest the score of each class (already sigmoid'ed; no
//! objectness, unlike v5). Some exports transpose it to N × (4 + classes).

use crate::{BBox, Detection};
use std::cmp::Ordering;

/// The most detections kept per image, as Ultralytics: a bound on the work
/// of NMS when the threshold is set very low.
pub const MAX_DETECTIONS: usize = 300;

/// How one image's output is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub classes: usize,
    /// Anchors are the last (fastest) axis: `[4 + classes, N]`, the usual
    /// export. Otherwise `[N, 4 + classes]`.
    pub anchors_last: bool,
}

impl Layout {
    /// Values per anchor: four box coordinates and one score per class.
    pub fn channels(&self) -> usize {
        4 + self.classes
    }
}

/// The batch size of a model's input: fixed, or chosen per run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    Fixed(usize),
    Dynamic,
}

/// What the model's declared shapes say, checked against a YOLO detector
/// taking `size`×`size` images. -1 marks a dynamic dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shapes {
    pub batch: Batch,
    pub layout: Layout,
}

/// Why a model's shapes don't fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShapeError {
    /// Not the input or output of a YOLOv8-style detector.
    NotYolo(String),
    /// A detector, but for another input size.
    InputSize { model: i64, requested: u32 },
}

/// Checks the input `[batch, 3, height, width]` and the output
/// `[batch, 4 + classes, N]` (or `[batch, N, 4 + classes]`).
pub fn check_shapes(input: &[i64], output: &[i64], size: u32) -> Result<Shapes, ShapeError> {
    let not_yolo = |why: String| Err(ShapeError::NotYolo(why));
    if input.len() != 4 || !(input[1] == 3 || input[1] == -1) {
        return not_yolo(format!("its input is {input:?}, not [batch, 3, height, width]"));
    }
    let (h, w) = (input[2], input[3]);
    if h > 0 && w > 0 && h != w {
        return not_yolo(format!("its input is {w}x{h}; only square inputs are supported"));
    }
    for side in [h, w] {
        if side > 0 && side != i64::from(size) {
            return Err(ShapeError::InputSize { model: side, requested: size });
        }
    }
    if output.len() != 3 {
        return not_yolo(format!("its output is {output:?}, not [batch, 4 + classes, anchors]"));
    }
    // The axis of 4 + classes is the smaller one: 84 against 8400 for COCO.
    // With one side dynamic, the known one must be it (anchors follow the
    // input size, classes don't).
    let anchors_last = match (output[1], output[2]) {
        (c, n) if c > 0 && n > 0 => c < n,
        (c, _) if c > 0 => true,
        (_, c) if c > 0 => false,
        _ => return not_yolo(format!("its output {output:?} has no fixed number of classes")),
    };
    let (channels, anchors) = if anchors_last { (output[1], output[2]) } else { (output[2], output[1]) };
    if channels < 5 {
        return not_yolo(format!("its output {output:?} has no room for a box and a class score"));
    }
    if anchors > 0 && !anchor_counts(size).contains(&anchors) {
        // E.g. a model exported with its NMS built in ([1, 300, 6]).
        return not_yolo(format!(
            "its output {output:?} has {anchors} anchors, but a YOLOv8-style head has {:?} at {size}x{size} \
             (exported with nms=True, or an older YOLO?)",
            anchor_counts(size)
        ));
    }
    let batch = if input[0] > 0 { Batch::Fixed(input[0] as usize) } else { Batch::Dynamic };
    Ok(Shapes { batch, layout: Layout { classes: channels as usize - 4, anchors_last } })
}

/// Anchors of a head with strides 8, 16, 32 (P5) and 8 … 64 (P6 models).
fn anchor_counts(size: u32) -> [i64; 2] {
    let cells = |s: u32| i64::from(size.div_ceil(s)).pow(2);
    let p5 = cells(8) + cells(16) + cells(32);
    [p5, p5 + cells(64)]
}

/// The candidates of one image: each anchor's best class, kept when its
/// score is above `threshold` (as Ultralytics: strictly above). Boxes are in
/// model-input pixels. `raw` holds exactly this image's `channels × anchors`.
pub fn decode(raw: &[f32], layout: Layout, threshold: f32) -> Vec<Detection> {
    let anchors = raw.len() / layout.channels();
    debug_assert_eq!(raw.len(), anchors * layout.channels());
    let (ch_stride, a_stride) = if layout.anchors_last { (anchors, 1) } else { (1, layout.channels()) };
    let at = |ch: usize, a: usize| raw[ch * ch_stride + a * a_stride];

    // Best class per anchor, classes outermost: rows are contiguous in the
    // usual layout. Ties keep the lower class; NaN never wins.
    let mut best = vec![(f32::NEG_INFINITY, 0u16); anchors];
    for c in 0..layout.classes {
        for (a, best) in best.iter_mut().enumerate() {
            let s = at(4 + c, a);
            if s > best.0 {
                *best = (s, c as u16);
            }
        }
    }
    best.iter()
        .enumerate()
        .filter(|(_, (score, _))| *score > threshold)
        .map(|(a, &(score, class))| {
            let (cx, cy, w, h) = (at(0, a), at(1, a), at(2, a), at(3, a));
            let bbox = BBox { x1: cx - w / 2.0, y1: cy - h / 2.0, x2: cx + w / 2.0, y2: cy + h / 2.0 };
            Detection { class, score, bbox }
        })
        .collect()
}

/// The order of results: score descending, then class, then the box's
/// coordinates, so equal inputs always give the same list.
pub fn order(a: &Detection, b: &Detection) -> Ordering {
    b.score
        .total_cmp(&a.score)
        .then(a.class.cmp(&b.class))
        .then(a.bbox.x1.total_cmp(&b.bbox.x1))
        .then(a.bbox.y1.total_cmp(&b.bbox.y1))
        .then(a.bbox.x2.total_cmp(&b.bbox.x2))
        .then(a.bbox.y2.total_cmp(&b.bbox.y2))
}

/// Class-aware greedy NMS: from the best down, a candidate is dropped when
/// it overlaps a kept one of the same class by IoU above `iou_threshold`.
/// At most `max` are kept, in `order`. A dog and a person may overlap fully.
pub fn nms(mut candidates: Vec<Detection>, iou_threshold: f32, max: usize) -> Vec<Detection> {
    candidates.sort_unstable_by(order);
    let mut kept: Vec<Detection> = Vec::new();
    for d in candidates {
        if kept.len() == max {
            break;
        }
        if kept.iter().all(|k| k.class != d.class || k.bbox.iou(&d.bbox) <= iou_threshold) {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class: u16, score: f32, x1: f32, y1: f32, x2: f32, y2: f32) -> Detection {
        Detection { class, score, bbox: BBox { x1, y1, x2, y2 } }
    }

    #[test]
    fn shapes() {
        use Batch::*;
        let coco = |anchors_last| Layout { classes: 80, anchors_last };
        let ok = |batch, layout| Ok(Shapes { batch, layout });
        let not_yolo = |r: Result<Shapes, ShapeError>| matches!(r, Err(ShapeError::NotYolo(_)));
        // (input, output, size) → result
        assert_eq!(check_shapes(&[1, 3, 640, 640], &[1, 84, 8400], 640), ok(Fixed(1), coco(true)));
        assert_eq!(check_shapes(&[-1, 3, 640, 640], &[-1, 84, 8400], 640), ok(Dynamic, coco(true)));
        assert_eq!(check_shapes(&[4, 3, 640, 640], &[4, 8400, 84], 640), ok(Fixed(4), coco(false)));
        assert_eq!(check_shapes(&[1, 3, -1, -1], &[1, 84, -1], 320), ok(Fixed(1), coco(true)));
        assert_eq!(check_shapes(&[1, 3, -1, -1], &[1, -1, 84], 320), ok(Fixed(1), coco(false)));
        assert_eq!(
            check_shapes(&[1, 3, 320, 320], &[1, 6, 2100], 320),
            ok(Fixed(1), Layout { classes: 2, anchors_last: true })
        );
        // P6: strides up to 64.
        assert_eq!(check_shapes(&[1, 3, 1280, 1280], &[1, 84, 34000], 1280), ok(Fixed(1), coco(true)));
        assert_eq!(
            check_shapes(&[1, 3, 640, 640], &[1, 84, 8400], 320),
            Err(ShapeError::InputSize { model: 640, requested: 320 })
        );
        assert_eq!(
            check_shapes(&[1, 3, 320, -1], &[1, 84, 2100], 640),
            Err(ShapeError::InputSize { model: 320, requested: 640 })
        );
        for (input, output) in [
            (&[1, 3][..], &[1, 3][..]),
            (&[1, 1, 640, 640], &[1, 84, 8400]),
            (&[1, 3, 640, 480], &[1, 84, 6300]),
            (&[1, 3, 640, 640], &[1, 84, 8400, 1]),
            (&[1, 3, 640, 640], &[1, 300, 6]), // NMS inside the model
            (&[1, 3, 640, 640], &[1, 4, 8400]),
            (&[1, 3, 640, 640], &[1, -1, -1]),
            (&[1, 3, 640, 640], &[1, 85, 25200]), // YOLOv5: objectness, 3 anchors per cell
        ] {
            assert!(not_yolo(check_shapes(input, output, 640)), "{input:?} {output:?}");
        }
    }

    /// One image's output for `rows` = (cx, cy, w, h, scores…) per anchor,
    /// in either layout.
    fn raw(rows: &[[f32; 7]], anchors_last: bool) -> Vec<f32> {
        if anchors_last { (0..7).flat_map(|ch| rows.iter().map(move |r| r[ch])).collect() } else { rows.concat() }
    }

    #[test]
    fn decode_both_layouts() {
        let rows = [
            // cx, cy, w, h, class 0, 1, 2
            [50.0, 50.0, 20.0, 10.0, 0.1, 0.9, 0.3],
            [10.0, 20.0, 4.0, 4.0, 0.2, 0.1, 0.25],  // best 0.25 is not above 0.25
            [100.0, 0.0, 10.0, 10.0, 0.6, 0.6, 0.1], // a tie goes to the lower class
            [0.0, 0.0, 1.0, 1.0, f32::NAN, 0.3, f32::NAN],
        ];
        for anchors_last in [true, false] {
            let got = decode(&raw(&rows, anchors_last), Layout { classes: 3, anchors_last }, 0.25);
            assert_eq!(
                got,
                [
                    det(1, 0.9, 40.0, 45.0, 60.0, 55.0),
                    det(0, 0.6, 95.0, -5.0, 105.0, 5.0),
                    det(1, 0.3, -0.5, -0.5, 0.5, 0.5)
                ],
                "anchors_last {anchors_last}"
            );
        }
    }

    #[test]
    fn nms_cases() {
        let a = det(0, 0.9, 0.0, 0.0, 10.0, 10.0);
        let a_shifted = det(0, 0.8, 1.0, 0.0, 11.0, 10.0); // IoU 9/11 with a
        let a_far = det(0, 0.7, 20.0, 0.0, 30.0, 10.0);
        let a_other_class = det(3, 0.85, 0.0, 0.0, 10.0, 10.0);
        let a_half = det(0, 0.6, 5.0, 0.0, 15.0, 10.0); // IoU 1/3 with a
        // (name, candidates, IoU threshold, max) → kept
        type Case<'a> = (&'a str, &'a [Detection], f32, usize, &'a [Detection]);
        let cases: [Case; 6] = [
            ("empty", &[], 0.45, 300, &[]),
            ("overlap suppressed", &[a_shifted, a], 0.45, 300, &[a]),
            ("other class kept", &[a_other_class, a, a_shifted], 0.45, 300, &[a, a_other_class]),
            ("far kept", &[a_far, a], 0.45, 300, &[a, a_far]),
            ("IoU 1/3 above 0.3 suppressed", &[a_half, a], 0.3, 300, &[a]),
            ("max", &[a_far, a, a_other_class], 0.45, 2, &[a, a_other_class]),
        ];
        for (name, candidates, iou, max, want) in cases {
            assert_eq!(nms(candidates.to_vec(), iou, max), want, "{name}");
        }
        assert_eq!(nms(vec![a_half, a], 0.34, 300), [a, a_half], "IoU 1/3 under 0.34");
    }

    #[test]
    fn order_is_total_and_stable() {
        let mut v = [
            det(2, 0.5, 3.0, 0.0, 4.0, 1.0),
            det(1, 0.5, 9.0, 0.0, 10.0, 1.0),
            det(2, 0.5, 1.0, 0.0, 2.0, 1.0),
            det(0, 0.9, 0.0, 0.0, 1.0, 1.0),
            det(2, 0.5, 1.0, -1.0, 2.0, 1.0),
        ];
        v.sort_by(order);
        let keys: Vec<(u16, f32, f32)> = v.iter().map(|d| (d.class, d.bbox.x1, d.bbox.y1)).collect();
        assert_eq!(keys, [(0, 0.0, 0.0), (1, 9.0, 0.0), (2, 1.0, -1.0), (2, 1.0, 0.0), (2, 3.0, 0.0)]);
    }
}
