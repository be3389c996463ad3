//! `detect::model` end to end: the default model (YOLOv12n, COCO) on real
//! photos, and the errors a misconfigured machine gets.
//!
//! Needs what `scripts/fetch-model` installs (the suite's set-up runs it):
//! the tests fail, saying so, when the runtime, the model or the photos are
//! missing, rather than pass without having looked.

use detect::Detection;
use detect::model::{Error, ImageRef, Model, ModelOptions, class_index, class_name};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The photos of Debian's `darknet` package.
const PHOTOS: &str = "/usr/share/darknet/data";

const SETUP: &str = "run scripts/fetch-model (or scripts/setup) first";

/// A decoded photo.
struct Photo {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Photo {
    fn image(&self) -> ImageRef<'_> {
        ImageRef::new(self.width, self.height, &self.rgb)
    }
}

fn photo(name: &str) -> Photo {
    let path = Path::new(PHOTOS).join(name);
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}: the darknet package's photos are missing: {SETUP}", path.display()));
    let p = codec::jpeg(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Photo { width: p.width, height: p.height, rgb: p.rgb }
}

/// The default model, or a failure that says what to run.
fn model(opts: ModelOptions) -> Model {
    for (what, path) in [("ONNX Runtime", &opts.runtime), ("the default model", &opts.path)] {
        assert!(path.is_file(), "{what} is not at {}: {SETUP}", path.display());
    }
    Model::load(&opts).unwrap_or_else(|e| panic!("loading the default model: {e}"))
}

fn detect_one(m: &mut Model, p: &Photo) -> Vec<Detection> {
    m.detect(&[p.image()]).expect("detect").remove(0)
}

fn describe(dets: &[Detection]) -> String {
    let one = |d: &Detection| {
        let b = d.bbox;
        format!("{} {:.2} [{:.0} {:.0} {:.0} {:.0}]", class_name(d.class), d.score, b.x1, b.y1, b.x2, b.y2)
    };
    dets.iter().map(one).collect::<Vec<_>>().join("; ")
}

/// Where a box's centre lies, as fractions of the image.
fn centre(d: &Detection, p: &Photo) -> (f32, f32) {
    let b = d.bbox;
    ((b.x1 + b.x2) / 2.0 / p.width as f32, (b.y1 + b.y2) / 2.0 / p.height as f32)
}

/// The best detection of any of `classes`, failing with what was found instead.
fn best<'a>(dets: &'a [Detection], classes: &[&str], photo: &str) -> &'a Detection {
    let ids: Vec<u16> = classes.iter().map(|c| class_index(c).expect("a COCO class")).collect();
    dets.iter()
        .find(|d| ids.contains(&d.class))
        .unwrap_or_else(|| panic!("{photo}: no {classes:?} among {}", describe(dets)))
}

fn check_common(dets: &[Detection], p: &Photo) {
    for w in dets.windows(2) {
        assert!(w[0].score >= w[1].score, "not best first: {}", describe(dets));
    }
    for d in dets {
        let b = d.bbox;
        let inside = 0.0 <= b.x1 && b.x1 < b.x2 && b.x2 <= p.width as f32 && 0.0 <= b.y1 && b.y1 < b.y2;
        assert!(inside && b.y2 <= p.height as f32, "box outside the image: {d:?}");
        assert!(d.score > 0.25 && d.score <= 1.0, "score {d:?}");
    }
}

#[test]
fn dog_bicycle_and_truck() {
    let mut m = model(ModelOptions::default());
    let p = photo("dog.jpg");
    let dets = detect_one(&mut m, &p);
    check_common(&dets, &p);
    let msg = describe(&dets);
    // The dog sits in the lower left, the bicycle across the middle, the
    // truck (a car to some models) parked at the top right.
    let (x, y) = centre(best(&dets, &["dog"], "dog.jpg"), &p);
    assert!(x < 0.5 && y > 0.5, "dog centre ({x:.2}, {y:.2}): {msg}");
    let bicycle = best(&dets, &["bicycle"], "dog.jpg");
    let (x, y) = centre(bicycle, &p);
    assert!((0.3..0.7).contains(&x) && (0.3..0.7).contains(&y), "bicycle centre ({x:.2}, {y:.2}): {msg}");
    assert!(bicycle.bbox.x2 - bicycle.bbox.x1 > 0.4 * p.width as f32, "bicycle too narrow: {msg}");
    let (x, y) = centre(best(&dets, &["truck", "car"], "dog.jpg"), &p);
    assert!(x > 0.5 && y < 0.5, "truck centre ({x:.2}, {y:.2}): {msg}");
    assert!(best(&dets, &["dog"], "dog.jpg").score > 0.6, "{msg}");
}

#[test]
fn person_horse_and_dog() {
    let mut m = model(ModelOptions::default());
    let p = photo("person.jpg");
    let dets = detect_one(&mut m, &p);
    check_common(&dets, &p);
    let msg = describe(&dets);
    // Left to right: the dog, the person, the horse.
    let (dog, _) = centre(best(&dets, &["dog"], "person.jpg"), &p);
    let (person, _) = centre(best(&dets, &["person"], "person.jpg"), &p);
    let (horse, _) = centre(best(&dets, &["horse"], "person.jpg"), &p);
    assert!(dog < person && person < horse, "dog {dog:.2}, person {person:.2}, horse {horse:.2}: {msg}");
    assert!(horse > 0.5 && dog < 0.5, "{msg}");
}

#[test]
fn horses() {
    let mut m = model(ModelOptions::default());
    let p = photo("horses.jpg");
    let dets = detect_one(&mut m, &p);
    check_common(&dets, &p);
    let horse = class_index("horse").unwrap();
    let horses = dets.iter().filter(|d| d.class == horse).count();
    assert!(horses >= 3, "{horses} horses: {}", describe(&dets));
    assert!(dets.iter().all(|d| d.class == horse || d.score < 0.5), "not only horses: {}", describe(&dets));
}

/// One call with several images of different sizes gives what separate
/// calls give, in order; the fixed-batch-1 default model runs once per image.
#[test]
fn several_images_in_one_call() {
    let mut m = model(ModelOptions { batch: 4, ..ModelOptions::default() });
    assert_eq!((m.batch(), m.classes(), m.input_size()), (1, 80, 640));
    let photos = [photo("dog.jpg"), photo("person.jpg"), photo("horses.jpg")];
    let alone: Vec<Vec<Detection>> = photos.iter().map(|p| detect_one(&mut m, p)).collect();
    let images: Vec<ImageRef> = photos.iter().map(Photo::image).collect();
    let together = m.detect(&images).unwrap();
    assert_eq!(together, alone);
    let t = m.last_timings();
    assert_eq!((t.images, t.runs), (3, 3));
    assert!(t.inference > Duration::ZERO && t.total() >= t.inference);
    assert_eq!(m.detect(&images).unwrap(), together, "the same images, the same detections");
    assert_eq!(m.detect(&[]).unwrap(), Vec::<Vec<Detection>>::new());
}

/// Boxes come back in source pixels whatever the scale and padding: the dog
/// photo on a canvas twice as wide (so scaled down more, with bars above
/// and below) is found in the same place.
#[test]
fn boxes_are_in_source_pixels() {
    let mut m = model(ModelOptions::default());
    let p = photo("dog.jpg");
    let (w, h) = (p.width as usize, p.height as usize);
    let mut wide = Photo { width: 2 * p.width, height: p.height, rgb: vec![114; 2 * w * h * 3] };
    for y in 0..h {
        wide.rgb[y * 2 * w * 3..][..w * 3].copy_from_slice(&p.rgb[y * w * 3..][..w * 3]);
    }
    let dog = *best(&detect_one(&mut m, &p), &["dog"], "dog.jpg");
    let dets = detect_one(&mut m, &wide);
    check_common(&dets, &wide);
    let dog_wide = best(&dets, &["dog"], "dog.jpg on a wide canvas");
    let (a, b) = (dog.bbox, dog_wide.bbox);
    let worst = [a.x1 - b.x1, a.y1 - b.y1, a.x2 - b.x2, a.y2 - b.y2].iter().fold(0f32, |m, d| m.max(d.abs()));
    assert!(worst < 25.0, "dog at {a:?} alone, {b:?} on the wide canvas");
    assert!(a.iou(&b) > 0.85, "dog at {a:?} alone, {b:?} on the wide canvas");
}

/// Batching on models that allow it, with a stand-in detector: a dynamic
/// batch stacks up to `batch` images per run, a fixed batch of 2 fills the
/// last run with a blank image; either way each image gets what it gets alone.
#[test]
fn batches_of_several_images() {
    let _ = model(ModelOptions::default()); // fails first, clearly, without the runtime
    // Noise at the model's size: the stand-in's boxes lie in the top rows,
    // which letterboxing would fill with padding (and clipping then empty).
    let noise = |seed: u64| {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        };
        (0..640 * 640 * 3).map(|_| next()).collect::<Vec<u8>>()
    };
    let pixels = [noise(1), noise(2), noise(3)];
    let images: Vec<ImageRef> = pixels.iter().map(|rgb| ImageRef::new(640, 640, rgb)).collect();
    for (name, batch, options_batch, runs) in
        [("dynamic.onnx", -1, 2, 2), ("fixed2.onnx", 2, 1, 2), ("dynamic3.onnx", -1, 8, 1)]
    {
        let file = Scratch::new(name, &onnx::fake_detector(batch));
        let opts = ModelOptions {
            path: file.0.clone(),
            batch: options_batch,
            score_threshold: 0.9,
            ..ModelOptions::default()
        };
        let mut m = Model::load(&opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m.batch(), if batch > 0 { batch as usize } else { options_batch }, "{name}");
        let alone: Vec<Vec<Detection>> = images.iter().map(|i| m.detect(&[*i]).unwrap().remove(0)).collect();
        assert!(alone.iter().all(|d| !d.is_empty()), "{name}: the stand-in finds something in every image");
        assert_ne!(alone[0], alone[1], "{name}");
        let together = m.detect(&images).unwrap();
        assert_eq!(together, alone, "{name}");
        assert_eq!((m.last_timings().images, m.last_timings().runs), (3, runs), "{name}");
    }
}

/// A stage moves its model into a worker thread.
#[test]
fn model_is_send() {
    fn send<T: Send>() {}
    send::<Model>();
}

#[test]
fn bad_images_are_refused() {
    let mut m = model(ModelOptions::default());
    let rgb = vec![0u8; 10 * 10 * 3];
    let good = ImageRef::new(10, 10, &rgb);
    for (i, bad) in [ImageRef::new(10, 11, &rgb), ImageRef::new(0, 0, &[])].into_iter().enumerate() {
        let err = m.detect(&[good, bad]).unwrap_err();
        assert!(matches!(err, Error::BadImage { index: 1, .. }), "case {i}: {err}");
    }
    // A blank image is fine and has nothing in it.
    assert_eq!(m.detect(&[good]).unwrap(), [vec![]]);
}

fn load_err(opts: ModelOptions) -> Error {
    match Model::load(&opts) {
        Ok(m) => panic!("{opts:?} loaded: {m:?}"),
        Err(e) => e,
    }
}

/// A file in the temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, contents: &[u8]) -> Scratch {
        let path = std::env::temp_dir().join(format!("vigil-detect-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn missing_files_say_what_to_run() {
    let err = load_err(ModelOptions { path: "/nonexistent/yolo.onnx".into(), ..ModelOptions::default() });
    assert!(matches!(err, Error::ModelMissing { .. }), "{err}");
    assert!(err.to_string().contains("scripts/fetch-model"), "{err}");

    let opts = ModelOptions { runtime: "/nonexistent/libonnxruntime.so".into(), ..ModelOptions::default() };
    assert!(opts.path.is_file(), "the default model is missing: {SETUP}");
    let err = load_err(opts);
    assert!(matches!(err, Error::RuntimeMissing { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("scripts/fetch-model") && msg.contains("ORT_DYLIB_PATH"), "{msg}");
}

#[test]
fn models_that_are_not_yolo_detectors() {
    let _ = model(ModelOptions::default()); // fails first, clearly, without the runtime
    let garbage = Scratch::new("garbage.onnx", b"this is not a protobuf");
    let err = load_err(ModelOptions { path: garbage.0.clone(), ..ModelOptions::default() });
    assert!(matches!(err, Error::ModelLoad { .. }), "{err}");
    assert!(err.to_string().contains("garbage.onnx"), "{err}");

    // Real ONNX models (an Identity node) of other shapes.
    let identity = |name: &str, shape: &[i64]| {
        let file = Scratch::new(name, &onnx::identity(shape));
        load_err(ModelOptions { path: file.0.clone(), ..ModelOptions::default() })
    };
    let err = identity("flat.onnx", &[1, 3]);
    assert!(matches!(&err, Error::NotYolo { reason, .. } if reason.contains("input")), "{err}");
    let err = identity("image_out.onnx", &[1, 3, 640, 640]);
    assert!(matches!(&err, Error::NotYolo { reason, .. } if reason.contains("output")), "{err}");
    let err = identity("small.onnx", &[1, 3, 320, 320]);
    assert!(matches!(err, Error::InputSize { model: 320, requested: 640, .. }), "{err}");

    let err = load_err(ModelOptions { input_size: 600, ..ModelOptions::default() });
    assert!(matches!(err, Error::Options(_)), "{err}");
    let err = load_err(ModelOptions { input_size: 320, ..ModelOptions::default() });
    assert!(matches!(err, Error::InputSize { model: 640, requested: 320, .. }), "{err}");
}

/// The runtime `scripts/fetch-model` installs is the CPU build: asking for
/// CUDA fails at load, saying why, instead of running on the CPU unnoticed.
#[test]
fn cuda_fails_clearly_without_it() {
    let _ = model(ModelOptions::default());
    let err = load_err(ModelOptions { cuda: true, ..ModelOptions::default() });
    assert!(matches!(err, Error::CudaUnavailable(_)), "{err}");
    assert!(err.to_string().contains("CUDA"), "{err}");
}

/// Milliseconds per image on the dog photo, by thread count: run with
/// `cargo test -p detect --test model -- --ignored --nocapture timing`.
#[test]
#[ignore]
fn timing() {
    let p = photo("dog.jpg");
    for threads in [1, 2] {
        let mut m = model(ModelOptions { threads, ..ModelOptions::default() });
        for _ in 0..3 {
            detect_one(&mut m, &p);
        }
        let mut runs: Vec<_> = (0..20)
            .map(|_| {
                detect_one(&mut m, &p);
                m.last_timings()
            })
            .collect();
        runs.sort_by_key(|t| t.inference);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let median = runs[runs.len() / 2];
        println!(
            "threads {threads}: inference median {:.1} ms (min {:.1}, max {:.1}); preprocess {:.1} ms, postprocess {:.1} ms",
            ms(median.inference),
            ms(runs[0].inference),
            ms(runs[runs.len() - 1].inference),
            ms(median.preprocess),
            ms(median.postprocess)
        );
    }
}

/// Just enough of the ONNX protobuf format to write small test models.
mod onnx {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn int(out: &mut Vec<u8>, field: u64, v: i64) {
        varint(out, field << 3);
        varint(out, v as u64);
    }

    fn bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        varint(out, field << 3 | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    /// ValueInfoProto of a float tensor; negative dimensions are dynamic.
    fn value_info(name: &str, shape: &[i64]) -> Vec<u8> {
        let mut dims = Vec::new();
        for &d in shape {
            let mut dim = Vec::new();
            if d >= 0 {
                int(&mut dim, 1, d)
            } else {
                bytes(&mut dim, 2, b"batch")
            } // dim_value, dim_param
            bytes(&mut dims, 1, &dim);
        }
        let mut tensor = Vec::new();
        int(&mut tensor, 1, 1); // elem_type FLOAT
        bytes(&mut tensor, 2, &dims);
        let mut ty = Vec::new();
        bytes(&mut ty, 1, &tensor);
        let mut info = Vec::new();
        bytes(&mut info, 1, name.as_bytes());
        bytes(&mut info, 2, &ty);
        info
    }

    /// NodeProto.
    fn node(op: &str, inputs: &[&str], output: &str) -> Vec<u8> {
        let mut node = Vec::new();
        for i in inputs {
            bytes(&mut node, 1, i.as_bytes());
        }
        bytes(&mut node, 2, output.as_bytes());
        bytes(&mut node, 4, op.as_bytes());
        node
    }

    /// TensorProto of a 1-D int64 constant.
    fn int64s(name: &str, values: &[i64]) -> Vec<u8> {
        let mut t = Vec::new();
        int(&mut t, 1, values.len() as i64); // dims
        int(&mut t, 2, 7); // data_type INT64
        for &v in values {
            int(&mut t, 7, v); // int64_data
        }
        bytes(&mut t, 8, name.as_bytes());
        t
    }

    fn model(nodes: &[Vec<u8>], constants: &[Vec<u8>], input: &[i64], output: &[i64]) -> Vec<u8> {
        let mut graph = Vec::new();
        for n in nodes {
            bytes(&mut graph, 1, n);
        }
        bytes(&mut graph, 2, b"test");
        for c in constants {
            bytes(&mut graph, 5, c); // initializer
        }
        bytes(&mut graph, 11, &value_info("x", input));
        bytes(&mut graph, 12, &value_info("y", output));
        let mut opset = Vec::new();
        int(&mut opset, 2, 13);
        let mut model = Vec::new();
        int(&mut model, 1, 8); // ir_version
        bytes(&mut model, 7, &graph);
        bytes(&mut model, 8, &opset);
        model
    }

    /// A model whose output `y` is its input `x`, both float `shape`.
    pub fn identity(shape: &[i64]) -> Vec<u8> {
        model(&[node("Identity", &["x"], "y")], &[], shape, shape)
    }

    /// A stand-in detector with the default model's shapes but batch
    /// `batch` (-1: dynamic): its output is the first 84·8400 values of
    /// each image's input, so every image's detections depend on that image
    /// alone, as in a real detector.
    pub fn fake_detector(batch: i64) -> Vec<u8> {
        let nodes = [
            node("Reshape", &["x", "flat"], "f"),
            node("Slice", &["f", "starts", "ends", "axes"], "s"),
            node("Reshape", &["s", "head"], "y"),
        ];
        let constants = [
            int64s("flat", &[0, -1]),
            int64s("starts", &[0]),
            int64s("ends", &[84 * 8400]),
            int64s("axes", &[1]),
            int64s("head", &[-1, 84, 8400]),
        ];
        model(&nodes, &constants, &[batch, 3, 640, 640], &[batch, 84, 8400])
    }
}
