//! Delivery guarantees, and the one place that turns a guarantee into
//! librdkafka producer and consumer settings.
//!
//! How each guarantee is kept end to end (see ARCHITECTURE.md):
//! - at-most-once: the producer never retries and the consumer never commits,
//!   starting at the end: a viewer gets the newest data or nothing;
//! - at-least-once: the producer retries, the consumer commits after it has
//!   processed a record, so a crash replays (consumers dedupe by event id);
//! - exactly-once: an idempotent producer (no duplicates from retries) and a
//!   sink that stores its own offsets atomically with its data; group
//!   commits are only for lag metrics;
//! - last value: like exactly-once on the producer side, on a compacted topic.

use serde::Serialize;

/// librdkafka properties that make up a guarantee: only this module sets
/// them, and the config file may not override them.
pub const GUARANTEE_KEYS: &[&str] = &[
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "retries",
    "message.send.max.retries",
    "max.in.flight",
    "max.in.flight.requests.per.connection",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "transactional.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "isolation.level",
    "group.id",
    "bootstrap.servers",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
    LastValue,
}

impl Delivery {
    pub fn name(self) -> &'static str {
        match self {
            Delivery::AtMostOnce => "at-most-once",
            Delivery::AtLeastOnce => "at-least-once",
            Delivery::ExactlyOnce => "exactly-once",
            Delivery::LastValue => "last-value",
        }
    }

    /// librdkafka producer properties for this guarantee. `buffer_kbytes`
    /// bounds what the producer holds while the broker is unreachable.
    pub fn producer_settings(self, max_message_bytes: usize, buffer_kbytes: usize) -> Vec<(&'static str, String)> {
        let mut s: Vec<(&'static str, String)> = vec![
            // Video is already compressed: compressing again only costs CPU.
            ("compression.type", "none".into()),
            ("message.max.bytes", (max_message_bytes + 64 * 1024).to_string()),
            ("queue.buffering.max.kbytes", buffer_kbytes.to_string()),
        ];
        match self {
            Delivery::AtMostOnce => s.extend([
                ("acks", "1".into()),
                ("enable.idempotence", "false".into()),
                ("message.send.max.retries", "0".into()),
                ("linger.ms", "0".into()),
                // A live frame older than this is worthless: drop it.
                ("message.timeout.ms", "2000".into()),
            ]),
            Delivery::AtLeastOnce => s.extend([
                ("acks", "all".into()),
                ("enable.idempotence", "false".into()),
                ("linger.ms", "5".into()),
                ("message.timeout.ms", "0".into()),
            ]),
            Delivery::ExactlyOnce | Delivery::LastValue => s.extend([
                ("acks", "all".into()),
                ("enable.idempotence", "true".into()),
                ("max.in.flight.requests.per.connection", "5".into()),
                ("linger.ms", "5".into()),
                // Never give up on an accepted frame; the bounded queue
                // pushes back on the camera instead.
                ("message.timeout.ms", "0".into()),
            ]),
        }
        s
    }

    /// librdkafka consumer properties for this guarantee.
    pub fn consumer_settings(self, max_message_bytes: usize) -> Vec<(&'static str, String)> {
        let fetch = (max_message_bytes + 64 * 1024).to_string();
        let mut s: Vec<(&'static str, String)> = vec![
            ("enable.auto.commit", "false".into()),
            ("enable.auto.offset.store", "false".into()),
            ("fetch.message.max.bytes", fetch.clone()),
            ("max.partition.fetch.bytes", fetch),
            // The embedded broker (tansu 0.6) sleeps for up to the fetch
            // wait after *every* fetch, even one that found data: with
            // librdkafka's default of 500 ms a consumer gets one fetch per
            // 250 ms. A short wait keeps consumers fast and live video live.
            ("fetch.wait.max.ms", "20".into()),
        ];
        match self {
            Delivery::AtMostOnce => s.extend([
                // Start at the end: the newest data, never a backlog.
                ("auto.offset.reset", "latest".into()),
            ]),
            Delivery::AtLeastOnce => s.extend([("auto.offset.reset", "earliest".into())]),
            Delivery::ExactlyOnce | Delivery::LastValue => {
                s.extend([("auto.offset.reset", "earliest".into()), ("isolation.level", "read_committed".into())])
            }
        }
        s
    }

    /// Whether a consumer of this guarantee commits offsets to its group
    /// (after processing), as opposed to never (at-most-once) or only for
    /// lag metrics (exactly-once sinks own their offsets).
    pub fn consumer_commits(self) -> Commit {
        match self {
            Delivery::AtMostOnce => Commit::Never,
            Delivery::AtLeastOnce => Commit::AfterProcessing,
            Delivery::ExactlyOnce | Delivery::LastValue => Commit::ForLagOnly,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    Never,
    AfterProcessing,
    ForLagOnly,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(s: &[(&str, String)], k: &str) -> Option<String> {
        s.iter().find(|(key, _)| *key == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn producer_settings_per_guarantee() {
        // (guarantee, acks, idempotence, retries capped at 0?, linger)
        let cases = [
            (Delivery::AtMostOnce, "1", "false", Some("0"), "0"),
            (Delivery::AtLeastOnce, "all", "false", None, "5"),
            (Delivery::ExactlyOnce, "all", "true", None, "5"),
            (Delivery::LastValue, "all", "true", None, "5"),
        ];
        for (d, acks, idem, retries, linger) in cases {
            let s = d.producer_settings(1_000_000, 65536);
            assert_eq!(get(&s, "acks").as_deref(), Some(acks), "{d:?}");
            assert_eq!(get(&s, "enable.idempotence").as_deref(), Some(idem), "{d:?}");
            assert_eq!(get(&s, "message.send.max.retries").as_deref(), retries, "{d:?}");
            assert_eq!(get(&s, "linger.ms").as_deref(), Some(linger), "{d:?}");
            assert_eq!(get(&s, "message.max.bytes").as_deref(), Some("1065536"));
        }
        let eo = Delivery::ExactlyOnce.producer_settings(1_000_000, 65536);
        assert_eq!(get(&eo, "max.in.flight.requests.per.connection").as_deref(), Some("5"));
        assert_eq!(get(&eo, "message.timeout.ms").as_deref(), Some("0"));
    }

    #[test]
    fn consumer_settings_per_guarantee() {
        let cases = [
            (Delivery::AtMostOnce, "latest", None, Commit::Never),
            (Delivery::AtLeastOnce, "earliest", None, Commit::AfterProcessing),
            (Delivery::ExactlyOnce, "earliest", Some("read_committed"), Commit::ForLagOnly),
            (Delivery::LastValue, "earliest", Some("read_committed"), Commit::ForLagOnly),
        ];
        for (d, reset, iso, commit) in cases {
            let s = d.consumer_settings(1_000_000);
            assert_eq!(get(&s, "auto.offset.reset").as_deref(), Some(reset), "{d:?}");
            assert_eq!(get(&s, "isolation.level").as_deref(), iso, "{d:?}");
            // No guarantee lets librdkafka commit behind the consumer's back.
            assert_eq!(get(&s, "enable.auto.commit").as_deref(), Some("false"));
            assert_eq!(d.consumer_commits(), commit);
        }
    }
}
