//! The collector, a stage on the shared runtime (`crates/stage`):
//! `vigil.video.chunks` → reassemble → decode (ffmpeg) → model → tracker →
//! `vigil.video.results`, with each job's state on `vigil.video.jobs`.
//!
//! Chunks are keyed by video id, so every chunk of a video reaches the
//! collector that owns its partition. A video is gathered in memory while
//! the collector's memory budget lasts, else in a spill file
//! (`assemble`); once whole and checked it waits for an analysis slot
//! (`max_videos` at once), is decoded frame by frame, and its sampled
//! frames go through the model in batches drawn from every video being
//! analysed, then through the video's own tracker.
//!
//! Exactly-once effect, without holding anything but chunks: the
//! checkpoint of a partition resumes at the first chunk of its oldest
//! unfinished video (`Stage::checkpoint`'s hold), and lists the videos
//! that ended since (their chunks, read again, are ignored). A collector
//! that dies mid-video leaves that video to the partition's next owner,
//! which gathers and analyses it again from the start and publishes the
//! same records (same bytes, same ids: decoding, the model at batch 1 and
//! the tracker are deterministic), which consumers drop by id. Only the
//! summary's `processing_ms` differs between two runs.
//!
//! Long work (a video takes minutes) is done in steps (`Stage::work`), one
//! batch at a time, so the group is served in between; when as many
//! videos as it may analyse are whole and waiting, the collector stops
//! fetching (`Stage::full`) and the rest waits in Kafka.

use crate::chunk::Chunk;
use crate::decode::{self, Decoded, Frames, Next, VideoInfo};
use crate::{Added, Assembly, Error, Job, State, Whole};
use bus::Record;
use bus::metrics::{Counter, Gauge, Metrics};
use detect::model::{ImageRef, Model, ModelOptions, class_name};
use detect::track::{FrameRef, ObjectSummary, Tracker, TrackerConfig};
use schema::Object;
use schema::video::{VideoFrame, VideoObject, VideoResult, VideoSummary, frame_id, object_id};
use serde::{Deserialize, Serialize};
use stage::Output;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Which frames of a video are analysed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sample {
    All,
    /// At most this many per second of video time.
    PerSecond(f64),
}

#[derive(Clone, Debug)]
pub struct CollectConfig {
    pub model: ModelOptions,
    pub tracker: TrackerConfig,
    pub sample: Sample,
    /// Bytes of videos being gathered that may be held in memory, all
    /// videos together; a video that does not fit goes to a spill file.
    pub memory_bytes: u64,
    /// Larger files fail at their first chunk.
    pub max_file_bytes: u64,
    /// Videos analysed at once; as many more may wait, whole, before the
    /// collector stops fetching.
    pub max_videos: usize,
    /// A video none of whose missing chunks came for this long fails.
    pub chunk_timeout: Duration,
    /// Spill files and the files ffmpeg decodes.
    pub work_dir: PathBuf,
    pub checkpoint_interval: Duration,
    pub transactions: bool,
    /// This process in the collectors' group, stable across restarts.
    pub member: String,
}

/// What a collector checkpoints per partition of `vigil.video.chunks`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Videos of the partition that ended (done or failed), oldest first,
    /// the newest `ENDED_KEPT`: their chunks, read again after a restart
    /// or sent again with the same content, are ignored.
    pub ended: VecDeque<String>,
}

/// Ended videos remembered per partition: a restart re-reads from the
/// oldest unfinished video, which a timeout bounds, so far fewer than this
/// end in between.
pub const ENDED_KEPT: usize = 1000;
/// How often a video's progress goes to `vigil.video.jobs`.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

enum Phase {
    Receiving {
        assembly: Assembly,
        /// Time spent fetching since its last new chunk (time the
        /// collector was full and fetched nothing does not count).
        waited: Duration,
        in_memory: u64,
    },
    /// Every chunk in: the whole file's SHA-256 is being checked, off the
    /// stage's thread (a large file takes seconds).
    Checking {
        task: tokio::task::JoinHandle<Result<Whole, Error>>,
        in_memory: u64,
    },
    /// Whole and checked, waiting for an analysis slot.
    Waiting {
        whole: Whole,
        since: Instant,
    },
    /// Written out for ffmpeg and probed, off the stage's thread.
    Starting {
        task: tokio::task::JoinHandle<Result<(VideoInfo, Frames), String>>,
        file: PathBuf,
    },
    Analysing(Box<Analysis>),
}

struct Analysis {
    frames: Frames,
    /// The file ffmpeg reads, removed at the end.
    file: PathBuf,
    info: VideoInfo,
    tracker: Tracker,
    last_bucket: Option<i64>,
    /// Objects that left before the end, in the order they left.
    left: Vec<ObjectSummary>,
    first_us: Option<i64>,
    last_us: i64,
    /// When the video was whole: the summary's processing time.
    whole_at: Instant,
}

struct Video {
    partition: i32,
    /// Its first chunk's offset: the partition resumes here until it ends.
    first_offset: i64,
    job: Job,
    published: Instant,
    phase: Phase,
}

/// A frame taken for the model.
struct Taken {
    video: String,
    frame: Decoded,
    width: u32,
    height: u32,
}

struct Counters {
    chunks: Counter,
    garbage: Counter,
    done: Counter,
    failed: Counter,
    frames: Counter,
    receiving: Gauge,
    waiting: Gauge,
    analysing: Gauge,
    memory: Gauge,
    queue_age: Gauge,
}

impl Counters {
    fn new(m: &Metrics) -> Self {
        let phase = |p: &str| m.gauge("vigil_jobs_videos", "Videos a collector holds, by phase.", &[("phase", p)]);
        let ended = |s: &str| m.counter("vigil_jobs_ended_total", "Jobs a collector ended, by state.", &[("state", s)]);
        Counters {
            chunks: m.counter("vigil_jobs_chunks_total", "Video chunks a collector took (duplicates included).", &[]),
            garbage: m.counter(
                "vigil_jobs_garbage_records_total",
                "Records on vigil.video.chunks that were not chunks, skipped.",
                &[],
            ),
            done: ended("done"),
            failed: ended("failed"),
            frames: m.counter("vigil_jobs_frames_analysed_total", "Video frames the model analysed.", &[]),
            receiving: phase("receiving"),
            waiting: phase("waiting"),
            analysing: phase("analysing"),
            memory: m.gauge("vigil_jobs_memory_bytes", "Bytes of videos being gathered held in memory.", &[]),
            queue_age: m.gauge(
                "vigil_jobs_queue_age_seconds",
                "How long the oldest whole video has waited for analysis.",
                &[],
            ),
        }
    }
}

pub struct Collector {
    cfg: CollectConfig,
    model: Model,
    model_id: String,
    ended: BTreeMap<i32, PartitionState>,
    videos: BTreeMap<String, Video>,
    /// Whole videos in the order they became whole.
    waiting: VecDeque<String>,
    memory_used: u64,
    /// Where the last batch stopped drawing frames (fairness).
    turn: usize,
    /// When `expire` last ran.
    last_expire: Instant,
    counters: Counters,
}

impl Collector {
    pub fn new(cfg: CollectConfig, metrics: &Metrics) -> Result<Self, stage::Error> {
        if cfg.max_videos == 0 {
            return Err(stage::Error::Config("[jobs] max_videos must be at least 1".into()));
        }
        std::fs::create_dir_all(&cfg.work_dir)
            .map_err(|e| stage::Error::Config(format!("{}: {e}", cfg.work_dir.display())))?;
        // What a collector of this data dir left (it crashed, or this is a
        // restart): its videos are gathered again from their chunks.
        for e in std::fs::read_dir(&cfg.work_dir).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "part" || x == "video") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let model = Model::load(&cfg.model).map_err(stage::Error::fatal)?;
        let model_id = detect::model_id(&cfg.model.path).map_err(stage::Error::fatal)?;
        tracing::info!(model = %model_id, work_dir = %cfg.work_dir.display(), "collector ready");
        Ok(Collector {
            cfg,
            model,
            model_id,
            ended: BTreeMap::new(),
            videos: BTreeMap::new(),
            waiting: VecDeque::new(),
            memory_used: 0,
            turn: 0,
            last_expire: Instant::now(),
            counters: Counters::new(metrics),
        })
    }

    /// Whether a bad chunk of `video` on `partition` fails it: the video
    /// is new, or still being gathered there. (A bad copy of a chunk of a
    /// video already whole is only garbage.)
    fn receiving(&self, video: &str, partition: i32) -> bool {
        self.videos.get(video).is_none_or(|v| v.partition == partition && matches!(v.phase, Phase::Receiving { .. }))
    }

    fn has_ended(&self, partition: i32, video: &str) -> bool {
        self.ended.get(&partition).is_some_and(|s| s.ended.iter().any(|v| v == video))
    }

    /// Publishes a job's state (the last value per video wins).
    async fn publish_job(out: &mut Output, job: &Job) -> Result<(), stage::Error> {
        let payload = serde_json::to_vec(job).expect("jobs serialise");
        out.send(bus::topics::VIDEO_JOBS, &job.id, &format!("{}/job", job.id), &payload).await
    }

    async fn publish(out: &mut Output, video: &str, r: &VideoResult) -> Result<(), stage::Error> {
        let id = match r {
            VideoResult::Frame(f) => &f.id,
            VideoResult::Object(o) => &o.id,
            VideoResult::Summary(s) => &s.id,
        };
        let payload = serde_json::to_vec(r).expect("results serialise");
        out.send(bus::topics::VIDEO_RESULTS, video, id, &payload).await
    }

    /// Ends a video that is not open (a bad first chunk) or drops an open
    /// one, as failed with `why`.
    async fn fail(
        &mut self,
        out: &mut Output,
        partition: i32,
        video: &str,
        name: &str,
        why: String,
    ) -> Result<(), stage::Error> {
        tracing::warn!(video, name, "job failed: {why}");
        let mut job = match self.videos.get(video) {
            Some(v) => v.job.clone(),
            None => Job::queued(video, name, 0),
        };
        job.fail(why);
        self.end(video, partition);
        self.counters.failed.inc();
        Self::publish_job(out, &job).await
    }

    /// Forgets an open video (its memory, files, decoder) and remembers it
    /// ended.
    fn end(&mut self, video: &str, partition: i32) {
        if let Some(v) = self.videos.remove(video) {
            self.release(v);
        }
        self.waiting.retain(|w| w != video);
        let s = self.ended.entry(partition).or_default();
        s.ended.push_back(video.to_string());
        while s.ended.len() > ENDED_KEPT {
            s.ended.pop_front();
        }
    }

    fn release(&mut self, v: Video) {
        match v.phase {
            Phase::Receiving { assembly, in_memory, .. } => {
                self.memory_used -= in_memory;
                assembly.discard();
            }
            Phase::Waiting { whole: Whole::Memory(buf), .. } => self.memory_used -= buf.len() as u64,
            Phase::Waiting { whole: Whole::File(path), .. } => {
                let _ = std::fs::remove_file(path);
            }
            Phase::Analysing(a) => {
                drop(a.frames);
                let _ = std::fs::remove_file(&a.file);
            }
            // Their work ends by itself; what it leaves is removed then.
            Phase::Checking { task, in_memory } => {
                self.memory_used -= in_memory;
                tokio::spawn(async move {
                    if let Ok(Ok(Whole::File(path))) = task.await {
                        let _ = std::fs::remove_file(path);
                    }
                });
            }
            Phase::Starting { task, file } => {
                tokio::spawn(async move {
                    drop(task.await);
                    let _ = std::fs::remove_file(file);
                });
            }
        }
    }

    async fn take_chunk(&mut self, r: Record, out: &mut Output) -> Result<(), stage::Error> {
        self.counters.chunks.inc();
        let c = match Chunk::decode(&r.payload) {
            Ok(c) => c,
            Err(Error::Chunk { video, index, why })
                if r.key.as_deref() == Some(video.as_bytes()) && self.receiving(&video, r.partition) =>
            {
                if self.has_ended(r.partition, &video) {
                    return Ok(());
                }
                let name = self.videos.get(&video).map(|v| v.job.name.clone()).unwrap_or_default();
                let why = format!("chunk {index}: {why}");
                return self.fail(out, r.partition, &video, &name, why).await;
            }
            Err(e) => {
                self.counters.garbage.inc();
                tracing::warn!(partition = r.partition, offset = r.offset, error = %e, "not a video chunk: skipped");
                return Ok(());
            }
        };
        let m = &c.meta;
        if r.key.as_deref() != Some(m.video_id.as_bytes()) {
            // Chunks keyed otherwise may be spread over collectors.
            self.counters.garbage.inc();
            tracing::warn!(video = %m.video_id, offset = r.offset, "a chunk not keyed by its video id: skipped");
            return Ok(());
        }
        let video = m.video_id.clone();
        if self.has_ended(r.partition, &video) {
            return Ok(());
        }
        if self.videos.get(&video).is_some_and(|v| v.partition != r.partition) {
            // One video's chunks all go to one partition (the key): a copy
            // on another is no part of it.
            self.counters.garbage.inc();
            tracing::warn!(video = %video, partition = r.partition, "a chunk on another partition than its video's: skipped");
            return Ok(());
        }
        if !self.videos.contains_key(&video) {
            if m.file_bytes > self.cfg.max_file_bytes {
                let why = format!(
                    "the file has {} bytes, over [jobs] max_file_bytes ({})",
                    m.file_bytes, self.cfg.max_file_bytes
                );
                return self.fail(out, r.partition, &video, &m.name, why).await;
            }
            let room = self.cfg.memory_bytes.saturating_sub(self.memory_used);
            let assembly = match Assembly::new(m, room, &self.cfg.work_dir) {
                Ok(a) => a,
                // The work dir: a restart may cure it (a full disk freed).
                Err(e) => return Err(stage::Error::transient(e)),
            };
            let in_memory = if m.file_bytes <= room { m.file_bytes } else { 0 };
            self.memory_used += in_memory;
            let mut job = Job::queued(&video, &m.name, m.count);
            job.state = State::Receiving;
            self.videos.insert(
                video.clone(),
                Video {
                    partition: r.partition,
                    first_offset: r.offset,
                    job,
                    published: Instant::now() - PROGRESS_EVERY,
                    phase: Phase::Receiving { assembly, waited: Duration::ZERO, in_memory },
                },
            );
        }
        let v = self.videos.get_mut(&video).expect("open video");
        let Phase::Receiving { assembly, waited, in_memory } = &mut v.phase else {
            return Ok(()); // whole already: a copy
        };
        match assembly.add(&c) {
            Ok(Added::Duplicate) => return Ok(()),
            Ok(Added::New) => *waited = Duration::ZERO,
            Err(e) => {
                let name = v.job.name.clone();
                return self.fail(out, r.partition, &video, &name, e.to_string()).await;
            }
        }
        let (received, _) = assembly.progress();
        v.job.chunks_received = received;
        if !assembly.complete() {
            if v.published.elapsed() >= PROGRESS_EVERY {
                v.published = Instant::now();
                Self::publish_job(out, &v.job).await?;
            }
            return Ok(());
        }
        let in_memory = *in_memory;
        let placeholder = Phase::Waiting { whole: Whole::Memory(Vec::new()), since: Instant::now() };
        let Phase::Receiving { assembly, .. } = std::mem::replace(&mut v.phase, placeholder) else {
            unreachable!("matched above")
        };
        v.phase = Phase::Checking { task: tokio::task::spawn_blocking(move || assembly.finish()), in_memory };
        Ok(())
    }

    /// Takes the results of the work done off the stage's thread: checked
    /// files wait for analysis (or fail), probed ones start it.
    async fn settle(&mut self, out: &mut Output) -> Result<(), stage::Error> {
        let done: Vec<String> = self
            .videos
            .iter()
            .filter(|(_, v)| match &v.phase {
                Phase::Checking { task, .. } => task.is_finished(),
                Phase::Starting { task, .. } => task.is_finished(),
                _ => false,
            })
            .map(|(k, _)| k.clone())
            .collect();
        for video in done {
            let v = self.videos.get_mut(&video).expect("open video");
            let placeholder = Phase::Waiting { whole: Whole::Memory(Vec::new()), since: Instant::now() };
            let (partition, name) = (v.partition, v.job.name.clone());
            match std::mem::replace(&mut v.phase, placeholder) {
                Phase::Checking { task, in_memory } => match task.await {
                    Ok(Ok(whole)) => {
                        if matches!(whole, Whole::File(_)) {
                            self.memory_used -= in_memory;
                        }
                        let v = self.videos.get_mut(&video).expect("open video");
                        v.phase = Phase::Waiting { whole, since: Instant::now() };
                        v.published = Instant::now();
                        Self::publish_job(out, &v.job).await?;
                        self.waiting.push_back(video);
                    }
                    Ok(Err(e)) => {
                        self.memory_used -= in_memory;
                        self.fail(out, partition, &video, &name, e.to_string()).await?;
                    }
                    Err(e) => {
                        self.memory_used -= in_memory;
                        self.fail(out, partition, &video, &name, format!("checking the file: {e}")).await?;
                    }
                },
                Phase::Starting { task, file } => match task.await {
                    Ok(Ok((info, frames))) => self.analyse_from(out, &video, info, frames, file).await?,
                    Ok(Err(why)) => {
                        let _ = std::fs::remove_file(&file);
                        self.fail(out, partition, &video, &name, why).await?;
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(&file);
                        self.fail(out, partition, &video, &name, format!("preparing the file: {e}")).await?;
                    }
                },
                _ => unreachable!("filtered"),
            }
        }
        Ok(())
    }

    fn analysing(&self) -> usize {
        self.videos.values().filter(|v| matches!(v.phase, Phase::Analysing(_) | Phase::Starting { .. })).count()
    }

    /// Starts the waiting videos there is room for: a file for ffmpeg, its
    /// description and the decoder, made off the stage's thread.
    fn start_analyses(&mut self) {
        while self.analysing() < self.cfg.max_videos {
            let Some(video) = self.waiting.pop_front() else { return };
            let path = self.cfg.work_dir.join(format!("{}.video", crate::sha256_hex(video.as_bytes())));
            let Some(v) = self.videos.get_mut(&video) else { continue };
            let placeholder = Phase::Waiting { whole: Whole::Memory(Vec::new()), since: Instant::now() };
            let Phase::Waiting { whole, .. } = std::mem::replace(&mut v.phase, placeholder) else {
                continue;
            };
            let (file, memory) = match whole {
                Whole::File(p) => (p, None),
                Whole::Memory(buf) => (path, Some(buf)),
            };
            self.memory_used -= memory.as_ref().map_or(0, |b| b.len() as u64);
            let f = file.clone();
            let task = tokio::task::spawn_blocking(move || {
                if let Some(buf) = memory {
                    std::fs::write(&f, buf).map_err(|e| format!("{}: {e}", f.display()))?;
                }
                let info = decode::probe(&f)?;
                Frames::start(&f, &info).map(|frames| (info, frames))
            });
            if let Some(v) = self.videos.get_mut(&video) {
                v.phase = Phase::Starting { task, file };
            }
        }
    }

    /// A video written out and probed: its analysis starts.
    async fn analyse_from(
        &mut self,
        out: &mut Output,
        video: &str,
        info: VideoInfo,
        frames: Frames,
        file: PathBuf,
    ) -> Result<(), stage::Error> {
        let tracker_cfg = TrackerConfig { class_aware: true, ..self.cfg.tracker };
        let sample = self.cfg.sample;
        let v = self.videos.get_mut(video).expect("open video");
        v.job.state = State::Analysing;
        v.job.frames = info.frames.map(|n| expected_frames(sample, n, info.duration_us));
        v.published = Instant::now();
        Self::publish_job(out, &v.job).await?;
        tracing::info!(video = %video, name = %v.job.name, codec = %info.codec, width = info.width, height = info.height, frames = ?info.frames, "analysing");
        v.phase = Phase::Analysing(Box::new(Analysis {
            frames,
            file,
            tracker: Tracker::new(video, tracker_cfg),
            info,
            last_bucket: None,
            left: Vec::new(),
            first_us: None,
            last_us: 0,
            whole_at: Instant::now(),
        }));
        Ok(())
    }

    /// Draws up to a batch of sampled frames from the videos being
    /// analysed, in turn; ends videos whose decoding ended.
    async fn draw(&mut self, out: &mut Output) -> Result<(), stage::Error> {
        let batch = self.model.batch().max(1);
        let names: Vec<String> = self
            .videos
            .iter()
            .filter(|(_, v)| matches!(v.phase, Phase::Analysing(_)))
            .map(|(k, _)| k.clone())
            .collect();
        let mut taken = Vec::new();
        if names.is_empty() {
            return Ok(());
        }
        let mut ended: Vec<(String, Option<String>)> = Vec::new();
        let mut dry = vec![false; names.len()];
        let mut i = self.turn % names.len();
        while taken.len() < batch && dry.iter().any(|d| !d) {
            if !dry[i] {
                let v = self.videos.get_mut(&names[i]).expect("analysing video");
                let Phase::Analysing(a) = &mut v.phase else { unreachable!("filtered") };
                match a.frames.try_next() {
                    // One frame per video per turn.
                    Next::Frame(frame) => {
                        if wanted(self.cfg.sample, &mut a.last_bucket, frame.time_us) {
                            let (width, height) = (a.info.width, a.info.height);
                            taken.push(Taken { video: names[i].clone(), frame, width, height });
                        }
                    }
                    Next::NotYet => dry[i] = true,
                    Next::Failed(why) => {
                        ended.push((names[i].clone(), Some(why)));
                        dry[i] = true;
                    }
                    Next::Ended => {
                        ended.push((names[i].clone(), None));
                        dry[i] = true;
                    }
                }
            }
            i = (i + 1) % names.len();
        }
        self.turn = i;
        if taken.is_empty() && ended.is_empty() {
            // Every decoder is behind: wait a little for one, not spin.
            let name = names[self.turn % names.len()].clone();
            if let Some(Phase::Analysing(a)) = self.videos.get_mut(&name).map(|v| &mut v.phase) {
                match tokio::time::timeout(Duration::from_millis(20), a.frames.next()).await {
                    Err(_) => {}
                    Ok(Some(Ok(frame))) => {
                        if wanted(self.cfg.sample, &mut a.last_bucket, frame.time_us) {
                            let (width, height) = (a.info.width, a.info.height);
                            taken.push(Taken { video: name, frame, width, height });
                        }
                    }
                    Ok(Some(Err(why))) => ended.push((name, Some(why))),
                    Ok(None) => ended.push((name, None)),
                }
            }
        }
        // Frames drawn before a video's end are analysed first.
        self.analyse(taken, out).await?;
        for (video, failed) in ended {
            match failed {
                Some(why) => {
                    let Some(v) = self.videos.get(&video) else { continue };
                    let (p, name) = (v.partition, v.job.name.clone());
                    self.fail(out, p, &video, &name, why).await?;
                }
                None => self.finish(&video, out).await?,
            }
        }
        Ok(())
    }

    /// Runs the model over `taken`, tracks each video, publishes a record
    /// per frame.
    async fn analyse(&mut self, taken: Vec<Taken>, out: &mut Output) -> Result<(), stage::Error> {
        if taken.is_empty() {
            return Ok(());
        }
        let images: Vec<ImageRef> = taken.iter().map(|t| ImageRef::new(t.width, t.height, &t.frame.rgb)).collect();
        // A failure here is the model's or the setup's: no retry cures it.
        let results = self.model.detect(&images).map_err(stage::Error::fatal)?;
        for (t, dets) in taken.iter().zip(results) {
            self.counters.frames.inc();
            let Some(v) = self.videos.get_mut(&t.video) else { continue };
            let Phase::Analysing(a) = &mut v.phase else { continue };
            let at = FrameRef { seq: t.frame.index, time_us: t.frame.time_us };
            let update = a.tracker.update(at, &dets).unwrap_or_default();
            a.first_us.get_or_insert(t.frame.time_us);
            a.last_us = t.frame.time_us;
            a.left.extend(update.left);
            let mut ids: Vec<Option<String>> = vec![None; dets.len()];
            for o in &update.tracks {
                ids[o.detection] = Some(global_id(&o.object_id, o.class));
            }
            let objects = dets
                .iter()
                .zip(ids)
                .map(|(d, object_id)| Object {
                    object_id,
                    class: class_name(d.class).into(),
                    class_id: d.class,
                    score: d.score,
                    bbox: [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2],
                })
                .collect();
            let record = VideoResult::Frame(VideoFrame {
                id: frame_id(&t.video, t.frame.index),
                video: t.video.clone(),
                frame: t.frame.index,
                time_us: t.frame.time_us,
                model: self.model_id.clone(),
                width: t.width,
                height: t.height,
                objects,
            });
            Self::publish(out, &t.video, &record).await?;
            v.job.frames_analysed += 1;
            if v.published.elapsed() >= PROGRESS_EVERY {
                v.published = Instant::now();
                Self::publish_job(out, &v.job).await?;
            }
        }
        Ok(())
    }

    /// A video decoded to its end: its objects, its summary, done.
    async fn finish(&mut self, video: &str, out: &mut Output) -> Result<(), stage::Error> {
        let Some(v) = self.videos.get_mut(video) else { return Ok(()) };
        let Phase::Analysing(a) = &mut v.phase else { return Ok(()) };
        let mut objects = std::mem::take(&mut a.left);
        objects.extend(a.tracker.finish());
        let mut per_class: BTreeMap<String, u64> = BTreeMap::new();
        let partition = v.partition;
        let duration_us = a.info.duration_us.unwrap_or(a.last_us.saturating_sub(a.first_us.unwrap_or(0)));
        let processing_ms = a.whole_at.elapsed().as_millis() as u64;
        let mut job = v.job.clone();
        for o in &objects {
            let class = class_name(o.class);
            *per_class.entry(class.to_string()).or_default() += 1;
            let b = o.best.bbox;
            let oid = global_id(&o.object_id, o.class);
            let record = VideoResult::Object(VideoObject {
                id: format!("{oid}/object"),
                video: video.to_string(),
                object_id: oid,
                class: class.into(),
                first_frame: o.first_seq,
                last_frame: o.last_seq,
                first_us: o.first_seen_us,
                last_us: o.last_seen_us,
                frames_seen: o.sightings.into(),
                best_score: o.best.score,
                best_frame: o.best.seq,
                best_bbox: [b.x1, b.y1, b.x2, b.y2],
            });
            Self::publish(out, video, &record).await?;
        }
        let summary = VideoResult::Summary(VideoSummary {
            id: format!("{video}/summary"),
            video: video.to_string(),
            name: job.name.clone(),
            model: self.model_id.clone(),
            frames_analysed: job.frames_analysed,
            duration_us,
            processing_ms,
            objects: per_class,
        });
        Self::publish(out, video, &summary).await?;
        job.state = State::Done;
        job.frames = Some(job.frames_analysed);
        tracing::info!(video, name = %job.name, frames = job.frames_analysed, objects = objects.len(), processing_ms, "job done");
        self.end(video, partition);
        self.counters.done.inc();
        Self::publish_job(out, &job).await
    }

    /// Videos whose missing chunks stopped coming fail, naming them. The
    /// time counts only while the collector fetches: when it is full the
    /// chunks wait in Kafka, and nobody's are late.
    async fn expire(&mut self, out: &mut Output) -> Result<(), stage::Error> {
        let full = stage::Stage::full(self);
        let step = self.last_expire.elapsed();
        self.last_expire = Instant::now();
        let mut late = Vec::new();
        for (id, v) in &mut self.videos {
            if let Phase::Receiving { assembly, waited, .. } = &mut v.phase {
                if !full {
                    *waited += step;
                }
                if *waited >= self.cfg.chunk_timeout {
                    let missing: Vec<String> = assembly
                        .missing()
                        .iter()
                        .map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
                        .collect();
                    let (got, n) = assembly.progress();
                    let why = format!(
                        "chunks {} of {n} never arrived (had {got}; nothing came for {} s, [jobs] chunk_timeout_s)",
                        missing.join(", "),
                        self.cfg.chunk_timeout.as_secs()
                    );
                    late.push((id.clone(), v.partition, v.job.name.clone(), why));
                }
            }
        }
        for (id, p, name, why) in late {
            self.fail(out, p, &id, &name, why).await?;
        }
        Ok(())
    }

    fn gauges(&self) {
        let (mut r, mut w, mut a) = (0, 0, 0);
        let mut oldest: Option<Instant> = None;
        for v in self.videos.values() {
            match &v.phase {
                Phase::Receiving { .. } | Phase::Checking { .. } => r += 1,
                Phase::Waiting { since, .. } => {
                    w += 1;
                    oldest = Some(oldest.map_or(*since, |o| o.min(*since)));
                }
                Phase::Analysing(_) | Phase::Starting { .. } => a += 1,
            }
        }
        self.counters.receiving.set(r as f64);
        self.counters.waiting.set(w as f64);
        self.counters.analysing.set(a as f64);
        self.counters.memory.set(self.memory_used as f64);
        self.counters.queue_age.set(oldest.map_or(0.0, |o| o.elapsed().as_secs_f64()));
    }
}

/// The global object id of a video's track: the tracker's
/// `<video>/<first frame>/<index>` and the class.
fn global_id(track_id: &str, class: u16) -> String {
    match track_id.rsplit_once('/').and_then(|(rest, index)| Some((rest.rsplit_once('/')?, index))) {
        Some(((video, frame), index)) => match (frame.parse(), index.parse()) {
            (Ok(f), Ok(i)) => object_id(video, f, i, class_name(class)),
            _ => format!("{track_id}/{}", class_name(class)),
        },
        None => format!("{track_id}/{}", class_name(class)),
    }
}

/// Frames to analyse out of `frames` decoded, under the sampling rule.
fn expected_frames(sample: Sample, frames: u64, duration_us: Option<i64>) -> u64 {
    match (sample, duration_us) {
        (Sample::PerSecond(n), Some(d)) => frames.min(((d as f64 / 1e6) * n).ceil() as u64 + 1),
        _ => frames,
    }
}

/// Whether a frame at `time_us` is analysed, under `sample`.
fn wanted(sample: Sample, last_bucket: &mut Option<i64>, time_us: i64) -> bool {
    let Sample::PerSecond(rate) = sample else { return true };
    let bucket = (time_us as f64 * rate / 1e6).floor() as i64;
    if last_bucket.is_some_and(|last| bucket <= last) {
        return false;
    }
    *last_bucket = Some(bucket);
    true
}

impl stage::Stage for Collector {
    type State = PartitionState;
    type Source = bus::Reader;

    async fn assign(&mut self, partition: i32, state: Option<PartitionState>) -> Result<(), stage::Error> {
        self.ended.insert(partition, state.unwrap_or_default());
        Ok(())
    }

    /// Drops the partition's open videos: the next owner gathers them
    /// again from the checkpoint, which holds at their first chunks.
    fn revoke(&mut self, partition: i32) {
        self.ended.remove(&partition);
        let gone: Vec<String> =
            self.videos.iter().filter(|(_, v)| v.partition == partition).map(|(k, _)| k.clone()).collect();
        for id in gone {
            if let Some(v) = self.videos.remove(&id) {
                self.release(v);
            }
            self.waiting.retain(|w| w != &id);
        }
        self.gauges();
    }

    async fn on_input(&mut self, r: Record, out: &mut Output) -> Result<(), stage::Error> {
        self.take_chunk(r, out).await?;
        self.gauges();
        Ok(())
    }

    async fn work(&mut self, out: &mut Output) -> Result<bool, stage::Error> {
        self.expire(out).await?;
        self.settle(out).await?;
        self.start_analyses();
        self.draw(out).await?;
        self.gauges();
        let background =
            self.videos.values().any(|v| matches!(v.phase, Phase::Checking { .. } | Phase::Starting { .. }));
        let decoding = self.videos.values().any(|v| matches!(v.phase, Phase::Analysing(_)));
        if background && !decoding {
            // Only work off the thread: wait a little for it, not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(!self.waiting.is_empty() || background || decoding)
    }

    fn full(&self) -> bool {
        self.waiting.len() >= self.cfg.max_videos
    }

    /// The videos ended lately, and the first chunk of the oldest video
    /// still open: a restart reads again from there.
    fn checkpoint(&mut self, partition: i32) -> (PartitionState, Option<i64>) {
        let hold = self.videos.values().filter(|v| v.partition == partition).map(|v| v.first_offset).min();
        (self.ended.get(&partition).cloned().unwrap_or_default(), hold)
    }
}

/// The collector's declaration on the stage runtime.
pub fn stage_spec(cfg: &CollectConfig, chunks: bus::TopicSpec) -> stage::StageSpec {
    use bus::topics;
    let state = topics::plan().into_iter().find(|t| t.name == topics::COLLECT_STATE).expect("state topic in the plan");
    stage::StageSpec {
        name: "collect",
        // One identity whatever the model: changing the model does not
        // analyse again the videos the topic still holds.
        instance: topics::VIDEO_RESULTS.into(),
        member: cfg.member.clone(),
        group: topics::groups::COLLECT,
        input: chunks,
        outputs: vec![topics::VIDEO_RESULTS.into(), topics::VIDEO_JOBS.into()],
        state,
        // Videos submitted before any collector ran are analysed too.
        start: stage::Start::Beginning,
        checkpoint_interval: cfg.checkpoint_interval,
        transactions: cfg.transactions,
    }
}

/// Runs the collector until `shutdown` resolves, on the stage runtime.
pub async fn run(
    cfg: CollectConfig,
    kafka: bus::KafkaConfig,
    chunks: bus::TopicSpec,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), stage::Error> {
    let spec = stage_spec(&cfg, chunks);
    let m = metrics.clone();
    stage::run(spec, kafka, metrics, move || Collector::new(cfg.clone(), &m), shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_ids_name_the_video_frame_index_and_class() {
        assert_eq!(global_id("abc/12/3", 0), "abc/12/3/person");
        assert_eq!(global_id("my-video/0/0", 16), "my-video/0/0/dog");
    }

    #[test]
    fn sampling_by_video_time() {
        let mut last = None;
        let times = [0, 40_000, 499_999, 500_000, 990_000, 1_000_000, 1_600_000];
        let got: Vec<bool> = times.iter().map(|&t| wanted(Sample::PerSecond(2.0), &mut last, t)).collect();
        assert_eq!(got, [true, false, false, true, false, true, true]);
        assert!(wanted(Sample::All, &mut None, 5));
    }
}
