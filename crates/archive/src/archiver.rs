//! The archive as a stage of the runtime (`crates/stage`), in the mode
//! where the sink owns its progress: frames in, the index's transaction
//! out.
//!
//! The archive's group (`vigil-archive`) splits the partitions of
//! `vigil.frames` between archivers, on one host or many, sharing a dir or
//! not. At every checkpoint (each flush interval, or early when many bytes
//! wait) the runtime calls `commit`: segments written and synced, then one
//! index transaction with the frames and each partition's next offset. Only
//! then does the runtime publish the checkpoint (`vigil.archive.state`): the
//! archive's durable progress per partition, for whoever owns a partition
//! next, in this dir or another. An assigned partition starts at the later
//! of the index's offset and that checkpoint (`stored_offset`).
//!
//! A failed commit (disk full, an I/O error, another writer's offset in the
//! index) cuts back what it wrote and fails the stage: the runtime builds a
//! fresh one, which starts again from the index and the checkpoints, so no
//! frame is lost. While commits fail the archive says it is paused (metric
//! and event), and says when it resumes.

use crate::index::{Index, OffsetUpdate};
use crate::writer::Writer;
use crate::{ArchiveConfig, Error, recover, retention};
use bus::metrics::{Counter, Gauge, Histogram, Metrics};
use bus::{Delivered, FrameReader};
use stage::Output;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub(crate) struct Counters {
    frames: Counter,
    bytes: Counter,
    duplicates: Counter,
    flushes: Counter,
    flush_seconds: Histogram,
    flush_errors: Counter,
    paused: Gauge,
    pub(crate) deleted_bytes: Counter,
}

impl Counters {
    pub(crate) fn new(metrics: &Metrics, topic: &str) -> Self {
        let labels = [("topic", topic)];
        let counter = |name, help| metrics.counter(name, help, &labels);
        Counters {
            frames: counter("vigil_archive_frames_total", "Frames made durable in the archive."),
            bytes: counter("vigil_archive_bytes_total", "Frame bytes made durable in the archive."),
            duplicates: counter("vigil_archive_duplicates_total", "Frames dropped as already archived (camera, seq)."),
            flushes: counter("vigil_archive_flushes_total", "Flushes (one sync + one index transaction each)."),
            flush_seconds: metrics.histogram(
                "vigil_archive_flush_seconds",
                "How long a flush took: segment write and sync, then the index transaction.",
                &labels,
                &bus::metrics::latency_buckets(),
            ),
            flush_errors: counter(
                "vigil_archive_flush_errors_total",
                "Failed flushes (disk full, I/O error); the archive pauses and starts again from its index.",
            ),
            paused: metrics.gauge(
                "vigil_archive_paused",
                "1 while the archive cannot write (disk full) and has stopped consuming.",
                &labels,
            ),
            deleted_bytes: counter("vigil_archive_retention_deleted_bytes_total", "Bytes removed by retention."),
        }
    }
}

/// What outlives one archiver stage: the index, the metrics and whether
/// the archive is paused (a failed commit ends a stage; its successor's
/// first commit ends the pause).
pub(crate) struct Shared {
    pub(crate) cfg: ArchiveConfig,
    pub(crate) topic: &'static str,
    pub(crate) index: Arc<Index>,
    pub(crate) c: Counters,
    pub(crate) events: bus::events::Events,
    paused_since: Mutex<Option<Instant>>,
}

impl Shared {
    pub(crate) fn new(
        cfg: ArchiveConfig,
        topic: &'static str,
        index: Arc<Index>,
        c: Counters,
        events: bus::events::Events,
    ) -> Self {
        Shared { cfg, topic, index, c, events, paused_since: Mutex::new(None) }
    }

    fn source(&self) -> String {
        format!("archive@{}", self.cfg.dir.display())
    }

    fn pause(&self, e: &Error) {
        let mut since = self.paused_since.lock().unwrap_or_else(|p| p.into_inner());
        if since.is_none() {
            *since = Some(Instant::now());
            self.c.paused.set(1.0);
            self.events.publish(bus::events::Event::new("archive-paused", None, &self.source(), e.to_string()));
        }
    }

    fn resume(&self) {
        let mut since = self.paused_since.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = since.take() {
            self.c.paused.set(0.0);
            let detail = format!("paused for {:.1} s", t.elapsed().as_secs_f64());
            tracing::info!("archive resumed after being {detail}");
            self.events.publish(bus::events::Event::new("archive-resumed", None, &self.source(), detail));
        }
    }
}

pub struct Archiver {
    s: Arc<Shared>,
    /// `None` once a failed commit gave it up (its files are then a dead
    /// writer's, which recovery may cut back).
    writer: Option<Writer>,
    /// Per owned partition, the index's next offset as this archiver last
    /// saw or wrote it: what the index must still hold at the next commit.
    positions: HashMap<i32, Option<i64>>,
    /// Each camera's partition, to drop what is pending of a partition the
    /// group took away without a checkpoint.
    partition_of: HashMap<String, i32>,
    last_seq: HashMap<String, u64>,
}

fn stage_error(e: Error) -> stage::Error {
    stage::Error::transient(e)
}

impl Archiver {
    pub(crate) fn new(s: Arc<Shared>, writer: Writer) -> Self {
        Archiver {
            s,
            writer: Some(writer),
            positions: HashMap::new(),
            partition_of: HashMap::new(),
            last_seq: HashMap::new(),
        }
    }

    fn writer(&mut self) -> Result<&mut Writer, stage::Error> {
        self.writer.as_mut().ok_or_else(|| stage::Error::transient("the archive's writer failed; restarting"))
    }

    /// Segments written and synced, then one index transaction with the
    /// frames and the offsets. False when there was nothing to commit.
    async fn write(&mut self, next: &BTreeMap<i32, i64>) -> Result<bool, Error> {
        let offsets: Vec<(i32, i64)> =
            next.iter().filter(|(p, _)| self.positions.contains_key(p)).map(|(&p, &o)| (p, o)).collect();
        let moved = offsets.iter().any(|(p, o)| self.positions[p] != Some(*o));
        let Some(writer) = self.writer.as_mut() else { return Err(Error::Other("no writer".into())) };
        if writer.pending_frames() == 0 && !moved {
            return Ok(false); // nothing new: no transaction
        }
        let started = Instant::now();
        let bytes = writer.pending_bytes() as u64;
        let batch = writer.take();
        let frames = batch.frames() as u64;
        // Blocking file I/O off the stage's thread.
        let mut commit = tokio::task::spawn_blocking(move || batch.write())
            .await
            .map_err(|e| Error::Other(e.to_string()))?
            .map_err(|e| Error::Io { path: PathBuf::from("archive segment"), source: e })?;
        commit.offsets = offsets
            .iter()
            .map(|&(partition, next)| OffsetUpdate {
                topic: self.s.topic.to_string(),
                partition,
                expected: self.positions[&partition],
                next,
            })
            .collect();
        self.s.index.commit(commit).await?;
        for &(p, o) in &offsets {
            self.positions.insert(p, Some(o));
        }
        let c = &self.s.c;
        c.frames.add(frames);
        c.bytes.add(bytes);
        c.flushes.inc();
        c.flush_seconds.observe(started.elapsed().as_secs_f64());
        Ok(true)
    }
}

impl stage::Stage for Archiver {
    /// Nothing beyond the offset: the index holds the rest.
    type State = ();
    type Source = FrameReader;

    async fn stored_offset(&mut self, partition: i32) -> Result<Option<i64>, stage::Error> {
        let stored = self.s.index.offsets(self.s.topic).await.map_err(stage_error)?;
        Ok(stored.get(&partition).copied())
    }

    async fn assign(&mut self, partition: i32, _state: Option<()>) -> Result<(), stage::Error> {
        let stored = self.s.index.offsets(self.s.topic).await.map_err(stage_error)?;
        self.positions.insert(partition, stored.get(&partition).copied());
        // Its cameras may have moved on under another archiver of this dir.
        for (camera, seq) in self.s.index.last_seqs().await.map_err(stage_error)? {
            let l = self.last_seq.entry(camera).or_insert(seq);
            *l = (*l).max(seq);
        }
        // A writer appends only to its newest segment of a camera: whoever
        // archived the partition meanwhile wrote newer ones.
        self.writer()?.close_idle();
        Ok(())
    }

    fn revoke(&mut self, partition: i32) {
        self.positions.remove(&partition);
        // Normally nothing is pending (the runtime committed before); when
        // the group dropped this member without a checkpoint, the frames
        // are its next owner's to archive.
        let cameras: Vec<String> =
            self.partition_of.iter().filter(|(_, p)| **p == partition).map(|(c, _)| c.clone()).collect();
        for camera in cameras {
            self.partition_of.remove(&camera);
            self.last_seq.remove(&camera);
            if let Some(w) = self.writer.as_mut() {
                w.discard(&camera);
            }
        }
    }

    async fn on_input(&mut self, d: Delivered, _out: &mut Output) -> Result<(), stage::Error> {
        if !self.positions.contains_key(&d.partition) {
            return Ok(()); // not ours (any more): its owner archives it
        }
        let m = &d.frame.meta;
        // Per frame: no allocation unless the camera is new here.
        if self.partition_of.get(&m.camera) != Some(&d.partition) {
            self.partition_of.insert(m.camera.clone(), d.partition);
        }
        let below = self.last_seq.get(&m.camera).is_some_and(|&l| m.seq <= l);
        let seen = below
            && (self.writer()?.is_pending(&m.camera, m.seq)
                || self.s.index.contains(&m.camera, m.seq).await.map_err(stage_error)?);
        if seen {
            self.s.c.duplicates.inc();
            return Ok(());
        }
        let l = self.last_seq.entry(m.camera.clone()).or_insert(m.seq);
        *l = (*l).max(m.seq);
        self.writer()?.add(&d.frame);
        Ok(())
    }

    fn checkpoint(&mut self, _partition: i32) -> ((), Option<i64>) {
        ((), None)
    }

    async fn commit(&mut self, next: &BTreeMap<i32, i64>) -> Result<(), stage::Error> {
        match self.write(next).await {
            Ok(committed) => {
                // Only a real commit shows that the disk takes writes again.
                if committed {
                    self.s.resume();
                }
                Ok(())
            }
            Err(e) => {
                // Nothing of the failed flush is in the index. Let go of
                // the writer (its files become a dead writer's) and cut back
                // what it wrote; the next stage starts from the index.
                self.writer = None;
                let disk = !matches!(e, Error::Fenced { .. } | Error::Duplicate { .. });
                if disk {
                    self.s.c.flush_errors.inc();
                    self.s.pause(&e);
                    tracing::error!(error = %e, "archive cannot write: paused until space returns");
                } else {
                    // Another writer of this dir got there first.
                    tracing::error!(error = %e, "archive commit refused: starting again from the index");
                }
                if let Err(e) = recover::recover(&self.s.cfg.dir, &self.s.index).await {
                    tracing::error!(error = %e, "cannot repair segments after the failed flush");
                }
                if disk {
                    // Make room now, not at retention's next tick: the next
                    // stage starts after the restart backoff.
                    let (cfg, now) = (&self.s.cfg, bus::now_us());
                    match retention::enforce(&cfg.dir, &self.s.index, &cfg.retention, now).await {
                        Ok(d) => self.s.c.deleted_bytes.add(d.bytes),
                        Err(e) => tracing::error!(error = %e, "retention after the failed flush"),
                    }
                }
                Err(stage_error(e))
            }
        }
    }

    fn checkpoint_due(&self) -> bool {
        self.writer.as_ref().is_some_and(|w| w.pending_bytes() >= self.s.cfg.flush_bytes)
    }
}
