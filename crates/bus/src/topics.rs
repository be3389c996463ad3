//! The topic plan: every topic vigil uses, declared once as data.
//!
//! Each topic names its delivery guarantee; producer and consumer settings
//! are derived from that guarantee in `delivery`, nowhere else.

use crate::delivery::Delivery;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TopicSpec {
    pub name: &'static str,
    /// What the record key is (records with one key stay ordered in one partition).
    pub key: &'static str,
    pub content: &'static str,
    pub delivery: Delivery,
    pub partitions: i32,
    /// How long the broker keeps records; `None` for compacted topics.
    pub retention_ms: Option<i64>,
}

pub const FRAMES: &str = "vigil.frames";
pub const LIVE: &str = "vigil.live";
pub const DETECTIONS: &str = "vigil.detections";
pub const EVENTS: &str = "vigil.events";
pub const CAMERAS: &str = "vigil.cameras";
pub const DETECT_STATE: &str = "vigil.detect.state";
pub const ARCHIVE_STATE: &str = "vigil.archive.state";
pub const VIDEO_CHUNKS: &str = "vigil.video.chunks";
pub const VIDEO_RESULTS: &str = "vigil.video.results";
pub const VIDEO_JOBS: &str = "vigil.video.jobs";
pub const COLLECT_STATE: &str = "vigil.collect.state";
pub const MEMBERS: &str = "vigil.members";
pub const COUNTS: &str = "vigil.counts";
pub const PROCESS_STATE: &str = "vigil.process.state";
pub const RULES: &str = "vigil.rules";

const HOUR: i64 = 3_600_000;

/// Consumer groups, named once. A group's committed offsets feed lag
/// metrics and `vigil topics`; the sinks and stages keep their real
/// positions themselves (the archive index, stage checkpoints).
pub mod groups {
    /// The archive (`vigil.frames`).
    pub const ARCHIVE: &str = "vigil-archive";
    /// The detector (`vigil.frames`).
    pub const DETECT: &str = "vigil-detect";
    /// The collectors of whole videos (`vigil.video.chunks`).
    pub const COLLECT: &str = "vigil-collect";
    /// The stream processors (`vigil.detections`).
    pub const PROCESS: &str = "vigil-process";
    /// The web app's readers (live feeds, boxes, ranges, tables): never commit.
    pub const WEB: &str = "vigil-web";
    /// One-off reads (`vigil topics`, `vigil events`, checkpoints on start): never commit.
    pub const READ: &str = "vigil-read";

    /// The groups whose lag `vigil topics` and the Topics page show.
    pub const WITH_LAG: &[&str] = &[ARCHIVE, DETECT, COLLECT, PROCESS];
}

/// The topic plan (ARCHITECTURE.md, "Topics and guarantees"), with default sizes. The broker is a buffer, not the
/// archive: frames are kept long enough for a stopped archiver to catch up.
pub fn plan() -> Vec<TopicSpec> {
    use Delivery::*;
    vec![
        TopicSpec {
            name: FRAMES,
            key: "camera",
            content: "every encoded frame of a camera's recorded stream, chunked above the message limit",
            delivery: ExactlyOnce,
            partitions: 4,
            retention_ms: Some(6 * HOUR),
        },
        TopicSpec {
            name: LIVE,
            key: "camera",
            content: "frames of a camera's low-resolution sub stream",
            delivery: AtMostOnce,
            partitions: 4,
            retention_ms: Some(60_000),
        },
        TopicSpec {
            name: DETECTIONS,
            key: "camera",
            content: "per analysed frame: boxes, classes, scores, track ids, model, source frame",
            delivery: ExactlyOnce,
            partitions: 4,
            retention_ms: Some(7 * 24 * HOUR),
        },
        TopicSpec {
            name: EVENTS,
            key: "camera",
            content: "object entered/left, motion, camera up/down, recording gaps",
            delivery: AtLeastOnce,
            partitions: 4,
            retention_ms: Some(30 * 24 * HOUR),
        },
        TopicSpec {
            name: CAMERAS,
            key: "camera",
            content: "camera configuration and status",
            delivery: LastValue,
            partitions: 1,
            retention_ms: None,
        },
        TopicSpec {
            name: DETECT_STATE,
            key: "output topic/model/partition",
            content: "detector checkpoints: per frames partition, where to resume and each camera's tracker state",
            delivery: LastValue,
            partitions: 1,
            retention_ms: None,
        },
        TopicSpec {
            name: ARCHIVE_STATE,
            key: "frames topic/partition",
            content: "the archive's durable progress: per frames partition, the next offset some archiver's index holds",
            delivery: LastValue,
            partitions: 1,
            retention_ms: None,
        },
        TopicSpec {
            name: VIDEO_CHUNKS,
            key: "video",
            content: "chunks of submitted video files",
            delivery: ExactlyOnce,
            partitions: 4,
            retention_ms: Some(24 * HOUR),
        },
        TopicSpec {
            name: VIDEO_RESULTS,
            key: "video",
            content: "detections with global object ids for whole videos",
            delivery: ExactlyOnce,
            partitions: 4,
            retention_ms: Some(30 * 24 * HOUR),
        },
        TopicSpec {
            name: VIDEO_JOBS,
            key: "video",
            content: "each whole-video job's state: queued, receiving k/n chunks, analysing k/n frames, done, failed (reason)",
            delivery: LastValue,
            partitions: 1,
            retention_ms: None,
        },
        TopicSpec {
            name: COLLECT_STATE,
            key: "results topic/partition",
            content: "collector checkpoints: per chunks partition, where to resume (the oldest unfinished video) and the videos ended since",
            delivery: LastValue,
            partitions: 1,
            retention_ms: None,
        },
        TopicSpec {
            name: COUNTS,
            key: "camera",
            content: "per camera × zone/line × class × minute: entries, exits, crossings each way, peak and mean occupancy",
            delivery: ExactlyOnce,
            partitions: 4,
            retention_ms: Some(30 * 24 * HOUR),
        },
        TopicSpec {
            name: PROCESS_STATE,
            key: "detections topic/partition",
            content: "stream processor checkpoints: per detections partition, each camera's objects in zones, line sides and open minutes",
            delivery: LastValue,
            partitions: 1,
            retention_ms: None,
        },
        TopicSpec {
            name: RULES,
            key: "camera",
            content: "each camera's zones and lines as drawn in the web app (they replace the config file's)",
            delivery: LastValue,
            partitions: 1,
            retention_ms: None,
        },
        TopicSpec {
            name: MEMBERS,
            key: "group/member",
            content: "each stage process's group and the partitions it owns, reported by the process itself",
            delivery: LastValue,
            partitions: 1,
            retention_ms: None,
        },
    ]
}

/// Per-topic settings a user may change in the config file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopicOverride {
    pub partitions: Option<i32>,
    pub retention_ms: Option<i64>,
}

/// The plan with the user's overrides applied; unknown topic names and
/// nonsense values are errors that name the offending key.
pub fn plan_with(overrides: &BTreeMap<String, TopicOverride>) -> Result<Vec<TopicSpec>, String> {
    let mut plan = plan();
    for (name, o) in overrides {
        let spec = plan
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("topics.\"{name}\": not a vigil topic (known: {})", names().join(", ")))?;
        if let Some(p) = o.partitions {
            if !(1..=1024).contains(&p) {
                return Err(format!("topics.\"{name}\".partitions = {p}: use 1..=1024"));
            }
            spec.partitions = p;
        }
        if let Some(r) = o.retention_ms {
            if spec.retention_ms.is_none() {
                return Err(format!(
                    "topics.\"{name}\".retention_ms: this topic is compacted, it keeps the latest value per key"
                ));
            }
            if r < 1000 {
                return Err(format!("topics.\"{name}\".retention_ms = {r}: use at least 1000"));
            }
            spec.retention_ms = Some(r);
        }
    }
    Ok(plan)
}

pub fn names() -> Vec<&'static str> {
    plan().iter().map(|s| s.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_complete_and_unique() {
        let p = plan();
        assert_eq!(p.len(), 15);
        let mut names = names();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 15);
        assert_eq!(p.iter().find(|s| s.name == FRAMES).unwrap().delivery, Delivery::ExactlyOnce);
        assert_eq!(p.iter().find(|s| s.name == LIVE).unwrap().delivery, Delivery::AtMostOnce);
    }

    #[test]
    fn overrides() {
        let mut o = BTreeMap::new();
        o.insert(FRAMES.to_string(), TopicOverride { partitions: Some(12), retention_ms: Some(5000) });
        let p = plan_with(&o).unwrap();
        let f = p.iter().find(|s| s.name == FRAMES).unwrap();
        assert_eq!((f.partitions, f.retention_ms), (12, Some(5000)));

        let bad = [
            ("vigil.nope", TopicOverride::default(), "not a vigil topic"),
            (FRAMES, TopicOverride { partitions: Some(0), retention_ms: None }, "partitions"),
            (CAMERAS, TopicOverride { partitions: None, retention_ms: Some(5000) }, "compacted"),
            (LIVE, TopicOverride { partitions: None, retention_ms: Some(5) }, "at least"),
        ];
        for (name, o, why) in bad {
            let mut m = BTreeMap::new();
            m.insert(name.to_string(), o);
            let err = plan_with(&m).unwrap_err();
            assert!(err.contains(why) && err.contains(name), "{err}");
        }
    }
}
