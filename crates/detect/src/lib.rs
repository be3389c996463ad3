//! Frames to detections.
//!
//! `model` (a YOLO-family ONNX model through ONNX Runtime: letterbox,
//! inference, NMS) and `track` (a Kalman filter per object in time,
//! ByteTrack's two-stage association, OC-SORT's re-update, global ids) are
//! pure building blocks; `mot` runs the tracker over MOTChallenge text; `detector` is
//! the stage (on the shared runtime, `crates/stage`) that consumes
//! `vigil.frames`, decodes with `codec`, and publishes `vigil.detections`
//! and object events; `checkpoint` is what it keeps per partition;
//! `reanalyse` runs it over archived footage.

pub mod checkpoint;
pub mod detector;
pub mod gate;
pub mod model;
pub mod mot;
pub mod motion;
pub mod reanalyse;
pub mod track;

/// An axis-aligned box in source-image pixels (x1, y1) top left, (x2, y2)
/// bottom right.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }

    /// Intersection over union; 0 for disjoint or empty boxes.
    pub fn iou(&self, o: &BBox) -> f32 {
        let w = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let h = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        let inter = w * h;
        let union = self.area() + o.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
}

/// One object the model found in one image.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Detection {
    /// Index into the model's class list (COCO for the default model).
    pub class: u16,
    pub score: f32,
    pub bbox: BBox,
}

pub use detector::{DetectConfig, Detector, Error, Sampling, model_id};

/// The detector's declaration on the stage runtime: reads `frames` (with
/// the partition count it has on the broker), writes the output topic and
/// events, checkpoints to `vigil.detect.state` per output topic and model.
pub fn stage_spec(cfg: &DetectConfig, model_id: &str, frames: bus::TopicSpec) -> stage::StageSpec {
    use bus::topics;
    let state = topics::plan().into_iter().find(|t| t.name == topics::DETECT_STATE).expect("state topic in the plan");
    stage::StageSpec {
        name: "detect",
        instance: format!("{}/{model_id}", cfg.output_topic),
        member: cfg.member.clone(),
        group: topics::groups::DETECT,
        input: frames,
        outputs: vec![cfg.output_topic.clone(), topics::EVENTS.into()],
        state,
        // The first time, what comes from now on: a backlog of hours of
        // video is for a re-analysis (`--from`), not for live detection.
        start: stage::Start::End,
        checkpoint_interval: cfg.checkpoint_interval,
        transactions: cfg.transactions,
    }
}

/// Runs the detector until `shutdown` resolves, on the stage runtime (a
/// thread of its own: inference is long CPU work). Kafka or delivery
/// errors restart it from its last checkpoint, with the model loaded
/// again; a model that cannot be loaded is an error at once.
pub async fn run(
    cfg: DetectConfig,
    kafka: bus::KafkaConfig,
    frames: bus::TopicSpec,
    metrics: bus::Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let id = model_id(&cfg.model.path)?;
    let spec = stage_spec(&cfg, &id, frames);
    let m = metrics.clone();
    let make = move || {
        let d = Detector::new(cfg.clone(), &m)?;
        if d.model_id() != id {
            // Checkpoints and trackers belong to the model they were made with.
            return Err(stage::Error::fatal(format!(
                "the model file {} changed under a running detector ({id} → {}): restart it",
                cfg.model.path.display(),
                d.model_id()
            )));
        }
        Ok(d)
    };
    Ok(stage::run(spec, kafka, metrics, make, shutdown).await?)
}
