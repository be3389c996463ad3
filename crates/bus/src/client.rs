//! Connecting to Kafka: the brokers, pass-through librdkafka properties, and
//! creating the topic plan on a broker.

use crate::Error;
use crate::delivery::Delivery;
use crate::topics::TopicSpec;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Everything needed to reach the Kafka cluster.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// `host:port,...`
    pub brokers: String,
    /// librdkafka properties passed through unchanged (SASL, TLS, ...).
    pub properties: BTreeMap<String, String>,
    /// Largest record vigil writes; frames above it are chunked.
    pub max_message_bytes: usize,
    /// For topics vigil creates; -1 leaves it to the broker's default.
    pub replication_factor: i32,
    /// How stage groups split partitions among their members.
    pub group: crate::group::GroupSettings,
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            properties: BTreeMap::new(),
            max_message_bytes: 1_000_000,
            replication_factor: -1,
            group: Default::default(),
        }
    }

    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        // Metadata refreshes fast enough to notice a restarted broker quickly.
        c.set("reconnect.backoff.max.ms", "1000");
        c
    }

    /// The user's pass-through properties go last, so tuning (SASL, TLS,
    /// batch and fetch sizes) wins; the keys that make up a delivery
    /// guarantee are refused earlier, in `check_properties`.
    fn with_user_properties(&self, mut c: ClientConfig) -> ClientConfig {
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// Refuses pass-through properties that would silently change a
    /// topic's delivery guarantee.
    pub fn check_properties(&self) -> Result<(), String> {
        for k in self.properties.keys() {
            if crate::delivery::GUARANTEE_KEYS.contains(&k.as_str()) {
                return Err(format!(
                    "kafka.\"{k}\": vigil sets this from each topic's delivery guarantee (see ARCHITECTURE.md); it cannot be overridden"
                ));
            }
        }
        Ok(())
    }

    /// A producer with the settings of `delivery`; `buffer_kbytes` bounds
    /// what it holds while the broker is slow or away.
    pub fn producer(&self, delivery: Delivery, buffer_kbytes: usize) -> Result<FutureProducer, Error> {
        let mut c = self.base();
        for (k, v) in delivery.producer_settings(self.max_message_bytes, buffer_kbytes) {
            c.set(k, v);
        }
        self.with_user_properties(c).create().map_err(|e| Error::kafka("create producer", e))
    }

    /// A transactional producer (exactly-once settings plus
    /// `transactional.id`): a consume-transform-produce stage commits its
    /// outputs and its input offsets in one transaction. A new producer
    /// with the same id fences off an older one still alive (a zombie).
    pub fn transactional_producer(
        &self,
        transactional_id: &str,
        buffer_kbytes: usize,
    ) -> Result<FutureProducer, Error> {
        let mut c = self.base();
        for (k, v) in Delivery::ExactlyOnce.producer_settings(self.max_message_bytes, buffer_kbytes) {
            c.set(k, v);
        }
        c.set("transactional.id", transactional_id);
        self.with_user_properties(c).create().map_err(|e| Error::kafka("create transactional producer", e))
    }

    /// A consumer config with the settings of `delivery`, for the caller to
    /// add a context and create.
    pub fn consumer_config(&self, delivery: Delivery, group: &str) -> ClientConfig {
        let mut c = self.base();
        c.set("group.id", group);
        for (k, v) in delivery.consumer_settings(self.max_message_bytes) {
            c.set(k, v);
        }
        self.with_user_properties(c)
    }

    /// A polling consumer with the settings of `delivery`: for bounded
    /// reads and metadata. Every consumer vigil makes is made here or in
    /// `consumer_config`'s callers in `reader`.
    pub fn base_consumer(&self, delivery: Delivery, group: &str) -> Result<BaseConsumer, Error> {
        self.consumer_config(delivery, group).create().map_err(|e| Error::kafka("create consumer", e))
    }

    pub fn admin(&self) -> Result<AdminClient<DefaultClientContext>, Error> {
        self.with_user_properties(self.base()).create().map_err(|e| Error::kafka("create admin client", e))
    }

    /// Fails with a clear error when no broker answers within `timeout`.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        let consumer = self.base_consumer(Delivery::AtMostOnce, crate::topics::groups::READ)?;
        let deadline = Instant::now() + timeout;
        loop {
            match consumer.fetch_metadata(None, Duration::from_millis(1000)) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(Error::Unreachable { brokers: self.brokers.clone(), cause: e.to_string() });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Creates the topics of `plan` that are missing and returns a warning
    /// for each existing topic whose settings differ from the plan.
    pub async fn ensure_topics(&self, plan: &[TopicSpec]) -> Result<Vec<String>, Error> {
        let this = self.clone();
        let names: Vec<String> = plan.iter().map(|s| s.name.to_string()).collect();
        let existing = tokio::task::spawn_blocking(move || this.partition_counts(&names))
            .await
            .map_err(|e| Error::Other(e.to_string()))??;
        let admin = self.admin()?;
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let mut warnings = Vec::new();
        let configs: Vec<(String, Vec<(&str, String)>)> =
            plan.iter().map(|s| (s.name.to_string(), self.topic_config(s))).collect();
        let mut create = Vec::new();
        for (spec, (_, cfg)) in plan.iter().zip(&configs) {
            match existing.get(spec.name) {
                None => {
                    let mut t =
                        NewTopic::new(spec.name, spec.partitions, TopicReplication::Fixed(self.replication_factor));
                    for (k, v) in cfg {
                        t = t.set(k, v);
                    }
                    create.push(t);
                }
                Some(&n) if n != spec.partitions => warnings.push(format!(
                    "topic {} has {n} partitions, the plan says {}: vigil uses it as it is",
                    spec.name, spec.partitions
                )),
                Some(_) => {}
            }
        }
        if !create.is_empty() {
            for r in admin.create_topics(&create, &opts).await.map_err(|e| Error::kafka("create topics", e))? {
                match r {
                    Ok(name) => tracing::info!(topic = %name, "created topic"),
                    Err((name, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                        tracing::debug!(topic = %name, "topic created concurrently")
                    }
                    Err((name, code)) => return Err(Error::Other(format!("creating topic {name}: {code}"))),
                }
            }
        }
        // Retention of topics that existed already: warn, never change a
        // cluster's settings behind its operator's back.
        let existing_specs: Vec<&TopicSpec> = plan.iter().filter(|s| existing.contains_key(s.name)).collect();
        if !existing_specs.is_empty() {
            let res: Vec<ResourceSpecifier> = existing_specs.iter().map(|s| ResourceSpecifier::Topic(s.name)).collect();
            // Bounded: a broker without DescribeConfigs (librdkafka's mock
            // cluster) may never answer, and this is only a warning.
            let describe = AdminOptions::new().request_timeout(Some(Duration::from_secs(3)));
            match admin.describe_configs(&res, &describe).await {
                Ok(results) => {
                    for (spec, r) in existing_specs.iter().zip(results) {
                        let Ok(r) = r else { continue };
                        let want = spec.retention_ms.map(|v| v.to_string());
                        let have = r.get("retention.ms").and_then(|e| e.value.clone());
                        if want.is_some() && have.is_some() && want != have {
                            warnings.push(format!(
                                "topic {} keeps records for retention.ms={}, the plan says {}",
                                spec.name,
                                have.unwrap_or_default(),
                                want.unwrap_or_default()
                            ));
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "describe configs not available"),
            }
        }
        Ok(warnings)
    }

    /// Topic-level configs for a spec: explicit retention (the embedded
    /// broker only deletes from topics that name `cleanup.policy=delete`).
    fn topic_config(&self, spec: &TopicSpec) -> Vec<(&'static str, String)> {
        let mut c = vec![("max.message.bytes", (self.max_message_bytes + 64 * 1024).to_string())];
        match spec.retention_ms {
            Some(ms) => {
                c.push(("cleanup.policy", "delete".into()));
                c.push(("retention.ms", ms.to_string()));
            }
            None => c.push(("cleanup.policy", "compact".into())),
        }
        c
    }

    /// Partition count of each named topic that exists.
    pub fn partition_counts(&self, names: &[String]) -> Result<BTreeMap<String, i32>, Error> {
        let consumer = self.base_consumer(Delivery::AtMostOnce, crate::topics::groups::READ)?;
        let md = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .map_err(|e| Error::Unreachable { brokers: self.brokers.clone(), cause: e.to_string() })?;
        Ok(md
            .topics()
            .iter()
            .filter(|t| names.iter().any(|n| n == t.name()) && !t.partitions().is_empty())
            .map(|t| (t.name().to_string(), t.partitions().len() as i32))
            .collect())
    }
}
