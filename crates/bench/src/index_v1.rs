//! The baseline of `vigil-bench index`: the archive index as it was before
//! schema version 2, a SQLite row per frame, with the queries that design
//! ran (from the previous `crates/archive/src/index.rs`). Only what the
//! benchmark times.

use anyhow::Result;
use archive::index::FrameRow;
use libsql::{Connection, params};
use std::path::Path;

pub const SCHEMA: &str = "
CREATE TABLE segment (file TEXT PRIMARY KEY, camera TEXT NOT NULL, bytes INTEGER NOT NULL);
CREATE TABLE frame (camera TEXT NOT NULL, seq INTEGER NOT NULL, file TEXT NOT NULL, offset INTEGER NOT NULL,
    len INTEGER NOT NULL, capture_us INTEGER NOT NULL, pts_90k INTEGER NOT NULL, key INTEGER NOT NULL,
    discontinuity INTEGER NOT NULL, codec TEXT NOT NULL, crc INTEGER NOT NULL, PRIMARY KEY (camera, seq))
    WITHOUT ROWID;
CREATE INDEX frame_time ON frame (camera, capture_us);
CREATE INDEX frame_file ON frame (file);
CREATE TABLE kafka_offset (topic TEXT NOT NULL, partition INTEGER NOT NULL, next INTEGER NOT NULL,
    PRIMARY KEY (topic, partition));
";

pub struct V1 {
    pub conn: Connection,
    _db: libsql::Database,
}

impl V1 {
    pub async fn create(path: &Path) -> Result<Self> {
        let db = libsql::Builder::new_local(path).build().await?;
        let conn = db.connect()?;
        for pragma in ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL"] {
            let mut rows = conn.query(pragma, ()).await?;
            while rows.next().await?.is_some() {}
        }
        conn.execute_batch(SCHEMA).await?;
        Ok(V1 { conn, _db: db })
    }

    /// One flush's frames and segment lengths, as the old commit wrote them.
    pub async fn commit(&self, frames: &[FrameRow], segments: &[(String, String, u64)]) -> Result<()> {
        let tx = self.conn.transaction().await?;
        let insert = tx
            .prepare(
                "INSERT INTO frame (camera, seq, file, offset, len, capture_us, pts_90k, key, discontinuity, codec, crc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .await?;
        for f in frames {
            insert
                .execute(params![
                    f.camera.as_str(),
                    f.seq as i64,
                    f.file.as_str(),
                    f.offset as i64,
                    f.len as i64,
                    f.capture_us,
                    f.pts_90k,
                    f.key as i64,
                    f.discontinuity as i64,
                    f.codec.as_str(),
                    f.crc as i64
                ])
                .await?;
            insert.reset();
        }
        drop(insert);
        for (file, camera, bytes) in segments {
            tx.execute(
                "INSERT INTO segment (file, camera, bytes) VALUES (?1, ?2, ?3)
                 ON CONFLICT (file) DO UPDATE SET bytes = excluded.bytes",
                params![file.as_str(), camera.as_str(), *bytes as i64],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The retention pass's read: every segment's time span.
    pub async fn segment_spans(&self) -> Result<usize> {
        let sql = "SELECT s.file, s.camera, s.bytes, min(f.capture_us), max(f.capture_us)
                   FROM segment s JOIN frame f ON f.file = s.file GROUP BY s.file";
        count(&self.conn, sql, ()).await
    }

    /// The camera list.
    pub async fn cameras(&self) -> Result<usize> {
        let sql = "WITH RECURSIVE cams(camera) AS (
                     SELECT min(camera) FROM frame
                     UNION ALL SELECT (SELECT min(camera) FROM frame WHERE camera > cams.camera)
                     FROM cams WHERE camera IS NOT NULL)
                   SELECT camera,
                     (SELECT min(capture_us) FROM frame f WHERE f.camera = cams.camera),
                     (SELECT max(capture_us) FROM frame f WHERE f.camera = cams.camera),
                     (SELECT count(*) FROM frame f WHERE f.camera = cams.camera),
                     (SELECT codec FROM frame f WHERE f.camera = cams.camera ORDER BY seq DESC LIMIT 1)
                   FROM cams WHERE camera IS NOT NULL";
        count(&self.conn, sql, ()).await
    }

    /// A timeline: recorded stretches, one pass over the time index.
    pub async fn recorded_ranges(&self, camera: &str, from_us: i64, to_us: i64, gap_us: i64) -> Result<usize> {
        let sql = "SELECT capture_us FROM frame WHERE camera = ?1 AND capture_us BETWEEN ?2 AND ?3
                   ORDER BY capture_us";
        let mut rows = self.conn.query(sql, params![camera, from_us, to_us]).await?;
        let mut out: Vec<(i64, i64)> = Vec::new();
        while let Some(r) = rows.next().await? {
            let at: i64 = r.get(0)?;
            match out.last_mut() {
                Some((_, last)) if at - *last <= gap_us => *last = at,
                _ => out.push((at, at)),
            }
        }
        Ok(out.len())
    }

    /// An export's lookup: the frames of a range from its key frame.
    pub async fn frames_between(&self, camera: &str, from_us: i64, to_us: i64) -> Result<usize> {
        let sql = "SELECT camera, seq, file, offset, len, capture_us, pts_90k, key, discontinuity, codec, crc
                   FROM frame WHERE camera = ?1 AND capture_us <= ?3 AND capture_us >= coalesce(
                     (SELECT max(capture_us) FROM frame WHERE camera = ?1 AND key = 1 AND capture_us <= ?2), ?2)
                   ORDER BY seq";
        Ok(rows(&self.conn, sql, params![camera, from_us, to_us]).await?.len())
    }

    /// `vigil check`'s read: every frame of the camera, into memory.
    pub async fn check(&self, camera: &str) -> Result<(u64, u64)> {
        let sql = "SELECT camera, seq, file, offset, len, capture_us, pts_90k, key, discontinuity, codec, crc
                   FROM frame WHERE ?1 IS NULL OR camera = ?1 ORDER BY camera, seq";
        let frames = rows(&self.conn, sql, params![camera]).await?;
        let mut missing = 0;
        for w in frames.windows(2) {
            missing += w[1].seq.saturating_sub(w[0].seq + 1);
        }
        Ok((frames.len() as u64, missing))
    }

    pub async fn delete_segment(&self, file: &str) -> Result<()> {
        let tx = self.conn.transaction().await?;
        tx.execute("DELETE FROM frame WHERE file = ?1", params![file]).await?;
        tx.execute("DELETE FROM segment WHERE file = ?1", params![file]).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn count(conn: &Connection, sql: &str, p: impl libsql::params::IntoParams) -> Result<usize> {
    let mut rows = conn.query(sql, p).await?;
    let mut n = 0;
    while rows.next().await?.is_some() {
        n += 1;
    }
    Ok(n)
}

async fn rows(conn: &Connection, sql: &str, p: impl libsql::params::IntoParams) -> Result<Vec<FrameRow>> {
    let mut rows = conn.query(sql, p).await?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().await? {
        out.push(FrameRow {
            camera: r.get(0)?,
            seq: r.get::<i64>(1)? as u64,
            file: r.get(2)?,
            offset: r.get::<i64>(3)? as u64,
            len: r.get::<i64>(4)? as u64,
            capture_us: r.get(5)?,
            pts_90k: r.get(6)?,
            key: r.get::<i64>(7)? != 0,
            discontinuity: r.get::<i64>(8)? != 0,
            codec: r.get(9)?,
            crc: r.get::<i64>(10)? as u32,
        });
    }
    Ok(out)
}
