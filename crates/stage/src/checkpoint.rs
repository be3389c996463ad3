//! Checkpoints on a stage's compacted state topic.
//!
//! One record per (stage instance, input partition), keyed
//! `<instance>/<partition>`, holding the offset to read that partition
//! again from and the stage's state for it. Compaction keeps the newest
//! per key, so the topic stays as small as the state.

use bus::{Delivery, KafkaConfig, TopicSpec};
use rdkafka::Message;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// What is stored per input partition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint<S> {
    /// Per input topic, the offset to read again from.
    pub offsets: BTreeMap<String, i64>,
    pub state: S,
}

pub fn key(instance: &str, partition: i32) -> String {
    format!("{instance}/{partition}")
}

/// The newest checkpoint of each input partition of `instance` (blocking:
/// call off the runtime). A record that does not parse (a tombstone, or
/// one written by an older vigil) counts as none: that partition starts
/// afresh, and the log says so.
pub fn read<S: DeserializeOwned>(
    kafka: &KafkaConfig,
    state_topic: &TopicSpec,
    instance: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, Checkpoint<S>>, bus::Error> {
    let prefix = format!("{instance}/");
    let mut out = BTreeMap::new();
    let mut unreadable = BTreeMap::new();
    let range = bus::range::Range::all(state_topic.name, Delivery::LastValue, state_topic.partitions, timeout);
    bus::range::read(kafka, &range, |m| {
        let key = m.key().and_then(|k| std::str::from_utf8(k).ok());
        let Some(p) = key.and_then(|k| k.strip_prefix(&prefix)).and_then(|p| p.parse::<i32>().ok()) else {
            return;
        };
        match m.payload().map(serde_json::from_slice::<Checkpoint<S>>) {
            Some(Ok(c)) => {
                unreadable.remove(&p);
                out.insert(p, c);
            }
            Some(Err(e)) => {
                unreadable.insert(p, e.to_string());
                out.remove(&p);
            }
            None => {
                out.remove(&p);
            }
        }
    })?;
    for (p, why) in unreadable {
        tracing::warn!(instance, partition = p, "checkpoint unreadable ({why}): the partition starts afresh");
    }
    Ok(out)
}
