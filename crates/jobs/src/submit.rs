//! `vigil submit`: a file to `vigil.video.chunks`, chunk by chunk, with the
//! topic's exactly-once producer (idempotent: a retried chunk is written
//! once). A bounded window of chunks is in flight; when the broker pushes
//! back (librdkafka's queue full) the sender waits, so a large file never
//! sits in memory.

use crate::Error;
use crate::chunk::{Chunks, FileSummary};
use bus::{KafkaConfig, topics};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::path::Path;
use std::time::Duration;

/// Chunks in flight at once.
const WINDOW: usize = 16;
/// Room kept in a record for the metadata beside the payload.
pub const META_ROOM: u64 = 4096;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Submitted {
    pub video_id: String,
    pub name: String,
    pub bytes: u64,
    pub chunks: u32,
}

/// Sends `path` as video `id` (default: its SHA-256) in chunks of
/// `chunk_bytes`; `progress(sent, total)` after each acknowledged chunk.
pub async fn submit(
    kafka: &KafkaConfig,
    producer: &FutureProducer,
    path: &Path,
    id: Option<&str>,
    chunk_bytes: u64,
    mut progress: impl FnMut(u64, u64),
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
    let video_id = id.map(str::to_string).unwrap_or_else(|| summary.sha256.clone());
    let chunks = Chunks::open(path, &summary, &video_id, chunk_bytes, bus::now_us())?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let total = summary.chunk_count(chunk_bytes) as u32;
    let mut inflight = FuturesUnordered::new();
    let mut sent = 0u64;
    for chunk in chunks {
        let chunk = chunk?;
        let record = chunk.encode();
        loop {
            match producer.send_result(FutureRecord::to(topics::VIDEO_CHUNKS).key(&video_id).payload(&record)) {
                Ok(delivery) => {
                    inflight.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => match inflight.next().await {
                    Some(r) => {
                        settle(r)?;
                        sent += 1;
                        progress(sent, total as u64);
                    }
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                },
                Err((e, _)) => return Err(Error::Send(e.to_string())),
            }
        }
        while inflight.len() >= WINDOW {
            if let Some(r) = inflight.next().await {
                settle(r)?;
                sent += 1;
                progress(sent, total as u64);
            }
        }
    }
    while let Some(r) = inflight.next().await {
        settle(r)?;
        sent += 1;
        progress(sent, total as u64);
    }
    Ok(Submitted { video_id, name, bytes: summary.bytes, chunks: total })
}

fn settle<D, M>(r: Result<Result<D, (KafkaError, M)>, futures::channel::oneshot::Canceled>) -> Result<(), Error> {
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(Error::Send(e.to_string())),
        Err(_) => Err(Error::Send("the producer went away".into())),
    }
}
