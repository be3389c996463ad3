//! `vigil.cameras` (compacted, last value wins): each camera's current
//! state, keyed by camera. Ingest writes a record when a camera stream goes
//! up or down; readers (the web app's status page, `vigil topics`) read the
//! topic from the start and keep the newest record per camera.

use crate::client::KafkaConfig;
use crate::{Delivery, Error, topics};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CameraState {
    pub camera: String,
    /// `main` or `sub`.
    pub stream: String,
    pub up: bool,
    /// When it went up or down, µs since the epoch.
    pub since_us: i64,
    /// Sessions that ended and were retried since ingest started.
    pub reconnects: u64,
    /// Why the last session ended (empty if none did).
    pub last_error: String,
}

/// Writes camera states; usable from any thread.
#[derive(Clone)]
pub struct CameraStates {
    producer: FutureProducer,
}

impl CameraStates {
    pub fn new(kafka: &KafkaConfig) -> Result<Self, Error> {
        Ok(CameraStates { producer: kafka.producer(Delivery::LastValue, 1024)? })
    }

    /// Queues the state (never blocks); a lost record is replaced by the next.
    pub fn publish(&self, s: &CameraState) {
        let payload = serde_json::to_vec(s).unwrap_or_default();
        let key = format!("{}/{}", s.camera, s.stream);
        if let Err((e, _)) = self.producer.send_result(FutureRecord::to(topics::CAMERAS).key(&key).payload(&payload)) {
            tracing::warn!(camera = %s.camera, error = %e, "camera state not queued");
        }
    }
}

/// The newest state of every camera stream (blocking: call off the runtime).
pub fn read_all(kafka: &KafkaConfig, partitions: i32, timeout: Duration) -> Result<Vec<CameraState>, Error> {
    let consumer: BaseConsumer = kafka
        .consumer_config(Delivery::AtMostOnce, "vigil-camera-states")
        .create()
        .map_err(|e| Error::kafka("create consumer", e))?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topics::CAMERAS, p, timeout)
            .map_err(|e| Error::kafka("read camera states", e))?;
        if high > 0 {
            ends.insert(p, high);
            tpl.add_partition_offset(topics::CAMERAS, p, Offset::Beginning).map_err(|e| Error::kafka("assign", e))?;
        }
    }
    let mut latest: BTreeMap<String, CameraState> = BTreeMap::new();
    if ends.is_empty() {
        return Ok(vec![]);
    }
    consumer.assign(&tpl).map_err(|e| Error::kafka("assign", e))?;
    let deadline = Instant::now() + timeout;
    while !ends.is_empty() && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else { continue };
        let Ok(m) = m else { continue };
        if let Some(s) = m.payload().and_then(|p| serde_json::from_slice::<CameraState>(p).ok()) {
            latest.insert(format!("{}/{}", s.camera, s.stream), s);
        }
        if ends.get(&m.partition()).is_some_and(|&end| m.offset() + 1 >= end) {
            ends.remove(&m.partition());
        }
    }
    Ok(latest.into_values().collect())
}
