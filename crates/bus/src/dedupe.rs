//! Dropping repeated records by identity, within a bounded window.
//!
//! Every record on an exactly-once-effect or at-least-once topic carries a
//! deterministic id (a detection `camera/seq/model`, an object event
//! `object/kind`, a stage's output by its input). A producer that resumes
//! from a checkpoint publishes some of them again, byte for byte; a
//! consumer keeps the ids of the last `capacity` records it took and drops
//! any it has seen. Unlike a per-camera high-water mark, a record that
//! arrives out of order (a retried frame, a re-analysis of an earlier
//! range on the same topic) is taken, not silently dropped. Repeats come
//! soon after the original (within one checkpoint interval of the
//! producer), so a window of recent ids is enough; memory stays bounded.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// Ids a consumer remembers unless it asks for another window: about a
/// minute of detections from a hundred cameras at 10 analysed frames/s.
pub const WINDOW: usize = 100_000;

pub struct Dedupe {
    seen: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
    capacity: usize,
    dropped: u64,
}

impl Default for Dedupe {
    fn default() -> Self {
        Dedupe::new(WINDOW)
    }
}

impl Dedupe {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Dedupe { seen: HashSet::new(), order: VecDeque::new(), capacity, dropped: 0 }
    }

    /// True when `id` was not among the last `capacity` ids taken: use it.
    pub fn take(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            self.dropped += 1;
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        let id: Arc<str> = id.into();
        self.seen.insert(id.clone());
        self.order.push_back(id);
        true
    }

    /// Repeats dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_dropped_and_out_of_order_records_taken() {
        let mut d = Dedupe::new(100);
        // A detector published a/1..a/5, crashed, resumed from its
        // checkpoint at a/3 and published a/4, a/5 again; a/2 arrives late
        // (a retried frame); another model's a/4 is another record.
        let seen = ["a/1/m", "a/3/m", "b/3/m", "a/5/m", "a/4/m", "a/5/m", "a/4/m", "a/2/m", "a/6/m", "a/4/m2"];
        let taken: Vec<bool> = seen.iter().map(|id| d.take(id)).collect();
        assert_eq!(taken, [true, true, true, true, true, false, false, true, true, true]);
        assert_eq!(d.dropped(), 2);
    }

    #[test]
    fn memory_is_bounded_by_the_window() {
        let mut d = Dedupe::new(3);
        for id in ["1", "2", "3", "4"] {
            assert!(d.take(id));
        }
        assert_eq!(d.seen.len(), 3);
        assert!(!d.take("4") && !d.take("2"), "still in the window");
        assert!(d.take("1"), "fell out of the window: taken again");
    }
}
