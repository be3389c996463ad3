//! A YOLO-family object detector (YOLOv8, v11, v12 ONNX exports) run by ONNX
//! Runtime on the CPU, or on CUDA where the runtime has it.
//!
//! `Model::detect` takes packed RGB images of any size and returns, per
//! image, the detections in source pixels: letterbox (`letterbox`), one
//! inference per batch, then decoding and class-aware NMS (`decode`). Both
//! halves are pure functions tested without a model.
//!
//! ONNX Runtime is not linked: its shared library is loaded at run time
//! (`ort`'s `load-dynamic`) from `ModelOptions::runtime`, by default the
//! copy that `scripts/fetch-model` installs (the CPU build from the PyPI
//! wheel), or `ORT_DYLIB_PATH`. It is loaded once per process, and one
//! ONNX Runtime environment serves every model; a process can't switch to
//! another library later (`Error::RuntimeConflict`).
//!
//! Threads: a `Model` runs on the calling thread plus `threads - 1` of
//! ONNX Runtime's own. The default is 1: on a 2-core machine 2 threads are
//! faster only while it is idle (26 against 15 frames/s); with the cores busy
//! with ingest and archive they fall to 7 while 1 thread barely moves.

mod coco;
pub mod decode;
pub mod letterbox;

pub use coco::{COCO, class_index, class_name};

use crate::Detection;
use decode::{Batch, Layout, ShapeError};
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, TensorRef, ValueType};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The ONNX Runtime release `scripts/fetch-model` installs; `ort`'s `api-31`
/// needs 1.31 or newer.
pub const RUNTIME_VERSION: &str = "1.31.1";

/// Where `scripts/fetch-model` puts what it downloads: `$VIGIL_CACHE`, else
/// `$HOME/.cache/vigil`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("VIGIL_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/vigil"),
    }
}

/// The ONNX Runtime library: `ORT_DYLIB_PATH` if set (`ort`'s own variable),
/// else the one `scripts/fetch-model` installs.
pub fn default_runtime_path() -> PathBuf {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => cache_dir().join(format!("onnxruntime/libonnxruntime.so.{RUNTIME_VERSION}")),
    }
}

/// The default model, YOLOv12n for the 80 COCO classes, as `scripts/fetch-model` installs it.
pub fn default_model_path() -> PathBuf {
    cache_dir().join("models/yolov12n.onnx")
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelOptions {
    /// The ONNX model file.
    pub path: PathBuf,
    /// The ONNX Runtime shared library (see `default_runtime_path`).
    pub runtime: PathBuf,
    /// The side of the square the images are letterboxed into; must match
    /// the model's input unless that is dynamic. A multiple of 32.
    pub input_size: u32,
    /// Threads per inference; 0 lets ONNX Runtime use every core.
    pub threads: usize,
    /// Run on the CUDA execution provider; `Model::load` fails if it can't.
    pub cuda: bool,
    /// Detections scoring at or below this are dropped.
    pub score_threshold: f32,
    /// Within a class, a box overlapping a better one by more than this IoU is dropped.
    pub iou_threshold: f32,
    /// The most images stacked into one inference when the model's batch
    /// dimension is dynamic; models with a fixed batch get theirs.
    pub batch: usize,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            path: default_model_path(),
            runtime: default_runtime_path(),
            input_size: 640,
            threads: 1,
            cuda: false,
            score_threshold: 0.25,
            iou_threshold: 0.45,
            batch: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the ONNX Runtime library {path} does not exist: run scripts/fetch-model, or set ORT_DYLIB_PATH to a \
         libonnxruntime.so of version {RUNTIME_VERSION} or newer"
    )]
    RuntimeMissing { path: PathBuf },
    #[error("could not load the ONNX Runtime library {path}: {source}")]
    RuntimeLoad {
        path: PathBuf,
        #[source]
        source: ort::LoadDynamicError,
    },
    #[error("ONNX Runtime is already loaded from {loaded} in this process; it can't load {requested} too")]
    RuntimeConflict { loaded: PathBuf, requested: PathBuf },
    #[error("could not start ONNX Runtime: {0}")]
    Runtime(#[source] ort::Error),
    #[error(
        "the model {path} does not exist: run scripts/fetch-model for the default model, or give the path of a YOLO ONNX model"
    )]
    ModelMissing { path: PathBuf },
    #[error("could not read the model {path}: {source}")]
    ModelRead { path: PathBuf, source: std::io::Error },
    #[error("ONNX Runtime could not load the model {path}: {source}")]
    ModelLoad {
        path: PathBuf,
        #[source]
        source: ort::Error,
    },
    #[error("{path} is not a YOLOv8/v11/v12-style detector: {reason}")]
    NotYolo { path: PathBuf, reason: String },
    #[error("the model {path} takes {model}x{model} images, but input_size is {requested}")]
    InputSize { path: PathBuf, model: i64, requested: u32 },
    #[error("invalid model options: {0}")]
    Options(String),
    #[error("CUDA was asked for, but {0}")]
    CudaUnavailable(String),
    #[error("image {index} is {width}x{height} with {len} bytes; packed RGB needs {} bytes and a non-empty image", 3 * *width as usize * *height as usize)]
    BadImage { index: usize, width: u32, height: u32, len: usize },
    #[error("inference failed: {0}")]
    Inference(#[source] ort::Error),
    #[error("the model's output is {shape:?}, expected {expected}")]
    BadOutput { shape: Vec<i64>, expected: String },
}

/// One packed RGB8 image, rows top to bottom without padding.
#[derive(Clone, Copy)]
pub struct ImageRef<'a> {
    pub width: u32,
    pub height: u32,
    pub rgb: &'a [u8],
}

impl<'a> ImageRef<'a> {
    pub fn new(width: u32, height: u32, rgb: &'a [u8]) -> Self {
        ImageRef { width, height, rgb }
    }
}

impl fmt::Debug for ImageRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageRef({}x{}, {} bytes)", self.width, self.height, self.rgb.len())
    }
}

/// Where the time of the last `detect` call went, for benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    pub images: usize,
    /// Inference calls (more than one for a fixed-batch model or a large call).
    pub runs: usize,
    /// Letterbox and conversion to the input tensor.
    pub preprocess: Duration,
    /// ONNX Runtime's `run`, output extraction included.
    pub inference: Duration,
    /// Decoding, NMS and mapping back to source pixels.
    pub postprocess: Duration,
}

impl Timings {
    pub fn total(&self) -> Duration {
        self.preprocess + self.inference + self.postprocess
    }
}

/// A loaded detector. Not shared between threads: `detect` takes `&mut self`
/// (it reuses its input buffer); load one per worker.
pub struct Model {
    session: Session,
    path: PathBuf,
    size: u32,
    layout: Layout,
    batch: Batch,
    per_run: usize,
    score_threshold: f32,
    iou_threshold: f32,
    /// The input tensor's data, kept between calls.
    input: Vec<f32>,
    timings: Timings,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.path)
            .field("input_size", &self.size)
            .field("classes", &self.layout.classes)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

/// The process's one ONNX Runtime: the library it came from and the
/// environment every session shares (`ort` allows one per process, for good:
/// it is never released, so neither is this).
struct Runtime {
    loaded: Option<PathBuf>,
    env: Option<Environment>,
}

static RUNTIME: Mutex<Runtime> = Mutex::new(Runtime { loaded: None, env: None });

/// Read by ONNX Runtime when it creates its environment (see `environment`).
pub const TELEMETRY_VAR: &str = "ORT_DISABLE_TELEMETRY";

/// Turns ONNX Runtime's telemetry off for this process. Call it first
/// thing in `main`, before any thread starts.
///
/// # Safety
/// No other thread may run: setting an environment variable races with
/// C code (librdkafka, ONNX Runtime) reading the environment.
pub unsafe fn disable_telemetry() {
    if std::env::var_os(TELEMETRY_VAR).is_none() {
        // SAFETY: the caller guarantees this is the only thread.
        unsafe { std::env::set_var(TELEMETRY_VAR, "1") };
    }
}

/// Loads the library at `path` (once) and returns the shared environment.
fn environment(path: &Path) -> Result<Environment, Error> {
    // Checked first, whatever is loaded: the error that says how to fix it.
    if !path.is_file() {
        return Err(Error::RuntimeMissing { path: path.to_owned() });
    }
    let mut rt = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    match &rt.loaded {
        Some(loaded) if !same_file(loaded, path) => {
            return Err(Error::RuntimeConflict { loaded: loaded.clone(), requested: path.to_owned() });
        }
        Some(_) => {}
        None => {
            ort::init_from(path).map_err(|source| Error::RuntimeLoad { path: path.to_owned(), source })?;
            rt.loaded = Some(path.to_owned());
        }
    }
    if let Some(env) = &rt.env {
        return Ok(env.clone());
    }
    // Telemetry off. Microsoft's build has it on, and creating the
    // environment writes a device id under $HOME/.cache/Microsoft even with
    // `with_telemetry(false)`; only TELEMETRY_VAR, read then, stops that.
    // Setting it here would race with librdkafka's threads reading the
    // environment: binaries set it first thing in main
    // (`disable_telemetry`), while they have one thread.
    let env = ort::init().with_name("vigil").with_telemetry(false).build().map_err(Error::Runtime)?;
    rt.env = Some(env.clone());
    Ok(env)
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

impl Model {
    pub fn load(opts: &ModelOptions) -> Result<Model, Error> {
        if opts.input_size == 0 || !opts.input_size.is_multiple_of(32) {
            return Err(Error::Options(format!("input_size {} is not a positive multiple of 32", opts.input_size)));
        }
        if !(0.0..=1.0).contains(&opts.score_threshold) || !(0.0..=1.0).contains(&opts.iou_threshold) {
            return Err(Error::Options(format!(
                "score_threshold {} and iou_threshold {} must be within 0..1",
                opts.score_threshold, opts.iou_threshold
            )));
        }
        let path = opts.path.clone();
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::ModelMissing { path }),
            Err(source) => return Err(Error::ModelRead { path, source }),
            Ok(m) if !m.is_file() => {
                let source = std::io::Error::other("not a regular file");
                return Err(Error::ModelRead { path, source });
            }
            Ok(_) => {}
        }
        let env = environment(&opts.runtime)?;

        let mut builder = Session::builder(&env)
            .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::All).map_err(Into::into))
            .and_then(|b| b.with_intra_threads(opts.threads).map_err(Into::into))
            .map_err(Error::Runtime)?;
        if opts.cuda {
            builder = with_cuda(builder)?;
        }
        let session =
            builder.commit_from_file(&path).map_err(|source| Error::ModelLoad { path: path.clone(), source })?;

        let not_yolo = |reason: String| Error::NotYolo { path: path.clone(), reason };
        let (input, output) = match (session.inputs(), session.outputs()) {
            ([input], [output]) => (input.dtype(), output.dtype()),
            (inputs, outputs) => {
                return Err(not_yolo(format!(
                    "it has {} inputs and {} outputs; a detector has one of each",
                    inputs.len(),
                    outputs.len()
                )));
            }
        };
        let input = f32_shape(input).ok_or_else(|| not_yolo(format!("its input is {input}, not a float32 tensor")))?;
        let output =
            f32_shape(output).ok_or_else(|| not_yolo(format!("its output is {output}, not a float32 tensor")))?;
        let shapes = decode::check_shapes(&input, &output, opts.input_size).map_err(|e| match e {
            ShapeError::NotYolo(reason) => not_yolo(reason),
            ShapeError::InputSize { model, requested } => Error::InputSize { path: path.clone(), model, requested },
        })?;
        let per_run = match shapes.batch {
            Batch::Fixed(n) => n,
            Batch::Dynamic => opts.batch.max(1),
        };
        Ok(Model {
            session,
            path,
            size: opts.input_size,
            layout: shapes.layout,
            batch: shapes.batch,
            per_run,
            score_threshold: opts.score_threshold,
            iou_threshold: opts.iou_threshold,
            input: Vec::new(),
            timings: Timings::default(),
        })
    }

    pub fn input_size(&self) -> u32 {
        self.size
    }

    /// The number of classes the model scores (80 for COCO).
    pub fn classes(&self) -> usize {
        self.layout.classes
    }

    /// The most images one inference call takes.
    pub fn batch(&self) -> usize {
        self.per_run
    }

    /// The time spent in the last `detect` call.
    pub fn last_timings(&self) -> Timings {
        self.timings
    }

    /// Detections for each image, in `decode::order` (best first), boxes in
    /// the image's own pixels. Images may differ in size.
    pub fn detect(&mut self, images: &[ImageRef]) -> Result<Vec<Vec<Detection>>, Error> {
        for (index, img) in images.iter().enumerate() {
            let needed = 3 * img.width as usize * img.height as usize;
            if needed == 0 || img.rgb.len() != needed {
                return Err(Error::BadImage { index, width: img.width, height: img.height, len: img.rgb.len() });
            }
        }
        let mut timings = Timings { images: images.len(), ..Timings::default() };
        let mut results = Vec::with_capacity(images.len());
        let plane = 3 * self.size as usize * self.size as usize;
        for chunk in images.chunks(self.per_run) {
            // A fixed batch larger than the chunk runs with gray filler images.
            let n = match self.batch {
                Batch::Fixed(n) => n,
                Batch::Dynamic => chunk.len(),
            };
            let started = Instant::now();
            self.input.resize(n * plane, 0.0);
            let mut slots = self.input.chunks_exact_mut(plane);
            let boxes: Vec<_> = chunk
                .iter()
                .zip(&mut slots)
                .map(|(img, slot)| letterbox::letterbox(img.rgb, img.width, img.height, self.size, slot))
                .collect();
            slots.for_each(|slot| slot.fill(f32::from(letterbox::PAD) / 255.0));
            let prepared = Instant::now();
            timings.preprocess += prepared - started;

            let side = self.size as usize;
            let tensor = TensorRef::from_array_view(([n, 3, side, side], &self.input[..])).map_err(Error::Inference)?;
            let outputs = self.session.run(ort::inputs![tensor]).map_err(Error::Inference)?;
            let (shape, raw) = outputs[0].try_extract_tensor::<f32>().map_err(Error::Inference)?;
            let ran = Instant::now();
            timings.inference += ran - prepared;
            timings.runs += 1;

            let channels = self.layout.channels();
            let shape: Vec<i64> = shape.to_vec();
            let fits = shape.len() == 3
                && shape[0] == n as i64
                && shape[if self.layout.anchors_last { 1 } else { 2 }] == channels as i64;
            if !fits {
                let expected = format!("{n} images of {channels} values per anchor");
                return Err(Error::BadOutput { shape, expected });
            }
            let per_image = raw.len() / n;
            if per_image == 0 {
                // A dynamic-anchor model that found no anchors: nothing to decode.
                results.extend(boxes.iter().map(|_| Vec::new()));
                continue;
            }
            for (lb, raw) in boxes.iter().zip(raw.chunks_exact(per_image)) {
                let candidates = decode::decode(raw, self.layout, self.score_threshold);
                let mut dets: Vec<Detection> = decode::nms(candidates, self.iou_threshold, decode::MAX_DETECTIONS)
                    .into_iter()
                    .map(|d| Detection { bbox: lb.to_source(d.bbox), ..d })
                    .filter(|d| d.bbox.area() > 0.0)
                    .collect();
                // Clipping may have changed the order of equal scores.
                dets.sort_by(decode::order);
                results.push(dets);
            }
            timings.postprocess += ran.elapsed();
        }
        self.timings = timings;
        Ok(results)
    }
}

/// The element type and shape of a float32 tensor (-1 for dynamic axes).
fn f32_shape(t: &ValueType) -> Option<Vec<i64>> {
    match t {
        ValueType::Tensor { ty: TensorElementType::Float32, shape, .. } => Some(shape.to_vec()),
        _ => None,
    }
}

/// Puts the CUDA execution provider first, failing rather than falling back
/// to the CPU unnoticed: a GPU deployment sized for CUDA would not keep up.
fn with_cuda(builder: ort::session::builder::SessionBuilder) -> Result<ort::session::builder::SessionBuilder, Error> {
    use ort::ep::{CUDA, ExecutionProvider};
    match CUDA::is_available() {
        Ok(true) => {}
        Ok(false) => {
            return Err(Error::CudaUnavailable(
                "this ONNX Runtime library has no CUDA execution provider (the onnxruntime wheel is CPU only; \
                 onnxruntime-gpu has CUDA)"
                    .into(),
            ));
        }
        Err(e) => return Err(Error::CudaUnavailable(format!("ONNX Runtime could not list its providers: {e}"))),
    }
    builder
        .with_execution_providers([CUDA::default().build().error_on_failure()])
        .map_err(|e| Error::CudaUnavailable(format!("registering it failed: {e}")))
}
