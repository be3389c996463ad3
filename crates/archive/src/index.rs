//! The archive's index: one SQLite database (WAL, synchronous=FULL) naming
//! every archived frame, its segment file and byte range, and the next Kafka
//! offset of each partition. It is the single source of truth: bytes on
//! disk that it does not name do not exist (recovery removes them).
//!
//! Sized for months (schema version 2, after moonfire-nvr's design): a row
//! per *recording* (up to a minute of one camera's consecutive frames,
//! contiguous in one segment file) with the frames packed into a sample
//! table of a few bytes each (`samples`), not a row per frame. Per-camera
//! and per-segment aggregates (frames, bytes, first/last time) are kept as
//! frames are committed, so listing cameras and planning retention read a
//! row per camera or segment, never the frames. All SQLite work runs on the
//! index's own thread, off the async workers that carry live video. An
//! archive of schema version 1 (a row per frame) is migrated on open
//! (`migrate`).

mod migrate;
mod read;
pub mod samples;
mod write;

use crate::Error;
use libsql::{Connection, params};
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

pub use read::Recording;

/// One archived frame, as the index records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameRow {
    pub camera: String,
    pub seq: u64,
    /// Segment file, relative to the archive dir.
    pub file: String,
    pub offset: u64,
    pub len: u64,
    pub capture_us: i64,
    pub pts_90k: i64,
    pub key: bool,
    pub discontinuity: bool,
    pub codec: String,
    /// CRC32 of the frame's bytes, checked by `vigil check`.
    pub crc: u32,
}

impl FrameRow {
    /// The frame's clocks, from which playback derives durations.
    pub fn stamp(&self) -> crate::mp4::Stamp {
        crate::mp4::Stamp { capture_us: self.capture_us, pts_90k: self.pts_90k }
    }
}

/// A camera's recording in the index, for listing cameras (kept as frames
/// are committed and segments deleted: reading it reads one row).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CameraSummary {
    pub camera: String,
    /// The codec of its newest frame (`h264`, `h265`, `mjpeg`).
    pub codec: String,
    pub first_us: i64,
    pub last_us: i64,
    pub frames: u64,
    /// Frame bytes archived.
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// A segment with the capture times it covers, for retention.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentInfo {
    pub file: String,
    pub camera: String,
    pub bytes: u64,
    pub first_us: i64,
    pub last_us: i64,
}

/// What one flush commits, atomically.
#[derive(Clone, Debug, Default)]
pub struct Commit {
    pub frames: Vec<FrameRow>,
    /// Segment file → committed length after this flush.
    pub segments: Vec<(String, String, u64)>,
    pub offsets: Vec<OffsetUpdate>,
}

/// A partition's next offset to read, moved on only from where this
/// archiver last saw it: a check that fences off any other writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetUpdate {
    pub topic: String,
    pub partition: i32,
    /// The index's value when this archiver took the partition or last
    /// committed it (`None`: no row yet).
    pub expected: Option<i64>,
    pub next: i64,
}

/// The schema's version (`PRAGMA user_version`); 1 had a row per frame.
pub const VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS recording (
    camera TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    frames INTEGER NOT NULL,
    file TEXT NOT NULL,
    offset INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    first_us INTEGER NOT NULL,
    last_us INTEGER NOT NULL,
    last_pts INTEGER NOT NULL,
    codec TEXT NOT NULL,
    samples BLOB NOT NULL,
    PRIMARY KEY (camera, first_seq)
) WITHOUT ROWID;
-- Covering: a timeline reads only the index, never the sample tables.
CREATE INDEX IF NOT EXISTS recording_time ON recording (camera, first_us, last_us);
CREATE INDEX IF NOT EXISTS recording_file ON recording (file);
CREATE TABLE IF NOT EXISTS camera (
    camera TEXT PRIMARY KEY,
    codec TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    first_us INTEGER NOT NULL,
    last_us INTEGER NOT NULL,
    frames INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    -- 1 once a frame arrived below the camera's newest seq: its recordings
    -- may overlap in seq and time, and readers take the careful path.
    overlaps INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS segment (
    file TEXT PRIMARY KEY,
    camera TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    frames INTEGER NOT NULL DEFAULT 0,
    first_us INTEGER,
    last_us INTEGER
);
CREATE INDEX IF NOT EXISTS segment_age ON segment (first_us, file);
CREATE TABLE IF NOT EXISTS kafka_offset (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
";

/// The database, used by one task at a time on the index's own thread.
type Conn = Arc<tokio::sync::Mutex<Connection>>;

pub struct Index {
    conn: Conn,
    /// The index thread's runtime: every query runs there.
    rt: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
    _db: Arc<libsql::Database>,
}

impl Index {
    /// Opens (creating or migrating) the index at `path`.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        let (rt, stop) = index_thread()?;
        let path = path.to_path_buf();
        let opened = rt
            .spawn(async move {
                let db = libsql::Builder::new_local(&path).build().await.map_err(|e| Error::index("open", e))?;
                let conn = db.connect().map_err(|e| Error::index("connect", e))?;
                // Wait for locks first: opening the WAL of a writer that
                // just stopped (or was killed) while another process reads
                // takes a lock. WAL with FULL sync: a committed transaction
                // survives a power cut. A small WAL: checkpoints often,
                // shrinks back.
                for pragma in [
                    "PRAGMA busy_timeout=10000",
                    "PRAGMA journal_mode=WAL",
                    "PRAGMA synchronous=FULL",
                    "PRAGMA wal_autocheckpoint=256",
                    "PRAGMA journal_size_limit=1048576",
                    // Sample tables are read in bulk (playback, check):
                    // through a memory map, not a read per page.
                    "PRAGMA mmap_size=1073741824",
                    "PRAGMA cache_size=-16384",
                ] {
                    let mut rows = conn.query(pragma, ()).await.map_err(|e| Error::index("pragma", e))?;
                    while rows.next().await.map_err(|e| Error::index("pragma", e))?.is_some() {}
                }
                migrate::prepare(&conn, &path).await?;
                Ok::<_, Error>((db, conn))
            })
            .await
            .map_err(thread_gone)??;
        let (db, conn) = opened;
        Ok(Index { conn: Arc::new(tokio::sync::Mutex::new(conn)), rt, _stop: stop, _db: Arc::new(db) })
    }

    /// Opens an existing index for reading only: no pragma, migration or
    /// sync is written, so what a reader sees is exactly what the archiver
    /// made durable (the power-cut test reads between cuts this way).
    pub async fn open_read_only(path: &Path) -> Result<Self, Error> {
        let (rt, stop) = index_thread()?;
        let path = path.to_path_buf();
        let opened = rt
            .spawn(async move {
                let db = libsql::Builder::new_local(&path)
                    .flags(libsql::OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .build()
                    .await
                    .map_err(|e| Error::index("open read-only", e))?;
                let conn = db.connect().map_err(|e| Error::index("connect", e))?;
                Ok::<_, Error>((db, conn))
            })
            .await
            .map_err(thread_gone)??;
        let (db, conn) = opened;
        Ok(Index { conn: Arc::new(tokio::sync::Mutex::new(conn)), rt, _stop: stop, _db: Arc::new(db) })
    }

    /// Runs `f` with the connection on the index thread, alone.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Connection) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let conn = self.conn.clone();
        self.rt
            .spawn(async move {
                let c = conn.lock().await;
                f(c.clone()).await
            })
            .await
            .map_err(thread_gone)?
    }

    /// Commits a flush: frames, segment lengths and offsets in one
    /// transaction. Fails whole, with `Error::Fenced`, if any partition's
    /// offset is not what the caller expected (another archiver moved it),
    /// and with `Error::Duplicate` if a frame is indexed already.
    pub async fn commit(&self, c: Commit) -> Result<(), Error> {
        self.run(move |conn| async move { write::commit(&conn, &c).await }).await
    }

    /// Next offset to read per partition of `topic`.
    pub async fn offsets(&self, topic: &str) -> Result<HashMap<i32, i64>, Error> {
        let topic = topic.to_string();
        self.run(move |conn| async move {
            let e = |err| Error::index("read offsets", err);
            let mut rows = conn
                .query("SELECT partition, next FROM kafka_offset WHERE topic = ?1", params![topic])
                .await
                .map_err(e)?;
            let mut out = HashMap::new();
            while let Some(r) = rows.next().await.map_err(e)? {
                out.insert(int(&r, 0)? as i32, int(&r, 1)?);
            }
            Ok(out)
        })
        .await
    }

    /// Every segment file and its committed length.
    pub async fn segments(&self) -> Result<HashMap<String, (String, u64)>, Error> {
        Ok(self.segment_infos().await?.into_iter().map(|s| (s.file, (s.camera, s.bytes))).collect())
    }

    /// Every segment with its time span (kept as frames are committed).
    pub async fn segment_infos(&self) -> Result<Vec<SegmentInfo>, Error> {
        self.run(|conn| async move { read::segment_infos(&conn).await }).await
    }

    /// Up to `limit` segments, oldest first, after `after` (its first
    /// capture time and file): what retention pages through.
    pub async fn oldest_segments(&self, after: Option<(i64, String)>, limit: usize) -> Result<Vec<SegmentInfo>, Error> {
        self.run(move |conn| async move { read::oldest_segments(&conn, after, limit).await }).await
    }

    /// The newest segment of `camera` written by `writer`.
    pub async fn newest_segment_of(&self, camera: &str, writer: &str) -> Result<Option<String>, Error> {
        let (camera, writer) = (camera.to_string(), writer.to_string());
        self.run(move |conn| async move { read::newest_segment_of(&conn, &camera, &writer).await }).await
    }

    /// Forgets a segment and its frames (the file is removed afterwards).
    pub async fn delete_segment(&self, file: &str) -> Result<(), Error> {
        let file = file.to_string();
        self.run(move |conn| async move { write::delete_segment(&conn, &file).await }).await
    }

    /// The highest archived seq of each camera.
    pub async fn last_seqs(&self) -> Result<HashMap<String, u64>, Error> {
        Ok(self.cameras().await?.into_iter().map(|c| (c.camera, c.last_seq)).collect())
    }

    /// Every camera with frames: codec, first and last capture time, frame
    /// and byte counts. One row per camera.
    pub async fn cameras(&self) -> Result<Vec<CameraSummary>, Error> {
        self.run(|conn| async move { read::cameras(&conn).await }).await
    }

    pub async fn contains(&self, camera: &str, seq: u64) -> Result<bool, Error> {
        let camera = camera.to_string();
        self.run(move |conn| async move { read::contains(&conn, &camera, seq).await }).await
    }

    /// Every frame of `camera` (all cameras if `None`), in seq order. For
    /// tests and small archives: `frames_by_seq` pages through long ones.
    pub async fn frames(&self, camera: Option<&str>) -> Result<Vec<FrameRow>, Error> {
        let mut out = Vec::new();
        for c in self.cameras().await? {
            if camera.is_none_or(|want| want == c.camera) {
                out.extend(self.frames_by_seq(&c.camera, 0, u64::MAX, usize::MAX).await?);
            }
        }
        Ok(out)
    }

    /// Frames of `camera` captured in [from_us, to_us], starting at the last
    /// key frame at or before `from_us`, in seq order.
    pub async fn frames_between(&self, camera: &str, from_us: i64, to_us: i64) -> Result<Vec<FrameRow>, Error> {
        let camera = camera.to_string();
        self.run(move |conn| async move { read::frames_between(&conn, &camera, from_us, to_us).await }).await
    }

    /// The stretches of `camera` recorded in [from_us, to_us] as (first,
    /// last) capture times: recordings at most `max_gap_us` apart merge (a
    /// recording never spans a gap of more than `playback::GAP_US`).
    pub async fn recorded_ranges(
        &self,
        camera: &str,
        from_us: i64,
        to_us: i64,
        max_gap_us: i64,
    ) -> Result<Vec<(i64, i64)>, Error> {
        let camera = camera.to_string();
        self.run(move |conn| async move { read::recorded_ranges(&conn, &camera, from_us, to_us, max_gap_us).await })
            .await
    }

    /// The seqs of `camera` to play [from_us, to_us] from: the first frame
    /// at or after `from_us` if it is a key frame (so a start in a gap
    /// begins after the gap), else the last key frame before it (the
    /// decoder needs its GOP); up to the last frame at or before `to_us`.
    /// `None` if no frame was captured in the range.
    pub async fn seq_span(&self, camera: &str, from_us: i64, to_us: i64) -> Result<Option<(u64, u64)>, Error> {
        let camera = camera.to_string();
        self.run(move |conn| async move { read::seq_span(&conn, &camera, from_us, to_us).await }).await
    }

    /// Up to `limit` frames of `camera` with seq in [from_seq, to_seq], in
    /// seq order: a page of a long range, read with bounded memory.
    pub async fn frames_by_seq(
        &self,
        camera: &str,
        from_seq: u64,
        to_seq: u64,
        limit: usize,
    ) -> Result<Vec<FrameRow>, Error> {
        let camera = camera.to_string();
        self.run(move |conn| async move { read::frames_by_seq(&conn, &camera, from_seq, to_seq, limit).await }).await
    }

    /// Up to `limit` recordings of `camera` with a first seq above
    /// `after`, in seq order: what `vigil check` streams through.
    pub async fn recordings(&self, camera: &str, after: Option<u64>, limit: usize) -> Result<Vec<Recording>, Error> {
        let camera = camera.to_string();
        self.run(move |conn| async move { read::recordings(&conn, &camera, after, limit).await }).await
    }

    /// Cameras and segments as of one moment (one read transaction): what
    /// `vigil check` audits against, while archivers go on writing.
    pub async fn snapshot(&self) -> Result<(Vec<CameraSummary>, Vec<SegmentInfo>), Error> {
        self.run(|conn| async move {
            let tx = conn.transaction().await.map_err(|e| Error::index("begin", e))?;
            let cameras = read::cameras(&tx).await?;
            let segments = read::segment_infos(&tx).await?;
            tx.commit().await.map_err(|e| Error::index("end", e))?;
            Ok((cameras, segments))
        })
        .await
    }
}

/// A thread with a runtime of its own for SQLite; it ends when the sender
/// returned with it is dropped.
fn index_thread() -> Result<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>), Error> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("archive-index".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = handle_tx.send(Err(e));
                    return;
                }
            };
            let _ = handle_tx.send(Ok(rt.handle().clone()));
            rt.block_on(async {
                let _ = stop_rx.await;
            });
        })
        .map_err(|e| Error::Other(format!("cannot start the archive index thread: {e}")))?;
    let handle = handle_rx
        .recv()
        .map_err(|_| Error::Other("the archive index thread did not start".into()))?
        .map_err(|e| Error::Other(format!("cannot start the archive index runtime: {e}")))?;
    Ok((handle, stop_tx))
}

fn thread_gone(e: tokio::task::JoinError) -> Error {
    Error::Other(format!("archive index: {e}"))
}

pub(crate) fn int(r: &libsql::Row, i: i32) -> Result<i64, Error> {
    r.get::<i64>(i).map_err(|e| Error::index("read column", e))
}

pub(crate) fn text(r: &libsql::Row, i: i32) -> Result<String, Error> {
    r.get::<String>(i).map_err(|e| Error::index("read column", e))
}

/// A blob column; any other type is an error (a damaged index), not a panic.
pub(crate) fn blob(r: &libsql::Row, i: i32) -> Result<Vec<u8>, Error> {
    match r.get_value(i).map_err(|e| Error::index("read column", e))? {
        libsql::Value::Blob(b) => Ok(b),
        other => Err(Error::Other(format!("archive index: a sample table is not a blob ({other:?})"))),
    }
}
