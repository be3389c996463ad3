//! The user's laptop: `vigil serve` (also part of `vigil up`).
//!
//! - `auth`: users, passwords (argon2), sessions and API tokens, roles;
//! - `live`: one Kafka consumer per watched camera, fanned out to viewers;
//! - `socket`: the live WebSocket protocol (fMP4 for MSE, samples for
//!   WebCodecs, JPEG for MJPEG cameras);
//! - `api`: the JSON API the web app uses (docs/api.md);
//! - `detections`: live boxes for the live WebSocket, recorded boxes and
//!   object events for ranges (read with `scan`); `thumbnail`: an archived
//!   frame as a small JPEG;
//! - `jobs`: whole-video jobs (upload, progress, results, the video);
//! - `rules`: zones and lines drawn by admins (to `vigil.rules`, which the
//!   processors follow), and counts;
//! - `assets`: the web app itself, embedded in the binary.

mod api;
mod assets;
pub mod auth;
pub mod detections;
mod jobs;
pub mod live;
mod playback;
mod rules;
mod scan;
mod socket;
mod thumbnail;
mod tls;

use axum::extract::FromRef;
use bus::metrics::Metrics;
use bus::{KafkaConfig, TopicSpec};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot serve on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Archive(#[from] archive::Error),
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error("{0}")]
    Other(String),
}

/// A camera as the web app knows it before any frame arrives.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CameraInfo {
    pub id: String,
    /// Where it comes from, in words (never credentials).
    pub source: String,
    /// Whether it has a sub stream on `vigil.live` (used for live view).
    pub sub: bool,
}

#[derive(Clone, Debug)]
pub struct WebConfig {
    pub listen: SocketAddr,
    pub archive_dir: PathBuf,
    pub users_file: PathBuf,
    /// Every request is an admin: for local demos only.
    pub insecure_no_auth: bool,
    /// PEM certificate chain and private key: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub cameras: Vec<CameraInfo>,
    /// Uploads on their way to Kafka, job videos made playable.
    pub work_dir: PathBuf,
    /// The largest upload (the collectors' `[jobs] max_file_bytes`).
    pub max_upload_bytes: u64,
    /// Each camera's rules in the config file (what drawn rules replace).
    pub config_rules: std::collections::BTreeMap<String, schema::CameraRules>,
}

/// What the jobs pages need.
pub struct JobsWeb {
    /// Every job's state (`vigil.video.jobs`), kept current by one reader.
    pub table: bus::table::Table<::jobs::Job>,
    pub work_dir: PathBuf,
    pub max_upload_bytes: u64,
    /// One job video made playable at a time.
    pub making: tokio::sync::Mutex<()>,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct App {
    pub auth: Arc<auth::Auth>,
    pub hub: Arc<live::Hub>,
    pub index: Arc<archive::index::Index>,
    pub archive_dir: PathBuf,
    pub kafka: KafkaConfig,
    pub plan: Vec<TopicSpec>,
    pub cameras: Vec<CameraInfo>,
    pub metrics: Metrics,
    /// Admins' browsers' latency reports (`/api/latency`).
    pub latency: Arc<api::LatencyLog>,
    pub rates: Arc<api::Rates>,
    /// Live detection records, one consumer for all live viewers.
    pub detections: Arc<detections::Hub>,
    /// Every camera's state (`vigil.cameras`), kept current by one reader.
    pub camera_states: Arc<bus::table::Table<bus::cameras::CameraState>>,
    /// Topic numbers and lag, from long-lived clients.
    pub inspector: Arc<bus::inspect::Inspector>,
    /// Partition counts of the topics read here (the plan's where unknown).
    pub partitions: HashMap<&'static str, i32>,
    /// Bounds on concurrent heavy requests: topic scans, thumbnails.
    pub scans: Arc<tokio::sync::Semaphore>,
    pub thumbnails: Arc<tokio::sync::Semaphore>,
    pub jobs: Arc<JobsWeb>,
    /// The rules drawn here (`vigil.rules`), kept current by one reader.
    pub rules: Arc<bus::table::Table<schema::CameraRules>>,
    pub config_rules: Arc<std::collections::BTreeMap<String, schema::CameraRules>>,
}

/// Range reads of `vigil.detections` and `vigil.events` running at once
/// (each is a Kafka consumer); more wait their turn.
const CONCURRENT_SCANS: usize = 4;

impl FromRef<App> for Arc<auth::Auth> {
    fn from_ref(app: &App) -> Self {
        app.auth.clone()
    }
}

/// Binds, opens the archive index and starts serving until `shutdown`
/// resolves; errors a user must fix (port taken, bad TLS files, unreadable
/// users file) come back here, before anything runs.
pub async fn start(
    cfg: WebConfig,
    kafka: KafkaConfig,
    plan: Vec<TopicSpec>,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<Result<(), Error>>, Error> {
    let auth = if cfg.insecure_no_auth {
        tracing::warn!("*** --insecure-no-auth: anyone who can reach {} sees every camera ***", cfg.listen);
        auth::Auth::disabled()
    } else {
        auth::Auth::new(&cfg.users_file, auth::AuthOptions { secure_cookie: cfg.tls.is_some(), ..Default::default() })
            .map_err(|e| Error::Other(e.to_string()))?
    };
    let find = |name| plan.iter().find(|t| t.name == name).cloned().expect("topic in plan");
    let (frames, live) = (find(bus::topics::FRAMES), find(bus::topics::LIVE));
    let read = [
        frames.name,
        live.name,
        bus::topics::DETECTIONS,
        bus::topics::EVENTS,
        bus::topics::CAMERAS,
        bus::topics::COUNTS,
    ];
    let partitions: HashMap<&'static str, i32> = {
        let k = kafka.clone();
        let names = read.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        let counts = tokio::task::spawn_blocking(move || k.partition_counts(&names))
            .await
            .map_err(|e| Error::Other(e.to_string()))??;
        read.into_iter()
            .filter_map(|t| {
                counts
                    .get(t)
                    .copied()
                    .or_else(|| plan.iter().find(|s| s.name == t).map(|s| s.partitions))
                    .map(|n| (t, n))
            })
            .collect()
    };
    let detections_topic = find(bus::topics::DETECTIONS);
    let detection_partitions = partitions.get(detections_topic.name).copied().unwrap_or(detections_topic.partitions);
    let cameras_topic = find(bus::topics::CAMERAS);
    let camera_states = bus::table::Table::start(
        &kafka,
        &cameras_topic,
        partitions.get(cameras_topic.name).copied().unwrap_or(cameras_topic.partitions),
        &metrics,
    )?;
    let inspector = bus::inspect::Inspector::new(&kafka)?;
    let rules_topic = find(bus::topics::RULES);
    let rules = bus::table::Table::start(&kafka, &rules_topic, rules_topic.partitions, &metrics)?;
    let jobs_topic = find(bus::topics::VIDEO_JOBS);
    let jobs = JobsWeb {
        table: bus::table::Table::start(&kafka, &jobs_topic, jobs_topic.partitions, &metrics)?,
        work_dir: cfg.work_dir.clone(),
        max_upload_bytes: cfg.max_upload_bytes,
        making: tokio::sync::Mutex::new(()),
    };
    std::fs::create_dir_all(&cfg.work_dir).map_err(|e| Error::Other(format!("{}: {e}", cfg.work_dir.display())))?;
    let index = archive::open_index(&cfg.archive_dir).await?;
    // Cameras recorded but not configured here (another host's ingest)
    // can still be played back.
    let mut cameras = cfg.cameras.clone();
    for c in index.cameras().await? {
        if !cameras.iter().any(|k| k.id == c.camera) {
            cameras.push(CameraInfo { id: c.camera, source: "recorded".into(), sub: false });
        }
    }
    let app = App {
        auth: Arc::new(auth),
        hub: live::Hub::new(kafka.clone(), frames, live, partitions.clone(), metrics.clone()),
        detections: detections::Hub::new(kafka.clone(), detections_topic, detection_partitions, metrics.clone()),
        camera_states: Arc::new(camera_states),
        inspector: Arc::new(inspector),
        partitions,
        scans: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_SCANS)),
        thumbnails: Arc::new(tokio::sync::Semaphore::new(thumbnail::CONCURRENT)),
        jobs: Arc::new(jobs),
        rules: Arc::new(rules),
        config_rules: Arc::new(cfg.config_rules.clone()),
        index: Arc::new(index),
        archive_dir: cfg.archive_dir.clone(),
        kafka,
        plan,
        cameras,
        metrics: metrics.clone(),
        latency: Default::default(),
        rates: Default::default(),
    };
    let router = metrics.router().merge(api::routes(app)).merge(assets::routes());
    let listener =
        tokio::net::TcpListener::bind(cfg.listen).await.map_err(|e| Error::Listen { addr: cfg.listen, source: e })?;
    let tls = match &cfg.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let addr = cfg.listen;
    Ok(tokio::spawn(async move {
        match tls {
            None => axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(|e| Error::Listen { addr, source: e }),
            Some(acceptor) => {
                tls::serve(listener, router, acceptor, shutdown).await;
                Ok(())
            }
        }
    }))
}

/// The URL a user opens.
pub fn url(cfg: &WebConfig) -> String {
    format!("{}://{}/", if cfg.tls.is_some() { "https" } else { "http" }, cfg.listen)
}
