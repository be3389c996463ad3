//! The collector's analysis of whole videos: a file for ffmpeg, its
//! frames drawn in turn from every video being analysed, batched into the
//! model, tracked per video, and each video's objects and summary at its
//! end.

use super::{Collector, PROGRESS_EVERY, Phase, Sample};
use crate::decode::{self, Decoded, Frames, Next, VideoInfo};
use crate::{State, Whole};
use detect::model::{ImageRef, class_name};
use detect::track::{FrameRef, ObjectSummary, Tracker, TrackerConfig};
use schema::Object;
use schema::video::{VideoFrame, VideoObject, VideoResult, VideoSummary, frame_id, object_id};
use stage::Output;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub(super) struct Analysis {
    pub(super) frames: Frames,
    /// The file ffmpeg reads, removed at the end.
    pub(super) file: PathBuf,
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

/// A frame taken for the model.
struct Taken {
    video: String,
    frame: Decoded,
    width: u32,
    height: u32,
}

impl Collector {
    pub(super) fn analysing(&self) -> usize {
        self.videos.values().filter(|v| matches!(v.phase, Phase::Analysing(_) | Phase::Starting { .. })).count()
    }

    /// Starts the waiting videos there is room for: a file for ffmpeg, its
    /// description and the decoder, made off the stage's thread.
    pub(super) fn start_analyses(&mut self) {
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
    pub(super) async fn analyse_from(
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
    pub(super) async fn draw(&mut self, out: &mut Output) -> Result<(), stage::Error> {
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
    pub(super) async fn finish(&mut self, video: &str, out: &mut Output) -> Result<(), stage::Error> {
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
