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
    /// Motion in the frame, as the detector's motion check saw it; absent
    /// where none runs (whole-video jobs, re-analyses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub motion: Option<FrameMotion>,
}

/// Motion in one analysed frame.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameMotion {
    /// The share of the image that moved, 0-1.
    pub score: f32,
    /// Around everything that moved, x1, y1, x2, y2 in source pixels.
    #[serde(rename = "box", default, skip_serializing_if = "Option::is_none")]
    pub region: Option<[f32; 4]>,
    /// Motion is on: it started (moved in a few sampled frames in a row)
    /// and has not ended (still for a few seconds).
    pub moving: bool,
    /// The scene changed almost entirely and stayed changed (the camera
    /// was moved, covered or sprayed): once, at the frame that settled it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tamper: bool,
    /// The model did not run on this frame: nothing had moved for a
    /// while. `objects` are those of this earlier analysed frame (seq).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_from: Option<u64>,
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
