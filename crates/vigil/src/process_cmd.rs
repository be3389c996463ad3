//! `vigil process`: wiring only; the processor is `crates/process`.

use crate::config::Settings;
use anyhow::{Result, bail};
use bus::Metrics;

/// A processor as a role of this process, until `shutdown`.
pub async fn role(
    s: &Settings,
    cfg: process::ProcessConfig,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let spec = s.plan.iter().find(|t| t.name == bus::topics::DETECTIONS).cloned().expect("detections topic in plan");
    let input = bus::TopicSpec { partitions: crate::partitions_of(&s.kafka, spec.name).await?, ..spec };
    process::run(cfg, s.kafka.clone(), input, metrics, shutdown).await?;
    Ok(())
}

pub async fn run(s: Settings, transactions: bool) -> Result<()> {
    let mut cfg = s.process.clone();
    cfg.transactions |= transactions;
    if cfg.transactions && s.brokers.is_none() {
        bail!(
            "the embedded broker has no Kafka transactions: leave process.transactions off (outputs are deduplicated by id)"
        );
    }
    if cfg.rules.is_empty() {
        bail!("no rules: declare [[process.zones]] or [[process.lines]] in the config file (see vigil.example.toml)");
    }
    crate::prepare_bus(&s).await?;
    let metrics = Metrics::default();
    let _m = crate::serve_metrics(&metrics, s.metrics_addr("127.0.0.1:9470")).await?;
    let rules: usize = cfg.rules.values().map(|r| r.zones.len() + r.lines.len()).sum();
    println!(
        "vigil process: {} → {}, {} ({rules} rule(s) over {} camera(s), lateness {} s)",
        bus::topics::DETECTIONS,
        bus::topics::EVENTS,
        bus::topics::COUNTS,
        cfg.rules.len(),
        cfg.lateness.as_secs()
    );
    role(&s, cfg, metrics, crate::shutdown_signal()).await
}
