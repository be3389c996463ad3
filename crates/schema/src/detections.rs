//! `vigil.detections` (and re-analysis topics `vigil.detections.NAME`):
//! what the detector found in one analysed frame.
//!
//! Exactly-once *effect*: the detector may publish a record twice (it
//! resumes from its last checkpoint after a crash), but the copy is
//! identical, byte for byte, and carries the same id (`camera/seq/model`):
//! consumers drop it by id (`bus::dedupe`). Schema:
//! `docs/schemas/detections.schema.json`.

use serde::{Deserialize, Serialize};

/// One record of `vigil.detections` (or of a re-analysis topic): the
/// result of analysing one frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detections {
    /// `camera/seq/model`: the same frame analysed by the same model always
    /// has the same id.
    pub id: String,
    pub camera: String,
    pub seq: u64,
    pub capture_us: i64,
    pub model: String,
    /// Where the analysed frame sits.
    pub source: SourceFrame,
    pub width: u32,
    pub height: u32,
    pub objects: Vec<Object>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceFrame {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// One detected object; `object_id` is set once its track is confirmed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub object_id: Option<String>,
    pub class: String,
    pub class_id: u16,
    pub score: f32,
    /// x1, y1, x2, y2 in source pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

pub fn record_id(camera: &str, seq: u64, model: &str) -> String {
    format!("{camera}/{seq}/{model}")
}
