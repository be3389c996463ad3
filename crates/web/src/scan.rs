//! Reading a time window of a topic: the records a range request needs
//! from `vigil.detections` or `vigil.events`, without reading the topic
//! from its beginning (`bus::range` does the reading).
//!
//! Records carry two clocks: the capture time inside the payload, and the
//! Kafka timestamp the producer stamps when it publishes (`CreateTime`).
//! A result is published after its frame was captured, so every record
//! about captures at or after `from` was stamped at or after `from` (less
//! `CLOCK_SLACK` for clocks of different hosts). The read therefore starts
//! at the broker's offset for that time and stops a partition at its end
//! or at the first record stamped later than `to` plus `MAX_LAG`: a result
//! published later than that after its capture (a detector catching up a
//! long backlog) is not found by a range request. Blocking: call it on
//! tokio's blocking pool.

use bus::range::Range;
use bus::{Delivery, KafkaConfig};
use rdkafka::message::BorrowedMessage;
use std::time::Duration;

/// How far the clocks of two hosts (producer and this server) may differ.
pub const CLOCK_SLACK_US: i64 = 60_000_000;
/// How long after its capture a result may be published and still be found.
pub const MAX_LAG_US: i64 = 300_000_000;

/// One window of a topic to read.
#[derive(Clone, Debug)]
pub struct Window {
    pub topic: String,
    /// The topic's guarantee (from the plan): its consumer settings.
    pub delivery: Delivery,
    pub partitions: i32,
    /// Capture times (µs) the caller wants; the read widens them by the
    /// slack and lag above.
    pub from_us: i64,
    pub to_us: i64,
    pub timeout: Duration,
}

impl Window {
    fn start_ms(&self) -> i64 {
        self.from_us.saturating_sub(CLOCK_SLACK_US).max(0) / 1000
    }

    fn stop_ms(&self) -> i64 {
        self.to_us.saturating_add(MAX_LAG_US).saturating_add(CLOCK_SLACK_US) / 1000
    }

    fn range(&self) -> Range {
        Range {
            topic: self.topic.clone(),
            delivery: self.delivery,
            partitions: self.partitions,
            from_ms: Some(self.start_ms()),
            to_ms: Some(self.stop_ms()),
            timeout: self.timeout,
        }
    }
}

/// Calls `each` with the window's records, in order within a partition.
pub fn scan(kafka: &KafkaConfig, w: &Window, each: impl FnMut(&BorrowedMessage<'_>)) -> Result<(), bus::Error> {
    bus::range::read(kafka, &w.range(), each)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_widened_by_slack_and_lag() {
        let w = Window {
            topic: "t".into(),
            delivery: Delivery::ExactlyOnce,
            partitions: 1,
            from_us: 100_000_000,
            to_us: 200_000_000,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(w.start_ms(), 40_000);
        assert_eq!(w.stop_ms(), 560_000);
        let early = Window { from_us: 1, to_us: i64::MAX, ..w };
        assert_eq!((early.start_ms(), early.stop_ms()), (0, i64::MAX / 1000));
    }
}
