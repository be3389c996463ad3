//! What the detector keeps per partition of `vigil.frames`: each camera's
//! last accounted frame and tracker. The stage runtime stores it with the
//! offset to read again (in the compacted `vigil.detect.state`, keyed
//! `<output topic>/<model>/<partition>`), only after every record the
//! detector produced before it is acknowledged. A restarted detector reads
//! from there: frames up to `done_seq` only rebuild the decoder, later ones
//! are analysed with the very tracker state the crashed run had, so
//! whatever it publishes again is identical to what was published before
//! (consumers drop the copies).

use crate::gate::GateState;
use crate::track::Tracker;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The detector's state for one partition of `vigil.frames`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
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
    /// The motion check and the last analysed frame's objects.
    #[serde(default)]
    pub gate: GateState,
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
            cameras: [(
                "cam".to_string(),
                CameraState {
                    done_seq: Some(24),
                    last_bucket: Some(5),
                    tracker: live.clone(),
                    gate: GateState::default(),
                },
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
