//! `vigil check`: the archive audit, as a table or JSON; exit 1 on any violation.

use crate::config::Settings;
use anyhow::{Result, bail};

pub async fn run(s: &Settings, camera: Option<&str>, json: bool) -> Result<()> {
    let cfg = &s.archive;
    if !cfg.dir.join("index.db").exists() {
        bail!("no archive in {} (run `vigil archive` or `vigil up` with this --data-dir)", cfg.dir.display());
    }
    let index = archive::open_index(&cfg.dir).await?;
    let report = archive::check::check(&cfg.dir, &index, camera).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{:<16} {:>9} {:>21} {:>8} {:>12} {:>10} {:>12} {:>14}",
            "camera", "frames", "seq range", "missing", "not recorded", "duplicates", "without data", "without index"
        );
        for r in &report {
            let range = match (r.first_seq, r.last_seq) {
                (Some(a), Some(b)) => format!("{a}-{b}"),
                _ => "-".into(),
            };
            println!(
                "{:<16} {:>9} {:>21} {:>8} {:>12} {:>10} {:>12} {:>13}B",
                r.camera,
                r.frames,
                range,
                r.missing,
                r.not_recorded,
                r.duplicates,
                r.without_data,
                r.without_index_bytes
            );
            for (a, b) in r.missing_ranges.iter().take(10) {
                println!("    missing seq {a}..={b}");
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
