//! `vigil check`: audit the archive against itself. Per camera: the seq
//! range, frames present, missing seqs (a gap not explained by a
//! `discontinuity` frame, i.e. not an ingest restart), duplicates, index
//! entries whose bytes are missing or corrupt, bytes no index entry names,
//! and a checksum per segment.

use crate::Error;
use crate::index::{FrameRow, Index};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

#[derive(Debug, Default, Serialize)]
pub struct CameraReport {
    pub camera: String,
    pub frames: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Seqs absent from the archive that nothing explains.
    pub missing: u64,
    pub missing_ranges: Vec<(u64, u64)>,
    /// Seqs skipped by an ingest restart (frames never recorded).
    pub not_recorded: u64,
    pub duplicates: u64,
    /// Index entries whose bytes are missing or fail their CRC.
    pub without_data: u64,
    /// Bytes in segment files that no index entry names.
    pub without_index_bytes: u64,
    pub segments: Vec<SegmentReport>,
}

#[derive(Debug, Default, Serialize)]
pub struct SegmentReport {
    pub file: String,
    pub bytes: u64,
    pub crc32: u32,
}

impl CameraReport {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.without_data == 0 && self.without_index_bytes == 0
    }
}

pub async fn check(dir: &Path, index: &Index, camera: Option<&str>) -> Result<Vec<CameraReport>, Error> {
    let rows = index.frames(camera).await?;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || audit(&dir, rows)).await.map_err(|e| Error::Other(e.to_string()))?
}

fn audit(dir: &Path, rows: Vec<FrameRow>) -> Result<Vec<CameraReport>, Error> {
    let mut by_camera: BTreeMap<String, Vec<FrameRow>> = BTreeMap::new();
    for r in rows {
        by_camera.entry(r.camera.clone()).or_default().push(r);
    }
    let mut out = Vec::new();
    for (camera, rows) in by_camera {
        let mut rep = CameraReport { camera: camera.clone(), frames: rows.len() as u64, ..Default::default() };
        rep.first_seq = rows.first().map(|r| r.seq);
        rep.last_seq = rows.last().map(|r| r.seq);
        for w in rows.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            if b.seq == a.seq {
                rep.duplicates += 1;
            } else if b.seq > a.seq + 1 {
                let n = b.seq - a.seq - 1;
                if b.discontinuity {
                    rep.not_recorded += n;
                } else {
                    rep.missing += n;
                    rep.missing_ranges.push((a.seq + 1, b.seq - 1));
                }
            }
        }
        // Bytes: every row's range must exist with the right CRC; every
        // byte of every file must belong to a row.
        let mut files: BTreeMap<&str, Vec<&FrameRow>> = BTreeMap::new();
        for r in &rows {
            files.entry(r.file.as_str()).or_default().push(r);
        }
        // Files on disk for this camera that no row names at all.
        if let Ok(entries) = std::fs::read_dir(dir.join(&camera)) {
            for e in entries.flatten() {
                let rel = format!("{camera}/{}", e.file_name().to_string_lossy());
                if !files.contains_key(rel.as_str()) {
                    rep.without_index_bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                }
            }
        }
        for (file, mut frs) in files {
            frs.sort_by_key(|r| r.offset);
            let path = dir.join(file);
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(_) => {
                    rep.without_data += frs.len() as u64;
                    continue;
                }
            };
            let len = f.metadata().map_err(|e| Error::Io { path: path.clone(), source: e })?.len();
            let mut whole = crc32fast::Hasher::new();
            let mut covered = 0u64;
            let mut buf = Vec::new();
            for r in frs {
                if r.offset + r.len > len {
                    rep.without_data += 1;
                    continue;
                }
                if r.offset < covered {
                    rep.duplicates += 1; // two entries claim the same bytes
                }
                buf.resize(r.len as usize, 0);
                f.seek(SeekFrom::Start(r.offset))
                    .and_then(|_| f.read_exact(&mut buf))
                    .map_err(|e| Error::Io { path: path.clone(), source: e })?;
                if crc32fast::hash(&buf) != r.crc {
                    rep.without_data += 1;
                }
                whole.update(&buf);
                covered = covered.max(r.offset + r.len);
            }
            rep.without_index_bytes += len.saturating_sub(covered);
            rep.segments.push(SegmentReport { file: file.to_string(), bytes: len, crc32: whole.finalize() });
        }
        out.push(rep);
    }
    Ok(out)
}
