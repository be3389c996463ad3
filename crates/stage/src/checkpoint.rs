//! Checkpoints on a stage's compacted state topic.
//!
//! One record per (stage instance, input partition), keyed
//! `<instance>/<partition>`, holding the offset to read that partition
//! again from and the stage's state for it. Compaction keeps the newest
//! per key, so the topic stays as small as the state.

use bus::{KafkaConfig, TopicSpec};
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

/// How the detector wrote its checkpoints before the stage runtime:
/// `{resume_offset, ...state}`. Read so that an upgrade resumes where the
/// old detector stopped.
#[derive(Deserialize)]
struct Legacy<S> {
    resume_offset: i64,
    #[serde(flatten)]
    state: S,
}

fn parse<S: DeserializeOwned>(payload: &[u8], input: &str) -> Result<Checkpoint<S>, serde_json::Error> {
    serde_json::from_slice::<Checkpoint<S>>(payload).or_else(|e| {
        let old: Legacy<S> = serde_json::from_slice(payload).map_err(|_| e)?;
        Ok(Checkpoint { offsets: BTreeMap::from([(input.to_string(), old.resume_offset)]), state: old.state })
    })
}

/// The newest checkpoint of each input partition of `instance` (blocking:
/// call off the runtime). A record that does not parse (a tombstone, or
/// one written by an older vigil) counts as none: that partition starts
/// afresh, and the log says so.
pub fn read<S: DeserializeOwned>(
    kafka: &KafkaConfig,
    state_topic: &TopicSpec,
    instance: &str,
    input: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, Checkpoint<S>>, bus::Error> {
    let prefix = format!("{instance}/");
    let mut out = BTreeMap::new();
    let mut unreadable = BTreeMap::new();
    let range = bus::range::Range::all(state_topic.name, state_topic.delivery, state_topic.partitions, timeout);
    bus::range::read(kafka, &range, |m| {
        let key = m.key().and_then(|k| std::str::from_utf8(k).ok());
        let Some(p) = key.and_then(|k| k.strip_prefix(&prefix)).and_then(|p| p.parse::<i32>().ok()) else {
            return;
        };
        match m.payload().map(|p| parse::<S>(p, input)) {
            Some(Ok(c)) => {
                unreadable.remove(&p);
                out.insert(p, c);
            }
            Some(Err(e)) => {
                unreadable.insert(p, e.to_string());
                out.remove(&p);
            }
            None => {
                unreadable.remove(&p);
                out.remove(&p);
            }
        }
    })?;
    for (p, why) in unreadable {
        tracing::warn!(instance, partition = p, "checkpoint unreadable ({why}): the partition starts afresh");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    struct State {
        cameras: BTreeMap<String, u32>,
    }

    #[test]
    fn checkpoints_of_both_layouts_are_read() {
        let now: Checkpoint<State> = parse(br#"{"offsets":{"in":7},"state":{"cameras":{"a":1}}}"#, "in").unwrap();
        let old: Checkpoint<State> = parse(br#"{"resume_offset":7,"cameras":{"a":1}}"#, "in").unwrap();
        assert_eq!(now, old);
        assert_eq!(old.offsets["in"], 7);
        assert!(parse::<State>(br#"{"cameras":{"a":1}}"#, "in").is_err(), "no offset: unreadable");
    }
}
