//! What the detector publishes, and how consumers drop repeats.
//!
//! Exactly-once *effect*: the detector may publish a record twice (it
//! resumes from its last checkpoint after a crash), but the copy is
//! identical, byte for byte, because decoding, inference, NMS and tracking
//! are deterministic, and it carries the same identity. Every vigil
//! consumer keeps, per (camera, model), the highest `seq` it has taken and
//! drops anything not above it: records of one camera arrive in order (one
//! partition, keyed by camera). Schemas for consumers outside vigil:
//! `docs/schemas/`.

use crate::{BBox, Detection};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

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

impl Object {
    pub fn new(d: &Detection, class: &str, object_id: Option<String>) -> Self {
        let BBox { x1, y1, x2, y2 } = d.bbox;
        Object { object_id, class: class.into(), class_id: d.class, score: d.score, bbox: [x1, y1, x2, y2] }
    }
}

pub fn record_id(camera: &str, seq: u64, model: &str) -> String {
    format!("{camera}/{seq}/{model}")
}

/// Drops repeated detection records: per (camera, model), only records
/// above the highest seq taken so far pass.
#[derive(Default)]
pub struct Dedupe {
    newest: HashMap<(String, String), u64>,
    dropped: u64,
}

impl Dedupe {
    /// True when `r` is new and should be used.
    pub fn take(&mut self, r: &Detections) -> bool {
        let key = (r.camera.clone(), r.model.clone());
        match self.newest.get(&key) {
            Some(&seq) if r.seq <= seq => {
                self.dropped += 1;
                false
            }
            _ => {
                self.newest.insert(key, r.seq);
                true
            }
        }
    }

    /// Repeats dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(camera: &str, seq: u64, model: &str) -> Detections {
        Detections {
            id: record_id(camera, seq, model),
            camera: camera.into(),
            seq,
            capture_us: 0,
            model: model.into(),
            source: SourceFrame { topic: "vigil.frames".into(), partition: 0, offset: seq as i64 },
            width: 1,
            height: 1,
            objects: vec![],
        }
    }

    #[test]
    fn repeats_after_a_resume_are_dropped_per_camera_and_model() {
        let mut d = Dedupe::default();
        // A detector published 1..=5, crashed, resumed from its checkpoint
        // at 3 and published 4, 5 again, then 6.
        let seen: Vec<(&str, u64, &str)> = vec![
            ("a", 1, "m"),
            ("a", 3, "m"),
            ("b", 3, "m"),
            ("a", 5, "m"),
            ("a", 4, "m"),
            ("a", 5, "m"),
            ("a", 6, "m"),
            ("a", 4, "m2"),
        ];
        let taken: Vec<bool> = seen.iter().map(|&(c, s, m)| d.take(&rec(c, s, m))).collect();
        assert_eq!(taken, [true, true, true, true, false, false, true, true]);
        assert_eq!(d.dropped(), 2);
    }

    #[test]
    fn the_box_is_called_box_in_json() {
        let d = Detection { class: 16, score: 0.5, bbox: BBox { x1: 1.0, y1: 2.0, x2: 3.0, y2: 4.0 } };
        let j = serde_json::to_value(Object::new(&d, "dog", None)).unwrap();
        assert_eq!(j["box"], serde_json::json!([1.0, 2.0, 3.0, 4.0]));
        assert_eq!(j["object_id"], serde_json::Value::Null);
    }

    /// The documented schemas name exactly the fields records carry.
    #[test]
    fn records_and_events_match_their_documented_schemas() {
        fn keys(v: &serde_json::Value) -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        }
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/schemas/detections.schema.json")).unwrap();
        let d = Detection { class: 0, score: 0.5, bbox: BBox { x1: 1.0, y1: 2.0, x2: 3.0, y2: 4.0 } };
        let mut r = rec("c", 1, "m");
        r.objects.push(Object::new(&d, "person", Some("c/1/0".into())));
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(keys(&j), keys(&schema["properties"]));
        assert_eq!(keys(&j["source"]), keys(&schema["properties"]["source"]["properties"]));
        assert_eq!(keys(&j["objects"][0]), keys(&schema["properties"]["objects"]["items"]["properties"]));

        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/schemas/events.schema.json")).unwrap();
        let mut e = bus::events::Event::new("object-appeared", Some("c"), "detect", "person c/1/0");
        e.object = Some(bus::events::ObjectInfo {
            object_id: "c/1/0".into(),
            class: "person".into(),
            model: "m".into(),
            first_seen_us: 1,
            last_seen_us: 2,
            best: bus::events::BestFrame { seq: 1, time_us: 1, score: 0.5, bbox: [1.0, 2.0, 3.0, 4.0] },
        });
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(keys(&j), keys(&schema["properties"]));
        let o = &schema["properties"]["object"];
        assert_eq!(keys(&j["object"]), keys(&o["properties"]));
        assert_eq!(keys(&j["object"]["best"]), keys(&o["properties"]["best"]["properties"]));
    }
}
