//! `vigil-bench archive`: the archive's throughput beside a bare consume
//! loop over the same records and beside the disk's sequential write speed
//! (one fdatasync at the end, as `dd conv=fdatasync`), in the same run; and
//! the archive's CPU per 1080p30 4 Mbit/s camera.

use crate::ingest_path::{PARTITIONS, assign_from_start, create, delete, publish, start_broker, topic};
use anyhow::{Result, bail};
use bus::Metrics;
use std::io::Write;
use std::time::{Duration, Instant};
use vigil::config::Settings;

#[derive(clap::Args, Debug)]
pub struct ArchiveBenchArgs {
    /// Cameras (keys) sharing the traffic.
    #[arg(long, default_value_t = 4)]
    pub cameras: usize,
    /// Frames per run.
    #[arg(long, default_value_t = 4000)]
    pub frames: usize,
    /// Frame size: 16667 bytes is the average frame of a 4 Mbit/s 30 fps stream.
    #[arg(long, default_value_t = 16667)]
    pub size: usize,
    /// Rounds (best of); even, so each side reads first equally often.
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
}

pub async fn archive(mut s: Settings, a: ArchiveBenchArgs) -> Result<()> {
    if a.cameras == 0 || a.frames < a.cameras || a.rounds == 0 || a.size == 0 {
        bail!("bench needs cameras, frames, a size and rounds");
    }
    let dir = std::env::temp_dir().join(format!("vigil-bench-archive-{}", std::process::id()));
    let _broker = start_broker(&mut s, &dir).await?;
    let (n, size) = (a.frames, a.size);
    let mb = |secs: f64| (n * size) as f64 / secs / 1e6;
    let (mut bare, mut arch, mut disk, mut cpu) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    for round in 0..a.rounds {
        let t = topic(&format!("bench.archive.{}.{round}", std::process::id()));
        // The archive's checkpoints and member reports go to the plan's
        // topics: made each round, since deleting a topic on the embedded
        // broker (tansu 0.6) drops every topic (measured).
        for w in s.kafka.ensure_topics(&s.plan).await? {
            eprintln!("warning: {w}");
        }
        create(&s.kafka, &t).await?;
        publish(&s.kafka, &t, n, a.cameras, size, &dir.join(format!("seq{round}")), &Metrics::default())?.await;
        // Alternate which reads first: the second read finds the broker's
        // pages warm, which would otherwise always favour one side.
        let adir = dir.join(format!("archive{round}"));
        let (secs, cpu_secs) = if round % 2 == 0 {
            bare = bare.min(bare_consume(&s.kafka, &t, n).await?);
            archive_run(&s, &t, n, &adir).await?
        } else {
            let r = archive_run(&s, &t, n, &adir).await?;
            bare = bare.min(bare_consume(&s.kafka, &t, n).await?);
            r
        };
        arch = arch.min(secs);
        cpu = cpu.min(cpu_secs);
        disk = disk.min(sequential_write(&dir.join(format!("dd{round}")), n * size)?);
        delete(&s.kafka, &t).await;
        let _ = std::fs::remove_dir_all(dir.join(format!("archive{round}")));
    }
    let cpu_per_frame = cpu / n as f64;
    println!(
        "broker: {}; {n} frames of {size} bytes over {} cameras; best of {} rounds\n",
        s.kafka.brokers, a.cameras, a.rounds
    );
    println!("| path | frames/s | MB/s | ratio |");
    println!("|---|---:|---:|---:|");
    println!("| bare consume loop | {:.0} | {:.1} | 1.00 |", n as f64 / bare, mb(bare));
    println!(
        "| archive (consume, write, fdatasync, index) | {:.0} | {:.1} | {:.2} of bare |",
        n as f64 / arch,
        mb(arch),
        bare / arch
    );
    println!("| disk, sequential + one fdatasync | | {:.1} | archive at {:.2} of it |", mb(disk), mb(arch) / mb(disk));
    println!(
        "\nCPU: {:.0} µs per frame, so one 1080p30 4 Mbit/s camera costs {:.2} % of a core \
         (process CPU during the archive run{})",
        cpu_per_frame * 1e6,
        cpu_per_frame * 30.0 * 100.0,
        if s.brokers.is_none() { ", including the embedded broker serving the fetches" } else { "" }
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn bare_consume(k: &bus::KafkaConfig, t: &bus::TopicSpec, n: usize) -> Result<f64> {
    // Timed from before the consumer exists, as the archive's run is timed
    // from before its own consumer exists.
    let start = Instant::now();
    let c = assign_from_start(k, t)?;
    for got in 0..n {
        match tokio::time::timeout(Duration::from_secs(30), c.recv()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "bench consume"),
            Err(_) => bail!("bare consume stalled at {got}/{n}"),
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Seconds until `n` frames are durable in a fresh archive, and the process
/// CPU seconds spent meanwhile.
async fn archive_run(s: &Settings, t: &bus::TopicSpec, n: usize, dir: &std::path::Path) -> Result<(f64, f64)> {
    let mut cfg = archive::ArchiveConfig::new(dir);
    cfg.retention = Default::default();
    // Throughput, not latency: the run ends when the last frame is durable,
    // which the default 1 s flush interval would pad by up to a second.
    cfg.flush_interval = Duration::from_millis(100);
    let metrics = Metrics::default();
    let done = metrics.counter("vigil_archive_frames_total", "", &[("topic", t.name)]);
    let owned = metrics.gauge("vigil_stage_assigned_partitions", "", &[("stage", "archive"), ("topic", t.name)]);
    // The clock starts once the group has dealt the partitions: joining it
    // (a few seconds on the embedded broker) is not the archive's speed,
    // and the bare loop assigns its partitions directly.
    let started = std::sync::Arc::new(std::sync::Mutex::new(None));
    let start = started.clone();
    let all_in = async move {
        while done.get() < n as u64 {
            {
                let mut s = start.lock().unwrap();
                if s.is_none() && owned.get() > 0.0 {
                    *s = Some((Instant::now(), cpu_seconds()));
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let frames = bus::TopicSpec { partitions: PARTITIONS, ..t.clone() };
    archive::run(cfg, s.kafka.clone(), frames, metrics, all_in).await?;
    let (start, cpu0) =
        started.lock().unwrap().take().ok_or_else(|| anyhow::anyhow!("the archive owned no partition"))?;
    Ok((start.elapsed().as_secs_f64(), cpu_seconds() - cpu0))
}

fn sequential_write(path: &std::path::Path, bytes: usize) -> Result<f64> {
    std::fs::create_dir_all(path.parent().unwrap_or(path))?;
    let block = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let mut f = std::fs::File::create(path)?;
    let mut left = bytes;
    while left > 0 {
        let k = left.min(block.len());
        f.write_all(&block[..k])?;
        left -= k;
    }
    f.sync_data()?;
    let secs = start.elapsed().as_secs_f64();
    std::fs::remove_file(path)?;
    Ok(secs)
}

/// User + system CPU of this process, from /proc/self/stat.
pub(crate) fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = after.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // Fields after the command: state is skipped by the parse; utime and
    // stime are the 12th and 13th numbers, in clock ticks (100 per second).
    (f.get(10).copied().unwrap_or(0.0) + f.get(11).copied().unwrap_or(0.0)) / 100.0
}
