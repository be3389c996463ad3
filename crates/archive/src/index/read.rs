//! Reading the index: recordings found by seq or time, their sample tables
//! decoded into frames.
//!
//! A camera's recordings are ordered and disjoint in seq and time, so one
//! seek finds where a range starts. A camera that once received a frame
//! below its newest seq (`camera.overlaps`) may have recordings that
//! overlap; its reads take every recording that could hold the range and
//! sort the frames, slower and still right.

use super::samples::Samples;
use super::{CameraSummary, FrameRow, SegmentInfo, blob, int, text};
use crate::Error;
use libsql::{Connection, params};

/// One recording: up to a minute of a camera's consecutive frames,
/// contiguous in one segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recording {
    pub camera: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub frames: u64,
    pub file: String,
    pub offset: u64,
    pub bytes: u64,
    pub first_us: i64,
    pub last_us: i64,
    pub codec: String,
    pub samples: Vec<u8>,
}

impl Recording {
    /// Its sample table, entry by entry (no allocation per frame).
    pub fn samples(&self) -> Samples<'_> {
        Samples::new(&self.samples, self.first_seq, self.first_us, self.offset)
    }

    /// Its frames, in order; a sample table that does not decode is an
    /// error naming the recording.
    pub fn rows(&self) -> Result<Vec<FrameRow>, Error> {
        Samples::new(&self.samples, self.first_seq, self.first_us, self.offset)
            .map(|s| {
                let s = s.map_err(|c| {
                    Error::Other(format!(
                        "archive index: the sample table of {} from seq {} is corrupt at byte {}",
                        self.camera, self.first_seq, c.at
                    ))
                })?;
                Ok(FrameRow {
                    camera: self.camera.clone(),
                    seq: s.seq,
                    file: self.file.clone(),
                    offset: s.offset,
                    len: s.len,
                    capture_us: s.capture_us,
                    pts_90k: s.pts_90k,
                    key: s.key,
                    discontinuity: s.discontinuity,
                    codec: self.codec.clone(),
                    crc: s.crc,
                })
            })
            .collect()
    }
}

const COLUMNS: &str = "camera, first_seq, last_seq, frames, file, offset, bytes, first_us, last_us, codec, samples";

async fn query(conn: &Connection, sql: &str, params: impl libsql::params::IntoParams) -> Result<Vec<Recording>, Error> {
    let e = |err| Error::index("read recordings", err);
    let mut rows = conn.query(sql, params).await.map_err(e)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().await.map_err(e)? {
        out.push(Recording {
            camera: text(&r, 0)?,
            first_seq: int(&r, 1)? as u64,
            last_seq: int(&r, 2)? as u64,
            frames: int(&r, 3)? as u64,
            file: text(&r, 4)?,
            offset: int(&r, 5)? as u64,
            bytes: int(&r, 6)? as u64,
            first_us: int(&r, 7)?,
            last_us: int(&r, 8)?,
            codec: text(&r, 9)?,
            samples: blob(&r, 10)?,
        });
    }
    Ok(out)
}

fn seq_param(s: u64) -> i64 {
    s.min(i64::MAX as u64) as i64
}

async fn overlaps(conn: &Connection, camera: &str) -> Result<bool, Error> {
    let e = |err| Error::index("read camera", err);
    let mut rows = conn.query("SELECT overlaps FROM camera WHERE camera = ?1", params![camera]).await.map_err(e)?;
    Ok(match rows.next().await.map_err(e)? {
        Some(r) => int(&r, 0)? != 0,
        None => false,
    })
}

/// The recordings that may hold frames with seq in [from, to], in order.
async fn by_seq(conn: &Connection, camera: &str, from: u64, to: u64, limit: usize) -> Result<Vec<Recording>, Error> {
    let (from, to, limit) = (seq_param(from), seq_param(to), limit.min(i64::MAX as usize) as i64);
    let sql = if overlaps(conn, camera).await? {
        format!(
            "SELECT {COLUMNS} FROM recording WHERE camera = ?1 AND first_seq <= ?3 AND last_seq >= ?2
             ORDER BY first_seq LIMIT ?4"
        )
    } else {
        format!(
            "SELECT {COLUMNS} FROM recording WHERE camera = ?1 AND first_seq BETWEEN coalesce(
               (SELECT max(first_seq) FROM recording WHERE camera = ?1 AND first_seq <= ?2), ?2) AND ?3
             ORDER BY first_seq LIMIT ?4"
        )
    };
    query(conn, &sql, params![camera, from, to, limit]).await
}

/// The recordings that may hold frames captured in [from_us, to_us], in order.
async fn by_time(conn: &Connection, camera: &str, from_us: i64, to_us: i64) -> Result<Vec<Recording>, Error> {
    let sql = if overlaps(conn, camera).await? {
        format!(
            "SELECT {COLUMNS} FROM recording WHERE camera = ?1 AND first_us <= ?3 AND last_us >= ?2
             ORDER BY first_seq"
        )
    } else {
        format!(
            "SELECT {COLUMNS} FROM recording WHERE camera = ?1 AND first_us BETWEEN coalesce(
               (SELECT max(first_us) FROM recording WHERE camera = ?1 AND first_us <= ?2), ?2) AND ?3
             ORDER BY first_us"
        )
    };
    query(conn, &sql, params![camera, from_us, to_us]).await
}

/// Frames of recordings, sorted by seq (already so, unless they overlap).
fn frames_of(recordings: &[Recording]) -> Result<Vec<FrameRow>, Error> {
    let mut out = Vec::new();
    for r in recordings {
        out.extend(r.rows()?);
    }
    if !out.is_sorted_by_key(|f| f.seq) {
        out.sort_by_key(|f| f.seq);
    }
    Ok(out)
}

pub(super) async fn frames_by_seq(
    conn: &Connection,
    camera: &str,
    from: u64,
    to: u64,
    limit: usize,
) -> Result<Vec<FrameRow>, Error> {
    let mut out = Vec::new();
    let mut next = from;
    // Pages of recordings until `limit` frames are found or the range ends.
    loop {
        let recs = by_seq(conn, camera, next, to, 64).await?;
        let done = recs.len() < 64;
        let last = recs.iter().map(|r| r.last_seq).max();
        for f in frames_of(&recs)? {
            if (next..=to).contains(&f.seq) && out.len() < limit {
                out.push(f);
            }
        }
        match last {
            Some(l) if !done && out.len() < limit && l < to => next = l + 1,
            _ => break,
        }
    }
    out.sort_by_key(|f: &FrameRow| f.seq);
    out.dedup_by_key(|f| f.seq);
    out.truncate(limit);
    Ok(out)
}

pub(super) async fn contains(conn: &Connection, camera: &str, seq: u64) -> Result<bool, Error> {
    Ok(by_seq(conn, camera, seq, seq, 64).await?.iter().any(|r| {
        r.first_seq <= seq && seq <= r.last_seq && r.rows().is_ok_and(|rows| rows.iter().any(|f| f.seq == seq))
    }))
}

/// The last key frame captured at or before `at_us`, looking back at most
/// a few recordings (a GOP is far shorter).
async fn key_at_or_before(conn: &Connection, camera: &str, at_us: i64) -> Result<Option<FrameRow>, Error> {
    let sql =
        format!("SELECT {COLUMNS} FROM recording WHERE camera = ?1 AND first_us <= ?2 ORDER BY first_us DESC LIMIT 8");
    for r in query(conn, &sql, params![camera, at_us]).await? {
        if let Some(f) = r.rows()?.into_iter().rev().find(|f| f.key && f.capture_us <= at_us) {
            return Ok(Some(f));
        }
    }
    Ok(None)
}

pub(super) async fn seq_span(
    conn: &Connection,
    camera: &str,
    from_us: i64,
    to_us: i64,
) -> Result<Option<(u64, u64)>, Error> {
    if from_us > to_us {
        return Ok(None);
    }
    let frames = frames_of(&by_time(conn, camera, from_us, to_us).await?)?;
    let mut inside = frames.iter().filter(|f| (from_us..=to_us).contains(&f.capture_us));
    let Some(first) = inside.next() else { return Ok(None) };
    let end = inside.next_back().unwrap_or(first).seq;
    let mut start = first.seq;
    if !first.key
        && let Some(k) = key_at_or_before(conn, camera, from_us).await?
    {
        start = k.seq;
    }
    Ok(Some((start, end.max(first.seq))))
}

pub(super) async fn frames_between(
    conn: &Connection,
    camera: &str,
    from_us: i64,
    to_us: i64,
) -> Result<Vec<FrameRow>, Error> {
    let start_us = key_at_or_before(conn, camera, from_us).await?.map_or(from_us, |k| k.capture_us);
    let frames = frames_of(&by_time(conn, camera, start_us, to_us).await?)?;
    Ok(frames.into_iter().filter(|f| (start_us..=to_us).contains(&f.capture_us)).collect())
}

pub(super) async fn recorded_ranges(
    conn: &Connection,
    camera: &str,
    from_us: i64,
    to_us: i64,
    max_gap_us: i64,
) -> Result<Vec<(i64, i64)>, Error> {
    let sql = if overlaps(conn, camera).await? {
        "SELECT first_us, last_us FROM recording WHERE camera = ?1 AND first_us <= ?3 AND last_us >= ?2 ORDER BY first_us"
    } else {
        "SELECT first_us, last_us FROM recording WHERE camera = ?1 AND first_us BETWEEN coalesce(
           (SELECT max(first_us) FROM recording WHERE camera = ?1 AND first_us <= ?2), ?2) AND ?3
         ORDER BY first_us"
    };
    let e = |err| Error::index("read recorded ranges", err);
    let mut rows = conn.query(sql, params![camera, from_us, to_us]).await.map_err(e)?;
    let mut out: Vec<(i64, i64)> = Vec::new();
    while let Some(r) = rows.next().await.map_err(e)? {
        let (a, b) = (int(&r, 0)?.max(from_us), int(&r, 1)?.min(to_us));
        if a > b {
            continue;
        }
        match out.last_mut() {
            Some((_, last)) if a.saturating_sub(*last) <= max_gap_us => *last = (*last).max(b),
            _ => out.push((a, b)),
        }
    }
    Ok(out)
}

pub(super) async fn recordings(
    conn: &Connection,
    camera: &str,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<Recording>, Error> {
    let sql =
        format!("SELECT {COLUMNS} FROM recording WHERE camera = ?1 AND first_seq > ?2 ORDER BY first_seq LIMIT ?3");
    let after = after.map_or(-1, seq_param);
    query(conn, &sql, params![camera, after, limit.min(i64::MAX as usize) as i64]).await
}

pub(super) async fn cameras(conn: &Connection) -> Result<Vec<CameraSummary>, Error> {
    let e = |err| Error::index("read cameras", err);
    let mut rows = conn
        .query(
            "SELECT camera, codec, first_us, last_us, frames, bytes, first_seq, last_seq FROM camera ORDER BY camera",
            (),
        )
        .await
        .map_err(e)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().await.map_err(e)? {
        out.push(CameraSummary {
            camera: text(&r, 0)?,
            codec: text(&r, 1)?,
            first_us: int(&r, 2)?,
            last_us: int(&r, 3)?,
            frames: int(&r, 4)? as u64,
            bytes: int(&r, 5)? as u64,
            first_seq: int(&r, 6)? as u64,
            last_seq: int(&r, 7)? as u64,
        });
    }
    Ok(out)
}

pub(super) async fn segment_infos(conn: &Connection) -> Result<Vec<SegmentInfo>, Error> {
    segments(conn, "SELECT file, camera, bytes, coalesce(first_us, 0), coalesce(last_us, 0) FROM segment", ()).await
}

pub(super) async fn oldest_segments(
    conn: &Connection,
    after: Option<(i64, String)>,
    limit: usize,
) -> Result<Vec<SegmentInfo>, Error> {
    let (at, file) = after.unwrap_or((i64::MIN, String::new()));
    // Every segment row has its times: a flush that names a file writes frames to it.
    let sql = "SELECT file, camera, bytes, first_us, last_us FROM segment
               WHERE (first_us, file) > (?1, ?2) ORDER BY first_us, file LIMIT ?3";
    segments(conn, sql, params![at, file, limit.min(i64::MAX as usize) as i64]).await
}

pub(super) async fn newest_segment_of(conn: &Connection, camera: &str, writer: &str) -> Result<Option<String>, Error> {
    // Names are `<camera>/<first seq, zero-padded>-<writer>.seg`: the
    // greatest name of a writer is its newest.
    let e = |err| Error::index("read segments", err);
    let mut rows = conn
        .query(
            "SELECT max(file) FROM segment WHERE camera = ?1 AND file GLOB ?2",
            params![camera, format!("{}/*-{}.seg", glob_escape(camera), glob_escape(writer))],
        )
        .await
        .map_err(e)?;
    match rows.next().await.map_err(e)? {
        Some(r) => r.get::<Option<String>>(0).map_err(|e| Error::index("read column", e)),
        None => Ok(None),
    }
}

fn glob_escape(s: &str) -> String {
    s.chars().map(|c| if "*?[".contains(c) { format!("[{c}]") } else { c.to_string() }).collect()
}

async fn segments(conn: &Connection, sql: &str, p: impl libsql::params::IntoParams) -> Result<Vec<SegmentInfo>, Error> {
    let e = |err| Error::index("read segments", err);
    let mut rows = conn.query(sql, p).await.map_err(e)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().await.map_err(e)? {
        out.push(SegmentInfo {
            file: text(&r, 0)?,
            camera: text(&r, 1)?,
            bytes: int(&r, 2)? as u64,
            first_us: int(&r, 3)?,
            last_us: int(&r, 4)?,
        });
    }
    Ok(out)
}
