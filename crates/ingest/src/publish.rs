//! Publishing one camera stream to its topic with the topic's policy.
//!
//! - exactly-once / at-least-once topics (`vigil.frames`): the idempotent
//!   producer never gives up on an accepted frame. When librdkafka's bounded
//!   queue is full (broker slow or away) the publisher waits, its buffer
//!   fills, and the camera drops (and counts) new frames. A delivery that
//!   fails anyway is sent again: the consumer dedupes by (camera, seq).
//! - at-most-once topics (`vigil.live`): a full queue or failed delivery
//!   drops the frame. Live video wants the newest frame, not an old one.

use crate::buffer::BufferReceiver;
use crate::ledger::{AckRun, Ledger};
use bus::metrics::{Counter, Metrics};
use bus::produce::InFlight;
use bus::{Delivery, KafkaConfig, TopicSpec};
use media::{Frame, FrameMeta};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a send waits after a refusal other than a full queue before
/// trying again (with the producer replaced if it failed fatally).
const RETRY_WAIT: Duration = Duration::from_millis(100);

/// Appends `camera stream seq partition offset` for every frame the broker
/// acknowledged: the ground truth crash tests compare the archive against.
#[derive(Clone)]
pub struct AckLog(Arc<Mutex<std::fs::File>>);

impl AckLog {
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(AckLog(Arc::new(Mutex::new(f))))
    }
    fn write(&self, lines: &str) {
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = f.write_all(lines.as_bytes()) {
            tracing::error!(error = %e, "cannot write the ack log");
        }
    }
}

/// One producer per topic, shared by every camera stream publishing to it
/// (fewer, fuller batches than a producer per camera), and replaced when it
/// fails fatally.
#[derive(Clone)]
pub struct SharedProducer {
    kafka: KafkaConfig,
    delivery: Delivery,
    buffer_kbytes: usize,
    current: Arc<Mutex<FutureProducer>>,
}

impl SharedProducer {
    /// `buffer_kbytes` bounds what librdkafka holds for this topic while
    /// the broker is slow or away.
    pub fn new(kafka: &KafkaConfig, delivery: Delivery, buffer_kbytes: usize) -> Result<Self, bus::Error> {
        Ok(SharedProducer {
            kafka: kafka.clone(),
            delivery,
            buffer_kbytes,
            current: Arc::new(Mutex::new(kafka.producer(delivery, buffer_kbytes)?)),
        })
    }

    fn get(&self) -> FutureProducer {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// An idempotent producer that hit a fatal error refuses all further
    /// sends: replace it (the consumer dedupes whatever is sent again).
    fn recover_if_fatal(&self) {
        let mut p = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((code, why)) = p.client().fatal_error() {
            tracing::error!(?code, why, "producer failed fatally, starting a new one");
            match self.kafka.producer(self.delivery, self.buffer_kbytes) {
                Ok(new) => *p = new,
                Err(e) => tracing::error!(error = %e, "cannot start a new producer"),
            }
        }
    }
}

/// One record on its way to the broker.
struct Outgoing {
    meta: Arc<FrameMeta>,
    last_chunk: bool,
    frame_len: usize,
    bytes: Vec<u8>,
}

pub struct Publisher {
    producer: SharedProducer,
    max_message_bytes: usize,
    topic: &'static str,
    delivery: Delivery,
    ack_log: Option<AckLog>,
    acked: Counter,
    acked_bytes: Counter,
    errors: Counter,
    retries: Counter,
    dropped: Counter,
    pending_acks: String,
    ledger: Option<Ledger>,
    run: AckRun,
    /// The run's end as the ledger last heard it.
    ledger_at: Option<u64>,
}

impl Publisher {
    /// `ledger` learns which frames the broker acknowledged.
    pub fn new(
        producer: SharedProducer,
        topic: &TopicSpec,
        camera: &str,
        ack_log: Option<AckLog>,
        ledger: Option<Ledger>,
        metrics: &Metrics,
    ) -> Self {
        let labels = [("camera", camera), ("topic", topic.name)];
        Publisher {
            max_message_bytes: producer.kafka.max_message_bytes,
            producer,
            topic: topic.name,
            delivery: topic.delivery,
            ack_log,
            acked: metrics.counter("vigil_ingest_frames_produced_total", "Frames the broker acknowledged.", &labels),
            acked_bytes: metrics.counter(
                "vigil_ingest_bytes_produced_total",
                "Frame payload bytes the broker acknowledged.",
                &labels,
            ),
            errors: metrics.counter("vigil_ingest_produce_errors_total", "Failed sends and deliveries.", &labels),
            retries: metrics.counter(
                "vigil_ingest_produce_retries_total",
                "Records sent again after a failed delivery.",
                &labels,
            ),
            dropped: metrics.counter(
                "vigil_ingest_dropped_frames_total",
                "Frames a camera produced that ingest did not accept, by reason.",
                &[("camera", camera), ("topic", topic.name), ("reason", "delivery-failed")],
            ),
            pending_acks: String::new(),
            ledger,
            run: AckRun::default(),
            ledger_at: None,
        }
    }

    /// Publishes until the buffer's sender is gone, then waits (at most
    /// `drain`) for outstanding deliveries.
    pub async fn run(mut self, mut rx: BufferReceiver, drain: Duration) {
        let mut inflight: InFlight<Outgoing> = InFlight::new();
        let mut retry: VecDeque<Outgoing> = VecDeque::new();
        let mut flush = tokio::time::interval(Duration::from_millis(200));
        loop {
            while let Some(out) = retry.pop_front() {
                self.send(out, &mut inflight, &mut retry).await;
            }
            tokio::select! {
                Some((out, res)) = inflight.next(), if !inflight.is_empty() => self.delivered(res, out, &mut retry),
                frame = rx.recv() => {
                    let Some(frame) = frame else { break };
                    let len = frame.payload.len();
                    for out in self.records(frame) {
                        self.send(out, &mut inflight, &mut retry).await;
                    }
                    rx.release(len);
                }
                _ = flush.tick() => self.flush_acks(),
            }
        }
        let deadline = tokio::time::Instant::now() + drain;
        while !(inflight.is_empty() && retry.is_empty()) {
            // A resend waits while the queue is full: within the deadline.
            let resent = match retry.pop_front() {
                Some(out) => tokio::time::timeout_at(deadline, self.send(out, &mut inflight, &mut retry)).await,
                None => Ok(()),
            };
            let next = match resent {
                Ok(()) => tokio::time::timeout_at(deadline, inflight.next()).await,
                Err(e) => Err(e),
            };
            match next {
                Ok(Some((out, res))) => self.delivered(res, out, &mut retry),
                Ok(None) => {}
                Err(_) => {
                    tracing::warn!(
                        topic = self.topic,
                        outstanding = inflight.len() + retry.len(),
                        "stopping with records not yet acknowledged"
                    );
                    break;
                }
            }
        }
        self.flush_acks();
    }

    fn records(&mut self, frame: Frame) -> Vec<Outgoing> {
        let frame_len = frame.payload.len();
        match media::split(&frame, self.max_message_bytes) {
            Ok(recs) => {
                let meta = Arc::new(frame.meta);
                let n = recs.len();
                self.run.sent(meta.seq, n as u32);
                recs.into_iter()
                    .enumerate()
                    .map(|(i, bytes)| Outgoing { meta: meta.clone(), last_chunk: i + 1 == n, frame_len, bytes })
                    .collect()
            }
            Err(e) => {
                tracing::error!(camera = %frame.meta.camera, seq = frame.meta.seq, error = %e, "cannot split frame");
                self.errors.inc();
                self.run.sent(frame.meta.seq, 0);
                self.run.give_up(frame.meta.seq);
                vec![]
            }
        }
    }

    async fn send(&mut self, out: Outgoing, inflight: &mut InFlight<Outgoing>, retry: &mut VecDeque<Outgoing>) {
        let mut producer = self.producer.get();
        loop {
            // The record's timestamp is the producer's clock, not the
            // camera's: broker retention counts from it, and a camera with a
            // wrong clock must not get its frames deleted on arrival.
            let rec = FutureRecord::to(self.topic).key(out.meta.camera.as_bytes()).payload(&out.bytes);
            let sent = if self.delivery == Delivery::AtMostOnce {
                inflight.try_send(&producer, rec)
            } else {
                // A full queue waits for the broker to take something: this
                // is what pushes back on the camera.
                inflight.send(&producer, rec, |done, res| self.delivered(res, done, retry)).await
            };
            let err = match sent {
                Ok(delivery) => {
                    inflight.track(out, delivery);
                    return;
                }
                Err(e) => e,
            };
            if self.delivery == Delivery::AtMostOnce {
                if out.last_chunk {
                    self.dropped.inc();
                }
                self.run.give_up(out.meta.seq);
                return;
            }
            self.errors.inc();
            tracing::warn!(topic = self.topic, error = %err, "send failed, retrying");
            tokio::time::sleep(RETRY_WAIT).await;
            self.producer.recover_if_fatal();
            producer = self.producer.get();
        }
    }

    fn delivered(&mut self, res: Result<(i32, i64), String>, out: Outgoing, retry: &mut VecDeque<Outgoing>) {
        match res {
            Ok((partition, offset)) => {
                self.run.chunk_done(out.meta.seq);
                if out.last_chunk {
                    self.acked.inc();
                    self.acked_bytes.add(out.frame_len as u64);
                    if self.ack_log.is_some() {
                        let m = &out.meta;
                        use std::fmt::Write;
                        let _ = writeln!(
                            self.pending_acks,
                            "{} {} {} {partition} {offset}",
                            m.camera,
                            m.stream.name(),
                            m.seq
                        );
                    }
                }
            }
            Err(e) => {
                self.errors.inc();
                if self.delivery == Delivery::AtMostOnce {
                    if out.last_chunk {
                        self.dropped.inc();
                    }
                    self.run.give_up(out.meta.seq);
                    return;
                }
                tracing::warn!(topic = self.topic, camera = %out.meta.camera, seq = out.meta.seq, error = %e, "delivery failed, sending again");
                self.retries.inc();
                self.producer.recover_if_fatal();
                retry.push_back(out);
            }
        }
    }

    /// Every 200 ms and at the end: the ack log, and the ledger's end of
    /// the acknowledged run (stale by at most that, which reports a few
    /// frames too many as lost; check only counts those absent).
    fn flush_acks(&mut self) {
        if let (Some(l), Some(end)) = (&self.ledger, self.run.end())
            && self.ledger_at != Some(end)
        {
            l.acked(end);
            self.ledger_at = Some(end);
        }
        if let Some(log) = &self.ack_log
            && !self.pending_acks.is_empty()
        {
            log.write(&self.pending_acks);
            self.pending_acks.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU time this thread has used (Linux: /proc/thread-self/schedstat).
    fn thread_cpu() -> Duration {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        Duration::from_nanos(s.split_whitespace().next().unwrap().parse().unwrap())
    }

    /// A queue filled by other cameras, and nothing of this camera's in
    /// flight: the send waits for room without burning a core. (A spinning
    /// send never yields, so it runs on a thread of its own, watched.)
    #[test]
    fn a_full_queue_with_nothing_in_flight_is_waited_on_not_spun() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let result = rt.block_on(async {
                // No broker answers here: nothing ever leaves the queue.
                let kafka = KafkaConfig::new("127.0.0.1:1");
                let shared = SharedProducer::new(&kafka, Delivery::ExactlyOnce, 1).unwrap();
                let filler = vec![0u8; 512];
                for _ in 0..100 {
                    if shared.get().send_result(FutureRecord::<[u8], [u8]>::to("t").payload(&filler)).is_err() {
                        break;
                    }
                }
                let topic = bus::topics::plan().into_iter().find(|t| t.name == bus::topics::FRAMES).unwrap();
                let mut p = Publisher::new(shared, &topic, "cam", None, None, &Metrics::default());
                let meta = Arc::new(FrameMeta {
                    camera: "cam".into(),
                    stream: media::Stream::Main,
                    codec: media::Codec::H264,
                    seq: 1,
                    capture_us: 1,
                    pts_90k: 0,
                    key: true,
                    discontinuity: false,
                });
                let out = Outgoing { meta, last_chunk: true, frame_len: 512, bytes: filler.clone() };
                let (mut inflight, mut retry) = (InFlight::new(), VecDeque::new());
                let before = thread_cpu();
                let sent = tokio::time::timeout(Duration::from_secs(1), p.send(out, &mut inflight, &mut retry)).await;
                (sent.is_err(), thread_cpu() - before)
            });
            let _ = done_tx.send(result);
        });
        let (waiting, used) = done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the send never yielded in 10 s: it spins on the full queue");
        assert!(waiting, "the queue stays full: the send keeps waiting");
        assert!(used < Duration::from_millis(300), "waiting used {used:?} of CPU in 1 s");
    }
}
