//! `vigil process`: wiring only; the processor is `crates/process`.

use crate::config::Settings;
use anyhow::{Context, Result, bail};
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
    crate::prepare_bus(&s).await?;
    let metrics = Metrics::default();
    let _m = crate::serve_metrics(&metrics, s.metrics_addr("127.0.0.1:9470")).await?;
    let rules: usize = cfg.rules.values().map(|r| r.zones.len() + r.lines.len()).sum();
    println!(
        "vigil process: {} → {}, {} (motion events of every camera; {rules} rule(s) in the config over {} camera(s), and those drawn in the web app; lateness {} s)",
        bus::topics::DETECTIONS,
        bus::topics::EVENTS,
        bus::topics::COUNTS,
        cfg.rules.len(),
        cfg.lateness.as_secs()
    );
    role(&s, cfg, metrics, crate::shutdown_signal()).await
}

/// Prints the counts of the minutes starting in [from, to).
pub async fn counts(s: &Settings, camera: Option<String>, from: &str, to: &str, json: bool) -> Result<()> {
    let now = bus::now_us();
    let (from_us, to_us) = (crate::archive_cmd::parse_time(from, now)?, crate::archive_cmd::parse_time(to, now)?);
    if to_us <= from_us {
        bail!("--to must be after --from");
    }
    let kafka = s.kafka.clone();
    let partitions = crate::partitions_of(&kafka, bus::topics::COUNTS).await?;
    let list = tokio::task::spawn_blocking(move || {
        process::read::counts(&kafka, partitions, camera.as_deref(), from_us, to_us, std::time::Duration::from_secs(30))
    })
    .await?
    .context("reading vigil.counts")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        eprintln!("no counts in that time (is `vigil process` running, with rules?)");
        return Ok(());
    }
    println!(
        "{:<20} {:<10} {:<12} {:<10} {:>7} {:>6} {:>6} {:>6} {:>5} {:>6}",
        "minute (UTC)", "camera", "rule", "class", "entries", "exits", "l→r", "r→l", "peak", "mean"
    );
    for c in &list {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(c.start_us.max(0) as u64);
        println!(
            "{:<20} {:<10} {:<12} {:<10} {:>7} {:>6} {:>6} {:>6} {:>5} {:>6.2}",
            humantime::format_rfc3339_seconds(t).to_string(),
            c.camera,
            c.rule,
            c.class,
            c.entries,
            c.exits,
            c.crossings_left_to_right,
            c.crossings_right_to_left,
            c.occupancy_peak,
            c.occupancy_mean
        );
    }
    Ok(())
}
