//! `vigil.events` (at-least-once): things that happened, for people and for
//! other stages. Every event carries a unique id, so consumers that see one
//! twice (the price of at-least-once) can drop the copy.

use crate::client::KafkaConfig;
use crate::topics;
use crate::{Delivery, Error};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per event (UUID v7): the consumers' dedupe key.
    pub id: String,
    /// e.g. `archive-paused`, `archive-resumed`.
    pub kind: String,
    /// The camera it concerns, if one.
    pub camera: Option<String>,
    pub time_us: i64,
    /// Which process raised it (`archive@host`), for operators.
    pub source: String,
    pub detail: String,
}

impl Event {
    pub fn new(kind: &str, camera: Option<&str>, source: &str, detail: impl Into<String>) -> Self {
        Event {
            id: uuid::Uuid::now_v7().to_string(),
            kind: kind.into(),
            camera: camera.map(str::to_string),
            time_us: crate::now_us(),
            source: source.into(),
            detail: detail.into(),
        }
    }
}

/// Publishes events with the at-least-once settings; retries until the
/// broker has them, without blocking the caller. Usable from any thread
/// (camera threads too): delivery reports are watched on the runtime it
/// was created on.
#[derive(Clone)]
pub struct Events {
    producer: FutureProducer,
    runtime: Option<tokio::runtime::Handle>,
}

impl Events {
    pub fn new(kafka: &KafkaConfig) -> Result<Self, Error> {
        Ok(Events {
            producer: kafka.producer(Delivery::AtLeastOnce, 16 * 1024)?,
            runtime: tokio::runtime::Handle::try_current().ok(),
        })
    }

    /// Queues `e` at once (so events keep their order) and reports a
    /// failed delivery in the background.
    pub fn publish(&self, e: Event) {
        let payload = serde_json::to_vec(&e).unwrap_or_default();
        // Keyed by camera, or by source for events about a process, so the
        // events of one subject stay in order in one partition.
        let key = e.camera.clone().unwrap_or_else(|| e.source.clone());
        match self.producer.send_result(FutureRecord::to(topics::EVENTS).key(&key).payload(&payload)) {
            Ok(delivery) => {
                // Without a runtime the event still goes out; only a failed
                // delivery would go unreported.
                if let Some(rt) = &self.runtime {
                    rt.spawn(async move {
                        if !matches!(delivery.await, Ok(Ok(_))) {
                            tracing::warn!(kind = %e.kind, "event not delivered");
                        }
                    });
                }
            }
            Err((err, _)) => tracing::warn!(kind = %e.kind, error = %err, "event not queued"),
        }
    }
}
