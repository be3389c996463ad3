//! Reading one topic as a stream: the one consumer every long-running
//! reader of vigil is built on (frames, records, tables, stages).
//!
//! The error policy lives here, once: a consumer error that a retry may
//! cure (a broker restarting, a partition leader moving) is logged, rate
//! limited, and retried with backoff inside `recv`; only errors that no
//! retry cures (authentication, a fatal client state) reach the caller.
//! Offsets: the reader knows, per partition, the offset after the last
//! record it returned; it commits to its group only as its topic's
//! guarantee allows (`Delivery::consumer_commits`).

use crate::Error;
use crate::client::KafkaConfig;
use crate::delivery::Commit;
use crate::group::{Rebalance, Rebalances};
use crate::metrics::Metrics;
use crate::topics::TopicSpec;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The header that carries a record's identity (`Output::send` in the
/// stage runtime sets it): what consumers dedupe by.
pub const ID_HEADER: &str = "vigil-id";

const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Feeds librdkafka's statistics (consumer lag per partition) into
/// metrics, and queues a group member's rebalances for its owner.
pub struct LagContext {
    metrics: Metrics,
    group: String,
    rebalances: Arc<Rebalances>,
}

impl ClientContext for LagContext {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in stats.topics {
            for (p, part) in t.partitions {
                if p < 0 || part.consumer_lag < 0 {
                    continue;
                }
                self.metrics
                    .gauge(
                        "vigil_consumer_lag_records",
                        "Records between a consumer's position and the end of the partition.",
                        &[("topic", &topic), ("partition", &p.to_string()), ("group", &self.group)],
                    )
                    .set(part.consumer_lag as f64);
            }
        }
    }
}
impl ConsumerContext for LagContext {
    /// Queues the change for the reader's owner instead of applying it
    /// (see `group`); only while the reader is being dropped does it
    /// unassign at once.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS if !self.rebalances.closing() => {
                let _ = self.rebalances.tx.send(Rebalance::Assigned(partitions));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS if !self.rebalances.closing() => {
                let lost = consumer.assignment_lost();
                let _ = self.rebalances.tx.send(Rebalance::Revoked { partitions, lost });
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {}
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let _ = match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
                    _ => consumer.unassign(),
                };
            }
            e => tracing::warn!(group = %self.group, error = ?e, "rebalance failed"),
        }
    }
}

/// One record of a topic, owned.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// From the `vigil-id` header.
    pub id: Option<String>,
    pub payload: Vec<u8>,
    pub timestamp_ms: Option<i64>,
}

/// A consumer of one topic with vigil's error policy and offset keeping.
pub struct Reader {
    consumer: StreamConsumer<LagContext>,
    topic: String,
    commits: Commit,
    /// Per partition, the offset after the last record returned.
    next_offset: HashMap<i32, i64>,
    errors: Throttle,
    /// Grows while errors repeat (across calls: callers time out `recv`),
    /// back to the minimum on the next record.
    backoff: Duration,
    rebalances: Arc<Rebalances>,
    rebalanced: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Rebalance>>>,
}

/// What a group member's reader returns: a record, or a change of its
/// partitions that its owner must act on before the next record.
pub enum Polled<'a> {
    Record(BorrowedMessage<'a>),
    Rebalance(Rebalance),
}

impl Reader {
    /// Reads the given partitions from the given offsets (`Offset::End`
    /// for a live viewer) as a member-less consumer of `group`: the
    /// caller decides what is read, the group only names it for lag.
    pub fn assign(
        cfg: &KafkaConfig,
        topic: &TopicSpec,
        group: &str,
        from: &HashMap<i32, Offset>,
        metrics: &Metrics,
    ) -> Result<Self, Error> {
        let reader = Self::create(cfg, topic, group, metrics)?;
        reader.consumer.assign(&tpl(&reader.topic, from)?).map_err(|e| Error::kafka("assign", e))?;
        Ok(reader)
    }

    /// Joins `group` as a member: the group decides which partitions this
    /// reader gets (`GroupSettings`: assignor, session timeout). Changes
    /// come from `poll` as `Polled::Rebalance`, and take effect when the
    /// owner calls `start` (assigned) or `release` (revoked).
    pub fn subscribe(cfg: &KafkaConfig, topic: &TopicSpec, group: &str, metrics: &Metrics) -> Result<Self, Error> {
        let reader = Self::create(cfg, topic, group, metrics)?;
        reader.consumer.subscribe(&[topic.name]).map_err(|e| Error::kafka("subscribe", e))?;
        Ok(reader)
    }

    fn create(cfg: &KafkaConfig, topic: &TopicSpec, group: &str, metrics: &Metrics) -> Result<Self, Error> {
        let mut c = cfg.consumer_config(topic.delivery, group);
        c.set("statistics.interval.ms", "5000");
        for (k, v) in cfg.group.consumer_settings() {
            c.set(k, v);
        }
        // The user's tuning still wins (it was applied in consumer_config).
        for (k, v) in &cfg.properties {
            c.set(k, v);
        }
        let (rebalances, rebalanced) = Rebalances::new();
        let rebalances = Arc::new(rebalances);
        let ctx = LagContext { metrics: metrics.clone(), group: group.to_string(), rebalances: rebalances.clone() };
        let consumer = c.create_with_context(ctx).map_err(|e| Error::kafka("create consumer", e))?;
        Ok(Reader {
            consumer,
            topic: topic.name.to_string(),
            commits: topic.delivery.consumer_commits(),
            next_offset: HashMap::new(),
            errors: Throttle::new(),
            backoff: MIN_BACKOFF,
            rebalances,
            rebalanced: Arc::new(tokio::sync::Mutex::new(rebalanced)),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Replaces the assignment: reads exactly `from` from now on; records
    /// of partitions no longer assigned are never returned after this.
    pub fn reassign(&mut self, from: &HashMap<i32, Offset>) -> Result<(), Error> {
        self.consumer.assign(&tpl(&self.topic, from)?).map_err(|e| Error::kafka("assign", e))?;
        self.next_offset.clear();
        Ok(())
    }

    /// The next record. Transient consumer errors are retried here (with
    /// backoff, logged rate-limited); an error no retry cures is returned.
    /// Cancel-safe: nothing is taken from the consumer until it returns.
    pub async fn recv(&mut self) -> Result<BorrowedMessage<'_>, Error> {
        loop {
            match self.consumer.recv().await {
                Ok(m) => {
                    self.next_offset.insert(m.partition(), m.offset() + 1);
                    self.backoff = MIN_BACKOFF;
                    return Ok(m);
                }
                Err(e) if fatal(&e) => return Err(Error::Refused { what: "consume", source: e }),
                Err(e) => {
                    if let Some(n) = self.errors.tick() {
                        tracing::warn!(topic = %self.topic, error = %e, repeated = n, "consume error; retrying");
                    }
                    let wait = self.backoff;
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// For a group member (`subscribe`): the next rebalance, as soon as
    /// librdkafka announces it, else the next record. Cancel-safe.
    pub async fn poll(&mut self) -> Result<Polled<'_>, Error> {
        let rebalanced = self.rebalanced.clone();
        let mut rebalanced = rebalanced.lock().await;
        tokio::select! {
            biased;
            // The sender lives in the consumer's context: never closed first.
            Some(r) = rebalanced.recv() => Ok(Polled::Rebalance(r)),
            m = self.recv() => m.map(Polled::Record),
        }
    }

    /// Starts partitions the group assigned (`Rebalance::Assigned`) at the
    /// given offsets. Eager assignors hand over the whole new assignment
    /// at once; cooperative ones only what is added.
    pub fn start(&mut self, from: &HashMap<i32, Offset>) -> Result<(), Error> {
        let tpl = tpl(&self.topic, from)?;
        match self.consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => self.consumer.incremental_assign(&tpl),
            _ => self.consumer.assign(&tpl),
        }
        .map_err(|e| Error::kafka("assign", e))
    }

    /// Stops partitions the group revoked (`Rebalance::Revoked`), once the
    /// owner has finished with them: only now may another member start
    /// them.
    pub fn release(&mut self, partitions: &[i32]) -> Result<(), Error> {
        for p in partitions {
            self.next_offset.remove(p);
        }
        match self.consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => {
                let from: HashMap<i32, Offset> = partitions.iter().map(|&p| (p, Offset::Invalid)).collect();
                self.consumer.incremental_unassign(&tpl(&self.topic, &from)?)
            }
            _ => self.consumer.unassign(),
        }
        .map_err(|e| Error::kafka("unassign", e))
    }

    /// Stops (or restarts) fetching every assigned partition, while `poll`
    /// still answers rebalances and keeps the member alive: a stage that
    /// holds all it may pushes back on the broker this way.
    pub fn pause(&self, paused: bool) -> Result<(), Error> {
        let assigned = self.consumer.assignment().map_err(|e| Error::kafka("assignment", e))?;
        if assigned.count() == 0 {
            return Ok(());
        }
        if paused { self.consumer.pause(&assigned) } else { self.consumer.resume(&assigned) }
            .map_err(|e| Error::kafka("pause", e))
    }

    /// Whether the group dropped this member (its session expired) without
    /// the owner having seen the revocation yet.
    pub fn assignment_lost(&self) -> bool {
        self.consumer.assignment_lost()
    }

    /// The next record, owned (for a stage that keeps it past the call).
    pub async fn next_record(&mut self) -> Result<Record, Error> {
        let m = self.recv().await?;
        Ok(Record::of(&m))
    }

    /// Per partition, the offset after the last record returned.
    pub fn positions(&self) -> &HashMap<i32, i64> {
        &self.next_offset
    }

    /// The group's identity, for committing offsets inside a producer's
    /// transaction.
    pub fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }

    /// Commits `next` (the offset to read next) for `partition` to the
    /// group, without waiting. Exactly-once sinks call it only to feed lag
    /// metrics; on an at-most-once topic it does nothing.
    pub fn commit(&self, partition: i32, next: i64) -> Result<(), Error> {
        if self.commits == Commit::Never {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(next))
            .map_err(|e| Error::kafka("commit", e))?;
        self.consumer.commit(&tpl, CommitMode::Async).map_err(|e| Error::kafka("commit", e))
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Closing a member revokes its partitions and waits for the
        // unassign: the callback does it from now on.
        self.rebalances.close();
    }
}

impl Record {
    pub fn of(m: &BorrowedMessage<'_>) -> Self {
        Record {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            id: record_id(m).map(str::to_string),
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            timestamp_ms: m.timestamp().to_millis(),
        }
    }
}

/// A record's identity from its `vigil-id` header, if it has one.
pub fn record_id<'a>(m: &'a BorrowedMessage<'_>) -> Option<&'a str> {
    let headers = m.headers()?;
    headers.iter().find(|h| h.key == ID_HEADER).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
}

fn tpl(topic: &str, from: &HashMap<i32, Offset>) -> Result<TopicPartitionList, Error> {
    let mut tpl = TopicPartitionList::new();
    for (&p, &o) in from {
        tpl.add_partition_offset(topic, p, o).map_err(|e| Error::kafka("assign", e))?;
    }
    Ok(tpl)
}

/// Errors a retry never cures: the client is unusable or not allowed in.
fn fatal(e: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        e.rdkafka_error_code(),
        Some(
            Fatal
                | Authentication
                | SaslAuthenticationFailed
                | TopicAuthorizationFailed
                | GroupAuthorizationFailed
                | ClusterAuthorizationFailed
                | InvalidConfig
        )
    )
}

/// Logs the first occurrence, then at most once every 30 s with the count
/// in between: a flood of errors must not become a flood of logs.
pub struct Throttle {
    last: Option<Instant>,
    since: u64,
}

impl Throttle {
    pub fn new() -> Self {
        Throttle { last: None, since: 0 }
    }

    /// `Some(occurrences since the last log)` when this one is to be logged.
    pub fn tick(&mut self) -> Option<u64> {
        self.since += 1;
        if self.last.is_some_and(|t| t.elapsed() < Duration::from_secs(30)) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.since))
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_logs_the_first_and_then_counts() {
        let mut t = Throttle::new();
        assert_eq!(t.tick(), Some(1));
        assert_eq!((t.tick(), t.tick()), (None, None));
        t.last = Some(Instant::now() - Duration::from_secs(31));
        assert_eq!(t.tick(), Some(3), "the two held back and this one");
    }

    #[test]
    fn which_errors_end_a_reader() {
        use rdkafka::error::KafkaError::MessageConsumption;
        assert!(fatal(&MessageConsumption(RDKafkaErrorCode::SaslAuthenticationFailed)));
        assert!(!fatal(&MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure)));
        assert!(!fatal(&MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition)));
    }
}
