//! The archive's read-side commands: `vigil check` (the audit, as a table
//! or JSON; exit 1 on any violation) and `vigil export`.

use crate::config::Settings;
use anyhow::{Result, bail};

async fn open(s: &Settings) -> Result<archive::index::Index> {
    open_dir(&s.archive.dir).await
}

async fn open_dir(dir: &std::path::Path) -> Result<archive::index::Index> {
    if !dir.join("index.db").exists() {
        bail!("no archive in {} (run `vigil archive` or `vigil up` with this --data-dir)", dir.display());
    }
    Ok(archive::open_index(dir).await?)
}

/// The frames ingest reported lost before the broker (`frames-lost`
/// events of main streams), when a broker is given or this data dir's
/// embedded broker is known; without one those frames count as not
/// recorded, and a note says so.
async fn lost_before_broker(s: &Settings) -> archive::check::Lost {
    let mut lost = archive::check::Lost::new();
    let Some(brokers) = s.known_brokers() else {
        eprintln!("note: no broker known (--brokers): frames lost before the broker count as not recorded");
        return lost;
    };
    let mut k = s.kafka.clone();
    k.brokers = brokers.clone();
    let partitions = s.plan.iter().find(|t| t.name == bus::topics::EVENTS).map_or(1, |t| t.partitions);
    let read = move || bus::events::read_kind(&k, partitions, Some("frames-lost"), std::time::Duration::from_secs(15));
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(events)) => {
            for e in events {
                if let (Some(cam), Some(l)) = (e.camera, e.lost.filter(|l| l.stream == "main")) {
                    lost.entry(cam).or_default().push((l.first_seq, l.last_seq));
                }
            }
        }
        Ok(Err(e)) => eprintln!(
            "note: cannot read vigil.events from {brokers} ({e}): frames lost before the broker count as not recorded"
        ),
        Err(e) => eprintln!("note: reading vigil.events failed ({e})"),
    }
    lost
}

/// Audits the archive of each data dir in `dirs` (at least one), as one
/// archive: archivers in one group with a dir each.
pub async fn run(dirs: &[Settings], camera: Option<&str>, json: bool) -> Result<()> {
    let s = &dirs[0];
    let mut indexes = Vec::new();
    for d in dirs {
        indexes.push(open(d).await?);
    }
    let archives: Vec<(&std::path::Path, &archive::index::Index)> =
        dirs.iter().zip(&indexes).map(|(d, i)| (d.archive.dir.as_path(), i)).collect();
    let lost = lost_before_broker(s).await;
    let report = archive::check::check_all(&archives, camera, &lost).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{:<16} {:>9} {:>21} {:>8} {:>12} {:>12} {:>10} {:>12} {:>14}",
            "camera",
            "frames",
            "seq range",
            "missing",
            "not recorded",
            "lost<broker",
            "duplicates",
            "without data",
            "without index"
        );
        for r in &report {
            let range = match (r.first_seq, r.last_seq) {
                (Some(a), Some(b)) => format!("{a}-{b}"),
                _ => "-".into(),
            };
            println!(
                "{:<16} {:>9} {:>21} {:>8} {:>12} {:>12} {:>10} {:>12} {:>13}B",
                r.camera,
                r.frames,
                range,
                r.missing,
                r.not_recorded,
                r.lost_before_broker,
                r.duplicates,
                r.without_data,
                r.without_index_bytes
            );
            for (a, b) in r.missing_ranges.iter().take(10) {
                println!("    missing seq {a}..={b}");
            }
            if r.overlap > 0 {
                println!("    {} frames found in more than one dir, identical (counted once)", r.overlap);
            }
            if r.removed_by_retention > 0 {
                println!("    {} frames deleted by retention while the check ran", r.removed_by_retention);
            }
        }
    }
    let bad: Vec<&str> = report.iter().filter(|r| !r.ok()).map(|r| r.camera.as_str()).collect();
    if !bad.is_empty() {
        bail!("archive check failed for {}", bad.join(", "));
    }
    if camera.is_some() && report.is_empty() {
        bail!("camera {} has no archived frames", camera.unwrap_or_default());
    }
    Ok(())
}

pub async fn export(s: &Settings, camera: &str, from: &str, to: &str, out: &std::path::Path) -> Result<()> {
    let now = bus::now_us();
    let (from_us, to_us) = (parse_time(from, now)?, parse_time(to, now)?);
    if from_us >= to_us {
        bail!("--from ({from}) must be before --to ({to})");
    }
    let index = open(s).await?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress = move |done: u64, total: u64| {
        if tty && (done.is_multiple_of(50) || done == total) {
            eprint!("\rexporting {done}/{total} frames ({:.0}%)", done as f64 * 100.0 / total as f64);
            if done == total {
                eprintln!();
            }
        }
    };
    let sum = archive::export::export(&s.archive.dir, &index, camera, from_us, to_us, out, progress).await?;
    println!(
        "wrote {} ({}, {} frames, {:.1} s of video, {} bytes)",
        out.display(),
        sum.format,
        sum.frames,
        (sum.last_us - sum.first_us) as f64 / 1e6,
        sum.bytes
    );
    Ok(())
}

/// RFC 3339, `now`, or a duration before now (`-5m`, `-1h30m`, `-90s`).
pub fn parse_time(s: &str, now_us: i64) -> Result<i64> {
    if s == "now" {
        return Ok(now_us);
    }
    if let Some(ago) = s.strip_prefix('-') {
        let d = humantime::parse_duration(ago).map_err(|e| anyhow::anyhow!("time `{s}`: {e}"))?;
        return Ok(now_us - d.as_micros() as i64);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| anyhow::anyhow!("time `{s}`: {e} (use RFC 3339 or -5m)"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times() {
        let now = 1_700_000_000_000_000;
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(parse_time("-5m", now).unwrap(), now - 300_000_000);
        assert_eq!(parse_time("-1h30m", now).unwrap(), now - 5_400_000_000);
        assert_eq!(parse_time("2023-11-14T22:13:20Z", now).unwrap(), 1_700_000_000_000_000);
        for bad in ["yesterday", "-5 parsecs", "2023-13-01T00:00:00Z"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }
}
