//! The archive's consume loop: frames in, flushes out, partitions claimed
//! and released, disk-full pauses.

use crate::claims::Claims;
use crate::index::{Index, OffsetUpdate};
use crate::writer::Writer;
use crate::{ArchiveConfig, Error, open_index, recover, retention};
use bus::metrics::{Counter, Gauge, Histogram, Metrics};
use bus::{FrameReader, KafkaConfig, TopicSpec};
use rdkafka::Offset;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Counters {
    frames: Counter,
    bytes: Counter,
    duplicates: Counter,
    flushes: Counter,
    flush_seconds: Histogram,
    flush_errors: Counter,
    paused: Gauge,
    partitions: Gauge,
    deleted_bytes: Counter,
}

impl Counters {
    fn new(metrics: &Metrics, topic: &str) -> Self {
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
                "Failed flushes (disk full, I/O error); consumption pauses and rewinds.",
            ),
            paused: metrics.gauge(
                "vigil_archive_paused",
                "1 while the archive cannot write (disk full) and has stopped consuming.",
                &labels,
            ),
            partitions: metrics.gauge(
                "vigil_archive_partitions_owned",
                "Partitions this archiver archives (archivers sharing a dir split them).",
                &labels,
            ),
            deleted_bytes: counter("vigil_archive_retention_deleted_bytes_total", "Bytes removed by retention."),
        }
    }
}

/// One run of the consume loop; a failed flush ends it and a new one
/// starts from the index.
struct Session<'a> {
    cfg: &'a ArchiveConfig,
    topic: &'static str,
    index: &'a Index,
    c: &'a Counters,
    reader: FrameReader,
    writer: Writer,
    claims: Claims,
    /// Per owned partition, the index's next offset as this session last
    /// saw or wrote it: what the index must still hold at the next commit.
    positions: HashMap<i32, Option<i64>>,
    last_seq: HashMap<String, u64>,
}

impl Session<'_> {
    async fn on_frame(&mut self, d: bus::Delivered) -> Result<(), Error> {
        if !self.positions.contains_key(&d.partition) {
            return Ok(()); // not ours (any more): its owner archives it
        }
        let m = &d.frame.meta;
        let seen = self.last_seq.get(&m.camera).is_some_and(|&l| m.seq <= l)
            && (self.writer.is_pending(&m.camera, m.seq) || self.index.contains(&m.camera, m.seq).await?);
        if seen {
            self.c.duplicates.inc();
            return Ok(());
        }
        let l = self.last_seq.entry(m.camera.clone()).or_insert(m.seq);
        *l = (*l).max(m.seq);
        self.writer.add(&d.frame);
        Ok(())
    }

    /// Makes everything read so far durable: data synced, then one index
    /// transaction with the frames and the next offset of each partition.
    async fn flush(&mut self) -> Result<(), Error> {
        let offsets: HashMap<i32, i64> =
            self.reader.resume_offsets().into_iter().filter(|(p, _)| self.positions.contains_key(p)).collect();
        let moved = offsets.iter().any(|(p, &o)| self.positions[p] != Some(o));
        if self.writer.pending_frames() == 0 && !moved {
            return Ok(()); // nothing new: no transaction
        }
        let started = std::time::Instant::now();
        let bytes = self.writer.pending_bytes() as u64;
        let batch = self.writer.take();
        let frames = batch.frames() as u64;
        // Blocking file I/O off the runtime.
        let mut commit = tokio::task::spawn_blocking(move || batch.write())
            .await
            .map_err(|e| Error::Other(e.to_string()))?
            .map_err(|e| Error::Io { path: PathBuf::from("archive segment"), source: e })?;
        commit.offsets = offsets
            .iter()
            .map(|(&partition, &next)| OffsetUpdate {
                topic: self.topic.to_string(),
                partition,
                expected: self.positions[&partition],
                next,
            })
            .collect();
        self.index.commit(commit).await?;
        for (&p, &o) in &offsets {
            self.positions.insert(p, Some(o));
            let _ = self.reader.commit(p, o); // lag metrics only
        }
        self.c.frames.add(frames);
        self.c.bytes.add(bytes);
        self.c.flushes.inc();
        self.c.flush_seconds.observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Moves towards this archiver's fair share of partitions. Any change
    /// flushes first, then every owned partition restarts at the index's
    /// offset, and a released partition is let go only once this reader can
    /// no longer return its records.
    async fn rebalance(&mut self) -> Result<(), Error> {
        let io = |e| Error::Io { path: self.cfg.dir.clone(), source: e };
        let plan = self.claims.plan().map_err(io)?;
        let claimed = self.claims.claim(plan.claim).map_err(io)?;
        if plan.release.is_empty() && claimed.is_empty() {
            return Ok(());
        }
        self.flush().await?;
        let stored = self.index.offsets(self.topic).await?;
        self.positions = self
            .claims
            .owned()
            .into_iter()
            .filter(|p| !plan.release.contains(p))
            .map(|p| (p, stored.get(&p).copied()))
            .collect();
        let from = self.positions.iter().map(|(&p, o)| (p, o.map_or(Offset::Beginning, Offset::Offset))).collect();
        self.reader.reassign(&from)?;
        self.claims.release(&plan.release);
        // Cameras of newly claimed partitions may have moved on elsewhere.
        self.last_seq = self.index.last_seqs().await?;
        self.writer.close_all();
        self.c.partitions.set(self.positions.len() as f64);
        tracing::info!(owned = ?self.claims.owned(), claimed = ?claimed, released = ?plan.release, "archive partitions changed");
        Ok(())
    }
}

/// Archives until `shutdown` resolves, then flushes what it holds.
pub async fn run(
    cfg: ArchiveConfig,
    kafka: KafkaConfig,
    topic: TopicSpec,
    partitions: i32,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let index = open_index(&cfg.dir).await?;
    repair(&cfg, &index).await?;
    let c = Counters::new(&metrics, topic.name);
    let events = bus::events::Events::new(&kafka)?;
    let source = format!("archive@{}", cfg.dir.display());
    let mut paused_since: Option<Instant> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut first = true;
    loop {
        let parts = FrameReader::assign_from(&kafka, &topic, bus::topics::groups::ARCHIVE, &HashMap::new(), &metrics)
            .map_err(Error::from)
            .and_then(|r| {
                let w = Writer::new(&cfg.dir, cfg.segment.clone());
                w.map(|w| (r, w)).map_err(|e| Error::Io { path: cfg.dir.clone(), source: e })
            });
        let (reader, writer) = match parts {
            Ok(p) => p,
            Err(e) if first => return Err(e), // a set-up problem the user must see
            Err(e) => {
                // After a failed flush: keep trying, as for the flush itself.
                tracing::error!(error = %e, "cannot start the archive session again; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = &mut shutdown => return Ok(()),
                }
            }
        };
        first = false;
        let mut s = Session {
            cfg: &cfg,
            topic: topic.name,
            index: &index,
            c: &c,
            reader,
            writer,
            claims: Claims::new(&cfg.dir, topic.name, partitions),
            positions: HashMap::new(),
            last_seq: HashMap::new(),
        };
        let mut tick = tokio::time::interval(cfg.flush_interval);
        let mut claims_tick = tokio::time::interval(cfg.claims_interval);
        let mut retention_tick = tokio::time::interval(cfg.retention_interval);
        let (stopping, e) = loop {
            let (stop, result) = tokio::select! {
                d = s.reader.next() => {
                    match d {
                        Ok(d) => {
                            if let Err(e) = s.on_frame(d).await {
                                break (false, e);
                            }
                            if s.writer.pending_bytes() < cfg.flush_bytes { continue; }
                        }
                        // Transient errors are retried inside the reader;
                        // this one no retry cures (authentication, say).
                        // What was not flushed is still in Kafka.
                        Err(e) => return Err(e.into()),
                    }
                    (false, s.flush().await)
                }
                _ = tick.tick() => (false, s.flush().await),
                _ = claims_tick.tick() => (false, s.rebalance().await),
                _ = retention_tick.tick() => {
                    match retention::enforce(&cfg.dir, &index, &cfg.retention, bus::now_us()).await {
                        Ok(d) => c.deleted_bytes.add(d.bytes),
                        Err(e) => tracing::error!(error = %e, "retention failed"),
                    }
                    continue;
                }
                _ = &mut shutdown => (true, s.flush().await),
            };
            if let Err(e) = result {
                break (stop, e);
            }
            if let Some(since) = paused_since.take() {
                c.paused.set(0.0);
                let detail = format!("paused for {:.1} s", since.elapsed().as_secs_f64());
                tracing::info!("archive resumed after being {detail}");
                events.publish(bus::events::Event::new("archive-resumed", None, &source, detail));
            }
            if stop {
                tracing::info!("archive stopped");
                return Ok(());
            }
        };
        // Nothing of the failed flush is in the index. Let go of everything
        // (the writer's lock too, so its files count as a dead writer's),
        // cut back what the flush wrote, and start again from the index's
        // offsets: no frame is lost.
        drop(s);
        c.partitions.set(0.0);
        let fenced = matches!(e, Error::Fenced { .. });
        if fenced {
            tracing::error!(error = %e, "archive fenced off: starting again from the index");
        } else {
            // Disk full or an I/O error: pause and free space if retention may.
            c.flush_errors.inc();
            if paused_since.is_none() {
                paused_since = Some(Instant::now());
                c.paused.set(1.0);
                events.publish(bus::events::Event::new("archive-paused", None, &source, e.to_string()));
            }
            tracing::error!(error = %e, "archive cannot write: paused until space returns");
        }
        if let Err(e) = recover::recover(&cfg.dir, &index).await {
            tracing::error!(error = %e, "cannot repair segments after the failed flush");
        }
        if stopping {
            return Err(e); // what was not flushed is still in Kafka
        }
        if !fenced && let Err(e) = retention::enforce(&cfg.dir, &index, &cfg.retention, bus::now_us()).await {
            tracing::error!(error = %e, "retention failed");
        }
        let wait = if fenced { Duration::from_secs(1) } else { cfg.retention_interval.min(Duration::from_secs(5)) };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => return Ok(()),
        }
    }
}

/// Start-up recovery, logged with what it found and how long it took.
async fn repair(cfg: &ArchiveConfig, index: &Index) -> Result<(), Error> {
    let r = recover::recover(&cfg.dir, index).await?;
    tracing::info!(
        segments = r.segments,
        truncated_files = r.truncated_files,
        truncated_bytes = r.truncated_bytes,
        removed_files = r.removed_files,
        removed_bytes = r.removed_bytes,
        short_files = r.short_files.len(),
        millis = r.millis,
        "archive recovery done"
    );
    for f in &r.short_files {
        tracing::error!(file = %f, "segment is shorter than the index says: data lost outside vigil (see vigil check)");
    }
    Ok(())
}
