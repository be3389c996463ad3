//! Ingest → detect → process end to end, on a clip whose every happening
//! is known:
//!
//! - 0-10 s: a photo (a dog, a bicycle, a truck) stands still;
//! - 10-16 s: it slides 240 px to the right: the dog crosses the line
//!   `gate` (x = 250) and its feet enter the zone `field` (x > 300);
//! - 16-40 s: still again; at 28 s the light jumps (brightness +0.2); the
//!   camera stops at about 38 s.
//!
//! The detector samples 2 frames a second, checks motion on each and
//! skips the model while nothing moves (hold 3 s); the processor turns
//! tracks and motion into events and counts. It is SIGKILLed mid-slide
//! and restarted. Then: one motion-started around the slide, one
//! motion-ended after it, nothing from the light jump (no motion storm,
//! no tamper); the dog crossed once and entered once (no event twice);
//! the minute's counts say so; frames skipped by the gate still carry the
//! dog (the gate missed no object). A frame two minutes later ends the
//! dog's track and closes the minute.
//!
//! Needs the model (scripts/fetch-model) and darknet's photos (scripts/setup).

mod common;

use common::*;
use rdkafka::producer::{BaseRecord, Producer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const FPS: u64 = 10;

/// The camera (`[[cameras]]`, its source the clip) goes first.
const CONFIG: &str = r#"
[detect]
sample = "2/s"
checkpoint_interval_ms = 1000

[motion]
hold_s = 3

[process]
checkpoint_interval_ms = 500
lateness_s = 1

[[process.lines]]
camera = "yard"
name = "gate"
start = [250, 0]
end = [250, 360]
classes = ["dog"]

[[process.zones]]
camera = "yard"
name = "field"
points = [[300, 0], [640, 0], [640, 360], [300, 360]]
classes = ["dog"]
"#;

fn clip(dir: &Path) -> PathBuf {
    let path = dir.join("yard.mp4");
    let x = "20+240*clip((t-10)/6\\,0\\,1)";
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", "color=c=0x556655:s=640x360:r=10", "-i", DOG])
        .args([
            "-filter_complex",
            &format!("[1:v]scale=360:270[d];[0:v][d]overlay=x='{x}':y=45,eq=brightness=0.2:enable='gte(t,28)'"),
        ])
        .args(["-t", "40", "-c:v", "libx264", "-g", "10", "-bf", "0", "-pix_fmt", "yuv420p"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(ok.success());
    path
}

fn role(dir: &Path, role: &str, brokers: &str, config: &Path, metrics: &str, extra: &[&str]) -> Vigil {
    let data = dir.join(role);
    let args = [role, "--brokers", brokers, "--config", config.to_str().unwrap(), "--metrics-listen", metrics];
    let args = [&args[..], &["--data-dir", data.to_str().unwrap()], extra].concat();
    Vigil::start(role, &args, dir)
}

/// The first copy of each record of `topic`, parsed.
fn first<T: serde::de::DeserializeOwned>(brokers: &str, topic: &str) -> BTreeMap<String, T> {
    read_by_id(brokers, topic)
        .into_iter()
        .map(|(id, copies)| {
            assert!(copies.iter().all(|c| c == &copies[0]), "copies of {id} differ");
            (id, serde_json::from_slice(&copies[0]).unwrap())
        })
        .collect()
}

#[test]
fn a_clip_through_ingest_detect_and_process_gives_its_known_events_and_counts() {
    model_installed();
    let dir = temp_dir("pipeline");
    let clip = clip(&dir);
    let addr = free_port();
    let listen = addr.to_string();
    let config = dir.join("vigil.toml");
    let camera = format!("[[cameras]]\nid = \"yard\"\nsource = \"file:{}\"\n", clip.display());
    std::fs::write(&config, camera + CONFIG).unwrap();
    let broker_dir = dir.join("broker");
    let args = ["broker", "--listen", &listen, "--data-dir", broker_dir.to_str().unwrap(), "--metrics-listen", "off"];
    let _broker = Vigil::start("broker", &args, &dir);
    wait_port(addr, Duration::from_secs(30));

    let (pm, dm) = (free_port(), free_port());
    let mut processor = role(&dir, "process", &listen, &config, &pm.to_string(), &[]);
    let _detector = role(&dir, "detect", &listen, &config, &dm.to_string(), &[]);
    wait_owned(&[pm], "process", bus::topics::DETECTIONS, Duration::from_secs(60));
    wait_owned(&[dm], "detect", bus::topics::FRAMES, Duration::from_secs(60));
    let started = Instant::now();
    let mut ingest = role(&dir, "ingest", &listen, &config, "off", &[]);

    // SIGKILL the processor mid-slide; restart it.
    std::thread::sleep(Duration::from_secs(13));
    processor.kill();
    std::thread::sleep(Duration::from_secs(1));
    let pm = free_port();
    let _processor = role(&dir, "process", &listen, &config, &pm.to_string(), &[]);

    // The clip plays in real time. Near its end the camera stops (a file
    // camera plays its file again after it ends: a second pass would slide
    // the photo back across the line).
    let deadline = started + Duration::from_secs(120);
    loop {
        let r: BTreeMap<String, schema::Detections> = first(&listen, bus::topics::DETECTIONS);
        if r.values().any(|d| d.seq >= 37 * FPS) {
            break;
        }
        assert!(Instant::now() < deadline, "the detector has not reached the clip's end");
        std::thread::sleep(Duration::from_millis(300));
    }
    ingest.stop(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    let records: BTreeMap<String, schema::Detections> = first(&listen, bus::topics::DETECTIONS);
    assert!(records.values().all(|d| d.seq < 40 * FPS), "one pass of the clip");
    // A frame a minute later closes the clip's minute.
    let mut closing = records.values().max_by_key(|d| d.seq).unwrap().clone();
    (closing.seq, closing.capture_us, closing.objects, closing.motion) =
        (closing.seq + 10_000, closing.capture_us + 120_000_000, vec![], None);
    closing.id = format!("yard/{}/{}", closing.seq, closing.model);
    let producer = camera_producer(&bus::KafkaConfig::new(listen.clone()));
    let payload = serde_json::to_vec(&closing).unwrap();
    producer.send(BaseRecord::to(bus::topics::DETECTIONS).key("yard").payload(&payload)).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();

    // The gate: still frames skipped, the slide analysed, the dog in
    // every record (held ones too).
    let held: Vec<u64> =
        records.values().filter(|d| d.motion.as_ref().unwrap().held_from.is_some()).map(|d| d.seq).collect();
    let trace: Vec<String> = records
        .values()
        .map(|d| {
            let m = d.motion.as_ref().unwrap();
            format!(
                "{}{}{:.3}{}",
                d.seq,
                if m.held_from.is_some() { "h" } else { "" },
                m.score,
                if m.moving { "M" } else { "" }
            )
        })
        .collect();
    eprintln!("records (seq, h: held, score, M: moving): {trace:?}");
    let slide = records.values().filter(|d| (10 * FPS + 1..16 * FPS).contains(&d.seq));
    assert!(slide.clone().all(|d| d.motion.as_ref().unwrap().held_from.is_none()), "the slide is analysed");
    assert!(held.len() >= records.len() / 3, "{} of {} records held: {held:?}", held.len(), records.len());
    let dogless: Vec<u64> =
        records.values().filter(|d| !d.objects.iter().any(|o| o.class == "dog")).map(|d| d.seq).collect();
    assert!(dogless.len() <= 1, "records without the dog: {dogless:?}");

    // Read once the last minute's counts are out (the processor is done).
    let last = records.values().map(|d| d.capture_us).max().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let counts = loop {
        let c: BTreeMap<String, schema::Count> = first(&listen, bus::topics::COUNTS);
        let done = c.values().any(|c| c.rule == "motion" && (c.start_us..c.end_us).contains(&last));
        if done || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let events: BTreeMap<String, schema::Event> = first(&listen, bus::topics::EVENTS);
    let rule_events: Vec<(String, String, u64)> =
        events.values().filter_map(|e| e.rule.as_ref().map(|r| (e.kind.clone(), r.rule.clone(), r.seq))).collect();
    eprintln!("rule events: {rule_events:?}");
    let of = |kind: &str| rule_events.iter().filter(|e| e.0 == kind).map(|e| e.2).collect::<Vec<_>>();
    let (started_at, ended_at) = (of("motion-started"), of("motion-ended"));
    assert!(started_at.len() == 1 && (10 * FPS..=12 * FPS).contains(&started_at[0]), "{rule_events:?}");
    assert!(ended_at.len() == 1 && (16 * FPS..=25 * FPS).contains(&ended_at[0]), "{rule_events:?}");
    assert!(of("tamper").is_empty(), "{rule_events:?}");
    assert_eq!(of("line-crossed").len(), 1, "{rule_events:?}");
    assert_eq!(of("zone-entered").len(), 1, "{rule_events:?}");
    // Its track ends with the clip (the closing frame has no dog).
    assert!(of("zone-left").iter().all(|&seq| seq >= 37 * FPS), "{rule_events:?}");

    // Counts of the minute: the crossing, the entry, the motion.
    let sum =
        |rule: &str, f: fn(&schema::Count) -> f64| -> f64 { counts.values().filter(|c| c.rule == rule).map(f).sum() };
    assert_eq!(sum("gate", |c| (c.crossings_left_to_right + c.crossings_right_to_left) as f64), 1.0, "{counts:?}");
    assert_eq!(sum("field", |c| c.entries as f64), 1.0, "{counts:?}");
    let motion_s = sum("motion", |c| c.motion_s);
    // 6 s of sliding, the average settling after it stops, and the few
    // still seconds before motion is called ended.
    assert!((5.0..=12.0).contains(&motion_s), "{motion_s} s of motion: {counts:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
