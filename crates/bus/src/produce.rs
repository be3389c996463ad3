//! One way to produce with records in flight: ingest, stage outputs and
//! `vigil submit` all send through `InFlight`.
//!
//! Each record sent is tracked with a tag of the caller's (a frame's chunk,
//! a topic name, a chunk number), handed back with its delivery. While
//! librdkafka's bounded queue is full, a send waits for one of this
//! sender's own acknowledgements (the queue drains as the broker takes
//! records) and hands it to the caller; with none in flight (others fill a
//! shared producer's queue) it sleeps briefly. Never a spin, never a
//! blocked thread, never a record dropped for a full queue unless the
//! caller asks (`try_send`, for at-most-once topics).
//!
//! Records nothing waits for (events, camera states, member reports) are
//! queued once, straight on their producer; a refusal is logged.

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where a record landed (partition, offset), or why it did not.
pub type Acked = Result<(i32, i64), String>;

/// How long a send waits for one of its acknowledgements before trying
/// the full queue again (another sender's records may free it first).
const ACK_WAIT: Duration = Duration::from_millis(100);
/// How long a send with nothing in flight sleeps before trying again.
const IDLE_WAIT: Duration = Duration::from_millis(20);

type Pending<T> = Pin<Box<dyn Future<Output = (T, Acked)> + Send>>;

/// Records in flight, each with its caller's tag.
pub struct InFlight<T> {
    pending: FuturesUnordered<Pending<T>>,
    stop: Option<Arc<AtomicBool>>,
}

impl<T: Send + 'static> Default for InFlight<T> {
    fn default() -> Self {
        InFlight { pending: FuturesUnordered::new(), stop: None }
    }
}

impl<T: Send + 'static> InFlight<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// One whose sends stop waiting for room, and return the full queue as
    /// their error, once `stop` is set (a stopping stage whose broker may
    /// be gone for good).
    pub fn with_stop(stop: Arc<AtomicBool>) -> Self {
        InFlight { pending: FuturesUnordered::new(), stop: Some(stop) }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Queues `record`, waiting while the queue is full; acknowledgements
    /// it waited for go to `settle`. Then `track` the delivery with its
    /// tag. Any other refusal (a record too large, a fatal producer) is
    /// the error.
    pub async fn send<'a, K, P>(
        &mut self,
        producer: &FutureProducer,
        mut record: FutureRecord<'a, K, P>,
        mut settle: impl FnMut(T, Acked),
    ) -> Result<DeliveryFuture, KafkaError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        loop {
            match producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((e @ KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    if self.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                        return Err(e);
                    }
                    record = r;
                    if self.pending.is_empty() {
                        tokio::time::sleep(IDLE_WAIT).await;
                    } else if let Ok(Some((tag, acked))) = tokio::time::timeout(ACK_WAIT, self.pending.next()).await {
                        settle(tag, acked);
                    }
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Queues `record` only if there is room now: for at-most-once topics,
    /// where a full queue drops.
    pub fn try_send<'a, K, P>(
        &mut self,
        producer: &FutureProducer,
        record: FutureRecord<'a, K, P>,
    ) -> Result<DeliveryFuture, KafkaError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        producer.send_result(record).map_err(|(e, _)| e)
    }

    /// Tracks a queued record's delivery under `tag`.
    pub fn track(&mut self, tag: T, delivery: DeliveryFuture) {
        self.pending.push(Box::pin(async move {
            let acked = match delivery.await {
                Ok(Ok(d)) => Ok((d.partition, d.offset)),
                Ok(Err((e, _))) => Err(e.to_string()),
                Err(_) => Err("producer closed".to_string()),
            };
            (tag, acked)
        }));
    }

    /// The next acknowledgement, in the order they come; `None` when
    /// nothing is in flight.
    pub async fn next(&mut self) -> Option<(T, Acked)> {
        self.pending.next().await
    }

    /// Forgets every record in flight (an aborted transaction's).
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}
