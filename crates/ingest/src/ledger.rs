//! What a stream's last run accepted but never had acknowledged.
//!
//! Two numbers per stream in `<stream>.ledger`: the end of the seqs the
//! buffer assigned and the end of the seqs the broker acknowledged without
//! a hole. Both are plain writes, no fsync (one per frame would cost far
//! more than the frame): the first per frame, the second by the publisher
//! every 200 ms (a crash then reports up to that much too many, which
//! `vigil check` finds in the archive and does not count). They survive a
//! crash of ingest, which is when they matter. A power cut of its host can leave them stale; `vigil check`
//! only counts seqs that are absent from the archive and lie in a restart's
//! gap, so a stale ledger can mislabel such a gap, never hide a violation
//! elsewhere.
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
        // One write, so a crash cannot leave half of the fresh start.
        let mut fresh = [0u8; 16];
        fresh[..8].copy_from_slice(&next.to_le_bytes());
        fresh[8..].copy_from_slice(&next.to_le_bytes());
        if let Err(e) = l.0.write_all_at(&fresh, 0) {
            tracing::warn!(error = %e, "cannot write the stream's ledger");
        }
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
/// order: frames enter in seq order, each as one or more chunks, and the
/// run ends at the first frame with a chunk still outstanding.
#[derive(Default)]
pub struct AckRun {
    /// (seq, chunks not yet acknowledged), in seq order.
    pending: std::collections::VecDeque<(u64, u32)>,
    end: Option<u64>,
}

impl AckRun {
    pub fn sent(&mut self, seq: u64, chunks: u32) {
        self.pending.push_back((seq, chunks));
    }

    /// One chunk of `seq` acknowledged.
    pub fn chunk_done(&mut self, seq: u64) {
        if let Some(e) = self.find(seq) {
            e.1 = e.1.saturating_sub(1);
        }
        self.advance();
    }

    /// `seq` needs nothing more (dropped by policy, or unsendable).
    pub fn give_up(&mut self, seq: u64) {
        if let Some(e) = self.find(seq) {
            e.1 = 0;
        }
        self.advance();
    }

    /// Every seq below this is done; `None` until the first is.
    pub fn end(&self) -> Option<u64> {
        self.end
    }

    fn find(&mut self, seq: u64) -> Option<&mut (u64, u32)> {
        // Sorted by seq: a lookup stays cheap with a long backlog.
        let i = self.pending.binary_search_by_key(&seq, |e| e.0).ok()?;
        self.pending.get_mut(i)
    }

    fn advance(&mut self) {
        while let Some(&(s, 0)) = self.pending.front() {
            self.pending.pop_front();
            self.end = Some(s + 1);
        }
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
            r.sent(s, if s == 7 { 2 } else { 1 });
        }
        r.chunk_done(6);
        assert_eq!(r.end(), None, "5 is still out");
        r.chunk_done(5);
        assert_eq!(r.end(), Some(7));
        r.chunk_done(8);
        assert_eq!(r.end(), Some(7));
        r.chunk_done(7);
        assert_eq!(r.end(), Some(7), "7 has a chunk out");
        r.chunk_done(7);
        assert_eq!(r.end(), Some(9));
        r.sent(9, 3);
        r.give_up(9);
        assert_eq!(r.end(), Some(10));
        r.chunk_done(9);
        assert_eq!(r.end(), Some(10), "late chunks of a finished frame change nothing");
    }
}
