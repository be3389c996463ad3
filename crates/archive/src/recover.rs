//! Start-up recovery: make the files agree with the index.
//!
//! The index is committed only after the bytes it names are synced, so
//! after a crash the files may hold *more* than the index names (a flush
//! written but not committed), never less. Recovery truncates each segment
//! to its committed length and removes files the index does not know.
//! Files of writers still alive (another archiver sharing the dir) are left
//! alone: their bytes past the index are a flush in progress, not debris.

use crate::Error;
use crate::index::Index;
use crate::lock::{live_writers, writer_of};
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    pub truncated_files: usize,
    pub truncated_bytes: u64,
    pub removed_files: usize,
    pub removed_bytes: u64,
    /// Segments shorter than the index says: data lost outside vigil's
    /// control (disk fault, someone deleting files); `vigil check` lists them.
    pub short_files: Vec<String>,
    pub millis: u128,
}

pub async fn recover(dir: &Path, index: &Index) -> Result<Recovery, Error> {
    let started = Instant::now();
    let segments = index.segments().await?;
    let dir = dir.to_path_buf();
    let mut r = tokio::task::spawn_blocking(move || -> Result<Recovery, Error> {
        let mut r = Recovery { segments: segments.len(), ..Recovery::default() };
        let io = |path: &Path, e: std::io::Error| Error::Io { path: path.to_path_buf(), source: e };
        let live = live_writers(&dir).map_err(|e| io(&dir, e))?;
        let Ok(cameras) = std::fs::read_dir(&dir) else { return Ok(r) };
        for cam in cameras.flatten() {
            // Camera dirs only: not the lock dirs (.writers; .claims of older versions).
            if !cam.path().is_dir() || cam.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            for entry in std::fs::read_dir(cam.path()).map_err(|e| io(&cam.path(), e))?.flatten() {
                let path = entry.path();
                let rel = format!("{}/{}", cam.file_name().to_string_lossy(), entry.file_name().to_string_lossy());
                if writer_of(&rel).is_some_and(|w| live.contains(w)) {
                    continue;
                }
                let len = entry.metadata().map_err(|e| io(&path, e))?.len();
                match segments.get(&rel) {
                    None => {
                        std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
                        r.removed_files += 1;
                        r.removed_bytes += len;
                    }
                    Some((_, committed)) if len > *committed => {
                        let f = std::fs::OpenOptions::new().write(true).open(&path).map_err(|e| io(&path, e))?;
                        f.set_len(*committed).map_err(|e| io(&path, e))?;
                        f.sync_all().map_err(|e| io(&path, e))?;
                        r.truncated_files += 1;
                        r.truncated_bytes += len - committed;
                    }
                    Some((_, committed)) if len < *committed => r.short_files.push(rel),
                    Some(_) => {}
                }
            }
        }
        Ok(r)
    })
    .await
    .map_err(|e| Error::Other(e.to_string()))??;
    r.millis = started.elapsed().as_millis();
    Ok(r)
}
