//! Scale-out through consumer groups, with real processes on the embedded
//! broker: detectors in one group split `vigil.frames`' partitions, a
//! SIGKILLed member's partitions move to the survivor, which resumes from
//! the dead one's last checkpoints, and a member that joins mid-stream
//! takes partitions over (the survivor checkpoints before it lets them
//! go). Consumers that dedupe by id see every sampled frame of every
//! camera exactly once, and copies are byte-identical.
//!
//! Needs the model (scripts/fetch-model, run by scripts/setup).

mod common;

use bus::dedupe::Dedupe;
use common::*;
use rdkafka::Message;
use schema::Detections;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const DOG: &str = "/usr/share/darknet/data/dog.jpg";
const CAMERAS: i32 = 4;

/// JPEG frames of a dog drifting over a plain background.
fn dog_jpegs(dir: &Path) -> Vec<Vec<u8>> {
    assert!(Path::new(DOG).exists(), "{DOG} missing: run scripts/setup (Debian package darknet)");
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", "color=c=0x556655:s=640x360:r=10", "-i", DOG])
        .args(["-filter_complex", "[1:v]scale=360:270[d];[0:v][d]overlay=x='20+t*6':y=45", "-t", "4"])
        .args(["-c:v", "mjpeg", "-q:v", "5"])
        .arg(dir.join("f%03d.jpg"))
        .status()
        .unwrap();
    assert!(ok.success());
    let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.retain(|p| p.extension().is_some_and(|e| e == "jpg"));
    names.sort();
    names.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Camera `camN` publishes MJPEG frames (5 a second) to partition N of
/// `vigil.frames`, so every partition has one camera, until `stop`.
/// Returns the seconds of capture time that had frames.
fn cameras(
    kafka: bus::KafkaConfig,
    jpegs: Vec<Vec<u8>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<std::collections::BTreeSet<i64>> {
    std::thread::spawn(move || {
        use rdkafka::producer::{BaseRecord, Producer};
        let producer = camera_producer(&kafka);
        let mut seq = 0u64;
        let mut seconds = std::collections::BTreeSet::new();
        while !stop.load(Ordering::Relaxed) {
            let capture_us = bus::now_us();
            seconds.insert(capture_us / 1_000_000);
            for p in 0..CAMERAS {
                let camera = format!("cam{p}");
                let meta = media::FrameMeta {
                    camera: camera.clone(),
                    stream: media::Stream::Main,
                    codec: media::Codec::Mjpeg,
                    seq,
                    capture_us,
                    pts_90k: seq as i64 * 18_000,
                    key: true,
                    discontinuity: seq == 0,
                };
                let frame = media::Frame { meta, payload: jpegs[seq as usize % jpegs.len()].clone() };
                for rec in media::split(&frame, 900_000).unwrap() {
                    let record = BaseRecord::to(bus::topics::FRAMES).key(&camera).partition(p).payload(&rec);
                    producer.send(record).unwrap();
                }
            }
            producer.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_millis(200));
            seq += 1;
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        seconds
    })
}

/// Partitions of `vigil.frames` a detector owns, from its /metrics.
fn owned(metrics: SocketAddr) -> Option<f64> {
    let text = http_get(metrics, "/metrics");
    metric(&text, "vigil_stage_assigned_partitions{stage=\"detect\",topic=\"vigil.frames\"}")
}

/// Waits (bounded) until the detectors' metrics satisfy `want`; returns
/// how long it took.
fn wait_owned(members: &[SocketAddr], within: Duration, want: impl Fn(&[f64]) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let now: Vec<f64> = members.iter().map(|&m| owned(m).unwrap_or(-1.0)).collect();
        if want(&now) {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "partitions owned {now:?} after {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn detectors_in_one_group_split_the_cameras_and_hand_them_over_exactly() {
    let m = detect::model::ModelOptions::default();
    assert!(m.path.exists() && m.runtime.exists(), "model missing: run scripts/fetch-model");
    let dir = temp_dir("groups-detect");
    let jpegs = dog_jpegs(&dir);
    let addr = free_port();
    let listen = addr.to_string();
    let d = |s: &str| dir.join(s).to_str().unwrap().to_string();
    let cfg = dir.join("detect.toml");
    std::fs::write(&cfg, "[kafka]\n\"debug\" = \"cgrp\"\n[detect]\nsample = \"1/s\"\ncheckpoint_interval_ms = 1000\n")
        .unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let mut broker = Vigil::start(
        "broker",
        &["broker", "--listen", &listen, "--data-dir", &d("b"), "--metrics-listen", "off"],
        &dir,
    );
    wait_port(addr, Duration::from_secs(30));
    let kafka = kafka(addr);
    let detector = |name: &str| {
        let metrics = free_port();
        let m = metrics.to_string();
        #[rustfmt::skip]
        let args = ["detect", "--config", &cfg, "--brokers", &listen, "--data-dir", &d(name), "--metrics-listen", &m];
        (Vigil::start(name, &args, &dir), metrics)
    };
    let (mut a, ma) = detector("detect-a");
    let (mut b, mb) = detector("detect-b");
    // Both members own some, together all.
    let took = wait_owned(&[ma, mb], Duration::from_secs(60), |o| o[0] >= 1.0 && o[1] >= 1.0 && o[0] + o[1] == 4.0);
    eprintln!("two detectors split the 4 partitions {took:?} after starting");
    let stop = Arc::new(AtomicBool::new(false));
    let camera = cameras(kafka.clone(), jpegs, stop.clone());
    std::thread::sleep(Duration::from_secs(8));

    a.kill(); // SIGKILL: the group notices when its session times out
    let took = wait_owned(&[mb], Duration::from_secs(60), |o| o[0] == 4.0);
    eprintln!("the survivor owned all 4 partitions {:.1} s after the kill", took.as_secs_f64());
    std::thread::sleep(Duration::from_secs(6));

    // A third joins: the survivor checkpoints, lets go of some, and the
    // newcomer resumes them from those checkpoints.
    let (mut c, mc) = detector("detect-c");
    let took = wait_owned(&[mb, mc], Duration::from_secs(60), |o| o[0] >= 1.0 && o[1] >= 1.0 && o[0] + o[1] == 4.0);
    eprintln!("a third detector took partitions over {:.1} s after starting", took.as_secs_f64());
    std::thread::sleep(Duration::from_secs(8));
    stop.store(true, Ordering::Relaxed);
    let published = camera.join().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(b.stop(Duration::from_secs(30)).is_some_and(|s| s.success()), "detector b did not stop cleanly");
    assert!(c.stop(Duration::from_secs(30)).is_some_and(|s| s.success()), "detector c did not stop cleanly");

    // Every result, read committed; copies must be identical.
    let mut raw: Vec<(String, Vec<u8>)> = Vec::new();
    let range = bus::range::Range::all(bus::topics::DETECTIONS, bus::Delivery::ExactlyOnce, 4, Duration::from_secs(30));
    bus::range::read(&kafka, &range, |m| {
        let payload = m.payload().unwrap_or_default().to_vec();
        let r: Detections = serde_json::from_slice(&payload).expect("a detections record");
        raw.push((r.id, payload));
    })
    .unwrap();
    let mut first: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut dedupe = Dedupe::default();
    let mut per_camera: BTreeMap<String, Vec<Detections>> = BTreeMap::new();
    for (id, payload) in &raw {
        let seen = first.entry(id.clone()).or_insert_with(|| payload.clone());
        assert_eq!(seen, payload, "two different results for {id}");
        if dedupe.take(id) {
            let r: Detections = serde_json::from_slice(payload).unwrap();
            per_camera.entry(r.camera.clone()).or_default().push(r);
        }
    }
    eprintln!("{} s of frames published; {} results, {} copies dropped", published.len(), raw.len(), dedupe.dropped());
    assert_eq!(per_camera.len(), CAMERAS as usize, "cameras analysed: {:?}", per_camera.keys());
    for (camera, results) in &per_camera {
        // One frame a second (the sampling rule), each second once, from
        // the first analysed to the last: nothing skipped at the kill or
        // at either handover.
        let seconds: Vec<i64> = results.iter().map(|r| r.capture_us / 1_000_000).collect();
        assert!(seconds.windows(2).all(|w| w[1] > w[0]), "{camera}: out of order or twice: {seconds:?}");
        let (lo, hi) = (seconds[0], *seconds.last().unwrap());
        let missing: Vec<i64> = published.range(lo..=hi).filter(|s| !seconds.contains(s)).copied().collect();
        assert!(missing.is_empty(), "{camera}: seconds without a result {missing:?} in {lo}..={hi}");
        assert!(hi - lo >= 20, "{camera}: results span only {} s", hi - lo);
    }
    broker.stop(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
}
