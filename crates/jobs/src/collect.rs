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

mod analyse;

use analyse::Analysis;

use crate::chunk::Chunk;
use crate::decode::{Frames, VideoInfo};
use crate::{Added, Assembly, Error, Job, State, Whole};
use bus::Record;
use bus::metrics::{Counter, Gauge, Metrics};
use detect::model::{Model, ModelOptions};
use detect::track::TrackerConfig;
use schema::video::VideoResult;
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
    /// Videos gathered at once (each holds a spill file or memory, and a
    /// map of its chunks). Fetching cannot pause for this, as the chunks
    /// that complete them are behind in the same partitions: a video
    /// beyond it fails at its first chunk, with the reason.
    pub max_receiving: usize,
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

struct Video {
    partition: i32,
    /// Its first chunk's offset: the partition resumes here until it ends.
    first_offset: i64,
    job: Job,
    published: Instant,
    phase: Phase,
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
        if cfg.max_videos == 0 || cfg.max_receiving == 0 {
            return Err(stage::Error::Config("[jobs] max_videos and max_receiving must be at least 1".into()));
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
            let gathering = self.videos.values().filter(|v| matches!(v.phase, Phase::Receiving { .. })).count();
            if gathering >= self.cfg.max_receiving {
                let why = format!(
                    "this collector was gathering {gathering} other videos, [jobs] max_receiving; \
                     send videos one after another, or submit again with --force"
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
