//! What a stream's last run accepted but never had acknowledged.
//!
//! Two numbers per stream in `<stream>.ledger`: the end of the seqs the
//! buffer assigned and the end of the seqs the broker acknowledged without
//! a hole. Both are plain writes, no fsync (one per frame would cost far
//! more than the frame): they survive a crash of ingest, which is when
//! they matter, and a power cut of its host may leave them older, which
//! reports fewer frames lost, never more.
//!
//! On start, the seqs between the two are frames a camera gave ingest that
//! never reached the broker (ingest was killed with them buffered, or its
//! drain timed out). Ingest reports them (`frames-lost` events), so
//! `vigil check` can tell "lost before the broker" from "not recorded".

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

#[derive(Clone)]
pub struct Ledger(Arc<File>);

impl Ledger {
    /// Opens `path` and returns the previous run's unacknowledged seqs
    /// (empty when there were none), starting the ledger afresh at `next`.
    pub fn open(path: &Path, next: u64) -> std::io::Result<(Ledger, Range<u64>)> {
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let mut buf = [0u8; 16];
        let lost = match f.read_exact_at(&mut buf, 0) {
            Ok(()) => {
                let assigned = u64::from_le_bytes(buf[..8].try_into().unwrap_or_default());
                let acked = u64::from_le_bytes(buf[8..].try_into().unwrap_or_default());
                // A torn or foreign file reads as nothing lost, not as a
                // huge range; seqs only ever run below `next`.
                if acked < assigned && assigned <= next { acked..assigned } else { next..next }
            }
            Err(_) => next..next,
        };
        let l = Ledger(Arc::new(f));
        l.write(0, next);
        l.write(8, next);
        Ok((l, lost))
    }

    /// Every seq below `end` was assigned.
    pub fn assigned(&self, end: u64) {
        self.write(0, end);
    }

    /// Every seq below `end` was acknowledged (or given up at ingest).
    pub fn acked(&self, end: u64) {
        self.write(8, end);
    }

    fn write(&self, at: u64, v: u64) {
        if let Err(e) = self.0.write_all_at(&v.to_le_bytes(), at) {
            tracing::warn!(error = %e, "cannot write the stream's ledger");
        }
    }
}

/// The end of the acknowledged run of seqs, as deliveries come back in any
/// order: frames enter in seq order, and the run ends at the first frame
/// still outstanding.
#[derive(Default)]
pub struct AckRun {
    pending: std::collections::VecDeque<(u64, bool)>,
}

impl AckRun {
    pub fn sent(&mut self, seq: u64) {
        self.pending.push_back((seq, false));
    }

    /// Marks `seq` done; returns the new end of the run if it moved.
    pub fn done(&mut self, seq: u64) -> Option<u64> {
        if let Some(e) = self.pending.iter_mut().find(|(s, _)| *s == seq) {
            e.1 = true;
        }
        let mut end = None;
        while let Some(&(s, true)) = self.pending.front() {
            self.pending.pop_front();
            end = Some(s + 1);
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_runs_unacknowledged_seqs_are_reported_once() {
        let dir = std::env::temp_dir().join(format!("vigil-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cam.main.ledger");
        let _ = std::fs::remove_file(&path);
        let (l, lost) = Ledger::open(&path, 0).unwrap();
        assert!(lost.is_empty());
        l.assigned(10);
        l.acked(7);
        drop(l); // as if killed
        let (l, lost) = Ledger::open(&path, 1024).unwrap();
        assert_eq!(lost, 7..10);
        drop(l);
        assert!(Ledger::open(&path, 2048).unwrap().1.is_empty(), "reported once");
        // Garbage reads as nothing lost.
        std::fs::write(&path, [0xff; 16]).unwrap();
        assert!(Ledger::open(&path, 5).unwrap().1.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_run_ends_at_the_first_outstanding_frame() {
        let mut r = AckRun::default();
        for s in 5..9 {
            r.sent(s);
        }
        assert_eq!(r.done(6), None, "5 is still out");
        assert_eq!(r.done(5), Some(7));
        assert_eq!(r.done(8), None);
        assert_eq!(r.done(7), Some(9));
    }
}
