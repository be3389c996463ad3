//! The backbone against the embedded broker, in-process: cameras publish,
//! frames come back complete and in order; chunking; garbage; retention.

mod common;

use bus::topics::{self, TopicSpec};
use common::*;
use ingest::source::SourceSpec;
use ingest::{CameraSpec, IngestConfig};
use media::{Codec, Frame, FrameMeta, Stream};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::time::Duration;

fn spec(name: &'static str) -> TopicSpec {
    topics::plan().into_iter().find(|t| t.name == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_publish_and_frames_come_back_complete_and_in_order() {
    let dir = temp_dir("roundtrip");
    let b = embedded(&dir.join("broker")).await;
    let k = kafka(b.addr());
    let plan = topics::plan();
    k.ensure_topics(&plan).await.unwrap();
    let cam = |id: &str, src: &str, sub: Option<&str>| CameraSpec {
        id: id.into(),
        main: SourceSpec::parse(src).unwrap(),
        sub: sub.map(|s| SourceSpec::parse(s).unwrap()),
    };
    let cameras = vec![
        cam("a", "synthetic:width=160,height=96,fps=25,gop=10", Some("synthetic:width=96,height=64,fps=25")),
        cam("b", "synthetic:width=160,height=96,fps=25,codec=mjpeg", None),
        cam("c", "synthetic:width=320,height=180,fps=20", None),
    ];
    let ack_log = dir.join("acks.log");
    let cfg = IngestConfig {
        data_dir: dir.join("ingest"),
        cameras,
        buffer_bytes: 8 << 20,
        ack_log: Some(ack_log.clone()),
        drain: Duration::from_secs(10),
    };
    let metrics = bus::Metrics::default();
    ingest::run(cfg, k.clone(), plan, metrics.clone(), tokio::time::sleep(Duration::from_secs(3))).await.unwrap();

    let acked = acked(&ack_log);
    let (frames, _) = read_all(&k, &spec(topics::FRAMES), 4, Duration::from_secs(5)).await;
    let mut per_camera: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for d in &frames {
        per_camera.entry(d.frame.meta.camera.clone()).or_default().push(d.frame.meta.seq);
    }
    for (camera, codec) in [("a", Codec::H264), ("b", Codec::Mjpeg), ("c", Codec::H264)] {
        let got = &per_camera[camera];
        let want: Vec<u64> = acked.iter().filter(|(c, s, _)| c == camera && s == "main").map(|(_, _, q)| *q).collect();
        assert!(want.len() >= 30, "camera {camera}: only {} frames acknowledged", want.len());
        // Complete, no duplicates, in order: exactly the acknowledged seqs.
        assert_eq!(got, &want, "camera {camera}");
        assert_eq!(got, &(0..got.len() as u64).collect::<Vec<_>>(), "camera {camera}: seq from 0 without gaps");
        let first = frames.iter().find(|d| d.frame.meta.camera == camera).unwrap();
        assert!(first.frame.meta.key && first.frame.meta.discontinuity);
        assert!(frames.iter().filter(|d| d.frame.meta.camera == camera).all(|d| d.frame.meta.codec == codec));
    }
    // The sub stream went to the live topic.
    let (live, _) = read_all(&k, &spec(topics::LIVE), 4, Duration::from_secs(3)).await;
    assert!(live.iter().all(|d| d.frame.meta.camera == "a" && d.frame.meta.stream == Stream::Sub));
    assert!(live.len() >= 30, "live frames: {}", live.len());
    let text = metrics.render();
    assert!(text.contains("vigil_ingest_frames_produced_total{camera=\"a\",topic=\"vigil.frames\"}"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_large_frames_reassemble_byte_exact() {
    let dir = temp_dir("chunks");
    let b = embedded(&dir.join("broker")).await;
    let mut k = kafka(b.addr());
    k.max_message_bytes = 100_000;
    let topic = spec(topics::FRAMES);
    k.ensure_topics(std::slice::from_ref(&topic)).await.unwrap();
    let metrics = bus::Metrics::default();
    let mut sent = Vec::new();
    let mut tasks = Vec::new();
    let producer = ingest::publish::SharedProducer::new(&k, topic.delivery, 32 << 10).unwrap();
    for cam in ["x", "y"] {
        let seq = ingest::seq::SeqCounter::open(&dir.join("seq"), cam).unwrap();
        let (mut tx, rx) = ingest::buffer::buffer(64 << 20, seq, &metrics, cam, topic.name);
        let p = ingest::publish::Publisher::new(producer.clone(), &topic, cam, None, None, &metrics);
        tasks.push(tokio::spawn(p.run(rx, Duration::from_secs(20))));
        // Sizes around the chunk boundaries, up to 2.5 MB (26 chunks).
        for (i, len) in [1, 99_000, 100_000, 250_000, 2_500_000, 0, 777_777].into_iter().enumerate() {
            let payload: Vec<u8> = (0..len).map(|j| (j * 7 + i * 13 + cam.len()) as u8).collect();
            let meta = FrameMeta {
                camera: cam.into(),
                stream: Stream::Main,
                codec: Codec::H265,
                seq: 0,
                capture_us: 1_000 + i as i64,
                pts_90k: 0,
                key: true,
                discontinuity: false,
            };
            let seq = tx.offer(Frame { meta, payload: payload.clone() }).unwrap();
            sent.push((cam.to_string(), seq, payload));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (got, m) = read_all(&k, &topic, 4, Duration::from_secs(5)).await;
    let ids: Vec<_> = got
        .iter()
        .map(|d| (d.frame.meta.camera.clone(), d.frame.meta.seq, d.frame.payload.len(), d.partition))
        .collect();
    assert_eq!(got.len(), sent.len(), "{ids:?}");
    for (cam, seq, payload) in &sent {
        let d = got.iter().find(|d| &d.frame.meta.camera == cam && d.frame.meta.seq == *seq).expect("frame arrived");
        assert!(d.frame.payload == *payload, "{cam}/{seq}: {} bytes differ", payload.len());
    }
    assert!(!m.render().contains("vigil_consumer_incomplete_frames_total{topic=\"vigil.frames\"} 1"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_records_are_counted_and_skipped() {
    let dir = temp_dir("garbage");
    let b = embedded(&dir.join("broker")).await;
    let k = kafka(b.addr());
    let topic = spec(topics::FRAMES);
    k.ensure_topics(std::slice::from_ref(&topic)).await.unwrap();
    let producer: FutureProducer = k.producer(bus::Delivery::ExactlyOnce, 1024).unwrap();
    let good = |seq| {
        let f = Frame {
            meta: FrameMeta {
                camera: "g".into(),
                stream: Stream::Main,
                codec: Codec::Mjpeg,
                seq,
                capture_us: 5,
                pts_90k: 0,
                key: true,
                discontinuity: false,
            },
            payload: vec![1, 2, 3],
        };
        media::split(&f, 1000).unwrap().remove(0)
    };
    let mut truncated = good(99);
    truncated.truncate(20);
    let mut future_version = good(98);
    future_version[3] = 42;
    let garbage: Vec<Vec<u8>> =
        vec![b"hello".to_vec(), vec![], vec![0xff; 5000], truncated, future_version, br#"{"camera":"g"}"#.to_vec()];
    for (seq, g) in (0u64..).zip(&garbage) {
        for payload in [good(seq), g.clone()] {
            producer
                .send(FutureRecord::to(topic.name).key("g").payload(&payload), Duration::from_secs(5))
                .await
                .unwrap();
        }
    }
    let (got, m) = read_all(&k, &topic, 4, Duration::from_secs(4)).await;
    assert_eq!(got.iter().map(|d| d.frame.meta.seq).collect::<Vec<_>>(), (0..garbage.len() as u64).collect::<Vec<_>>());
    let text = m.render();
    assert!(
        text.contains(&format!("vigil_consumer_garbage_records_total{{topic=\"vigil.frames\"}} {}", garbage.len())),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_enforces_retention() {
    // The broker must not grow without bound: records past a topic's
    // retention are deleted by the embedded broker's maintenance pass.
    let dir = temp_dir("retention");
    let b = embedded(&dir.join("broker")).await; // maintenance every second
    let k = kafka(b.addr());
    let mut topic = spec(topics::LIVE);
    topic.retention_ms = Some(1000);
    k.ensure_topics(std::slice::from_ref(&topic)).await.unwrap();
    let producer: FutureProducer = k.producer(bus::Delivery::AtLeastOnce, 1024).unwrap();
    for i in 0..40 {
        let payload = vec![i as u8; 10_000];
        producer
            .send(FutureRecord::to(topic.name).key(&format!("k{i}")).payload(&payload), Duration::from_secs(5))
            .await
            .unwrap();
    }
    let (name, parts) = (topic.name, topic.partitions);
    let held = move |k: &bus::KafkaConfig| {
        let c: BaseConsumer = k.consumer_config(bus::Delivery::AtMostOnce, "t").create().unwrap();
        (0..parts)
            .map(|p| c.fetch_watermarks(name, p, Duration::from_secs(5)).map(|(lo, hi)| hi - lo).unwrap())
            .sum::<i64>()
    };
    let k2 = k.clone();
    let before = tokio::task::spawn_blocking(move || held(&k2)).await.unwrap();
    assert_eq!(before, 40);
    let mut after = before;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let k2 = k.clone();
        after = tokio::task::spawn_blocking(move || held(&k2)).await.unwrap();
        if after == 0 {
            break;
        }
    }
    assert_eq!(after, 0, "records older than retention.ms are still held");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_topics_with_other_settings_are_warned_about_not_changed() {
    let dir = temp_dir("conflict");
    let b = embedded(&dir.join("broker")).await;
    let k = kafka(b.addr());
    let mut odd = spec(topics::FRAMES);
    odd.partitions = 2;
    assert!(k.ensure_topics(std::slice::from_ref(&odd)).await.unwrap().is_empty());
    let warnings = k.ensure_topics(&topics::plan()).await.unwrap();
    assert!(warnings.iter().any(|w| w.contains("vigil.frames") && w.contains("2 partitions")), "{warnings:?}");
    let names: Vec<String> = topics::names().iter().map(|s| s.to_string()).collect();
    let k2 = k.clone();
    let counts = tokio::task::spawn_blocking(move || k2.partition_counts(&names)).await.unwrap().unwrap();
    assert_eq!(counts["vigil.frames"], 2, "an existing topic must not be changed");
    assert_eq!(counts.len(), topics::plan().len(), "the missing topics were created");
    let _ = std::fs::remove_dir_all(&dir);
}
