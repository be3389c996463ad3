//! Reading frames back from a topic: records → envelopes → whole frames.
//!
//! Garbage records (not a vigil envelope, wrong version, bad checksum) are
//! counted, logged and skipped: one bad producer must not stop a consumer.

use crate::Error;
use crate::client::KafkaConfig;
use crate::group::Rebalance;
use crate::metrics::{Counter, Gauge, Metrics};
use crate::reader::{Polled, Reader};
use crate::topics::TopicSpec;
use media::{Chunk, Frame, Incomplete, Limits, Pushed, Reassembler};
use rdkafka::Offset;
use rdkafka::message::Message;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A whole frame and where it sits in the topic.
#[derive(Debug)]
pub struct Delivered {
    pub frame: Frame,
    pub partition: i32,
    /// The offset of its last chunk.
    pub offset: i64,
    /// Reading the partition again from here returns this frame again (its
    /// first chunk and every record after the frame returned before it):
    /// what a stage that must re-read a GOP after a restart resumes from.
    pub replay_from: i64,
}

struct CameraCounters {
    frames: Counter,
    bytes: Counter,
    age: Gauge,
}

/// What a frame reader returns: a whole frame, or (a group member) a
/// change of its partitions.
#[derive(Debug)]
pub enum FramePolled {
    Frame(Delivered),
    Rebalance(Rebalance),
}

/// A frame's identity while its chunks are being collected.
type FrameKey = (String, media::Stream, u64);

pub struct FrameReader {
    reader: Reader,
    /// Where each incomplete frame's first chunk sits: a sink must not
    /// resume past it, or the frame's earlier chunks would never be read.
    first_chunk: HashMap<FrameKey, (i32, i64)>,
    /// Each camera's partition, for the cameras with chunked frames
    /// completed: what to forget when a partition is released.
    chunked_on: HashMap<String, i32>,
    metrics: Metrics,
    reassembler: Reassembler,
    cameras: HashMap<String, CameraCounters>,
    garbage: Counter,
    incomplete: Counter,
    last_expire: Instant,
}

impl FrameReader {
    /// Reads every partition of `topic` from the given offset (e.g.
    /// `Offset::End` for a live viewer) as a member-less reader that never
    /// commits (group `vigil-web`).
    pub fn assign(
        cfg: &KafkaConfig,
        topic: &TopicSpec,
        partitions: i32,
        from: Offset,
        metrics: &Metrics,
    ) -> Result<Self, Error> {
        let from = (0..partitions).map(|p| (p, from)).collect();
        Self::assign_from(cfg, topic, crate::topics::groups::WEB, &from, metrics)
    }

    /// Reads the given partitions from the given offsets as a member-less
    /// consumer of `group` (its commits only feed lag metrics): for sinks
    /// that keep their own offsets.
    pub fn assign_from(
        cfg: &KafkaConfig,
        topic: &TopicSpec,
        group: &str,
        from: &HashMap<i32, Offset>,
        metrics: &Metrics,
    ) -> Result<Self, Error> {
        Ok(Self::over(Reader::assign(cfg, topic, group, from, metrics)?, metrics))
    }

    /// Joins `group` as a member (see `Reader::subscribe`): frames of the
    /// partitions the group gives it, and its rebalances, from `poll`.
    pub fn subscribe(cfg: &KafkaConfig, topic: &TopicSpec, group: &str, metrics: &Metrics) -> Result<Self, Error> {
        Ok(Self::over(Reader::subscribe(cfg, topic, group, metrics)?, metrics))
    }

    fn over(reader: Reader, metrics: &Metrics) -> Self {
        let labels = [("topic", reader.topic())];
        FrameReader {
            garbage: metrics.counter(
                "vigil_consumer_garbage_records_total",
                "Records that were not valid vigil frames, skipped.",
                &labels,
            ),
            incomplete: metrics.counter(
                "vigil_consumer_incomplete_frames_total",
                "Chunked frames given up (chunks missing, conflicting, or memory limit).",
                &labels,
            ),
            reader,
            first_chunk: HashMap::new(),
            chunked_on: HashMap::new(),
            metrics: metrics.clone(),
            reassembler: Reassembler::new(Limits::default()),
            cameras: HashMap::new(),
            last_expire: Instant::now(),
        }
    }

    /// Replaces the assignment: reads exactly `from` from now on, forgetting
    /// positions and half-collected frames of the old assignment (records
    /// of partitions no longer assigned are never returned after this).
    pub fn reassign(&mut self, from: &HashMap<i32, Offset>) -> Result<(), Error> {
        self.reader.reassign(from)?;
        self.first_chunk.clear();
        self.chunked_on.clear();
        self.reassembler = Reassembler::new(Limits::default());
        Ok(())
    }

    /// See `Reader::pause`.
    pub fn pause(&self, paused: bool) -> Result<(), Error> {
        self.reader.pause(paused)
    }

    /// Per partition, the offset a sink may resume from once it has stored
    /// every frame returned so far: after the last record read, but never
    /// past the first chunk of a frame still being collected.
    pub fn resume_offsets(&self) -> HashMap<i32, i64> {
        let mut out = self.reader.positions().clone();
        for &(p, o) in self.first_chunk.values() {
            let e = out.entry(p).or_insert(o);
            *e = (*e).min(o);
        }
        out
    }

    /// The first chunk of the oldest frame still being collected on `partition`.
    fn oldest_open_chunk(&self, partition: i32) -> Option<i64> {
        self.first_chunk.values().filter(|(p, _)| *p == partition).map(|&(_, o)| o).min()
    }

    /// The next whole frame. Bad records are skipped; consumer errors are
    /// retried inside (see `Reader::recv`) unless no retry can cure them.
    /// For a reader with its partitions assigned, not a group member.
    pub async fn next(&mut self) -> Result<Delivered, Error> {
        loop {
            if let FramePolled::Frame(d) = self.poll().await? {
                return Ok(d);
            }
        }
    }

    /// Starts partitions the group assigned (see `Reader::start`).
    pub fn start(&mut self, from: &HashMap<i32, Offset>) -> Result<(), Error> {
        self.reader.start(from)
    }

    /// Stops partitions the group revoked (see `Reader::release`), and
    /// forgets their frames still being collected (the next owner reads
    /// them from their first chunk) and which of their frames were
    /// completed (if a partition comes back, read from an earlier offset,
    /// its chunked frames are frames again, not duplicates to drop).
    pub fn release(&mut self, partitions: &[i32]) -> Result<(), Error> {
        let cameras: Vec<String> =
            self.chunked_on.iter().filter(|(_, p)| partitions.contains(p)).map(|(c, _)| c.clone()).collect();
        for camera in cameras {
            self.reassembler.forget_done(&camera);
            self.chunked_on.remove(&camera);
        }
        let gone: Vec<FrameKey> =
            self.first_chunk.iter().filter(|(_, (p, _))| partitions.contains(p)).map(|(k, _)| k.clone()).collect();
        for key in gone {
            self.reassembler.abandon(&key.0, key.1, key.2);
            self.first_chunk.remove(&key);
        }
        self.reader.release(partitions)
    }

    pub fn assignment_lost(&self) -> bool {
        self.reader.assignment_lost()
    }

    /// The next whole frame, or for a group member a change of its
    /// partitions (before any frame read after it).
    pub async fn poll(&mut self) -> Result<FramePolled, Error> {
        loop {
            if self.last_expire.elapsed() > Duration::from_secs(1) {
                self.last_expire = Instant::now();
                self.reassembler.expire(Instant::now());
                self.report_problems();
            }
            let msg = match tokio::time::timeout(Duration::from_secs(1), self.reader.poll()).await {
                Err(_) => continue, // idle: loop to run the timeout check
                Ok(Ok(Polled::Record(m))) => m,
                Ok(Ok(Polled::Rebalance(r))) => return Ok(FramePolled::Rebalance(r)),
                Ok(Err(e)) => return Err(e),
            };
            let (partition, offset) = (msg.partition(), msg.offset());
            let chunk = match msg.payload().map(Chunk::decode) {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    self.skip_garbage(partition, offset, &e.to_string());
                    continue;
                }
                None => {
                    self.skip_garbage(partition, offset, "empty record");
                    continue;
                }
            };
            // Only chunked frames are tracked; single records stay allocation-free.
            let key = (chunk.count > 1).then(|| (chunk.meta.camera.clone(), chunk.meta.stream, chunk.meta.seq));
            match self.reassembler.push(chunk, Instant::now()) {
                Ok(Pushed::Waiting) => {
                    if let Some(key) = key {
                        self.first_chunk.entry(key).or_insert((partition, offset));
                    }
                }
                Ok(Pushed::Frame(frame)) => {
                    // This record, or the first chunk of a frame still
                    // being collected on the partition (this one's too).
                    let replay_from = self.oldest_open_chunk(partition).map_or(offset, |o| o.min(offset));
                    if let Some(key) = key {
                        self.first_chunk.remove(&key);
                        self.chunked_on.insert(key.0, partition);
                    }
                    self.count(&frame);
                    return Ok(FramePolled::Frame(Delivered { frame, partition, offset, replay_from }));
                }
                Ok(Pushed::Duplicate) => {}
                Err(e) => self.skip_garbage(partition, offset, &e.to_string()),
            }
            self.report_problems();
        }
    }

    /// The group's identity, for committing offsets inside a producer's
    /// transaction.
    pub fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata> {
        self.reader.group_metadata()
    }

    /// Commits `next` (the offset to read next) for `partition` to the
    /// group, without waiting. Exactly-once sinks call it only to feed lag
    /// metrics; on an at-most-once topic it does nothing.
    pub fn commit(&self, partition: i32, next: i64) -> Result<(), Error> {
        self.reader.commit(partition, next)
    }

    fn skip_garbage(&mut self, partition: i32, offset: i64, why: &str) {
        self.garbage.inc();
        let n = self.garbage.get();
        // Log the first few and then one in a thousand: a flood of garbage
        // must not become a flood of logs.
        if n <= 10 || n.is_multiple_of(1000) {
            tracing::warn!(topic = %self.reader.topic(), partition, offset, skipped_so_far = n, "skipping record: {why}");
        }
    }

    fn report_problems(&mut self) {
        for p in self.reassembler.take_problems() {
            self.incomplete.inc();
            let (meta, what) = match &p {
                Incomplete::TimedOut { meta, .. } => (meta, "chunks missing after timeout"),
                Incomplete::Evicted { meta, .. } => (meta, "dropped to bound memory"),
                Incomplete::Conflict { meta } => (meta, "conflicting chunks"),
            };
            self.first_chunk.remove(&(meta.camera.clone(), meta.stream, meta.seq));
            tracing::warn!(topic = %self.reader.topic(), camera = %meta.camera, seq = meta.seq, "incomplete frame: {what}");
        }
    }

    fn count(&mut self, frame: &Frame) {
        let cam = &frame.meta.camera;
        if !self.cameras.contains_key(cam) {
            let labels = [("camera", cam.as_str()), ("topic", self.reader.topic())];
            let m = &self.metrics;
            let c = CameraCounters {
                frames: m.counter("vigil_consumer_frames_total", "Whole frames consumed.", &labels),
                bytes: m.counter("vigil_consumer_bytes_total", "Frame payload bytes consumed.", &labels),
                age: m.gauge(
                    "vigil_consumer_newest_frame_age_seconds",
                    "Capture time to consumption of the newest frame.",
                    &labels,
                ),
            };
            self.cameras.insert(cam.clone(), c);
        }
        let c = &self.cameras[cam];
        c.frames.inc();
        c.bytes.add(frame.payload.len() as u64);
        c.age.set(now_us().saturating_sub(frame.meta.capture_us) as f64 / 1e6);
    }
}

pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}
