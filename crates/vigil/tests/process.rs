//! The stream processor end to end: analysed frames on vigil.detections
//! (written here as a detector would) → `vigil process` → rule events on
//! vigil.events and per-minute counts on vigil.counts.
//!
//! People walk one after another across a zone and a line, three minutes
//! of capture time. The processor is SIGKILLed mid-stream; it restarts
//! and a second processor joins its group; the rest of the stream
//! follows. What consumers see (copies dropped by id) is exactly what the
//! state machine gives over the whole stream uninterrupted: every count,
//! and each event once. Copies are byte-identical. `vigil counts` and
//! `vigil events --rule` read them back.

mod common;

use common::*;
use rdkafka::producer::{BaseRecord, Producer};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// A minute boundary, microseconds.
const T0: i64 = 1_700_000_040_000_000;
/// Frames every half second for three minutes.
const FRAMES: u64 = 360;
/// Someone starts across every 20 s, walking 10 px a frame.
const PEOPLE: u64 = 9;

const CONFIG: &str = r#"
[[cameras]]
id = "cam"
source = "synthetic:"

[process]
checkpoint_interval_ms = 200
lateness_s = 1

[[process.zones]]
camera = "cam"
name = "yard"
points = [[100, 100], [200, 100], [200, 200], [100, 200]]
classes = ["person"]

[[process.lines]]
camera = "cam"
name = "gate"
start = [300, 0]
end = [300, 360]
"#;

/// Frame `seq` of the scene: person k walks from x 50 to 350 along y 150
/// (through the zone, across the line) from frame 40 k.
fn frame(seq: u64) -> schema::Detections {
    walking(seq, PEOPLE, T0)
}

/// The last frame: far enough on to close every minute.
fn closing() -> schema::Detections {
    let mut d = frame(FRAMES + 200);
    d.objects.clear();
    d
}

fn processor(dir: &Path, name: &str, brokers: &str, config: &Path, metrics: &str) -> Vigil {
    let data = dir.join(name);
    let args = ["process", "--brokers", brokers, "--config", config.to_str().unwrap(), "--metrics-listen", metrics];
    let mut args: Vec<&str> = args.to_vec();
    args.extend(["--data-dir", data.to_str().unwrap()]);
    Vigil::start(name, &args, dir)
}

/// Waits until the processors at `metrics` own every partition between them.
fn wait_assigned(metrics: &[std::net::SocketAddr], within: Duration) {
    wait_owned(metrics, "process", bus::topics::DETECTIONS, within);
}

#[test]
fn a_processor_killed_mid_stream_changes_no_count() {
    let dir = temp_dir("process");
    let addr = free_port();
    let listen = addr.to_string();
    let broker_dir = dir.join("broker");
    let args = ["broker", "--listen", &listen, "--data-dir", broker_dir.to_str().unwrap(), "--metrics-listen", "off"];
    let _b = Vigil::start("broker", &args, &dir);
    wait_port(addr, Duration::from_secs(30));
    let config = dir.join("vigil.toml");
    std::fs::write(&config, CONFIG).unwrap();

    let m1 = free_port();
    let mut p1 = processor(&dir, "p1", &listen, &config, &m1.to_string());
    wait_assigned(&[m1], Duration::from_secs(60));

    let kafka = bus::KafkaConfig::new(listen.clone());
    let producer = camera_producer(&kafka);
    let send = |d: &schema::Detections| {
        let payload = serde_json::to_vec(d).unwrap();
        producer.send(BaseRecord::to(bus::topics::DETECTIONS).key("cam").payload(&payload)).unwrap();
    };
    // A quarter of the stream and some checkpoints; then the stream goes
    // on and the processor is SIGKILLed in the middle of it.
    for seq in 0..FRAMES / 4 {
        send(&frame(seq));
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    for seq in FRAMES / 4..FRAMES / 2 {
        send(&frame(seq));
        producer.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        if seq == FRAMES * 3 / 8 {
            p1.kill();
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    // The restarted processor and a second one share the rest.
    let (m1, m2) = (free_port(), free_port());
    let _p1 = processor(&dir, "p1", &listen, &config, &m1.to_string());
    let _p2 = processor(&dir, "p2", &listen, &config, &m2.to_string());
    wait_assigned(&[m1, m2], Duration::from_secs(60));
    for seq in FRAMES / 2..FRAMES {
        send(&frame(seq));
    }
    send(&closing());
    producer.flush(Duration::from_secs(10)).unwrap();

    // What the state machine gives over the whole stream, uninterrupted.
    let rules = {
        let file: toml::Value = toml::from_str(CONFIG).unwrap();
        let mut r = process::Rules::default();
        let p = &file["process"];
        r.add_zone(&p["zones"][0].clone().try_into().unwrap()).unwrap();
        r.add_line(&p["lines"][0].clone().try_into().unwrap()).unwrap();
        r
    };
    let mut cam = process::Camera::default();
    let (mut hits, mut closed) = (Vec::new(), Vec::new());
    for d in (0..FRAMES).map(frame).chain([closing()]) {
        let (h, c) = cam.frame(&rules, &d, 1_000_000);
        hits.extend(h);
        closed.extend(c);
    }
    let want_counts: BTreeMap<String, (u64, u64, u64, u64, u32)> = closed
        .iter()
        .map(|c| {
            let t = &c.tally;
            let id = format!("cam/{}/{}/{}", c.rule, c.class, c.start_us);
            (id, (t.entries, t.exits, t.crossings_left_to_right, t.crossings_right_to_left, t.occupancy_peak))
        })
        .collect();
    let kinds = |h: &[process::Hit], kind: &str| h.iter().filter(|h| h.kind == kind).count();
    assert_eq!(kinds(&hits, "zone-entered"), PEOPLE as usize, "the scene itself");
    assert_eq!(kinds(&hits, "line-crossed"), PEOPLE as usize);

    // Counts: wait until the last minute is there, then compare.
    let deadline = Instant::now() + Duration::from_secs(60);
    let counts = loop {
        let got = read_by_id(&listen, bus::topics::COUNTS);
        if want_counts.keys().all(|k| got.contains_key(k)) || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut got_counts = BTreeMap::new();
    for (id, copies) in &counts {
        assert!(copies.iter().all(|c| c == &copies[0]), "copies of {id} differ");
        let c: schema::Count = serde_json::from_slice(&copies[0]).unwrap();
        let tally = (c.entries, c.exits, c.crossings_left_to_right, c.crossings_right_to_left, c.occupancy_peak);
        got_counts.insert(id.clone(), tally);
    }
    assert_eq!(got_counts, want_counts);
    let total = |f: fn(&(u64, u64, u64, u64, u32)) -> u64| got_counts.values().map(f).sum::<u64>();
    assert_eq!((total(|t| t.0), total(|t| t.1), total(|t| t.3)), (PEOPLE, PEOPLE, PEOPLE));

    // Events: each of the state machine's once, copies identical.
    let events = read_by_id(&listen, bus::topics::EVENTS);
    let copies: usize = counts.values().chain(events.values()).map(|c| c.len() - 1).sum();
    eprintln!("records published again after the kill: {copies}");
    let mut got_events = Vec::new();
    for (id, copies) in &events {
        assert!(copies.iter().all(|c| c == &copies[0]), "copies of {id} differ");
        let e: schema::Event = serde_json::from_slice(&copies[0]).unwrap();
        if e.rule.is_some() {
            got_events.push(id.clone());
        }
    }
    let mut want_events: Vec<String> = hits
        .iter()
        .map(|h| format!("cam/{}/{}/{}/{}", h.rule, h.kind, h.object_id.as_deref().unwrap_or(&h.class), h.seq))
        .collect();
    want_events.sort();
    assert_eq!(got_events, want_events);

    // The same, as a user reads them.
    let args = ["counts", "--brokers", &listen, "--from", "2023-11-14T22:00:00Z", "--to", "2023-11-14T23:00:00Z"];
    let (code, out, err) = vigil(&[&args[..], &["--json"]].concat());
    assert_eq!(code, 0, "{err}");
    let rows: Vec<schema::Count> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), want_counts.len());
    assert_eq!(rows.iter().map(|c| c.crossings_right_to_left).sum::<u64>(), PEOPLE);
    let (code, out, err) = vigil(&args);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2023-11-14T22:14:00Z cam        gate"), "{out}");
    let (code, out, err) = vigil(&["events", "--brokers", &listen, "--rule", "gate", "--json"]);
    assert_eq!(code, 0, "{err}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(list.len(), PEOPLE as usize);
    assert!(list.iter().all(|e| e["kind"] == "line-crossed" && e["rule"]["direction"] == "right-to-left"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
