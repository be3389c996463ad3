//! Cameras to Kafka.
//!
//! Per camera stream, three stages joined by a byte-bounded buffer:
//! `source` (a thread: capture/encode) → `buffer` (accepts or drops, assigns
//! `seq`) → `publish` (a task: records to the topic with its policy). The
//! main stream goes to `vigil.frames`, a sub stream to `vigil.live`.
//! `synthetic` is the demo and test camera's scene and encoders.

pub mod buffer;
/// Fuzzing entry points: for the cargo-fuzz targets (feature `fuzz`) and the bounded fuzz tests.
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod ledger;
pub mod publish;
pub mod seq;
pub mod source;
pub mod synthetic;

use bus::KafkaConfig;
use bus::metrics::Metrics;
use bus::topics::{self, TopicSpec};
use media::Stream;
use publish::{AckLog, Publisher, SharedProducer};
use source::SourceSpec;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct CameraSpec {
    pub id: String,
    pub main: SourceSpec,
    pub sub: Option<SourceSpec>,
}

#[derive(Clone, Debug)]
pub struct IngestConfig {
    pub data_dir: PathBuf,
    pub cameras: Vec<CameraSpec>,
    /// Bytes buffered per camera stream before the camera drops frames.
    pub buffer_bytes: usize,
    /// Optional log of every acknowledged frame (for crash tests).
    pub ack_log: Option<PathBuf>,
    /// How long to wait for outstanding deliveries at shutdown.
    pub drain: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error("camera {camera}: {source}")]
    Seq { camera: String, source: std::io::Error },
    #[error("ack log {path}: {source}")]
    AckLog { path: PathBuf, source: std::io::Error },
}

/// Runs every camera until `shutdown` resolves, then drains.
pub async fn run(
    cfg: IngestConfig,
    kafka: KafkaConfig,
    plan: Vec<TopicSpec>,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let ack_log = match &cfg.ack_log {
        Some(p) => Some(AckLog::open(p).map_err(|source| Error::AckLog { path: p.clone(), source })?),
        None => None,
    };
    let topic = |name: &str| plan.iter().find(|s| s.name == name).cloned().expect("topic in plan");
    let (frames, live) = (topic(topics::FRAMES), topic(topics::LIVE));
    // One producer per topic; librdkafka's queue for it holds up to one
    // camera buffer's worth per camera.
    let budget = |n: usize| (cfg.buffer_bytes / 1024 * n.max(1)).min(1 << 20);
    let frames_producer = SharedProducer::new(&kafka, frames.delivery, budget(cfg.cameras.len()))?;
    let live_producer =
        SharedProducer::new(&kafka, live.delivery, budget(cfg.cameras.iter().filter(|c| c.sub.is_some()).count()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let events = match bus::events::Events::new(&kafka) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(error = %e, "no camera up/down events");
            None
        }
    };
    let states =
        bus::cameras::CameraStates::new(&kafka).map_err(|e| tracing::warn!(error = %e, "no camera states")).ok();
    let ctx = source::Context { stop: stop.clone(), metrics: metrics.clone(), events, states };
    // Every stream's counter first: a camera another ingest process holds
    // is an error before any camera starts.
    let seq_dir = cfg.data_dir.join("ingest").join("seq");
    let mut streams = Vec::new();
    for cam in &cfg.cameras {
        let main = (Stream::Main, &cam.main, &frames, &frames_producer);
        let sub = cam.sub.as_ref().map(|s| (Stream::Sub, s, &live, &live_producer));
        for (stream, spec, topic, producer) in std::iter::once(main).chain(sub) {
            let seq = seq::SeqCounter::open(&seq_dir, &format!("{}.{}", cam.id, stream.name()))
                .map_err(|source| Error::Seq { camera: cam.id.clone(), source })?;
            report_unacknowledged(&cam.id, stream, seq.unacknowledged(), ctx.events.as_ref());
            streams.push((cam, stream, spec, topic, producer, seq));
        }
    }
    let mut threads = Vec::new();
    let mut tasks = Vec::new();
    for (cam, stream, spec, topic, producer, seq) in streams {
        let ledger = seq.ledger();
        let (tx, rx) = buffer::buffer(cfg.buffer_bytes, seq, &metrics, &cam.id, topic.name);
        let publisher = Publisher::new(producer.clone(), topic, &cam.id, ack_log.clone(), Some(ledger), &metrics);
        tasks.push(tokio::spawn(publisher.run(rx, cfg.drain)));
        let (spec, id, ctx) = (spec.clone(), cam.id.clone(), ctx.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("cam-{id}"))
                .spawn(move || source::run(spec, id, stream, tx, ctx))
                .expect("spawn camera thread"),
        );
    }
    tracing::info!(cameras = cfg.cameras.len(), "ingest running");
    shutdown.await;
    stop.store(true, Ordering::Relaxed);
    // Cameras stop first; each publisher ends when its buffer is empty and
    // its camera (the sender) is gone.
    let _ = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
    // A publisher waiting for room in a full queue (the broker gone) would
    // wait for ever: past the drain time it is stopped where it stands.
    let deadline = tokio::time::Instant::now() + cfg.drain + Duration::from_secs(5);
    for mut t in tasks {
        if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
            tracing::warn!("a publisher still waits for the broker after the drain time; stopping it");
            t.abort();
        }
    }
    // Queued events (a frames-lost report above all) go out before the
    // producer is dropped with them.
    if let Some(e) = ctx.events.clone() {
        let _ = tokio::task::spawn_blocking(move || e.flush(cfg.drain)).await;
    }
    tracing::info!("ingest stopped");
    Ok(())
}

/// Frames the last run accepted from a camera that never reached the
/// broker: said in the log and as a `frames-lost` event, which `vigil
/// check` reads to tell them from frames that were never recorded.
fn report_unacknowledged(
    camera: &str,
    stream: Stream,
    seqs: std::ops::Range<u64>,
    events: Option<&bus::events::Events>,
) {
    if seqs.is_empty() {
        return;
    }
    let (first, last) = (seqs.start, seqs.end - 1);
    let detail = format!(
        "{} frames (seq {first}..={last}) that the camera delivered were never acknowledged by the broker: \
         the last ingest of this stream stopped with them buffered",
        seqs.end - seqs.start
    );
    tracing::warn!(camera, stream = stream.name(), "{detail}");
    if let Some(e) = events {
        let mut ev = bus::events::Event::new("frames-lost", Some(camera), &format!("ingest:{}", stream.name()), detail);
        ev.lost = Some(bus::events::LostFrames { stream: stream.name().into(), first_seq: first, last_seq: last });
        e.publish(ev);
    }
}
