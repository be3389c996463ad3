//! What a stage reads, as a member of its group: whole frames
//! (`bus::FrameReader`, which reassembles chunks and never lets a resume
//! point pass a frame still being collected) or plain records
//! (`bus::Reader`). Either way the group decides which partitions this
//! process reads, and a change comes as `Input::Rebalance` before any
//! input read after it.

use bus::{Delivered, FramePolled, FrameReader, KafkaConfig, Metrics, Polled, Reader, Rebalance, Record, TopicSpec};
use rdkafka::Offset;
use rdkafka::consumer::ConsumerGroupMetadata;
use std::collections::HashMap;
use std::future::Future;

/// What a source returns.
#[derive(Debug)]
pub enum Input<T> {
    Item(T),
    Rebalance(Rebalance),
}

pub trait Source: Sized {
    type Item;

    /// Joins `group` as a member reading `topic`.
    fn subscribe(kafka: &KafkaConfig, topic: &TopicSpec, group: &str, metrics: &Metrics) -> Result<Self, bus::Error>;

    /// The next input or rebalance; transient consumer errors are retried
    /// inside. Cancel-safe.
    fn next(&mut self) -> impl Future<Output = Result<Input<Self::Item>, bus::Error>>;

    /// Starts assigned partitions at the given offsets.
    fn start(&mut self, from: &HashMap<i32, Offset>) -> Result<(), bus::Error>;

    /// Stops revoked partitions: after this another member may read them.
    fn release(&mut self, partitions: &[i32]) -> Result<(), bus::Error>;

    /// Stops (or restarts) fetching the assigned partitions; rebalances
    /// still come (backpressure from a stage that holds all it may).
    fn pause(&mut self, paused: bool) -> Result<(), bus::Error>;

    /// Whether the group has dropped this member (its session expired)
    /// before the revocation reached the stage.
    fn assignment_lost(&self) -> bool;

    /// Per partition, where a restart must read from to see every input
    /// not yet returned (and nothing returned before, as far as it can).
    fn resume_offsets(&self) -> HashMap<i32, i64>;

    fn group_metadata(&self) -> Option<ConsumerGroupMetadata>;

    /// Commits `next` for `partition` to the group (lag metrics only).
    fn commit(&self, partition: i32, next: i64) -> Result<(), bus::Error>;
}

impl Source for FrameReader {
    type Item = Delivered;

    fn subscribe(kafka: &KafkaConfig, topic: &TopicSpec, group: &str, metrics: &Metrics) -> Result<Self, bus::Error> {
        FrameReader::subscribe(kafka, topic, group, metrics)
    }

    async fn next(&mut self) -> Result<Input<Delivered>, bus::Error> {
        Ok(match self.poll().await? {
            FramePolled::Frame(d) => Input::Item(d),
            FramePolled::Rebalance(r) => Input::Rebalance(r),
        })
    }

    fn start(&mut self, from: &HashMap<i32, Offset>) -> Result<(), bus::Error> {
        FrameReader::start(self, from)
    }

    fn release(&mut self, partitions: &[i32]) -> Result<(), bus::Error> {
        FrameReader::release(self, partitions)
    }

    fn pause(&mut self, paused: bool) -> Result<(), bus::Error> {
        FrameReader::pause(self, paused)
    }

    fn assignment_lost(&self) -> bool {
        FrameReader::assignment_lost(self)
    }

    fn resume_offsets(&self) -> HashMap<i32, i64> {
        FrameReader::resume_offsets(self)
    }

    fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        FrameReader::group_metadata(self)
    }

    fn commit(&self, partition: i32, next: i64) -> Result<(), bus::Error> {
        FrameReader::commit(self, partition, next)
    }
}

impl Source for Reader {
    type Item = Record;

    fn subscribe(kafka: &KafkaConfig, topic: &TopicSpec, group: &str, metrics: &Metrics) -> Result<Self, bus::Error> {
        Reader::subscribe(kafka, topic, group, metrics)
    }

    async fn next(&mut self) -> Result<Input<Record>, bus::Error> {
        Ok(match self.poll().await? {
            Polled::Record(m) => Input::Item(Record::of(&m)),
            Polled::Rebalance(r) => Input::Rebalance(r),
        })
    }

    fn start(&mut self, from: &HashMap<i32, Offset>) -> Result<(), bus::Error> {
        Reader::start(self, from)
    }

    fn release(&mut self, partitions: &[i32]) -> Result<(), bus::Error> {
        Reader::release(self, partitions)
    }

    fn pause(&mut self, paused: bool) -> Result<(), bus::Error> {
        Reader::pause(self, paused)
    }

    fn assignment_lost(&self) -> bool {
        Reader::assignment_lost(self)
    }

    fn resume_offsets(&self) -> HashMap<i32, i64> {
        self.positions().clone()
    }

    fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        Reader::group_metadata(self)
    }

    fn commit(&self, partition: i32, next: i64) -> Result<(), bus::Error> {
        Reader::commit(self, partition, next)
    }
}
