//! `vigil.cameras` (compacted, last value wins): each camera's current
//! state, keyed by camera. Ingest writes a record when a camera stream goes
//! up or down; readers (the web app's status page, `vigil topics`) read the
//! topic from the start and keep the newest record per camera.

use crate::client::KafkaConfig;
use crate::{Delivery, Error, topics};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::time::Duration;

pub use schema::cameras::{CameraState, key};

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
        let key = key(s);
        if let Err((e, _)) = self.producer.send_result(FutureRecord::to(topics::CAMERAS).key(&key).payload(&payload)) {
            tracing::warn!(camera = %s.camera, error = %e, "camera state not queued");
        }
    }
}

/// The newest state of every camera stream, read once (blocking: call off
/// the runtime). Long-running readers keep a `Table` instead.
pub fn read_all(kafka: &KafkaConfig, partitions: i32, timeout: Duration) -> Result<Vec<CameraState>, Error> {
    let mut latest: BTreeMap<String, CameraState> = BTreeMap::new();
    let range = crate::range::Range::all(topics::CAMERAS, Delivery::LastValue, partitions, timeout);
    let read = crate::range::read(kafka, &range, |m| {
        if let Some(s) = m.payload().and_then(|p| serde_json::from_slice::<CameraState>(p).ok()) {
            latest.insert(key(&s), s);
        }
    });
    match read {
        Ok(()) => Ok(latest.into_values().collect()),
        // A status page with what could be read beats none.
        Err(e) if !latest.is_empty() => {
            tracing::warn!(error = %e, "camera states read in part");
            Ok(latest.into_values().collect())
        }
        Err(e) => Err(e),
    }
}
