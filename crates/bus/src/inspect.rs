//! Live numbers about the topic plan, for `vigil topics`: end offsets and
//! each consumer group's lag.

use crate::Error;
use crate::client::KafkaConfig;
use crate::topics::TopicSpec;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Serialize)]
pub struct TopicReport {
    pub name: String,
    pub delivery: String,
    pub key: String,
    pub partitions: i32,
    pub retention_ms: Option<i64>,
    /// Whether the topic exists on the broker.
    pub exists: bool,
    /// Next offset to be written, per partition.
    pub end_offsets: Vec<i64>,
    /// Records currently held (end minus start, summed over partitions).
    pub records: i64,
    pub groups: Vec<GroupLag>,
}

#[derive(Debug, Serialize)]
pub struct GroupLag {
    pub group: String,
    /// Records behind the end, summed over partitions with a committed offset.
    pub lag: i64,
}

/// Live numbers from long-lived clients: one for metadata and watermarks,
/// one per consumer group for its committed offsets, made once and reused
/// by every report (the web app's Topics page asks every few seconds).
pub struct Inspector {
    cfg: KafkaConfig,
    client: BaseConsumer,
    groups: Mutex<HashMap<String, BaseConsumer>>,
}

impl Inspector {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, Error> {
        Ok(Inspector {
            cfg: cfg.clone(),
            client: cfg.base_consumer(crate::Delivery::AtMostOnce, crate::topics::groups::READ)?,
            groups: Mutex::new(HashMap::new()),
        })
    }

    /// The plan with end offsets and the lag of each of `groups` that
    /// committed on its topics. Blocking: call from a blocking thread.
    pub fn report(&self, plan: &[TopicSpec], groups: &[&str]) -> Result<Vec<TopicReport>, Error> {
        let timeout = Duration::from_secs(5);
        let md = self
            .client
            .fetch_metadata(None, timeout)
            .map_err(|e| Error::Unreachable { brokers: self.cfg.brokers.clone(), cause: e.to_string() })?;
        // The groups are named, never listed: listing makes librdkafka
        // describe every group, which tansu 0.6 answers with an error it
        // also logs (its describe_groups parses the stored JSON as a JSON
        // string), and the groups that matter are vigil's own anyway.
        let mut names: Vec<&str> = groups.to_vec();
        names.sort();
        names.dedup();
        let mut out = Vec::new();
        for spec in plan {
            let parts =
                md.topics().iter().find(|t| t.name() == spec.name).map(|t| t.partitions().len() as i32).unwrap_or(0);
            let mut end_offsets = Vec::new();
            let mut records = 0;
            for p in 0..parts {
                // A topic being created (or a partition moving) has no
                // watermarks for a moment: a report with a 0 beats none.
                let (lo, hi) = match self.client.fetch_watermarks(spec.name, p, timeout) {
                    Ok(marks) => marks,
                    Err(e) => {
                        tracing::debug!(topic = spec.name, partition = p, error = %e, "no watermarks yet");
                        (0, 0)
                    }
                };
                end_offsets.push(hi);
                records += (hi - lo).max(0);
            }
            let mut lags = Vec::new();
            for g in &names {
                if let Some(lag) = self.group_lag(g, spec.name, &end_offsets)? {
                    lags.push(GroupLag { group: g.to_string(), lag });
                }
            }
            out.push(TopicReport {
                name: spec.name.into(),
                delivery: spec.delivery.name().into(),
                key: spec.key.into(),
                partitions: if parts > 0 { parts } else { spec.partitions },
                retention_ms: spec.retention_ms,
                exists: parts > 0,
                end_offsets,
                records,
                groups: lags,
            });
        }
        Ok(out)
    }

    /// The lag of `group` on `topic`, or `None` if it committed nothing there.
    fn group_lag(&self, group: &str, topic: &str, ends: &[i64]) -> Result<Option<i64>, Error> {
        if ends.is_empty() {
            return Ok(None);
        }
        let mut clients = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let c = match clients.entry(group.to_string()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(self.cfg.base_consumer(crate::Delivery::AtMostOnce, group)?)
            }
        };
        let mut tpl = TopicPartitionList::new();
        for p in 0..ends.len() as i32 {
            tpl.add_partition(topic, p);
        }
        let committed = match c.committed_offsets(tpl, Duration::from_secs(5)) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(group, topic, error = %e, "no committed offsets");
                return Ok(None);
            }
        };
        let mut lag = 0;
        let mut any = false;
        for e in committed.elements() {
            if let (Offset::Offset(o), Some(end)) = (e.offset(), ends.get(e.partition() as usize)) {
                any = true;
                lag += (end - o).max(0);
            }
        }
        Ok(any.then_some(lag))
    }
}

/// One report with clients made for it (a one-off command). Blocking.
pub fn report(cfg: &KafkaConfig, plan: &[TopicSpec], groups: &[&str]) -> Result<Vec<TopicReport>, Error> {
    Inspector::new(cfg)?.report(plan, groups)
}
