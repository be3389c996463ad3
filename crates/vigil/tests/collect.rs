//! Whole-video jobs end to end: `vigil submit` → vigil.video.chunks →
//! `vigil collect` → vigil.video.results and vigil.video.jobs.
//!
//! - Three short videos (H.264 in MP4, MPEG-4 in MKV, MJPEG in AVI; a
//!   photo drifting along a known path) analysed by one collector, then by
//!   two collectors of one group, the first to start analysing SIGKILLed
//!   mid-video: every job ends done once, the other collector redoes the
//!   killed one's video, every record published again is byte-identical,
//!   and what consumers see (deduplicated by id) is exactly the
//!   one-collector run's, objects and their ids included. The memory
//!   budget is set so that some videos spill to disk.
//! - Bad input: not a video, a truncated video, a file over the size
//!   limit, a chunk with a wrong checksum, a chunk that never arrives, a
//!   garbage record: each a failed job naming the reason (the garbage
//!   record, which names no video, is counted and skipped), and the
//!   collector goes on with the next good video.
//! - Videos gathered at once are bounded (`[jobs] max_receiving`): one
//!   beyond fails at its first chunk with that reason, the others go on.
//!
//! Needs the model (scripts/fetch-model, run by scripts/setup).

mod common;

use common::*;
use rdkafka::Message;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

fn broker(dir: &Path, name: &str) -> (Vigil, String) {
    let addr = free_port();
    let listen = addr.to_string();
    let data = dir.join(name);
    let b = Vigil::start(
        name,
        &["broker", "--listen", &listen, "--data-dir", data.to_str().unwrap(), "--metrics-listen", "off"],
        dir,
    );
    wait_port(addr, Duration::from_secs(30));
    (b, listen)
}

fn collector(dir: &Path, name: &str, brokers: &str, config: &Path, metrics: &str) -> Vigil {
    let data = dir.join(name);
    Vigil::start(
        name,
        &[
            "collect",
            "--brokers",
            brokers,
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--metrics-listen",
            metrics,
        ],
        dir,
    )
}

fn submit(brokers: &str, files: &[&Path]) -> Vec<String> {
    let mut args = vec!["submit", "--brokers", brokers, "--metrics-listen", "off", "--chunk-bytes", "16000"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let (code, out, err) = vigil(&args);
    assert_eq!(code, 0, "{err}");
    out.lines().map(str::to_string).collect()
}

fn jobs(brokers: &str) -> BTreeMap<String, Value> {
    let (code, out, err) = vigil(&["jobs", "--brokers", brokers, "--metrics-listen", "off", "--json"]);
    assert_eq!(code, 0, "{err}");
    let list: Vec<Value> = serde_json::from_str(&out).unwrap();
    list.into_iter().map(|j| (j["id"].as_str().unwrap().to_string(), j)).collect()
}

/// Waits until every job of `ids` has ended; their final records.
fn ended(brokers: &str, ids: &[String], within: Duration) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + within;
    loop {
        let all = jobs(brokers);
        let done: BTreeMap<String, Value> = all
            .into_iter()
            .filter(|(id, j)| ids.contains(id) && (j["state"] == "done" || j["state"] == "failed"))
            .collect();
        if done.len() == ids.len() {
            return done;
        }
        assert!(Instant::now() < deadline, "jobs not ended after {within:?}: {done:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every record of vigil.video.results, all copies, by id.
fn results(brokers: &str) -> BTreeMap<String, Vec<Vec<u8>>> {
    let kafka = bus::KafkaConfig::new(brokers.to_string());
    let range =
        bus::range::Range::all(bus::topics::VIDEO_RESULTS, bus::Delivery::ExactlyOnce, 4, Duration::from_secs(30));
    let mut out: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    bus::range::read(&kafka, &range, |m| {
        let id = bus::reader::record_id(m).expect("every result has an id").to_string();
        out.entry(id).or_default().push(m.payload().unwrap().to_vec());
    })
    .unwrap();
    out
}

/// A record as compared across runs: a summary's processing time is the
/// one thing that differs.
fn comparable(payload: &[u8]) -> Value {
    let mut v: Value = serde_json::from_slice(payload).unwrap();
    if v["kind"] == "summary" {
        v["processing_ms"] = 0.into();
    }
    v
}

fn config(dir: &Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("vigil.toml");
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn a_collector_killed_mid_video_changes_nothing_consumers_see() {
    model_installed();
    let dir = temp_dir("collect");
    let videos = [
        moving_dog(&dir, 6, &["-c:v", "libx264", "-pix_fmt", "yuv420p"], "dog.mp4"),
        moving_dog(&dir, 5, &["-c:v", "mpeg4", "-q:v", "4"], "dog.mkv"),
        moving_dog(&dir, 4, &["-c:v", "mjpeg", "-q:v", "6"], "dog.avi"),
    ];
    let files: Vec<&Path> = videos.iter().map(|p| p.as_path()).collect();
    // One video at a time, so the kill lands mid-video with others
    // waiting; a budget that holds one small video in memory, not two.
    let largest = videos.iter().map(|v| std::fs::metadata(v).unwrap().len()).max().unwrap();
    let cfg = config(&dir, &format!("[jobs]\nmax_videos = 1\nmemory_bytes = {}\n", largest + 1000));

    // One collector: the reference.
    let (_b1, one) = broker(&dir, "broker-one");
    let _c = collector(&dir, "alone", &one, &cfg, "off");
    let ids = submit(&one, &files);
    assert_eq!(ids.len(), 3);
    for (id, j) in ended(&one, &ids, Duration::from_secs(180)) {
        assert_eq!(j["state"], "done", "{id}: {j}");
    }
    let reference = results(&one);

    // Two collectors of one group; the first to analyse dies mid-video.
    let (_b2, two) = broker(&dir, "broker-two");
    let mut c1 = collector(&dir, "c1", &two, &cfg, "off");
    let mut c2 = collector(&dir, "c2", &two, &cfg, "off");
    std::thread::sleep(Duration::from_secs(3)); // both joined
    assert_eq!(submit(&two, &files), ids, "the same content, the same ids");
    let log = |name: &str| std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (victim, video) = loop {
        let found = ["c1", "c2"].iter().find_map(|n| {
            let l = log(n);
            let v = l.lines().find(|x| x.contains("analysing video="))?;
            let id = v.split("video=").nth(1)?.split_whitespace().next()?.to_string();
            Some((*n, id))
        });
        if let Some(f) = found {
            break f;
        }
        assert!(Instant::now() < deadline, "no collector started analysing");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(700));
    let (killed, survivor) = if victim == "c1" { (&mut c1, "c2") } else { (&mut c2, "c1") };
    killed.kill();
    assert!(
        !log(victim).contains(&format!("job done video=\"{video}\"")),
        "{victim} finished {video} before the kill: make the videos longer"
    );
    for (id, j) in ended(&two, &ids, Duration::from_secs(180)) {
        assert_eq!(j["state"], "done", "{id}: {j}");
    }
    assert!(
        log(survivor).contains(&format!("analysing video={video}")),
        "{survivor} took over {video}:\n{}",
        log(survivor)
    );

    let killed_run = results(&two);
    let copies: usize = killed_run.values().map(|c| c.len() - 1).sum();
    assert!(copies > 0, "the killed collector's video was published twice, in part");
    for (id, all) in &killed_run {
        for c in all {
            assert_eq!(comparable(c), comparable(&all[0]), "{id}: a copy differs");
            if !id.ends_with("/summary") {
                assert_eq!(c, &all[0], "{id}: a copy is not byte-identical");
            }
        }
    }
    let ids_one: BTreeSet<&String> = reference.keys().collect();
    let ids_two: BTreeSet<&String> = killed_run.keys().collect();
    assert_eq!(ids_one, ids_two, "the same records, by id");
    for (id, all) in &reference {
        assert_eq!(all.len(), 1, "{id}: one collector, no restart, one copy");
        assert_eq!(comparable(&all[0]), comparable(&killed_run[id][0]), "{id} differs from the one-collector run");
    }

    // Every frame once, and the dog keeps one id through its video.
    for (id, name, frames) in [(&ids[0], "dog.mp4", 60), (&ids[1], "dog.mkv", 50), (&ids[2], "dog.avi", 40)] {
        let (code, out, err) = vigil(&["results", "--brokers", &two, "--metrics-listen", "off", "--json", id]);
        assert_eq!(code, 0, "{err}");
        let r: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(r["summary"]["name"], name);
        let numbers: Vec<u64> = r["frames"].as_array().unwrap().iter().map(|f| f["frame"].as_u64().unwrap()).collect();
        assert_eq!(numbers, (0..frames).collect::<Vec<u64>>(), "{name}: every frame once, in order");
        let dogs: Vec<&Value> = r["objects"].as_array().unwrap().iter().filter(|o| o["class"] == "dog").collect();
        assert_eq!(dogs.len(), 1, "{name}: one dog, one id: {dogs:?}");
        assert!(dogs[0]["object_id"].as_str().unwrap().starts_with(&format!("{id}/")), "{dogs:?}");
        assert!(dogs[0]["last_frame"].as_u64().unwrap() + 1 >= frames - 1, "{name}: tracked to the end: {dogs:?}");
        assert_eq!(r["summary"]["frames_analysed"], frames);
    }
    let (code, mot, _) = vigil(&["results", "--brokers", &two, "--metrics-listen", "off", "--mot", &ids[0]]);
    assert_eq!(code, 0);
    let first: Vec<&str> = mot.lines().next().unwrap().split(',').collect();
    assert_eq!(first.len(), 10, "MOTChallenge: {mot}");

    // Submitting again is recognised: nothing is sent or analysed twice.
    let (code, _, err) = vigil(&["submit", "--brokers", &two, "--metrics-listen", "off", files[0].to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("submitted before"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_fails_its_job_with_the_reason() {
    model_installed();
    let dir = temp_dir("collect-bad");
    let (_b, brokers) = broker(&dir, "broker");
    let cfg = config(&dir, "[jobs]\nmax_file_bytes = 300000\nchunk_timeout_s = 3\n");
    let metrics = free_port();
    let _c = collector(&dir, "collector", &brokers, &cfg, &metrics.to_string());

    let good = moving_dog(&dir, 2, &["-c:v", "libx264", "-pix_fmt", "yuv420p"], "good.mp4");
    let bytes = std::fs::read(&good).unwrap();
    let noise = |n: usize, seed: u32| -> Vec<u8> {
        (0..n as u32).map(|i| ((i ^ seed).wrapping_mul(2654435761) >> 13) as u8).collect()
    };
    let write = |name: &str, b: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    let not_video = write("notes.mp4", &noise(40_000, 1));
    // An MP4 cut in half: its index (written last) is gone.
    let truncated = write("cut.mp4", &bytes[..bytes.len() / 2]);
    let too_big = write("huge.mkv", &noise(400_000, 2));
    let ids = submit(&brokers, &[&not_video, &truncated, &too_big]);

    // Chunks made by hand: one with a wrong checksum, one video missing a
    // chunk, and a record that is no chunk at all.
    use rdkafka::producer::{BaseRecord, Producer};
    let kafka = bus::KafkaConfig::new(brokers.clone());
    let producer = camera_producer(&kafka);
    let send = |key: &str, payload: &[u8]| {
        producer.send(BaseRecord::to(bus::topics::VIDEO_CHUNKS).key(key).payload(payload)).unwrap();
    };
    let chunks_of = |path: &Path, id: &str| -> Vec<jobs::Chunk> {
        let summary = jobs::FileSummary::of(path).unwrap();
        jobs::chunk::Chunks::open(path, &summary, id, 10_000, bus::now_us()).unwrap().map(|c| c.unwrap()).collect()
    };
    let corrupt = write("corrupt.mp4", &noise(30_000, 3));
    for (i, c) in chunks_of(&corrupt, "corrupt-video").into_iter().enumerate() {
        let mut record = c.encode();
        if i == 1 {
            let last = record.len() - 1;
            record[last] ^= 0xff; // the payload no longer matches its SHA-256
        }
        send("corrupt-video", &record);
    }
    for c in chunks_of(&good, "gap-video").into_iter().filter(|c| c.meta.index != 1) {
        send("gap-video", &c.encode());
    }
    send("gap-video", b"not a chunk at all");
    producer.flush(Duration::from_secs(10)).unwrap();
    // A good video after all of it is still analysed.
    let after = submit(&brokers, &[&good]);

    let mut all = ids.clone();
    all.extend(["corrupt-video".to_string(), "gap-video".to_string()]);
    all.extend(after.clone());
    let states = ended(&brokers, &all, Duration::from_secs(120));
    let reason = |id: &str| {
        let j = &states[id];
        assert_eq!(j["state"], "failed", "{id}: {j}");
        j["error"].as_str().unwrap().to_string()
    };
    assert!(reason(&ids[0]).contains("not a video"), "{}", reason(&ids[0]));
    assert!(reason(&ids[1]).contains("moov atom not found"), "{}", reason(&ids[1]));
    assert!(reason(&ids[2]).contains("max_file_bytes"), "{}", reason(&ids[2]));
    assert!(reason("corrupt-video").contains("chunk 1: checksum mismatch"), "{}", reason("corrupt-video"));
    let gap = reason("gap-video");
    assert!(gap.contains("chunks 1 of") && gap.contains("never arrived"), "{gap}");
    assert_eq!(states[&after[0]]["state"], "done", "{:?}", states[&after[0]]);
    assert_eq!(states[&ids[0]]["name"], "notes.mp4");
    let m = http_get(metrics, "/metrics");
    assert_eq!(metric(&m, "vigil_jobs_garbage_records_total"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "vigil_jobs_ended_total{state=\"failed\"}"), Some(5.0), "{m}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn videos_gathered_at_once_are_bounded() {
    model_installed();
    let dir = temp_dir("collect-bound");
    let (_b, brokers) = broker(&dir, "broker");
    let cfg = config(&dir, "[jobs]\nmax_receiving = 2\nchunk_timeout_s = 3\n");
    let _c = collector(&dir, "collector", &brokers, &cfg, "off");

    // Three uploads at once, none finished: whatever the order the
    // collector reads them in, two are gathered and the third is refused.
    use rdkafka::producer::{BaseRecord, Producer};
    let kafka = bus::KafkaConfig::new(brokers.clone());
    let producer = camera_producer(&kafka);
    let ids: Vec<String> = (0..3).map(|i| format!("upload-{i}")).collect();
    for id in &ids {
        let p = dir.join(format!("{id}.mp4"));
        std::fs::write(&p, id.repeat(10_000)).unwrap();
        let summary = jobs::FileSummary::of(&p).unwrap();
        let chunks = jobs::chunk::Chunks::open(&p, &summary, id, 20_000, bus::now_us()).unwrap();
        for c in chunks.map(|c| c.unwrap()).filter(|c| c.meta.index + 1 < c.meta.count) {
            producer.send(BaseRecord::to(bus::topics::VIDEO_CHUNKS).key(id).payload(&c.encode())).unwrap();
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let states = ended(&brokers, &ids, Duration::from_secs(60));
    let reasons: Vec<&str> = ids.iter().map(|id| states[id]["error"].as_str().unwrap()).collect();
    let refused = reasons.iter().filter(|r| r.contains("max_receiving")).count();
    let late = reasons.iter().filter(|r| r.contains("never arrived")).count();
    assert_eq!((refused, late), (1, 2), "{reasons:?}");

    // The bound frees as videos end: a video sent now is analysed.
    let good = moving_dog(&dir, 2, &["-c:v", "libx264", "-pix_fmt", "yuv420p"], "good.mp4");
    let after = submit(&brokers, &[&good]);
    let states = ended(&brokers, &after, Duration::from_secs(60));
    assert_eq!(states[&after[0]]["state"], "done", "{:?}", states[&after[0]]);
    let _ = std::fs::remove_dir_all(&dir);
}
