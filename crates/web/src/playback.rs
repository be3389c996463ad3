//! Recorded video over HTTP: a progressive fragmented MP4 for the web
//! app's player (`recording.mp4`), and HLS (`hls.m3u8`, `hls/init.mp4`,
//! `hls/segment.m4s`) for VLC and phones.
//!
//! Players such as VLC cannot send a header or a cookie: the HLS routes
//! also take the bearer token as `?token=`, and a playlist fetched that way
//! passes it on in its own URIs. Anyone holding such a URL can watch that
//! range until the session ends (logout, 12 h idle, user removed).

use crate::App;
use crate::api::{ApiError, Range, archive_error, camera};
use crate::auth::User;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};

/// A logged-in user by header or cookie, or by `?token=` (HLS only).
pub struct HlsUser {
    user: User,
    /// The token, when it came in the query string (to pass on).
    query_token: Option<String>,
}

impl FromRequestParts<App> for HlsUser {
    type Rejection = crate::auth::AuthError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let token = parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .filter(|t| t.bytes().all(|b| b.is_ascii_alphanumeric()))
                .map(str::to_string)
        });
        match (User::from_request_parts(parts, app).await, token) {
            (Ok(user), _) => Ok(HlsUser { user, query_token: None }),
            (Err(_), Some(t)) => {
                let mut h = HeaderMap::new();
                let bearer =
                    HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| crate::auth::AuthError::LoginRequired)?;
                h.insert(header::AUTHORIZATION, bearer);
                let user = app.auth.authenticate(&Method::GET, &h)?;
                Ok(HlsUser { user, query_token: Some(t) })
            }
            (Err(e), None) => Err(e),
        }
    }
}

impl HlsUser {
    fn suffix(&self) -> String {
        self.query_token.as_ref().map(|t| format!("&token={t}")).unwrap_or_default()
    }
}

/// HLS segments aim at this length (they start at key frames).
const HLS_TARGET_SECS: f64 = 4.0;

/// The query string for a range, keeping the caller's own parameters out.
fn range_query(from: i64, to: i64) -> String {
    format!("from={from}&to={to}")
}

pub async fn recording(
    State(app): State<App>,
    user: User,
    Path(id): Path<String>,
    Query(q): Query<Range>,
) -> Result<Response, ApiError> {
    let (from, to) = q.of_camera(&app, &user, &id)?;
    let rec = archive::playback::recording(&app.archive_dir, app.index.clone(), &id, from, to)
        .await
        .map_err(archive_error)?;
    let start = start_us(&app, &id, from, to).await;
    // One GOP at a time: memory stays bounded however long the range.
    let body = futures::stream::unfold(rec, |mut rec| async move {
        match rec.next().await? {
            Ok(bytes) => Some((Ok::<_, archive::Error>(bytes), rec)),
            Err(e) => {
                tracing::warn!(error = %e, "recording stopped early");
                Some((Err(e), rec))
            }
        }
    });
    let mut res = ([(header::CONTENT_TYPE, "video/mp4")], axum::body::Body::from_stream(body)).into_response();
    if let Some(us) = start {
        // Media time 0 is this capture time (the web app draws recorded
        // detections by it; a HEAD request reads it without the video).
        res.headers_mut().insert(START_US, HeaderValue::from(us));
    }
    Ok(res)
}

/// `X-Vigil-Start-Us` of `recording.mp4`.
const START_US: &str = "x-vigil-start-us";

/// The capture time of a recording's first frame: the first key frame of
/// what `from` needs (what `archive::playback::recording` starts at).
async fn start_us(app: &App, camera: &str, from: i64, to: i64) -> Option<i64> {
    let (start, end) = app.index.seq_span(camera, from, to).await.ok()??;
    let rows = app.index.frames_by_seq(camera, start, end, 256).await.ok()?;
    rows.iter().find(|r| r.key).or(rows.first()).map(|r| r.capture_us)
}

pub async fn hls_playlist(
    State(app): State<App>,
    user: HlsUser,
    Path(id): Path<String>,
    Query(q): Query<Range>,
) -> Result<Response, ApiError> {
    let (from, to) = q.of_camera(&app, &user.user, &id)?;
    // Relative URIs: they resolve against the playlist's own URL, so the
    // same playlist works behind any host name or proxy path.
    let token = user.suffix();
    let init = format!("hls/init.mp4?at={from}{token}");
    let p = archive::playback::hls_playlist(&app.index, &id, from, to, HLS_TARGET_SECS, &init, |a, b| {
        format!("hls/segment.m4s?{}{token}", range_query(a, b))
    })
    .await
    .map_err(archive_error)?;
    Ok(([(header::CONTENT_TYPE, "application/vnd.apple.mpegurl")], p.text).into_response())
}

#[derive(serde::Deserialize)]
pub struct At {
    at: Option<i64>,
}

pub async fn hls_init(
    State(app): State<App>,
    user: HlsUser,
    Path(id): Path<String>,
    Query(q): Query<At>,
) -> Result<Response, ApiError> {
    camera(&app, &user.user, &id)?;
    let at = q.at.ok_or_else(|| ApiError::bad("`at`: the capture time (µs) the init segment must describe"))?;
    let bytes = archive::playback::init_segment(&app.archive_dir, &app.index, &id, at).await.map_err(archive_error)?;
    Ok(([(header::CONTENT_TYPE, "video/mp4")], bytes).into_response())
}

pub async fn hls_segment(
    State(app): State<App>,
    user: HlsUser,
    Path(id): Path<String>,
    Query(q): Query<Range>,
) -> Result<Response, ApiError> {
    let (from, to) = q.of_camera(&app, &user.user, &id)?;
    let bytes =
        archive::playback::hls_segment(&app.archive_dir, &app.index, &id, from, to).await.map_err(archive_error)?;
    Ok(([(header::CONTENT_TYPE, "video/iso.segment")], bytes).into_response())
}
