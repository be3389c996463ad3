//! `vigil-bench detect`: the detection stage (decode, preprocess,
//! inference, postprocess with NMS, tracking) beside a Python baseline
//! (ffmpeg decode piped as rgb24, numpy, the onnxruntime wheel) over the
//! same clip, model, input size, thresholds and inference threads, in the
//! same run; frames/s, ms/frame, where the time goes, and the ratio.
//!
//! vigil's side is what the detector does per frame, in process and
//! without Kafka: `codec::Decoder` (openh264, YUV→RGB),
//! `Model::detect` (letterbox, ONNX Runtime, decoding and class-aware NMS)
//! and `Tracker::update` (SORT). The baseline is `scripts/bench_detect.py`
//! as a child process; it times itself from starting its ffmpeg to the last
//! frame tracked. Both load the model and run one warm-up inference before
//! their clock starts. Rounds alternate which side goes first; the best and
//! the median round of each are reported. Both sides' first analysed
//! frames are compared, so a fast but wrong pipeline shows.

use anyhow::{Context, Result, bail};
use codec::Decoder;
use detect::Detection;
use detect::model::{ImageRef, Model, class_name};
use detect::track::{FrameRef, Tracker};
use media::{Codec, Frame, FrameMeta, Stream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use vigil::config::Settings;

#[derive(clap::Args, Debug)]
pub struct DetectBenchArgs {
    /// Frames of the clip, every one decoded by both sides.
    #[arg(long, default_value_t = 100)]
    pub frames: usize,
    /// Inference threads, both sides (ONNX Runtime intra-op; ffmpeg's
    /// decoder threads on the Python side).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// An H.264 video to use instead of the generated clip (its first
    /// `--frames` frames, copied, not re-encoded).
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// The generated clip's size, WxH (the scene is drawn at 640x360 and scaled).
    #[arg(long, default_value = "640x360", value_name = "WxH")]
    pub resolution: String,
    /// Analyse every k-th frame (the others are still decoded).
    #[arg(long, default_value_t = 1)]
    pub every: usize,
    /// Rounds; sides alternate which goes first (even: each first as often).
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// The model [default: the detector's, from the config or scripts/fetch-model].
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// The Python with numpy and onnxruntime for the baseline [default:
    /// $VIGIL_CACHE/bench-venv/bin/python as scripts/bench-detect makes it,
    /// else python3].
    #[arg(long, env = "VIGIL_BENCH_PYTHON", value_name = "PATH")]
    pub python: Option<PathBuf>,
}

/// Analysed frames whose detections both sides keep for the comparison.
const KEEP: usize = 3;

/// One side's round.
#[derive(Clone, Debug, Default)]
struct Run {
    wall: f64,
    /// decode, preprocess, inference, postprocess (+NMS), tracking; seconds.
    stages: [f64; 5],
    /// CPU seconds, children (the baseline's ffmpeg) included.
    cpu: f64,
    analysed: usize,
    /// Confirmed-track sightings over the run (a sanity check, not compared).
    tracked: usize,
    detections: Vec<Vec<Detection>>,
}

pub fn detect(s: Settings, a: DetectBenchArgs) -> Result<()> {
    if a.frames == 0 || a.rounds == 0 || a.every == 0 || a.threads == 0 {
        bail!("bench detect needs --frames, --rounds, --every and --threads above 0");
    }
    let mut opts = s.detect.model.clone();
    opts.threads = a.threads;
    opts.batch = 1;
    if let Some(m) = &a.model {
        opts.path = m.clone();
    }
    let python = a.python.clone().unwrap_or_else(default_python);
    let script = script_path()?;
    let dir = std::env::temp_dir().join(format!("vigil-bench-detect-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = bench(&s, &a, &opts, &python, &script, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench(
    s: &Settings,
    a: &DetectBenchArgs,
    opts: &detect::model::ModelOptions,
    python: &Path,
    script: &Path,
    dir: &Path,
) -> Result<()> {
    let clip = dir.join("clip.h264");
    let size = match a.resolution.split_once('x').map(|(w, h)| (w.parse::<u32>(), h.parse::<u32>())) {
        Some((Ok(w), Ok(h))) if (16..=7680).contains(&w) && (16..=4320).contains(&h) && w % 2 == 0 && h % 2 == 0 => {
            (w, h)
        }
        _ => bail!("--resolution {}: use WxH, even, e.g. 1920x1080", a.resolution),
    };
    prepare_clip(a.input.as_deref(), a.frames, size, &clip)?;
    let frames = access_units(&std::fs::read(&clip)?);
    if frames.is_empty() || !frames[0].meta.key {
        bail!("{}: no access units, or the first is not a key frame", clip.display());
    }
    let mut model = Model::load(opts).with_context(|| format!("loading {}", opts.path.display()))?;
    let py_args = PyArgs { python, script, clip: &clip, opts, tracker: &s.detect.tracker, every: a.every };
    let versions = python_versions(python)?;
    println!(
        "clip: {} frames of {} ({}), analysing every {}; model {} at {}x{}; {} inference thread(s); \
         vigil's ONNX Runtime {} from {}; Python: {versions}",
        frames.len(),
        a.input
            .as_ref()
            .map_or(format!("a generated {} 10 fps H.264 clip, GOP 10", a.resolution), |p| p.display().to_string()),
        kb(&clip),
        a.every,
        opts.path.display(),
        opts.input_size,
        opts.input_size,
        a.threads,
        detect::model::RUNTIME_VERSION,
        opts.runtime.display(),
    );
    if !versions.contains(&format!("onnxruntime {}", detect::model::RUNTIME_VERSION)) {
        println!("WARNING: the two sides run different ONNX Runtime versions");
    }

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..a.rounds {
        let (v, p) = if round % 2 == 0 {
            let v = vigil_run(&mut model, &frames, a.every, &s.detect.tracker)?;
            (v, python_run(&py_args)?)
        } else {
            let p = python_run(&py_args)?;
            (vigil_run(&mut model, &frames, a.every, &s.detect.tracker)?, p)
        };
        eprintln!(
            "round {}: vigil {:.2} fps, python {:.2} fps ({} first)",
            round + 1,
            frames.len() as f64 / v.wall,
            frames.len() as f64 / p.wall,
            if round % 2 == 0 { "vigil" } else { "python" }
        );
        if v.analysed != p.analysed {
            bail!("vigil analysed {} frames, python {}", v.analysed, p.analysed);
        }
        ours.push(v);
        theirs.push(p);
    }
    report(&ours, &theirs, frames.len(), a.rounds);
    compare(&ours[0].detections, &theirs[0].detections);
    Ok(())
}

fn kb(p: &Path) -> String {
    format!("{} kB", std::fs::metadata(p).map(|m| m.len() / 1000).unwrap_or(0))
}

/// Writes `frames` frames of H.264 in Annex B with an AUD before every
/// access unit: from `input` copied, else generated (a photo of a dog and a
/// bicycle moving over a flat background, drawn at 640x360 and scaled to
/// `size`, 10 fps, GOP 10, no B-frames: what a camera sends).
pub(crate) fn prepare_clip(input: Option<&Path>, frames: usize, size: (u32, u32), out: &Path) -> Result<()> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-nostdin", "-y"]);
    match input {
        Some(file) => {
            cmd.arg("-i").arg(file).args([
                "-map",
                "0:v:0",
                "-c:v",
                "copy",
                "-bsf:v",
                "h264_mp4toannexb,h264_metadata=aud=insert",
            ]);
        }
        None => {
            let photo = "/usr/share/darknet/data/dog.jpg";
            if !Path::new(photo).is_file() {
                bail!("{photo} is missing: run scripts/fetch-model (it installs the darknet photos), or pass --input");
            }
            cmd.args(["-f", "lavfi", "-i", "color=c=0x556655:s=640x360:r=10", "-i", photo])
                .arg("-filter_complex")
                .arg(format!("[1:v]scale=360:270[d];[0:v][d]overlay=x='20+t*12':y=45,scale={}:{}", size.0, size.1))
                .args(["-c:v", "libx264", "-g", "10", "-bf", "0", "-pix_fmt", "yuv420p"])
                .args(["-bsf:v", "h264_metadata=aud=insert"]);
        }
    }
    cmd.args(["-frames:v", &frames.to_string(), "-f", "h264"]).arg(out);
    let st = cmd.status().context("running ffmpeg (is it installed?)")?;
    if !st.success() {
        bail!("ffmpeg could not prepare the clip ({st}){}", if input.is_some() { ": is --input H.264?" } else { "" });
    }
    Ok(())
}

/// Splits an Annex B stream whose access units each begin with an AUD
/// (NAL type 9) into frames, as ingest delivers them. Key: holds an IDR.
pub(crate) fn access_units(data: &[u8]) -> Vec<Frame> {
    // Start codes (3-byte form; a 4-byte code's extra zero stays with the
    // unit before, which the decoder ignores) and their NAL types.
    let nals: Vec<(usize, u8)> =
        data.windows(4).enumerate().filter(|(_, w)| w[..3] == [0, 0, 1]).map(|(i, w)| (i, w[3] & 0x1f)).collect();
    let starts: Vec<usize> = nals.iter().filter(|n| n.1 == 9).map(|n| n.0).collect();
    let mut out = Vec::with_capacity(starts.len());
    for (i, &at) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(data.len());
        let (lo, hi) = (nals.partition_point(|n| n.0 < at), nals.partition_point(|n| n.0 < end));
        let key = nals[lo..hi].iter().any(|n| n.1 == 5);
        let seq = i as u64;
        let meta = FrameMeta {
            camera: "bench".into(),
            stream: Stream::Main,
            codec: Codec::H264,
            seq,
            capture_us: seq as i64 * 100_000,
            pts_90k: seq as i64 * 9000,
            key,
            discontinuity: i == 0,
        };
        out.push(Frame { meta, payload: data[at..end].to_vec() });
    }
    out
}

/// vigil's stage over every frame, timed from the first decode to the last
/// tracker update.
fn vigil_run(model: &mut Model, frames: &[Frame], every: usize, tcfg: &detect::track::TrackerConfig) -> Result<Run> {
    // Warm-up, as the baseline: one gray image of the clip's size.
    let first = Decoder::new().decode(&frames[0], true)?.context("the first frame decoded to nothing")?;
    let gray = vec![detect::model::letterbox::PAD; first.rgb.len()];
    model.detect(&[ImageRef::new(first.width, first.height, &gray)])?;

    let mut run = Run::default();
    let mut tracker = Tracker::new("bench", *tcfg);
    let cpu0 = crate::archive_path::cpu_seconds();
    let start = Instant::now();
    let mut decoder = Decoder::new();
    for (i, f) in frames.iter().enumerate() {
        let want = i % every == 0;
        let t0 = Instant::now();
        let picture = decoder.decode(f, want)?;
        let t1 = Instant::now();
        run.stages[0] += (t1 - t0).as_secs_f64();
        let Some(p) = picture else {
            if want {
                bail!("frame {i} gave no picture");
            }
            continue;
        };
        let dets = model.detect(&[ImageRef::new(p.width, p.height, &p.rgb)])?.pop().unwrap_or_default();
        let t = model.last_timings();
        run.stages[1] += t.preprocess.as_secs_f64();
        run.stages[2] += t.inference.as_secs_f64();
        run.stages[3] += t.postprocess.as_secs_f64();
        let t2 = Instant::now();
        let frame = FrameRef { seq: f.meta.seq, time_us: f.meta.capture_us };
        run.tracked += tracker.update(frame, &dets).map_or(0, |u| u.tracks.len());
        run.stages[4] += t2.elapsed().as_secs_f64();
        if run.analysed < KEEP {
            run.detections.push(dets);
        }
        run.analysed += 1;
    }
    run.wall = start.elapsed().as_secs_f64();
    run.cpu = crate::archive_path::cpu_seconds() - cpu0;
    Ok(run)
}

struct PyArgs<'a> {
    python: &'a Path,
    script: &'a Path,
    clip: &'a Path,
    opts: &'a detect::model::ModelOptions,
    tracker: &'a detect::track::TrackerConfig,
    every: usize,
}

fn python_run(p: &PyArgs) -> Result<Run> {
    let out = Command::new(p.python)
        .arg(p.script)
        .arg("--clip")
        .arg(p.clip)
        .arg("--model")
        .arg(&p.opts.path)
        .args(["--threads", &p.opts.threads.to_string(), "--every", &p.every.to_string()])
        .args(["--size", &p.opts.input_size.to_string(), "--keep", &KEEP.to_string()])
        .args(["--score", &p.opts.score_threshold.to_string(), "--iou", &p.opts.iou_threshold.to_string()])
        .args(["--max-age", &p.tracker.max_age.to_string(), "--min-hits", &p.tracker.min_hits.to_string()])
        .args(["--track-iou", &p.tracker.iou_threshold.to_string()])
        .env("OMP_NUM_THREADS", p.opts.threads.to_string())
        .output()
        .with_context(|| format!("running {}", p.python.display()))?;
    if !out.status.success() {
        bail!("the Python baseline failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim().lines().last().unwrap_or(""))
        .with_context(|| format!("the Python baseline printed {text:?}"))?;
    let f = |x: &serde_json::Value| x.as_f64().unwrap_or(f64::NAN);
    let st = &v["stages_s"];
    let detections = v["detections"]
        .as_array()
        .map(|frames| {
            frames
                .iter()
                .map(|d| {
                    d.as_array()
                        .map(|ds| {
                            ds.iter()
                                .filter_map(|x| {
                                    let x: Vec<f64> = x.as_array()?.iter().map(f).collect();
                                    let bbox = detect::BBox {
                                        x1: x[2] as f32,
                                        y1: x[3] as f32,
                                        x2: x[4] as f32,
                                        y2: x[5] as f32,
                                    };
                                    Some(Detection { class: x[0] as u16, score: x[1] as f32, bbox })
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Run {
        wall: f(&v["wall_s"]),
        stages: ["decode", "preprocess", "inference", "postprocess", "tracking"].map(|k| f(&st[k])),
        cpu: f(&v["cpu_s"]) + f(&v["cpu_children_s"]),
        analysed: v["analysed"].as_u64().unwrap_or(0) as usize,
        tracked: v["tracked"].as_u64().unwrap_or(0) as usize,
        detections,
    })
}

/// "Python 3.11.7, onnxruntime 1.31.1, numpy 2.4.6", or why not.
fn python_versions(python: &Path) -> Result<String> {
    let code = "import sys, numpy, onnxruntime; \
                print(f'Python {sys.version.split()[0]}, onnxruntime {onnxruntime.__version__}, numpy {numpy.__version__}')";
    let out =
        Command::new(python).args(["-c", code]).output().with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} lacks numpy or onnxruntime (scripts/bench-detect makes a venv with them): {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn default_python() -> PathBuf {
    let venv = detect::model::cache_dir().join("bench-venv/bin/python");
    if venv.is_file() { venv } else { PathBuf::from("python3") }
}

/// scripts/bench_detect.py of the working directory, else of this source tree.
fn script_path() -> Result<PathBuf> {
    let here = PathBuf::from("scripts/bench_detect.py");
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench_detect.py");
    [here, built]
        .into_iter()
        .find(|p| p.is_file())
        .context("scripts/bench_detect.py not found: run from the repository root")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn report(ours: &[Run], theirs: &[Run], frames: usize, rounds: usize) {
    let n = frames as f64;
    let best = |runs: &[Run]| runs.iter().min_by(|a, b| a.wall.total_cmp(&b.wall)).cloned().unwrap_or_default();
    let (v, p) = (best(ours), best(theirs));
    let ms = |secs: f64, per: usize| if per == 0 { 0.0 } else { secs * 1e3 / per as f64 };
    println!("\nbest of {rounds} rounds (stages in ms per analysed frame; decode per analysed frame too):\n");
    println!(
        "| pipeline | frames/s | ms/frame | decode | preprocess | inference | postprocess+NMS | tracking | CPU ms/frame |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, r) in [("vigil (openh264, Rust, ort)", &v), ("Python (ffmpeg pipe, numpy, onnxruntime)", &p)] {
        let s = r.stages.map(|x| ms(x, r.analysed));
        println!(
            "| {name} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} |",
            n / r.wall,
            r.wall * 1e3 / n,
            s[0],
            s[1],
            s[2],
            s[3],
            s[4],
            r.cpu * 1e3 / n
        );
    }
    let walls = |runs: &[Run]| runs.iter().map(|r| r.wall).collect::<Vec<_>>();
    let (vm, pm) = (median(walls(ours)), median(walls(theirs)));
    println!(
        "\nvigil / Python throughput: {:.2} (best rounds), {:.2} (medians: {:.2} vs {:.2} fps)",
        p.wall / v.wall,
        pm / vm,
        n / vm,
        n / pm
    );
    // Inference alone, the part both hand to the same library.
    println!(
        "inference alone, vigil / Python: {:.2}; the rest of the stage: vigil {:.1} ms, Python {:.1} ms per frame",
        p.stages[2] / v.stages[2].max(1e-9),
        (v.wall - v.stages[2]) * 1e3 / n,
        (p.wall - p.stages[2]) * 1e3 / n
    );
    // Each round's two runs are minutes apart at most: their ratio is the
    // one least moved by load that comes and goes on a shared machine.
    let paired: Vec<f64> = ours.iter().zip(theirs).map(|(v, p)| p.wall / v.wall).collect();
    let list = |v: &mut dyn Iterator<Item = f64>| v.map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" ");
    println!(
        "rounds, fps: vigil {}; Python {}; ratio per round {} (median {:.2})",
        list(&mut ours.iter().map(|r| n / r.wall)),
        list(&mut theirs.iter().map(|r| n / r.wall)),
        list(&mut paired.iter().copied()),
        median(paired.clone())
    );
    println!("confirmed-track sightings: vigil {}, Python {}", v.tracked, p.tracked);
}

/// Both sides' detections on the first analysed frames: same classes, and
/// each vigil box matched to the Python box of its class it overlaps most.
fn compare(ours: &[Vec<Detection>], theirs: &[Vec<Detection>]) {
    println!("\ndetections, vigil vs Python (class score; IoU of the matched box):");
    let mut all_same = true;
    for (i, (v, p)) in ours.iter().zip(theirs).enumerate() {
        let classes = |d: &[Detection]| {
            let mut c: Vec<u16> = d.iter().map(|d| d.class).collect();
            c.sort_unstable();
            c
        };
        let same = classes(v) == classes(p);
        all_same &= same;
        let list = |d: &[Detection]| {
            d.iter().map(|d| format!("{} {:.2}", class_name(d.class), d.score)).collect::<Vec<_>>().join(", ")
        };
        let ious: Vec<String> = v
            .iter()
            .map(|d| {
                let best = p.iter().filter(|q| q.class == d.class).map(|q| q.bbox.iou(&d.bbox)).fold(0.0f32, f32::max);
                format!("{best:.3}")
            })
            .collect();
        println!(
            "frame {i}: vigil [{}] Python [{}]; same classes: {}; IoU {}",
            list(v),
            list(p),
            if same { "yes" } else { "NO" },
            ious.join(" ")
        );
    }
    println!("check: {}", if all_same { "same classes on every compared frame" } else { "the classes DIFFER" });
}
