//! The config file and the command line, validated into typed settings.
//!
//! Precedence: command line, then config file, then defaults. Every error
//! names the key (or flag) at fault.

use crate::cli::{CameraArgs, Global};
use anyhow::{Context, Result, anyhow, bail};
use bus::KafkaConfig;
use bus::topics::{TopicOverride, TopicSpec};
use ingest::CameraSpec;
use ingest::source::SourceSpec;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod motion;
pub use motion::{MaskEntry, MotionSection};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub data_dir: Option<PathBuf>,
    /// `host:port,...`; empty or absent: the embedded broker.
    pub brokers: Option<String>,
    pub max_message_bytes: Option<usize>,
    pub replication_factor: Option<i32>,
    /// librdkafka properties passed through (SASL, TLS, ...).
    #[serde(default)]
    pub kafka: BTreeMap<String, String>,
    #[serde(default)]
    pub broker: BrokerSection,
    #[serde(default)]
    pub groups: GroupsSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub ingest: IngestSection,
    #[serde(default)]
    pub archive: ArchiveSection,
    #[serde(default)]
    pub web: WebSection,
    #[serde(default)]
    pub detect: DetectSection,
    #[serde(default)]
    pub jobs: JobsSection,
    #[serde(default)]
    pub process: ProcessSection,
    #[serde(default)]
    pub motion: MotionSection,
    #[serde(default)]
    pub cameras: Vec<CameraEntry>,
    #[serde(default)]
    pub topics: BTreeMap<String, TopicOverride>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    pub listen: Option<SocketAddr>,
    pub maintenance_interval_s: Option<u64>,
}

/// `[groups]`: how the stages' consumer groups split partitions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsSection {
    /// "range" (default), "roundrobin" or "cooperative-sticky".
    pub assignor: Option<String>,
    pub session_timeout_ms: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSection {
    pub buffer_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    pub listen: Option<SocketAddr>,
    /// Users and password hashes [default: <data dir>/users.toml].
    pub users_file: Option<PathBuf>,
    /// PEM files: serve HTTPS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// `[detect]`: the detector (`vigil detect`, and part of `vigil up`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectSection {
    /// Run the detector in `vigil up` (default true).
    pub enabled: Option<bool>,
    pub model: Option<PathBuf>,
    /// The ONNX Runtime library (libonnxruntime.so).
    pub runtime: Option<PathBuf>,
    pub input_size: Option<u32>,
    pub threads: Option<usize>,
    pub cuda: Option<bool>,
    pub score_threshold: Option<f32>,
    pub iou_threshold: Option<f32>,
    /// `key-frames`, or `N/s`.
    pub sample: Option<String>,
    pub max_age: Option<u32>,
    pub max_age_s: Option<f32>,
    pub min_hits: Option<u32>,
    pub confirm_s: Option<f32>,
    pub track_iou: Option<f32>,
    pub track_high_score: Option<f32>,
    pub track_new_score: Option<f32>,
    pub track_reupdate: Option<bool>,
    pub checkpoint_interval_ms: Option<u64>,
    /// Kafka transactions (brokers that have them; not the embedded one).
    pub transactions: Option<bool>,
}

/// `[jobs]`: the collectors of whole videos (`vigil collect`, and part of
/// `vigil up`). The model and tracker settings are `[detect]`'s.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSection {
    /// Run a collector in `vigil up` (default true, when the model is installed).
    pub enabled: Option<bool>,
    /// `all`, or `N/s` of video time.
    pub sample: Option<String>,
    pub memory_bytes: Option<u64>,
    pub max_file_bytes: Option<u64>,
    pub max_videos: Option<usize>,
    pub max_receiving: Option<usize>,
    pub chunk_timeout_s: Option<u64>,
    pub checkpoint_interval_ms: Option<u64>,
    pub transactions: Option<bool>,
}

/// `[process]`: the stream processor (`vigil process`, and part of `vigil
/// up`) and its rules, `[[process.zones]]` and `[[process.lines]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSection {
    /// Run a processor in `vigil up` (default true, when the detector runs).
    pub enabled: Option<bool>,
    pub lateness_s: Option<u64>,
    pub checkpoint_interval_ms: Option<u64>,
    pub transactions: Option<bool>,
    #[serde(default)]
    pub zones: Vec<process::RuleSpec>,
    #[serde(default)]
    pub lines: Vec<process::RuleSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSection {
    pub flush_interval_ms: Option<u64>,
    pub segment_max_bytes: Option<u64>,
    pub segment_max_seconds: Option<u64>,
    /// Retention: all cameras together, per camera, by age, free-space floor.
    pub max_bytes: Option<u64>,
    pub camera_max_bytes: Option<u64>,
    pub max_age_s: Option<u64>,
    pub min_free_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraEntry {
    pub id: String,
    pub source: String,
    pub sub: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// Validated settings shared by every role.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// `None`: the embedded broker.
    pub brokers: Option<String>,
    pub kafka: KafkaConfig,
    pub plan: Vec<TopicSpec>,
    pub broker_listen: SocketAddr,
    pub maintenance_interval_s: u64,
    /// `None`: metrics off; `Some(None)`: the role's default address.
    pub metrics_listen: Option<Option<SocketAddr>>,
    pub buffer_bytes: usize,
    pub cameras: Vec<CameraSpec>,
    pub archive: archive::ArchiveConfig,
    pub web: Web,
    pub detect: detect::DetectConfig,
    /// Whether `vigil up` runs the detector.
    pub detect_in_up: bool,
    pub jobs: jobs::CollectConfig,
    /// Whether `vigil up` runs a collector.
    pub jobs_in_up: bool,
    pub process: process::ProcessConfig,
    /// Whether `vigil up` runs a processor (when the detector runs too).
    pub process_in_up: bool,
    /// The rules as written in the file, per camera (the web app shows
    /// them until an admin draws others).
    pub rule_specs: BTreeMap<String, schema::CameraRules>,
}

/// The web app's settings (`[web]`).
#[derive(Debug, Clone)]
pub struct Web {
    pub listen: SocketAddr,
    pub users_file: PathBuf,
    pub tls: Option<(PathBuf, PathBuf)>,
}

pub const DEFAULT_BROKER: &str = "127.0.0.1:9092";

impl Settings {
    pub fn load(g: &Global, cams: &CameraArgs) -> Result<Self> {
        let file = match &g.config {
            Some(p) => parse_file(p)?,
            None => File::default(),
        };
        if g.data_dir.len() > 1 {
            bail!("--data-dir is given {} times: only `vigil check` reads several dirs", g.data_dir.len());
        }
        let data_dir = g.data_dir.first().cloned().or(file.data_dir).unwrap_or_else(|| PathBuf::from("vigil-data"));
        let brokers = g.brokers.clone().or(file.brokers).filter(|b| !b.trim().is_empty());
        if let Some(b) = &brokers {
            for hp in b.split(',') {
                let ok = hp.trim().rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                if !ok {
                    bail!("brokers: `{hp}` is not HOST:PORT");
                }
            }
        }
        let max_message_bytes = file.max_message_bytes.unwrap_or(1_000_000);
        if !(16_384..=100_000_000).contains(&max_message_bytes) {
            bail!("max_message_bytes = {max_message_bytes}: use 16384..=100000000");
        }
        let buffer_bytes = file.ingest.buffer_bytes.unwrap_or(32 << 20);
        if buffer_bytes < 2 * max_message_bytes {
            bail!("ingest.buffer_bytes = {buffer_bytes}: must hold at least two messages ({})", 2 * max_message_bytes);
        }
        let plan = bus::topics::plan_with(&file.topics).map_err(|e| anyhow!(e))?;
        let metrics_text = g.metrics_listen.clone().or(file.metrics.listen);
        let metrics_listen = match metrics_text.as_deref() {
            Some("off") => None,
            Some(a) => {
                Some(Some(a.parse().map_err(|_| anyhow!("metrics listen address `{a}` is not IP:PORT (or `off`)"))?))
            }
            None => Some(None),
        };
        let mut cameras = Vec::new();
        for c in file.cameras.iter().filter(|c| c.enabled) {
            let main = SourceSpec::parse(&c.source).map_err(|e| anyhow!("cameras.{}: {e}", c.id))?;
            let sub = c
                .sub
                .as_deref()
                .map(SourceSpec::parse)
                .transpose()
                .map_err(|e| anyhow!("cameras.{}.sub: {e}", c.id))?;
            cameras.push(CameraSpec { id: c.id.clone(), main, sub });
        }
        for arg in &cams.camera {
            let (id, src) = arg.split_once('=').ok_or_else(|| anyhow!("--camera `{arg}`: expected ID=SOURCE"))?;
            let main = SourceSpec::parse(src).map_err(|e| anyhow!("--camera {id}: {e}"))?;
            cameras.push(CameraSpec { id: id.to_string(), main, sub: None });
        }
        for (i, c) in cameras.iter().enumerate() {
            media::validate_camera_id(&c.id)?;
            if cameras[..i].iter().any(|o| o.id == c.id) {
                bail!("camera `{}` is configured twice", c.id);
            }
        }
        let mut archive = archive::ArchiveConfig::new(&data_dir);
        let a = &file.archive;
        if let Some(ms) = a.flush_interval_ms {
            if !(10..=10_000).contains(&ms) {
                bail!("archive.flush_interval_ms = {ms}: use 10..=10000");
            }
            archive.flush_interval = std::time::Duration::from_millis(ms);
        }
        if let Some(b) = a.segment_max_bytes {
            if b < 1 << 20 {
                bail!("archive.segment_max_bytes = {b}: use at least 1048576");
            }
            archive.segment.max_bytes = b;
        }
        if let Some(secs) = a.segment_max_seconds {
            if !(10..=86_400).contains(&secs) {
                bail!("archive.segment_max_seconds = {secs}: use 10..=86400");
            }
            archive.segment.max_duration_us = secs as i64 * 1_000_000;
        }
        if a.max_age_s == Some(0) {
            bail!("archive.max_age_s = 0: leave it out to keep recordings regardless of age");
        }
        archive.retention.max_bytes = a.max_bytes;
        archive.retention.camera_max_bytes = a.camera_max_bytes;
        archive.retention.max_age_us = a.max_age_s.map(|s| s as i64 * 1_000_000);
        if a.min_free_bytes.is_some() {
            archive.retention.min_free_bytes = a.min_free_bytes.filter(|&b| b > 0);
        }
        let w = &file.web;
        let tls = match (&w.tls_cert, &w.tls_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => bail!("web.tls_cert and web.tls_key go together: set both or neither"),
        };
        let web = Web {
            listen: w.listen.unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid")),
            users_file: w.users_file.clone().unwrap_or_else(|| data_dir.join("users.toml")),
            tls,
        };
        let mut detect = detect_config(&file.detect)?;
        detect.member = member_name(&data_dir);
        let jobs = jobs_config(&file.jobs, &detect, &data_dir)?;
        let known: Vec<&str> =
            file.cameras.iter().map(|c| c.id.as_str()).chain(cameras.iter().map(|c| c.id.as_str())).collect();
        detect.motion = motion::settings(&file.motion, &known)?;
        let process = process_config(&file.process, &detect, &known)?;
        // Archivers may share a dir: the pid tells them apart.
        archive.member = format!("{}:pid{}", member_name(&data_dir), std::process::id());
        let mut kafka = KafkaConfig::new(brokers.clone().unwrap_or_default());
        if let Some(a) = &file.groups.assignor {
            kafka.group.assignor = bus::Assignor::parse(a).map_err(|e| anyhow!("groups.assignor = {e}"))?;
        }
        if let Some(ms) = file.groups.session_timeout_ms {
            kafka.group.session_timeout_ms = ms;
        }
        kafka.group.check().map_err(|e| anyhow!("groups.{e}"))?;
        kafka.properties = file.kafka;
        kafka.check_properties().map_err(|e| anyhow!(e))?;
        kafka.max_message_bytes = max_message_bytes;
        kafka.replication_factor = file.replication_factor.unwrap_or(if brokers.is_some() { -1 } else { 1 });
        // With no rule and no motion it still follows rules drawn in the web app.
        let process_in_up = file.process.enabled.unwrap_or(true);
        let mut rule_specs: BTreeMap<String, schema::CameraRules> = BTreeMap::new();
        let specs = file.process.zones.iter().map(|z| (z, true)).chain(file.process.lines.iter().map(|l| (l, false)));
        for (spec, zone) in specs {
            let r = rule_specs.entry(spec.camera.clone()).or_insert_with(|| schema::CameraRules {
                camera: spec.camera.clone(),
                by: "config".into(),
                ..Default::default()
            });
            if zone { &mut r.zones } else { &mut r.lines }.push(spec.clone());
        }
        Ok(Settings {
            process_in_up,
            rule_specs,
            data_dir,
            brokers,
            kafka,
            plan,
            broker_listen: file.broker.listen.unwrap_or_else(|| DEFAULT_BROKER.parse().expect("valid")),
            maintenance_interval_s: file.broker.maintenance_interval_s.unwrap_or(60).max(1),
            metrics_listen,
            buffer_bytes,
            cameras,
            archive,
            web,
            detect,
            detect_in_up: file.detect.enabled.unwrap_or(true),
            jobs,
            jobs_in_up: file.jobs.enabled.unwrap_or(true),
            process,
        })
    }

    /// Where a role that did not start the broker finds it: `--brokers`,
    /// else the broker started for this data dir, else the default port.
    pub fn resolve_brokers(&mut self) {
        self.kafka.brokers = self.known_brokers().unwrap_or_else(|| DEFAULT_BROKER.to_string());
    }

    /// `--brokers` (or the config's), else the embedded broker started for
    /// this data dir, if any: no guess.
    pub fn known_brokers(&self) -> Option<String> {
        (!self.kafka.brokers.is_empty())
            .then(|| self.kafka.brokers.clone())
            .or_else(|| broker::discover(&self.data_dir))
    }

    pub fn metrics_addr(&self, default: &str) -> Option<SocketAddr> {
        self.metrics_listen.map(|a| a.unwrap_or_else(|| default.parse().expect("valid default")))
    }
}

/// Parses `N/s` or `key-frames`.
pub fn parse_sampling(text: &str) -> Result<detect::Sampling> {
    if text == "key-frames" {
        return Ok(detect::Sampling::KeyFrames);
    }
    let n = text.strip_suffix("/s").and_then(|n| n.trim().parse::<f64>().ok());
    match n {
        Some(n) if n > 0.0 && n <= 120.0 => Ok(detect::Sampling::PerSecond(n)),
        _ => bail!("sample `{text}`: use `key-frames` or a rate such as `2/s` (up to 120/s)"),
    }
}

/// Parses `all` or `N/s` (`--sample` of `vigil collect`).
pub fn parse_video_sample(text: &str) -> Result<jobs::Sample> {
    if text == "all" {
        return Ok(jobs::Sample::All);
    }
    match parse_sampling(text) {
        Ok(detect::Sampling::PerSecond(n)) => Ok(jobs::Sample::PerSecond(n)),
        _ => bail!("sample `{text}`: use `all` or a rate such as `5/s` (up to 120/s)"),
    }
}

fn jobs_config(j: &JobsSection, d: &detect::DetectConfig, data_dir: &Path) -> Result<jobs::CollectConfig> {
    let memory_bytes = j.memory_bytes.unwrap_or(256 << 20);
    if memory_bytes > 1 << 40 {
        bail!("jobs.memory_bytes = {memory_bytes}: use at most 1 TiB (0 gathers every video on disk)");
    }
    let max_file_bytes = j.max_file_bytes.unwrap_or(8 << 30);
    if max_file_bytes == 0 {
        bail!("jobs.max_file_bytes = 0: use the largest file a collector accepts, in bytes");
    }
    let max_videos = j.max_videos.unwrap_or(2);
    if !(1..=64).contains(&max_videos) {
        bail!("jobs.max_videos = {max_videos}: use 1..=64");
    }
    let max_receiving = j.max_receiving.unwrap_or(16);
    if !(1..=1024).contains(&max_receiving) {
        bail!("jobs.max_receiving = {max_receiving}: use 1..=1024");
    }
    let timeout = j.chunk_timeout_s.unwrap_or(300);
    if !(1..=86_400).contains(&timeout) {
        bail!("jobs.chunk_timeout_s = {timeout}: use 1..=86400");
    }
    let interval = j.checkpoint_interval_ms.unwrap_or(2000);
    if !(100..=600_000).contains(&interval) {
        bail!("jobs.checkpoint_interval_ms = {interval}: use 100..=600000");
    }
    Ok(jobs::CollectConfig {
        model: d.model.clone(),
        tracker: d.tracker,
        sample: parse_video_sample(j.sample.as_deref().unwrap_or("all")).context("jobs.sample")?,
        memory_bytes,
        max_file_bytes,
        max_videos,
        max_receiving,
        chunk_timeout: std::time::Duration::from_secs(timeout),
        work_dir: data_dir.join("jobs"),
        checkpoint_interval: std::time::Duration::from_millis(interval),
        transactions: j.transactions.unwrap_or(false),
        member: d.member.clone(),
    })
}

/// The processor's settings and each camera's rules, checked: a bad rule
/// or one for a camera not configured is an error naming the rule.
fn process_config(p: &ProcessSection, d: &detect::DetectConfig, cameras: &[&str]) -> Result<process::ProcessConfig> {
    let mut rules: BTreeMap<String, process::Rules> = BTreeMap::new();
    let specs = p.zones.iter().map(|s| ("zone", s)).chain(p.lines.iter().map(|s| ("line", s)));
    for (kind, s) in specs {
        if !cameras.contains(&s.camera.as_str()) {
            bail!(
                "process.{kind}s: {kind} {:?}: camera {:?} is not one of [[cameras]] ({})",
                s.name,
                s.camera,
                if cameras.is_empty() { "none configured".to_string() } else { cameras.join(", ") }
            );
        }
        let r = rules.entry(s.camera.clone()).or_default();
        let added = if kind == "zone" { r.add_zone(s) } else { r.add_line(s) };
        added.map_err(|e| anyhow!("process.{kind}s: {e}"))?;
    }
    let lateness = p.lateness_s.unwrap_or(5);
    if lateness > 3600 {
        bail!("process.lateness_s = {lateness}: use 0..=3600");
    }
    let interval = p.checkpoint_interval_ms.unwrap_or(2000);
    if !(100..=600_000).contains(&interval) {
        bail!("process.checkpoint_interval_ms = {interval}: use 100..=600000");
    }
    Ok(process::ProcessConfig {
        rules,
        lateness: std::time::Duration::from_secs(lateness),
        checkpoint_interval: std::time::Duration::from_millis(interval),
        transactions: p.transactions.unwrap_or(false),
        member: d.member.clone(),
    })
}

fn detect_config(d: &DetectSection) -> Result<detect::DetectConfig> {
    let mut model = detect::model::ModelOptions::default();
    if let Some(p) = &d.model {
        model.path = p.clone();
    }
    if let Some(p) = &d.runtime {
        model.runtime = p.clone();
    }
    if let Some(n) = d.input_size {
        if !(32..=4096).contains(&n) || n % 32 != 0 {
            bail!("detect.input_size = {n}: use a multiple of 32 from 32 to 4096");
        }
        model.input_size = n;
    }
    if let Some(t) = d.threads {
        if t > 256 {
            bail!("detect.threads = {t}: use 0 (every core) to 256");
        }
        model.threads = t;
    }
    model.cuda = d.cuda.unwrap_or(false);
    for (name, v, slot) in [
        ("score_threshold", d.score_threshold, &mut model.score_threshold),
        ("iou_threshold", d.iou_threshold, &mut model.iou_threshold),
    ] {
        if let Some(v) = v {
            if !(0.0..1.0).contains(&v) {
                bail!("detect.{name} = {v}: use 0 to 1 (exclusive)");
            }
            *slot = v;
        }
    }
    let mut tracker = detect::track::TrackerConfig::default();
    if let Some(a) = d.max_age {
        if !(1..=10_000).contains(&a) {
            bail!("detect.max_age = {a}: use 1..=10000 analysed frames");
        }
        tracker.max_age = a;
    }
    if let Some(h) = d.min_hits {
        if !(1..=100).contains(&h) {
            bail!("detect.min_hits = {h}: use 1..=100");
        }
        tracker.min_hits = h;
    }
    for (name, v, slot, range) in [
        ("max_age_s", d.max_age_s, &mut tracker.max_age_s, 0.0..=3600.0),
        ("confirm_s", d.confirm_s, &mut tracker.confirm_s, 0.0..=3600.0),
        ("track_iou", d.track_iou, &mut tracker.iou_threshold, 0.01..=1.0),
        ("track_high_score", d.track_high_score, &mut tracker.high_score, 0.0..=1.0),
        ("track_new_score", d.track_new_score, &mut tracker.new_track_score, 0.0..=1.0),
    ] {
        if let Some(v) = v {
            if !range.contains(&v) {
                bail!("detect.{name} = {v}: use {}..={}", range.start(), range.end());
            }
            *slot = v;
        }
    }
    if let Some(r) = d.track_reupdate {
        tracker.reupdate = r;
    }
    let interval = d.checkpoint_interval_ms.unwrap_or(2000);
    if !(100..=600_000).contains(&interval) {
        bail!("detect.checkpoint_interval_ms = {interval}: use 100..=600000");
    }
    Ok(detect::DetectConfig {
        model,
        tracker,
        sampling: parse_sampling(d.sample.as_deref().unwrap_or("key-frames")).context("detect.sample")?,
        output_topic: bus::topics::DETECTIONS.to_string(),
        checkpoint_interval: std::time::Duration::from_millis(interval),
        transactions: d.transactions.unwrap_or(false),
        member: String::new(),
        motion: Default::default(),
    })
}

/// This process's name in the stages' groups, the same after a restart:
/// the host and the data directory (one process per data directory).
fn member_name(data_dir: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    format!("{}:{}", host.trim(), dir.display())
}

fn parse_file(p: &Path) -> Result<File> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading config {}", p.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow!("config {}: {}", p.display(), e.message().trim_end()).context(span_hint(&text, e.span())))
}

fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(s) => {
            let line = text[..s.start.min(text.len())].lines().count().max(1);
            format!("at line {line}")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml_text: &str, cams: &[&str]) -> Result<Settings> {
        // Tests run in parallel: each load its own file.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vigil-cfg-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("vigil.toml");
        std::fs::write(&p, toml_text).unwrap();
        let g = Global { config: Some(p), ..Default::default() };
        Settings::load(&g, &CameraArgs { camera: cams.iter().map(|s| s.to_string()).collect() })
    }

    #[test]
    fn process_rules_are_checked_and_named() {
        let zone = |cam: &str, points: &str| {
            format!("[[process.zones]]\ncamera = \"{cam}\"\nname = \"porch\"\npoints = {points}\n")
        };
        let ok = load(&zone("cam", "[[0, 0], [10, 0], [0, 10]]"), &["cam=synthetic:"]).unwrap();
        assert_eq!(ok.process.rules["cam"].zones[0].name, "porch");
        assert!(ok.process_in_up);
        assert!(load("", &["cam=synthetic:"]).unwrap().process_in_up, "motion events, rules drawn in the web app");
        let off = "[process]\nenabled = false\n";
        assert!(!load(off, &["cam=synthetic:"]).unwrap().process_in_up);
        let line = "[[process.lines]]\ncamera = \"cam\"\nname = \"gate\"\nstart = [5, 5]\nend = [5, 5]\n";
        let cases = [
            (
                zone("nope", "[[0, 0], [10, 0], [0, 10]]"),
                "zone \"porch\": camera \"nope\" is not one of [[cameras]] (cam)",
            ),
            (zone("cam", "[[0, 0], [10, 0]]"), "zone \"porch\" of camera \"cam\": needs at least 3 points"),
            (line.to_string(), "line \"gate\" of camera \"cam\": start and end must be finite and apart"),
            ("[process]\nlateness_s = 99999".to_string(), "process.lateness_s"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", load(&text, &["cam=synthetic:"]).unwrap_err());
            assert!(err.contains(want), "{text:?} gave {err}");
        }
    }

    #[test]
    fn the_example_file_is_valid() {
        let text = include_str!("../../../vigil.example.toml");
        let s = load(text, &[]).unwrap();
        assert!(!s.cameras.is_empty());
    }

    #[test]
    fn good_config() {
        let s = load(
            r#"
            brokers = "k1:9092,k2:9092"
            [kafka]
            "security.protocol" = "SASL_SSL"
            [[cameras]]
            id = "door"
            source = "synthetic:fps=5"
            sub = "synthetic:width=320,height=180"
            [topics."vigil.frames"]
            partitions = 8
            "#,
            &["yard=synthetic:codec=mjpeg"],
        )
        .unwrap();
        assert_eq!(s.brokers.as_deref(), Some("k1:9092,k2:9092"));
        assert_eq!(s.kafka.properties["security.protocol"], "SASL_SSL");
        assert_eq!(s.cameras.len(), 2);
        assert!(s.cameras[0].sub.is_some());
        assert_eq!(s.plan.iter().find(|t| t.name == "vigil.frames").unwrap().partitions, 8);
        assert_eq!(s.kafka.replication_factor, -1);
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases = [
            ("colour = 1", "colour"),
            ("[broker]\nport = 1", "port"),
            ("brokers = \"nohostport\"", "HOST:PORT"),
            ("max_message_bytes = 10", "max_message_bytes"),
            ("[[cameras]]\nid = \"a b\"\nsource = \"synthetic:\"", "camera id"),
            ("[[cameras]]\nid = \"a\"\nsource = \"synthetic:fps=x\"", "cameras.a"),
            (
                "[[cameras]]\nid = \"a\"\nsource = \"synthetic:\"\n[[cameras]]\nid = \"a\"\nsource = \"synthetic:\"",
                "twice",
            ),
            ("[topics.\"vigil.nope\"]\npartitions = 2", "vigil.nope"),
            ("[metrics]\nlisten = \"nowhere\"", "metrics"),
            ("[kafka]\nacks = \"0\"", "kafka.\"acks\""),
            ("[archive]\nflush_interval_ms = 0", "flush_interval_ms"),
            ("[archive]\nmax_age_s = 0", "max_age_s"),
            ("[archive]\nmax_age = 5", "max_age"),
            ("[kafka]\n\"enable.auto.commit\" = \"true\"", "delivery guarantee"),
            ("[detect]\nsample = \"often\"", "detect.sample"),
            ("[detect]\nsample = \"0/s\"", "detect.sample"),
            ("[detect]\ninput_size = 600", "detect.input_size"),
            ("[detect]\nscore_threshold = 1.5", "detect.score_threshold"),
            ("[detect]\nmax_age = 0", "detect.max_age"),
            ("[detect]\ncheckpoint_interval_ms = 5", "detect.checkpoint_interval_ms"),
            ("[detect]\nmodle = \"x.onnx\"", "modle"),
            ("[jobs]\nsample = \"key-frames\"", "jobs.sample"),
            ("[jobs]\nmax_videos = 0", "jobs.max_videos"),
            ("[jobs]\nmax_receiving = 0", "jobs.max_receiving"),
            ("[jobs]\nchunk_timeout_s = 0", "jobs.chunk_timeout_s"),
            ("[jobs]\nmax_file_bytes = 0", "jobs.max_file_bytes"),
            ("[groups]\nassignor = \"sticky\"", "groups.assignor"),
            ("[groups]\nsession_timeout_ms = 10", "groups.session_timeout_ms"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", load(text, &[]).unwrap_err());
            assert!(err.contains(want), "{text:?} gave {err}");
        }
        assert!(format!("{:#}", load("", &["noequals"]).unwrap_err()).contains("ID=SOURCE"));
    }
}
