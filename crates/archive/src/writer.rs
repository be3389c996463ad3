//! Collecting frames into per-camera segment files between flushes.
//!
//! Frames are appended in memory; a flush writes each camera's pending bytes
//! to the end of its open segment file with one write and one fdatasync
//! (spinning-disk friendly: large sequential writes, one sync per flush, not
//! per frame), and only then are the index rows committed. A segment file is
//! only ever appended to by the writer that created it (the writer id is in
//! its name; the writer holds `.writers/<id>.lock` while it lives), only its
//! newest one per camera, and a new one starts at the first key frame after
//! the size or duration limit.

use crate::index::{Commit, FrameRow};
use crate::lock::{Lock, writer_lock_path};
use media::Frame;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct SegmentLimits {
    pub max_bytes: u64,
    pub max_duration_us: i64,
}

struct Open {
    file: String,
    /// Length of the file once pending bytes are written.
    len: u64,
    first_us: i64,
}

/// Frames and bytes of one camera since the last flush; `runs` holds the
/// bytes per segment file, in order (a flush may span a segment change).
#[derive(Default)]
struct Pending {
    runs: Vec<(String, Vec<u8>)>,
    rows: Vec<FrameRow>,
}

pub struct Writer {
    dir: PathBuf,
    writer_id: String,
    _alive: Lock,
    limits: SegmentLimits,
    open: HashMap<String, Open>,
    pending: HashMap<String, Pending>,
    pending_bytes: usize,
}

impl Writer {
    pub fn new(dir: &Path, limits: SegmentLimits) -> std::io::Result<Self> {
        // A v7 UUID: unique, and file names sort by the writer's start time.
        let writer_id = uuid::Uuid::now_v7().simple().to_string();
        let alive = Lock::try_acquire(&writer_lock_path(dir, &writer_id))?
            .ok_or_else(|| std::io::Error::other(format!("writer id {writer_id} is taken")))?;
        Ok(Writer {
            dir: dir.to_path_buf(),
            writer_id,
            _alive: alive,
            limits,
            open: HashMap::new(),
            pending: HashMap::new(),
            pending_bytes: 0,
        })
    }

    /// Starts a new segment for the next frame of every camera with
    /// nothing pending: call it when partitions arrive, so that a writer
    /// only ever appends to its newest segment of a camera.
    pub fn close_idle(&mut self) {
        self.open.retain(|camera, _| self.pending.contains_key(camera));
    }

    /// Drops what is pending of `camera` and closes its segment (the file
    /// keeps only what was committed): its frames are someone else's now.
    pub fn discard(&mut self, camera: &str) {
        if let Some(p) = self.pending.remove(camera) {
            self.pending_bytes -= p.runs.iter().map(|(_, b)| b.len()).sum::<usize>();
        }
        self.open.remove(camera);
    }

    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    pub fn pending_frames(&self) -> usize {
        self.pending.values().map(|p| p.rows.len()).sum()
    }

    /// Whether (camera, seq) is waiting for the next flush.
    pub fn is_pending(&self, camera: &str, seq: u64) -> bool {
        self.pending.get(camera).is_some_and(|p| p.rows.iter().any(|r| r.seq == seq))
    }

    pub fn add(&mut self, frame: &Frame) {
        let m = &frame.meta;
        let roll = match self.open.get(&m.camera) {
            None => true,
            Some(o) => {
                m.key
                    && (o.len >= self.limits.max_bytes
                        || m.capture_us.saturating_sub(o.first_us) >= self.limits.max_duration_us)
            }
        };
        if roll {
            let file = format!("{}/{:020}-{}.seg", m.camera, m.seq, self.writer_id);
            self.open.insert(m.camera.clone(), Open { file, len: 0, first_us: m.capture_us });
        }
        let open = self.open.get_mut(&m.camera).expect("segment open");
        let p = self.pending.entry(m.camera.clone()).or_default();
        p.rows.push(FrameRow {
            camera: m.camera.clone(),
            seq: m.seq,
            file: open.file.clone(),
            offset: open.len,
            len: frame.payload.len() as u64,
            capture_us: m.capture_us,
            pts_90k: m.pts_90k,
            key: m.key,
            discontinuity: m.discontinuity,
            codec: m.codec.name().to_string(),
            crc: crc32fast::hash(&frame.payload),
        });
        match p.runs.last_mut() {
            Some((file, bytes)) if *file == open.file => bytes.extend_from_slice(&frame.payload),
            _ => p.runs.push((open.file.clone(), frame.payload.clone())),
        }
        open.len += frame.payload.len() as u64;
        self.pending_bytes += frame.payload.len();
    }

    /// Takes everything pending, to be written by `Batch::write`.
    pub fn take(&mut self) -> Batch {
        self.pending_bytes = 0;
        Batch { dir: self.dir.clone(), pending: std::mem::take(&mut self.pending) }
    }
}

/// The frames of one flush.
pub struct Batch {
    dir: PathBuf,
    pending: HashMap<String, Pending>,
}

impl Batch {
    pub fn frames(&self) -> usize {
        self.pending.values().map(|p| p.rows.len()).sum()
    }

    /// Writes and syncs every byte (blocking I/O) and returns what the index
    /// must commit. On error nothing may be committed: the bytes written
    /// are not named by the index, and recovery removes them.
    pub fn write(self) -> std::io::Result<Commit> {
        let mut commit = Commit::default();
        let mut new_dirs = Vec::new();
        for (camera, p) in self.pending {
            for (file, bytes) in p.runs {
                let path = self.dir.join(&file);
                let cam_dir = path.parent().expect("segment in a camera dir").to_path_buf();
                if !cam_dir.exists() {
                    std::fs::create_dir_all(&cam_dir)?;
                    new_dirs.push(self.dir.clone());
                }
                if !path.exists() {
                    new_dirs.push(cam_dir);
                }
                let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
                f.write_all(&bytes)?;
                f.sync_data()?;
                commit.segments.push((file, camera.clone(), f.metadata()?.len()));
            }
            commit.frames.extend(p.rows);
        }
        // A new file's directory entry must be durable too.
        new_dirs.sort();
        new_dirs.dedup();
        for d in new_dirs {
            File::open(&d)?.sync_all()?;
        }
        Ok(commit)
    }
}
