//! `vigil check`: audit the archive against itself. Per camera: the seq
//! range, frames present, missing seqs (a gap not explained by a
//! `discontinuity` frame, i.e. not an ingest restart), duplicates, index
//! entries whose bytes are missing or corrupt, bytes no index entry names,
//! and a checksum per segment. A restart's gap is split, where ingest said
//! so (`frames-lost` events, passed in as `Lost`), into frames lost before
//! the broker (accepted from the camera, never acknowledged), seqs that
//! were never used ("not recorded"), and seqs before the report's start,
//! which the broker acknowledged and so are missing.
//!
//! One archive may be kept in several dirs (archivers in one group, each
//! with its own dir): `check_all` audits them as one. Each camera's frames
//! are merged across the dirs in seq order; a frame in two dirs with the
//! same length and CRC is one frame archived twice by a handover (an
//! archiver killed between its index commit and its checkpoint) and counts
//! once, as `overlap`; any other repeat is a duplicate. Bytes are audited
//! per dir.
//!
//! It streams: recordings are read a page at a time and each one's bytes
//! once, so memory stays bounded for any archive. It may run beside live
//! archivers: it audits the index as of one moment (`Index::snapshot`),
//! reads no frame committed after it, and leaves out what live writers
//! are still writing (bytes past a segment's committed length, segments
//! created since), which are a flush in progress, not a violation.

use crate::Error;
use crate::index::samples::Sample;
use crate::index::{Index, Recording, SegmentInfo};
use crate::lock::{live_writers, writer_of};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

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
    /// Frames in a restart's gap that ingest accepted from the camera and
    /// the broker never acknowledged (ingest died with them buffered).
    pub lost_before_broker: u64,
    pub duplicates: u64,
    /// Frames found, byte-identical, in more than one of the dirs checked
    /// together (each counted once in `frames`): a handover's overlap.
    pub overlap: u64,
    /// Index entries whose bytes are missing or fail their CRC.
    pub without_data: u64,
    /// Frames of segments that retention deleted while the check ran
    /// (gone from the index and the disk between reading their index
    /// entries and their bytes): not a fault.
    pub removed_by_retention: u64,
    /// Bytes in segment files that no index entry names.
    pub without_index_bytes: u64,
    pub segments: Vec<SegmentReport>,
}

#[derive(Debug, Default, Serialize)]
pub struct SegmentReport {
    /// Relative to the archive dir; with several dirs, the dir first.
    pub file: String,
    pub bytes: u64,
    pub crc32: u32,
}

impl CameraReport {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.without_data == 0 && self.without_index_bytes == 0
    }
}

/// Recordings read from the index at a time.
const PAGE: usize = 64;

/// Per camera, the seq ranges (inclusive) ingest reported lost before the
/// broker.
pub type Lost = BTreeMap<String, Vec<(u64, u64)>>;

/// Audits the archive in `dir`.
pub async fn check(dir: &Path, index: &Index, camera: Option<&str>, lost: &Lost) -> Result<Vec<CameraReport>, Error> {
    check_all(&[(dir, index)], camera, lost).await
}

/// Audits one archive kept in several dirs (see the module's comment).
pub async fn check_all(
    archives: &[(&Path, &Index)],
    camera: Option<&str>,
    lost: &Lost,
) -> Result<Vec<CameraReport>, Error> {
    let mut snapshots = Vec::new();
    for &(dir, index) in archives {
        let (cameras, segments) = index.snapshot().await?;
        let live = live_writers(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
        let last_seqs: BTreeMap<String, u64> = cameras.into_iter().map(|c| (c.camera, c.last_seq)).collect();
        snapshots.push((last_seqs, segments, live));
    }
    let names: BTreeSet<&String> = snapshots
        .iter()
        .flat_map(|(cams, _, _)| cams.keys())
        .filter(|c| camera.is_none_or(|want| want == c.as_str()))
        .collect();
    let several = archives.len() > 1;
    let mut out = Vec::new();
    for name in names {
        let mut seq = Sequence::new(name, lost.get(name).cloned().unwrap_or_default());
        let mut cursors = Vec::new();
        for (&(dir, index), (cams, segments, live)) in archives.iter().zip(&snapshots) {
            if let Some(&last_seq) = cams.get(name) {
                cursors.push(Cursor::new(dir, index, name, last_seq, segments, live.clone()));
            }
        }
        // A k-way merge by seq: each dir's frames come in seq order.
        loop {
            let mut next: Option<(u64, usize)> = None;
            for (i, c) in cursors.iter_mut().enumerate() {
                if let Some(s) = c.peek().await?
                    && next.is_none_or(|(q, _)| s.seq < q)
                {
                    next = Some((s.seq, i));
                }
            }
            let Some((_, i)) = next else { break };
            let f = cursors[i].buffer.pop_front().expect("peeked");
            seq.frame(&f, i);
        }
        let mut rep = seq.rep;
        for c in cursors {
            let dir = c.dir.clone();
            let bytes = c.finish().await?;
            rep.duplicates += bytes.duplicates;
            rep.without_data += bytes.without_data;
            rep.removed_by_retention += bytes.removed_by_retention;
            rep.without_index_bytes += bytes.without_index_bytes;
            rep.segments.extend(bytes.segments.into_iter().map(|mut s| {
                if several {
                    s.file = dir.join(&s.file).display().to_string();
                }
                s
            }));
        }
        out.push(rep);
    }
    Ok(out)
}

/// One camera's frames in one dir, a page of recordings at a time, with
/// their bytes audited as they are read.
struct Cursor<'a> {
    dir: PathBuf,
    index: &'a Index,
    camera: String,
    /// The snapshot's newest seq: frames committed since are left out.
    last_seq: u64,
    after: Option<u64>,
    done: bool,
    buffer: VecDeque<Sample>,
    bytes: Option<Bytes>,
}

impl<'a> Cursor<'a> {
    fn new(
        dir: &Path,
        index: &'a Index,
        camera: &str,
        last_seq: u64,
        segments: &[SegmentInfo],
        live: HashSet<String>,
    ) -> Self {
        let committed = segments.iter().filter(|s| s.camera == camera).map(|s| (s.file.clone(), s.bytes)).collect();
        Cursor {
            dir: dir.to_path_buf(),
            index,
            camera: camera.to_string(),
            last_seq,
            after: None,
            done: false,
            buffer: VecDeque::new(),
            bytes: Some(Bytes::new(dir, camera, committed, live)),
        }
    }

    /// The next frame, reading the next page when the last is used up.
    async fn peek(&mut self) -> Result<Option<&Sample>, Error> {
        while self.buffer.is_empty() && !self.done {
            let page = self.index.recordings(&self.camera, self.after, PAGE).await?;
            self.done = page.len() < PAGE;
            self.after = page.last().map(|r| r.first_seq);
            // Only what the snapshot names: recordings started since are left out.
            let page: Vec<Recording> = page.into_iter().filter(|r| r.first_seq <= self.last_seq).collect();
            if page.is_empty() {
                self.done = true;
            }
            let mut bytes = self.bytes.take().expect("bytes audit");
            let last_seq = self.last_seq;
            let (bytes, mut rows) = tokio::task::spawn_blocking(move || {
                let mut rows = Vec::new();
                for r in &page {
                    rows.extend(bytes.recording(r, last_seq)?);
                }
                Ok::<_, Error>((bytes, rows))
            })
            .await
            .map_err(|e| Error::Other(e.to_string()))??;
            self.bytes = Some(bytes);
            rows.sort_by_key(|s| s.seq); // stable: a duplicate stays beside its first
            self.buffer.extend(rows);
        }
        Ok(self.buffer.front())
    }

    async fn finish(mut self) -> Result<CameraReport, Error> {
        let mut bytes = self.bytes.take().expect("bytes audit");
        // A segment file that vanished after its entries were read: if the
        // index has let it go too, retention deleted it (index first, then
        // the file); if the index still names it, its bytes are lost.
        if !bytes.gone.is_empty() {
            let (_, now) = self.index.snapshot().await?;
            for (file, frames) in std::mem::take(&mut bytes.gone) {
                if now.iter().any(|s| s.file == file) {
                    bytes.rep.without_data += frames;
                } else {
                    bytes.rep.removed_by_retention += frames;
                    bytes.committed.remove(&file);
                }
            }
        }
        tokio::task::spawn_blocking(move || bytes.finish()).await.map_err(|e| Error::Other(e.to_string()))?
    }
}

/// One camera's seqs, fed in seq order (merged across dirs): counts, gaps,
/// duplicates and overlap.
struct Sequence {
    rep: CameraReport,
    prev: Option<u64>,
    /// The last frame taken: its seq, length, CRC and the dirs it was
    /// found in.
    last: Option<(u64, u64, u32, Vec<usize>)>,
    lost: Vec<(u64, u64)>,
}

impl Sequence {
    fn new(camera: &str, lost: Vec<(u64, u64)>) -> Self {
        Sequence {
            rep: CameraReport { camera: camera.into(), ..CameraReport::default() },
            prev: None,
            last: None,
            lost,
        }
    }

    /// A frame of dir number `dir`.
    fn frame(&mut self, f: &Sample, dir: usize) {
        if let Some((seq, len, crc, dirs)) = &mut self.last
            && *seq == f.seq
            && !dirs.contains(&dir)
            && (*len, *crc) == (f.len, f.crc)
        {
            dirs.push(dir);
            self.rep.overlap += 1;
            return;
        }
        self.last = Some((f.seq, f.len, f.crc, vec![dir]));
        let rep = &mut self.rep;
        rep.frames += 1;
        rep.first_seq.get_or_insert(f.seq);
        rep.last_seq = Some(rep.last_seq.map_or(f.seq, |l| l.max(f.seq)));
        match self.prev {
            Some(p) if f.seq == p => rep.duplicates += 1,
            Some(p) if f.seq > p + 1 => {
                let n = f.seq - p - 1;
                if f.discontinuity {
                    // Only a restart's gap: a gap without one stays
                    // "missing" whatever ingest said. Where ingest's report
                    // starts inside the gap, the broker had acknowledged
                    // every seq before it: those must be here.
                    let (first, last) = (p + 1, f.seq - 1);
                    let acked_end = self.lost.iter().map(|r| r.0).filter(|a| (first..=last).contains(a)).min();
                    let missing = acked_end.map_or(0, |end| end - first);
                    if missing > 0 {
                        rep.missing += missing;
                        rep.missing_ranges.push((first, first + missing - 1));
                    }
                    let lost = covered(&self.lost, first, last);
                    rep.lost_before_broker += lost;
                    rep.not_recorded += n - lost - missing;
                } else {
                    rep.missing += n;
                    rep.missing_ranges.push((p + 1, f.seq - 1));
                }
            }
            _ => {}
        }
        self.prev = Some(self.prev.map_or(f.seq, |p| p.max(f.seq)));
    }
}

/// One camera's bytes in one dir: every indexed frame's bytes are there
/// with its CRC, and no bytes lie outside the index. Its `rep` holds only
/// the byte counts.
struct Bytes {
    dir: PathBuf,
    rep: CameraReport,
    /// Segment file → committed length, as of the snapshot.
    committed: BTreeMap<String, u64>,
    live: HashSet<String>,
    files: BTreeMap<String, FileAudit>,
    /// Segment files not found when their bytes were read, with how many
    /// frames of them: retention's, or lost (see `Cursor::finish`).
    gone: Vec<(String, u64)>,
}

#[derive(Default)]
struct FileAudit {
    covered: u64,
    crc: crc32fast::Hasher,
    missing: bool,
}

impl Bytes {
    fn new(dir: &Path, camera: &str, committed: BTreeMap<String, u64>, live: HashSet<String>) -> Self {
        Bytes {
            dir: dir.to_path_buf(),
            rep: CameraReport { camera: camera.into(), ..CameraReport::default() },
            committed,
            live,
            files: BTreeMap::new(),
            gone: Vec::new(),
        }
    }

    /// Audits a recording's bytes; its frames up to `last_seq`, for the
    /// sequence audit.
    fn recording(&mut self, r: &Recording, last_seq: u64) -> Result<Vec<Sample>, Error> {
        let rows: Vec<Sample> = match r.samples().collect::<Result<_, _>>() {
            Ok(rows) => rows,
            Err(c) => {
                tracing::error!(camera = %r.camera, first_seq = r.first_seq, at = c.at, "vigil check: a sample table is corrupt");
                self.rep.without_data += r.frames;
                return Ok(Vec::new());
            }
        };
        let rows: Vec<Sample> = rows.into_iter().filter(|f| f.seq <= last_seq).collect();
        self.bytes(r, &rows)?;
        Ok(rows)
    }

    /// Every frame's bytes exist with its CRC; a recording is one read.
    fn bytes(&mut self, r: &Recording, rows: &[Sample]) -> Result<(), Error> {
        let Some(end) = rows.iter().map(|f| f.offset + f.len).max() else { return Ok(()) };
        let fa = self.files.entry(r.file.clone()).or_default();
        let path = self.dir.join(&r.file);
        let data = match read_range(&path, r.offset, end - r.offset) {
            Ok(Some(d)) => d,
            Ok(None) if !path.exists() => {
                match self.gone.iter_mut().find(|(f, _)| *f == r.file) {
                    Some((_, n)) => *n += rows.len() as u64,
                    None => self.gone.push((r.file.clone(), rows.len() as u64)),
                }
                return Ok(());
            }
            Ok(None) => {
                // Shorter than the index says: count what is not there.
                fa.missing = true;
                let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                for f in rows {
                    if f.offset + f.len > len {
                        self.rep.without_data += 1;
                    }
                }
                return Ok(());
            }
            Err(e) => return Err(Error::Io { path, source: e }),
        };
        for f in rows {
            if f.offset < fa.covered {
                self.rep.duplicates += 1; // two entries claim the same bytes
            }
            let at = (f.offset - r.offset) as usize;
            let bytes = &data[at..at + f.len as usize];
            if crc32fast::hash(bytes) != f.crc {
                self.rep.without_data += 1;
            }
            fa.crc.update(bytes);
            fa.covered = fa.covered.max(f.offset + f.len);
        }
        Ok(())
    }

    /// Bytes no entry names: past what the frames cover, up to the
    /// committed length (a live writer's tail beyond it is a flush in
    /// progress), and files the snapshot does not know (unless a live
    /// writer made them since).
    fn finish(mut self) -> Result<CameraReport, Error> {
        let camera = self.rep.camera.clone();
        let alive = |file: &str| writer_of(file).is_some_and(|w| self.live.contains(w));
        if let Ok(entries) = std::fs::read_dir(self.dir.join(&camera)) {
            for e in entries.flatten() {
                let rel = format!("{camera}/{}", e.file_name().to_string_lossy());
                if !self.committed.contains_key(&rel) && !alive(&rel) {
                    self.rep.without_index_bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                }
            }
        }
        for (file, committed) in &self.committed {
            let fa = self.files.remove(file).unwrap_or_default();
            let on_disk = std::fs::metadata(self.dir.join(file)).map(|m| m.len()).unwrap_or(0);
            let named = if alive(file) { on_disk.min(*committed) } else { on_disk };
            if !fa.missing {
                self.rep.without_index_bytes += named.saturating_sub(fa.covered);
            }
            self.rep.segments.push(SegmentReport { file: file.clone(), bytes: on_disk, crc32: fa.crc.finalize() });
        }
        Ok(self.rep)
    }
}

/// How many seqs of `first..=last` the ranges cover (overlaps once).
fn covered(ranges: &[(u64, u64)], first: u64, last: u64) -> u64 {
    let mut r: Vec<(u64, u64)> =
        ranges.iter().map(|&(a, b)| (a.max(first), b.min(last))).filter(|(a, b)| a <= b).collect();
    r.sort_unstable();
    let (mut n, mut end) = (0, None::<u64>);
    for (a, b) in r {
        let a = end.map_or(a, |e| a.max(e + 1));
        if a <= b {
            n += b - a + 1;
        }
        end = Some(end.map_or(b, |e| e.max(b)));
    }
    n
}

/// `len` bytes of `path` from `offset`; `None` when the file is shorter
/// (or gone: retention may have removed it since the snapshot).
fn read_range(path: &Path, offset: u64, len: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if f.metadata()?.len() < offset + len {
        return Ok(None);
    }
    let mut buf = vec![0; len as usize];
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(&mut buf)?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::{Sample, Sequence};

    fn frame(seq: u64, crc: u32) -> Sample {
        Sample { seq, offset: 0, len: 10, capture_us: 0, pts_90k: 0, key: false, discontinuity: false, crc }
    }

    #[test]
    fn across_dirs_an_identical_copy_counts_once_and_any_other_repeat_is_a_duplicate() {
        let mut s = Sequence::new("c", Vec::new());
        // Merged in seq order: 0 and 1 in dir 0; 1 again in dir 1, same
        // bytes (a handover's overlap); 2 in both with other bytes; 3 twice
        // in dir 1; 5 after a gap.
        for (seq, crc, dir) in [(0, 1, 0), (1, 2, 0), (1, 2, 1), (2, 3, 0), (2, 9, 1), (3, 4, 1), (3, 4, 1), (5, 5, 0)]
        {
            s.frame(&frame(seq, crc), dir);
        }
        let r = s.rep;
        assert_eq!((r.frames, r.overlap, r.duplicates, r.missing), (7, 1, 2, 1), "{r:?}");
        assert_eq!((r.first_seq, r.last_seq, r.missing_ranges), (Some(0), Some(5), vec![(4, 4)]));
    }

    #[test]
    fn lost_ranges_count_each_seq_once_within_the_gap() {
        assert_eq!(super::covered(&[], 5, 9), 0);
        assert_eq!(super::covered(&[(0, 6)], 5, 9), 2);
        assert_eq!(super::covered(&[(6, 7), (7, 20), (1, 2)], 5, 9), 4);
        assert_eq!(super::covered(&[(10, 12)], 5, 9), 0);
    }
}
