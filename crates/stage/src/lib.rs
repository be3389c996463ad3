//! The stage runtime: every Kafka stage after ingest is written one way.
//!
//! A stage is consume → keep state → produce (Kafka Streams' model, sized
//! for vigil). It declares, in a `StageSpec`, its input topic and group
//! (names from the topic plan), its outputs, its state topic (a compacted
//! `vigil.<stage>.state`) and where partitions without a checkpoint start;
//! its own logic is a `Stage`: a state machine fed one input at a time,
//! told to flush buffered work, and asked for its state per input
//! partition. The runtime does the rest, in one place:
//!
//! - **consuming** (`Source`: whole frames or plain records, the error
//!   policy of `bus::Reader`);
//! - **checkpoints**: every `checkpoint_interval`, and when it stops, it
//!   flushes the stage, waits until *every* output record so far is
//!   acknowledged, then writes per input partition `{offsets, state}` to
//!   the state topic (Arroyo's barrier: nothing before the checkpoint is
//!   unacknowledged when it lands), and commits the offsets to the group
//!   for lag metrics;
//! - **restore**: on start it reads the newest checkpoint of each
//!   partition, hands the stage its state and reads on from the stored
//!   offset (at-most-once inputs always start at the end: nothing is
//!   replayed for a viewer);
//! - **restart**: an error a retry may cure (Kafka, a delivery) drops the
//!   stage and builds a fresh one from the last checkpoint, with backoff;
//!   one that no retry cures (a bad model, a bad setting) ends the run;
//! - **identity**: outputs carry their id in a `vigil-id` header; since a
//!   restarted stage republishes what followed its checkpoint, stages
//!   must be deterministic and ids derived from inputs, so consumers drop
//!   the copies (`bus::dedupe`);
//! - **transactions** where the broker has them: outputs, the checkpoint
//!   and the input offsets of each interval commit in one Kafka
//!   transaction, and a restarted stage fences its dead predecessor.
//!
//! A stage runs on a thread of its own with a single-threaded async
//! runtime: stages do long CPU work (decoding, inference) that must not
//! stall the other roles of the process. ARCHITECTURE.md, "How to write a
//! stage", walks through one.

mod checkpoint;
mod output;
mod runner;
mod source;

pub use checkpoint::Checkpoint;
pub use output::Output;
pub use runner::run;
pub use source::Source;

use bus::TopicSpec;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// What a stage reads, writes and keeps: its declaration.
#[derive(Clone, Debug)]
pub struct StageSpec {
    /// The stage in logs and metrics (`detect`).
    pub name: &'static str,
    /// This instance's identity: the prefix of its checkpoint keys and its
    /// transactional id. Two processes of one instance resume from the
    /// same checkpoints (and, with transactions, fence each other).
    pub instance: String,
    /// The consumer group, from `bus::topics::groups`.
    pub group: &'static str,
    /// The input topic, with the partition count it has on the broker.
    pub input: TopicSpec,
    /// Topics the stage writes (`Output::send` refuses any other).
    pub outputs: Vec<String>,
    /// The compacted topic of its checkpoints.
    pub state: TopicSpec,
    /// Where a partition without a checkpoint starts.
    pub start: Start,
    pub checkpoint_interval: Duration,
    pub transactions: bool,
}

/// Where a partition without a checkpoint starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Everything the topic still holds.
    Beginning,
    /// Its end as it is when the stage starts, taken as a concrete offset
    /// (and stored with the first checkpoint): records that arrive while
    /// the stage is down are processed after it comes back.
    End,
}

/// A stage's own logic, without Kafka: fed inputs in order within a
/// partition, it sends outputs through `Output` and keeps state per input
/// partition.
pub trait Stage {
    /// What it keeps per input partition, checkpointed with the offset.
    type State: Serialize + DeserializeOwned + Send + 'static;
    /// Its input: `bus::FrameReader` (whole frames) or `bus::Reader` (records).
    type Source: Source;

    /// Before the first input: the checkpointed state of each partition
    /// (`None`: no checkpoint, start afresh).
    fn restore(&mut self, partition: i32, state: Option<Self::State>);

    /// One input.
    fn on_input(&mut self, input: <Self::Source as Source>::Item, out: &mut Output) -> Result<(), Error>;

    /// No input is waiting, or a checkpoint is due: finish buffered work
    /// (a half-filled batch), so the checkpoint after it covers it.
    fn flush(&mut self, _out: &mut Output) -> Result<(), Error> {
        Ok(())
    }

    /// The state of `partition` to store, and optionally an offset that a
    /// restart must read again from even though the source has passed it
    /// (the start of a GOP still being decoded).
    fn checkpoint(&mut self, partition: i32) -> (Self::State, Option<i64>);
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error("{topic}: a record was not delivered: {cause}")]
    Delivery { topic: String, cause: String },
    #[error("transaction: {0}")]
    Transaction(String),
    /// A setting no retry makes work.
    #[error("{0}")]
    Config(String),
    /// The stage's own error, and whether a restart from the last
    /// checkpoint may cure it.
    #[error("{source}")]
    Stage { source: Box<dyn std::error::Error + Send + Sync>, retry: bool },
}

impl Error {
    /// An error of the stage that a restart cannot cure (a bad model file).
    pub fn fatal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Stage { source: e.into(), retry: false }
    }

    /// An error of the stage that a restart from the last checkpoint may cure.
    pub fn transient(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Stage { source: e.into(), retry: true }
    }

    /// Whether the runtime restarts the stage after it.
    pub fn retry(&self) -> bool {
        match self {
            Error::Bus(e) => e.retry(),
            Error::Delivery { .. } | Error::Transaction(_) => true,
            Error::Config(_) => false,
            Error::Stage { retry, .. } => *retry,
        }
    }
}

/// The longest checkpoint interval with transactions: well inside
/// librdkafka's default `transaction.timeout.ms` (60 s).
pub const TRANSACTION_MAX: Duration = Duration::from_secs(30);
