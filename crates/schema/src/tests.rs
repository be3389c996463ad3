//! Every record type against its published JSON Schema (docs/schemas):
//! what vigil writes is what the schemas promise to outside consumers.

use crate::*;
use serde_json::{Value, json};

/// This crate's directory, as cargo tells the test at run time (a test
/// binary built in another checkout and found fresh in a shared target
/// dir would carry that checkout's compile-time path).
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}

fn schema(name: &str) -> jsonschema::Validator {
    let path = format!("{}/../../docs/schemas/{name}.schema.json", manifest_dir());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
}

fn errors(v: &jsonschema::Validator, j: &Value) -> Vec<String> {
    v.iter_errors(j).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

fn detections() -> Detections {
    Detections {
        id: record_id("c", 7, "m"),
        camera: "c".into(),
        seq: 7,
        capture_us: 1_700_000_000_000_000,
        model: "m".into(),
        source: SourceFrame { topic: "vigil.frames".into(), partition: 1, offset: 9 },
        width: 640,
        height: 360,
        objects: vec![
            Object {
                object_id: Some("c/5/0".into()),
                class: "dog".into(),
                class_id: 16,
                score: 0.5,
                bbox: [1.0, 2.0, 3.0, 4.0],
            },
            Object { object_id: None, class: "person".into(), class_id: 0, score: 0.3, bbox: [5.0, 6.0, 7.0, 8.0] },
        ],
        motion: Some(FrameMotion {
            score: 0.04,
            region: Some([1.0, 2.0, 7.0, 8.0]),
            moving: true,
            ..Default::default()
        }),
    }
}

fn events() -> Vec<Event> {
    let plain = Event::new("camera-down", Some("c"), "ingest@host", "connection refused");
    let mut object = Event::new("object-appeared", Some("c"), "detect", "dog c/5/0");
    object.id = "c/5/0/object-appeared".into();
    object.object = Some(ObjectInfo {
        object_id: "c/5/0".into(),
        class: "dog".into(),
        model: "m".into(),
        first_seen_us: 1,
        last_seen_us: 2,
        best: BestFrame { seq: 5, time_us: 1, score: 0.5, bbox: [1.0, 2.0, 3.0, 4.0] },
    });
    let process = Event::new("archive-paused", None, "archive@/srv", "disk full");
    let mut rule = Event::new("line-crossed", Some("c"), "process", "person line-crossed gate (left-to-right)");
    rule.rule = Some(RuleHit {
        rule: "gate".into(),
        object_id: Some("c/5/0".into()),
        class: "person".into(),
        seq: 9,
        bbox: Some([1.0, 2.0, 3.0, 4.0]),
        direction: Some("left-to-right".into()),
        inside: None,
    });
    vec![plain, object, process, rule]
}

#[test]
fn counts_match_their_schema() {
    let c = Count {
        id: "c/gate/person/1700000040000000".into(),
        camera: "c".into(),
        rule: "gate".into(),
        class: "person".into(),
        start_us: 1_700_000_040_000_000,
        end_us: 1_700_000_100_000_000,
        entries: 0,
        exits: 0,
        crossings_left_to_right: 3,
        crossings_right_to_left: 1,
        occupancy_peak: 0,
        occupancy_mean: 0.0,
        frames: 600,
        motion_s: 0.0,
    };
    let s = schema("counts");
    let mut j = serde_json::to_value(&c).unwrap();
    assert_eq!(errors(&s, &j), Vec::<String>::new());
    j["entries"] = json!(-1);
    assert!(!errors(&s, &j).is_empty(), "a negative count");
}

#[test]
fn rules_match_their_schema() {
    let r = CameraRules {
        camera: "c".into(),
        zones: vec![RuleSpec {
            camera: "c".into(),
            name: "porch".into(),
            points: vec![[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]],
            classes: vec!["person".into()],
            loiter_s: Some(30.0),
            ..Default::default()
        }],
        lines: vec![RuleSpec {
            camera: "c".into(),
            name: "gate".into(),
            start: Some([5.0, 0.0]),
            end: Some([5.0, 10.0]),
            ..Default::default()
        }],
        by: "admin".into(),
        updated_us: 1_700_000_000_000_000,
    };
    let s = schema("rules");
    let mut j = serde_json::to_value(&r).unwrap();
    assert_eq!(errors(&s, &j), Vec::<String>::new());
    let back: CameraRules = serde_json::from_value(j.clone()).unwrap();
    assert_eq!(back, r);
    j["zones"][0]["name"] = json!("motion");
    assert!(!errors(&s, &j).is_empty(), "the motion rule's name");
}

#[test]
fn every_record_matches_its_schema() {
    let d = schema("detections");
    assert_eq!(errors(&d, &serde_json::to_value(detections()).unwrap()), Vec::<String>::new());
    let e = schema("events");
    for ev in events() {
        assert_eq!(errors(&e, &serde_json::to_value(&ev).unwrap()), Vec::<String>::new(), "{ev:?}");
    }
    let c = schema("cameras");
    let state = CameraState {
        camera: "c".into(),
        stream: "main".into(),
        up: false,
        since_us: 1,
        reconnects: 3,
        last_error: "timed out".into(),
    };
    assert_eq!(errors(&c, &serde_json::to_value(&state).unwrap()), Vec::<String>::new());
}

/// The check can fail: records that drift from the schema are refused.
#[test]
fn records_that_drift_from_the_schema_are_refused() {
    let d = schema("detections");
    let mut j = serde_json::to_value(detections()).unwrap();
    j["objects"][0]["colour"] = json!("red");
    assert!(!errors(&d, &j).is_empty(), "a field the schema does not name");
    let mut j = serde_json::to_value(detections()).unwrap();
    j.as_object_mut().unwrap().remove("source");
    assert!(!errors(&d, &j).is_empty(), "a missing field");
    let mut j = serde_json::to_value(detections()).unwrap();
    j["objects"][0]["box"] = json!([1.0, 2.0, 3.0]);
    assert!(!errors(&d, &j).is_empty(), "a box of three numbers");
    let e = schema("events");
    let mut j = serde_json::to_value(&events()[0]).unwrap();
    j["time_us"] = json!("yesterday");
    assert!(!errors(&e, &j).is_empty(), "a time that is not a number");
}

fn video_results() -> Vec<VideoResult> {
    let mut objects = detections().objects;
    objects[0].object_id = Some(object_id("v", 3, 0, "dog"));
    let frame = VideoFrame {
        id: frame_id("v", 7),
        video: "v".into(),
        frame: 7,
        time_us: 280_000,
        model: "m".into(),
        width: 640,
        height: 360,
        objects,
    };
    let object = VideoObject {
        id: format!("{}/object", object_id("v", 3, 0, "dog")),
        video: "v".into(),
        object_id: object_id("v", 3, 0, "dog"),
        class: "dog".into(),
        first_frame: 3,
        last_frame: 40,
        first_us: 120_000,
        last_us: 1_600_000,
        frames_seen: 35,
        best_score: 0.9,
        best_frame: 12,
        best_bbox: [1.0, 2.0, 3.0, 4.0],
    };
    let summary = VideoSummary {
        id: "v/summary".into(),
        video: "v".into(),
        name: "walk.mp4".into(),
        model: "m".into(),
        frames_analysed: 41,
        duration_us: 1_640_000,
        processing_ms: 5300,
        objects: [("dog".to_string(), 1)].into(),
    };
    vec![VideoResult::Frame(frame), VideoResult::Object(object), VideoResult::Summary(summary)]
}

#[test]
fn video_results_match_their_schema_and_a_drifting_one_is_refused() {
    let v = schema("video-results");
    for r in video_results() {
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(errors(&v, &j), Vec::<String>::new(), "{j}");
        assert_eq!(serde_json::from_value::<VideoResult>(j).unwrap(), r);
    }
    let mut j = serde_json::to_value(&video_results()[1]).unwrap();
    j.as_object_mut().unwrap().remove("best_box");
    assert!(!errors(&v, &j).is_empty(), "an object without its best box");
    let mut j = serde_json::to_value(&video_results()[2]).unwrap();
    j["kind"] = json!("frame");
    assert!(!errors(&v, &j).is_empty(), "a summary calling itself a frame");
}

#[test]
fn the_box_is_called_box_in_json() {
    let j = serde_json::to_value(&detections().objects[1]).unwrap();
    assert_eq!(j["box"], json!([5.0, 6.0, 7.0, 8.0]));
    assert_eq!(j["object_id"], Value::Null);
}
