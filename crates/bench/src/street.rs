//! `vigil-bench street`: the detector and tracker on real footage of
//! people walking, through vigil's own paths, measured the way a user
//! sees them: of the person boxes vigil published, how many carry an
//! object id, how many ids there were, and how often a person's track
//! broke and a new id took over.
//!
//! Two runs over the same clip:
//! - live: the clip, re-encoded as a camera sends it (H.264, a key frame
//!   every `--gop-s` seconds), played at its own pace by a `file:` camera
//!   (`vigil ingest`) to a `vigil detect` at its default sampling (key
//!   frames); the boxes are read back from `vigil.detections`;
//! - job: the clip submitted as a whole-video job to a `vigil collect`
//!   analysing every frame; the boxes are read back from
//!   `vigil.video.results`.
//!
//! There is no ground truth for the clip, so id switches are counted the
//! way one counts them by eye: a *break* is a new person id starting
//! within `BREAK_S` of another person id's last sighting, near where that
//! one was heading (`breaks`), that id never seen again. scripts/bench-street
//! fetches the clip (OpenCV's `vtest.avi`, from Debian's opencv-doc package).

use crate::jobs_path::Killed;
use anyhow::{Context, Result, bail};
use schema::detections::Object;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vigil::config::Settings;

#[derive(clap::Args, Debug)]
pub struct StreetBenchArgs {
    /// The clip: real footage of people walking (any format ffmpeg reads).
    #[arg(long, value_name = "FILE")]
    pub clip: PathBuf,
    /// Seconds between key frames of the camera in the live run.
    #[arg(long, default_value_t = 2.5)]
    pub gop_s: f64,
    /// Also write the job's person detections here, in MOTChallenge format,
    /// to try tracker settings on real detections with `vigil track`.
    #[arg(long, value_name = "FILE")]
    pub mot_det: Option<PathBuf>,
}

/// A new id within this long of another's last sighting, near it, is a break.
const BREAK_S: f64 = 3.0;

pub async fn street(mut s: Settings, a: StreetBenchArgs) -> Result<()> {
    if !(a.gop_s > 0.0 && a.gop_s <= 60.0) {
        bail!("--gop-s {}: use a positive number of seconds, at most 60", a.gop_s);
    }
    let vigil = std::env::current_exe()?.with_file_name("vigil");
    if !vigil.is_file() {
        bail!("{} is missing: cargo build -j2 -p vigil", vigil.display());
    }
    let info = jobs::decode::probe(&a.clip).map_err(anyhow::Error::msg)?;
    let video_s = info.duration_us.context("the clip's duration")? as f64 / 1e6;
    let fps = info.frames.context("the clip's frame count")? as f64 / video_s;
    let dir = std::env::temp_dir().join(format!("vigil-bench-street-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _broker = crate::ingest_path::start_broker(&mut s, &dir).await?;
    for w in s.kafka.ensure_topics(&s.plan).await? {
        tracing::warn!("{w}");
    }
    println!(
        "vigil-bench street: {} ({video_s:.1} s, {}x{} {} at {fps:.1} fps), model {}",
        a.clip.display(),
        info.width,
        info.height,
        info.codec,
        s.detect.model.path.display()
    );

    // Live: the clip as a camera with a key frame every gop_s.
    let camera = dir.join("camera.mp4");
    let gop = ((fps * a.gop_s).round() as u32).max(1).to_string();
    let clip = a.clip.to_str().context("the clip's path is not UTF-8")?;
    let mut args = vec!["-i", clip, "-an", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"];
    args.extend(["-bf", "0", "-g", &gop, "-keyint_min", &gop, "-sc_threshold", "0"]);
    crate::jobs_path::ffmpeg(&args, &camera)?;
    let config = dir.join("vigil.toml");
    std::fs::write(&config, format!("[[cameras]]\nid = \"street\"\nsource = \"file:{}\"\n", camera.display()))?;
    let role = |name: &str| -> Result<Child> {
        Command::new(&vigil)
            .args([name, "--metrics-listen", "off", "--brokers", &s.kafka.brokers])
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.join(name))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log")))?)
            .spawn()
            .with_context(|| format!("starting vigil {name}"))
    };
    let live = {
        let _detect = Killed(role("detect")?);
        let ingest = Killed(role("ingest")?);
        // The camera plays the clip once (then it would reconnect and play
        // it again; frames past the first pass are left out below).
        tokio::time::sleep(Duration::from_secs_f64(video_s + 3.0)).await;
        drop(ingest);
        let mut records = settled_detections(&s, Duration::from_secs(120)).await?;
        records.sort_by_key(|d| d.capture_us);
        let t0 = records.first().map_or(0, |d| d.capture_us);
        let mut frames: Vec<(f64, Vec<Object>)> =
            records.into_iter().map(|d| ((d.capture_us - t0) as f64 / 1e6, d.objects)).collect();
        frames.retain(|f| f.0 < video_s);
        frames
    };
    let sampled = format!("live: key frames, one per {} s", a.gop_s);
    let mut rows = vec![Stats::of(&sampled, &live)];

    // A job: the original file, every frame.
    let _collect = Killed(role("collect")?);
    let producer = s.kafka.producer(bus::Delivery::ExactlyOnce, 64 * 1024)?;
    let spec = s.plan.iter().find(|t| t.name == bus::topics::VIDEO_JOBS).context("jobs topic")?;
    let table = bus::table::Table::start(&s.kafka, spec, 1, &bus::Metrics::default())?;
    let (_, id) = crate::jobs_path::run_job(&s, &producer, &table, &a.clip).await?;
    let k = s.kafka.clone();
    let r = tokio::task::spawn_blocking(move || jobs::read::results(&k, &id, Duration::from_secs(30))).await??;
    let job: Vec<(f64, Vec<Object>)> = r.frames.into_iter().map(|f| (f.time_us as f64 / 1e6, f.objects)).collect();
    if let Some(p) = &a.mot_det {
        std::fs::write(p, mot_det(&job)).with_context(|| format!("writing {}", p.display()))?;
    }
    rows.push(Stats::of("job: every frame", &job));

    println!(
        "  {:<34} {:>7} {:>12} {:>14} {:>10} {:>7} {:>13}",
        "run", "frames", "person boxes", "with an id", "person ids", "breaks", "mean id life"
    );
    for r in &rows {
        println!(
            "  {:<34} {:>7} {:>12} {:>8} ({:>3.0} %) {:>10} {:>7} {:>11.1} s",
            r.run,
            r.frames,
            r.boxes,
            r.with_id,
            100.0 * r.with_id as f64 / r.boxes.max(1) as f64,
            r.ids,
            r.breaks,
            r.mean_life_s
        );
    }
    drop((table, producer, _collect, _broker));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The records of `vigil.detections`, each once, after the detector has
/// stopped adding any (two reads `within` apart find as many).
pub(crate) async fn settled_detections(s: &Settings, within: Duration) -> Result<Vec<schema::Detections>> {
    let deadline = Instant::now() + within;
    let mut last = usize::MAX;
    loop {
        let k = s.kafka.clone();
        let spec = s.plan.iter().find(|t| t.name == bus::topics::DETECTIONS).context("detections topic")?;
        let range = bus::range::Range::all(spec.name, spec.delivery, spec.partitions, Duration::from_secs(30));
        let got = tokio::task::spawn_blocking(move || {
            let mut seen = std::collections::BTreeMap::new();
            bus::range::read(&k, &range, |m| {
                use rdkafka::Message;
                if let Some(d) = m.payload().and_then(|p| serde_json::from_slice::<schema::Detections>(p).ok()) {
                    seen.insert(d.id.clone(), d); // a copy has the same id
                }
            })
            .map(|()| seen)
        })
        .await??;
        if !got.is_empty() && got.len() == last {
            return Ok(got.into_values().collect());
        }
        if Instant::now() > deadline {
            bail!("the detector published {} records and had not caught up after {within:?}", got.len());
        }
        last = got.len();
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Person boxes of `frames` as MOTChallenge detections (frames from 1).
fn mot_det(frames: &[(f64, Vec<Object>)]) -> String {
    let mut text = String::new();
    for (i, (_, objects)) in frames.iter().enumerate() {
        for o in objects.iter().filter(|o| o.class == "person") {
            let [x1, y1, x2, y2] = o.bbox;
            text += &format!("{},-1,{x1},{y1},{},{},{},-1,-1,-1\n", i + 1, x2 - x1, y2 - y1, o.score);
        }
    }
    text
}

/// One run's person boxes and ids.
#[derive(Debug, PartialEq)]
struct Stats {
    run: String,
    frames: usize,
    boxes: usize,
    with_id: usize,
    ids: usize,
    breaks: usize,
    mean_life_s: f64,
}

/// Where and when an id was first and last seen.
struct Life {
    first: (f64, [f32; 4]),
    last: (f64, [f32; 4]),
}

impl Stats {
    fn of(run: &str, frames: &[(f64, Vec<Object>)]) -> Stats {
        let mut lives: std::collections::BTreeMap<&str, Life> = Default::default();
        let (mut boxes, mut with_id) = (0, 0);
        for (t, objects) in frames {
            for o in objects.iter().filter(|o| o.class == "person") {
                boxes += 1;
                let Some(id) = o.object_id.as_deref() else { continue };
                with_id += 1;
                let l = lives.entry(id).or_insert(Life { first: (*t, o.bbox), last: (*t, o.bbox) });
                l.last = (*t, o.bbox);
            }
        }
        let lives: Vec<Life> = lives.into_values().collect();
        Stats {
            run: run.into(),
            frames: frames.len(),
            boxes,
            with_id,
            ids: lives.len(),
            breaks: breaks(&lives),
            mean_life_s: lives.iter().map(|l| l.last.0 - l.first.0).sum::<f64>() / lives.len().max(1) as f64,
        }
    }
}

/// New ids that took over from an id that ended just before, near where
/// it would have gone on (its last place moved on at its mean velocity,
/// within a box width; an id seen once may have gone a width and a half
/// a second either way): each ended id is taken over at most once.
fn breaks(lives: &[Life]) -> usize {
    let centre = |b: &[f32; 4]| ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
    let mut taken = vec![false; lives.len()];
    let mut n = 0;
    for new in lives {
        let (t, b) = new.first;
        let (x, y) = centre(&b);
        let over = lives.iter().enumerate().position(|(i, old)| {
            let gap = t - old.last.0;
            if taken[i] || gap <= 0.0 || gap > BREAK_S {
                return false;
            }
            let ((fx, fy), (lx, ly)) = (centre(&old.first.1), centre(&old.last.1));
            let life = (old.last.0 - old.first.0) as f32;
            let width = (old.last.1[2] - old.last.1[0]).max(1.0);
            let (px, py, reach) = if life > 0.0 {
                let k = gap as f32 / life;
                (lx + (lx - fx) * k, ly + (ly - fy) * k, width)
            } else {
                (lx, ly, width * (1.0 + 1.5 * gap as f32))
            };
            ((x - px).powi(2) + (y - py).powi(2)).sqrt() <= reach
        });
        if let Some(i) = over {
            taken[i] = true;
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(id: Option<&str>, x: f32) -> Object {
        Object {
            object_id: id.map(String::from),
            class: "person".into(),
            class_id: 0,
            score: 0.9,
            bbox: [x, 100.0, x + 40.0, 200.0],
        }
    }

    #[test]
    fn a_new_id_where_another_just_ended_is_a_break() {
        let frames = vec![
            (0.0, vec![person(None, 0.0), person(None, 500.0)]),
            (1.0, vec![person(Some("a"), 10.0), person(Some("far"), 500.0)]),
            // "a" ends at x 10; "b" starts 20 px on, a second later.
            (2.0, vec![person(Some("b"), 30.0), person(Some("far"), 505.0)]),
            (3.0, vec![person(Some("b"), 40.0)]),
            // Long after "far" ended: a new person, not a break.
            (9.0, vec![person(Some("c"), 505.0)]),
        ];
        let s = Stats::of("t", &frames);
        assert_eq!((s.frames, s.boxes, s.with_id, s.ids, s.breaks), (5, 8, 6, 4, 1));
        assert!((s.mean_life_s - 0.5).abs() < 1e-9, "{s:?}");
    }
}
