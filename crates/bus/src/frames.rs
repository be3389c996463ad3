//! Reading frames back from a topic: records → envelopes → whole frames.
//!
//! Garbage records (not a vigil envelope, wrong version, bad checksum) are
//! counted, logged and skipped: one bad producer must not stop a consumer.

use crate::Error;
use crate::client::KafkaConfig;
use crate::delivery::Commit;
use crate::metrics::{Counter, Gauge, Metrics};
use crate::topics::TopicSpec;
use media::{Chunk, Frame, Incomplete, Limits, Pushed, Reassembler};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A whole frame and where its last chunk sits in the topic.
#[derive(Debug)]
pub struct Delivered {
    pub frame: Frame,
    pub partition: i32,
    pub offset: i64,
}

/// Feeds librdkafka's statistics (consumer lag per partition) into metrics.
pub struct LagContext {
    metrics: Metrics,
    group: String,
}

impl ClientContext for LagContext {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in stats.topics {
            for (p, part) in t.partitions {
                if p < 0 || part.consumer_lag < 0 {
                    continue;
                }
                self.metrics
                    .gauge(
                        "vigil_consumer_lag_records",
                        "Records between a consumer's position and the end of the partition.",
                        &[("topic", &topic), ("partition", &p.to_string()), ("group", &self.group)],
                    )
                    .set(part.consumer_lag as f64);
            }
        }
    }
}
impl ConsumerContext for LagContext {}

struct CameraCounters {
    frames: Counter,
    bytes: Counter,
    age: Gauge,
}

/// A frame's identity while its chunks are being collected.
type FrameKey = (String, media::Stream, u64);

pub struct FrameReader {
    consumer: StreamConsumer<LagContext>,
    commits: Commit,
    /// Per partition, the offset after the last record read.
    next_offset: HashMap<i32, i64>,
    /// Where each incomplete frame's first chunk sits: a sink must not
    /// resume past it, or the frame's earlier chunks would never be read.
    first_chunk: HashMap<FrameKey, (i32, i64)>,
    topic: String,
    metrics: Metrics,
    reassembler: Reassembler,
    cameras: HashMap<String, CameraCounters>,
    garbage: Counter,
    incomplete: Counter,
    last_expire: Instant,
}

impl FrameReader {
    /// Joins consumer group `group` on `topic` with the settings of the
    /// topic's guarantee.
    pub fn subscribe(cfg: &KafkaConfig, topic: &TopicSpec, group: &str, metrics: &Metrics) -> Result<Self, Error> {
        let reader = Self::create(cfg, topic, group, metrics)?;
        reader.consumer.subscribe(&[topic.name]).map_err(|e| Error::kafka("subscribe", e))?;
        Ok(reader)
    }

    /// Reads every partition of `topic` from the given offset (e.g.
    /// `Offset::End` for a live viewer) without a group: nothing is committed.
    pub fn assign(
        cfg: &KafkaConfig,
        topic: &TopicSpec,
        partitions: i32,
        from: Offset,
        metrics: &Metrics,
    ) -> Result<Self, Error> {
        let group = format!("vigil-reader-{}", std::process::id());
        Self::assign_from(cfg, topic, &group, &(0..partitions).map(|p| (p, from)).collect(), metrics)
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
        let reader = Self::create(cfg, topic, group, metrics)?;
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in from {
            tpl.add_partition_offset(topic.name, p, o).map_err(|e| Error::kafka("assign", e))?;
        }
        reader.consumer.assign(&tpl).map_err(|e| Error::kafka("assign", e))?;
        Ok(reader)
    }

    /// Replaces the assignment: reads exactly `from` from now on, forgetting
    /// positions and half-collected frames of the old assignment (records
    /// of partitions no longer assigned are never returned after this).
    pub fn reassign(&mut self, from: &HashMap<i32, Offset>) -> Result<(), Error> {
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in from {
            tpl.add_partition_offset(&self.topic, p, o).map_err(|e| Error::kafka("assign", e))?;
        }
        self.consumer.assign(&tpl).map_err(|e| Error::kafka("assign", e))?;
        self.next_offset.clear();
        self.first_chunk.clear();
        self.reassembler = Reassembler::new(Limits::default());
        Ok(())
    }

    /// Per partition, the offset a sink may resume from once it has stored
    /// every frame returned so far: after the last record read, but never
    /// past the first chunk of a frame still being collected.
    pub fn resume_offsets(&self) -> HashMap<i32, i64> {
        let mut out = self.next_offset.clone();
        for &(p, o) in self.first_chunk.values() {
            let e = out.entry(p).or_insert(o);
            *e = (*e).min(o);
        }
        out
    }

    fn create(cfg: &KafkaConfig, topic: &TopicSpec, group: &str, metrics: &Metrics) -> Result<Self, Error> {
        let mut c = cfg.consumer_config(topic.delivery, group);
        c.set("statistics.interval.ms", "5000");
        let ctx = LagContext { metrics: metrics.clone(), group: group.to_string() };
        let consumer = c.create_with_context(ctx).map_err(|e| Error::kafka("create consumer", e))?;
        let labels = [("topic", topic.name)];
        Ok(FrameReader {
            consumer,
            commits: topic.delivery.consumer_commits(),
            next_offset: HashMap::new(),
            first_chunk: HashMap::new(),
            topic: topic.name.to_string(),
            metrics: metrics.clone(),
            reassembler: Reassembler::new(Limits::default()),
            cameras: HashMap::new(),
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
            last_expire: Instant::now(),
        })
    }

    /// The next whole frame. Kafka errors are returned (the caller decides
    /// whether to retry); bad records are skipped.
    pub async fn next(&mut self) -> Result<Delivered, Error> {
        loop {
            if self.last_expire.elapsed() > Duration::from_secs(1) {
                self.last_expire = Instant::now();
                self.reassembler.expire(Instant::now());
                self.report_problems();
            }
            let msg = match tokio::time::timeout(Duration::from_secs(1), self.consumer.recv()).await {
                Err(_) => continue, // idle: loop to run the timeout check
                Ok(m) => m.map_err(|e| Error::kafka("consume", e))?,
            };
            let (partition, offset) = (msg.partition(), msg.offset());
            self.next_offset.insert(partition, offset + 1);
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
                    if let Some(key) = key {
                        self.first_chunk.remove(&key);
                    }
                    self.count(&frame);
                    return Ok(Delivered { frame, partition, offset });
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
        self.consumer.group_metadata()
    }

    /// Commits `offset + 1` for `partition` to the group, without waiting.
    /// Exactly-once sinks call it only to feed lag metrics; on an
    /// at-most-once topic it does nothing (those consumers never commit).
    pub fn commit(&self, partition: i32, offset: i64) -> Result<(), Error> {
        if self.commits == Commit::Never {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(offset + 1))
            .map_err(|e| Error::kafka("commit", e))?;
        self.consumer.commit(&tpl, CommitMode::Async).map_err(|e| Error::kafka("commit", e))
    }

    fn skip_garbage(&mut self, partition: i32, offset: i64, why: &str) {
        self.garbage.inc();
        let n = self.garbage.get();
        // Log the first few and then one in a thousand: a flood of garbage
        // must not become a flood of logs.
        if n <= 10 || n % 1000 == 0 {
            tracing::warn!(topic = %self.topic, partition, offset, skipped_so_far = n, "skipping record: {why}");
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
            tracing::warn!(topic = %self.topic, camera = %meta.camera, seq = meta.seq, "incomplete frame: {what}");
        }
    }

    fn count(&mut self, frame: &Frame) {
        let cam = &frame.meta.camera;
        if !self.cameras.contains_key(cam) {
            let labels = [("camera", cam.as_str()), ("topic", self.topic.as_str())];
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
        c.age.set((now_us() - frame.meta.capture_us) as f64 / 1e6);
    }
}

pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}
