//! What a stage reads: whole frames (`bus::FrameReader`, which reassembles
//! chunks and never lets a resume point pass a frame still being
//! collected) or plain records (`bus::Reader`).

use bus::{Delivered, FrameReader, KafkaConfig, Metrics, Reader, Record, TopicSpec};
use rdkafka::Offset;
use rdkafka::consumer::ConsumerGroupMetadata;
use std::collections::HashMap;
use std::future::Future;

pub trait Source: Sized {
    type Item;

    /// Reads `topic`'s partitions from the given offsets, as a member-less
    /// consumer of `group`.
    fn open(
        kafka: &KafkaConfig,
        topic: &TopicSpec,
        group: &str,
        from: &HashMap<i32, Offset>,
        metrics: &Metrics,
    ) -> Result<Self, bus::Error>;

    /// The next input; transient consumer errors are retried inside.
    fn next(&mut self) -> impl Future<Output = Result<Self::Item, bus::Error>>;

    /// Per partition, where a restart must read from to see every input
    /// not yet returned (and nothing returned before, as far as it can).
    fn resume_offsets(&self) -> HashMap<i32, i64>;

    fn group_metadata(&self) -> Option<ConsumerGroupMetadata>;

    /// Commits `next` for `partition` to the group (lag metrics only).
    fn commit(&self, partition: i32, next: i64) -> Result<(), bus::Error>;
}

impl Source for FrameReader {
    type Item = Delivered;

    fn open(
        kafka: &KafkaConfig,
        topic: &TopicSpec,
        group: &str,
        from: &HashMap<i32, Offset>,
        metrics: &Metrics,
    ) -> Result<Self, bus::Error> {
        FrameReader::assign_from(kafka, topic, group, from, metrics)
    }

    async fn next(&mut self) -> Result<Delivered, bus::Error> {
        FrameReader::next(self).await
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

    fn open(
        kafka: &KafkaConfig,
        topic: &TopicSpec,
        group: &str,
        from: &HashMap<i32, Offset>,
        metrics: &Metrics,
    ) -> Result<Self, bus::Error> {
        Reader::assign(kafka, topic, group, from, metrics)
    }

    async fn next(&mut self) -> Result<Record, bus::Error> {
        self.next_record().await
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
