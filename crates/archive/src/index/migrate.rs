//! Creating the schema, and migrating an index of schema version 1 (a row
//! per frame) to version 2 (recordings with packed sample tables) when it
//! is opened: in one transaction, so a migration cut short leaves the old
//! index as it was.

use super::{FrameRow, SCHEMA, VERSION, int, text, write};
use crate::Error;
use libsql::{Connection, params};
use std::path::Path;
use std::time::Instant;

async fn scalar(conn: &Connection, sql: &str) -> Result<i64, Error> {
    let e = |err| Error::index("read schema", err);
    let mut rows = conn.query(sql, ()).await.map_err(e)?;
    match rows.next().await.map_err(e)? {
        Some(r) => int(&r, 0),
        None => Ok(0),
    }
}

pub(super) async fn prepare(conn: &Connection, path: &Path) -> Result<(), Error> {
    let e = |what| move |err| Error::index(what, err);
    let version = scalar(conn, "PRAGMA user_version").await?;
    if version > VERSION {
        return Err(Error::Other(format!(
            "archive index {} has schema version {version}, newer than this vigil's ({VERSION}): use a newer vigil",
            path.display()
        )));
    }
    let v1 = scalar(conn, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'frame'").await? > 0;
    if !v1 {
        conn.execute_batch(SCHEMA).await.map_err(e("create schema"))?;
        conn.execute_batch(&format!("PRAGMA user_version = {VERSION}")).await.map_err(e("set schema version"))?;
        return Ok(());
    }
    let started = Instant::now();
    let frames = scalar(conn, "SELECT count(*) FROM frame").await?;
    tracing::info!(index = %path.display(), frames, "archive index: migrating from a row per frame to recordings");
    let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await.map_err(e("begin"))?;
    for column in ["frames INTEGER NOT NULL DEFAULT 0", "first_us INTEGER", "last_us INTEGER"] {
        tx.execute(&format!("ALTER TABLE segment ADD COLUMN {column}"), ()).await.map_err(e("extend segment"))?;
    }
    tx.execute_batch(SCHEMA).await.map_err(e("create schema"))?;
    // Keyset pages in (camera, seq) order: bounded memory for any size.
    let (mut camera, mut seq) = (String::new(), -1i64);
    loop {
        let page = page(&tx, &camera, seq).await?;
        let Some(last) = page.last() else { break };
        (camera, seq) = (last.camera.clone(), last.seq as i64);
        let mut i = 0;
        while i < page.len() {
            let j = page[i..].iter().position(|f| f.camera != page[i].camera).map_or(page.len(), |n| i + n);
            let rows: Vec<&FrameRow> = page[i..j].iter().collect();
            write::add_frames(&tx, &page[i].camera, &rows, false).await?;
            i = j;
        }
    }
    tx.execute(
        "UPDATE segment SET frames = (SELECT count(*) FROM frame f WHERE f.file = segment.file),
           first_us = coalesce((SELECT min(capture_us) FROM frame f WHERE f.file = segment.file), 0),
           last_us = coalesce((SELECT max(capture_us) FROM frame f WHERE f.file = segment.file), 0)",
        (),
    )
    .await
    .map_err(e("fill segments"))?;
    tx.execute("DROP TABLE frame", ()).await.map_err(e("drop frame rows"))?;
    tx.execute_batch(&format!("PRAGMA user_version = {VERSION}")).await.map_err(e("set schema version"))?;
    tx.commit().await.map_err(e("commit migration"))?;
    let recordings = scalar(conn, "SELECT count(*) FROM recording").await?;
    tracing::info!(
        frames,
        recordings,
        millis = started.elapsed().as_millis() as u64,
        "archive index migrated (schema version {VERSION})"
    );
    Ok(())
}

const PAGE: i64 = 20_000;

async fn page(conn: &Connection, camera: &str, seq: i64) -> Result<Vec<FrameRow>, Error> {
    let e = |err| Error::index("read frames", err);
    let mut rows = conn
        .query(
            "SELECT camera, seq, file, offset, len, capture_us, pts_90k, key, discontinuity, codec, crc
             FROM frame WHERE (camera, seq) > (?1, ?2) ORDER BY camera, seq LIMIT ?3",
            params![camera, seq, PAGE],
        )
        .await
        .map_err(e)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().await.map_err(e)? {
        out.push(FrameRow {
            camera: text(&r, 0)?,
            seq: int(&r, 1)? as u64,
            file: text(&r, 2)?,
            offset: int(&r, 3)? as u64,
            len: int(&r, 4)? as u64,
            capture_us: int(&r, 5)?,
            pts_90k: int(&r, 6)?,
            key: int(&r, 7)? != 0,
            discontinuity: int(&r, 8)? != 0,
            codec: text(&r, 9)?,
            crc: int(&r, 10)? as u32,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::Index;
    use super::*;

    /// An index written by the previous vigil (schema version 1) opens as
    /// version 2 with the same frames, segments and offsets.
    #[tokio::test]
    async fn a_version_1_index_is_migrated_on_open() {
        let d = std::env::temp_dir().join(format!("vigil-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("index.db");
        let mut want = Vec::new();
        {
            let db = libsql::Builder::new_local(&path).build().await.unwrap();
            let c = db.connect().unwrap();
            c.execute_batch(V1).await.unwrap();
            let (mut offset, mut seq) = (0u64, 0u64);
            for i in 0..2500u64 {
                // Two cameras, a seq gap, an ingest restart, a second segment.
                let camera = if i % 3 == 0 { "b" } else { "a" };
                seq += if i == 900 { 5 } else { 1 };
                let file = if i < 1200 { format!("{camera}/1.seg") } else { format!("{camera}/2.seg") };
                let len = 100 + i % 7;
                let f = FrameRow {
                    camera: camera.into(),
                    seq,
                    file,
                    offset,
                    len,
                    capture_us: 1_000_000 + seq as i64 * 100_000,
                    pts_90k: seq as i64 * 9000,
                    key: seq % 10 == 0,
                    discontinuity: i == 1500,
                    codec: "h264".into(),
                    crc: i as u32,
                };
                offset += len;
                c.execute(
                    "INSERT INTO frame VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    params![
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
                    ],
                )
                .await
                .unwrap();
                want.push(f);
            }
            for file in ["a/1.seg", "a/2.seg", "b/1.seg", "b/2.seg"] {
                c.execute("INSERT INTO segment VALUES (?1, ?2, 999)", params![file, &file[..1]]).await.unwrap();
            }
            c.execute("INSERT INTO kafka_offset VALUES ('vigil.frames', 0, 4242)", ()).await.unwrap();
        }
        let index = Index::open(&path).await.unwrap();
        want.sort_by(|x, y| (&x.camera, x.seq).cmp(&(&y.camera, y.seq)));
        let got = index.frames(None).await.unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "frames differ after the migration");
        assert_eq!(index.offsets("vigil.frames").await.unwrap()[&0], 4242);
        let cams = index.cameras().await.unwrap();
        assert_eq!(cams.iter().map(|c| c.frames).sum::<u64>(), 2500);
        let segs = index.segment_infos().await.unwrap();
        assert_eq!(segs.len(), 4);
        assert!(segs.iter().all(|s| s.bytes == 999 && s.first_us > 0 && s.last_us >= s.first_us), "{segs:?}");
        drop(index);
        // Opening again finds version 2: nothing to do.
        let again = Index::open(&path).await.unwrap();
        assert_eq!(again.frames(Some("a")).await.unwrap().len(), want.iter().filter(|f| f.camera == "a").count());
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Schema version 1, as the previous vigil created it.
    const V1: &str = "
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
}
