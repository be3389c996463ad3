//! The Kafka backbone.
//!
//! - `topics`: the topic plan, declared once as data;
//! - `delivery`: each guarantee turned into producer/consumer settings;
//! - `client`: reaching the cluster, creating topics;
//! - `frames`: reading whole frames back from a topic;
//! - `inspect`: live numbers for `vigil topics`;
//! - `metrics`: Prometheus counters and the `/metrics` endpoint.
//!
//! Nothing here knows whether the broker is the embedded one or a cluster.

pub mod cameras;
pub mod client;
pub mod delivery;
pub mod events;
pub mod frames;
pub mod inspect;
pub mod metrics;
pub mod snapshot;
pub mod topics;

pub use client::KafkaConfig;
pub use delivery::{Commit, Delivery};
pub use frames::{Delivered, FrameReader, now_us};
pub use metrics::Metrics;
pub use topics::TopicSpec;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {what}: {source}")]
    Kafka {
        what: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("no Kafka broker answers at {brokers} ({cause}); start one with `vigil broker` or pass --brokers")]
    Unreachable { brokers: String, cause: String },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn kafka(what: &'static str, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka { what, source }
    }
}
