//! Per-camera sequence numbers that stay strictly increasing across ingest
//! restarts, crashes and power cuts.
//!
//! Numbers are reserved in blocks: the end of the block is made durable
//! (written, fsynced, renamed) before any number in it is used, and a
//! restart continues after the last reserved block. A crash therefore leaves
//! a gap of unused numbers, never a reuse; the first frame after a restart
//! carries the `discontinuity` flag so the gap reads as a restart's, not as
//! frames lost in the archive. Which of its seqs were frames lost before
//! the broker, the stream's ledger tells (`ledger.rs`).
//!
//! Each counter is held by one process: a lock on `<name>.lock` for as long
//! as the counter lives (the kernel drops it when the process dies). Two
//! ingest processes with the same camera would interleave two sequences of
//! one camera; the second is refused instead.

use crate::ledger::Ledger;
use std::fs::{self, File};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

const BLOCK: u64 = 1024;

pub struct SeqCounter {
    path: PathBuf,
    next: u64,
    reserved_until: u64,
    ledger: Ledger,
    unacknowledged: Range<u64>,
    _lock: File,
}

/// `dir/name` with `suffix` appended (the name holds dots: `cam1.main`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

impl SeqCounter {
    /// Opens (or starts) the counter of one camera stream under `dir`.
    pub fn open(dir: &Path, name: &str) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join(name);
        let lock_path = sibling(&path, ".lock");
        let lock = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!(
                        "stream {name} is already being ingested by another process (it holds {}): run each camera in one ingest only",
                        lock_path.display()
                    ),
                ));
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        let next = match fs::read_to_string(&path) {
            Ok(s) => s.trim().parse::<u64>().map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: not a sequence number", path.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let (ledger, unacknowledged) = Ledger::open(&sibling(&path, ".ledger"), next)?;
        Ok(SeqCounter { path, next, reserved_until: next, ledger, unacknowledged, _lock: lock })
    }

    /// The seqs the previous run assigned that the broker never
    /// acknowledged (see `ledger`); empty after a clean run.
    pub fn unacknowledged(&self) -> Range<u64> {
        self.unacknowledged.clone()
    }

    /// Where the publisher records acknowledgements.
    pub fn ledger(&self) -> Ledger {
        self.ledger.clone()
    }

    /// The next number; reserves a new block when the current one is used up.
    pub fn take(&mut self) -> std::io::Result<u64> {
        if self.next == self.reserved_until {
            self.reserve(self.next + BLOCK)?;
        }
        let s = self.next;
        self.next += 1;
        self.ledger.assigned(self.next);
        Ok(s)
    }

    fn reserve(&mut self, until: u64) -> std::io::Result<()> {
        // Not `with_extension`: `cam1.main` and `cam1.sub` would share one.
        let tmp = sibling(&self.path, ".tmp");
        let mut f = File::create(&tmp)?;
        writeln!(f, "{until}")?;
        f.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.reserved_until = until;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increases_across_restarts() {
        let dir = std::env::temp_dir().join(format!("vigil-seq-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut a = SeqCounter::open(&dir, "cam.main").unwrap();
        let first: Vec<u64> = (0..5).map(|_| a.take().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2, 3, 4]);
        drop(a); // as if killed: the rest of the block is never used
        let mut b = SeqCounter::open(&dir, "cam.main").unwrap();
        assert_eq!(b.take().unwrap(), BLOCK);
        for _ in 0..BLOCK + 3 {
            b.take().unwrap();
        }
        drop(b);
        let mut c = SeqCounter::open(&dir, "cam.main").unwrap();
        assert_eq!(c.take().unwrap(), 3 * BLOCK);
        // Other streams count on their own.
        assert_eq!(SeqCounter::open(&dir, "cam.sub").unwrap().take().unwrap(), 0);
        fs::write(dir.join("bad"), "xyz").unwrap();
        assert!(SeqCounter::open(&dir, "bad").is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn one_stream_is_counted_by_one_process() {
        let dir = std::env::temp_dir().join(format!("vigil-seq-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut main = SeqCounter::open(&dir, "cam.main").unwrap();
        let e = SeqCounter::open(&dir, "cam.main").err().expect("a second counter of cam.main is refused");
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("already being ingested by another process"), "{e}");
        // The sub stream is another counter, and its reservations do not
        // touch the main stream's file.
        let mut sub = SeqCounter::open(&dir, "cam.sub").unwrap();
        assert_eq!((main.take().unwrap(), sub.take().unwrap()), (0, 0));
        assert_eq!(fs::read_to_string(dir.join("cam.main")).unwrap().trim(), BLOCK.to_string());
        drop(main);
        assert_eq!(SeqCounter::open(&dir, "cam.main").unwrap().take().unwrap(), BLOCK, "free once the holder is gone");
        let _ = fs::remove_dir_all(&dir);
    }
}
