//! A compacted topic kept in memory: the newest value per key, always
//! current (Kafka Streams' global table). One long-lived consumer per
//! process feeds it, instead of a consumer per request; readers take a
//! copy of the rows without touching Kafka.
//!
//! The consumer reads every partition from the beginning, then follows the
//! topic. A record without a payload (a tombstone) deletes its key; a
//! payload that does not parse is skipped and counted.

use crate::Error;
use crate::client::KafkaConfig;
use crate::metrics::Metrics;
use crate::reader::Reader;
use crate::topics::{TopicSpec, groups};
use rdkafka::Offset;
use rdkafka::message::Message;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub struct Table<V> {
    rows: Arc<Mutex<BTreeMap<String, V>>>,
    /// Changes taken so far: a reader that caches what it made of the
    /// rows rebuilds when this moves.
    changes: Arc<AtomicU64>,
    /// Per partition, the next offset to read.
    next: Arc<Mutex<HashMap<i32, i64>>>,
    topic: &'static str,
    partitions: i32,
    task: tokio::task::AbortHandle,
}

impl<V> Drop for Table<V> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<V: DeserializeOwned + Clone + Send + 'static> Table<V> {
    /// Starts following `topic` (its first `partitions` partitions) on the
    /// current runtime.
    pub fn start(kafka: &KafkaConfig, topic: &TopicSpec, partitions: i32, metrics: &Metrics) -> Result<Self, Error> {
        let from: HashMap<i32, Offset> = (0..partitions).map(|p| (p, Offset::Beginning)).collect();
        let mut reader = Reader::assign(kafka, topic, groups::WEB, &from, metrics)?;
        let rows: Arc<Mutex<BTreeMap<String, V>>> = Default::default();
        let changes: Arc<AtomicU64> = Default::default();
        let next: Arc<Mutex<HashMap<i32, i64>>> = Default::default();
        let (shared, changed, read) = (rows.clone(), changes.clone(), next.clone());
        let skipped = metrics.counter(
            "vigil_table_unreadable_records_total",
            "Records of a compacted topic that did not parse, skipped.",
            &[("topic", topic.name)],
        );
        let name = topic.name;
        let task = tokio::spawn(async move {
            loop {
                let m = match reader.recv().await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::error!(topic = name, error = %e, "table reader stopped");
                        return;
                    }
                };
                read.lock().unwrap_or_else(|p| p.into_inner()).insert(m.partition(), m.offset() + 1);
                let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()).map(str::to_string) else {
                    continue;
                };
                let value = match m.payload() {
                    None => None,
                    Some(p) => match serde_json::from_slice::<V>(p) {
                        Ok(v) => Some(v),
                        Err(_) => {
                            skipped.inc();
                            continue;
                        }
                    },
                };
                let mut rows = shared.lock().unwrap_or_else(|p| p.into_inner());
                match value {
                    Some(v) => rows.insert(key, v),
                    None => rows.remove(&key),
                };
                changed.fetch_add(1, Ordering::Release);
            }
        });
        Ok(Table { rows, changes, next, topic: topic.name, partitions, task: task.abort_handle() })
    }

    /// Waits until the table holds everything the topic held when called
    /// (a stage that acts on its rows starts from all of them); an error
    /// after `within`, or when the reader stopped.
    pub async fn caught_up(&self, kafka: &KafkaConfig, within: std::time::Duration) -> Result<(), Error> {
        let (k, topic, parts) = (kafka.clone(), self.topic, (0..self.partitions).collect::<Vec<_>>());
        let ends = tokio::task::spawn_blocking(move || crate::range::watermarks(&k, topic, &parts))
            .await
            .map_err(|e| Error::Other(e.to_string()))??;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = self.next.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if ends.iter().all(|(p, (low, high))| high <= low || next.get(p).is_some_and(|n| n >= high)) {
                return Ok(());
            }
            if self.stopped() || tokio::time::Instant::now() > deadline {
                return Err(Error::Other(format!("{topic}: not read to its end within {within:?}")));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The reader stopped (an error it logged): the rows are no longer
    /// kept current.
    pub fn stopped(&self) -> bool {
        self.task.is_finished()
    }

    /// Changes taken since the start (a tombstone is one too).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// The newest value of every key, in key order.
    pub fn rows(&self) -> Vec<V> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}
