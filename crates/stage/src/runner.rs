//! The loop every stage runs in: restore, consume, flush, checkpoint,
//! restart.

use crate::checkpoint::{self, Checkpoint};
use crate::{Error, Output, Source, Stage, StageSpec, Start, TRANSACTION_MAX};
use bus::metrics::{Counter, Histogram};
use bus::{Delivery, KafkaConfig, Metrics};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long the loop waits for an input before it flushes the stage.
const IDLE: Duration = Duration::from_millis(200);
/// How long reading the checkpoints on start may take.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(30);

struct Counters {
    inputs: Counter,
    checkpoints: Counter,
    checkpoint_seconds: Histogram,
    restarts: Counter,
}

/// Runs the stage built by `make` until `shutdown` resolves, on a thread of
/// its own, restarting it from its last checkpoint after errors a retry may
/// cure; returns the first error that none cures. `make` is called again
/// for every restart: a stage that failed half-way is never reused.
pub async fn run<S, F>(
    spec: StageSpec,
    kafka: KafkaConfig,
    metrics: Metrics,
    make: F,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error>
where
    S: Stage,
    F: FnMut() -> Result<S, Error> + Send + 'static,
{
    if spec.transactions && spec.checkpoint_interval > TRANSACTION_MAX {
        // The broker aborts a transaction open longer than its timeout.
        return Err(Error::Config(format!(
            "with transactions the checkpoint interval must be at most {} s (it is one transaction)",
            TRANSACTION_MAX.as_secs()
        )));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let flag = stop.clone();
    let name = spec.name;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Config(format!("cannot start the {name} stage's runtime: {e}")))
                .and_then(|rt| rt.block_on(supervise(spec, kafka, metrics, make, flag)));
            let _ = done_tx.send(result);
        })
        .map_err(|e| Error::Config(format!("cannot start the {name} stage's thread: {e}")))?;
    let panicked = || Err(Error::Config(format!("the {name} stage's thread panicked")));
    tokio::pin!(shutdown);
    tokio::select! {
        r = &mut done_rx => return r.unwrap_or_else(|_| panicked()),
        _ = &mut shutdown => stop.store(true, Ordering::Relaxed),
    }
    done_rx.await.unwrap_or_else(|_| panicked())
}

async fn supervise<S: Stage>(
    spec: StageSpec,
    kafka: KafkaConfig,
    metrics: Metrics,
    mut make: impl FnMut() -> Result<S, Error>,
    stop: Arc<AtomicBool>,
) -> Result<(), Error> {
    let labels = [("stage", spec.name)];
    let c = Counters {
        inputs: metrics.counter("vigil_stage_inputs_total", "Inputs (frames or records) a stage consumed.", &labels),
        checkpoints: metrics.counter(
            "vigil_stage_checkpoints_total",
            "Checkpoints a stage stored (with transactions: transactions committed).",
            &labels,
        ),
        checkpoint_seconds: metrics.histogram(
            "vigil_stage_checkpoint_seconds",
            "How long a checkpoint took: flush, every output acknowledged, state stored.",
            &labels,
            &bus::metrics::latency_buckets(),
        ),
        restarts: metrics.counter(
            "vigil_stage_restarts_total",
            "Times a stage restarted from its last checkpoint after an error.",
            &labels,
        ),
    };
    let mut backoff = Duration::from_millis(500);
    loop {
        let result = match make() {
            Ok(mut stage) => run_once(&spec, &kafka, &metrics, &mut stage, &stop, &c).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(e) if !e.retry() => return Err(e),
            // Stopping: what followed the last checkpoint is done again on
            // the next start; nothing to restart now.
            Err(e) if stop.load(Ordering::Relaxed) => {
                tracing::warn!(stage = spec.name, error = %e, "stopped without a final checkpoint; the next start resumes from the one before");
                return Ok(());
            }
            Err(e) => {
                tracing::error!(stage = spec.name, error = %e, "stage failed; restarting from its last checkpoint");
                c.restarts.inc();
                let until = Instant::now() + backoff;
                while Instant::now() < until {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Where each input partition starts: its checkpoint, else the start policy.
fn starts<T>(
    spec: &StageSpec,
    saved: &BTreeMap<i32, Checkpoint<T>>,
    marks: &BTreeMap<i32, (i64, i64)>,
) -> BTreeMap<i32, i64> {
    // At-most-once inputs are never replayed: they start at the end.
    let live = spec.input.delivery == Delivery::AtMostOnce;
    (0..spec.input.partitions)
        .map(|p| {
            let stored = saved.get(&p).and_then(|c| c.offsets.get(spec.input.name)).copied();
            let (low, high) = marks.get(&p).copied().unwrap_or((0, 0));
            let at = match (stored, live, spec.start) {
                (Some(o), false, _) => o,
                (_, true, _) | (None, _, Start::End) => high,
                (None, _, Start::Beginning) => low,
            };
            (p, at)
        })
        .collect()
}

async fn run_once<S: Stage>(
    spec: &StageSpec,
    kafka: &KafkaConfig,
    metrics: &Metrics,
    stage: &mut S,
    stop: &Arc<AtomicBool>,
    c: &Counters,
) -> Result<(), Error> {
    // The producer first: with transactions, making it fences an older
    // process of this instance, so no checkpoint lands after the read below.
    let mut outputs = spec.outputs.clone();
    outputs.push(spec.state.name.to_string());
    let txn_id = spec.transactions.then(|| format!("vigil-{}/{}", spec.name, spec.instance));
    let mut out = Output::new(kafka, outputs, txn_id.as_deref(), stop.clone())?;
    let (k, state_topic, instance, input) =
        (kafka.clone(), spec.state.clone(), spec.instance.clone(), spec.input.name.to_string());
    let partitions: Vec<i32> = (0..spec.input.partitions).collect();
    let (mut saved, marks) = tokio::task::spawn_blocking(move || {
        // The state topic as it is on the broker (its partition count may
        // differ from the plan's).
        let counts = k.partition_counts(&[state_topic.name.to_string()])?;
        let state_topic = bus::TopicSpec {
            partitions: counts.get(state_topic.name).copied().unwrap_or(state_topic.partitions),
            ..state_topic
        };
        let saved = checkpoint::read::<S::State>(&k, &state_topic, &instance, &input, RESTORE_TIMEOUT)?;
        let marks = bus::range::watermarks(&k, &input, &partitions)?;
        Ok::<_, bus::Error>((saved, marks))
    })
    .await
    .map_err(|e| Error::Config(format!("restore: {e}")))??;
    // Per partition, the source's position as of the last checkpoint (the
    // offset stored may be held back further by the stage).
    let mut position = starts(spec, &saved, &marks);
    for &p in position.keys() {
        stage.restore(p, saved.remove(&p).map(|c| c.state));
    }
    tracing::info!(stage = spec.name, instance = %spec.instance, from = ?position, "stage reading {}", spec.input.name);
    let from: HashMap<i32, Offset> = position.iter().map(|(&p, &o)| (p, Offset::Offset(o))).collect();
    let mut source = S::Source::open(kafka, &spec.input, spec.group, &from, metrics)?;
    let mut stored: BTreeMap<i32, Vec<u8>> = BTreeMap::new();
    let mut last = Instant::now();
    let mut wait = IDLE;
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(wait, source.next()).await {
            Ok(input) => {
                stage.on_input(input?, &mut out)?;
                c.inputs.inc();
                // More inputs go in at once only while they are waiting.
                wait = Duration::ZERO;
            }
            Err(_) => {
                stage.flush(&mut out)?;
                wait = IDLE;
            }
        }
        if last.elapsed() >= spec.checkpoint_interval {
            let started = Instant::now();
            checkpoint(spec, stage, &source, &mut out, &mut position, &mut stored).await?;
            c.checkpoints.inc();
            c.checkpoint_seconds.observe(started.elapsed().as_secs_f64());
            last = Instant::now();
        }
    }
    checkpoint(spec, stage, &source, &mut out, &mut position, &mut stored).await?;
    c.checkpoints.inc();
    Ok(())
}

/// Flushes the stage, waits for every output so far, then stores each
/// partition's state with its offset (unchanged ones are not written
/// again). With transactions the records, the checkpoint and the offsets
/// commit together instead.
async fn checkpoint<S: Stage>(
    spec: &StageSpec,
    stage: &mut S,
    source: &S::Source,
    out: &mut Output,
    position: &mut BTreeMap<i32, i64>,
    stored: &mut BTreeMap<i32, Vec<u8>>,
) -> Result<(), Error> {
    stage.flush(out)?;
    if !out.transactional() {
        out.wait_delivered().await?;
    }
    let positions = source.resume_offsets();
    let mut offsets = TopicPartitionList::new();
    let mut written = Vec::new();
    for (&p, offset) in position.iter_mut() {
        let (state, hold) = stage.checkpoint(p);
        if let Some(&o) = positions.get(&p) {
            *offset = o;
        }
        let resume = hold.map_or(*offset, |h| h.min(*offset));
        let cp = Checkpoint { offsets: BTreeMap::from([(spec.input.name.to_string(), resume)]), state };
        let bytes = serde_json::to_vec(&cp).map_err(|e| Error::Config(format!("{} state: {e}", spec.name)))?;
        if stored.get(&p) != Some(&bytes) {
            let key = checkpoint::key(&spec.instance, p);
            out.send(spec.state.name, &key, &key, &bytes)?;
            written.push((p, bytes));
        }
        offsets
            .add_partition_offset(spec.input.name, p, Offset::Offset(resume))
            .map_err(|e| Error::Transaction(format!("offsets: {e}")))?;
    }
    if out.transactional() {
        let group = source.group_metadata().ok_or_else(|| Error::Transaction("the reader has no group".into()))?;
        out.commit_transaction(&offsets, &group)?;
    } else {
        out.wait_delivered().await?;
        for e in offsets.elements() {
            if let Offset::Offset(o) = e.offset() {
                let _ = source.commit(e.partition(), o); // lag metrics only
            }
        }
    }
    stored.extend(written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(delivery: Delivery, start: Start) -> StageSpec {
        let input = bus::TopicSpec { name: "in", key: "k", content: "", delivery, partitions: 3, retention_ms: None };
        StageSpec {
            name: "t",
            instance: "t".into(),
            group: "g",
            input: input.clone(),
            outputs: vec![],
            state: input,
            start,
            checkpoint_interval: Duration::from_secs(1),
            transactions: false,
        }
    }

    #[test]
    fn where_partitions_start() {
        let saved = BTreeMap::from([(0, Checkpoint { offsets: BTreeMap::from([("in".to_string(), 7)]), state: () })]);
        let marks = BTreeMap::from([(0, (2, 20)), (1, (3, 30)), (2, (0, 0))]);
        let cases = [
            (Delivery::ExactlyOnce, Start::End, [(0, 7), (1, 30), (2, 0)]),
            (Delivery::ExactlyOnce, Start::Beginning, [(0, 7), (1, 3), (2, 0)]),
            // A live input is never replayed, checkpoint or not.
            (Delivery::AtMostOnce, Start::Beginning, [(0, 20), (1, 30), (2, 0)]),
        ];
        for (d, start, want) in cases {
            assert_eq!(starts(&spec(d, start), &saved, &marks), BTreeMap::from(want), "{d:?} {start:?}");
        }
    }
}
