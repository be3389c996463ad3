//! `vigil detect` and `vigil events`: wiring only; the detector is
//! `crates/detect`.

use crate::cli::DetectArgs;
use crate::config::{Settings, parse_sampling};
use anyhow::{Context, Result, bail};
use bus::Metrics;
use std::time::{Duration, UNIX_EPOCH};

/// The detector as a role of this process, until `shutdown`.
pub async fn role(
    s: &Settings,
    cfg: detect::DetectConfig,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let frames = s.plan.iter().find(|t| t.name == bus::topics::FRAMES).cloned().expect("frames topic in plan");
    let frames = bus::TopicSpec { partitions: crate::partitions_of(&s.kafka, frames.name).await?, ..frames };
    detect::run(cfg, s.kafka.clone(), frames, metrics, shutdown).await?;
    Ok(())
}

pub async fn run(s: Settings, a: DetectArgs) -> Result<()> {
    let mut cfg = s.detect.clone();
    cfg.transactions |= a.model.apply(&mut cfg.model);
    if let Some(r) = &a.sample {
        cfg.sampling = parse_sampling(r)?;
    }
    let mut s = s;
    let reanalysis = a.from.is_some();
    let output = match (a.output_topic, reanalysis) {
        (Some(t), _) => Some(t),
        // Versioned by the model, so two models' results sit side by side.
        (None, true) => Some(format!("vigil.detections.{}", detect::model_id(&cfg.model.path)?)),
        (None, false) => None,
    };
    if let Some(t) = output {
        // A re-analysis topic: the guarantee and sizes of vigil.detections.
        let ok = t.strip_prefix("vigil.detections.").is_some_and(|n| {
            !n.is_empty() && n.len() <= 200 && n.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        });
        if !ok {
            bail!(
                "--output-topic {t}: name it vigil.detections.NAME (letters, digits, . _ -), e.g. vigil.detections.yolo11s"
            );
        }
        let spec = s.plan.iter().find(|x| x.name == bus::topics::DETECTIONS).cloned().expect("in plan");
        // Topic names are 'static in the plan; one leaked name per process.
        s.plan.push(bus::TopicSpec { name: Box::leak(t.clone().into_boxed_str()), ..spec });
        cfg.output_topic = t;
    }
    if cfg.transactions && !reanalysis && s.brokers.is_none() {
        bail!(
            "the embedded broker has no Kafka transactions: leave detect.transactions off (results are deduplicated by id)"
        );
    }
    if reanalysis {
        // One-off publishing, never resumed: no transaction to commit.
        cfg.transactions = false;
        return reanalyse(s, cfg, a.from.as_deref().unwrap_or_default(), a.to.as_deref().unwrap_or("now"), &a.cameras)
            .await;
    }
    crate::prepare_bus(&s).await?;
    let metrics = Metrics::default();
    let _m = crate::serve_metrics(&metrics, s.metrics_addr("127.0.0.1:9468")).await?;
    println!(
        "vigil detect: {} → {} (model {}, sample {:?}, {} thread(s))",
        bus::topics::FRAMES,
        cfg.output_topic,
        cfg.model.path.display(),
        cfg.sampling,
        cfg.model.threads
    );
    role(&s, cfg, metrics, crate::shutdown_signal()).await
}

async fn reanalyse(s: Settings, cfg: detect::DetectConfig, from: &str, to: &str, cameras: &[String]) -> Result<()> {
    let now = bus::now_us();
    let (from_us, to_us) = (crate::archive_cmd::parse_time(from, now)?, crate::archive_cmd::parse_time(to, now)?);
    if to_us <= from_us {
        bail!("--to must be after --from");
    }
    crate::prepare_bus(&s).await?;
    let topic = cfg.output_topic.clone();
    let metrics = Metrics::default();
    let detector = tokio::task::block_in_place(|| detect::Detector::new(cfg, &metrics))?;
    println!("vigil detect: re-analysing {} with {} → {topic}", s.archive.dir.display(), detector.model_id());
    let sum = detector.reanalyse(&s.kafka, &s.archive.dir, cameras, from_us, to_us).await?;
    println!("{} camera(s): {} frames read, {} analysed → {topic}", sum.cameras, sum.frames_read, sum.frames_analysed);
    Ok(())
}

/// Which events `vigil events` prints.
pub struct Only {
    pub camera: Option<String>,
    pub class: Option<String>,
    pub rule: Option<String>,
    /// Every event, not only objects' and rules'.
    pub all: bool,
}

/// Prints object and rule events (or every event with `all`), oldest first.
pub async fn events(s: Settings, only: Only, json: bool) -> Result<()> {
    let Only { camera, class, rule, all } = only;
    let kafka = s.kafka.clone();
    let partitions = crate::partitions_of(&kafka, bus::topics::EVENTS).await?;
    let events =
        tokio::task::spawn_blocking(move || bus::events::read_all(&kafka, partitions, Duration::from_secs(30)))
            .await?
            .context("reading vigil.events")?;
    let events: Vec<_> = events
        .into_iter()
        .filter(|e| all || e.object.is_some() || e.rule.is_some())
        .filter(|e| camera.as_ref().is_none_or(|c| e.camera.as_ref() == Some(c)))
        .filter(|e| {
            let of = e.object.as_ref().map(|o| &o.class).or(e.rule.as_ref().map(|r| &r.class));
            class.as_ref().is_none_or(|c| of == Some(c))
        })
        .filter(|e| rule.as_ref().is_none_or(|r| e.rule.as_ref().is_some_and(|h| &h.rule == r)))
        .collect();
    if json {
        let list: Vec<serde_json::Value> = events.iter().map(event_json).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for e in &events {
        if let Some(r) = &e.rule {
            println!(
                "{}  {:<15} {:<10} {:<12} {:<10} {}  {}",
                time(e.time_us),
                e.kind,
                e.camera.as_deref().unwrap_or("-"),
                r.class,
                r.rule,
                r.object_id.as_deref().unwrap_or("-"),
                e.detail
            );
            continue;
        }
        match &e.object {
            Some(o) => println!(
                "{}  {:<15} {:<10} {:<12} {}  first {}  last {}  best frame seq {} ({:.2})",
                time(e.time_us),
                e.kind,
                e.camera.as_deref().unwrap_or("-"),
                o.class,
                o.object_id,
                time(o.first_seen_us),
                time(o.last_seen_us),
                o.best.seq,
                o.best.score
            ),
            None => {
                println!("{}  {:<15} {:<10} {}", time(e.time_us), e.kind, e.camera.as_deref().unwrap_or("-"), e.detail)
            }
        }
    }
    if events.is_empty() {
        eprintln!("no events");
    }
    Ok(())
}

/// One event as a flat JSON object: `camera`, `class`, `object_id`,
/// `first_seen`, `last_seen` (RFC 3339) for objects, and the rest.
fn event_json(e: &bus::events::Event) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": e.id,
        "kind": e.kind,
        "camera": e.camera,
        "time": time(e.time_us),
        "time_us": e.time_us,
        "detail": e.detail,
    });
    if let Some(o) = &e.object {
        let more = serde_json::json!({
            "object_id": o.object_id,
            "class": o.class,
            "model": o.model,
            "first_seen": time(o.first_seen_us),
            "last_seen": time(o.last_seen_us),
            "first_seen_us": o.first_seen_us,
            "last_seen_us": o.last_seen_us,
            "best": o.best,
        });
        v.as_object_mut().expect("object").extend(more.as_object().expect("object").clone());
    }
    if let Some(r) = &e.rule {
        v["rule"] = serde_json::to_value(r).expect("rule hits serialise");
    }
    v
}

fn time(us: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}
