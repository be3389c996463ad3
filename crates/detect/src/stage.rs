//! The detector: `vigil.frames` → decode → model → tracker → records.
//!
//! One thread with a runtime of its own (inference is long CPU work that
//! must not stall other stages). Per camera: a decoder, a sampling rule and
//! a tracker. Analysed frames from all cameras are batched into one
//! inference call when several are ready at once. Results go to the output
//! topic (one record per analysed frame) and object appeared/left events to
//! `vigil.events`; a checkpoint (see `checkpoint`) follows every
//! acknowledged stretch of them.

use crate::checkpoint::{self, CameraState, PartitionState};
use crate::decode::{DecodeError, Decoder, Picture};
use crate::model::{ImageRef, Model, ModelOptions, class_name};
use crate::record::{Detections, Object, SourceFrame, record_id};
use crate::track::{FrameRef, ObjectSummary, Tracker, TrackerConfig};
use bus::events::{BestFrame, Event, ObjectInfo};
use bus::metrics::{Counter, Gauge, Metrics};
use bus::{Delivered, FrameReader, KafkaConfig, TopicSpec, topics};
use media::Stream;
use rdkafka::Offset;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Which frames are analysed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampling {
    /// Every key frame, at most one per second (cheapest: only key frames
    /// are decoded).
    KeyFrames,
    /// At most this many per second of capture time, every frame decoded.
    PerSecond(f64),
}

#[derive(Clone, Debug)]
pub struct DetectConfig {
    pub model: ModelOptions,
    pub tracker: TrackerConfig,
    pub sampling: Sampling,
    /// `vigil.detections`, or a versioned topic for a re-analysis.
    pub output_topic: String,
    pub checkpoint_interval: Duration,
    /// Kafka transactions: results, checkpoint and input offsets of each
    /// interval commit together, and read_committed consumers never see a
    /// repeat. For brokers that have transactions (the embedded one does
    /// not); without, deterministic ids and consumer dedupe give the same
    /// effect.
    pub transactions: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] crate::model::Error),
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error("model {path}: {source}")]
    ModelFile { path: String, source: std::io::Error },
    #[error("a record was not delivered: {0}")]
    Delivery(String),
    #[error("transaction: {0}")]
    Transaction(String),
    #[error("{0}")]
    Config(String),
}

/// The longest checkpoint interval with transactions: well inside
/// librdkafka's default `transaction.timeout.ms` (60 s).
const TRANSACTION_MAX: Duration = Duration::from_secs(30);

/// The model's identity in records: file name and CRC-32 of its bytes, so
/// results of two different files never share an id.
pub fn model_id(path: &std::path::Path) -> Result<String, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::ModelFile { path: path.display().to_string(), source })?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    Ok(format!("{stem}-{:08x}", crc32fast::hash(&bytes)))
}

struct Camera {
    decoder: Decoder,
    state: CameraState,
    partition: i32,
    /// Where to read again to decode this camera's current GOP.
    gop_resume: Option<i64>,
    /// When its last frame came: a camera quiet for a minute no longer
    /// holds its partition's resume point at its old GOP.
    last_seen: Instant,
    /// Logged once: why this camera's frames are not analysed.
    refused: bool,
}

/// A frame to analyse and what the record needs about it.
pub(crate) struct Job {
    camera: String,
    seq: u64,
    capture_us: i64,
    source: SourceFrame,
    picture: Picture,
}

struct Counters {
    analysed: Counter,
    objects: Counter,
    undecodable: Counter,
    inference_ms: Gauge,
    checkpoints: Counter,
}

pub struct Detector {
    cfg: DetectConfig,
    model: Model,
    model_id: String,
    producer: FutureProducer,
    cameras: BTreeMap<String, Camera>,
    resumed: BTreeMap<i32, PartitionState>,
    /// Per partition, the reader's resume offset before the latest frame.
    before_frame: HashMap<i32, i64>,
    pending: Vec<rdkafka::producer::DeliveryFuture>,
    counters: Counters,
    /// Object appeared/left events (not for re-analyses: live events only).
    pub(crate) publish_events: bool,
}

impl Detector {
    pub fn new(cfg: DetectConfig, kafka: &KafkaConfig, metrics: &Metrics) -> Result<Self, Error> {
        if cfg.transactions && cfg.checkpoint_interval > TRANSACTION_MAX {
            // The broker aborts a transaction open longer than its timeout.
            return Err(Error::Config(format!(
                "with transactions the checkpoint interval must be at most {} s (it is one transaction)",
                TRANSACTION_MAX.as_secs()
            )));
        }
        let model = Model::load(&cfg.model)?;
        let model_id = model_id(&cfg.model.path)?;
        let producer = if cfg.transactions {
            // One id per output and model: a restarted detector fences off
            // its dead predecessor and aborts what that one left open.
            let id = format!("vigil-detect/{}/{model_id}", cfg.output_topic);
            let p = kafka.transactional_producer(&id, 64 * 1024)?;
            p.init_transactions(Duration::from_secs(30)).map_err(txn("init"))?;
            p.begin_transaction().map_err(txn("begin"))?;
            p
        } else {
            kafka.producer(bus::Delivery::ExactlyOnce, 64 * 1024)?
        };
        let labels = [("model", model_id.as_str())];
        let counters = Counters {
            analysed: metrics.counter("vigil_detect_frames_analysed_total", "Frames the model analysed.", &labels),
            objects: metrics.counter("vigil_detect_objects_total", "Objects detected in analysed frames.", &labels),
            undecodable: metrics.counter(
                "vigil_detect_undecodable_frames_total",
                "Frames that could not be decoded (broken, or a codec without a decoder).",
                &labels,
            ),
            checkpoints: metrics.counter(
                "vigil_detect_checkpoints_total",
                "Checkpoints stored (with transactions: transactions committed).",
                &labels,
            ),
            inference_ms: metrics.gauge(
                "vigil_detect_batch_milliseconds",
                "Decode-to-results time of the last batch (preprocess, inference, NMS).",
                &labels,
            ),
        };
        tracing::info!(model = %model_id, input = model.input_size(), classes = model.classes(), "model loaded");
        Ok(Detector {
            cfg,
            model,
            model_id,
            producer,
            cameras: BTreeMap::new(),
            resumed: BTreeMap::new(),
            before_frame: HashMap::new(),
            pending: Vec::new(),
            counters,
            publish_events: true,
        })
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    pub(crate) fn cfg_transactions(&self) -> bool {
        self.cfg.transactions
    }

    /// The most frames one inference takes.
    pub(crate) fn batch_size(&self) -> usize {
        self.model.batch()
    }

    /// Runs until `stop` turns true: reads from the last checkpoint (or the
    /// end of `vigil.frames` the first time), writes a checkpoint every
    /// interval and at the end.
    pub async fn run(
        mut self,
        kafka: &KafkaConfig,
        frames: &TopicSpec,
        metrics: &Metrics,
        stop: &AtomicBool,
    ) -> Result<(), Error> {
        let (kafka2, out, model) = (kafka.clone(), self.cfg.output_topic.clone(), self.model_id.clone());
        self.resumed =
            tokio::task::spawn_blocking(move || checkpoint::read(&kafka2, &out, &model, Duration::from_secs(30)))
                .await
                .map_err(|e| Error::Bus(bus::Error::Other(e.to_string())))??;
        // A partition without a checkpoint starts at its end as it is now,
        // as a concrete offset that goes into the first checkpoint: frames
        // that arrive while the detector is down are analysed after.
        let missing: Vec<i32> = (0..frames.partitions).filter(|p| !self.resumed.contains_key(p)).collect();
        let (kafka2, topic) = (kafka.clone(), frames.name);
        let ends = tokio::task::spawn_blocking(move || checkpoint::end_offsets(&kafka2, topic, &missing))
            .await
            .map_err(|e| Error::Bus(bus::Error::Other(e.to_string())))??;
        for (p, end) in ends {
            self.resumed.insert(p, PartitionState { resume_offset: end, cameras: BTreeMap::new() });
        }
        let from: HashMap<i32, Offset> =
            self.resumed.iter().map(|(&p, s)| (p, Offset::Offset(s.resume_offset))).collect();
        // Nothing before a partition's start offset is read again: the
        // resume point of a GOP whose key frame is the first thing read.
        self.before_frame = self.resumed.iter().map(|(&p, s)| (p, s.resume_offset)).collect();
        tracing::info!(resumed = ?self.resumed.keys().collect::<Vec<_>>(), "detector reading vigil.frames");
        let mut reader = FrameReader::assign_from(kafka, frames, "vigil-detect", &from, metrics)?;
        let mut last_checkpoint = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let mut jobs = Vec::new();
            let mut wait = Duration::from_millis(200);
            while jobs.len() < self.model.batch() {
                match tokio::time::timeout(wait, reader.next()).await {
                    Ok(d) => jobs.extend(self.take(d?, &reader)),
                    Err(_) => break,
                }
                // More frames join the batch only if already waiting.
                wait = Duration::ZERO;
            }
            if !jobs.is_empty() {
                self.analyse(jobs)?;
            }
            if last_checkpoint.elapsed() >= self.cfg.checkpoint_interval {
                self.checkpoint(&reader, stop).await?;
                last_checkpoint = Instant::now();
            }
        }
        self.checkpoint(&reader, stop).await
    }

    /// Decodes what the sampling rule needs; returns the frame if it is to
    /// be analysed.
    fn take(&mut self, d: Delivered, reader: &FrameReader) -> Option<Job> {
        let resume_before = self.before_frame.get(&d.partition).copied();
        if let Some(&o) = reader.resume_offsets().get(&d.partition) {
            self.before_frame.insert(d.partition, o);
        }
        let source = SourceFrame { topic: topics::FRAMES.into(), partition: d.partition, offset: d.offset };
        self.take_frame(&d.frame, source, resume_before)
    }

    /// `take` for a frame from anywhere (the archive, for a re-analysis).
    pub(crate) fn take_frame(
        &mut self,
        frame: &media::Frame,
        source: SourceFrame,
        resume_before: Option<i64>,
    ) -> Option<Job> {
        let d_partition = source.partition;
        let meta = &frame.meta;
        if meta.stream != Stream::Main {
            return None;
        }
        let resumed = &self.resumed;
        let cam = self.cameras.entry(meta.camera.clone()).or_insert_with(|| Camera {
            decoder: Decoder::new(),
            state: match resumed.get(&d_partition).and_then(|s| s.cameras.get(&meta.camera)) {
                Some(saved) => {
                    let mut state = saved.clone();
                    state.tracker.set_config(self.cfg.tracker);
                    state
                }
                None => CameraState {
                    done_seq: None,
                    last_bucket: None,
                    tracker: Tracker::new(&meta.camera, self.cfg.tracker),
                },
            },
            partition: d_partition,
            gop_resume: None,
            last_seen: Instant::now(),
            refused: false,
        });
        cam.partition = d_partition;
        cam.last_seen = Instant::now();
        if meta.key {
            cam.gop_resume = resume_before.or(Some(source.offset));
        }
        // Frames up to done_seq were accounted for before a restart: they
        // only rebuild the decoder.
        let fresh = cam.state.done_seq.is_none_or(|done| meta.seq > done);
        // Key-frame mode keeps to one per second too: every frame of an
        // MJPEG camera is a key frame.
        let (rate, needs_key) = match self.cfg.sampling {
            Sampling::KeyFrames => (1.0, true),
            Sampling::PerSecond(n) => (n, false),
        };
        let bucket = (meta.capture_us as f64 * rate / 1e6).floor() as i64;
        let wanted = fresh && (meta.key || !needs_key) && cam.state.last_bucket.is_none_or(|last| bucket > last);
        if fresh {
            cam.state.done_seq = Some(meta.seq);
        }
        // In key-frame mode other frames are not even decoded.
        if self.cfg.sampling == Sampling::KeyFrames && !meta.key {
            return None;
        }
        let picture = match cam.decoder.decode(frame, wanted) {
            Ok(p) => p,
            Err(e) => {
                self.counters.undecodable.inc();
                if !cam.refused || !matches!(e, DecodeError::Unsupported(_)) {
                    tracing::warn!(camera = %meta.camera, seq = meta.seq, error = %e, "frame not analysed");
                }
                cam.refused = true;
                None
            }
        }?;
        if wanted {
            cam.state.last_bucket = Some(bucket);
        }
        Some(Job { camera: meta.camera.clone(), seq: meta.seq, capture_us: meta.capture_us, source, picture })
    }

    pub(crate) fn analyse(&mut self, jobs: Vec<Job>) -> Result<(), Error> {
        let started = Instant::now();
        let images: Vec<ImageRef> =
            jobs.iter().map(|j| ImageRef::new(j.picture.width, j.picture.height, &j.picture.rgb)).collect();
        let results = match self.model.detect(&images) {
            Ok(r) => r,
            Err(e) => {
                // Not fatal: the same frames fail the same way on a rerun,
                // so skipping them keeps results deterministic.
                tracing::warn!(error = %e, frames = jobs.len(), "inference failed; frames not analysed");
                self.counters.undecodable.add(jobs.len() as u64);
                return Ok(());
            }
        };
        self.counters.inference_ms.set(started.elapsed().as_secs_f64() * 1000.0);
        for (job, dets) in jobs.iter().zip(results) {
            self.counters.analysed.inc();
            self.counters.objects.add(dets.len() as u64);
            let cam = self.cameras.get_mut(&job.camera).expect("camera of a job");
            let update = cam.state.tracker.update(FrameRef { seq: job.seq, time_us: job.capture_us }, &dets);
            let update = update.unwrap_or_default();
            let mut ids: Vec<Option<String>> = vec![None; dets.len()];
            for t in &update.tracks {
                ids[t.detection] = Some(t.object_id.clone());
            }
            let objects = dets.iter().zip(ids).map(|(d, id)| Object::new(d, class_name(d.class), id)).collect();
            let record = Detections {
                id: record_id(&job.camera, job.seq, &self.model_id),
                camera: job.camera.clone(),
                seq: job.seq,
                capture_us: job.capture_us,
                model: self.model_id.clone(),
                source: job.source.clone(),
                width: job.picture.width,
                height: job.picture.height,
                objects,
            };
            let payload = serde_json::to_vec(&record).expect("records serialise");
            let topic = self.cfg.output_topic.clone();
            self.send(&topic, &job.camera, payload)?;
            if !self.publish_events {
                continue;
            }
            for (kind, o) in update
                .appeared
                .iter()
                .map(|o| ("object-appeared", o))
                .chain(update.left.iter().map(|o| ("object-left", o)))
            {
                let event = object_event(kind, o, &self.model_id);
                self.send(topics::EVENTS, &job.camera, serde_json::to_vec(&event).expect("events serialise"))?;
            }
        }
        Ok(())
    }

    /// Queues a record; waits (never drops) while librdkafka's queue is full.
    /// Any other refusal (a fenced or failed producer, a record too large)
    /// ends the run, to start again from the last checkpoint.
    fn send(&mut self, topic: &str, key: &str, payload: Vec<u8>) -> Result<(), Error> {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        loop {
            match self.producer.send_result(FutureRecord::to(topic).key(key).payload(&payload)) {
                Ok(f) => {
                    self.pending.push(f);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(Error::Delivery(format!("{topic}: {e}"))),
            }
        }
    }

    /// Waits for every record so far, then stores where to resume. A record
    /// that failed ends the run: the next run starts from the previous
    /// checkpoint and publishes the same records again. With transactions
    /// the checkpoint and the input offsets commit with the records.
    async fn checkpoint(&mut self, reader: &FrameReader, stop: &AtomicBool) -> Result<(), Error> {
        if !self.cfg.transactions {
            self.wait_delivered(stop).await?;
        }
        // Start from what was resumed: partitions not read yet and cameras
        // not seen yet in this run keep their state.
        let mut states = self.resumed.clone();
        for (p, o) in reader.resume_offsets() {
            states.entry(p).or_default().resume_offset = o;
        }
        for (name, cam) in &self.cameras {
            let Some(s) = states.get_mut(&cam.partition) else { continue };
            let recent = cam.last_seen.elapsed() < Duration::from_secs(60);
            if let (Sampling::PerSecond(_), Some(g), true) = (self.cfg.sampling, cam.gop_resume, recent) {
                s.resume_offset = s.resume_offset.min(g);
            }
            s.cameras.insert(name.clone(), cam.state.clone());
        }
        let mut offsets = rdkafka::TopicPartitionList::new();
        for (&p, s) in &states {
            let key = checkpoint::key(&self.cfg.output_topic, &self.model_id, p);
            let payload = serde_json::to_vec(s).expect("checkpoints serialise");
            self.send(topics::DETECT_STATE, &key, payload)?;
            offsets.add_partition_offset(topics::FRAMES, p, Offset::Offset(s.resume_offset)).map_err(txn("offsets"))?;
        }
        if !self.cfg.transactions {
            self.wait_delivered(stop).await?;
            self.counters.checkpoints.inc();
            return Ok(());
        }
        let group = reader.group_metadata().ok_or_else(|| Error::Transaction("the reader has no group".into()))?;
        let t = Duration::from_secs(30);
        let committed = self
            .producer
            .send_offsets_to_transaction(&offsets, &group, t)
            .and_then(|()| self.producer.commit_transaction(t));
        if let Err(e) = committed {
            // Nothing of this interval becomes visible; the next run redoes it.
            let _ = self.producer.abort_transaction(t);
            return Err(Error::Transaction(format!("commit: {e}")));
        }
        self.pending.clear();
        self.counters.checkpoints.inc();
        self.producer.begin_transaction().map_err(txn("begin"))
    }

    /// Waits for every queued record's acknowledgement. Gives up when
    /// `stop` is set (the broker may be gone for good): the next run
    /// starts from the last checkpoint.
    pub(crate) async fn wait_delivered(&mut self, stop: &AtomicBool) -> Result<(), Error> {
        for mut f in std::mem::take(&mut self.pending) {
            loop {
                match tokio::time::timeout(Duration::from_millis(500), &mut f).await {
                    Ok(Ok(Ok(_))) => break,
                    Ok(Ok(Err((e, _)))) => return Err(Error::Delivery(e.to_string())),
                    Ok(Err(_)) => return Err(Error::Delivery("producer closed".into())),
                    Err(_) if stop.load(Ordering::Relaxed) => {
                        return Err(Error::Delivery("stopping with records not acknowledged".into()));
                    }
                    Err(_) => {}
                }
            }
        }
        Ok(())
    }
}

fn txn(what: &'static str) -> impl Fn(rdkafka::error::KafkaError) -> Error {
    move |e| Error::Transaction(format!("{what}: {e}"))
}

fn object_event(kind: &str, o: &ObjectSummary, model: &str) -> Event {
    let b = o.best.bbox;
    let class = class_name(o.class);
    let time_us = if kind == "object-left" { o.last_seen_us } else { o.first_seen_us };
    Event {
        // Deterministic: a detector that publishes it again publishes the same id.
        id: format!("{}/{kind}", o.object_id),
        kind: kind.into(),
        camera: Some(o.camera.clone()),
        time_us,
        source: "detect".into(),
        detail: format!("{class} {}", o.object_id),
        object: Some(ObjectInfo {
            object_id: o.object_id.clone(),
            class: class.into(),
            model: model.into(),
            first_seen_us: o.first_seen_us,
            last_seen_us: o.last_seen_us,
            best: BestFrame {
                seq: o.best.seq,
                time_us: o.best.time_us,
                score: o.best.score,
                bbox: [b.x1, b.y1, b.x2, b.y2],
            },
        }),
    }
}
