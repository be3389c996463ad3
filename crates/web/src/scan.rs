//! Reading a time window of a topic: the records a range request needs
//! from `vigil.detections` or `vigil.events`, without reading the topic
//! from its beginning.
//!
//! Records carry two clocks: the capture time inside the payload, and the
//! Kafka timestamp the producer stamps when it publishes (`CreateTime`).
//! A result is published after its frame was captured, so every record
//! about captures at or after `from` was stamped at or after `from` (less
//! `CLOCK_SLACK` for clocks of different hosts). The scan therefore starts
//! each partition at the broker's offset for that time
//! (`offsets_for_times`), and stops a partition at its high watermark or
//! at the first record stamped later than `to` plus `MAX_LAG`: a result
//! published later than that after its capture (a detector catching up a
//! long backlog) is not found by a range request.
//!
//! The topic's own consumer settings (read_committed for an exactly-once
//! topic), explicit offsets, never a commit; blocking: call it on tokio's
//! blocking pool.

use bus::{Delivery, KafkaConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How far the clocks of two hosts (producer and this server) may differ.
pub const CLOCK_SLACK_US: i64 = 60_000_000;
/// How long after its capture a result may be published and still be found.
pub const MAX_LAG_US: i64 = 300_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{0}")]
    Kafka(#[from] bus::Error),
    #[error("reading {topic}: not done within {timeout:?} (ask for a shorter range)")]
    TimedOut { topic: String, timeout: Duration },
}

/// One window of a topic to read.
#[derive(Clone, Debug)]
pub struct Window {
    pub topic: String,
    /// The topic's guarantee (from the plan): its consumer settings.
    pub delivery: Delivery,
    pub partitions: i32,
    /// Capture times (µs) the caller wants; the scan widens them by the
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
}

/// Where to start a partition: the broker's answer for the start time,
/// kept inside [low, high). `None`: nothing to read there.
fn start_offset(answer: Option<Offset>, low: i64, high: i64) -> Option<i64> {
    if high <= low {
        return None;
    }
    let at = match answer {
        Some(Offset::Offset(o)) => o,
        Some(Offset::End) => return None, // nothing stamped that late
        // No answer (a broker without timestamps): from the beginning.
        _ => low,
    };
    (at < high).then_some(at.max(low))
}

/// Calls `each` with the window's records, in order within a partition.
/// Fails when reading takes longer than the window's timeout.
pub fn scan(kafka: &KafkaConfig, w: &Window, mut each: impl FnMut(&BorrowedMessage<'_>)) -> Result<(), ScanError> {
    let consumer: BaseConsumer = kafka
        .consumer_config(w.delivery, "vigil-web-scan")
        .create()
        .map_err(|e| bus::Error::kafka("create consumer", e))?;
    let deadline = Instant::now() + w.timeout;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let mut marks = BTreeMap::new();
    let mut query = TopicPartitionList::new();
    for p in 0..w.partitions {
        let (low, high) =
            consumer.fetch_watermarks(&w.topic, p, left()).map_err(|e| bus::Error::kafka("read watermarks", e))?;
        if high > low {
            marks.insert(p, (low, high));
            query
                .add_partition_offset(&w.topic, p, Offset::Offset(w.start_ms()))
                .map_err(|e| bus::Error::kafka("offsets for times", e))?;
        }
    }
    if marks.is_empty() {
        return Ok(());
    }
    let answers: BTreeMap<i32, Offset> = match consumer.offsets_for_times(query, left()) {
        Ok(tpl) => tpl.elements().iter().filter(|e| e.error().is_ok()).map(|e| (e.partition(), e.offset())).collect(),
        Err(e) => {
            tracing::debug!(topic = %w.topic, error = %e, "offsets for times: reading from the beginning");
            BTreeMap::new()
        }
    };
    // Per partition: (first offset to read, high watermark).
    let mut todo: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    let mut assign = TopicPartitionList::new();
    for (&p, &(low, high)) in &marks {
        if let Some(at) = start_offset(answers.get(&p).copied(), low, high) {
            todo.insert(p, (at, high));
            assign.add_partition_offset(&w.topic, p, Offset::Offset(at)).map_err(|e| bus::Error::kafka("assign", e))?;
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    consumer.assign(&assign).map_err(|e| bus::Error::kafka("assign", e))?;
    let (start_ms, stop_ms) = (w.start_ms(), w.stop_ms());
    while !todo.is_empty() {
        if Instant::now() >= deadline {
            return Err(ScanError::TimedOut { topic: w.topic.clone(), timeout: w.timeout });
        }
        let Some(m) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = m.map_err(|e| bus::Error::kafka("read topic", e))?;
        let Some(&(first, high)) = todo.get(&m.partition()) else { continue };
        let stamped = m.timestamp().to_millis();
        // Some brokers (tansu) answer offset 0 when no record is stamped
        // that late: a first record older than the start says so.
        if m.offset() == first && stamped.is_some_and(|t| t < start_ms) {
            todo.remove(&m.partition());
            continue;
        }
        if stamped.is_some_and(|t| t > stop_ms) {
            todo.remove(&m.partition());
            continue;
        }
        each(&m);
        if m.offset() + 1 >= high {
            todo.remove(&m.partition());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_a_partition_starts() {
        let cases = [
            (Some(Offset::Offset(5)), 0, 10, Some(5)),
            (Some(Offset::Offset(2)), 4, 10, Some(4)), // the broker deleted older records since
            (Some(Offset::Offset(10)), 0, 10, None),
            (Some(Offset::End), 0, 10, None),
            (None, 3, 10, Some(3)),
            (Some(Offset::Beginning), 3, 10, Some(3)),
            (Some(Offset::Offset(0)), 0, 0, None), // empty partition
        ];
        for (answer, low, high, want) in cases {
            assert_eq!(start_offset(answer, low, high), want, "{answer:?} {low}..{high}");
        }
    }

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
