//! What a newcomer sees: `vigil up` with no cameras configured runs the
//! demo, and one demo camera plays real footage (the darknet photos of
//! people and animals, scripts/demo-clip), so object events and boxes with
//! ids appear within a minute.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

#[test]
fn the_demo_shows_detected_and_tracked_objects_within_a_minute() {
    let clip = detect::model::cache_dir().join("demo/people-and-animals.mp4");
    let model = detect::model::default_model_path();
    for p in [&clip, &model] {
        assert!(p.exists(), "{} missing: run scripts/setup", p.display());
    }
    let dir = temp_dir("demo");
    let cfg = dir.join("vigil.toml");
    std::fs::write(&cfg, "[archive]\nmin_free_bytes = 0\n").unwrap();
    #[rustfmt::skip]
    let (mut up, web) = start_up(
        &["--config", cfg.to_str().unwrap(), "--data-dir", dir.join("d").to_str().unwrap(), "--demo-cameras", "3", "--insecure-no-auth"],
        &dir,
    );
    let started = Instant::now();
    let events = loop {
        let (code, _, body) = http(web, "GET", "/api/events?camera=cam2", &[], "");
        let events: Value = if code == 200 { serde_json::from_slice(&body).unwrap() } else { Value::Null };
        if events.as_array().is_some_and(|e| !e.is_empty()) {
            break events;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "no object event from the demo camera in 90 s");
        std::thread::sleep(Duration::from_secs(2));
    };
    eprintln!("first object event after {:.0} s: {}", started.elapsed().as_secs_f64(), events[0]);
    let classes: Vec<&str> = events.as_array().unwrap().iter().filter_map(|e| e["object"]["class"].as_str()).collect();
    assert!(classes.iter().any(|c| ["person", "dog", "horse"].contains(c)), "{classes:?}");
    // The recorded boxes of that camera carry the tracker's ids.
    let (code, _, body) = http(web, "GET", "/api/cameras/cam2/detections", &[], "");
    assert_eq!(code, 200);
    let records: Value = serde_json::from_slice(&body).unwrap();
    let tracked = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["objects"].as_array().cloned().unwrap_or_default())
        .filter(|o| o["object_id"].as_str().is_some_and(|id| id.starts_with("cam2/")))
        .count();
    assert!(tracked > 0, "no box with an object id: {records}");
    // The synthetic cameras run beside it.
    let (_, _, body) = http(web, "GET", "/api/cameras", &[], "");
    let cameras: Value = serde_json::from_slice(&body).unwrap();
    let ids: Vec<&str> = cameras.as_array().unwrap().iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids, ["cam1", "cam2", "cam3"]);
    up.stop(Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&dir);
}
