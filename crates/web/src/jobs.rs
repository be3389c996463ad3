//! Whole-video jobs in the web app (admins only: jobs belong to no camera).
//!
//! - `POST /api/jobs?name=FILE`: the request body is a video file; it is
//!   written to the web app's work dir (refused beyond `max_upload_bytes`)
//!   and sent to `vigil.video.chunks` by the same code as `vigil submit`,
//!   so the collectors see the same chunks either way;
//! - `GET /api/jobs`, `GET /api/jobs/{id}`: jobs and their progress, from
//!   one long-lived reader of `vigil.video.jobs`;
//! - `GET /api/jobs/{id}/results`: what the collectors found (each record
//!   once), `?download=1` as a file;
//! - `GET /api/jobs/{id}/video`: the video as an MP4 a browser plays,
//!   gathered from `vigil.video.chunks` while the topic keeps it (a day by
//!   default) and, unless it is H.264 already, re-encoded by ffmpeg at the
//!   file's own timestamps (the results' `time_us` stay right); byte ranges
//!   for seeking.

use crate::App;
use crate::api::ApiError;
use crate::auth::Admin;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use serde::Deserialize;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// The most bytes one response of a video carries: a browser asks for
/// the rest with further ranges.
const MAX_SLICE: u64 = 8 << 20;

pub fn routes() -> axum::Router<App> {
    axum::Router::new()
        .route("/api/jobs", get(list).post(upload))
        .route("/api/jobs/{id}", get(one))
        .route("/api/jobs/{id}/results", get(results))
        .route("/api/jobs/{id}/video", get(video))
}

/// A video id as it may appear in a path: the ids vigil makes (hex, `-`)
/// and any a user chose with `--id`, but nothing that walks directories.
fn checked_id(id: &str) -> Result<&str, ApiError> {
    let ok = !id.is_empty() && id.len() <= 128 && !id.contains(['/', '\\']) && id != "." && id != "..";
    if ok { Ok(id) } else { Err(ApiError::bad("not a video id")) }
}

async fn list(State(app): State<App>, _: Admin) -> Result<Json<serde_json::Value>, ApiError> {
    let mut jobs = app.jobs.table.rows();
    jobs.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    Ok(Json(serde_json::json!({ "jobs": jobs })))
}

async fn one(State(app): State<App>, _: Admin, Path(id): Path<String>) -> Result<Json<jobs::Job>, ApiError> {
    app.jobs.table.rows().into_iter().find(|j| j.id == id).map(Json).ok_or_else(|| ApiError::not_found("no such job"))
}

#[derive(Deserialize)]
struct UploadQuery {
    name: Option<String>,
    #[serde(default)]
    force: bool,
}

async fn upload(
    State(app): State<App>,
    Admin(user): Admin,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> Result<Json<jobs::submit::Submitted>, ApiError> {
    // The name as the user's file had it, without any directory part.
    let name = q.name.as_deref().and_then(|n| n.rsplit(['/', '\\']).next()).unwrap_or("").trim().to_string();
    if name.is_empty() || name.len() > 255 || name == "." || name == ".." {
        return Err(ApiError::bad("?name= the file's name"));
    }
    static UPLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = UPLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = app.jobs.work_dir.join(format!("upload-{}-{n}", bus::now_us()));
    tokio::fs::create_dir_all(&dir).await.map_err(ApiError::internal)?;
    let path = dir.join(&name);
    let result = async {
        let mut file = tokio::fs::File::create(&path).await.map_err(ApiError::internal)?;
        let mut stream = body.into_data_stream();
        let mut bytes = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad(format!("upload broke off: {e}")))?;
            bytes += chunk.len() as u64;
            if bytes > app.jobs.max_upload_bytes {
                return Err(ApiError(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("larger than {} bytes (the collectors' [jobs] max_file_bytes)", app.jobs.max_upload_bytes),
                ));
            }
            file.write_all(&chunk).await.map_err(ApiError::internal)?;
        }
        file.flush().await.map_err(ApiError::internal)?;
        if bytes == 0 {
            return Err(ApiError::bad("an empty file"));
        }
        let producer = app.kafka.producer(bus::Delivery::ExactlyOnce, 64 * 1024).map_err(ApiError::internal)?;
        let known = app.jobs.table.rows().into_iter().map(|j| (j.id.clone(), j)).collect();
        let chunk_bytes = jobs::submit::DEFAULT_CHUNK_BYTES
            .min((app.kafka.max_message_bytes as u64).saturating_sub(jobs::submit::META_ROOM).max(1));
        jobs::submit::submit(&app.kafka, &producer, &path, None, q.force, chunk_bytes, &known, |_, _| {}).await.map_err(
            |e| match e {
                jobs::Error::Video { .. } => ApiError(StatusCode::CONFLICT, e.to_string()),
                e => ApiError::internal(e),
            },
        )
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    let sent = result?;
    tracing::info!(video = %sent.video_id, name = %sent.name, user = %user.name, "video submitted from the web app");
    Ok(Json(sent))
}

#[derive(Deserialize)]
struct ResultsQuery {
    /// Present (any value): as a file to save.
    download: Option<String>,
}

async fn results(
    State(app): State<App>,
    _: Admin,
    Path(id): Path<String>,
    Query(q): Query<ResultsQuery>,
) -> Result<Response, ApiError> {
    let id = checked_id(&id)?.to_string();
    let _turn = app.scans.acquire().await.map_err(ApiError::internal)?;
    let kafka = app.kafka.clone();
    let video = id.clone();
    let r =
        tokio::task::spawn_blocking(move || jobs::read::results(&kafka, &video, std::time::Duration::from_secs(60)))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
    let mut res = Json(r).into_response();
    if q.download.is_some() {
        let disposition = format!("attachment; filename=\"{}.results.json\"", id.replace('"', ""));
        if let Ok(v) = HeaderValue::from_str(&disposition) {
            res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
    }
    Ok(res)
}

async fn video(
    State(app): State<App>,
    _: Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = checked_id(&id)?.to_string();
    let path = playable(&app, &id).await?;
    let mut file = tokio::fs::File::open(&path).await.map_err(ApiError::internal)?;
    let size = file.metadata().await.map_err(ApiError::internal)?.len();
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        // The whole file, a piece at a time.
        let body = futures::stream::unfold(file, |mut f| async move {
            let mut buf = vec![0u8; 1 << 20];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(buf), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        });
        let mut res = Response::new(Body::from_stream(body));
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        return Ok(res);
    };
    let Some((start, end)) = parse_range(range, size) else {
        let mut res =
            ApiError(StatusCode::RANGE_NOT_SATISFIABLE, format!("range {range} outside the video's {size} bytes"))
                .into_response();
        res.headers_mut()
            .insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"));
        return Ok(res);
    };
    let end = end.min(start + MAX_SLICE - 1);
    let len = end - start + 1;
    file.seek(std::io::SeekFrom::Start(start)).await.map_err(ApiError::internal)?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact(&mut buf).await.map_err(ApiError::internal)?;
    let mut res = Response::new(Body::from(buf));
    *res.status_mut() = StatusCode::PARTIAL_CONTENT;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")).expect("ascii"));
    Ok(res)
}

/// `bytes=A-B`, `bytes=A-` or `bytes=-N` within `size`: (first, last).
fn parse_range(r: &str, size: u64) -> Option<(u64, u64)> {
    let spec = r.strip_prefix("bytes=")?.split(',').next()?.trim();
    let (a, b) = spec.split_once('-')?;
    let last = size.checked_sub(1)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.saturating_sub(n), last)
        }
        (a, "") => (a.parse().ok()?, last),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(last)),
    };
    (start <= end && end <= last).then_some((start, end))
}

/// The job's video as a browser-playable MP4 in the work dir: made once
/// (one request at a time makes it), then served from there.
async fn playable(app: &App, id: &str) -> Result<PathBuf, ApiError> {
    let out = app.jobs.work_dir.join(format!("{}.mp4", jobs::sha256_hex(id.as_bytes())));
    let made = || async { tokio::fs::try_exists(&out).await.unwrap_or(false) };
    if made().await {
        return Ok(out);
    }
    let _one = app.jobs.making.lock().await;
    if made().await {
        return Ok(out); // made while this request waited
    }
    let _turn = app.scans.acquire().await.map_err(ApiError::internal)?;
    let (kafka, video, work, out2) = (app.kafka.clone(), id.to_string(), app.jobs.work_dir.clone(), out.clone());
    tokio::task::spawn_blocking(move || make_playable(&kafka, &video, &work, &out2))
        .await
        .map_err(ApiError::internal)??;
    Ok(out)
}

fn make_playable(
    kafka: &bus::KafkaConfig,
    id: &str,
    work: &std::path::Path,
    out: &std::path::Path,
) -> Result<(), ApiError> {
    let whole = jobs::read::video(kafka, id, work, std::time::Duration::from_secs(120)).map_err(|e| match e {
        jobs::Error::Video { .. } => ApiError::not_found(e.to_string()),
        e => ApiError::internal(e),
    })?;
    let (source, temporary) = match whole {
        jobs::Whole::File(p) => (p, true),
        jobs::Whole::Memory(bytes) => {
            let p = work.join(format!("{}.source", jobs::sha256_hex(id.as_bytes())));
            std::fs::write(&p, bytes).map_err(ApiError::internal)?;
            (p, true)
        }
    };
    let made = jobs::decode::browser_mp4(&source, out);
    if temporary {
        let _ = std::fs::remove_file(&source);
    }
    made.map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=990-2000", 1000), Some((990, 999)));
        assert_eq!(parse_range("bytes=1000-", 1000), None);
        assert_eq!(parse_range("bytes=5-1", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
        assert_eq!(parse_range("bytes=0-0", 0), None);
        assert_eq!(parse_range("bytes=x-", 1000), None);
    }

    #[test]
    fn ids_that_walk_directories_are_refused() {
        assert!(checked_id("ab12-34").is_ok());
        for bad in ["", "..", "a/b", "a\\b", &"x".repeat(129)] {
            assert!(checked_id(bad).is_err(), "{bad}");
        }
    }
}
