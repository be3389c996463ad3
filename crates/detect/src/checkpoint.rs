//! Where a detector resumes, kept in the compacted `vigil.detect.state`.
//!
//! A checkpoint is written only after every record the detector produced
//! up to it is acknowledged, and holds, per partition of `vigil.frames`,
//! the offset to read from again and, per camera, the last frame accounted
//! for and its tracker. A restarted detector reads from there: frames up to
//! `done_seq` only rebuild the decoder, later ones are analysed with the
//! very tracker state the crashed run had, so whatever it publishes again
//! is identical to what was published before (consumers drop the copies).

use crate::track::Tracker;
use bus::KafkaConfig;
use bus::topics::DETECT_STATE;
use rdkafka::Message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A checkpoint of one partition of `vigil.frames`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Read the partition again from here: the start of the oldest GOP a
    /// camera on it is still decoding.
    pub resume_offset: i64,
    pub cameras: BTreeMap<String, CameraState>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CameraState {
    /// Frames up to here are accounted for (analysed and published, or
    /// deliberately skipped); `None` before the camera's first frame.
    pub done_seq: Option<u64>,
    /// The sampling bucket of the last analysed frame (per-second mode).
    pub last_bucket: Option<i64>,
    pub tracker: Tracker,
}

/// The record key: one checkpoint per output topic, model and partition.
pub fn key(output_topic: &str, model: &str, partition: i32) -> String {
    format!("{output_topic}/{model}/{partition}")
}

/// The newest checkpoint of each partition of `output_topic` for `model`
/// (blocking: call off the runtime). Unreadable records are skipped.
pub fn read(
    kafka: &KafkaConfig,
    output_topic: &str,
    model: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, PartitionState>, bus::Error> {
    let prefix = format!("{output_topic}/{model}/");
    let mut out = BTreeMap::new();
    bus::snapshot::read_to_end(kafka, DETECT_STATE, 1, timeout, |m| {
        let partition = m.key().and_then(|k| std::str::from_utf8(k).ok()).and_then(|k| k.strip_prefix(&prefix));
        if let Some(p) = partition.and_then(|p| p.parse::<i32>().ok()) {
            match m.payload().map(serde_json::from_slice::<PartitionState>) {
                Some(Ok(s)) => {
                    out.insert(p, s);
                }
                // A tombstone or an unreadable record: start that partition afresh.
                _ => {
                    out.remove(&p);
                }
            }
        }
    })?;
    Ok(out)
}

/// The end offset of each of `partitions` of `topic` now (blocking).
pub fn end_offsets(kafka: &KafkaConfig, topic: &str, partitions: &[i32]) -> Result<BTreeMap<i32, i64>, bus::Error> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = kafka
        .consumer_config(bus::Delivery::ExactlyOnce, "vigil-detect")
        .create()
        .map_err(|e| bus::Error::kafka("create consumer", e))?;
    let mut out = BTreeMap::new();
    for &p in partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| bus::Error::kafka("read end offsets", e))?;
        out.insert(p, high);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::{FrameRef, TrackerConfig};
    use crate::{BBox, Detection};

    /// Two objects moving across, with a little jitter.
    fn scene(i: u64) -> Vec<Detection> {
        let j = ((i * 7919) % 13) as f32 * 0.37;
        let b = |x: f32, y: f32| BBox { x1: x, y1: y, x2: x + 80.0, y2: y + 120.0 };
        vec![
            Detection { class: 0, score: 0.9, bbox: b(10.0 + i as f32 * 4.1 + j, 50.0 + j) },
            Detection { class: 16, score: 0.7, bbox: b(600.0 - i as f32 * 3.3, 200.0 - j) },
        ]
    }

    /// A tracker written to a checkpoint (JSON, as on the topic) and read
    /// back continues exactly as the one that was never stopped: the same
    /// ids, boxes and events, to the last bit.
    #[test]
    fn a_tracker_restored_from_a_checkpoint_continues_exactly() {
        let mut live = Tracker::new("cam", TrackerConfig::default());
        let frame = |i: u64| FrameRef { seq: i, time_us: i as i64 * 100_000 };
        for i in 0..25 {
            live.update(frame(i), &scene(i));
        }
        let state = PartitionState {
            resume_offset: 42,
            cameras: [(
                "cam".to_string(),
                CameraState { done_seq: Some(24), last_bucket: Some(5), tracker: live.clone() },
            )]
            .into(),
        };
        let json = serde_json::to_vec(&state).unwrap();
        let back: PartitionState = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, state);
        let mut restored = back.cameras["cam"].tracker.clone();
        for i in 25..120 {
            assert_eq!(restored.update(frame(i), &scene(i)), live.update(frame(i), &scene(i)), "frame {i}");
        }
        assert_eq!(restored, live);
    }
}
