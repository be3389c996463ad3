//! Reading a bounded stretch of a topic once: from the beginning or a time,
//! to the end it had when reading began or a time. Checkpoints, camera
//! states, event reports and the web app's range requests all read this way.
//!
//! Each partition is read from its start (the beginning, or the broker's
//! offset for a timestamp: `offsets_for_times`) up to the high watermark
//! it had when the read began, or to its first record stamped after
//! `to_ms`. Transaction markers take offsets but are never returned, so a
//! partition whose tail is a marker is done once the consumer's position
//! passes the end; without that check such a read would wait for a record
//! that never comes. The topic's own consumer settings apply (read_committed
//! on exactly-once topics: aborted records never show). Blocking: call it
//! off the async workers.

use crate::Error;
use crate::client::KafkaConfig;
use crate::delivery::Delivery;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What to read.
#[derive(Clone, Debug)]
pub struct Range {
    pub topic: String,
    /// The topic's guarantee (from the plan): its consumer settings.
    pub delivery: Delivery,
    pub partitions: i32,
    /// Records stamped (Kafka timestamp) at or after this; `None`: from the beginning.
    pub from_ms: Option<i64>,
    /// Records stamped at or before this; `None`: to the end as it is now.
    pub to_ms: Option<i64>,
    pub timeout: Duration,
}

impl Range {
    /// The whole topic as it is now.
    pub fn all(topic: &str, delivery: Delivery, partitions: i32, timeout: Duration) -> Self {
        Range { topic: topic.into(), delivery, partitions, from_ms: None, to_ms: None, timeout }
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
        // No answer (a broker without timestamps), or from the beginning.
        _ => low,
    };
    (at < high).then_some(at.max(low))
}

/// Calls `each` with the range's records, in order within a partition.
/// Fails when reading takes longer than the range's timeout.
pub fn read(kafka: &KafkaConfig, r: &Range, mut each: impl FnMut(&BorrowedMessage<'_>)) -> Result<(), Error> {
    let consumer: BaseConsumer = kafka.base_consumer(r.delivery, crate::topics::groups::READ)?;
    let deadline = Instant::now() + r.timeout;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let timed_out = || Error::TimedOut { what: format!("reading {}", r.topic), timeout: r.timeout };
    let mut marks = BTreeMap::new();
    for p in 0..r.partitions {
        let (low, high) = match consumer.fetch_watermarks(&r.topic, p, left()) {
            Ok(marks) => marks,
            // A topic (or partition) not created yet holds nothing.
            Err(e) if unknown(&e) => continue,
            Err(e) => return Err(Error::kafka("read watermarks", e)),
        };
        if high > low {
            marks.insert(p, (low, high));
        }
    }
    if marks.is_empty() {
        return Ok(());
    }
    let answers: BTreeMap<i32, Offset> = match r.from_ms {
        None => BTreeMap::new(),
        Some(ms) => {
            let mut query = TopicPartitionList::new();
            for &p in marks.keys() {
                query
                    .add_partition_offset(&r.topic, p, Offset::Offset(ms))
                    .map_err(|e| Error::kafka("offsets for times", e))?;
            }
            match consumer.offsets_for_times(query, left()) {
                Ok(tpl) => {
                    tpl.elements().iter().filter(|e| e.error().is_ok()).map(|e| (e.partition(), e.offset())).collect()
                }
                Err(e) => {
                    tracing::debug!(topic = %r.topic, error = %e, "offsets for times: reading from the beginning");
                    BTreeMap::new()
                }
            }
        }
    };
    // Per partition: (first offset to read, end).
    let mut todo: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    let mut assign = TopicPartitionList::new();
    for (&p, &(low, high)) in &marks {
        if let Some(at) = start_offset(answers.get(&p).copied(), low, high) {
            todo.insert(p, (at, high));
            assign.add_partition_offset(&r.topic, p, Offset::Offset(at)).map_err(|e| Error::kafka("assign", e))?;
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    consumer.assign(&assign).map_err(|e| Error::kafka("assign", e))?;
    while !todo.is_empty() {
        if Instant::now() >= deadline {
            return Err(timed_out());
        }
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            // Idle: a partition ending in a transaction marker is done when
            // the position has passed its end.
            let at = consumer.position().map_err(|e| Error::kafka("read topic", e))?;
            let at: Vec<(i32, Offset)> = at.elements().iter().map(|e| (e.partition(), e.offset())).collect();
            todo.retain(|&p, &mut (_, end)| !passed(&at, p, end));
            continue;
        };
        let m = m.map_err(|e| Error::kafka("read topic", e))?;
        let Some(&(first, end)) = todo.get(&m.partition()) else { continue };
        let stamped = m.timestamp().to_millis();
        // Some brokers (tansu) answer offset 0 when no record is stamped
        // that late: a first record older than the start says so.
        let too_early = r.from_ms.is_some_and(|from| m.offset() == first && stamped.is_some_and(|t| t < from));
        let too_late = r.to_ms.is_some_and(|to| stamped.is_some_and(|t| t > to));
        if too_early || too_late {
            todo.remove(&m.partition());
            continue;
        }
        each(&m);
        if m.offset() + 1 >= end {
            todo.remove(&m.partition());
        }
    }
    Ok(())
}

fn unknown(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode::{UnknownPartition, UnknownTopic, UnknownTopicOrPartition};
    matches!(e.rdkafka_error_code(), Some(UnknownPartition | UnknownTopic | UnknownTopicOrPartition))
}

/// Whether the consumer's position on `partition` has reached `end`: the
/// partition is done even though its last offsets returned no record (a
/// transaction marker, an aborted transaction's records).
fn passed(positions: &[(i32, Offset)], partition: i32, end: i64) -> bool {
    positions.iter().any(|&(p, o)| p == partition && matches!(o, Offset::Offset(o) if o >= end))
}

/// The (low, high) watermarks of each of `partitions` of `topic` now. Blocking.
pub fn watermarks(kafka: &KafkaConfig, topic: &str, partitions: &[i32]) -> Result<BTreeMap<i32, (i64, i64)>, Error> {
    let consumer: BaseConsumer = kafka.base_consumer(Delivery::ExactlyOnce, crate::topics::groups::READ)?;
    let mut out = BTreeMap::new();
    for &p in partitions {
        let marks = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| Error::kafka("read watermarks", e))?;
        out.insert(p, marks);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

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
    fn a_partition_is_done_once_the_position_reaches_its_end() {
        let at = [(0, Offset::Offset(4)), (1, Offset::Offset(2)), (2, Offset::Invalid)];
        // Partition 0: three records and a commit marker, position 4.
        assert!(passed(&at, 0, 4));
        assert!(!passed(&at, 1, 4), "records still to come");
        assert!(!passed(&at, 2, 4), "no position yet");
        assert!(!passed(&at, 3, 1), "not assigned");
    }

    /// A transaction's records are read committed, and the read ends.
    /// (librdkafka's mock cluster writes no commit markers, and the
    /// embedded broker has no transactions: the marker at the tail itself
    /// is covered by the test above.)
    #[test]
    fn a_transactions_records_are_read_to_the_end() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t", 1, 1).unwrap();
        let kafka = KafkaConfig::new(mock.bootstrap_servers());
        let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .set("transactional.id", "range-test")
            .create()
            .unwrap();
        let t = Duration::from_secs(10);
        producer.init_transactions(t).unwrap();
        producer.begin_transaction().unwrap();
        for i in 0..3 {
            producer.send(BaseRecord::<str, str>::to("t").key("k").payload(&i.to_string())).unwrap();
        }
        producer.commit_transaction(t).unwrap();
        let mut got = Vec::new();
        let started = Instant::now();
        let r = Range::all("t", Delivery::ExactlyOnce, 1, Duration::from_secs(20));
        read(&kafka, &r, |m| got.push(m.payload().map(<[u8]>::to_vec).unwrap_or_default())).unwrap();
        assert_eq!(got, [b"0".to_vec(), b"1".to_vec(), b"2".to_vec()]);
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    }

    #[test]
    fn a_time_range_stops_at_records_stamped_later() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t", 1, 1).unwrap();
        let kafka = KafkaConfig::new(mock.bootstrap_servers());
        let producer: ThreadedProducer<DefaultProducerContext> =
            rdkafka::ClientConfig::new().set("bootstrap.servers", mock.bootstrap_servers()).create().unwrap();
        for (i, ts) in [1_000i64, 2_000, 3_000, 4_000].into_iter().enumerate() {
            let payload = i.to_string();
            producer.send(BaseRecord::<str, str>::to("t").payload(&payload).timestamp(ts)).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        let mut got = Vec::new();
        let r = Range { to_ms: Some(2_500), ..Range::all("t", Delivery::AtLeastOnce, 1, Duration::from_secs(20)) };
        read(&kafka, &r, |m| got.push(m.timestamp().to_millis().unwrap())).unwrap();
        assert_eq!(got, [1_000, 2_000]);
    }
}
