//! `vigil-bench process`: records/s through the stream processor beside a
//! bare consume loop of the same topic, in the same run on the same
//! broker.
//!
//! A backlog of analysed frames (`vigil.detections` records as the
//! detector writes them: cameras with people walking through a zone and
//! across a line) is preloaded. The baseline is an rdkafka consumer that
//! reads every partition from the beginning to the end and does nothing
//! else. vigil's side is the real processor on the stage runtime
//! (`process::Processor` under `stage::run`, a group of its own, every
//! partition from its beginning): parsing, the rules, events and counts
//! published, checkpoints. Its clock runs from its first record (joining
//! the group is once, not throughput) until it has taken every record.

use anyhow::{Context, Result, bail};
use bus::{KafkaConfig, Metrics, TopicSpec};
use std::time::{Duration, Instant};
use vigil::config::Settings;

#[derive(clap::Args, Debug)]
pub struct ProcessBenchArgs {
    /// Cameras (spread over the topic's partitions).
    #[arg(long, default_value_t = 16)]
    pub cameras: u32,
    /// Analysed frames per camera (2 a second of capture time).
    #[arg(long, default_value_t = 10000)]
    pub frames: u64,
}

pub async fn process(mut s: Settings, a: ProcessBenchArgs) -> Result<()> {
    if a.cameras == 0 || a.frames < 100 {
        bail!("--cameras must be positive and --frames at least 100");
    }
    let dir = std::env::temp_dir().join(format!("vigil-bench-process-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _broker = crate::ingest_path::start_broker(&mut s, &dir).await?;
    let kafka = s.kafka.clone();
    for w in kafka.ensure_topics(&s.plan).await? {
        tracing::warn!("{w}");
    }
    let spec = s.plan.iter().find(|t| t.name == bus::topics::DETECTIONS).cloned().context("detections topic")?;
    let partitions = kafka.partition_counts(&[spec.name.to_string()])?[spec.name];
    let spec = TopicSpec { partitions, ..spec };
    let (total, bytes) = preload(&kafka, a.cameras, a.frames).await?;
    println!(
        "vigil-bench process: {} records ({:.1} MB) of {} cameras on {partitions} partitions of {}, a zone and a line per camera",
        total,
        bytes as f64 / 1e6,
        a.cameras,
        spec.name
    );

    let bare = bare_consume(&kafka, &spec, total).await?;
    println!("  bare consume loop:  {bare:.2} s, {:.0} records/s", total as f64 / bare);
    let ours = processor(&kafka, &spec, a.cameras, total).await?;
    println!(
        "  vigil process:      {ours:.2} s, {:.0} records/s — {:.2} of the bare loop (goal ≥ 0.9)",
        total as f64 / ours,
        bare / ours
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Frame `seq` of camera `c`: a person every 20 s walks across the zone
/// (x 100..200) and the line (x 300), 10 px a frame, as in the tests.
fn frame(c: u32, seq: u64) -> schema::Detections {
    let camera = format!("bench{c}");
    let objects = (0..=seq / 40)
        .filter_map(|k| {
            let step = seq.checked_sub(40 * k).filter(|s| *s <= 30)?;
            let x = 50.0 + 10.0 * step as f32;
            Some(schema::Object {
                object_id: Some(format!("{camera}/{}/0", 40 * k)),
                class: "person".into(),
                class_id: 0,
                score: 0.9,
                bbox: [x - 10.0, 110.0, x + 10.0, 150.0],
            })
        })
        .collect();
    schema::Detections {
        id: schema::record_id(&camera, seq, "m"),
        camera,
        seq,
        capture_us: 1_700_000_040_000_000 + seq as i64 * 500_000,
        model: "m".into(),
        source: schema::SourceFrame { topic: "vigil.frames".into(), partition: 0, offset: seq as i64 },
        width: 640,
        height: 360,
        objects,
        motion: None,
    }
}

/// Publishes every camera's frames: (records, bytes).
async fn preload(kafka: &KafkaConfig, cameras: u32, frames: u64) -> Result<(u64, u64)> {
    use rdkafka::producer::FutureRecord;
    let producer = kafka.producer(bus::Delivery::ExactlyOnce, 256 * 1024)?;
    let mut inflight = bus::produce::InFlight::new();
    let (mut n, mut bytes) = (0u64, 0u64);
    for seq in 0..frames {
        for c in 0..cameras {
            let d = frame(c, seq);
            let payload = serde_json::to_vec(&d)?;
            bytes += payload.len() as u64;
            let record = FutureRecord::to(bus::topics::DETECTIONS).key(&d.camera).payload(&payload);
            let delivery = inflight.send(&producer, record, |_, acked| drop(acked)).await?;
            inflight.track(n, delivery);
            n += 1;
            while inflight.len() >= 10_000 {
                if let Some((_, acked)) = inflight.next().await {
                    acked.map_err(|e| anyhow::anyhow!("preload: {e}"))?;
                }
            }
        }
    }
    while let Some((_, acked)) = inflight.next().await {
        acked.map_err(|e| anyhow::anyhow!("preload: {e}"))?;
    }
    Ok((n, bytes))
}

/// An rdkafka consumer over every partition from its beginning until it
/// has `total` records: the seconds it took.
async fn bare_consume(kafka: &KafkaConfig, spec: &TopicSpec, total: u64) -> Result<f64> {
    let (kafka, spec) = (kafka.clone(), spec.clone());
    tokio::task::spawn_blocking(move || -> Result<f64> {
        use rdkafka::consumer::Consumer;
        let consumer = kafka.base_consumer(spec.delivery, "vigil-bench-bare")?;
        let mut list = rdkafka::TopicPartitionList::new();
        for p in 0..spec.partitions {
            list.add_partition_offset(spec.name, p, rdkafka::Offset::Beginning)?;
        }
        consumer.assign(&list)?;
        let started = Instant::now();
        let mut n = 0u64;
        while n < total {
            match consumer.poll(Duration::from_secs(5)) {
                Some(Ok(_)) => n += 1,
                Some(Err(e)) => bail!("bare consumer: {e}"),
                None if started.elapsed() > Duration::from_secs(600) => bail!("bare consumer: {n} of {total} records"),
                None => {}
            }
        }
        Ok(started.elapsed().as_secs_f64())
    })
    .await?
}

/// The processor on the runtime, a group of its own from the beginning,
/// until it has taken `total` records: the seconds it took.
async fn processor(kafka: &KafkaConfig, spec: &TopicSpec, cameras: u32, total: u64) -> Result<f64> {
    let mut rules = std::collections::BTreeMap::new();
    for c in 0..cameras {
        let mut r = process::Rules::default();
        let zone = process::RuleSpec {
            camera: format!("bench{c}"),
            name: "yard".into(),
            points: vec![[100.0, 100.0], [200.0, 100.0], [200.0, 200.0], [100.0, 200.0]],
            ..Default::default()
        };
        r.add_zone(&zone).map_err(anyhow::Error::msg)?;
        let line = process::RuleSpec {
            camera: format!("bench{c}"),
            name: "gate".into(),
            start: Some([300.0, 0.0]),
            end: Some([300.0, 360.0]),
            ..Default::default()
        };
        r.add_line(&line).map_err(anyhow::Error::msg)?;
        rules.insert(format!("bench{c}"), r);
    }
    let cfg = process::ProcessConfig {
        rules,
        lateness: Duration::from_secs(5),
        checkpoint_interval: Duration::from_secs(2),
        transactions: false,
        member: "bench".into(),
    };
    let mut stage_spec = process::stage_spec(&cfg, spec.clone());
    stage_spec.group = "vigil-bench-process";
    stage_spec.start = stage::Start::Beginning;
    let metrics = Metrics::default();
    let m = metrics.clone();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let stop = async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    };
    let started = Instant::now();
    let task = tokio::spawn(stage::run(
        stage_spec,
        kafka.clone(),
        metrics.clone(),
        move || Ok(process::Processor::new(cfg.clone(), None, &m)),
        stop,
    ));
    // Its clock starts at its first record: joining the group (a second
    // or so, once) is not throughput; the bare loop joins none.
    let mut first: Option<Instant> = None;
    loop {
        let taken = metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("vigil_process_frames_total").and_then(|v| v.trim().parse::<f64>().ok()))
            .unwrap_or(0.0) as u64;
        if taken > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if taken >= total {
            break;
        }
        if task.is_finished() {
            bail!("the processor ended early after {taken} of {total} records");
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the processor took {taken} of {total} records in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = first.unwrap_or(started).elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    task.await??;
    Ok(seconds)
}
