//! The loop every stage runs in: join the group, take partitions with
//! their checkpoints, consume, flush, checkpoint, hand partitions over,
//! restart.

use crate::checkpoint::{self, Checkpoint};
use crate::{Error, Input, Output, Source, Stage, StageSpec, Start, TRANSACTION_MAX, WORK_SLICE};
use bus::metrics::{Counter, Gauge, Histogram};
use bus::{Delivery, KafkaConfig, Metrics, Rebalance};
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
    rebalances: Counter,
    rejoins: Counter,
    assigned: Gauge,
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
    let topic_labels = [("stage", spec.name), ("topic", spec.input.name)];
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
        rebalances: metrics.counter(
            "vigil_stage_rebalances_total",
            "Partitions assigned to or revoked from this process by its group (each change counts once).",
            &topic_labels,
        ),
        rejoins: metrics.counter(
            "vigil_stage_rejoins_total",
            "Times this process left and rejoined its group because partitions were owned by no live member.",
            &topic_labels,
        ),
        assigned: metrics.gauge(
            "vigil_stage_assigned_partitions",
            "Input partitions this process owns now.",
            &topic_labels,
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

/// Where each of `partitions` starts: the later of its checkpoint and the
/// stage's own stored offset, else the start policy.
fn starts<T>(
    spec: &StageSpec,
    partitions: &[i32],
    saved: &BTreeMap<i32, Checkpoint<T>>,
    stored: &BTreeMap<i32, i64>,
    marks: &BTreeMap<i32, (i64, i64)>,
) -> BTreeMap<i32, i64> {
    // At-most-once inputs are never replayed: they start at the end.
    let live = spec.input.delivery == Delivery::AtMostOnce;
    partitions
        .iter()
        .map(|&p| {
            let checkpointed = saved.get(&p).and_then(|c| c.offsets.get(spec.input.name)).copied();
            let stored = checkpointed.max(stored.get(&p).copied());
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

/// The partitions this process owns now.
#[derive(Default)]
struct Owned {
    /// Per partition, the source's position as of the last checkpoint (the
    /// offset stored may be held back further by the stage).
    position: BTreeMap<i32, i64>,
    /// Per partition, the checkpoint last written, not to write it again.
    stored: BTreeMap<i32, Vec<u8>>,
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
    // process of this member, so its open transaction is aborted before
    // any checkpoint is read.
    let mut outputs = spec.outputs.clone();
    outputs.push(spec.state.name.to_string());
    let txn_id = spec.transactions.then(|| format!("vigil-{}/{}/{}", spec.name, spec.instance, spec.member));
    let mut out = Output::new(kafka, outputs, txn_id.as_deref(), stop.clone())?;
    let mut source = S::Source::subscribe(kafka, &spec.input, spec.group, metrics)?;
    tracing::info!(stage = spec.name, instance = %spec.instance, group = spec.group, "stage joining its group on {}", spec.input.name);
    let mut owned = Owned::default();
    c.assigned.set(0.0);
    let (orphans_tx, mut orphans) = tokio::sync::watch::channel((Vec::new(), false));
    let _watcher = AbortOnDrop(tokio::spawn(watch_members(spec.clone(), kafka.clone(), orphans_tx)));
    // Since when partitions have been owned by no live member, as far as
    // this process acts on it (see `bus::group::unowned`).
    let mut orphaned_since: Option<Instant> = None;
    let grace = Duration::from_millis(kafka.group.session_timeout_ms.into());
    let mut reported = Instant::now();
    let mut last = Instant::now();
    let mut wait = IDLE;
    // The stage's own work (`Stage::work`): whether some remains, when it
    // last had a turn, and whether input is paused because it is full.
    let (mut busy, mut worked, mut paused) = (true, Instant::now(), false);
    while !stop.load(Ordering::Relaxed) {
        let full = stage.full();
        if full != paused {
            source.pause(full)?;
            paused = full;
        }
        if paused && busy {
            // Nothing is fetched: serve the group, then work at once.
            wait = Duration::ZERO;
        }
        match tokio::time::timeout(wait, source.next()).await {
            Ok(Ok(Input::Item(input))) => {
                stage.on_input(input, &mut out).await?;
                c.inputs.inc();
                busy = true;
                // More inputs go in at once only while they are waiting.
                wait = Duration::ZERO;
                if stage.checkpoint_due() {
                    checkpoint(spec, stage, &source, &mut out, &mut owned).await?;
                    c.checkpoints.inc();
                    last = Instant::now();
                }
            }
            Ok(Ok(Input::Rebalance(Rebalance::Assigned(partitions)))) => {
                assign(spec, kafka, stage, &mut source, &mut owned, &partitions).await?;
                // Whatever librdkafka kept of the pause across the
                // rebalance, the whole assignment follows the stage now.
                paused = stage.full();
                source.pause(paused)?;
                busy = true;
                orphaned_since = None;
                c.rebalances.inc();
                c.assigned.set(owned.position.len() as f64);
                report(spec, &mut out, &owned)?;
                reported = Instant::now();
            }
            Ok(Ok(Input::Rebalance(Rebalance::Revoked { partitions, lost }))) => {
                if lost {
                    tracing::warn!(
                        stage = spec.name,
                        ?partitions,
                        "the group dropped this member: its partitions move without a checkpoint from here"
                    );
                    out.abandon();
                } else {
                    checkpoint(spec, stage, &source, &mut out, &mut owned).await?;
                    c.checkpoints.inc();
                }
                for p in &partitions {
                    stage.revoke(*p);
                    owned.position.remove(p);
                    owned.stored.remove(p);
                }
                source.release(&partitions)?;
                orphaned_since = None;
                tracing::info!(stage = spec.name, ?partitions, "partitions released");
                c.rebalances.inc();
                c.assigned.set(owned.position.len() as f64);
                report(spec, &mut out, &owned)?;
                reported = Instant::now();
                last = Instant::now();
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                stage.flush(&mut out).await?;
                busy = stage.work(&mut out).await?;
                worked = Instant::now();
                wait = if busy { Duration::ZERO } else { IDLE };
            }
        }
        // A stream of inputs does not starve the stage's own work.
        if busy && worked.elapsed() >= WORK_SLICE {
            busy = stage.work(&mut out).await?;
            worked = Instant::now();
        }
        if orphans.has_changed().unwrap_or(false) {
            let (unowned, first) = orphans.borrow_and_update().clone();
            orphaned_since = match (unowned.is_empty() || !first, orphaned_since) {
                (true, _) => None,
                (false, since) => since.or(Some(Instant::now())),
            };
        }
        if orphaned_since.is_some_and(|t| t.elapsed() >= grace) {
            // The group left partitions with a member that is gone (tansu
            // 0.6 does, when the group's leader dies): leave and join again,
            // so the group deals every partition anew.
            tracing::warn!(
                stage = spec.name,
                group = spec.group,
                "partitions of {} are owned by no live member: rejoining the group",
                spec.input.name
            );
            checkpoint(spec, stage, &source, &mut out, &mut owned).await?;
            for p in std::mem::take(&mut owned).position.into_keys() {
                stage.revoke(p);
            }
            drop(source);
            source = S::Source::subscribe(kafka, &spec.input, spec.group, metrics)?;
            // A fresh member fetches until the stage says it is full.
            paused = false;
            orphaned_since = None;
            c.rejoins.inc();
            c.assigned.set(0.0);
            report(spec, &mut out, &owned)?;
            last = Instant::now();
        }
        if reported.elapsed() >= bus::group::MEMBER_REPORT_INTERVAL {
            report(spec, &mut out, &owned)?;
            reported = Instant::now();
        }
        if last.elapsed() >= spec.checkpoint_interval {
            let started = Instant::now();
            checkpoint(spec, stage, &source, &mut out, &mut owned).await?;
            c.checkpoints.inc();
            c.checkpoint_seconds.observe(started.elapsed().as_secs_f64());
            last = Instant::now();
        }
    }
    report(spec, &mut out, &Owned::default())?;
    checkpoint(spec, stage, &source, &mut out, &mut owned).await?;
    c.checkpoints.inc();
    c.assigned.set(0.0);
    // Dropping the source leaves the group: its partitions move at once.
    Ok(())
}

/// This process's name in its group's reports.
fn member_name(spec: &StageSpec) -> String {
    if spec.member.is_empty() { format!("pid-{}", std::process::id()) } else { spec.member.clone() }
}

/// Reads the group's member reports every report interval and tells the
/// loop which input partitions no live member owns, and whether this
/// process is the one to act.
async fn watch_members(spec: StageSpec, kafka: KafkaConfig, tx: tokio::sync::watch::Sender<(Vec<i32>, bool)>) {
    let me = member_name(&spec);
    loop {
        tokio::time::sleep(bus::group::MEMBER_REPORT_INTERVAL).await;
        let k = kafka.clone();
        let read = tokio::task::spawn_blocking(move || bus::group::read_members(&k, 1, Duration::from_secs(3))).await;
        let Ok(Ok(reports)) = read else { continue }; // no verdict this time
        let verdict = bus::group::unowned(
            &reports,
            spec.group,
            spec.input.name,
            spec.input.partitions,
            &me,
            bus::now_us() / 1000,
        );
        if tx.send(verdict).is_err() {
            return;
        }
    }
}

/// Ends a task when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Tells `vigil topics` (through `vigil.members`) which partitions this
/// process owns now. Best effort: nothing waits for it.
fn report(spec: &StageSpec, out: &mut Output, owned: &Owned) -> Result<(), Error> {
    let r = bus::group::MemberReport {
        group: spec.group.to_string(),
        member: member_name(spec),
        stage: spec.name.to_string(),
        topic: spec.input.name.to_string(),
        partitions: owned.position.keys().copied().collect(),
        at_ms: bus::now_us() / 1000,
    };
    let payload = serde_json::to_vec(&r).map_err(|e| Error::Config(format!("member report: {e}")))?;
    out.send_untracked(bus::topics::MEMBERS, &r.key(), &payload);
    Ok(())
}

/// Reads the checkpoints of newly assigned partitions, hands the stage
/// their state and starts reading them where it stopped.
async fn assign<S: Stage>(
    spec: &StageSpec,
    kafka: &KafkaConfig,
    stage: &mut S,
    source: &mut S::Source,
    owned: &mut Owned,
    partitions: &[i32],
) -> Result<(), Error> {
    let (k, state_topic, instance, input) =
        (kafka.clone(), spec.state.clone(), spec.instance.clone(), spec.input.name.to_string());
    let parts = partitions.to_vec();
    let (mut saved, marks) = tokio::task::spawn_blocking(move || {
        // The state topic as it is on the broker (its partition count may
        // differ from the plan's).
        let counts = k.partition_counts(&[state_topic.name.to_string()])?;
        let state_topic = bus::TopicSpec {
            partitions: counts.get(state_topic.name).copied().unwrap_or(state_topic.partitions),
            ..state_topic
        };
        let saved = checkpoint::read::<S::State>(&k, &state_topic, &instance, &input, RESTORE_TIMEOUT)?;
        let marks = bus::range::watermarks(&k, &input, &parts)?;
        Ok::<_, bus::Error>((saved, marks))
    })
    .await
    .map_err(|e| Error::Config(format!("restore: {e}")))??;
    // A sink that owns its progress may be further on than the
    // checkpoint (it committed, then died before publishing), or behind
    // it (another member's store took the partition on meanwhile).
    let mut stored = BTreeMap::new();
    for &p in partitions {
        if let Some(o) = stage.stored_offset(p).await? {
            stored.insert(p, o);
        }
    }
    let at = starts(spec, partitions, &saved, &stored, &marks);
    for (&p, &o) in &at {
        stage.assign(p, saved.remove(&p).map(|c| c.state)).await?;
        owned.position.insert(p, o);
    }
    tracing::info!(stage = spec.name, instance = %spec.instance, from = ?at, "partitions assigned");
    let from: HashMap<i32, Offset> = at.iter().map(|(&p, &o)| (p, Offset::Offset(o))).collect();
    source.start(&from)?;
    Ok(())
}

/// Flushes the stage, waits for every output so far, then stores each
/// owned partition's state with its offset (unchanged ones are not
/// written again). With transactions the records, the checkpoint and the
/// offsets commit together instead. A member the group has dropped
/// writes nothing: it restarts and rejoins.
async fn checkpoint<S: Stage>(
    spec: &StageSpec,
    stage: &mut S,
    source: &S::Source,
    out: &mut Output,
    owned: &mut Owned,
) -> Result<(), Error> {
    stage.flush(out).await?;
    if !out.transactional() {
        out.wait_delivered().await?;
    }
    let lost = || {
        Error::Bus(bus::Error::Other(format!(
            "{}: the group dropped this member (session expired); rejoining without a checkpoint",
            spec.group
        )))
    };
    if source.assignment_lost() {
        return Err(lost());
    }
    let positions = source.resume_offsets();
    let mut offsets = TopicPartitionList::new();
    let mut written = Vec::new();
    let mut states = Vec::new();
    for (&p, offset) in owned.position.iter_mut() {
        let (state, hold) = stage.checkpoint(p);
        if let Some(&o) = positions.get(&p) {
            *offset = o;
        }
        states.push((p, state, hold.map_or(*offset, |h| h.min(*offset))));
    }
    // A sink's own store first: the checkpoint never runs ahead of it.
    stage.commit(&states.iter().map(|&(p, _, resume)| (p, resume)).collect()).await?;
    // A slow commit may outlast the session: then another member may own
    // the partitions already, and this one's checkpoint must not land.
    if source.assignment_lost() {
        return Err(lost());
    }
    for (p, state, resume) in states {
        let cp = Checkpoint { offsets: BTreeMap::from([(spec.input.name.to_string(), resume)]), state };
        let bytes = serde_json::to_vec(&cp).map_err(|e| Error::Config(format!("{} state: {e}", spec.name)))?;
        if owned.stored.get(&p) != Some(&bytes) {
            let key = checkpoint::key(&spec.instance, p);
            out.send(spec.state.name, &key, &key, &bytes).await?;
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
    owned.stored.extend(written);
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
            member: "m".into(),
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
            let at = starts(&spec(d, start), &[0, 1, 2], &saved, &BTreeMap::new(), &marks);
            assert_eq!(at, BTreeMap::from(want), "{d:?} {start:?}");
        }
        // A sink's own offsets: the later of them and the checkpoint wins.
        let stored = BTreeMap::from([(0, 5), (1, 12)]);
        let at = starts(&spec(Delivery::ExactlyOnce, Start::Beginning), &[0, 1, 2], &saved, &stored, &marks);
        assert_eq!(at, BTreeMap::from([(0, 7), (1, 12), (2, 0)]));
        let stored = BTreeMap::from([(0, 9)]);
        let at = starts(&spec(Delivery::ExactlyOnce, Start::End), &[0], &saved, &stored, &marks);
        assert_eq!(at, BTreeMap::from([(0, 9)]));
    }
}
