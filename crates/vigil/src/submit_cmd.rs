//! `vigil submit FILE...`: each file to vigil.video.chunks (crates/jobs),
//! with progress on stderr (a line that rewrites itself on a terminal,
//! plain lines every 10 % otherwise), then the video ids on stdout. With
//! `--wait`, follows the jobs until they end.

use crate::config::Settings;
use anyhow::{Context, Result, bail};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[allow(clippy::too_many_arguments)]
pub async fn run(
    s: &Settings,
    files: &[PathBuf],
    id: Option<&str>,
    force: bool,
    chunk_bytes: u64,
    wait: bool,
    json: bool,
) -> Result<()> {
    if id.is_some() && files.len() > 1 {
        bail!("--id names one video: give one file, or leave --id out (each file's id is its content hash)");
    }
    for f in files {
        if !f.is_file() {
            bail!("{}: not a file", f.display());
        }
    }
    let k = s.kafka.clone();
    tokio::task::spawn_blocking(move || k.wait_ready(Duration::from_secs(10))).await??;
    for w in s.kafka.ensure_topics(&s.plan).await? {
        tracing::warn!("{w}");
    }
    let delivery = s.plan.iter().find(|t| t.name == bus::topics::VIDEO_CHUNKS).context("video chunks topic")?.delivery;
    let producer = s.kafka.producer(delivery, 64 * 1024)?;
    let known = read_jobs(s).await?;
    let tty = std::io::stderr().is_terminal();
    let mut out = Vec::new();
    for f in files {
        let name = f.display().to_string();
        let mut shown = 0;
        let progress = |sent: u64, total: u64| {
            let pct = sent * 100 / total.max(1);
            if tty {
                eprint!("\r{name}: {sent}/{total} chunks ({pct}%)");
                if sent == total {
                    eprintln!();
                }
            } else if pct / 10 > shown || sent == total {
                shown = pct / 10;
                eprintln!("{name}: {sent}/{total} chunks ({pct}%)");
            }
        };
        let done = jobs::submit::submit(&s.kafka, &producer, f, id, force, chunk_bytes, &known, progress)
            .await
            .with_context(|| format!("submitting {name}"))?;
        if let Some(state) = done.known {
            eprintln!(
                "{name}: submitted before as {} ({state:?}): not sent again (--force makes a new job)",
                done.video_id
            );
        }
        if !json {
            println!("{}", done.video_id);
        }
        out.push(done);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    if wait {
        let ids: Vec<String> = out.iter().map(|d| d.video_id.clone()).collect();
        follow(s, &ids, tty).await?;
    }
    Ok(())
}

async fn read_jobs(s: &Settings) -> Result<std::collections::BTreeMap<String, jobs::Job>> {
    let k = s.kafka.clone();
    tokio::task::spawn_blocking(move || jobs::read::jobs(&k, Duration::from_secs(30)))
        .await?
        .context("reading vigil.video.jobs")
}

/// Follows `ids` on vigil.video.jobs until every one has ended; an error
/// naming each failed job and its reason if any failed.
async fn follow(s: &Settings, ids: &[String], tty: bool) -> Result<()> {
    let started = Instant::now();
    let mut hinted = false;
    let mut last = String::new();
    loop {
        let table = read_jobs(s).await?;
        let line = ids
            .iter()
            .map(|id| match table.get(id) {
                Some(j) => format!("{}: {}", j.name, crate::jobs_cmd::progress(j)),
                None => format!("{}: waiting for a collector", short(id)),
            })
            .collect::<Vec<_>>()
            .join("; ");
        if line != last {
            if tty {
                eprint!("\r\x1b[2K{line}");
            } else {
                eprintln!("{line}");
            }
            last = line;
        }
        let ended: Vec<&jobs::Job> = ids.iter().filter_map(|id| table.get(id)).filter(|j| j.state.ended()).collect();
        if ended.len() == ids.len() {
            if tty {
                eprintln!();
            }
            let failed: Vec<String> = ended
                .iter()
                .filter(|j| j.state == jobs::State::Failed)
                .map(|j| format!("{} ({}): {}", j.name, j.id, j.error.as_deref().unwrap_or("failed")))
                .collect();
            if !failed.is_empty() {
                bail!("{} job(s) failed: {}", failed.len(), failed.join("; "));
            }
            return Ok(());
        }
        if !hinted && started.elapsed() > Duration::from_secs(30) && ids.iter().any(|id| !table.contains_key(id)) {
            eprintln!(
                "\nno collector has taken a job for 30 s: is `vigil collect` (or `vigil up`) running on these brokers?"
            );
            hinted = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
