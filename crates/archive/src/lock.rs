//! Advisory file locks (`File::try_lock`: flock on Linux) that say which
//! writers are alive in an archive dir.
//!
//! Archivers that share one archive dir split the partitions through their
//! group (the broker); the dir only has to know whose files are still being
//! written: `<dir>/.writers/<writer id>.lock` is held by each live segment
//! writer, exactly as long as its process lives (the kernel drops it the
//! instant the process dies, SIGKILL included). Recovery and retention
//! leave a live writer's files alone.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

pub const WRITERS: &str = ".writers";

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    pub path: PathBuf,
}

impl Lock {
    /// Takes the lock at `path` if nobody holds it (never blocks).
    pub fn try_acquire(path: &Path) -> std::io::Result<Option<Lock>> {
        use std::os::unix::fs::MetadataExt;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // `live_writers` unlinks a dead writer's file while holding its
        // lock: whoever opened the old file just before then locks a file
        // no one else can see. Only a lock on the file still at `path` counts.
        for _ in 0..10 {
            let file = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
            let (held, named) = (file.metadata()?, std::fs::metadata(path));
            if named.is_ok_and(|n| (n.dev(), n.ino()) == (held.dev(), held.ino())) {
                return Ok(Some(Lock { _file: file, path: path.to_path_buf() }));
            }
        }
        Err(std::io::Error::other(format!("{}: lock file keeps being replaced", path.display())))
    }
}

pub fn writer_lock_path(dir: &Path, writer_id: &str) -> PathBuf {
    dir.join(WRITERS).join(format!("{writer_id}.lock"))
}

/// Ids of the writers whose process is alive (this one's included). Lock
/// files of dead writers are removed on the way.
pub fn live_writers(dir: &Path) -> std::io::Result<HashSet<String>> {
    let mut live = HashSet::new();
    let Ok(entries) = std::fs::read_dir(dir.join(WRITERS)) else { return Ok(live) };
    for e in entries.flatten() {
        let path = e.path();
        let Some(id) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else { continue };
        match Lock::try_acquire(&path)? {
            Some(_dead) => {
                let _ = std::fs::remove_file(&path);
            }
            None => {
                live.insert(id);
            }
        }
    }
    Ok(live)
}

/// The writer id in a segment file name `<camera>/<first seq>-<writer id>.seg`.
pub fn writer_of(file: &str) -> Option<&str> {
    let name = file.rsplit('/').next()?.strip_suffix(".seg")?;
    name.split_once('-').map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_held_until_dropped_and_dead_writers_are_forgotten() {
        let d = std::env::temp_dir().join(format!("vigil-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let a = Lock::try_acquire(&writer_lock_path(&d, "aaa")).unwrap().expect("free");
        assert!(Lock::try_acquire(&a.path).unwrap().is_none(), "held: a second open must not get it");
        let b = Lock::try_acquire(&writer_lock_path(&d, "bbb")).unwrap().expect("free");
        drop(b);
        assert_eq!(live_writers(&d).unwrap(), HashSet::from(["aaa".to_string()]));
        assert!(!writer_lock_path(&d, "bbb").exists(), "a dead writer's lock file is removed");
        drop(a);
        assert!(live_writers(&d).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn writer_ids_come_from_segment_names() {
        assert_eq!(writer_of("cam1/00000000000000000042-0193ab.seg"), Some("0193ab"));
        assert_eq!(writer_of("cam-1/00000000000000000042-x.seg"), Some("x"));
        assert_eq!(writer_of("cam1/junk"), None);
        assert_eq!(writer_of("cam1/42.seg"), None);
    }
}
