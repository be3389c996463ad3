//! Re-analysis: a model over archived footage, into a topic of its own.
//!
//! Reads each camera's archived frames between two times (from the key
//! frame at or before the start, so H.264 decodes), and runs them through
//! the same decode → model → tracker path as the live detector, publishing
//! to a versioned topic (`vigil.detections.NAME`). The same frames and
//! model always give the same records, so two models can be compared frame
//! by frame, and a re-run publishes only copies consumers drop. No object
//! events: those are for what happens now.

use crate::detector::{Detector, Error};
use media::{Codec, Frame, FrameMeta, Stream};
use schema::SourceFrame;
use stage::Output;
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
        self.publish_events = false;
        // One-off publishing, never resumed: no transactions, no checkpoints.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut out = Output::new(kafka, vec![self.output_topic().to_string()], None, stop)?;
        let index = archive::open_index(archive_dir).await?;
        let mut names: Vec<String> = index.cameras().await?.into_iter().map(|c| c.camera).collect();
        if !cameras.is_empty() {
            if let Some(missing) = cameras.iter().find(|c| !names.contains(c)) {
                return Err(Error::Config(format!("camera {missing} has nothing archived")));
            }
            names.retain(|n| cameras.contains(n));
        }
        let mut frames = archive::export::Frames::new(archive_dir);
        let mut summary = Summary { cameras: names.len(), ..Summary::default() };
        for camera in &names {
            // Start at the key frame at or before `from`: within a minute.
            let rows = index.frames_between(camera, from_us.saturating_sub(60_000_000), to_us).await?;
            let first = rows.iter().rposition(|r| r.key && r.capture_us <= from_us).unwrap_or(0);
            for r in &rows[first..] {
                let Some(codec) = codec(&r.codec) else { continue };
                let payload = frames.read(r)?.to_vec();
                summary.frames_read += 1;
                let meta = FrameMeta {
                    camera: r.camera.clone(),
                    stream: Stream::Main,
                    codec,
                    seq: r.seq,
                    capture_us: r.capture_us,
                    pts_90k: r.pts_90k,
                    key: r.key,
                    discontinuity: r.discontinuity,
                };
                // Frames before `from` only bring the decoder up to date.
                let source = SourceFrame { topic: "archive".into(), partition: -1, offset: r.seq as i64 };
                let job = self.take_frame(&Frame { meta, payload }, source, None);
                if let Some(job) = job.filter(|_| r.capture_us >= from_us) {
                    self.batch.push(job);
                    summary.frames_analysed += 1;
                }
                if self.batch.len() >= self.batch_size() {
                    self.analyse(&mut out)?;
                }
            }
            self.analyse(&mut out)?;
        }
        out.wait_delivered().await?;
        Ok(summary)
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
