//! Frames to detections.
//!
//! `model` (a YOLO-family ONNX model through ONNX Runtime: letterbox,
//! inference, NMS) and `track` (SORT: a Kalman filter per object, Hungarian
//! assignment on IoU, global ids) are pure building blocks; the stage that
//! consumes `vigil.frames` and publishes `vigil.detections` joins them.

pub mod checkpoint;
pub mod decode;
pub mod model;
pub mod reanalyse;
pub mod record;
pub mod stage;
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

pub use stage::{DetectConfig, Detector, Error, Sampling, model_id};

/// Runs the detector until `shutdown` resolves, on a thread of its own
/// (inference is long CPU work: it must not stall the other stages of the
/// process). Kafka or delivery errors restart it from its last checkpoint;
/// a model that cannot be loaded is an error at once.
pub async fn run(
    cfg: DetectConfig,
    kafka: bus::KafkaConfig,
    frames: bus::TopicSpec,
    metrics: bus::Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("detect".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Bus(bus::Error::Other(format!("cannot start the detector's runtime: {e}"))));
            let result = result.and_then(|rt| rt.block_on(supervise(cfg, &kafka, &frames, &metrics, &flag)));
            let _ = done_tx.send(result);
        })
        .map_err(|e| Error::Bus(bus::Error::Other(format!("cannot start the detector thread: {e}"))))?;
    tokio::pin!(shutdown);
    let mut done_rx = done_rx;
    let panicked = || Err(Error::Bus(bus::Error::Other("the detector thread panicked".into())));
    tokio::select! {
        r = &mut done_rx => return r.unwrap_or_else(|_| panicked()),
        _ = &mut shutdown => stop.store(true, Ordering::Relaxed),
    }
    done_rx.await.unwrap_or_else(|_| panicked())
}

async fn supervise(
    cfg: DetectConfig,
    kafka: &bus::KafkaConfig,
    frames: &bus::TopicSpec,
    metrics: &bus::Metrics,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), Error> {
    let mut backoff = std::time::Duration::from_millis(500);
    loop {
        // Loading the model again on a restart is cheap next to what a
        // half-failed run may have left in it.
        let result = match Detector::new(cfg.clone(), kafka, metrics) {
            Ok(detector) => detector.run(kafka, frames, metrics, stop).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => return Ok(()),
            // The model, its file or the settings: trying again changes nothing.
            Err(e @ (Error::Model(_) | Error::ModelFile { .. } | Error::Config(_))) => return Err(e),
            Err(e) => {
                tracing::error!(error = %e, "detector failed; restarting from its last checkpoint");
                let until = std::time::Instant::now() + backoff;
                while std::time::Instant::now() < until {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return Ok(());
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
}
