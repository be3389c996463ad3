//! The stage runtime: every Kafka stage after ingest is written one way.
//!
//! A stage is consume → keep state → produce (Kafka Streams' model, sized
//! for vigil). It declares, in a `StageSpec`, its input topic and group
//! (names from the topic plan), its outputs, its state topic (a compacted
//! `vigil.<stage>.state`) and where partitions without a checkpoint start;
//! its own logic is a `Stage`: a state machine given partitions and their
//! state, fed one input at a time, told to flush buffered work, asked for
//! its state per input partition, and told to drop a partition. The
//! runtime does the rest, in one place:
//!
//! - **scale-out**: the process is a member of the stage's consumer group;
//!   N processes split the input's partitions, and when one dies or joins
//!   the group moves partitions (`bus::group`);
//! - **assignment**: for each partition the group gives it, the runtime
//!   reads its newest checkpoint, hands the stage that state and reads on
//!   from the stored offset (at-most-once inputs always start at the end);
//! - **revocation**: before a partition leaves, the runtime flushes the
//!   stage, waits until every output so far is acknowledged, checkpoints,
//!   tells the stage to drop the partition, and only then lets the group
//!   move it: the next owner resumes exactly where this one stopped. A
//!   member the group has already dropped (its session expired) writes no
//!   checkpoint for what it lost;
//! - **checkpoints**: also every `checkpoint_interval` and when it stops:
//!   flush, wait until *every* output record so far is acknowledged, then
//!   write per input partition `{offsets, state}` to the state topic
//!   (nothing before a checkpoint is unacknowledged when it lands);
//! - **restart**: an error a retry may cure (Kafka, a delivery) drops the
//!   stage and builds a fresh one, which rejoins the group and resumes
//!   from the checkpoints, with backoff; one that no retry cures (a bad
//!   model, a bad setting) ends the run;
//! - **identity**: outputs carry their id in a `vigil-id` header; since a
//!   restarted stage, or the next owner of a partition, republishes what
//!   followed the last checkpoint, stages must be deterministic and ids
//!   derived from inputs, so consumers drop the copies (`bus::dedupe`);
//! - **transactions** where the broker has them: outputs, the checkpoint
//!   and the input offsets of each interval commit in one Kafka
//!   transaction, with the group's metadata (KIP-447): a member the group
//!   has moved on from cannot commit;
//! - **sinks that own their progress** (the archive): the stage says where
//!   a partition's input continues (`Stage::stored_offset`) and commits its
//!   own store (`Stage::commit`) before every checkpoint is written.
//!
//! The same stage also runs over a finite input (`run_bounded`: a
//! re-analysis of archived footage), without group or checkpoints.
//!
//! A stage runs on a thread of its own with a single-threaded async
//! runtime: stages do long CPU work (decoding, inference) that must not
//! stall the other roles of the process. ARCHITECTURE.md, "How to write a
//! stage", walks through one.

mod bounded;
mod checkpoint;
mod output;
mod runner;
mod source;

pub use bounded::{Bounded, run_bounded};
pub use checkpoint::Checkpoint;
pub use output::Output;
pub use runner::run;
pub use source::{Input, Source};

use bus::TopicSpec;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::time::Duration;

/// What a stage reads, writes and keeps: its declaration.
#[derive(Clone, Debug)]
pub struct StageSpec {
    /// The stage in logs and metrics (`detect`).
    pub name: &'static str,
    /// The stage's identity, shared by every member of its group: the
    /// prefix of its checkpoint keys (`<instance>/<partition>`), so whoever
    /// owns a partition resumes from its checkpoint.
    pub instance: String,
    /// This process in the group, stable across its restarts (host and
    /// data directory): its transactional id, so a restarted member fences
    /// its dead predecessor's open transaction.
    pub member: String,
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

/// A stage's own logic, without Kafka: given partitions with their state,
/// fed inputs in order within a partition, it sends outputs through
/// `Output` and keeps state per input partition.
///
/// Methods that may wait on I/O are async; a stage runs alone on a
/// single-threaded runtime, so its futures need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait Stage {
    /// What it keeps per input partition, checkpointed with the offset.
    type State: Serialize + DeserializeOwned + Send + 'static;
    /// Its input: `bus::FrameReader` (whole frames) or `bus::Reader` (records).
    type Source: Source;

    /// The group gave this process `partition`: its checkpointed state
    /// (`None`: no checkpoint, start afresh), before its first input.
    async fn assign(&mut self, partition: i32, state: Option<Self::State>) -> Result<(), Error>;

    /// `partition` leaves this process (its checkpoint is stored, unless
    /// the group had already dropped the process): forget its state and
    /// any input of it still buffered.
    fn revoke(&mut self, partition: i32);

    /// One input.
    async fn on_input(&mut self, input: <Self::Source as Source>::Item, out: &mut Output) -> Result<(), Error>;

    /// No input is waiting, or a checkpoint is due: finish buffered work
    /// (a half-filled batch), so the checkpoint after it covers it.
    async fn flush(&mut self, _out: &mut Output) -> Result<(), Error> {
        Ok(())
    }

    /// The state of `partition` to store, and optionally an offset that a
    /// restart must read again from even though the source has passed it
    /// (the start of a GOP still being decoded).
    fn checkpoint(&mut self, partition: i32) -> (Self::State, Option<i64>);

    /// **Sinks that own their progress** (the archive, whose index stores
    /// the next offset of each partition with the data, in one local
    /// transaction) implement the three below; other stages leave them.
    ///
    /// Where the sink's own store says `partition` resumes (`None`: it
    /// holds nothing of it). The runtime starts the partition at the later
    /// of this and its checkpoint, which another member may have written
    /// from another store.
    async fn stored_offset(&mut self, _partition: i32) -> Result<Option<i64>, Error> {
        Ok(None)
    }

    /// Makes every input so far durable in the sink's store together with
    /// each owned partition's next offset. The runtime calls it at every
    /// checkpoint, before the checkpoint is published and before a revoked
    /// partition moves: the published checkpoint never runs ahead of
    /// what the store holds.
    async fn commit(&mut self, _next: &BTreeMap<i32, i64>) -> Result<(), Error> {
        Ok(())
    }

    /// **Stages with long work of their own** (a whole video to analyse)
    /// do it in bounded steps here rather than in `on_input`: the runtime
    /// calls `work` whenever no input is waiting, and at least every
    /// `WORK_SLICE` while inputs stream in, and keeps serving the group in
    /// between (a step of minutes would miss rebalances and the poll
    /// deadline). Returns whether more work remains: then the runtime
    /// calls again at once instead of waiting for input.
    async fn work(&mut self, _out: &mut Output) -> Result<bool, Error> {
        Ok(false)
    }

    /// Whether the stage holds all it may (videos, bytes in flight): the
    /// runtime stops fetching its input (pauses the partitions, still
    /// serving the group) until it no longer is, so the backlog waits in
    /// Kafka rather than in memory.
    fn full(&self) -> bool {
        false
    }

    /// Whether the stage wants a checkpoint now, before the interval
    /// (a sink holding many bytes in memory).
    fn checkpoint_due(&self) -> bool {
        false
    }
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

/// The longest a stream of inputs delays a stage's own work (`Stage::work`).
pub const WORK_SLICE: Duration = Duration::from_millis(100);

/// The longest checkpoint interval with transactions: well inside
/// librdkafka's default `transaction.timeout.ms` (60 s).
pub const TRANSACTION_MAX: Duration = Duration::from_secs(30);
