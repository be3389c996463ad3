//! The processor, a stage on the shared runtime (`crates/stage`):
//! `vigil.detections` → each camera's rules (`camera`) → rule and motion
//! events on `vigil.events` and per-minute counts on `vigil.counts`.
//!
//! Detections are keyed by camera, so one processor of the group holds a
//! camera's state; it is checkpointed per input partition with the
//! offset. Exactly-once effect: what a restarted processor (or the next
//! owner of a partition) publishes again after the last checkpoint is
//! the same records with the same ids (the state machines are
//! deterministic, ids derive from camera, rule, object and frame), which
//! consumers drop by id.

use crate::camera::{Camera, Hit};
use crate::drawn::Effective;
use crate::rules::{MOTION, Rules};
use crate::window::{Closed, WINDOW_US};
use bus::Record;
use bus::metrics::{Counter, Gauge, Metrics};
use schema::{Count, Detections, Event, RuleHit};
use serde::{Deserialize, Serialize};
use stage::Output;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ProcessConfig {
    /// Each camera's rules, by camera id.
    pub rules: BTreeMap<String, Rules>,
    /// How late (capture time) a frame may come before its minute's
    /// counts are closed without it.
    pub lateness: Duration,
    pub checkpoint_interval: Duration,
    pub transactions: bool,
    /// This process in the processors' group, stable across restarts.
    pub member: String,
}

/// What a processor checkpoints per partition of its input.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    pub cameras: BTreeMap<String, Camera>,
}

pub struct Processor {
    cfg: ProcessConfig,
    rules: Effective,
    partitions: BTreeMap<i32, PartitionState>,
    frames: Counter,
    garbage: Counter,
    late: Counter,
    delay: Gauge,
    events: Metrics,
    metrics: Metrics,
}

impl Processor {
    /// `follow`: where to follow the rules drawn in the web app
    /// (`vigil.rules`); none: the config file's only.
    pub fn new(cfg: ProcessConfig, follow: Option<bus::KafkaConfig>, metrics: &Metrics) -> Self {
        Processor {
            rules: Effective::new(cfg.rules.clone(), follow),
            metrics: metrics.clone(),
            delay: metrics.gauge(
                "vigil_process_delay_seconds",
                "Capture time to processing of the newest frame taken (the processor's lag behind the cameras).",
                &[],
            ),
            frames: metrics.counter(
                "vigil_process_frames_total",
                "Analysed frames taken from the detections topic.",
                &[],
            ),
            garbage: metrics.counter(
                "vigil_process_garbage_records_total",
                "Records on the detections topic that are not detections, skipped.",
                &[],
            ),
            late: metrics.counter(
                "vigil_process_late_frames_total",
                "Frames that came after their minute's counts were closed, not counted.",
                &[],
            ),
            events: metrics.clone(),
            cfg,
            partitions: BTreeMap::new(),
        }
    }

    async fn publish_hit(&self, out: &mut Output, camera: &str, h: Hit) -> Result<(), stage::Error> {
        let who = h.object_id.clone().unwrap_or_else(|| h.class.clone());
        let id = format!("{camera}/{}/{}/{who}/{}", h.rule, h.kind, h.seq);
        let detail = match h.kind {
            _ if h.rule == MOTION => format!("{} ({})", h.kind.replace('-', " "), h.detail),
            "zone-occupancy" => format!("{}: {} {} ({})", h.rule, h.inside.unwrap_or(0), h.class, h.detail),
            _ if h.detail.is_empty() => format!("{} {} {}", h.class, h.kind.replace('-', " "), h.rule),
            _ => format!("{} {} {} ({})", h.class, h.kind.replace('-', " "), h.rule, h.detail),
        };
        let event = Event {
            id: id.clone(),
            kind: h.kind.into(),
            camera: Some(camera.into()),
            time_us: h.time_us,
            source: "process".into(),
            detail,
            object: None,
            lost: None,
            rule: Some(RuleHit {
                rule: h.rule.clone(),
                object_id: h.object_id,
                class: h.class,
                seq: h.seq,
                bbox: h.bbox,
                direction: (h.kind == "line-crossed").then(|| h.detail.clone()),
                inside: h.inside,
            }),
        };
        self.events
            .counter("vigil_process_events_total", "Rule events published, by rule.", &[("rule", &h.rule)])
            .inc();
        let payload = serde_json::to_vec(&event).expect("events serialise");
        out.send(bus::topics::EVENTS, camera, &id, &payload).await
    }

    async fn publish_count(out: &mut Output, camera: &str, c: Closed) -> Result<(), stage::Error> {
        let count = Count {
            id: format!("{camera}/{}/{}/{}", c.rule, c.class, c.start_us),
            camera: camera.into(),
            rule: c.rule,
            class: c.class,
            start_us: c.start_us,
            end_us: c.start_us + WINDOW_US,
            entries: c.tally.entries,
            exits: c.tally.exits,
            crossings_left_to_right: c.tally.crossings_left_to_right,
            crossings_right_to_left: c.tally.crossings_right_to_left,
            occupancy_peak: c.tally.occupancy_peak,
            occupancy_mean: if c.frames == 0 { 0.0 } else { c.tally.occupancy_sum as f64 / c.frames as f64 },
            frames: c.frames,
            motion_s: c.tally.motion_s,
        };
        let payload = serde_json::to_vec(&count).expect("counts serialise");
        out.send(bus::topics::COUNTS, camera, &count.id, &payload).await
    }
}

impl stage::Stage for Processor {
    type State = PartitionState;
    type Source = bus::Reader;

    async fn assign(&mut self, partition: i32, state: Option<PartitionState>) -> Result<(), stage::Error> {
        self.rules.follow(&self.metrics).await?;
        self.partitions.insert(partition, state.unwrap_or_default());
        Ok(())
    }

    fn revoke(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    async fn on_input(&mut self, r: Record, out: &mut Output) -> Result<(), stage::Error> {
        let d: Detections = match serde_json::from_slice(&r.payload) {
            Ok(d) => d,
            Err(e) => {
                self.garbage.inc();
                tracing::warn!(partition = r.partition, offset = r.offset, error = %e, "not detections: skipped");
                return Ok(());
            }
        };
        self.frames.inc();
        self.delay.set((bus::now_us() - d.capture_us) as f64 / 1e6);
        // A camera without rules still has its motion events and counts.
        let none = Rules::default();
        let rules = match self.rules.get(&d.camera)? {
            Some(rules) => rules,
            None if d.motion.is_some() => &none,
            None => return Ok(()),
        };
        let lateness = i64::try_from(self.cfg.lateness.as_micros()).unwrap_or(i64::MAX);
        let camera = self.partitions.entry(r.partition).or_default().cameras.entry(d.camera.clone()).or_default();
        let late = camera.late;
        let (hits, closed) = camera.frame(rules, &d, lateness);
        if camera.late > late {
            self.late.inc();
        }
        for h in hits {
            self.publish_hit(out, &d.camera, h).await?;
        }
        for c in closed {
            Self::publish_count(out, &d.camera, c).await?;
        }
        Ok(())
    }

    fn checkpoint(&mut self, partition: i32) -> (PartitionState, Option<i64>) {
        (self.partitions.get(&partition).cloned().unwrap_or_default(), None)
    }
}

/// The processor's declaration on the stage runtime.
pub fn stage_spec(cfg: &ProcessConfig, detections: bus::TopicSpec) -> stage::StageSpec {
    use bus::topics;
    let state = topics::plan().into_iter().find(|t| t.name == topics::PROCESS_STATE).expect("state topic in the plan");
    stage::StageSpec {
        name: "process",
        instance: topics::COUNTS.into(),
        member: cfg.member.clone(),
        group: topics::groups::PROCESS,
        input: detections,
        outputs: vec![topics::EVENTS.into(), topics::COUNTS.into()],
        state,
        // The first time, from now on: counts begin when the rules do.
        start: stage::Start::End,
        checkpoint_interval: cfg.checkpoint_interval,
        transactions: cfg.transactions,
    }
}

/// Runs the processor until `shutdown` resolves, on the stage runtime,
/// following the rules drawn in the web app.
pub async fn run(
    cfg: ProcessConfig,
    kafka: bus::KafkaConfig,
    detections: bus::TopicSpec,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), stage::Error> {
    let spec = stage_spec(&cfg, detections);
    let (m, k) = (metrics.clone(), kafka.clone());
    stage::run(spec, kafka, metrics, move || Ok(Processor::new(cfg.clone(), Some(k.clone()), &m)), shutdown).await
}
