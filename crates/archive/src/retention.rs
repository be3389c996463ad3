//! Retention: oldest first, whole segments at a time, never the segment a
//! live writer may be appending to (its newest of each camera). Limits: a disk budget per camera and overall, a
//! maximum age, and a free-space floor on the archive's filesystem.
//!
//! A segment leaves the index first and the disk second: a crash in between
//! leaves an unnamed file, which recovery removes; never an index entry
//! without its data.

use crate::Error;
use crate::index::{Index, SegmentInfo};
use crate::lock::{live_writers, writer_of};
use std::collections::{HashMap, HashSet};
use std::path::Path;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Retention {
    pub max_bytes: Option<u64>,
    pub camera_max_bytes: Option<u64>,
    pub max_age_us: Option<i64>,
    pub min_free_bytes: Option<u64>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    pub segments: usize,
    pub bytes: u64,
}

/// Bytes available to an unprivileged writer on the filesystem of `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `st` a writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// How much is archived: what the byte limits are checked against.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub per_camera: HashMap<String, u64>,
    pub free: u64,
}

impl Totals {
    fn total(&self) -> u64 {
        self.per_camera.values().sum()
    }
}

/// Which of `oldest` (a page of the oldest segments, oldest first) `policy`
/// removes, updating `totals` as if they were gone; and whether a limit is
/// still exceeded after the page (then the next page is planned too).
/// Pure: tested by table.
pub fn plan(
    policy: &Retention,
    oldest: &[SegmentInfo],
    open: &HashSet<String>,
    totals: &mut Totals,
    now_us: i64,
) -> (Vec<String>, bool) {
    let mut order: Vec<&SegmentInfo> = oldest.iter().collect();
    order.sort_by_key(|s| s.first_us);
    let mut out = Vec::new();
    let mut total = totals.total();
    for s in order {
        let cam = totals.per_camera.get(s.camera.as_str()).copied().unwrap_or(0);
        let too_old = policy.max_age_us.is_some_and(|a| s.last_us < now_us.saturating_sub(a));
        let camera_over = policy.camera_max_bytes.is_some_and(|m| cam > m);
        let total_over = policy.max_bytes.is_some_and(|m| total > m);
        let low_space = policy.min_free_bytes.is_some_and(|m| totals.free < m);
        if !(too_old || camera_over || total_over || low_space) {
            continue;
        }
        if open.contains(&s.file) {
            continue;
        }
        out.push(s.file.clone());
        *totals.per_camera.entry(s.camera.clone()).or_default() -= s.bytes.min(cam);
        total = total.saturating_sub(s.bytes);
        totals.free += s.bytes;
    }
    let over = policy.max_bytes.is_some_and(|m| total > m)
        || policy.camera_max_bytes.is_some_and(|m| totals.per_camera.values().any(|&c| c > m))
        || policy.min_free_bytes.is_some_and(|m| totals.free < m);
    // The page's newest segment too old: older ones may follow it.
    let newest_too_old = oldest
        .iter()
        .max_by_key(|s| s.first_us)
        .is_some_and(|s| policy.max_age_us.is_some_and(|a| s.last_us < now_us.saturating_sub(a)));
    (out, over || newest_too_old)
}

/// The segments each live writer may still append to: its newest of each
/// camera. (Used by the tests; `enforce` asks the index per candidate.)
pub fn open_segments(segments: &[SegmentInfo], live: &HashSet<String>) -> HashSet<String> {
    let mut newest: HashMap<(&str, &str), &str> = HashMap::new();
    for s in segments {
        let Some(w) = writer_of(&s.file).filter(|w| live.contains(*w)) else { continue };
        // Names start with the zero-padded first seq: the greatest is the newest.
        let e = newest.entry((s.camera.as_str(), w)).or_insert(s.file.as_str());
        if s.file.as_str() > *e {
            *e = s.file.as_str();
        }
    }
    newest.into_values().map(str::to_string).collect()
}

/// Segments planned a page at a time.
const PAGE: usize = 256;

/// Applies `policy` now, reading only as many of the oldest segments as it
/// removes (and one page more): the pass costs the same for a day of
/// video as for a year. Safe beside other archivers sharing the dir: a
/// segment they already removed is skipped.
pub async fn enforce(dir: &Path, index: &Index, policy: &Retention, now_us: i64) -> Result<Deleted, Error> {
    if *policy == Retention::default() {
        return Ok(Deleted::default());
    }
    let io = |e| Error::Io { path: dir.to_path_buf(), source: e };
    let live = live_writers(dir).map_err(io)?;
    let mut totals = Totals {
        per_camera: index.cameras().await?.into_iter().map(|c| (c.camera, c.bytes)).collect(),
        free: free_bytes(dir).map_err(io)?,
    };
    let mut d = Deleted::default();
    let mut after = None;
    loop {
        let page = index.oldest_segments(after.clone(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.first_us, last.file.clone()));
        // Open: a live writer's newest segment of its camera.
        let mut open = HashSet::new();
        for s in &page {
            if let Some(w) = writer_of(&s.file).filter(|w| live.contains(*w))
                && index.newest_segment_of(&s.camera, w).await?.as_deref() == Some(s.file.as_str())
            {
                open.insert(s.file.clone());
            }
        }
        let (remove, more) = plan(policy, &page, &open, &mut totals, now_us);
        for file in remove {
            let bytes = page.iter().find(|s| s.file == file).map_or(0, |s| s.bytes);
            index.delete_segment(&file).await?;
            let path = dir.join(&file);
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(Error::Io { path, source: e });
            }
            d.segments += 1;
            d.bytes += bytes;
        }
        if !more || page.len() < PAGE {
            break;
        }
    }
    if d.segments > 0 {
        tracing::info!(segments = d.segments, bytes = d.bytes, "retention removed the oldest recordings");
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(file: &str, camera: &str, bytes: u64, first_us: i64, last_us: i64) -> SegmentInfo {
        SegmentInfo { file: file.into(), camera: camera.into(), bytes, first_us, last_us }
    }

    #[test]
    fn oldest_first_within_every_limit() {
        let segs = vec![
            seg("a1", "a", 100, 0, 9),
            seg("b1", "b", 100, 5, 14),
            seg("a2", "a", 100, 10, 19),
            seg("b2", "b", 100, 15, 24),
            seg("a3", "a", 100, 20, 29), // open: never removed
        ];
        let open: HashSet<String> = ["a3".to_string()].into();
        let r = |max_bytes, camera_max_bytes, max_age_us, min_free_bytes| Retention {
            max_bytes,
            camera_max_bytes,
            max_age_us,
            min_free_bytes,
        };
        // (policy, free bytes, expected removals)
        let cases: Vec<(Retention, u64, Vec<&str>)> = vec![
            (Retention::default(), 0, vec![]),
            (r(Some(300), None, None, None), 1000, vec!["a1", "b1"]),
            (r(None, Some(200), None, None), 1000, vec!["a1"]),
            (r(None, None, Some(20), None), 1000, vec!["a1"]), // now = 30: last_us < 10
            (r(None, None, None, Some(250)), 100, vec!["a1", "b1"]),
            (r(Some(0), None, None, None), 1000, vec!["a1", "b1", "a2", "b2"]),
        ];
        for (i, (policy, free, want)) in cases.into_iter().enumerate() {
            let mut totals = Totals { per_camera: [("a".into(), 300), ("b".into(), 200)].into(), free };
            assert_eq!(plan(&policy, &segs, &open, &mut totals, 30).0, want, "case {i}");
        }
    }

    #[test]
    fn a_live_writers_newest_segment_per_camera_is_open() {
        let segs = vec![
            seg("a/001-w1.seg", "a", 1, 0, 1),
            seg("a/005-w1.seg", "a", 1, 0, 1),
            seg("a/003-w2.seg", "a", 1, 0, 1),
            seg("b/002-w1.seg", "b", 1, 0, 1),
            seg("b/009-dead.seg", "b", 1, 0, 1),
        ];
        let live: HashSet<String> = ["w1".to_string(), "w2".to_string()].into();
        let mut open: Vec<String> = open_segments(&segs, &live).into_iter().collect();
        open.sort();
        assert_eq!(open, vec!["a/003-w2.seg", "a/005-w1.seg", "b/002-w1.seg"]);
    }

    #[test]
    fn free_bytes_reads_the_filesystem() {
        assert!(free_bytes(&std::env::temp_dir()).unwrap() > 0);
        assert!(free_bytes(Path::new("/no/such/dir")).is_err());
    }
}
