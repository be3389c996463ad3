//! The JSON records on vigil's topics, in one place every stage shares:
//! what the detector publishes (`detections`), what happened (`events`),
//! each camera's state (`cameras`), what the collectors found in a whole
//! video (`video`), what the processor's rules counted (`counts`), the
//! rules drawn in the web app (`rules`). Frames are binary and live in `media`.
//! Consumers outside vigil read the JSON Schemas in `docs/schemas/`; the
//! tests here check every record type against them.

pub mod cameras;
pub mod counts;
pub mod detections;
pub mod events;
pub mod rules;
pub mod video;

pub use cameras::CameraState;
pub use counts::Count;
pub use detections::{Detections, FrameMotion, Object, SourceFrame, record_id};
pub use events::{BestFrame, Event, ObjectInfo, RuleHit};
pub use rules::{CameraRules, RuleSpec};
pub use video::{VideoFrame, VideoObject, VideoResult, VideoSummary, frame_id, object_id};

#[cfg(test)]
mod tests;
