//! `vigil-bench motion`: the CPU of the motion check per camera, beside
//! Frigate's method in Python/OpenCV (scripts/bench_motion.py) on the same
//! frames in the same run, at a sub stream's size (320x180) and a main
//! stream's (1920x1080); and what decoding those streams costs, which is
//! why the check runs on the frames the detector decodes anyway.
//!
//! The frames: a photo (darknet's dog) still for half the clip, then
//! sliding, over a noisy background, as grey images (the luma plane a
//! decoder gives). Both sides get them in memory and are timed over the
//! per-frame loop only, `rounds` times.

use anyhow::{Context, Result, bail};
use detect::motion::{Grey, Motion, MotionConfig, WORK_WIDTH, working_size};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const DOG: &str = "/usr/share/darknet/data/dog.jpg";
/// Frames a second of the clip (Frigate's default detect rate).
const FPS: u32 = 5;

#[derive(clap::Args, Debug)]
pub struct MotionBenchArgs {
    /// The Python with numpy and OpenCV [default:
    /// $VIGIL_CACHE/bench-motion-venv/bin/python as scripts/bench-motion
    /// makes it, else python3].
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Frames of the clip.
    #[arg(long, default_value_t = 100)]
    pub frames: u32,
    /// Passes over the frames in one timing.
    #[arg(long, default_value_t = 10)]
    pub rounds: u32,
    /// Timings of each side, taken in turn (vigil, Python, vigil...); the
    /// median is reported (a shared machine's noise hits both sides).
    #[arg(long, default_value_t = 5)]
    pub repeats: u32,
}

pub fn motion(a: MotionBenchArgs) -> Result<()> {
    if a.frames < 20 || a.rounds == 0 || a.repeats == 0 {
        bail!("--frames must be at least 20, --rounds and --repeats positive");
    }
    if !Path::new(DOG).is_file() {
        bail!("{DOG} missing: run scripts/setup (Debian package darknet)");
    }
    let python = a.python.clone().unwrap_or_else(|| {
        let venv = detect::model::cache_dir().join("bench-motion-venv/bin/python");
        if venv.is_file() { venv } else { PathBuf::from("python3") }
    });
    let script = ["scripts/bench_motion.py", concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/bench_motion.py")]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("scripts/bench_motion.py not found: run from the repository root")?;
    let dir = std::env::temp_dir().join(format!("vigil-bench-motion-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = bench(&a, &python, &script, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench(a: &MotionBenchArgs, python: &Path, script: &Path, dir: &Path) -> Result<()> {
    println!(
        "motion check per frame, one core, {} frames x {} rounds, median of {} timings each side in turn ({} fps clip)",
        a.frames, a.rounds, a.repeats, FPS
    );
    println!(
        "{:>10} {:>12} {:>12} {:>7} {:>14} {:>15} {:>15}",
        "stream", "vigil ms", "python ms", "ratio", "vigil % core", "decode ms smpl", "decode ms other"
    );
    for (w, h, name) in [(320, 180, "320x180"), (1920, 1080, "1920x1080")] {
        let raw = dir.join(format!("{name}.grey"));
        clip(w, h, a.frames, &["-pix_fmt", "gray", "-f", "rawvideo"], &raw)?;
        let frames = std::fs::read(&raw)?;
        let (work_w, work_h) = working_size(w, h);
        let (mut vigil, mut baseline, mut moving, mut py_moving) = (Vec::new(), Vec::new(), 0, 0);
        for _ in 0..a.repeats {
            let (ms, m) = vigil_run(&frames, w, h, a)?;
            vigil.push(ms);
            moving = m;
            // numpy asks for huge pages for big arrays; vigil's side reads
            // its frames from ordinary pages, as a decoder's output is:
            // the same for both.
            let out = Command::new(python)
                .env("NUMPY_MADVISE_HUGEPAGE", "0")
                .arg(script)
                .arg(&raw)
                .args([w, h, a.frames as usize, work_w, work_h, a.rounds as usize].map(|v| v.to_string()))
                .output()
                .with_context(|| format!("running {}", python.display()))?;
            if !out.status.success() {
                bail!(
                    "the Python baseline failed (scripts/bench-motion makes a venv with OpenCV): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("the Python baseline's output")?;
            baseline.push(v["ms_per_frame"].as_f64().unwrap_or(f64::NAN));
            py_moving = v["moving_frames"].as_u64().unwrap_or(0);
        }
        let (vigil_ms, python_ms) = (median(&mut vigil), median(&mut baseline));
        let h264 = dir.join(format!("{name}.h264"));
        let x264 = ["-c:v", "libx264", "-g", "25", "-bf", "0", "-bsf:v", "h264_metadata=aud=insert", "-f", "h264"];
        clip(w, h, a.frames, &x264, &h264)?;
        let (sampled_ms, other_ms) = decode_ms(&h264)?;
        println!(
            "{name:>10} {vigil_ms:>12.3} {python_ms:>12.3} {:>7.2} {:>14.2} {sampled_ms:>15.2} {other_ms:>15.2}",
            python_ms / vigil_ms,
            vigil_ms * f64::from(FPS) / 10.0,
        );
        eprintln!(
            "{name}: frames with motion: vigil {moving}, python {py_moving} (working size {work_w}x{work_h}, WORK_WIDTH {WORK_WIDTH})"
        );
    }
    println!("ratio: Python/OpenCV's time over vigil's (above 1: vigil is faster). % core: at {FPS} frames a second.");
    println!("decode: a sampled frame (to RGB and grey) and a frame only decoded, with vigil's H.264 decoder.");
    Ok(())
}

/// The clip at `w` x `h`, `frames` long, written by ffmpeg with `out_args`.
fn clip(w: usize, h: usize, frames: u32, out_args: &[&str], path: &Path) -> Result<()> {
    let half = f64::from(frames) / f64::from(FPS) / 2.0;
    let filter = format!(
        "[0:v]noise=alls=6:allf=t[b];[1:v]scale={dw}:-2[d];[b][d]overlay=x='{x0}+{speed}*max(0\\,t-{half})':y={y}",
        dw = w * 9 / 16,
        x0 = w / 32,
        speed = w / 16,
        y = h / 8,
    );
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", &format!("color=c=0x556655:s={w}x{h}:r={FPS}"), "-i", DOG])
        .args(["-filter_complex", &filter, "-frames:v", &frames.to_string()])
        .args(out_args)
        .arg(path)
        .status()
        .context("running ffmpeg")?;
    if !st.success() {
        bail!("ffmpeg could not make the {w}x{h} clip");
    }
    Ok(())
}

/// Milliseconds per frame of vigil's motion check, and frames with motion.
fn vigil_run(frames: &[u8], w: usize, h: usize, a: &MotionBenchArgs) -> Result<(f64, usize)> {
    let n = a.frames as usize;
    if frames.len() < w * h * n {
        bail!("ffmpeg wrote {} bytes, not {n} {w}x{h} frames", frames.len());
    }
    let cfg = MotionConfig::default();
    let mut moving = 0;
    let started = Instant::now();
    for _ in 0..a.rounds {
        let mut m = Motion::default();
        moving = 0;
        for (i, f) in frames.chunks_exact(w * h).take(n).enumerate() {
            let t = i as i64 * 1_000_000 / i64::from(FPS);
            if m.frame(&cfg, &Grey::packed(w, h, f), None, t).region.is_some() {
                moving += 1;
            }
        }
    }
    Ok((started.elapsed().as_secs_f64() * 1000.0 / (a.rounds as usize * n) as f64, moving))
}

/// Milliseconds to decode a sampled frame to a picture, and a frame only
/// decoded (the detector's frames between samples).
fn decode_ms(path: &Path) -> Result<(f64, f64)> {
    let data = std::fs::read(path)?;
    let mut units = Vec::new();
    let mut split = ingest::source::annexb::Splitter::new(media::Codec::H264);
    split.push(&data, &mut units)?;
    let mut dec = codec::Decoder::new();
    let (mut want_s, mut want_n, mut other_s, mut other_n) = (0.0, 0, 0.0, 0);
    for (i, u) in units.into_iter().enumerate() {
        // One frame a second is sampled (to RGB and grey), as the detector does.
        let want = i % FPS as usize == 0;
        let frame = media::Frame {
            meta: media::FrameMeta {
                camera: "bench".into(),
                stream: media::Stream::Main,
                codec: media::Codec::H264,
                seq: i as u64,
                capture_us: 0,
                pts_90k: 0,
                key: u.key,
                discontinuity: i == 0,
            },
            payload: u.data,
        };
        let started = Instant::now();
        dec.decode(&frame, want)?;
        let s = started.elapsed().as_secs_f64();
        if want {
            (want_s, want_n) = (want_s + s, want_n + 1);
        } else {
            (other_s, other_n) = (other_s + s, other_n + 1);
        }
    }
    Ok((want_s * 1000.0 / f64::from(want_n.max(1)), other_s * 1000.0 / f64::from(other_n.max(1))))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
