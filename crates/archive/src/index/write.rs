//! Committing flushes and deleting segments, keeping the recordings, their
//! sample tables and the per-camera and per-segment aggregates in step.
//!
//! A frame extends its camera's newest recording when it continues it:
//! same segment file, the next bytes, the same codec, a higher seq, no
//! discontinuity, less than `playback::GAP_US` after the recording's last
//! frame, and the recording is under `MAX_FRAMES` frames and (at a key
//! frame) under `MAX_SPAN_US` long. Otherwise it starts a new recording.

use super::samples::{self, Last, Sample};
use super::{Commit, FrameRow, blob, int, text};
use crate::Error;
use crate::playback::GAP_US;
use libsql::{Connection, Transaction, params};
use std::collections::{BTreeMap, HashSet};

/// A new recording starts at the first key frame after this long.
pub const MAX_SPAN_US: i64 = 60_000_000;
/// ... or after this many frames (a camera without key frames).
pub const MAX_FRAMES: u64 = 4096;

/// The newest recording of a camera while a commit extends it.
#[derive(Clone, Debug)]
pub(super) struct Open {
    pub first_seq: u64,
    pub last_seq: u64,
    pub frames: u64,
    pub file: String,
    pub offset: u64,
    pub bytes: u64,
    pub first_us: i64,
    pub last_us: i64,
    pub last_pts: i64,
    pub codec: String,
    /// Whether its row exists already (else it is inserted).
    pub stored: bool,
    /// Its sample table, with what this commit adds.
    pub samples: Vec<u8>,
    /// Whether this commit added any.
    pub changed: bool,
}

impl Open {
    pub fn start(f: &FrameRow) -> Self {
        let mut o = Open {
            first_seq: f.seq,
            last_seq: f.seq,
            frames: 0,
            file: f.file.clone(),
            offset: f.offset,
            bytes: 0,
            first_us: f.capture_us,
            last_us: f.capture_us,
            last_pts: 0,
            codec: f.codec.clone(),
            stored: false,
            samples: Vec::new(),
            changed: false,
        };
        o.push(f);
        o
    }

    pub fn continues(&self, f: &FrameRow) -> bool {
        f.file == self.file
            && f.offset == self.offset + self.bytes
            && f.codec == self.codec
            && f.seq > self.last_seq
            && !f.discontinuity
            && f.capture_us >= self.last_us
            && f.capture_us - self.last_us <= GAP_US
            && self.frames < MAX_FRAMES
            && !(f.key && f.capture_us - self.first_us >= MAX_SPAN_US)
    }

    pub fn push(&mut self, f: &FrameRow) {
        let last = if self.frames == 0 {
            Last { seq: self.first_seq, capture_us: self.first_us, pts_90k: 0 }
        } else {
            Last { seq: self.last_seq, capture_us: self.last_us, pts_90k: self.last_pts }
        };
        let s = Sample {
            seq: f.seq,
            offset: f.offset,
            len: f.len,
            capture_us: f.capture_us,
            pts_90k: f.pts_90k,
            key: f.key,
            discontinuity: f.discontinuity,
            crc: f.crc,
        };
        samples::append(&mut self.samples, last, &s);
        self.changed = true;
        self.last_seq = f.seq;
        self.last_us = f.capture_us;
        self.last_pts = f.pts_90k;
        self.frames += 1;
        self.bytes += f.len;
    }

    /// Writes what this commit added: an insert, or an append to the row.
    pub async fn save(&self, tx: &Connection, camera: &str) -> Result<(), Error> {
        let e = |what| move |err| Error::index(what, err);
        if self.stored {
            tx.execute(
                "UPDATE recording SET last_seq = ?3, frames = ?4, bytes = ?5, last_us = ?6, last_pts = ?7,
                   samples = ?8 WHERE camera = ?1 AND first_seq = ?2",
                params![
                    camera,
                    self.first_seq as i64,
                    self.last_seq as i64,
                    self.frames as i64,
                    self.bytes as i64,
                    self.last_us,
                    self.last_pts,
                    self.samples.clone()
                ],
            )
            .await
            .map_err(e("extend recording"))?;
        } else {
            tx.execute(
                "INSERT INTO recording (camera, first_seq, last_seq, frames, file, offset, bytes, first_us, last_us,
                   last_pts, codec, samples) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    camera,
                    self.first_seq as i64,
                    self.last_seq as i64,
                    self.frames as i64,
                    self.file.as_str(),
                    self.offset as i64,
                    self.bytes as i64,
                    self.first_us,
                    self.last_us,
                    self.last_pts,
                    self.codec.as_str(),
                    self.samples.clone()
                ],
            )
            .await
            .map_err(e("insert recording"))?;
        }
        Ok(())
    }
}

/// A camera's aggregate row while a commit changes it.
#[derive(Clone, Debug, Default)]
pub(super) struct CameraRow {
    pub codec: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_us: i64,
    pub last_us: i64,
    pub frames: u64,
    pub bytes: u64,
    pub overlaps: bool,
}

async fn camera_row(tx: &Connection, camera: &str) -> Result<Option<CameraRow>, Error> {
    let e = |err| Error::index("read camera", err);
    let mut rows = tx
        .query(
            "SELECT codec, first_seq, last_seq, first_us, last_us, frames, bytes, overlaps FROM camera WHERE camera = ?1",
            params![camera],
        )
        .await
        .map_err(e)?;
    let Some(r) = rows.next().await.map_err(e)? else { return Ok(None) };
    Ok(Some(CameraRow {
        codec: text(&r, 0)?,
        first_seq: int(&r, 1)? as u64,
        last_seq: int(&r, 2)? as u64,
        first_us: int(&r, 3)?,
        last_us: int(&r, 4)?,
        frames: int(&r, 5)? as u64,
        bytes: int(&r, 6)? as u64,
        overlaps: int(&r, 7)? != 0,
    }))
}

async fn save_camera(tx: &Connection, camera: &str, c: &CameraRow) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO camera (camera, codec, first_seq, last_seq, first_us, last_us, frames, bytes, overlaps)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (camera) DO UPDATE SET codec = excluded.codec, first_seq = excluded.first_seq,
           last_seq = excluded.last_seq, first_us = excluded.first_us, last_us = excluded.last_us,
           frames = excluded.frames, bytes = excluded.bytes, overlaps = excluded.overlaps",
        params![
            camera,
            c.codec.as_str(),
            c.first_seq as i64,
            c.last_seq as i64,
            c.first_us,
            c.last_us,
            c.frames as i64,
            c.bytes as i64,
            c.overlaps as i64
        ],
    )
    .await
    .map_err(|e| Error::index("save camera", e))?;
    Ok(())
}

/// The newest recording of `camera`, to extend.
async fn newest(tx: &Connection, camera: &str) -> Result<Option<Open>, Error> {
    let e = |err| Error::index("read recording", err);
    let mut rows = tx
        .query(
            "SELECT first_seq, last_seq, frames, file, offset, bytes, first_us, last_us, last_pts, codec, samples
             FROM recording WHERE camera = ?1 ORDER BY first_seq DESC LIMIT 1",
            params![camera],
        )
        .await
        .map_err(e)?;
    let Some(r) = rows.next().await.map_err(e)? else { return Ok(None) };
    Ok(Some(Open {
        first_seq: int(&r, 0)? as u64,
        last_seq: int(&r, 1)? as u64,
        frames: int(&r, 2)? as u64,
        file: text(&r, 3)?,
        offset: int(&r, 4)? as u64,
        bytes: int(&r, 5)? as u64,
        first_us: int(&r, 6)?,
        last_us: int(&r, 7)?,
        last_pts: int(&r, 8)?,
        codec: text(&r, 9)?,
        stored: true,
        samples: blob(&r, 10)?,
        changed: false,
    }))
}

/// Adds one camera's frames (in seq order as they came) to its recordings
/// and aggregate row. `check_duplicates`: refuse frames indexed already
/// (a migration knows there are none).
pub(super) async fn add_frames(
    tx: &Connection,
    camera: &str,
    frames: &[&FrameRow],
    check_duplicates: bool,
) -> Result<(), Error> {
    let mut cam = camera_row(tx, camera).await?;
    let mut open = newest(tx, camera).await?;
    let mut seen = HashSet::new();
    for f in frames {
        if !seen.insert(f.seq) {
            return Err(Error::Duplicate { camera: camera.into(), seq: f.seq });
        }
        let below = cam.as_ref().is_some_and(|c| f.seq <= c.last_seq);
        if below && check_duplicates && super::read::contains(tx, camera, f.seq).await? {
            return Err(Error::Duplicate { camera: camera.into(), seq: f.seq });
        }
        match open.as_mut().filter(|o| o.continues(f)) {
            Some(o) => o.push(f),
            None => {
                if let Some(o) = open.take().filter(|o| o.changed) {
                    o.save(tx, camera).await?;
                }
                open = Some(Open::start(f));
            }
        }
        let c = cam.get_or_insert_with(|| CameraRow {
            first_seq: f.seq,
            first_us: f.capture_us,
            last_seq: f.seq,
            last_us: f.capture_us,
            ..CameraRow::default()
        });
        if below {
            c.overlaps = true;
        }
        c.codec = f.codec.clone();
        c.first_seq = c.first_seq.min(f.seq);
        c.first_us = c.first_us.min(f.capture_us);
        c.last_seq = c.last_seq.max(f.seq);
        c.last_us = c.last_us.max(f.capture_us);
        c.frames += 1;
        c.bytes += f.len;
    }
    if let Some(o) = open.filter(|o| o.changed) {
        o.save(tx, camera).await?;
    }
    if let Some(c) = cam {
        save_camera(tx, camera, &c).await?;
    }
    Ok(())
}

pub(super) async fn commit(conn: &Connection, c: &Commit) -> Result<(), Error> {
    let e = |what| move |err| Error::index(what, err);
    // IMMEDIATE: take the write lock before reading the offsets, so two
    // archivers sharing the index queue (busy_timeout) instead of one
    // failing to upgrade a read snapshot.
    let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await.map_err(e("begin"))?;
    match commit_in(&tx, c).await {
        Ok(()) => tx.commit().await.map_err(e("commit")),
        Err(err) => {
            tx.rollback().await.map_err(e("rollback"))?;
            Err(err)
        }
    }
}

async fn commit_in(tx: &Transaction, c: &Commit) -> Result<(), Error> {
    let e = |what| move |err| Error::index(what, err);
    for o in &c.offsets {
        let mut rows = tx
            .query(
                "SELECT next FROM kafka_offset WHERE topic = ?1 AND partition = ?2",
                params![o.topic.as_str(), o.partition as i64],
            )
            .await
            .map_err(e("read offset"))?;
        let found = match rows.next().await.map_err(e("read offset"))? {
            Some(r) => Some(int(&r, 0)?),
            None => None,
        };
        if found != o.expected {
            return Err(Error::Fenced { partition: o.partition, expected: o.expected, found });
        }
    }
    let mut by_camera: BTreeMap<&str, Vec<&FrameRow>> = BTreeMap::new();
    for f in &c.frames {
        by_camera.entry(f.camera.as_str()).or_default().push(f);
    }
    for (camera, frames) in &by_camera {
        add_frames(tx, camera, frames, true).await?;
    }
    // Per segment: its length, and the frames and times this flush adds.
    let mut spans: BTreeMap<&str, (u64, i64, i64)> = BTreeMap::new();
    for f in &c.frames {
        let s = spans.entry(f.file.as_str()).or_insert((0, f.capture_us, f.capture_us));
        s.0 += 1;
        s.1 = s.1.min(f.capture_us);
        s.2 = s.2.max(f.capture_us);
    }
    for (file, camera, bytes) in &c.segments {
        let (frames, first, last) =
            spans.get(file.as_str()).copied().map_or((0, None, None), |(n, a, b)| (n, Some(a), Some(b)));
        tx.execute(
            "INSERT INTO segment (file, camera, bytes, frames, first_us, last_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (file) DO UPDATE SET bytes = excluded.bytes, frames = frames + excluded.frames,
               first_us = coalesce(min(first_us, excluded.first_us), first_us, excluded.first_us),
               last_us = coalesce(max(last_us, excluded.last_us), last_us, excluded.last_us)",
            params![file.as_str(), camera.as_str(), *bytes as i64, frames as i64, first, last],
        )
        .await
        .map_err(e("upsert segment"))?;
    }
    for o in &c.offsets {
        tx.execute(
            "INSERT INTO kafka_offset (topic, partition, next) VALUES (?1, ?2, ?3)
             ON CONFLICT (topic, partition) DO UPDATE SET next = excluded.next",
            params![o.topic.as_str(), o.partition as i64, o.next],
        )
        .await
        .map_err(e("upsert offset"))?;
    }
    Ok(())
}

/// Forgets a segment: its recordings, its row, and what they added to
/// their camera's aggregates.
pub(super) async fn delete_segment(conn: &Connection, file: &str) -> Result<(), Error> {
    let e = |what| move |err| Error::index(what, err);
    let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await.map_err(e("begin"))?;
    let mut gone: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    {
        let mut rows = tx
            .query("SELECT camera, frames, bytes FROM recording WHERE file = ?1", params![file])
            .await
            .map_err(e("read recordings"))?;
        while let Some(r) = rows.next().await.map_err(e("read recordings"))? {
            let g = gone.entry(text(&r, 0)?).or_default();
            g.0 += int(&r, 1)? as u64;
            g.1 += int(&r, 2)? as u64;
        }
    }
    tx.execute("DELETE FROM recording WHERE file = ?1", params![file]).await.map_err(e("delete recordings"))?;
    tx.execute("DELETE FROM segment WHERE file = ?1", params![file]).await.map_err(e("delete segment"))?;
    for (camera, (frames, bytes)) in gone {
        let Some(mut c) = camera_row(&tx, &camera).await? else { continue };
        // The oldest recording left gives the camera's new start.
        let mut rows = tx
            .query(
                "SELECT first_seq, first_us FROM recording WHERE camera = ?1 ORDER BY first_seq LIMIT 1",
                params![camera.as_str()],
            )
            .await
            .map_err(e("read recordings"))?;
        match rows.next().await.map_err(e("read recordings"))? {
            None => {
                drop(rows);
                tx.execute("DELETE FROM camera WHERE camera = ?1", params![camera.as_str()])
                    .await
                    .map_err(e("delete camera"))?;
            }
            Some(r) => {
                c.first_seq = int(&r, 0)? as u64;
                c.first_us = int(&r, 1)?;
                drop(rows);
                c.frames = c.frames.saturating_sub(frames);
                c.bytes = c.bytes.saturating_sub(bytes);
                save_camera(&tx, &camera, &c).await?;
            }
        }
    }
    tx.commit().await.map_err(e("commit"))
}
