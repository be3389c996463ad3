//! The Kafka backbone.
//!
//! - `topics`: the topic plan, declared once as data;
//! - `delivery`: each guarantee turned into producer/consumer settings;
//! - `client`: reaching the cluster, creating topics;
//! - `reader`: the one streaming consumer, with the error policy; `frames`
//!   (whole frames) is built on it; `group`: its consumer-group membership
//!   (assignors, rebalances handed to the stage runtime);
//! - `range`: bounded reads (a topic to its end, or a time window);
//! - `table`: a compacted topic kept in memory (camera states);
//! - `dedupe`: dropping repeated records by id, in a bounded window;
//! - `events`, `cameras`: publishers and readers of those topics;
//! - `inspect`: live numbers for `vigil topics`;
//! - `metrics`: Prometheus counters and the `/metrics` endpoint.
//!
//! Nothing here knows whether the broker is the embedded one or a cluster.

pub mod cameras;
pub mod client;
pub mod dedupe;
pub mod delivery;
pub mod events;
pub mod frames;
pub mod group;
pub mod inspect;
pub mod metrics;
pub mod produce;
pub mod range;
pub mod reader;
pub mod table;
pub mod topics;

pub use client::KafkaConfig;
pub use delivery::{Commit, Delivery};
pub use frames::{Delivered, FramePolled, FrameReader, now_us};
pub use group::{Assignor, GroupSettings, Rebalance};
pub use metrics::Metrics;
pub use reader::{Polled, Reader, Record};
pub use topics::TopicSpec;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {what}: {source}")]
    Kafka {
        what: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// An error no retry cures (authentication, a fatal client state):
    /// whoever runs the role must act.
    #[error("kafka: {what}: {source} (retrying will not help)")]
    Refused {
        what: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("no Kafka broker answers at {brokers} ({cause}); start one with `vigil broker` or pass --brokers")]
    Unreachable { brokers: String, cause: String },
    #[error("{what}: not done within {timeout:?}")]
    TimedOut { what: String, timeout: std::time::Duration },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn kafka(what: &'static str, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka { what, source }
    }

    /// Whether trying again may succeed.
    pub fn retry(&self) -> bool {
        !matches!(self, Error::Refused { .. })
    }
}
