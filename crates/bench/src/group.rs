//! `vigil-bench group`: the detector scaled out through its consumer group.
//! The same backlog of H.264 frames (one camera per partition of
//! `vigil.frames`, every frame analysed) is run through 1 detector, then
//! through 2 detectors in one group, in the same run on the same broker:
//! frames/s of each member and together, and the ratio of 2 to 1.
//!
//! Each member is the real detector on the stage runtime (`detect::Detector`
//! under `stage::run`), a group member of its own with its own consumer,
//! producer and model; the two of a run share this process (each on its
//! own thread, as `vigil up` runs roles) rather than being two processes,
//! which changes nothing the group sees. Each run has its own group,
//! output topic and checkpoints, and starts every partition at its
//! beginning.

use anyhow::{Context, Result, bail};
use bus::{KafkaConfig, Metrics, TopicSpec};
use std::time::{Duration, Instant};
use vigil::config::Settings;

#[derive(clap::Args, Debug)]
pub struct GroupBenchArgs {
    /// Cameras, one per partition of `vigil.frames` (at most its partitions).
    #[arg(long, default_value_t = 4)]
    pub cameras: i32,
    /// Frames per camera (10 fps H.264, 640x360), every one analysed.
    #[arg(long, default_value_t = 60)]
    pub frames: usize,
    /// Group sizes to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub members: Vec<usize>,
}

pub async fn group(mut s: Settings, a: GroupBenchArgs) -> Result<()> {
    if a.cameras < 1 || a.frames < 10 || a.members.is_empty() || a.members.contains(&0) {
        bail!("--cameras, --frames (>= 10) and --members (each >= 1) must be positive");
    }
    let dir = std::env::temp_dir().join(format!("vigil-bench-group-{}", std::process::id()));
    let _broker = crate::ingest_path::start_broker(&mut s, &dir).await?;
    let kafka = s.kafka.clone();
    for w in kafka.ensure_topics(&s.plan).await? {
        tracing::warn!("{w}");
    }
    let frames_topic = s.plan.iter().find(|t| t.name == bus::topics::FRAMES).cloned().context("frames topic")?;
    let partitions = kafka.partition_counts(&[frames_topic.name.to_string()])?[frames_topic.name];
    if a.cameras > partitions {
        bail!("--cameras {}: {} has {partitions} partitions", a.cameras, frames_topic.name);
    }
    let frames_topic = TopicSpec { partitions, ..frames_topic };

    let clip = dir.join("clip.h264");
    std::fs::create_dir_all(&dir)?;
    crate::detection::prepare_clip(None, a.frames, (640, 360), &clip)?;
    let clip = crate::detection::access_units(&std::fs::read(&clip)?);
    let total = preload(&kafka, &clip, a.cameras).await?;
    println!(
        "vigil-bench group: {} cameras x {} H.264 frames (640x360) on {} partitions of {}, every frame analysed, model {}",
        a.cameras,
        clip.len(),
        partitions,
        frames_topic.name,
        s.detect.model.path.display()
    );

    let mut base: Option<f64> = None;
    println!("{:>7} {:>9} {:>12} {:>10}  per member (frames, frames/s)", "members", "seconds", "frames/s", "vs 1");
    for (run, &n) in a.members.iter().enumerate() {
        let r = run_group(&s, &kafka, &frames_topic, run, n, total).await?;
        let rate = total as f64 / r.seconds;
        let ratio = base.map_or(1.0, |b| rate / b);
        base.get_or_insert(rate);
        let each: Vec<String> = r.analysed.iter().map(|&f| format!("{f} ({:.1}/s)", f as f64 / r.seconds)).collect();
        println!("{n:>7} {:>9.1} {rate:>12.1} {ratio:>9.2}x  {}", r.seconds, each.join(", "));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Publishes the clip once per camera, camera `benchN` to partition N,
/// with capture times 100 ms apart. Returns the frames published.
async fn preload(kafka: &KafkaConfig, clip: &[media::Frame], cameras: i32) -> Result<u64> {
    use rdkafka::producer::FutureRecord;
    let producer = kafka.producer(bus::Delivery::ExactlyOnce, 256 * 1024)?;
    let t0 = bus::now_us();
    let mut pending = Vec::new();
    for p in 0..cameras {
        let camera = format!("bench{p}");
        for f in clip {
            let mut f = f.clone();
            f.meta.camera = camera.clone();
            f.meta.capture_us += t0;
            for rec in media::split(&f, kafka.max_message_bytes)? {
                let record = FutureRecord::to(bus::topics::FRAMES).key(&camera).partition(p).payload(&rec);
                let sent = producer.send_result(record).map_err(|(e, _)| anyhow::anyhow!("preload: {e}"))?;
                pending.push(sent);
            }
        }
    }
    for f in pending {
        f.await?.map_err(|(e, _)| anyhow::anyhow!("preload: {e}"))?;
    }
    Ok(clip.len() as u64 * cameras as u64)
}

struct GroupRun {
    seconds: f64,
    /// Frames each member analysed.
    analysed: Vec<u64>,
}

/// `members` detectors in a group of their own until all `total` results
/// are on their output topic.
async fn run_group(
    s: &Settings,
    kafka: &KafkaConfig,
    frames: &TopicSpec,
    run: usize,
    members: usize,
    total: u64,
) -> Result<GroupRun> {
    let output = format!("vigil.detections.bench-group-{run}");
    let out_spec = s.plan.iter().find(|t| t.name == bus::topics::DETECTIONS).cloned().context("detections topic")?;
    let out_spec = TopicSpec { name: Box::leak(output.clone().into_boxed_str()), ..out_spec };
    kafka.ensure_topics(std::slice::from_ref(&out_spec)).await?;
    let mut cfg = s.detect.clone();
    cfg.output_topic = output.clone();
    // Capture times are 100 ms apart: every frame is in a bucket of its own.
    cfg.sampling = detect::Sampling::PerSecond(10.0);
    cfg.checkpoint_interval = Duration::from_secs(1);
    cfg.transactions = false;
    let model_id = detect::model_id(&cfg.model.path)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut registries = Vec::new();
    let started = Instant::now();
    for m in 0..members {
        let mut cfg = cfg.clone();
        cfg.member = format!("bench-{run}-{m}");
        let mut spec = detect::stage_spec(&cfg, &model_id, frames.clone());
        spec.group = Box::leak(format!("vigil-bench-group-{run}").into_boxed_str());
        spec.start = stage::Start::Beginning;
        let metrics = Metrics::default();
        registries.push(metrics.clone());
        let m2 = metrics.clone();
        let make = move || Ok(detect::Detector::new(cfg.clone(), &m2)?);
        let mut rx = stop_rx.clone();
        let stop = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        tasks.push(tokio::spawn(stage::run(spec, kafka.clone(), metrics, make, stop)));
    }
    // Done when the output topic holds a result per frame.
    let partitions: Vec<i32> = (0..out_spec.partitions).collect();
    loop {
        let (k, t, p) = (kafka.clone(), output.clone(), partitions.clone());
        let marks = tokio::task::spawn_blocking(move || bus::range::watermarks(&k, &t, &p)).await??;
        let have: i64 = marks.values().map(|(lo, hi)| hi - lo).sum();
        if have as u64 >= total {
            break;
        }
        if let Some(t) = tasks.iter().find(|t| t.is_finished()) {
            bail!("a detector ended early ({:?})", t.id());
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("{have} of {total} results after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    for t in tasks {
        t.await??;
    }
    let analysed = registries
        .iter()
        .map(|m| {
            let text = m.render();
            let series = format!("vigil_detect_frames_analysed_total{{model=\"{model_id}\"}}");
            text.lines().find_map(|l| l.strip_prefix(&series).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0)
                as u64
        })
        .collect();
    Ok(GroupRun { seconds, analysed })
}
