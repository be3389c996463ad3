//! `vigil.video.results` (keyed by video id): what the collectors found in
//! a whole video sent through `vigil.video.chunks`. Three kinds of record,
//! tagged `kind`: one per analysed frame, one per object when the video
//! ends, and the job's summary.
//!
//! Exactly-once *effect*, as for detections: a collector that resumes from
//! its checkpoint publishes the same records again, byte for byte, with the
//! same ids, and consumers drop the copies by id. Object ids are global and
//! deterministic: video id, the frame of the first sighting, the detection's
//! index in that frame and its class, the same on every run. Schema:
//! `docs/schemas/video-results.schema.json`.

use crate::detections::Object;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum VideoResult {
    Frame(VideoFrame),
    Object(VideoObject),
    Summary(VideoSummary),
}

/// What the model and tracker found in one analysed frame of a video.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VideoFrame {
    /// `frame_id(video, frame)`.
    pub id: String,
    pub video: String,
    /// The frame's number in the video, from 0.
    pub frame: u64,
    /// Its timestamp in the video, microseconds from the start.
    pub time_us: i64,
    pub model: String,
    pub width: u32,
    pub height: u32,
    pub objects: Vec<Object>,
}

/// One tracked object of a video, once the video has ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VideoObject {
    /// `<object_id>/object`.
    pub id: String,
    pub video: String,
    pub object_id: String,
    pub class: String,
    pub first_frame: u64,
    pub last_frame: u64,
    pub first_us: i64,
    pub last_us: i64,
    /// Analysed frames it was seen in.
    pub frames_seen: u64,
    pub best_score: f32,
    pub best_frame: u64,
    /// Its box in the best frame: x1, y1, x2, y2 in source pixels.
    #[serde(rename = "best_box")]
    pub best_bbox: [f32; 4],
}

/// A job's summary, the last record of a video.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VideoSummary {
    /// `<video>/summary`.
    pub id: String,
    pub video: String,
    /// The original file name.
    pub name: String,
    pub model: String,
    pub frames_analysed: u64,
    /// The video's length, microseconds.
    pub duration_us: i64,
    /// Wall time from the last chunk to the summary, milliseconds.
    pub processing_ms: u64,
    /// Objects per class.
    pub objects: BTreeMap<String, u64>,
}

/// The id of a frame's record.
pub fn frame_id(video: &str, frame: u64) -> String {
    format!("{video}/frame/{frame}")
}

/// A global, deterministic object id: the same video analysed again gives
/// the same ids.
pub fn object_id(video: &str, first_frame: u64, index: usize, class: &str) -> String {
    format!("{video}/{first_frame}/{index}/{class}")
}
