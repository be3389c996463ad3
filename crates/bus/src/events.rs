//! `vigil.events` (at-least-once): things that happened, for people and for
//! other stages. Every event carries a unique id, so consumers that see one
//! twice (the price of at-least-once) can drop the copy.

use crate::client::KafkaConfig;
use crate::topics;
use crate::{Delivery, Error};
use rdkafka::producer::{FutureProducer, FutureRecord};

pub use schema::events::{BestFrame, Event, LostFrames, ObjectInfo};

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

    /// Waits (at most `timeout`, blocking) for queued events to be delivered.
    pub fn flush(&self, timeout: std::time::Duration) {
        use rdkafka::producer::Producer;
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "events not delivered before stopping");
        }
    }
}

/// Every event in `vigil.events`, each once (copies dropped by id), in
/// time order (blocking: call off the runtime).
pub fn read_all(kafka: &KafkaConfig, partitions: i32, timeout: std::time::Duration) -> Result<Vec<Event>, Error> {
    read_kind(kafka, partitions, None, timeout)
}

/// The events of one `kind` (all with `None`), as `read_all`; memory holds
/// only those.
pub fn read_kind(
    kafka: &KafkaConfig,
    partitions: i32,
    kind: Option<&str>,
    timeout: std::time::Duration,
) -> Result<Vec<Event>, Error> {
    use rdkafka::Message;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let range = crate::range::Range::all(topics::EVENTS, Delivery::AtLeastOnce, partitions, timeout);
    crate::range::read(kafka, &range, |m| {
        if let Some(e) = m.payload().and_then(|p| serde_json::from_slice::<Event>(p).ok())
            && kind.is_none_or(|k| e.kind == k)
            && seen.insert(e.id.clone())
        {
            out.push(e);
        }
    })?;
    out.sort_by(|a, b| (a.time_us, &a.id).cmp(&(b.time_us, &b.id)));
    Ok(out)
}
