//! `vigil-bench gate`: what skipping the model on still cameras saves, and
//! what it misses, on a clip with long still periods.
//!
//! The clip: a photo (a dog, a bicycle, a truck) still for a third of it,
//! sliding for 6 s, then still again (at 5 fps sampling, most frames are
//! still). It plays twice as a `file:` camera through `vigil ingest` to a
//! `vigil detect` sampling `--sample`: once with the motion gate, once
//! without (each run its own camera). Reported: the detector process's CPU
//! seconds in each run (ratio), frames the model skipped, and objects the
//! gate missed: an object of the ungated run's record (class, box) with no
//! object of the same class overlapping it (IoU ≥ 0.5) in the gated run's
//! record of the same frame.

use crate::jobs_path::Killed;
use anyhow::{Context, Result, bail};
use schema::Detections;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use vigil::config::Settings;

const DOG: &str = "/usr/share/darknet/data/dog.jpg";

#[derive(clap::Args, Debug)]
pub struct GateBenchArgs {
    /// Seconds of the clip (a third still, 6 s of sliding, still again).
    #[arg(long, default_value_t = 60)]
    pub secs: u32,
    /// The detector's sampling.
    #[arg(long, default_value = "5/s")]
    pub sample: String,
}

pub async fn gate(mut s: Settings, a: GateBenchArgs) -> Result<()> {
    if !(30..=600).contains(&a.secs) {
        bail!("--secs {}: use 30..=600", a.secs);
    }
    vigil::config::parse_sampling(&a.sample)?;
    let vigil = std::env::current_exe()?.with_file_name("vigil");
    if !vigil.is_file() {
        bail!("{} is missing: cargo build -j2 -p vigil", vigil.display());
    }
    let dir = std::env::temp_dir().join(format!("vigil-bench-gate-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = bench(&mut s, &a, &vigil, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn bench(s: &mut Settings, a: &GateBenchArgs, vigil: &Path, dir: &Path) -> Result<()> {
    let _broker = crate::ingest_path::start_broker(s, dir).await?;
    for w in s.kafka.ensure_topics(&s.plan).await? {
        tracing::warn!("{w}");
    }
    let clip = dir.join("still.mp4");
    let start = a.secs / 3;
    let x = format!("20+240*clip((t-{start})/6\\,0\\,1)");
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", "color=c=0x556655:s=640x360:r=10", "-i", DOG])
        .args(["-filter_complex", &format!("[1:v]scale=360:270[d];[0:v][d]overlay=x='{x}':y=45")])
        .args(["-t", &a.secs.to_string(), "-c:v", "libx264", "-g", "10", "-bf", "0", "-pix_fmt", "yuv420p"])
        .arg(&clip)
        .status()
        .context("running ffmpeg")?;
    if !st.success() {
        bail!("ffmpeg could not make the clip");
    }
    println!(
        "vigil-bench gate: {} s clip (still, 6 s sliding from {start} s, still), sampling {}, model {}",
        a.secs,
        a.sample,
        s.detect.model.path.display()
    );
    let mut runs = BTreeMap::new();
    for gate in [true, false] {
        let camera = if gate { "gated" } else { "ungated" };
        let config = dir.join(format!("{camera}.toml"));
        let text = format!(
            "[[cameras]]\nid = \"{camera}\"\nsource = \"file:{}\"\n[detect]\nsample = \"{}\"\n[motion]\ngate = {gate}\n",
            clip.display(),
            a.sample
        );
        std::fs::write(&config, text)?;
        let role = |name: &str| -> Result<Killed> {
            let child = Command::new(vigil)
                .args([name, "--metrics-listen", "off", "--brokers", &s.kafka.brokers])
                .arg("--config")
                .arg(&config)
                .arg("--data-dir")
                .arg(dir.join(format!("{camera}-{name}")))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(format!("{camera}-{name}.log")))?)
                .spawn()
                .with_context(|| format!("starting vigil {name}"))?;
            Ok(Killed(child))
        };
        let detect = role("detect")?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let ingest = role("ingest")?;
        tokio::time::sleep(Duration::from_secs(u64::from(a.secs) + 3)).await;
        drop(ingest);
        let records = settled(s, camera, Duration::from_secs(120)).await?;
        let cpu = cpu_seconds(detect.0.id())?;
        drop(detect);
        runs.insert(gate, (cpu, records));
    }
    let (on_cpu, on) = &runs[&true];
    let (off_cpu, off) = &runs[&false];
    let skipped = on.values().filter(|d| d.motion.as_ref().is_some_and(|m| m.held_from.is_some())).count();
    let (mut compared, mut objects, mut missed) = (0, 0, 0);
    for (seq, ungated) in off {
        let Some(gated) = on.get(seq) else { continue };
        compared += 1;
        objects += ungated.objects.len();
        missed += ungated.objects.iter().filter(|o| !gated.objects.iter().any(|g| same(g, o))).count();
    }
    println!("{:>10} {:>10} {:>10} {:>14}", "run", "records", "skipped", "detector CPU s");
    println!("{:>10} {:>10} {:>10} {:>14.1}", "gated", on.len(), skipped, on_cpu);
    println!("{:>10} {:>10} {:>10} {:>14.1}", "ungated", off.len(), 0, off_cpu);
    println!(
        "ratio: the ungated detector's CPU over the gated one's: {:.2}; objects missed by the gate: {missed} of {objects} in {compared} frames",
        off_cpu / on_cpu
    );
    Ok(())
}

/// The same object: same class, boxes overlapping (IoU ≥ 0.5).
fn same(a: &schema::Object, b: &schema::Object) -> bool {
    let bx = |o: &schema::Object| detect::BBox { x1: o.bbox[0], y1: o.bbox[1], x2: o.bbox[2], y2: o.bbox[3] };
    a.class == b.class && bx(a).iou(&bx(b)) >= 0.5
}

/// The camera's records by seq, once the detector has stopped adding any.
async fn settled(s: &Settings, camera: &str, within: Duration) -> Result<BTreeMap<u64, Detections>> {
    let records = crate::street::settled_detections(s, within).await?;
    Ok(records.into_iter().filter(|d| d.camera == camera).map(|d| (d.seq, d)).collect())
}

/// User and system CPU seconds of process `pid` so far (/proc/PID/stat).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces, in parentheses).
    let rest = stat.rsplit_once(')').context("/proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).context("/proc stat field");
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after ")".
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}
