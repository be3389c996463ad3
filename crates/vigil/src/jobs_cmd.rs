//! `vigil collect`, `vigil jobs` and `vigil results`: wiring only; the
//! collector and the readers are `crates/jobs`.

use crate::cli::CollectArgs;
use crate::config::{Settings, parse_video_sample};
use anyhow::{Context, Result, bail};
use bus::Metrics;
use std::time::Duration;

/// A collector as a role of this process, until `shutdown`.
pub async fn role(
    s: &Settings,
    cfg: jobs::CollectConfig,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let chunks = s.plan.iter().find(|t| t.name == bus::topics::VIDEO_CHUNKS).cloned().expect("chunks topic in plan");
    let chunks = bus::TopicSpec { partitions: crate::partitions_of(&s.kafka, chunks.name).await?, ..chunks };
    jobs::collect::run(cfg, s.kafka.clone(), chunks, metrics, shutdown).await?;
    Ok(())
}

pub async fn collect(s: Settings, a: CollectArgs) -> Result<()> {
    let mut cfg = s.jobs.clone();
    cfg.transactions |= a.model.apply(&mut cfg.model);
    if let Some(r) = &a.sample {
        cfg.sample = parse_video_sample(r)?;
    }
    if cfg.transactions && s.brokers.is_none() {
        bail!(
            "the embedded broker has no Kafka transactions: leave jobs.transactions off (results are deduplicated by id)"
        );
    }
    crate::prepare_bus(&s).await?;
    let metrics = Metrics::default();
    let _m = crate::serve_metrics(&metrics, s.metrics_addr("127.0.0.1:9469")).await?;
    println!(
        "vigil collect: {} → {}, {} (model {}, sample {:?}, {} video(s) at once, work dir {})",
        bus::topics::VIDEO_CHUNKS,
        bus::topics::VIDEO_RESULTS,
        bus::topics::VIDEO_JOBS,
        cfg.model.path.display(),
        cfg.sample,
        cfg.max_videos,
        cfg.work_dir.display()
    );
    role(&s, cfg, metrics, crate::shutdown_signal()).await
}

/// A job's state in words: `receiving 3/10 chunks`, `done (250 frames)`.
pub fn progress(j: &jobs::Job) -> String {
    use jobs::State::*;
    match j.state {
        Queued => "queued".into(),
        Receiving => format!("receiving {}/{} chunks", j.chunks_received, j.chunks),
        Analysing => match j.frames {
            Some(n) => format!("analysing {}/{n} frames", j.frames_analysed),
            None => format!("analysing {} frames", j.frames_analysed),
        },
        Done => format!("done ({} frames analysed)", j.frames_analysed),
        Failed => format!("failed: {}", j.error.as_deref().unwrap_or("no reason given")),
    }
}

pub async fn jobs(s: &Settings, id: Option<&str>, json: bool) -> Result<()> {
    let k = s.kafka.clone();
    let table = tokio::task::spawn_blocking(move || jobs::read::jobs(&k, Duration::from_secs(30)))
        .await?
        .context("reading vigil.video.jobs")?;
    let list: Vec<&jobs::Job> = table.values().filter(|j| id.is_none_or(|i| j.id == i)).collect();
    if let (Some(i), true) = (id, list.is_empty()) {
        bail!("no job {i} on {}", bus::topics::VIDEO_JOBS);
    }
    if json {
        let rows: Vec<serde_json::Value> = list
            .iter()
            .map(|j| {
                let mut v = serde_json::to_value(j).expect("jobs serialise");
                v["results"] = format!("vigil results {}", j.id).into();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for j in &list {
        println!("{}  {:<24} {}", j.id, j.name, progress(j));
    }
    if list.is_empty() {
        eprintln!("no jobs (vigil submit FILE sends one)");
    } else if list.iter().any(|j| j.state == jobs::State::Done) {
        eprintln!("results: vigil results ID [--json | --mot]  (topic {})", bus::topics::VIDEO_RESULTS);
    }
    Ok(())
}

pub async fn results(s: &Settings, id: &str, json: bool, mot: bool) -> Result<()> {
    let (k, video) = (s.kafka.clone(), id.to_string());
    let r = tokio::task::spawn_blocking(move || jobs::read::results(&k, &video, Duration::from_secs(60)))
        .await?
        .context("reading vigil.video.results")?;
    if r.summary.is_none() && r.frames.is_empty() {
        bail!("no results for {id} on {} (vigil jobs {id} shows its state)", bus::topics::VIDEO_RESULTS);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    if mot {
        print!("{}", r.mot());
        return Ok(());
    }
    match &r.summary {
        Some(sm) => {
            let classes: Vec<String> = sm.objects.iter().map(|(c, n)| format!("{n} {c}")).collect();
            println!(
                "{}  {}: {} frames analysed, {:.1} s of video in {:.1} s, model {}; objects: {}",
                sm.video,
                sm.name,
                sm.frames_analysed,
                sm.duration_us as f64 / 1e6,
                sm.processing_ms as f64 / 1e3,
                sm.model,
                if classes.is_empty() { "none".to_string() } else { classes.join(", ") }
            );
        }
        None => println!("{id}: not finished yet ({} frames so far)", r.frames.len()),
    }
    for o in &r.objects {
        println!(
            "  {:<10} {}  frames {}-{} ({:.2}-{:.2} s), seen in {}, best {:.2} at frame {}",
            o.class,
            o.object_id,
            o.first_frame,
            o.last_frame,
            o.first_us as f64 / 1e6,
            o.last_us as f64 / 1e6,
            o.frames_seen,
            o.best_score,
            o.best_frame
        );
    }
    Ok(())
}
