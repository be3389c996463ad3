//! The archive role: repair the dir, then run the archiver stage as a
//! member of the archive's group, and retention beside it.

use crate::archiver::{Archiver, Counters, Shared};
use crate::index::Index;
use crate::writer::Writer;
use crate::{ArchiveConfig, Error, open_index, recover, retention};
use bus::metrics::Metrics;
use bus::{KafkaConfig, TopicSpec, topics};
use std::sync::Arc;

/// The archive's declaration on the stage runtime.
pub fn stage_spec(cfg: &ArchiveConfig, frames: TopicSpec) -> stage::StageSpec {
    let state = topics::plan().into_iter().find(|t| t.name == topics::ARCHIVE_STATE).expect("state topic in the plan");
    stage::StageSpec {
        name: "archive",
        // Every archiver of a topic is one archive: whichever owns a
        // partition next resumes from the same checkpoint, in its dir or
        // another (keys `<topic>/<partition>`).
        instance: frames.name.into(),
        member: cfg.member.clone(),
        group: topics::groups::ARCHIVE,
        input: frames,
        outputs: Vec::new(),
        state,
        // The archive keeps everything the topic still holds.
        start: stage::Start::Beginning,
        // Each flush is a checkpoint: index commit, then progress published.
        checkpoint_interval: cfg.flush_interval,
        transactions: false,
    }
}

/// Archives until `shutdown` resolves, then flushes what it holds.
/// `frames` carries the partition count the topic has on the broker.
pub async fn run(
    cfg: ArchiveConfig,
    kafka: KafkaConfig,
    frames: TopicSpec,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let index = Arc::new(open_index(&cfg.dir).await?);
    repair(&cfg, &index).await?;
    // A writer now, so that a dir it cannot write is an error at start.
    let io = |e| Error::Io { path: cfg.dir.clone(), source: e };
    let mut first = Some(Writer::new(&cfg.dir, cfg.segment.clone()).map_err(io)?);
    let spec = stage_spec(&cfg, frames.clone());
    let shared = Arc::new(Shared::new(
        cfg.clone(),
        frames.name,
        index.clone(),
        Counters::new(&metrics, frames.name),
        bus::events::Events::new(&kafka)?,
    ));
    let retention = tokio::spawn(retain(shared.clone()));
    let s = shared.clone();
    let make = move || {
        let writer = match first.take() {
            Some(w) => w,
            None => Writer::new(&s.cfg.dir, s.cfg.segment.clone())
                .map_err(|e| stage::Error::transient(Error::Io { path: s.cfg.dir.clone(), source: e }))?,
        };
        Ok(Archiver::new(s.clone(), writer))
    };
    let result = stage::run(spec, kafka, metrics, make, shutdown).await;
    retention.abort();
    // Let the task drop its handle on the index before we return.
    let _ = retention.await;
    result?;
    tracing::info!("archive stopped");
    Ok(())
}

/// Retention on its own clock, beside the archiver (the index serialises
/// their transactions).
async fn retain(s: Arc<Shared>) {
    let mut tick = tokio::time::interval(s.cfg.retention_interval);
    loop {
        tick.tick().await;
        match retention::enforce(&s.cfg.dir, &s.index, &s.cfg.retention, bus::now_us()).await {
            Ok(d) => s.c.deleted_bytes.add(d.bytes),
            Err(e) => tracing::error!(error = %e, "retention failed"),
        }
    }
}

/// Start-up recovery, logged with what it found and how long it took.
async fn repair(cfg: &ArchiveConfig, index: &Index) -> Result<(), Error> {
    let r = recover::recover(&cfg.dir, index).await?;
    tracing::info!(
        segments = r.segments,
        truncated_files = r.truncated_files,
        truncated_bytes = r.truncated_bytes,
        removed_files = r.removed_files,
        removed_bytes = r.removed_bytes,
        short_files = r.short_files.len(),
        millis = r.millis,
        "archive recovery done"
    );
    for f in &r.short_files {
        tracing::error!(file = %f, "segment is shorter than the index says: data lost outside vigil (see vigil check)");
    }
    Ok(())
}
