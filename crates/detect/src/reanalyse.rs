//! Re-analysis: a model over archived footage, into a topic of its own.
//!
//! The detector stage itself, run by `stage::run_bounded` over a finite
//! input: each camera's archived frames between two times (from the key
//! frame at or before the start, so H.264 decodes), read back from the
//! archive, which outlives the topic's retention. Same decode → model →
//! tracker path as the live detector, publishing to a versioned topic
//! (`vigil.detections.NAME`). The same frames and model always give the
//! same records, so two models can be compared frame by frame, and a re-run
//! publishes only copies consumers drop. No object events: those are for
//! what happens now.

use crate::detector::{Detector, Error};
use archive::index::{FrameRow, Index};
use bus::Delivered;
use media::{Codec, Frame, FrameMeta, Stream};
use std::collections::VecDeque;
use std::path::Path;

/// What a re-analysis did.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub cameras: usize,
    pub frames_read: u64,
    pub frames_analysed: u64,
}

impl Detector {
    /// Analyses `cameras` (every archived camera when empty) between
    /// `from_us` and `to_us` and waits until every record is acknowledged.
    pub async fn reanalyse(
        mut self,
        kafka: &bus::KafkaConfig,
        archive_dir: &Path,
        cameras: &[String],
        from_us: i64,
        to_us: i64,
    ) -> Result<Summary, Error> {
        let index = archive::open_index(archive_dir).await?;
        let mut names: Vec<String> = index.cameras().await?.into_iter().map(|c| c.camera).collect();
        if !cameras.is_empty() {
            if let Some(missing) = cameras.iter().find(|c| !names.contains(c)) {
                return Err(Error::Config(format!("camera {missing} has nothing archived")));
            }
            names.retain(|n| cameras.contains(n));
        }
        self.publish_events = false;
        // Every frame of the range is analysed: no motion check, no gate.
        self.cfg.motion.enabled = false;
        self.source_topic = "archive";
        self.analyse_from_us = Some(from_us);
        let cameras = names.len();
        let footage = Footage {
            index,
            frames: archive::export::Frames::new(archive_dir),
            cameras: names.into(),
            rows: VecDeque::new(),
            from_us,
            to_us,
        };
        let outputs = vec![self.output_topic().to_string()];
        let frames_read = stage::run_bounded(kafka, outputs, &mut self, ARCHIVE_PARTITION, footage).await?;
        Ok(Summary { cameras, frames_read, frames_analysed: self.taken })
    }
}

/// Archived frames carry no Kafka partition: results name the archive as
/// their source, at this partition, with the frame's seq as offset.
const ARCHIVE_PARTITION: i32 = -1;

/// Each camera's archived frames in the range, one camera after another.
struct Footage {
    index: Index,
    frames: archive::export::Frames,
    cameras: VecDeque<String>,
    rows: VecDeque<FrameRow>,
    from_us: i64,
    to_us: i64,
}

impl stage::Bounded for Footage {
    type Item = Delivered;

    async fn next(&mut self) -> Option<Result<Delivered, stage::Error>> {
        loop {
            if let Some(r) = self.rows.pop_front() {
                let Some(codec) = codec(&r.codec) else { continue };
                let payload = match self.frames.read(&r) {
                    Ok(p) => p.to_vec(),
                    Err(e) => return Some(Err(stage::Error::fatal(e))),
                };
                let meta = FrameMeta {
                    camera: r.camera,
                    stream: Stream::Main,
                    codec,
                    seq: r.seq,
                    capture_us: r.capture_us,
                    pts_90k: r.pts_90k,
                    key: r.key,
                    discontinuity: r.discontinuity,
                };
                let (seq, frame) = (r.seq as i64, Frame { meta, payload });
                return Some(Ok(Delivered { frame, partition: ARCHIVE_PARTITION, offset: seq, replay_from: seq }));
            }
            let camera = self.cameras.pop_front()?;
            // Start at the key frame at or before `from`: within a minute.
            let rows =
                match self.index.frames_between(&camera, self.from_us.saturating_sub(60_000_000), self.to_us).await {
                    Ok(rows) => rows,
                    Err(e) => return Some(Err(stage::Error::fatal(e))),
                };
            let first = rows.iter().rposition(|r| r.key && r.capture_us <= self.from_us).unwrap_or(0);
            self.rows = rows.into_iter().skip(first).collect();
        }
    }
}

fn codec(name: &str) -> Option<Codec> {
    match name {
        "h264" => Some(Codec::H264),
        "h265" => Some(Codec::H265),
        "mjpeg" => Some(Codec::Mjpeg),
        _ => None,
    }
}
