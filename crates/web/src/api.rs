//! The JSON API: everything the web app does, for scripts too
//! (docs/api.md). Times are microseconds since the Unix epoch.

use crate::App;
use crate::auth::User;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// A camera whose newest archived frame is older than this is "down".
const DOWN_AFTER_US: i64 = 15_000_000;
/// Longest range one request may export or play back.
const MAX_RANGE_US: i64 = 24 * 3600 * 1_000_000;

pub fn routes(app: App) -> axum::Router {
    let router = axum::Router::new()
        .merge(crate::auth::routes())
        .route("/api/cameras", get(cameras))
        .route("/api/cameras/{id}/live", get(crate::socket::live))
        .route("/api/cameras/{id}/ranges", get(ranges))
        .route("/api/cameras/{id}/recording.mp4", get(crate::playback::recording))
        .route("/api/cameras/{id}/export", get(export))
        .route("/api/cameras/{id}/hls.m3u8", get(crate::playback::hls_playlist))
        .route("/api/cameras/{id}/hls/init.mp4", get(crate::playback::hls_init))
        .route("/api/cameras/{id}/hls/segment.m4s", get(crate::playback::hls_segment))
        .route("/api/cameras/{id}/detections", get(crate::detections::range))
        .route("/api/cameras/{id}/thumbnail", get(crate::thumbnail::thumbnail))
        .route("/api/events", get(crate::detections::events))
        .route("/api/topics", get(topics))
        .route("/api/status", get(status))
        .merge(crate::jobs::routes())
        .merge(crate::rules::routes());
    router.route("/api/latency", get(latency).delete(reset_latency)).with_state(app)
}

/// The archive's "nothing there" and "not this codec" are the user's
/// problem (4xx); anything else is ours.
pub fn archive_error(e: archive::Error) -> ApiError {
    match e {
        archive::Error::Other(m) if m.contains("MJPEG") || m.contains("not supported") => {
            ApiError(StatusCode::UNSUPPORTED_MEDIA_TYPE, m)
        }
        archive::Error::Other(m)
            if m.contains("no recorded frames") || m.contains("no key frame") || m.contains("no VPS/SPS/PPS") =>
        {
            ApiError::not_found(m)
        }
        e => ApiError::internal(e),
    }
}

/// A JSON error with the right status (the framework's own rejections,
/// such as a malformed query string, are plain-text 4xx).
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl ApiError {
    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::NOT_FOUND, msg.into())
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "api");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

/// The camera a request names, if it exists and the user may see it.
pub fn camera<'a>(app: &'a App, user: &User, id: &str) -> Result<&'a crate::CameraInfo, ApiError> {
    // Permission first: a viewer learns nothing about cameras not theirs.
    if !user.may_view(id) {
        return Err(ApiError(StatusCode::FORBIDDEN, format!("no permission for camera {id}")));
    }
    app.cameras.iter().find(|c| c.id == id).ok_or_else(|| ApiError::not_found(format!("no camera {id}")))
}

#[derive(Deserialize)]
pub struct Range {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl Range {
    /// The range of a request about camera `id`, once the user may see it.
    pub fn of_camera(&self, app: &App, user: &User, id: &str) -> Result<(i64, i64), ApiError> {
        camera(app, user, id)?;
        self.resolve()
    }

    /// `from`..`to`, defaulting to the last hour; refused when backwards or
    /// longer than a day.
    pub fn resolve(&self) -> Result<(i64, i64), ApiError> {
        // Times far outside any recording are refused before any arithmetic
        // on them (no overflow from a hostile query string).
        const LIMIT_US: i64 = 1 << 60;
        let now = bus::now_us();
        let to = self.to.unwrap_or(now);
        let from = self.from.unwrap_or(to.saturating_sub(3600 * 1_000_000));
        if !(-LIMIT_US..LIMIT_US).contains(&from) || !(-LIMIT_US..LIMIT_US).contains(&to) {
            return Err(ApiError::bad("`from`/`to` out of range (microseconds since the epoch)"));
        }
        if from >= to {
            return Err(ApiError::bad("`from` must be before `to` (microseconds since the epoch)"));
        }
        if to - from > MAX_RANGE_US {
            return Err(ApiError::bad("range longer than 24 h: ask for less"));
        }
        Ok((from, to))
    }
}

#[derive(Serialize)]
struct CameraView {
    id: String,
    source: String,
    sub: bool,
    codec: Option<String>,
    /// From ingest's state record when there is one, else whether the
    /// archive has a frame from the last 15 s.
    up: bool,
    /// Ingest's view of the main stream (`vigil.cameras`): since when up or
    /// down, reconnects, why the last session ended.
    state: Option<bus::cameras::CameraState>,
    /// Newest and oldest archived frame.
    last_us: Option<i64>,
    first_us: Option<i64>,
    frames: u64,
}

async fn camera_views(app: &App, user: &User) -> Result<Vec<CameraView>, ApiError> {
    let recorded: HashMap<String, archive::index::CameraSummary> =
        app.index.cameras().await.map_err(ApiError::internal)?.into_iter().map(|c| (c.camera.clone(), c)).collect();
    let states = camera_states(app);
    let now = bus::now_us();
    Ok(app
        .cameras
        .iter()
        .filter(|c| user.may_view(&c.id))
        .map(|c| {
            let r = recorded.get(&c.id);
            let state = states.get(&c.id).cloned();
            CameraView {
                id: c.id.clone(),
                source: c.source.clone(),
                sub: c.sub,
                codec: r.map(|r| r.codec.clone()),
                up: state
                    .as_ref()
                    .map_or_else(|| r.is_some_and(|r| now.saturating_sub(r.last_us) < DOWN_AFTER_US), |s| s.up),
                state,
                last_us: r.map(|r| r.last_us),
                first_us: r.map(|r| r.first_us),
                frames: r.map_or(0, |r| r.frames),
            }
        })
        .collect())
}

/// Ingest's newest state of each camera's main stream, from the web app's
/// one long-lived reader of `vigil.cameras`; empty until it has read any
/// (the page then falls back to the archive).
fn camera_states(app: &App) -> HashMap<String, bus::cameras::CameraState> {
    app.camera_states.rows().into_iter().filter(|s| s.stream == "main").map(|s| (s.camera.clone(), s)).collect()
}

async fn cameras(State(app): State<App>, user: User) -> Result<Json<Vec<CameraView>>, ApiError> {
    Ok(Json(camera_views(&app, &user).await?))
}

#[derive(Serialize)]
struct Ranges {
    from: i64,
    to: i64,
    /// Continuous recordings inside [from, to]; what lies between is a gap.
    recorded: Vec<(i64, i64)>,
}

async fn ranges(
    State(app): State<App>,
    user: User,
    Path(id): Path<String>,
    Query(q): Query<Range>,
) -> Result<Json<Ranges>, ApiError> {
    let (from, to) = q.of_camera(&app, &user, &id)?;
    let recorded = archive::playback::ranges(&app.index, &id, from, to, archive::playback::GAP_US)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(Ranges { from, to, recorded }))
}

/// Downloads the export of a range: MP4 (H.264/H.265) or MJPEG.
async fn export(
    State(app): State<App>,
    user: User,
    Path(id): Path<String>,
    Query(q): Query<Range>,
) -> Result<Response, ApiError> {
    let (from, to) = q.of_camera(&app, &user, &id)?;
    let tmp = export_path(&app)?;
    let summary = archive::export::export(&app.archive_dir, &app.index, &id, from, to, &tmp, |_, _| {})
        .await
        .map_err(archive_error)?;
    let file = tokio::fs::File::open(&tmp).await.map_err(ApiError::internal)?;
    let _ = std::fs::remove_file(&tmp); // the open handle keeps the bytes until sent
    let (ext, mime) = if summary.format == "mjpeg" { ("mjpeg", "video/x-motion-jpeg") } else { ("mp4", "video/mp4") };
    let name = format!("{id}-{}.{ext}", from / 1_000_000);
    let body = axum::body::Body::from_stream(file_stream(file));
    Ok((
        [
            (header::CONTENT_TYPE, mime.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        body,
    )
        .into_response())
}

/// A file as a stream of chunks (without pulling in tokio-util).
fn file_stream(f: tokio::fs::File) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    use tokio::io::AsyncReadExt;
    futures::stream::unfold(f, |mut f| async move {
        let mut buf = vec![0u8; 256 << 10];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
}

/// A fresh file in `<archive>/.exports/`. An export whose client went away
/// keeps running and leaves its file behind: files older than an hour are
/// swept here, so they never pile up.
fn export_path(app: &App) -> Result<std::path::PathBuf, ApiError> {
    let dir = app.archive_dir.join(".exports");
    std::fs::create_dir_all(&dir).map_err(ApiError::internal)?;
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let old =
                e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|a| a.as_secs() > 3600));
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(dir.join(format!("{}-{}", std::process::id(), bus::now_us())))
}

/// Topic rates: records/s between two looks at the end offsets.
#[derive(Default)]
pub struct Rates(Mutex<HashMap<String, (Instant, i64)>>);

#[derive(Serialize)]
struct TopicView {
    #[serde(flatten)]
    report: bus::inspect::TopicReport,
    records_per_s: Option<f64>,
    /// What the guarantee means, and what it costs.
    meaning: &'static str,
}

fn meaning(delivery: &str) -> &'static str {
    match delivery {
        "exactly-once" => {
            "every record kept and processed once: idempotent producer with acks=all, sinks own their offsets; costs a round trip to every replica per batch and sink-side bookkeeping"
        }
        "at-least-once" => "never lost, may repeat after a crash: consumers commit after processing",
        "last-value" => "compacted: the broker keeps the newest record per key (camera state), written exactly once",
        "at-most-once" => {
            "fastest and freshest: acks=1, no retries, consumers start at the end and never commit; a slow reader loses frames instead of falling behind"
        }
        _ => "",
    }
}

async fn topics(State(app): State<App>, _user: User) -> Result<Json<Vec<TopicView>>, ApiError> {
    let (inspector, plan) = (app.inspector.clone(), app.plan.clone());
    let report = tokio::task::spawn_blocking(move || inspector.report(&plan, bus::topics::groups::WITH_LAG))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, e.to_string()))?;
    let now = Instant::now();
    let mut last = app.rates.0.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Json(
        report
            .into_iter()
            .map(|t| {
                let end: i64 = t.end_offsets.iter().sum();
                let rate = last.get(&t.name).and_then(|&(at, prev)| {
                    let secs = now.duration_since(at).as_secs_f64();
                    (secs > 0.2).then(|| (end - prev).max(0) as f64 / secs)
                });
                if rate.is_some() || !last.contains_key(&t.name) {
                    last.insert(t.name.clone(), (now, end));
                }
                let meaning = meaning(&t.delivery);
                TopicView { report: t, records_per_s: rate, meaning }
            })
            .collect(),
    ))
}

#[derive(Serialize)]
struct Status {
    cameras: Vec<CameraView>,
    /// Bytes the archive holds, and free on its filesystem.
    archive_bytes: u64,
    free_bytes: Option<u64>,
    /// How far back the archive reaches (oldest frame of any camera).
    oldest_us: Option<i64>,
    live_feeds: usize,
}

async fn status(State(app): State<App>, user: User) -> Result<Json<Status>, ApiError> {
    let cameras = camera_views(&app, &user).await?;
    let segments = app.index.segments().await.map_err(ApiError::internal)?;
    Ok(Json(Status {
        oldest_us: cameras.iter().filter_map(|c| c.first_us).min(),
        cameras,
        archive_bytes: segments.values().map(|(_, b)| b).sum(),
        free_bytes: archive::retention::free_bytes(&app.archive_dir).ok(),
        live_feeds: app.hub.feeds(),
    }))
}

/// The newest glass-to-glass latencies viewers' browsers reported
/// (capture → presented), ms: exact percentiles for an admin (and for
/// `vigil-bench live`), where the metrics histogram has buckets.
#[derive(Default)]
pub struct LatencyLog(Mutex<std::collections::VecDeque<f64>>);

/// About 10 minutes of 16 cameras at 30 fps; 1.6 MB at most.
const LATENCY_SAMPLES: usize = 200_000;

impl LatencyLog {
    pub fn add(&self, ms: &[f64]) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for &m in ms.iter().filter(|m| m.is_finite() && **m >= 0.0 && **m < 600_000.0) {
            if v.len() == LATENCY_SAMPLES {
                v.pop_front();
            }
            v.push_back(m);
        }
    }
}

#[derive(Serialize)]
struct LatencySummary {
    count: usize,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
}

async fn latency(State(app): State<App>, _admin: crate::auth::Admin) -> Json<LatencySummary> {
    let mut v: Vec<f64> = app.latency.0.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
    v.sort_by(f64::total_cmp);
    let q = |p: f64| (!v.is_empty()).then(|| v[((v.len() - 1) as f64 * p).round() as usize]);
    Json(LatencySummary { count: v.len(), p50_ms: q(0.5), p95_ms: q(0.95), p99_ms: q(0.99), max_ms: v.last().copied() })
}

async fn reset_latency(State(app): State<App>, _admin: crate::auth::Admin) -> StatusCode {
    app.latency.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    StatusCode::NO_CONTENT
}
