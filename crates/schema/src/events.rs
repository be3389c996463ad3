//! `vigil.events`: things that happened, for people and for other stages.
//! Every event carries a unique id, so consumers that see one twice (the
//! price of at-least-once) can drop the copy. Schema:
//! `docs/schemas/events.schema.json`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per event (UUID v7): the consumers' dedupe key.
    pub id: String,
    /// e.g. `archive-paused`, `archive-resumed`.
    pub kind: String,
    /// The camera it concerns, if one.
    pub camera: Option<String>,
    pub time_us: i64,
    /// Which process raised it (`archive@host`), for operators.
    pub source: String,
    pub detail: String,
    /// For `object-appeared` / `object-left`: the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectInfo>,
    /// For `frames-lost`: which frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<LostFrames>,
    /// For the events of the processor's rules (`zone-entered`,
    /// `zone-left`, `zone-loitering`, `zone-occupancy`, `line-crossed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleHit>,
}

/// Which rule an event is of, and the object and frame that settled it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleHit {
    /// The zone's or line's name.
    pub rule: String,
    /// The object (none for `zone-occupancy`).
    pub object_id: Option<String>,
    pub class: String,
    /// The analysed frame that settled it (of `vigil.frames`).
    pub seq: u64,
    /// The object's box there, x1, y1, x2, y2 in source pixels.
    #[serde(rename = "box")]
    pub bbox: Option<[f32; 4]>,
    /// `left-to-right` or `right-to-left` (as seen facing from the line's
    /// start to its end), for `line-crossed`.
    pub direction: Option<String>,
    /// Objects of the class inside, for `zone-occupancy`.
    pub inside: Option<u32>,
}

/// Frames ingest accepted from a camera (they have seqs) that the broker
/// never acknowledged: ingest stopped or was killed with them buffered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LostFrames {
    /// `main` or `sub`.
    pub stream: String,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// A tracked object, as `object-appeared` and `object-left` events carry it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// `camera/seq of the first sighting/index`: globally unique, and the
    /// same whenever the same frames are analysed by the same model.
    pub object_id: String,
    pub class: String,
    pub model: String,
    pub first_seen_us: i64,
    pub last_seen_us: i64,
    /// The sighting to show for the object (highest score).
    pub best: BestFrame,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestFrame {
    pub seq: u64,
    pub time_us: i64,
    pub score: f32,
    /// x1, y1, x2, y2 in source pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

impl Event {
    pub fn new(kind: &str, camera: Option<&str>, source: &str, detail: impl Into<String>) -> Self {
        Event {
            id: uuid::Uuid::now_v7().to_string(),
            kind: kind.into(),
            camera: camera.map(str::to_string),
            time_us: now_us(),
            source: source.into(),
            detail: detail.into(),
            object: None,
            lost: None,
            rule: None,
        }
    }
}

fn now_us() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}
