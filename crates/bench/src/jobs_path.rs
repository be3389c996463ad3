//! `vigil-bench jobs`: whole-video jobs through Kafka beside the same
//! analysis run directly on the file, in the same run.
//!
//! vigil's side is the real path: the file is submitted in chunks
//! (`jobs::submit`, in process) to `vigil.video.chunks`, a `vigil collect`
//! child process (the binary beside this one) gathers, decodes, analyses
//! and publishes; the clock runs from the first chunk sent until the job
//! is `done` on `vigil.video.jobs`. The baseline is the same work without
//! Kafka: the same decoder (`jobs::decode`, ffmpeg), model and tracker over
//! the file, in process, from starting ffmpeg to the last frame tracked.
//! Both use one inference thread and have their model loaded and warm
//! before the clock starts (the collector analyses a one-second video
//! first). Reported: video-seconds analysed per wall-second each, and the
//! ratio (goal ≥ 0.9).
//!
//! Memory: the collector's budget (`[jobs] memory_bytes`) is set below
//! the size of a second, larger video; the collector's peak resident set
//! (`VmHWM`) while it gathers and analyses that video is reported beside
//! its resident set before, the budget and the video's size.

use anyhow::{Context, Result, bail};
use detect::model::{ImageRef, Model};
use detect::track::{FrameRef, Tracker};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vigil::config::Settings;

#[derive(clap::Args, Debug)]
pub struct JobsBenchArgs {
    /// Seconds of the generated clip (10 fps, 640x360, H.264 in MP4).
    #[arg(long, default_value_t = 30)]
    pub seconds: u32,
    /// A video to use instead of the generated clip (any format ffmpeg reads).
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// The collector's memory budget for the memory check, bytes; the
    /// second video is made about four times larger.
    #[arg(long, default_value_t = 4 << 20)]
    pub budget: u64,
}

pub async fn jobs(mut s: Settings, a: JobsBenchArgs) -> Result<()> {
    if a.seconds == 0 || a.budget < 64 * 1024 {
        bail!("--seconds must be positive and --budget at least 65536");
    }
    let vigil = std::env::current_exe()?.with_file_name("vigil");
    if !vigil.is_file() {
        bail!("{} is missing: cargo build -j2 -p vigil", vigil.display());
    }
    let dir = std::env::temp_dir().join(format!("vigil-bench-jobs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _broker = crate::ingest_path::start_broker(&mut s, &dir).await?;
    for w in s.kafka.ensure_topics(&s.plan).await? {
        tracing::warn!("{w}");
    }
    let clip = match &a.input {
        Some(f) => f.clone(),
        None => make_clip(&dir.join("clip.mp4"), a.seconds, &["-c:v", "libx264", "-pix_fmt", "yuv420p"])?,
    };
    let warmup = make_clip(&dir.join("warmup.mp4"), 1, &["-c:v", "libx264", "-pix_fmt", "yuv420p"])?;
    // Noise at a high bitrate: a large file of few frames.
    let big = dir.join("big.mkv");
    let rate = format!("{}", a.budget * 4 * 8 / 10);
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "nullsrc=s=640x360:r=10,geq=random(1)*255:128:128",
            "-t",
            "10",
            "-c:v",
            "mpeg4",
            "-b:v",
            &rate,
            "-minrate",
            &rate,
            "-maxrate",
            &rate,
            "-bufsize",
            &rate,
        ],
        &big,
    )?;
    let info = jobs::decode::probe(&clip).map_err(anyhow::Error::msg)?;
    let video_s = info.duration_us.context("the clip's duration")? as f64 / 1e6;
    let big_bytes = std::fs::metadata(&big)?.len();
    println!(
        "vigil-bench jobs: {} ({:.1} s, {} frames {}x{} {}), every frame analysed, model {}, 1 thread",
        clip.display(),
        video_s,
        info.frames.unwrap_or(0),
        info.width,
        info.height,
        info.codec,
        s.jobs.model.path.display()
    );

    // The baseline first: the collector is not running yet.
    let direct = direct(&s, &clip).await?;
    println!(
        "  direct (decode, model, tracker; no Kafka): {:.1} s, {:.2} video-s/s ({} frames)",
        direct.0,
        video_s / direct.0,
        direct.1
    );

    let config = dir.join("vigil.toml");
    std::fs::write(&config, format!("[jobs]\nmemory_bytes = {}\nsample = \"all\"\n[detect]\nthreads = 1\n", a.budget))?;
    let mut collector = Killed(
        Command::new(&vigil)
            .args(["collect", "--metrics-listen", "off", "--brokers", &s.kafka.brokers])
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.join("collector"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("collector.log"))?)
            .spawn()
            .context("starting vigil collect")?,
    );
    let pid = collector.0.id();
    let spec = s.plan.iter().find(|t| t.name == bus::topics::VIDEO_JOBS).context("jobs topic")?;
    let table = bus::table::Table::start(&s.kafka, spec, 1, &bus::Metrics::default())?;
    // Connected by the warm-up, as a user's `vigil submit` is by its start.
    let producer = s.kafka.producer(bus::Delivery::ExactlyOnce, 64 * 1024)?;
    run_job(&s, &producer, &table, &warmup).await.context("the warm-up video")?;
    let rss_before = status_kb(pid, "VmRSS")?;

    let (through, id) = run_job(&s, &producer, &table, &clip).await?;
    let ratio = (video_s / through) / (video_s / direct.0);
    println!(
        "  vigil (submit → Kafka → collect → results): {through:.1} s, {:.2} video-s/s — {ratio:.2} of direct (goal ≥ 0.9)",
        video_s / through
    );
    let k = s.kafka.clone();
    let r = tokio::task::spawn_blocking(move || jobs::read::results(&k, &id, Duration::from_secs(30))).await??;
    if let Some(sum) = r.summary {
        println!(
            "    of which the collector's analysis (whole video to its summary): {:.1} s; {} frame records",
            sum.processing_ms as f64 / 1e3,
            r.frames.len()
        );
    }

    run_job(&s, &producer, &table, &big).await.context("the large video")?;
    let peak = status_kb(pid, "VmHWM")?;
    let growth = peak.saturating_sub(rss_before) * 1024;
    println!(
        "  memory: a {:.1} MB video with a {:.1} MB budget: collector peak {:.1} MB resident, {:.1} MB above its {:.1} MB before ({:.2}x the budget)",
        big_bytes as f64 / 1e6,
        a.budget as f64 / 1e6,
        peak as f64 / 1e3,
        growth as f64 / 1e6,
        rss_before as f64 / 1e3,
        growth as f64 / a.budget as f64
    );
    drop(collector.0.kill());
    let _ = collector.0.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A child process, killed when dropped (an early error included).
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The moving-dog scene (as the detection benchmark draws it), `secs` long.
fn make_clip(out: &Path, secs: u32, codec: &[&str]) -> Result<PathBuf> {
    let photo = "/usr/share/darknet/data/dog.jpg";
    if !Path::new(photo).is_file() {
        bail!("{photo} is missing: run scripts/setup, or pass --input");
    }
    let secs = secs.to_string();
    let mut args = vec!["-f", "lavfi", "-i", "color=c=0x556655:s=640x360:r=10", "-i", photo];
    args.extend(["-filter_complex", "[1:v]scale=360:270[d];[0:v][d]overlay=x='20+t*6':y=45", "-t", &secs]);
    args.extend(codec);
    ffmpeg(&args, out)?;
    Ok(out.to_path_buf())
}

pub(crate) fn ffmpeg(args: &[&str], out: &Path) -> Result<()> {
    let st = Command::new("ffmpeg").args(["-v", "error", "-nostdin", "-y"]).args(args).arg(out).status()?;
    if !st.success() {
        bail!("ffmpeg could not make {}", out.display());
    }
    Ok(())
}

/// Decode, model and tracker over `clip` in process: (seconds, frames).
async fn direct(s: &Settings, clip: &Path) -> Result<(f64, u64)> {
    let mut opts = s.jobs.model.clone();
    opts.threads = 1;
    let mut model = Model::load(&opts)?;
    let info = jobs::decode::probe(clip).map_err(anyhow::Error::msg)?;
    // Warm: the first inference allocates.
    let gray = vec![128u8; 3 * info.width as usize * info.height as usize];
    model.detect(&[ImageRef::new(info.width, info.height, &gray)])?;
    let started = Instant::now();
    let mut frames = jobs::decode::Frames::start(clip, &info).map_err(anyhow::Error::msg)?;
    let mut tracker = Tracker::new("bench", s.jobs.tracker);
    let mut n = 0u64;
    while let Some(f) = frames.next().await {
        let f = f.map_err(anyhow::Error::msg)?;
        let dets = model.detect(&[ImageRef::new(info.width, info.height, &f.rgb)])?;
        tracker.update(FrameRef { seq: f.index, time_us: f.time_us }, &dets[0]);
        n += 1;
    }
    Ok((started.elapsed().as_secs_f64(), n))
}

/// Submits `file` (a new job each time) and waits until `table` (one
/// consumer following `vigil.video.jobs`) shows it done: the seconds from
/// the first chunk sent, and the video's id.
pub(crate) async fn run_job(
    s: &Settings,
    producer: &rdkafka::producer::FutureProducer,
    table: &bus::table::Table<jobs::Job>,
    file: &Path,
) -> Result<(f64, String)> {
    let started = Instant::now();
    let known = Default::default();
    let sent = jobs::submit::submit(&s.kafka, producer, file, None, true, 512 * 1024, &known, |_, _| {}).await?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        if let Some(j) = table.rows().into_iter().find(|j| j.id == sent.video_id) {
            match j.state {
                jobs::State::Done => return Ok((started.elapsed().as_secs_f64(), sent.video_id)),
                jobs::State::Failed => bail!("the job failed: {}", j.error.as_deref().unwrap_or("?")),
                _ => {}
            }
        }
        if Instant::now() > deadline {
            bail!("the job did not end in 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `/proc/PID/status` line's value, kB.
fn status_kb(pid: u32, key: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .with_context(|| format!("{key} of process {pid}"))
}
