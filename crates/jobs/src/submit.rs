//! `vigil submit`: a file to `vigil.video.chunks`, chunk by chunk, with the
//! topic's exactly-once producer (idempotent: a retried chunk is written
//! once). A bounded window of chunks is in flight; when the broker pushes
//! back (librdkafka's queue full) the sender waits, so a large file never
//! sits in memory.

use crate::Error;
use crate::chunk::{Chunks, FileSummary};
use bus::produce::{Acked, InFlight};
use bus::{KafkaConfig, topics};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::path::Path;

/// Chunks in flight at once.
const WINDOW: usize = 16;
/// Room kept in a record for the metadata beside the payload.
pub const META_ROOM: u64 = 4096;
/// Bytes per chunk unless asked otherwise: well below Kafka's default
/// message limit (1 MB).
pub const DEFAULT_CHUNK_BYTES: u64 = 512 * 1024;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Submitted {
    pub video_id: String,
    pub name: String,
    pub bytes: u64,
    pub chunks: u32,
    /// The video was submitted before (its job is in this state): nothing
    /// was sent again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known: Option<crate::State>,
}

/// Sends `path` as video `id` (default: its SHA-256, so the same content
/// sent again is the same video; with `force`, the SHA-256 and the
/// submission time: a new job) in chunks of `chunk_bytes`;
/// `progress(sent, total)` after each acknowledged chunk. A video already
/// whole in `jobs` (analysing or done) is not sent again; a failed one is
/// an error (`force` makes a new job of it); one still receiving is sent
/// again.
#[allow(clippy::too_many_arguments)]
pub async fn submit(
    kafka: &KafkaConfig,
    producer: &FutureProducer,
    path: &Path,
    id: Option<&str>,
    force: bool,
    chunk_bytes: u64,
    jobs: &std::collections::BTreeMap<String, crate::Job>,
    mut progress: impl FnMut(u64, u64) + Send,
) -> Result<Submitted, Error> {
    if chunk_bytes == 0 || chunk_bytes + META_ROOM > kafka.max_message_bytes as u64 {
        return Err(Error::Send(format!(
            "--chunk-bytes {chunk_bytes}: must be between 1 and {} (the broker's message limit, {} bytes, less room for metadata)",
            (kafka.max_message_bytes as u64).saturating_sub(META_ROOM),
            kafka.max_message_bytes
        )));
    }
    let summary = {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || FileSummary::of(&path)).await.map_err(|e| Error::Send(e.to_string()))??
    };
    let now = bus::now_us();
    let video_id = match id {
        Some(id) => id.to_string(),
        None if force => format!("{}-{now}", summary.sha256),
        None => summary.sha256.clone(),
    };
    if !crate::chunk::valid_id(&video_id) {
        return Err(Error::Send(format!("--id {video_id}: use 1-128 of A-Z a-z 0-9 . _ -")));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let total = summary.chunk_count(chunk_bytes) as u32;
    // A job still receiving may be a submission that broke off: its
    // chunks go again (collectors drop the copies).
    let whole = |j: &&crate::Job| j.state > crate::State::Receiving || j.chunks_received == j.chunks;
    if let Some(job) = jobs.get(&video_id).filter(whole) {
        if job.state == crate::State::Failed {
            return Err(Error::Video {
                video: video_id,
                why: format!(
                    "failed before ({}); --force submits it again as a new job",
                    job.error.as_deref().unwrap_or("no reason given")
                ),
            });
        }
        return Ok(Submitted { video_id, name, bytes: summary.bytes, chunks: job.chunks, known: Some(job.state) });
    }
    let chunks = Chunks::open(path, &summary, &video_id, chunk_bytes, now)?;
    let mut inflight: InFlight<u32> = InFlight::new();
    // Acknowledged so far, and the first failed chunk, which ends the
    // submission (a resubmission sends the same records again; the
    // collectors drop repeats).
    let mut tally = Tally { sent: 0, total: total.into(), failed: None, progress: &mut progress };
    for (n, chunk) in chunks.enumerate() {
        let record = chunk?.encode();
        let rec = FutureRecord::to(topics::VIDEO_CHUNKS).key(&video_id).payload(&record);
        match inflight.send(producer, rec, |_, acked| tally.settle(acked)).await {
            Ok(delivery) => inflight.track(n as u32, delivery),
            Err(e) => return Err(Error::Send(e.to_string())),
        }
        while inflight.len() >= WINDOW {
            if let Some((_, acked)) = inflight.next().await {
                tally.settle(acked);
            }
        }
        if let Some(e) = tally.failed.take() {
            return Err(Error::Send(e));
        }
    }
    while let Some((_, acked)) = inflight.next().await {
        tally.settle(acked);
    }
    if let Some(e) = tally.failed.take() {
        return Err(Error::Send(e));
    }
    Ok(Submitted { video_id, name, bytes: summary.bytes, chunks: total, known: None })
}

/// Chunks acknowledged, and the first that failed.
struct Tally<'a, P: FnMut(u64, u64)> {
    sent: u64,
    total: u64,
    failed: Option<String>,
    progress: &'a mut P,
}

impl<P: FnMut(u64, u64)> Tally<'_, P> {
    fn settle(&mut self, acked: Acked) {
        match acked {
            Ok(_) => {
                self.sent += 1;
                (self.progress)(self.sent, self.total);
            }
            Err(e) => {
                self.failed.get_or_insert(e);
            }
        }
    }
}
