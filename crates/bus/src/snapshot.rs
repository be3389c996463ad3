//! Reading a whole topic once, from the beginning to the end it had when
//! reading began: camera states, detector checkpoints, events for a report.

use crate::client::KafkaConfig;
use crate::{Delivery, Error};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Calls `each` with every record of `topic`'s first `partitions`
/// partitions, in order within a partition (blocking: call off the
/// runtime). Fails if that takes longer than `timeout`.
pub fn read_to_end(
    kafka: &KafkaConfig,
    topic: &str,
    partitions: i32,
    timeout: Duration,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> Result<(), Error> {
    let consumer: BaseConsumer = kafka
        // read_committed: a transactional writer's aborted records never show.
        .consumer_config(Delivery::LastValue, "vigil-snapshot")
        .create()
        .map_err(|e| Error::kafka("create consumer", e))?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout).map_err(|e| Error::kafka("read topic", e))?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning).map_err(|e| Error::kafka("assign", e))?;
        }
    }
    if ends.is_empty() {
        return Ok(());
    }
    consumer.assign(&tpl).map_err(|e| Error::kafka("assign", e))?;
    let deadline = Instant::now() + timeout;
    while !ends.is_empty() {
        if Instant::now() >= deadline {
            return Err(Error::Other(format!("reading {topic}: not all of it read within {timeout:?}")));
        }
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            // Transaction markers take offsets but are never returned: a
            // partition ending in one is done when the position passes it.
            let at = consumer.position().map_err(|e| Error::kafka("read topic", e))?;
            for e in at.elements() {
                if let (Offset::Offset(o), Some(&end)) = (e.offset(), ends.get(&e.partition()))
                    && o >= end
                {
                    ends.remove(&e.partition());
                }
            }
            continue;
        };
        let m = m.map_err(|e| Error::kafka("read topic", e))?;
        each(&m);
        if ends.get(&m.partition()).is_some_and(|&end| m.offset() + 1 >= end) {
            ends.remove(&m.partition());
        }
    }
    Ok(())
}
