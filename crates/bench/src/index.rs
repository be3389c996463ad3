//! `vigil-bench index`: the archive index at the scale of months. Builds,
//! through `Index::commit` (the archiver's own path, a commit per minute of
//! every camera), an index equivalent to DAYS × CAMERAS × FPS of video,
//! then times what a running archive asks of it: the retention pass, the
//! camera list, a 24 h timeline, a 1 h export's lookup, `vigil check`'s
//! read of one camera-day (streaming, with its peak memory), and removing
//! a segment. Beside it, in the same run, the same operations on the
//! previous design (a SQLite row per frame, `index_v1`) at the largest
//! size it bears here (`--baseline-days`), and on the new design at that
//! same size. Prints the ratios, the index's size per frame and as a share
//! of the video it describes. No video is written: only the index.

use crate::index_v1::V1;
use anyhow::{Context, Result, bail};
use archive::index::{Commit, FrameRow, Index};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct IndexBenchArgs {
    /// Days of video the index describes.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    #[arg(long, default_value_t = 16)]
    pub cameras: u32,
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Days of the row-per-frame baseline (it takes ~100 bytes and an
    /// insert per frame: a day of 16 cameras is ~41 million rows).
    #[arg(long, default_value_t = 1)]
    pub baseline_days: u32,
    /// Mean bytes per frame of the video described (4 Mbit/s at 30 fps).
    #[arg(long, default_value_t = 16_667)]
    pub frame_bytes: u64,
    /// Timed runs per operation (the median counts).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Where to build the indexes [default: the system's temp dir].
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// The archive's first capture time: 2026-01-01.
const T0: i64 = 1_767_225_600_000_000;
const MINUTE_US: i64 = 60_000_000;
const DAY_US: i64 = 86_400_000_000;
/// A segment every 10 minutes, as the archive's default limit.
const SEGMENT_MINUTES: u64 = 10;

struct Shape {
    cameras: u32,
    fps: u32,
    frame_bytes: u64,
}

impl Shape {
    fn frames_per_minute(&self) -> u64 {
        60 * self.fps as u64
    }

    fn camera(c: u32) -> String {
        format!("cam{c:02}")
    }

    /// One minute of one camera: a key frame a second, 4× the mean size.
    fn minute(&self, c: u32, m: u64) -> (Vec<FrameRow>, (String, String, u64)) {
        let camera = Self::camera(c);
        let per = self.frames_per_minute();
        let seg_first_minute = m - m % SEGMENT_MINUTES;
        let file = format!("{camera}/{:020}-bench.seg", seg_first_minute * per);
        let key_len = self.frame_bytes * 4;
        let other_len = (self.frame_bytes * self.fps as u64 - key_len) / (self.fps as u64 - 1).max(1);
        let minute_bytes = self.fps as u64 * 60 * self.frame_bytes;
        let mut offset = (m % SEGMENT_MINUTES) * minute_bytes;
        let mut rows = Vec::with_capacity(per as usize);
        for i in 0..per {
            let seq = m * per + i;
            let key = i % self.fps as u64 == 0;
            let len = if key { key_len } else { other_len + (seq * 7919) % 64 };
            rows.push(FrameRow {
                camera: camera.clone(),
                seq,
                file: file.clone(),
                offset,
                len,
                capture_us: T0 + m as i64 * MINUTE_US + (i as i64 * 1_000_000) / self.fps as i64,
                pts_90k: seq as i64 * 90_000 / self.fps as i64,
                key,
                discontinuity: false,
                codec: "h264".into(),
                crc: (seq as u32).wrapping_mul(2_654_435_761),
            });
            offset += len;
        }
        (rows, (file, camera, offset))
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `f` `rounds` times and returns the median time and its result.
async fn time<T, F, Fut>(rounds: usize, mut f: F) -> Result<(Duration, T)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        last = Some(f().await?);
        times.push(t.elapsed());
    }
    Ok((median(times), last.expect("one round")))
}

fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Peak memory above what the process held before `f` (Linux: the
/// high-water mark is reset through /proc/self/clear_refs).
async fn peak_mb<T, Fut: std::future::Future<Output = Result<T>>>(f: impl FnOnce() -> Fut) -> Result<(f64, T)> {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kb("VmRSS:");
    let out = f().await?;
    let peak = status_kb("VmHWM:");
    Ok((peak.saturating_sub(before) as f64 / 1024.0, out))
}

fn file_bytes(path: &Path) -> u64 {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    [path.to_path_buf(), wal].iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
}

async fn build_v2(path: &Path, shape: &Shape, days: u32) -> Result<Index> {
    let index = Index::open(path).await?;
    let started = Instant::now();
    let minutes = days as u64 * 1440;
    for m in 0..minutes {
        let mut commit = Commit::default();
        for c in 0..shape.cameras {
            let (rows, seg) = shape.minute(c, m);
            commit.frames.extend(rows);
            commit.segments.push(seg);
        }
        index.commit(commit).await?;
        if (m + 1) % 1440 == 0 {
            eprintln!("  new index: day {} of {days} built ({:.0} s)", (m + 1) / 1440, started.elapsed().as_secs_f64());
        }
    }
    Ok(index)
}

async fn build_v1(path: &Path, shape: &Shape, days: u32) -> Result<V1> {
    let v1 = V1::create(path).await?;
    let started = Instant::now();
    let minutes = days as u64 * 1440;
    for m in 0..minutes {
        let (mut frames, mut segs) = (Vec::new(), Vec::new());
        for c in 0..shape.cameras {
            let (rows, seg) = shape.minute(c, m);
            frames.extend(rows);
            segs.push(seg);
        }
        v1.commit(&frames, &segs).await?;
        if (m + 1) % 360 == 0 {
            eprintln!(
                "  row-per-frame index: {} h of {} built ({:.0} s)",
                (m + 1) / 60,
                days * 24,
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(v1)
}

/// Times of one design at one size, in the order of `OPERATIONS`.
struct Row {
    times: Vec<Duration>,
    check_mb: f64,
    bytes: u64,
    frames: u64,
}

const OPERATIONS: [&str; 6] = [
    "retention pass (totals, oldest segments, plan)",
    "camera list",
    "24 h timeline of a camera",
    "1 h export lookup",
    "check one camera-day (index side, streaming)",
    "remove the oldest segment",
];

async fn measure_v2(index: &Index, path: &Path, shape: &Shape, days: u32, rounds: usize) -> Result<Row> {
    let end = T0 + days as i64 * DAY_US;
    let cam = Shape::camera(0);
    let policy = archive::retention::Retention { max_age_us: Some(365 * DAY_US), ..Default::default() };
    let mut times = Vec::new();
    // The pass `archive::retention::enforce` makes: camera totals, then the
    // oldest page of segments (nothing is old enough to go).
    let (t, n) = time(rounds, || async {
        let mut totals = archive::retention::Totals {
            per_camera: index.cameras().await?.into_iter().map(|c| (c.camera, c.bytes)).collect(),
            free: u64::MAX,
        };
        let page = index.oldest_segments(None, 256).await?;
        let (gone, more) = archive::retention::plan(&policy, &page, &Default::default(), &mut totals, end);
        anyhow::ensure!(gone.is_empty() && !more);
        Ok(page.len())
    })
    .await?;
    anyhow::ensure!(
        n == 256.min((days as u64 * 1440 / SEGMENT_MINUTES * shape.cameras as u64) as usize),
        "segments: {n}"
    );
    times.push(t);
    let (t, cams) = time(rounds, || async { Ok(index.cameras().await?) }).await?;
    anyhow::ensure!(
        cams.len() == shape.cameras as usize && cams[0].frames == days as u64 * 1440 * shape.frames_per_minute()
    );
    times.push(t);
    let (t, ranges) =
        time(rounds, || async { Ok(index.recorded_ranges(&cam, end - DAY_US, end, archive::playback::GAP_US).await?) })
            .await?;
    anyhow::ensure!(ranges.len() == 1, "one continuous recording: {ranges:?}");
    times.push(t);
    let mid = T0 + days as i64 * DAY_US / 2;
    let (t, frames) =
        time(rounds, || async { Ok(index.frames_between(&cam, mid, mid + 3_600_000_000).await?.len()) }).await?;
    anyhow::ensure!(frames as u64 >= 3600 * shape.fps as u64, "1 h has {frames} frames");
    times.push(t);
    let day = days as u64 / 2;
    let per_day = 1440 * shape.frames_per_minute();
    let (first, last) = (day * per_day, (day + 1) * per_day - 1);
    let check = || async {
        let (mut n, mut missing, mut prev, mut after) = (0u64, 0u64, None::<u64>, first.checked_sub(1));
        'pages: loop {
            let page = index.recordings(&cam, after, 64).await?;
            let full = page.len() == 64;
            for r in &page {
                if r.first_seq > last {
                    break 'pages;
                }
                after = Some(r.first_seq);
                for f in r.samples() {
                    let f = f.map_err(|c| anyhow::anyhow!("corrupt sample table at {}", c.at))?;
                    if let Some(p) = prev {
                        missing += f.seq.saturating_sub(p + 1);
                    }
                    prev = Some(f.seq);
                    n += 1;
                }
            }
            if !full {
                break;
            }
        }
        Ok::<_, anyhow::Error>((n, missing))
    };
    let (t, (n, missing)) = time(rounds, check).await?;
    anyhow::ensure!(n >= per_day && missing == 0, "checked {n} frames, {missing} missing");
    times.push(t);
    let (check_mb, _) = peak_mb(check).await?;
    // As retention does: the oldest segment from the age index, then its
    // removal (a different segment each round).
    let (t, ()) = time(rounds, || async {
        let oldest = index.oldest_segments(None, 1).await?.into_iter().next().context("no segment")?;
        Ok(index.delete_segment(&oldest.file).await?)
    })
    .await?;
    times.push(t);
    let frames = days as u64 * 1440 * shape.frames_per_minute() * shape.cameras as u64;
    Ok(Row { times, check_mb, bytes: file_bytes(path), frames })
}

async fn measure_v1(v1: &V1, path: &Path, shape: &Shape, days: u32, rounds: usize) -> Result<Row> {
    let end = T0 + days as i64 * DAY_US;
    let cam = Shape::camera(0);
    let policy = archive::retention::Retention { max_age_us: Some(365 * DAY_US), ..Default::default() };
    let mut times = Vec::new();
    // The old pass: its JOIN/GROUP BY over every frame, then the same plan.
    let (t, _) = time(rounds, || async {
        let n = v1.segment_spans().await?;
        let _ = archive::retention::plan(&policy, &[], &Default::default(), &mut Default::default(), end);
        Ok(n)
    })
    .await?;
    times.push(t);
    times.push(time(rounds, || async { v1.cameras().await }).await?.0);
    times.push(
        time(rounds, || async { v1.recorded_ranges(&cam, end - DAY_US, end, archive::playback::GAP_US).await })
            .await?
            .0,
    );
    let mid = T0 + days as i64 * DAY_US / 2;
    times.push(time(rounds, || async { v1.frames_between(&cam, mid, mid + 3_600_000_000).await }).await?.0);
    let check = || async { v1.check(&cam).await };
    times.push(time(rounds, check).await?.0);
    let (check_mb, _) = peak_mb(check).await?;
    let (t, ()) = time(1, || async { v1.delete_segment(&format!("{cam}/{:020}-bench.seg", 0)).await }).await?;
    times.push(t);
    let frames = days as u64 * 1440 * shape.frames_per_minute() * shape.cameras as u64;
    Ok(Row { times, check_mb, bytes: file_bytes(path), frames })
}

pub async fn index(a: IndexBenchArgs) -> Result<()> {
    if a.days == 0 || a.cameras == 0 || a.fps < 2 || a.baseline_days == 0 || a.baseline_days > a.days {
        bail!("bench index needs days, cameras, fps ≥ 2 and 1 ≤ baseline days ≤ days");
    }
    let dir =
        a.dir.clone().unwrap_or_else(std::env::temp_dir).join(format!("vigil-bench-index-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let shape = Shape { cameras: a.cameras, fps: a.fps, frame_bytes: a.frame_bytes };
    println!(
        "{} cameras × {} fps, key frame every second, {} B mean frame ({:.1} Mbit/s); median of {} rounds\n",
        a.cameras,
        a.fps,
        a.frame_bytes,
        a.frame_bytes as f64 * a.fps as f64 * 8.0 / 1e6,
        a.rounds
    );
    let result = async {
        let started = Instant::now();
        let p = dir.join("new.db");
        let big = measure_v2(&build_v2(&p, &shape, a.days).await?, &p, &shape, a.days, a.rounds).await?;
        eprintln!("  new index, {} days: built and measured in {:.0} s", a.days, started.elapsed().as_secs_f64());
        let p = dir.join("new-small.db");
        let small =
            measure_v2(&build_v2(&p, &shape, a.baseline_days).await?, &p, &shape, a.baseline_days, a.rounds).await?;
        let started = Instant::now();
        let p = dir.join("old.db");
        let old =
            measure_v1(&build_v1(&p, &shape, a.baseline_days).await?, &p, &shape, a.baseline_days, a.rounds).await?;
        eprintln!(
            "  row-per-frame index, {} days: built and measured in {:.0} s",
            a.baseline_days,
            started.elapsed().as_secs_f64()
        );
        report(&a, &big, &small, &old);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn report(a: &IndexBenchArgs, big: &Row, small: &Row, old: &Row) {
    let (d, b) = (a.days, a.baseline_days);
    println!("| operation | new, {d} d (ms) | new, {b} d (ms) | row per frame, {b} d (ms) | old {b} d / new {d} d |");
    println!("|---|---:|---:|---:|---:|");
    for (i, op) in OPERATIONS.iter().enumerate() {
        let ratio = old.times[i].as_secs_f64() / big.times[i].as_secs_f64().max(1e-9);
        println!("| {op} | {} | {} | {} | {ratio:.1} |", ms(big.times[i]), ms(small.times[i]), ms(old.times[i]));
    }
    println!("| check's peak memory (MB) | {:.1} | {:.1} | {:.1} | |", big.check_mb, small.check_mb, old.check_mb);
    for (name, r, days) in [("new", big, d), ("new", small, b), ("row per frame", old, b)] {
        let video = r.frames as f64 * a.frame_bytes as f64;
        println!(
            "\n{name}, {days} d: {} frames, index {:.1} MB = {:.1} bytes/frame = {:.3} % of the {:.0} GB of video",
            r.frames,
            r.bytes as f64 / 1e6,
            r.bytes as f64 / r.frames as f64,
            100.0 * r.bytes as f64 / video,
            video / 1e9
        );
    }
    let worst = big.times[..5].iter().max().copied().unwrap_or_default();
    println!(
        "\ngoal: every operation under 50 ms at {d} days (slowest: {} ms), index under 1 % of the video ({:.3} %)",
        ms(worst),
        100.0 * big.bytes as f64 / (big.frames as f64 * a.frame_bytes as f64)
    );
}
