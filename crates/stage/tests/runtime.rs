//! The runtime against the embedded broker, with a stage that keeps a
//! running total per key and buffers its inputs until it is flushed:
//! - failing twice on purpose mid-interval (unflushed inputs,
//!   unacknowledged outputs), it restarts from its checkpoints;
//! - as two group members, one joining mid-stream and the other leaving,
//!   partitions move with their buffered inputs flushed and checkpointed.
//!
//! Either way every input's output exists, every copy of an output is
//! byte-identical to the first (state and offsets restored together), and
//! the final totals are the sums of the inputs.

use bus::{Delivery, KafkaConfig, Metrics, Reader, Record, TopicSpec};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use stage::{Error, Output, Stage, StageSpec, Start};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const INPUTS: usize = 400;

fn topic(name: &'static str, delivery: Delivery, partitions: i32, retention_ms: Option<i64>) -> TopicSpec {
    TopicSpec { name, key: "key", content: "test", delivery, partitions, retention_ms }
}

#[derive(Default, Serialize, Deserialize)]
struct Totals(BTreeMap<String, i64>);

struct Sum {
    totals: HashMap<i32, Totals>,
    buffered: Vec<Record>,
    /// Fail at the 20th input after this (well into a burst: outputs sent
    /// since the last checkpoint, inputs buffered).
    fail_at: Option<Instant>,
    inputs_since: usize,
    /// Time each input takes: inputs then wait, so rebalances land while
    /// some are buffered.
    slow: Duration,
}

impl Stage for Sum {
    type State = Totals;
    type Source = Reader;

    async fn assign(&mut self, partition: i32, state: Option<Totals>) -> Result<(), Error> {
        self.totals.insert(partition, state.unwrap_or_default());
        Ok(())
    }

    fn revoke(&mut self, partition: i32) {
        self.totals.remove(&partition);
        self.buffered.retain(|r| r.partition != partition);
    }

    async fn on_input(&mut self, r: Record, out: &mut Output) -> Result<(), Error> {
        if self.fail_at.is_some_and(|t| Instant::now() >= t) {
            self.inputs_since += 1;
            if self.inputs_since >= 20 {
                return Err(Error::transient("injected failure"));
            }
        }
        std::thread::sleep(self.slow);
        self.buffered.push(r);
        // Batches of 7: some outputs go out between checkpoints, some
        // inputs wait in the buffer.
        if self.buffered.len() >= 7 { self.flush(out).await } else { Ok(()) }
    }

    async fn flush(&mut self, out: &mut Output) -> Result<(), Error> {
        for r in std::mem::take(&mut self.buffered) {
            let key = String::from_utf8(r.key.clone().unwrap_or_default()).unwrap();
            let n: i64 = std::str::from_utf8(&r.payload).unwrap().parse().unwrap();
            let total = self.totals.entry(r.partition).or_default().0.entry(key.clone()).or_default();
            *total += n;
            let id = format!("{}/{}", r.partition, r.offset);
            out.send("stage-test.out", &key, &id, format!("{key}={total}").as_bytes()).await?;
        }
        Ok(())
    }

    fn checkpoint(&mut self, partition: i32) -> (Totals, Option<i64>) {
        (Totals(self.totals.get(&partition).map(|t| t.0.clone()).unwrap_or_default()), None)
    }
}

/// Every output record: (id header, payload).
fn outputs(kafka: &KafkaConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let range = bus::range::Range::all("stage-test.out", Delivery::ExactlyOnce, 2, Duration::from_secs(20));
    bus::range::read(kafka, &range, |m| {
        let id = bus::reader::record_id(m).unwrap_or_default().to_string();
        out.push((id, String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()));
    })
    .unwrap();
    out
}

struct Setup {
    dir: std::path::PathBuf,
    broker: broker::EmbeddedBroker,
    kafka: KafkaConfig,
    spec: StageSpec,
    feeder: tokio::task::JoinHandle<()>,
    sums: BTreeMap<String, i64>,
}

/// A broker, the topics, and inputs arriving over ~8 s from now.
async fn setup(name: &str) -> Setup {
    let _ = tracing_subscriber::fmt().with_env_filter("info,librdkafka=warn,rdkafka=warn,tansu=warn").try_init();
    let dir = std::env::temp_dir().join(format!("vigil-stage-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let broker = broker::EmbeddedBroker::start(&broker::BrokerConfig {
        data_dir: dir.clone(),
        listen,
        maintenance_interval: Duration::from_secs(60),
    })
    .await
    .unwrap();
    let mut kafka = KafkaConfig::new(broker.addr().to_string());
    kafka.replication_factor = 1;
    let input = topic("stage-test.in", Delivery::ExactlyOnce, 2, Some(3_600_000));
    let plan = [
        input.clone(),
        topic("stage-test.out", Delivery::ExactlyOnce, 2, Some(3_600_000)),
        topic("stage-test.state", Delivery::LastValue, 1, None),
        topic(bus::topics::MEMBERS, Delivery::LastValue, 1, None),
    ];
    kafka.ensure_topics(&plan).await.unwrap();
    let mut sums: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..INPUTS {
        *sums.entry(["a", "b", "c", "d", "e"][i % 5].into()).or_default() += i as i64;
    }
    let producer: FutureProducer = kafka.producer(Delivery::ExactlyOnce, 1024).unwrap();
    // In bursts of 100 every 2 s: a burst is read back to back, so inputs
    // sit in the stage's buffer for a while.
    let feeder = tokio::spawn(async move {
        for i in 0..INPUTS {
            let (key, payload) = (["a", "b", "c", "d", "e"][i % 5], i.to_string());
            let record = FutureRecord::to("stage-test.in").key(key).payload(&payload);
            producer.send(record, Duration::from_secs(10)).await.unwrap();
            if i % 100 == 99 {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    });
    let spec = StageSpec {
        name: "sum",
        instance: "stage-test".into(),
        member: "one".into(),
        group: "stage-test",
        input,
        outputs: vec!["stage-test.out".into()],
        state: plan[2].clone(),
        start: Start::Beginning,
        checkpoint_interval: Duration::from_secs(1),
        transactions: false,
    };
    Setup { dir, broker, kafka, spec, feeder, sums }
}

/// Waits until every input has its output.
async fn wait_all(kafka: &KafkaConfig) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let k = kafka.clone();
        let got = tokio::task::spawn_blocking(move || outputs(&k)).await.unwrap();
        let ids: std::collections::BTreeSet<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
        if ids.len() >= INPUTS {
            return;
        }
        assert!(Instant::now() < deadline, "only {} of {INPUTS} outputs after 90 s", ids.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every input's output once after dedupe, copies identical, totals exact;
/// returns how many copies were dropped.
async fn verify(s: Setup) -> usize {
    s.feeder.await.unwrap();
    let k = s.kafka.clone();
    let got = tokio::task::spawn_blocking(move || outputs(&k)).await.unwrap();
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    let mut dedupe = bus::dedupe::Dedupe::default();
    let mut repeats = 0;
    for (id, payload) in &got {
        if dedupe.take(id) {
            first.insert(id.clone(), payload.clone());
        } else {
            repeats += 1;
            assert_eq!(&first[id], payload, "a repeat of {id} differs from the first copy");
        }
    }
    assert_eq!(first.len(), INPUTS, "one output per input, after dedupe");
    // The last total of each key is the sum of its inputs.
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for (_, p) in &got {
        let (k, v) = p.split_once('=').unwrap();
        let v: i64 = v.parse().unwrap();
        let e = last.entry(k.to_string()).or_default();
        *e = (*e).max(v);
    }
    assert_eq!(last, s.sums);
    drop(s.broker);
    let _ = std::fs::remove_dir_all(&s.dir);
    repeats
}

fn sum_stage(fail_at: Option<Instant>, slow: Duration) -> Sum {
    Sum { totals: HashMap::new(), buffered: Vec::new(), fail_at, inputs_since: 0, slow }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_restarted_twice_produces_every_output_once_after_dedupe() {
    let s = setup("restarts").await;
    let builds = Arc::new(AtomicUsize::new(0));
    let counted = builds.clone();
    // The first two fail 1.5 s into their run, 20 inputs into a burst:
    // after a checkpoint, with outputs acknowledged since it and inputs
    // still buffered.
    let make = move || {
        let fail_at =
            (counted.fetch_add(1, Ordering::SeqCst) < 2).then(|| Instant::now() + Duration::from_millis(1500));
        Ok(sum_stage(fail_at, Duration::ZERO))
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let metrics = Metrics::default();
    let run = tokio::spawn(stage::run(s.spec.clone(), s.kafka.clone(), metrics.clone(), make, async {
        let _ = stop_rx.await;
    }));
    wait_all(&s.kafka).await;
    let _ = stop_tx.send(());
    run.await.unwrap().unwrap();
    assert_eq!(builds.load(Ordering::SeqCst), 3, "failed twice, built three times");
    let text = metrics.render();
    assert!(text.contains("vigil_stage_restarts_total{stage=\"sum\"} 2"), "{text}");
    assert!(verify(s).await > 0, "the failures made the stage publish some outputs again");
}

/// Two members of one group: the second joins while the first has inputs
/// buffered, so the first must flush, wait for its outputs and checkpoint
/// before its partition moves; then the first leaves (a clean stop) and
/// the second takes everything from the first's last checkpoint. Fails if
/// the revocation skips the flush (the buffered inputs would be lost: the
/// checkpoint already counts them read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_move_between_members_with_nothing_lost() {
    let s = setup("group").await;
    let member = |name: &str, stop: tokio::sync::oneshot::Receiver<()>| {
        let spec = StageSpec { member: name.into(), ..s.spec.clone() };
        let metrics = Metrics::default();
        let run = stage::run(
            spec,
            s.kafka.clone(),
            metrics.clone(),
            || Ok(sum_stage(None, Duration::from_millis(18))),
            async {
                let _ = stop.await;
            },
        );
        (tokio::spawn(run), metrics)
    };
    let owned = |m: &Metrics| {
        let text = m.render();
        let series = "vigil_stage_assigned_partitions{stage=\"sum\",topic=\"stage-test.in\"} ";
        text.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
    };
    let (stop_one, rx) = tokio::sync::oneshot::channel::<()>();
    let (one, m1) = member("one", rx);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(owned(&m1), 2.0, "alone, the first owns both partitions");
    let (stop_two, rx) = tokio::sync::oneshot::channel::<()>();
    let (two, m2) = member("two", rx);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(owned(&m1) == 1.0 && owned(&m2) == 1.0) {
        assert!(Instant::now() < deadline, "not split: {} and {}", owned(&m1), owned(&m2));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop_one.send(());
    one.await.unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while owned(&m2) != 2.0 {
        assert!(Instant::now() < deadline, "the second did not take over: {}", owned(&m2));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_all(&s.kafka).await;
    let _ = stop_two.send(());
    two.await.unwrap().unwrap();
    let rebalances = |m: &Metrics| m.render().lines().filter(|l| l.starts_with("vigil_stage_rebalances_total")).count();
    assert!(rebalances(&m1) > 0 && rebalances(&m2) > 0);
    verify(s).await;
}
