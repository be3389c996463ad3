//! `vigil submit FILE...`: each file to vigil.video.chunks (crates/jobs),
//! with progress on stderr (a line that rewrites itself on a terminal,
//! plain lines every 10 % otherwise), then the video ids on stdout.

use crate::config::Settings;
use anyhow::{Context, Result, bail};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

pub async fn run(
    s: &Settings,
    files: &[PathBuf],
    id: Option<&str>,
    force: bool,
    chunk_bytes: u64,
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
        let done = jobs::submit::submit(&s.kafka, &producer, f, id, force, chunk_bytes, progress)
            .await
            .with_context(|| format!("submitting {name}"))?;
        if !json {
            println!("{}", done.video_id);
        }
        out.push(done);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
