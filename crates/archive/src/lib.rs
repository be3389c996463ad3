//! The archive ("saved on HDD"): consumes `vigil.frames` and keeps every
//! frame of every camera on local disk exactly once, indexed by time.
//!
//! - `writer`: frames → per-camera append-only segment files, one sync per flush;
//! - `index`: the SQLite index of frames, segments and Kafka offsets;
//! - `recover`: start-up repair, files cut back to what the index names;
//! - `check`: the audit behind `vigil check`.
//!
//! Exactly-once (ARCHITECTURE.md): the archive owns its offsets. A flush
//! writes and fsyncs the data (file, then directory), then commits the index
//! rows and the next offset of every partition in one transaction. On start
//! it repairs the files, then resumes every partition at the index's offset.
//! Frames that arrive again (a replay, a producer resend) are recognised by
//! (camera, seq) and dropped.

pub mod check;
pub mod export;
pub mod index;
pub mod mp4;
pub mod recover;
pub mod retention;
pub mod writer;

use bus::metrics::{Counter, Metrics};
use bus::{FrameReader, KafkaConfig, TopicSpec};
use index::Index;
use rdkafka::Offset;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use writer::{SegmentLimits, Writer};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("archive index: {what}: {source}")]
    Index {
        what: &'static str,
        #[source]
        source: libsql::Error,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub(crate) fn index(what: &'static str, source: libsql::Error) -> Self {
        Error::Index { what, source }
    }
}

#[derive(Clone, Debug)]
pub struct ArchiveConfig {
    /// The archive's own dir (`<data dir>/archive`).
    pub dir: PathBuf,
    /// Longest time a frame waits in memory before it is durable.
    pub flush_interval: Duration,
    /// Flush early when this many bytes are pending.
    pub flush_bytes: usize,
    pub segment: SegmentLimits,
    pub retention: retention::Retention,
    /// How often retention runs (and how long a paused archive waits).
    pub retention_interval: Duration,
}

impl ArchiveConfig {
    pub fn new(data_dir: &Path) -> Self {
        ArchiveConfig {
            dir: data_dir.join("archive"),
            flush_interval: Duration::from_secs(1),
            flush_bytes: 32 << 20,
            segment: SegmentLimits { max_bytes: 256 << 20, max_duration_us: 10 * 60 * 1_000_000 },
            retention: retention::Retention { min_free_bytes: Some(1 << 30), ..Default::default() },
            retention_interval: Duration::from_secs(10),
        }
    }
}

/// The consumer group the archive reports its position to (lag metrics only).
pub const GROUP: &str = "vigil-archive";

pub async fn open_index(dir: &Path) -> Result<Index, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
    Index::open(&dir.join("index.db")).await
}

struct Counters {
    frames: Counter,
    bytes: Counter,
    duplicates: Counter,
    flushes: Counter,
    flush_errors: Counter,
    paused: bus::metrics::Gauge,
    deleted_bytes: Counter,
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
    let r = recover::recover(&cfg.dir, &index).await?;
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
    let labels = [("topic", topic.name)];
    let c = Counters {
        frames: metrics.counter("vigil_archive_frames_total", "Frames made durable in the archive.", &labels),
        bytes: metrics.counter("vigil_archive_bytes_total", "Frame bytes made durable in the archive.", &labels),
        duplicates: metrics.counter(
            "vigil_archive_duplicates_total",
            "Frames dropped as already archived (camera, seq).",
            &labels,
        ),
        flushes: metrics.counter(
            "vigil_archive_flushes_total",
            "Flushes (one sync + one index transaction each).",
            &labels,
        ),
        flush_errors: metrics.counter(
            "vigil_archive_flush_errors_total",
            "Failed flushes (disk full, I/O error); consumption pauses and rewinds.",
            &labels,
        ),
        paused: metrics.gauge(
            "vigil_archive_paused",
            "1 while the archive cannot write (disk full) and has stopped consuming.",
            &labels,
        ),
        deleted_bytes: metrics.counter(
            "vigil_archive_retention_deleted_bytes_total",
            "Bytes removed by retention.",
            &labels,
        ),
    };
    let events = bus::events::Events::new(&kafka)?;
    let source = format!("archive@{}", cfg.dir.display());
    let mut paused_since: Option<std::time::Instant> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    'session: loop {
        // (Re)start consuming exactly where the index says.
        let stored = index.offsets(topic.name).await?;
        let from: HashMap<i32, Offset> =
            (0..partitions).map(|p| (p, stored.get(&p).map_or(Offset::Beginning, |&o| Offset::Offset(o)))).collect();
        let mut reader = FrameReader::assign_from(&kafka, &topic, GROUP, &from, &metrics)?;
        let mut last_seq = index.last_seqs().await?;
        let mut writer = Writer::new(&cfg.dir, cfg.segment.clone());
        let mut tick = tokio::time::interval(cfg.flush_interval);
        let mut retention_tick = tokio::time::interval(cfg.retention_interval);
        let mut committed = stored.clone();
        loop {
            let stop = tokio::select! {
                d = reader.next() => {
                    match d {
                        Ok(d) => {
                            let m = &d.frame.meta;
                            let seen = last_seq.get(&m.camera).is_some_and(|&l| m.seq <= l)
                                && (writer.is_pending(&m.camera, m.seq) || index.contains(&m.camera, m.seq).await?);
                            if seen {
                                c.duplicates.inc();
                            } else {
                                let l = last_seq.entry(m.camera.clone()).or_insert(m.seq);
                                *l = (*l).max(m.seq);
                                writer.add(&d.frame);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "consume error");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                    if writer.pending_bytes() < cfg.flush_bytes { continue; }
                    false
                }
                _ = tick.tick() => false,
                _ = retention_tick.tick() => {
                    match retention::enforce(&cfg.dir, &index, &cfg.retention, &writer.open_files(), bus::now_us()).await {
                        Ok(d) => c.deleted_bytes.add(d.bytes),
                        Err(e) => tracing::error!(error = %e, "retention failed"),
                    }
                    continue;
                }
                _ = &mut shutdown => true,
            };
            if let Err(e) = flush(&mut writer, &index, &reader, topic.name, &mut committed, &c).await {
                // Disk full or an I/O error: nothing of this flush is in the
                // index. Stop consuming, free space if retention may, and
                // start again from the index's offsets: no frame is lost.
                c.flush_errors.inc();
                if paused_since.is_none() {
                    paused_since = Some(std::time::Instant::now());
                    c.paused.set(1.0);
                    events.publish(bus::events::Event::new("archive-paused", None, &source, e.to_string()));
                }
                tracing::error!(error = %e, "archive cannot write: paused until space returns");
                drop(reader);
                // Cut back what the failed flush wrote, as at start-up.
                if let Err(e) = recover::recover(&cfg.dir, &index).await {
                    tracing::error!(error = %e, "cannot repair segments after the failed flush");
                }
                if let Err(e) =
                    retention::enforce(&cfg.dir, &index, &cfg.retention, &Default::default(), bus::now_us()).await
                {
                    tracing::error!(error = %e, "retention failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(cfg.retention_interval.min(Duration::from_secs(5))) => continue 'session,
                    _ = &mut shutdown => return Ok(()),
                }
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
        }
    }
}

async fn flush(
    writer: &mut Writer,
    index: &Index,
    reader: &FrameReader,
    topic: &str,
    committed: &mut HashMap<i32, i64>,
    c: &Counters,
) -> Result<(), Error> {
    let offsets = reader.resume_offsets();
    if writer.pending_frames() == 0 && offsets == *committed {
        return Ok(()); // nothing new: no transaction
    }
    let bytes = writer.pending_bytes() as u64;
    let batch = writer.take();
    let frames = batch.frames() as u64;
    // Blocking file I/O off the runtime.
    let mut commit = tokio::task::spawn_blocking(move || batch.write())
        .await
        .map_err(|e| Error::Other(e.to_string()))?
        .map_err(|e| Error::Io { path: PathBuf::from("archive segment"), source: e })?;
    commit.offsets = offsets.iter().map(|(&p, &o)| (topic.to_string(), p, o)).collect();
    index.commit(&commit).await?;
    for (&p, &o) in &offsets {
        let _ = reader.commit(p, o - 1); // lag metrics only
    }
    *committed = offsets;
    c.frames.add(frames);
    c.bytes.add(bytes);
    c.flushes.inc();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use media::{Codec, Frame, FrameMeta, Stream};

    fn frame(camera: &str, seq: u64, key: bool, discontinuity: bool, len: usize) -> Frame {
        Frame {
            meta: FrameMeta {
                camera: camera.into(),
                stream: Stream::Main,
                codec: Codec::H264,
                seq,
                capture_us: seq as i64 * 100_000,
                pts_90k: 0,
                key,
                discontinuity,
            },
            payload: vec![seq as u8; len],
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vigil-archive-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// Writes, commits, then leaves junk as a crash would: recovery must cut
    /// the files back to what the index names, and check must agree.
    #[tokio::test]
    async fn flush_recover_check() {
        let d = dir("frc");
        let index = open_index(&d).await.unwrap();
        let mut w = Writer::new(&d, SegmentLimits { max_bytes: 1000, max_duration_us: i64::MAX });
        // seq 3..=4 skipped by an ingest restart (5 is flagged), 7 lost.
        let script = [
            (0, true, false),
            (1, false, false),
            (2, false, false),
            (5, true, true),
            (6, false, false),
            (8, true, false),
        ];
        for (seq, key, disc) in script {
            w.add(&frame("c", seq, key, disc, 400));
        }
        let mut commit = w.take().write().unwrap();
        commit.offsets = vec![("t".into(), 0, 42)];
        index.commit(&commit).await.unwrap();
        // A crash after writing the next flush's bytes but before its commit,
        // plus a segment file the index never heard of.
        w.add(&frame("c", 9, false, false, 300));
        let _ = w.take().write().unwrap();
        std::fs::write(d.join("c/00000000000000000099-x.seg"), b"junk").unwrap();

        let before = check::check(&d, &index, None).await.unwrap();
        assert_eq!(before[0].without_index_bytes, 304);
        let r = recover::recover(&d, &index).await.unwrap();
        assert_eq!((r.truncated_files, r.truncated_bytes, r.removed_files), (1, 300, 1));
        let after = check::check(&d, &index, Some("c")).await.unwrap();
        let c = &after[0];
        assert_eq!(
            (c.frames, c.missing, c.not_recorded, c.duplicates, c.without_data, c.without_index_bytes),
            (6, 1, 2, 0, 0, 0)
        );
        assert_eq!(c.missing_ranges, vec![(7, 7)]);
        // Segments roll at the first key frame past 1000 bytes: 0-2 | 5-8.
        assert_eq!(c.segments.len(), 2);
        assert_eq!(index.offsets("t").await.unwrap()[&0], 42);
        assert_eq!(index.last_seqs().await.unwrap()["c"], 8);

        // Corrupt a byte: the frame is reported as without (good) data.
        let seg = d.join(&c.segments[0].file);
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[10] ^= 0xff;
        std::fs::write(&seg, bytes).unwrap();
        let corrupt = check::check(&d, &index, None).await.unwrap();
        assert_eq!(corrupt[0].without_data, 1);
        assert!(!corrupt[0].ok());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn a_frame_is_indexed_once() {
        let d = dir("once");
        let index = open_index(&d).await.unwrap();
        let mut w = Writer::new(&d, SegmentLimits { max_bytes: 1 << 20, max_duration_us: i64::MAX });
        w.add(&frame("c", 1, true, false, 10));
        index.commit(&w.take().write().unwrap()).await.unwrap();
        assert!(index.contains("c", 1).await.unwrap());
        assert!(!index.contains("c", 2).await.unwrap());
        // The primary key refuses a second row for (camera, seq): a commit
        // that tried would fail whole, never half-apply.
        w.add(&frame("c", 1, true, false, 10));
        assert!(index.commit(&w.take().write().unwrap()).await.is_err());
        assert_eq!(index.frames(None).await.unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }
}
