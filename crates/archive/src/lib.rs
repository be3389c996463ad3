//! The archive ("saved on HDD"): consumes `vigil.frames` and keeps every
//! frame of every camera on local disk exactly once, indexed by time.
//!
//! - `writer`: frames → per-camera append-only segment files, one sync per flush;
//! - `index`: the SQLite index: recordings with packed sample tables,
//!   per-camera and per-segment aggregates, Kafka offsets;
//! - `recover`: start-up repair, files cut back to what the index names;
//! - `check`: the audit behind `vigil check`, of one dir or several;
//! - `lock`: who is alive in a dir that several archivers share;
//! - `archiver`: the archive as a stage of the runtime (`crates/stage`),
//!   whose group splits the partitions between archivers; `run`: the role.
//!
//! Exactly-once (ARCHITECTURE.md): the archive owns its offsets. A flush
//! writes and fsyncs the data (file, then directory), then commits the index
//! rows and the next offset of every partition in one transaction, and only
//! then publishes that progress to `vigil.archive.state`. A partition
//! assigned to an archiver resumes at the later of its index's offset and
//! the published one. Frames that arrive again (a replay, a producer
//! resend) are recognised by (camera, seq) and dropped.

mod archiver;
pub mod check;
pub mod export;
pub mod fmp4;
pub mod index;
pub mod lock;
pub mod mp4;
pub mod playback;
pub mod recover;
pub mod retention;
mod run;
pub mod writer;

pub use archiver::Archiver;
use index::Index;
pub use run::{run, stage_spec};
use std::path::{Path, PathBuf};
use std::time::Duration;
use writer::SegmentLimits;

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
    #[error(transparent)]
    Stage(#[from] stage::Error),
    #[error("camera {camera}: frame {seq} is in the archive already")]
    Duplicate { camera: String, seq: u64 },
    #[error("partition {partition}: the index's offset is {found:?}, expected {expected:?}: another archiver wrote it")]
    Fenced { partition: i32, expected: Option<i64>, found: Option<i64> },
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
    /// This process in the archive's group (host, dir and pid: archivers
    /// may share a dir); empty: the pid.
    pub member: String,
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
            member: String::new(),
        }
    }
}

pub async fn open_index(dir: &Path) -> Result<Index, Error> {
    let io = |e| Error::Io { path: dir.to_path_buf(), source: e };
    create_durable_dir(dir).map_err(io)?;
    let index = Index::open(&dir.join("index.db")).await?;
    // The database and its WAL are names in `dir`: durable before any
    // commit counts on them (tests/power_cut.rs lost a whole new archive
    // without this and the parents' syncs).
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(index)
}

/// Creates `dir` and its missing parents, and fsyncs the parent of each
/// one it creates, so that the new names survive a power cut.
fn create_durable_dir(dir: &Path) -> std::io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    std::fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use index::{Commit, OffsetUpdate};
    use media::{Codec, Frame, FrameMeta, Stream};
    use writer::Writer;

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
        let mut w = Writer::new(&d, SegmentLimits { max_bytes: 1000, max_duration_us: i64::MAX }).unwrap();
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
        commit.offsets = vec![index::OffsetUpdate { topic: "t".into(), partition: 0, expected: None, next: 42 }];
        index.commit(commit.clone()).await.unwrap();
        // A crash after writing the next flush's bytes but before its commit,
        // plus a segment file the index never heard of.
        w.add(&frame("c", 9, false, false, 300));
        let _ = w.take().write().unwrap();
        std::fs::write(d.join("c/00000000000000000099-x.seg"), b"junk").unwrap();

        // A live writer's bytes past the index are a flush in progress:
        // check leaves them out; the unknown file is counted.
        let before = check::check(&d, &index, None, &Default::default()).await.unwrap();
        assert_eq!(before[0].without_index_bytes, 4);
        // While the writer lives its bytes past the index are a flush in
        // progress (another archiver may share the dir): left alone.
        let r = recover::recover(&d, &index).await.unwrap();
        assert_eq!((r.truncated_files, r.removed_files), (0, 1), "only the unknown file goes");
        std::fs::write(d.join("c/00000000000000000099-x.seg"), b"junk").unwrap();
        drop(w); // the writer dies
        let r = recover::recover(&d, &index).await.unwrap();
        assert_eq!((r.truncated_files, r.truncated_bytes, r.removed_files), (1, 300, 1));
        let after = check::check(&d, &index, Some("c"), &Default::default()).await.unwrap();
        let c = &after[0];
        assert_eq!(
            (c.frames, c.missing, c.not_recorded, c.duplicates, c.without_data, c.without_index_bytes),
            (6, 1, 2, 0, 0, 0)
        );
        assert_eq!(c.missing_ranges, vec![(7, 7)]);
        // Ingest said 3 and 7 never reached the broker: 3 is in a restart's
        // gap and counts as lost before the broker; 7 is not (no restart
        // explains it), so it stays missing.
        let lost = check::Lost::from([("c".to_string(), vec![(3, 3), (7, 7)])]);
        let split = &check::check(&d, &index, Some("c"), &lost).await.unwrap()[0];
        assert_eq!((split.lost_before_broker, split.not_recorded, split.missing), (1, 1, 1));
        // A report starting at 4 says the broker acknowledged 3: missing.
        let lost = check::Lost::from([("c".to_string(), vec![(4, 4)])]);
        let split = &check::check(&d, &index, Some("c"), &lost).await.unwrap()[0];
        assert_eq!((split.lost_before_broker, split.not_recorded, split.missing), (1, 0, 2));
        assert_eq!(split.missing_ranges, vec![(3, 3), (7, 7)]);
        // Segments roll at the first key frame past 1000 bytes: 0-2 | 5-8.
        assert_eq!(c.segments.len(), 2);
        assert_eq!(index.offsets("t").await.unwrap()[&0], 42);
        assert_eq!(index.last_seqs().await.unwrap()["c"], 8);

        // Corrupt a byte: the frame is reported as without (good) data.
        let seg = d.join(&c.segments[0].file);
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[10] ^= 0xff;
        std::fs::write(&seg, bytes).unwrap();
        let corrupt = check::check(&d, &index, None, &Default::default()).await.unwrap();
        assert_eq!(corrupt[0].without_data, 1);
        assert!(!corrupt[0].ok());
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Retention deleting segments (index first, then the file) while
    /// `vigil check` runs over and over: frames whose segment vanished
    /// between reading their entries and their bytes are retention's, not
    /// lost data.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn check_beside_retention_raises_no_false_alarm() {
        let d = dir("retention-race");
        let index = std::sync::Arc::new(open_index(&d).await.unwrap());
        // Large frames, so reading a page's bytes takes a while.
        let mut w = Writer::new(&d, SegmentLimits { max_bytes: 150_000, max_duration_us: i64::MAX }).unwrap();
        for seq in 0..400 {
            w.add(&frame("c", seq, seq % 2 == 0, false, 100_000));
            if seq % 20 == 19 {
                index.commit(w.take().write().unwrap()).await.unwrap();
            }
        }
        drop(w);
        let deleter = tokio::spawn({
            let (d, index) = (d.clone(), index.clone());
            async move {
                loop {
                    let (_, segments) = index.snapshot().await.unwrap();
                    // Newest first (retention goes oldest first; the check
                    // does not care which): those are the bytes a check
                    // reads last, so deletions land inside its window.
                    let Some(victim) = segments.iter().max_by_key(|s| s.first_us) else { break };
                    if segments.len() <= 2 {
                        break;
                    }
                    index.delete_segment(&victim.file).await.unwrap();
                    std::fs::remove_file(d.join(&victim.file)).unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
        });
        let (mut checks, mut removed) = (0, 0);
        while !deleter.is_finished() {
            for c in check::check(&d, &index, None, &Default::default()).await.unwrap() {
                assert_eq!((c.without_data, c.duplicates), (0, 0), "check {checks}: (without data, duplicates)");
                removed += c.removed_by_retention;
            }
            checks += 1;
        }
        deleter.await.unwrap();
        eprintln!("{checks} checks; {removed} frames seen going to retention mid-check");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn a_frame_is_indexed_once() {
        let d = dir("once");
        let index = open_index(&d).await.unwrap();
        let mut w = Writer::new(&d, SegmentLimits { max_bytes: 1 << 20, max_duration_us: i64::MAX }).unwrap();
        w.add(&frame("c", 1, true, false, 10));
        index.commit(w.take().write().unwrap()).await.unwrap();
        assert!(index.contains("c", 1).await.unwrap());
        assert!(!index.contains("c", 2).await.unwrap());
        // The primary key refuses a second row for (camera, seq): a commit
        // that tried would fail whole, never half-apply.
        w.add(&frame("c", 1, true, false, 10));
        assert!(index.commit(w.take().write().unwrap()).await.is_err());
        assert_eq!(index.frames(None).await.unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A commit moves a partition's offset only from where its writer last
    /// saw it: a second archiver writing the same partition is refused whole.
    #[tokio::test]
    async fn a_commit_is_fenced_by_the_offset_it_expects() {
        let d = dir("fence");
        let index = open_index(&d).await.unwrap();
        let mut w = Writer::new(&d, SegmentLimits { max_bytes: 1 << 20, max_duration_us: i64::MAX }).unwrap();
        let at = |expected, next| vec![OffsetUpdate { topic: "t".into(), partition: 3, expected, next }];
        let mut commit = Commit { offsets: at(None, 10), ..Default::default() };
        index.commit(commit.clone()).await.unwrap();
        // A zombie that still believes the partition is fresh.
        w.add(&frame("c", 1, true, false, 10));
        commit = w.take().write().unwrap();
        commit.offsets = at(None, 11);
        let e = index.commit(commit.clone()).await.unwrap_err();
        assert!(matches!(e, Error::Fenced { partition: 3, expected: None, found: Some(10) }), "{e}");
        assert!(index.frames(None).await.unwrap().is_empty(), "nothing of a fenced commit lands");
        commit.offsets = at(Some(10), 11);
        index.commit(commit.clone()).await.unwrap();
        assert_eq!(index.offsets("t").await.unwrap()[&3], 11);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Frames committed over many flushes come back exactly, packed into
    /// few recordings (one per minute at most, new ones at segment changes
    /// and discontinuities), and the aggregates follow every commit.
    #[tokio::test]
    async fn many_flushes_read_back_exactly_from_few_recordings() {
        let d = dir("packed");
        let index = open_index(&d).await.unwrap();
        let mut w = Writer::new(&d, SegmentLimits { max_bytes: 40_000, max_duration_us: i64::MAX }).unwrap();
        let mut want = Vec::new();
        for seq in 0..600u64 {
            // 10 fps, a key frame a second, an ingest restart at 300.
            let mut f =
                frame("c", seq + (seq >= 300) as u64 * 50, seq % 10 == 0, seq == 300, 100 + (seq % 13) as usize);
            f.meta.capture_us = 1_000_000 + seq as i64 * 100_000;
            w.add(&f);
            if seq % 7 == 6 {
                let c = w.take().write().unwrap();
                want.extend(c.frames.clone());
                index.commit(c).await.unwrap();
            }
        }
        let c = w.take().write().unwrap();
        want.extend(c.frames.clone());
        index.commit(c).await.unwrap();
        assert_eq!(index.frames(Some("c")).await.unwrap(), want);
        let recs = index.recordings("c", None, 1000).await.unwrap();
        let segs = index.segment_infos().await.unwrap();
        assert!(recs.len() <= segs.len() + 2, "{} recordings for {} segments", recs.len(), segs.len());
        assert!(recs.iter().all(|r| r.last_us - r.first_us <= 61_000_000));
        let cam = &index.cameras().await.unwrap()[0];
        assert_eq!((cam.frames, cam.first_seq, cam.last_seq), (600, 0, 649));
        assert_eq!(cam.bytes, want.iter().map(|f| f.len).sum::<u64>());
        assert_eq!(
            index.seq_span("c", 1_000_000 + 15 * 100_000, 1_000_000 + 25 * 100_000).await.unwrap(),
            Some((10, 25))
        );
        // Deleting the oldest segment takes its frames out of the aggregates.
        let oldest = segs.iter().min_by_key(|s| s.first_us).unwrap().clone();
        index.delete_segment(&oldest.file).await.unwrap();
        let gone = want.iter().filter(|f| f.file == oldest.file).count() as u64;
        let cam = &index.cameras().await.unwrap()[0];
        assert_eq!(cam.frames, 600 - gone);
        assert_eq!(cam.first_seq, want.iter().find(|f| f.file != oldest.file).unwrap().seq);
        let _ = std::fs::remove_dir_all(&d);
    }
}
