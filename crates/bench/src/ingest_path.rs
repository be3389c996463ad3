//! `vigil-bench ingest`: frames through vigil's ingest path beside a bare
//! rdkafka produce→consume loop, same broker, sizes and counts, same run.
//!
//! vigil's path: envelope + seq + byte-bounded buffer + publisher (one
//! idempotent producer per camera) → broker → `FrameReader` (decode,
//! reassembly, metrics). The bare loop: one producer with the same
//! exactly-once settings sending raw payloads, one consumer reading them.
//! Each round runs both on fresh topics; the best round of each is kept.

use anyhow::{Result, bail};
use bus::{Delivery, FrameReader, KafkaConfig, Metrics, TopicSpec};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use media::{Codec, Frame, FrameMeta, Stream};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};
use vigil::config::Settings;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Cameras (keys) sharing the traffic.
    #[arg(long, default_value_t = 4)]
    pub cameras: usize,
    /// Frames per run, all cameras together.
    #[arg(long, default_value_t = 4000)]
    pub frames: usize,
    /// Frame sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "16384,102400")]
    pub sizes: Vec<usize>,
    /// Rounds per size (bare and vigil alternate; the best of each counts).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

pub(crate) const PARTITIONS: i32 = 4;

pub async fn ingest(mut s: Settings, a: BenchArgs) -> Result<()> {
    if a.cameras == 0 || a.frames < a.cameras || a.rounds == 0 {
        bail!("bench needs at least one camera, one frame per camera and one round");
    }
    let dir = std::env::temp_dir().join(format!("vigil-bench-{}", std::process::id()));
    let _broker = start_broker(&mut s, &dir).await?;
    println!("broker: {}{}", s.kafka.brokers, if s.brokers.is_none() { " (embedded, SQLite)" } else { "" });
    println!(
        "{} frames per run over {} cameras, {} partitions, best of {} rounds\n",
        a.frames, a.cameras, PARTITIONS, a.rounds
    );
    println!("| frame size | bare loop msg/s | bare MB/s | vigil frames/s | vigil MB/s | ratio |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut run_id = 0;
    for &size in &a.sizes {
        let (mut bare_best, mut vigil_best) = (f64::MAX, f64::MAX);
        for round in 0..a.rounds {
            // Alternate which goes first, so neither always meets a
            // fresher broker; each run's topic is deleted after it.
            for vigil_turn in [round % 2 == 1, round % 2 == 0] {
                run_id += 1;
                let t = topic(&format!("bench.{}.{run_id}", std::process::id()));
                create(&s.kafka, &t).await?;
                if vigil_turn {
                    let seq_dir = dir.join(format!("seq{run_id}"));
                    vigil_best = vigil_best.min(vigil_path(&s.kafka, &t, a.frames, a.cameras, size, &seq_dir).await?);
                } else {
                    bare_best = bare_best.min(bare_loop(&s.kafka, &t, a.frames, a.cameras, size).await?);
                }
                delete(&s.kafka, &t).await;
            }
        }
        let (bare_rate, vigil_rate) = (a.frames as f64 / bare_best, a.frames as f64 / vigil_best);
        let mb = |r: f64| r * size as f64 / 1e6;
        println!(
            "| {} KiB | {:.0} | {:.1} | {:.0} | {:.1} | {:.2} |",
            size / 1024,
            bare_rate,
            mb(bare_rate),
            vigil_rate,
            mb(vigil_rate),
            vigil_rate / bare_rate
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The embedded broker in `dir`, unless `--brokers` names one.
pub(crate) async fn start_broker(s: &mut Settings, dir: &std::path::Path) -> Result<Option<broker::EmbeddedBroker>> {
    if s.brokers.is_some() {
        return Ok(None);
    }
    let b = broker::EmbeddedBroker::start(&broker::BrokerConfig {
        data_dir: dir.join("broker"),
        listen: free_port()?,
        maintenance_interval: Duration::from_secs(600),
    })
    .await?;
    s.kafka.brokers = b.addr().to_string();
    Ok(Some(b))
}

pub(crate) fn topic(name: &str) -> TopicSpec {
    TopicSpec {
        name: Box::leak(name.to_string().into_boxed_str()),
        key: "camera",
        content: "benchmark",
        delivery: Delivery::ExactlyOnce,
        partitions: PARTITIONS,
        retention_ms: Some(3_600_000),
    }
}

pub(crate) async fn create(k: &KafkaConfig, t: &TopicSpec) -> Result<()> {
    let mut k = k.clone();
    k.replication_factor = 1;
    k.ensure_topics(std::slice::from_ref(t)).await?;
    Ok(())
}

pub(crate) async fn delete(k: &KafkaConfig, t: &TopicSpec) {
    let opts = rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    match k.admin() {
        Ok(admin) => {
            if let Err(e) = admin.delete_topics(&[t.name], &opts).await {
                tracing::warn!(topic = t.name, error = %e, "cannot delete benchmark topic");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot delete benchmark topic"),
    }
}

pub(crate) fn free_port() -> Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub(crate) fn assign_from_start(k: &KafkaConfig, t: &TopicSpec) -> Result<StreamConsumer> {
    let c: StreamConsumer = k.consumer_config(Delivery::ExactlyOnce, "bench").create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(t.name, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    Ok(c)
}

/// Seconds from the first send to the last record consumed.
async fn bare_loop(k: &KafkaConfig, t: &TopicSpec, n: usize, cameras: usize, size: usize) -> Result<f64> {
    let consumer = assign_from_start(k, t)?;
    let producer = k.producer(Delivery::ExactlyOnce, 64 * 1024)?;
    let payload = vec![0x5a; size];
    let keys: Vec<String> = (0..cameras).map(|c| format!("cam{c}")).collect();
    let start = Instant::now();
    let consume = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            match tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await {
                Ok(Ok(_)) => got += 1,
                Ok(Err(e)) => tracing::warn!(error = %e, "bench consume"),
                Err(_) => return Err(anyhow::anyhow!("bare loop: consumer stalled at {got}/{n}")),
            }
        }
        Ok(start.elapsed().as_secs_f64())
    });
    let mut inflight = FuturesUnordered::new();
    for i in 0..n {
        loop {
            let rec = FutureRecord::to(t.name).key(&keys[i % cameras]).payload(&payload);
            match producer.send_result(rec) {
                Ok(f) => {
                    inflight.push(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    inflight.next().await;
                }
                Err((e, _)) => bail!("bare loop send: {e}"),
            }
        }
    }
    while inflight.next().await.is_some() {}
    tracing::debug!(secs = start.elapsed().as_secs_f64(), "bare loop: all acknowledged");
    consume.await?
}

async fn vigil_path(
    k: &KafkaConfig,
    t: &TopicSpec,
    n: usize,
    cameras: usize,
    size: usize,
    seq_dir: &std::path::Path,
) -> Result<f64> {
    let metrics = Metrics::default();
    let mut reader = FrameReader::assign(k, t, PARTITIONS, Offset::Beginning, &metrics)?;
    let start = Instant::now();
    let consume = tokio::spawn(async move {
        for got in 0..n {
            match tokio::time::timeout(Duration::from_secs(30), reader.next()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "bench consume"),
                Err(_) => return Err(anyhow::anyhow!("vigil path: reader stalled at {got}/{n}")),
            }
        }
        Ok(start.elapsed().as_secs_f64())
    });
    let publishing = publish(k, t, n, cameras, size, seq_dir, &metrics)?;
    let secs = consume.await??;
    publishing.await;
    Ok(secs)
}

/// Publishes `n` frames of `size` bytes from `cameras` cameras through
/// vigil's ingest path, as fast as it takes them; the future resolves when
/// all are acknowledged.
pub(crate) fn publish(
    k: &KafkaConfig,
    t: &TopicSpec,
    n: usize,
    cameras: usize,
    size: usize,
    seq_dir: &std::path::Path,
    metrics: &Metrics,
) -> Result<impl std::future::Future<Output = ()>> {
    let mut feeders = Vec::new();
    let producer = ingest::publish::SharedProducer::new(k, t.delivery, 64 * 1024)?;
    for c in 0..cameras {
        let camera = format!("cam{c}");
        let seq = ingest::seq::SeqCounter::open(seq_dir, &camera)?;
        let (mut tx, rx) = ingest::buffer::buffer(32 << 20, seq, metrics, &camera, t.name);
        let publisher = ingest::publish::Publisher::new(producer.clone(), t, &camera, None, None, metrics);
        let task = tokio::spawn(publisher.run(rx, Duration::from_secs(30)));
        let per_camera = n / cameras + usize::from(c < n % cameras);
        let feeder = std::thread::spawn(move || {
            let meta = FrameMeta {
                camera,
                stream: Stream::Main,
                codec: Codec::H264,
                seq: 0,
                capture_us: bus::now_us(),
                pts_90k: 0,
                key: true,
                discontinuity: false,
            };
            for _ in 0..per_camera {
                let frame = Frame { meta: meta.clone(), payload: vec![0x5a; size] };
                while tx.offer(frame.clone()).is_err() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        feeders.push((feeder, task));
    }
    Ok(async move {
        for (feeder, task) in feeders {
            let _ = tokio::task::spawn_blocking(move || feeder.join()).await;
            let _ = task.await;
        }
    })
}
