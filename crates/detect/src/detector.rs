//! The detector, a stage on the shared runtime (`crates/stage`):
//! `vigil.frames` → decode → model → tracker → records.
//!
//! Per camera: a decoder, a sampling rule and a tracker. Analysed frames
//! from all cameras are batched into one inference call when several are
//! ready at once (the runtime flushes the batch when no frame is waiting).
//! Results go to the output topic (one record per analysed frame) and
//! object appeared/left events to `vigil.events`. The runtime checkpoints,
//! per partition of `vigil.frames`, each camera's state (`checkpoint`) with
//! the offset to read again: the start of the oldest GOP still decoded.

use crate::checkpoint::{CameraState, PartitionState};
use crate::gate::{MotionSettings, mask_for};
use crate::model::{ImageRef, Model, ModelOptions, class_name};
use crate::motion::Mask;
use crate::track::{FrameRef, ObjectSummary, Tracker, TrackerConfig};
use bus::events::{BestFrame, Event, ObjectInfo};
use bus::metrics::{Counter, Histogram, Metrics, Seconds};
use bus::{Delivered, FrameReader, topics};
use codec::{DecodeError, Decoder, Picture};
use media::Stream;
use schema::{Detections, FrameMotion, Object, SourceFrame, record_id};
use stage::Output;
use std::collections::BTreeMap;
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
    /// This process in the detectors' group, stable across restarts (the
    /// transactional id's last part): host and data directory.
    pub member: String,
    /// The motion check on sampled frames, and the gate.
    pub motion: MotionSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] crate::model::Error),
    #[error("model {path}: {source}")]
    ModelFile { path: String, source: std::io::Error },
    /// Reading frames, publishing, checkpoints: the runtime's errors.
    #[error(transparent)]
    Stage(#[from] stage::Error),
    #[error("archive: {0}")]
    Archive(#[from] archive::Error),
    #[error("{0}")]
    Config(String),
}

impl From<Error> for stage::Error {
    /// The model, its file or the settings: a restart changes nothing.
    fn from(e: Error) -> Self {
        match e {
            Error::Stage(e) => e,
            e => stage::Error::fatal(e),
        }
    }
}

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
    /// The motion mask, for the size of the camera's pictures.
    mask: Option<Mask>,
    /// Time spent decoding and checking motion, per camera.
    decode_seconds: Seconds,
    motion_seconds: Seconds,
}

/// A frame to analyse and what the record needs about it.
pub(crate) struct Job {
    camera: String,
    seq: u64,
    capture_us: i64,
    source: SourceFrame,
    picture: Picture,
    motion: Option<FrameMotion>,
    /// Nothing moved: the model skips it, the record holds the last
    /// analysed frame's objects.
    still: bool,
}

struct Counters {
    analysed: Counter,
    objects: Counter,
    undecodable: Counter,
    still: Counter,
    batch_seconds: Histogram,
}

pub struct Detector {
    pub(crate) cfg: DetectConfig,
    model: Model,
    model_id: String,
    cameras: BTreeMap<String, Camera>,
    /// Each partition's checkpointed state: cameras not seen yet in this
    /// run keep theirs.
    resumed: BTreeMap<i32, PartitionState>,
    /// Frames waiting for the next inference call.
    pub(crate) batch: Vec<Job>,
    counters: Counters,
    /// Object appeared/left events (not for re-analyses: live events only).
    pub(crate) publish_events: bool,
    /// What inputs are read from, as results name it (`vigil.frames`, or
    /// `archive` for a re-analysis).
    pub(crate) source_topic: &'static str,
    /// Frames captured before this only bring decoders up to date (a
    /// re-analysis starts at the key frame before its range).
    pub(crate) analyse_from_us: Option<i64>,
    /// Frames taken for analysis since it was built.
    pub(crate) taken: u64,
    metrics: Metrics,
}

impl Detector {
    pub fn new(cfg: DetectConfig, metrics: &Metrics) -> Result<Self, Error> {
        let model = Model::load(&cfg.model)?;
        let model_id = model_id(&cfg.model.path)?;
        let labels = [("model", model_id.as_str())];
        let counters = Counters {
            analysed: metrics.counter("vigil_detect_frames_analysed_total", "Frames the model analysed.", &labels),
            objects: metrics.counter("vigil_detect_objects_total", "Objects detected in analysed frames.", &labels),
            undecodable: metrics.counter(
                "vigil_detect_undecodable_frames_total",
                "Frames that could not be decoded (broken, or a codec without a decoder).",
                &labels,
            ),
            still: metrics.counter(
                "vigil_detect_frames_still_total",
                "Sampled frames the model skipped: nothing had moved on the camera for the gate's hold time.",
                &labels,
            ),
            batch_seconds: metrics.histogram(
                "vigil_detect_batch_seconds",
                "Decode-to-results time of each batch (preprocess, inference, NMS).",
                &labels,
                &bus::metrics::latency_buckets(),
            ),
        };
        tracing::info!(model = %model_id, input = model.input_size(), classes = model.classes(), "model loaded");
        Ok(Detector {
            cfg,
            model,
            model_id,
            cameras: BTreeMap::new(),
            resumed: BTreeMap::new(),
            batch: Vec::new(),
            counters,
            publish_events: true,
            source_topic: topics::FRAMES,
            analyse_from_us: None,
            taken: 0,
            metrics: metrics.clone(),
        })
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    pub fn output_topic(&self) -> &str {
        &self.cfg.output_topic
    }

    /// A frame from `vigil.frames` or the archive (a re-analysis).
    /// Decodes what the sampling rule needs; returns the frame if it is to
    /// be analysed. `replay_from`: where re-reading returns this frame
    /// (the resume point of its GOP when it is a key frame).
    pub(crate) fn take_frame(
        &mut self,
        frame: &media::Frame,
        source: SourceFrame,
        replay_from: Option<i64>,
    ) -> Option<Job> {
        let d_partition = source.partition;
        let meta = &frame.meta;
        if meta.stream != Stream::Main {
            return None;
        }
        let resumed = &self.resumed;
        let metrics = &self.metrics;
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
                    gate: Default::default(),
                },
            },
            partition: d_partition,
            gop_resume: None,
            last_seen: Instant::now(),
            refused: false,
            mask: None,
            decode_seconds: metrics.seconds(
                "vigil_detect_decode_seconds_total",
                "Seconds spent decoding the camera's frames.",
                &[("camera", &meta.camera)],
            ),
            motion_seconds: metrics.seconds(
                "vigil_motion_seconds_total",
                "Seconds spent on the camera's motion check.",
                &[("camera", &meta.camera)],
            ),
        });
        cam.partition = d_partition;
        cam.last_seen = Instant::now();
        if meta.key {
            cam.gop_resume = replay_from.or(Some(source.offset));
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
        let started = Instant::now();
        let decoded = cam.decoder.decode(frame, wanted);
        cam.decode_seconds.add(started.elapsed());
        let picture = match decoded {
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
        let (mut motion, mut still) = (None, false);
        if self.cfg.motion.enabled {
            let started = Instant::now();
            let size = (picture.width as usize, picture.height as usize);
            if !self.cfg.motion.masks.is_empty() && cam.mask.as_ref().is_none_or(|m| m.source != size) {
                cam.mask = mask_for(&self.cfg.motion, &meta.camera, size);
            }
            let (m, skip) = cam.state.gate.check(&self.cfg.motion, &mut cam.mask, &picture, meta.capture_us);
            cam.motion_seconds.add(started.elapsed());
            (motion, still) = (Some(m), skip);
        }
        Some(Job {
            camera: meta.camera.clone(),
            seq: meta.seq,
            capture_us: meta.capture_us,
            source,
            picture,
            motion,
            still,
        })
    }

    /// Runs the model over the batch, tracks, publishes.
    pub(crate) async fn analyse(&mut self, out: &mut Output) -> Result<(), Error> {
        let jobs = std::mem::take(&mut self.batch);
        if jobs.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let images: Vec<ImageRef> = jobs
            .iter()
            .filter(|j| !j.still)
            .map(|j| ImageRef::new(j.picture.width, j.picture.height, &j.picture.rgb))
            .collect();
        let results = match self.model.detect(&images) {
            Ok(r) => r,
            Err(e) => {
                // Not fatal: the same frames fail the same way on a rerun,
                // so skipping them keeps results deterministic. Frames the
                // model was to skip anyway keep their records.
                tracing::warn!(error = %e, frames = images.len(), "inference failed; frames not analysed");
                self.counters.undecodable.add(images.len() as u64);
                for job in jobs.iter().filter(|j| j.still) {
                    self.counters.still.inc();
                    self.publish_still(job, out).await?;
                }
                return Ok(());
            }
        };
        if !images.is_empty() {
            self.counters.batch_seconds.observe(started.elapsed().as_secs_f64());
        }
        let mut results = results.into_iter();
        for job in &jobs {
            if job.still {
                self.counters.still.inc();
                self.publish_still(job, out).await?;
                continue;
            }
            let dets = results.next().expect("a result per analysed image");
            self.counters.analysed.inc();
            self.counters.objects.add(dets.len() as u64);
            let cam = self.cameras.get_mut(&job.camera).expect("camera of a job");
            let update = cam.state.tracker.update(FrameRef { seq: job.seq, time_us: job.capture_us }, &dets);
            let update = update.unwrap_or_default();
            let mut ids: Vec<Option<String>> = vec![None; dets.len()];
            for t in &update.tracks {
                ids[t.detection] = Some(t.object_id.clone());
            }
            let objects: Vec<Object> = dets.iter().zip(ids).map(|(d, id)| object(d, id)).collect();
            if self.cfg.motion.enabled {
                cam.state.gate.held = Some((job.seq, objects.clone()));
            }
            self.publish_record(job, objects, job.motion.clone(), out).await?;
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
                out.send(
                    topics::EVENTS,
                    &job.camera,
                    &event.id,
                    &serde_json::to_vec(&event).expect("events serialise"),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// The record of a frame the model skipped: the last analysed
    /// frame's objects, as they were.
    async fn publish_still(&self, job: &Job, out: &mut Output) -> Result<(), Error> {
        let cam = self.cameras.get(&job.camera).expect("camera of a job");
        let (from, objects) = cam.state.gate.held.clone().unwrap_or_default();
        let motion = job.motion.clone().map(|m| FrameMotion { held_from: Some(from), ..m });
        self.publish_record(job, objects, motion, out).await
    }

    async fn publish_record(
        &self,
        job: &Job,
        objects: Vec<Object>,
        motion: Option<FrameMotion>,
        out: &mut Output,
    ) -> Result<(), Error> {
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
            motion,
        };
        let payload = serde_json::to_vec(&record).expect("records serialise");
        out.send(&self.cfg.output_topic, &job.camera, &record.id, &payload).await?;
        Ok(())
    }
}

impl stage::Stage for Detector {
    type State = PartitionState;
    type Source = FrameReader;

    async fn assign(&mut self, partition: i32, state: Option<PartitionState>) -> Result<(), stage::Error> {
        self.resumed.insert(partition, state.unwrap_or_default());
        Ok(())
    }

    /// Forgets the partition's cameras (decoders, trackers) and frames of
    /// them waiting for inference: its next owner resumes them from the
    /// checkpoint.
    fn revoke(&mut self, partition: i32) {
        self.resumed.remove(&partition);
        self.cameras.retain(|_, cam| cam.partition != partition);
        self.batch.retain(|job| job.source.partition != partition);
    }

    async fn on_input(&mut self, d: Delivered, out: &mut Output) -> Result<(), stage::Error> {
        let source = SourceFrame { topic: self.source_topic.into(), partition: d.partition, offset: d.offset };
        let wanted = self.analyse_from_us.is_none_or(|t| d.frame.meta.capture_us >= t);
        if let Some(job) = self.take_frame(&d.frame, source, Some(d.replay_from)).filter(|_| wanted) {
            self.batch.push(job);
            self.taken += 1;
        }
        if self.batch.len() >= self.model.batch() {
            self.analyse(out).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, out: &mut Output) -> Result<(), stage::Error> {
        Ok(self.analyse(out).await?)
    }

    /// Each camera's state on `partition` (cameras not seen since the
    /// restore keep theirs) and, when every frame is decoded (per-second
    /// sampling), the start of the oldest GOP still being decoded: a
    /// restart reads from there to rebuild the decoder. A camera quiet for
    /// a minute no longer holds its partition back.
    fn checkpoint(&mut self, partition: i32) -> (PartitionState, Option<i64>) {
        let mut state = self.resumed.get(&partition).cloned().unwrap_or_default();
        let mut hold: Option<i64> = None;
        for (name, cam) in &self.cameras {
            if cam.partition != partition {
                state.cameras.remove(name);
                continue;
            }
            let recent = cam.last_seen.elapsed() < Duration::from_secs(60);
            if let (Sampling::PerSecond(_), Some(g), true) = (self.cfg.sampling, cam.gop_resume, recent) {
                hold = Some(hold.map_or(g, |h| h.min(g)));
            }
            state.cameras.insert(name.clone(), cam.state.clone());
        }
        (state, hold)
    }
}

/// A detection as records carry it; `object_id` once its track is confirmed.
fn object(d: &crate::Detection, object_id: Option<String>) -> Object {
    let crate::BBox { x1, y1, x2, y2 } = d.bbox;
    Object { object_id, class: class_name(d.class).into(), class_id: d.class, score: d.score, bbox: [x1, y1, x2, y2] }
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
        lost: None,
        rule: None,
    }
}
