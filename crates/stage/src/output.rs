//! Where a stage's records go: one producer for all its outputs, with the
//! exactly-once settings (idempotent, acks=all) or, with transactions, a
//! transactional one. Every record is remembered until it is
//! acknowledged: a checkpoint is written only after all of them are.

use crate::Error;
use bus::KafkaConfig;
use bus::produce::{Acked, InFlight};
use bus::reader::ID_HEADER;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What librdkafka may hold for a stage while the broker is slow (KB).
const BUFFER_KBYTES: usize = 64 * 1024;
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Output {
    producer: FutureProducer,
    topics: Vec<String>,
    /// Records not yet acknowledged, by topic.
    pending: InFlight<String>,
    /// The first failed delivery seen while waiting for room in the queue.
    failed: Option<Error>,
    transactional: bool,
    stop: Arc<AtomicBool>,
}

impl Output {
    /// A producer for `topics`. With `transactional_id`, a transactional
    /// one: it fences any older producer of that id and opens the first
    /// transaction (blocking calls: the stage's own thread may make them).
    pub fn new(
        kafka: &KafkaConfig,
        topics: Vec<String>,
        transactional_id: Option<&str>,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, Error> {
        let (producer, transactional) = match transactional_id {
            Some(id) => {
                let p = kafka.transactional_producer(id, BUFFER_KBYTES)?;
                p.init_transactions(TXN_TIMEOUT).map_err(txn("init"))?;
                p.begin_transaction().map_err(txn("begin"))?;
                (p, true)
            }
            None => (kafka.producer(bus::Delivery::ExactlyOnce, BUFFER_KBYTES)?, false),
        };
        Ok(Output { producer, topics, pending: InFlight::with_stop(stop.clone()), failed: None, transactional, stop })
    }

    pub fn transactional(&self) -> bool {
        self.transactional
    }

    /// Queues a record with its identity `id` (the `vigil-id` header);
    /// waits, never drops, while librdkafka's queue is full. Any other
    /// refusal (a fenced or failed producer, a record too large, a topic
    /// the stage did not declare) is an error: the runtime restarts the
    /// stage from its last checkpoint.
    pub async fn send(&mut self, topic: &str, key: &str, id: &str, payload: &[u8]) -> Result<(), Error> {
        if !self.topics.iter().any(|t| t == topic) {
            return Err(Error::Config(format!("{topic}: not one of this stage's declared outputs")));
        }
        let headers = OwnedHeaders::new().insert(Header { key: ID_HEADER, value: Some(id) });
        let record = FutureRecord::to(topic).key(key).payload(payload).headers(headers);
        let failed = &mut self.failed;
        let settle = |topic: String, acked: Acked| {
            if let Err(cause) = acked {
                failed.get_or_insert(Error::Delivery { topic, cause });
            }
        };
        match self.pending.send(&self.producer, record, settle).await {
            Ok(delivery) => self.pending.track(topic.to_string(), delivery),
            Err(e) => return Err(Error::Delivery { topic: topic.into(), cause: e.to_string() }),
        }
        self.failed.take().map_or(Ok(()), Err)
    }

    /// Queues an informational record (a member report) that nothing
    /// waits for: a checkpoint never depends on it, and a refusal is only
    /// logged.
    pub(crate) fn send_untracked(&self, topic: &str, key: &str, payload: &[u8]) {
        if let Err((e, _)) = self.producer.send_result(FutureRecord::to(topic).key(key).payload(payload)) {
            tracing::debug!(topic, error = %e, "report not queued");
        }
    }

    /// Waits for every queued record's acknowledgement. Gives up once the
    /// stage is stopping and an acknowledgement is slow (the broker may be
    /// gone for good): the next run starts from the last checkpoint.
    pub async fn wait_delivered(&mut self) -> Result<(), Error> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        loop {
            match tokio::time::timeout(Duration::from_millis(500), self.pending.next()).await {
                Ok(None) => return Ok(()),
                Ok(Some((_, Ok(_)))) => {}
                Ok(Some((topic, Err(cause)))) => return Err(Error::Delivery { topic, cause }),
                Err(_) if self.stop.load(Ordering::Relaxed) => {
                    return Err(Error::Delivery {
                        topic: self.topics.join(","),
                        cause: "stopping with records not acknowledged".into(),
                    });
                }
                Err(_) => {}
            }
        }
    }

    /// The group dropped this member: with transactions, what the open
    /// transaction holds is aborted (another member redoes it). Without,
    /// records already sent stay: the next owner publishes the same ones
    /// again, with the same ids, and consumers drop the copies.
    pub(crate) fn abandon(&mut self) {
        if self.transactional {
            let _ = self.producer.abort_transaction(TXN_TIMEOUT);
            self.pending.clear();
            self.failed = None;
            if let Err(e) = self.producer.begin_transaction() {
                tracing::warn!(error = %e, "could not open the next transaction after an abort");
            }
        }
    }

    /// Commits the open transaction with the input `offsets` of `group`,
    /// and opens the next. A failed commit aborts: nothing of the interval
    /// becomes visible, and the next run redoes it.
    pub(crate) fn commit_transaction(
        &mut self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), Error> {
        let committed = self
            .producer
            .send_offsets_to_transaction(offsets, group, TXN_TIMEOUT)
            .and_then(|()| self.producer.commit_transaction(TXN_TIMEOUT));
        if let Err(e) = committed {
            let _ = self.producer.abort_transaction(TXN_TIMEOUT);
            return Err(Error::Transaction(format!("commit: {e}")));
        }
        self.pending.clear();
        self.producer.begin_transaction().map_err(txn("begin"))
    }
}

fn txn(what: &'static str) -> impl Fn(KafkaError) -> Error {
    move |e| Error::Transaction(format!("{what}: {e}"))
}
