//! The live WebSocket: `GET /api/cameras/{id}/live?mode=mse|webcodecs`.
//!
//! First a JSON text message `{"type":"hello", ...}` (codec, MIME type for
//! Media Source Extensions, codec string for WebCodecs, `base_us`), then
//! one binary message per frame:
//!
//! ```text
//! kind u8 | flags u8 (bit 0: key frame) | capture_us i64 BE | payload
//! kind 0: fMP4 init segment   1: fMP4 fragment (one frame)   (mode mse)
//! kind 2: H.264/H.265 access unit, Annex B                   (mode webcodecs)
//! kind 3: JPEG                                               (MJPEG cameras)
//! ```
//!
//! Media times are `capture_us - base_us`, so the page maps what it shows
//! back to the capture time and reports glass-to-glass latency with text
//! messages `{"type":"latency","ms":[...]}`. A new hello (and init segment)
//! follows whenever the stream's parameters change.
//!
//! Between frames, text messages `{"type":"detections", ...}` carry the
//! camera's newest detection record (`crate::detections`), latest wins: a
//! send that would wait is dropped, never the video.

use crate::App;
use crate::api::{ApiError, camera};
use crate::auth::User;
use crate::detections::LiveViewer;
use crate::live::{Source, Viewer};
use archive::fmp4;
use archive::mp4::{self, VideoCodec};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use bus::metrics::Histogram;
use media::{Codec, Frame};
use serde::Deserialize;
use std::time::Duration;

const INIT: u8 = 0;
const FRAGMENT: u8 = 1;
const ACCESS_UNIT: u8 = 2;
const JPEG: u8 = 3;

/// A send slower than this means the viewer cannot keep up: it skips ahead.
const SLOW_SEND: Duration = Duration::from_millis(500);
/// How often an open socket checks its login is still valid (logout, user
/// removed, password changed end the stream within this time).
const RECHECK: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
pub struct LiveQuery {
    mode: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Mse,
    WebCodecs,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Mse => "mse",
            Mode::WebCodecs => "webcodecs",
        }
    }
}

pub async fn live(
    State(app): State<App>,
    user: User,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<LiveQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // Browsers send the page's origin with a WebSocket handshake, and a
    // cookie goes along even from another site's page: only our own pages
    // may open one (scripts without an Origin use a bearer token).
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    if let Some(o) = origin
        && o.split_once("://").map(|(_, rest)| rest) != Some(host)
    {
        return Err(ApiError(StatusCode::FORBIDDEN, format!("WebSocket from origin {o} refused")));
    }
    let cam = camera(&app, &user, &id)?;
    let mode = match q.mode.as_deref() {
        None | Some("mse") => Mode::Mse,
        Some("webcodecs") => Mode::WebCodecs,
        Some(other) => return Err(ApiError::bad(format!("mode {other}: use mse or webcodecs"))),
    };
    let source = Source { camera: cam.id.clone(), sub: cam.sub };
    let viewer = app.hub.watch(&source).map_err(ApiError::internal)?;
    // Live video does not depend on the detector: without its topic the
    // socket carries video alone.
    let detections = app
        .detections
        .watch(&cam.id)
        .inspect_err(|e| tracing::warn!(camera = %cam.id, error = %e, "live detections unavailable"))
        .ok();
    let admin = user.is_admin();
    Ok(ws.on_upgrade(move |socket| run(socket, viewer, detections, mode, app, headers, admin)))
}

/// The next detection record to send, or never.
async fn next_detections(d: &mut Option<LiveViewer>) -> std::sync::Arc<crate::detections::LiveRecord> {
    match d {
        Some(d) => d.next().await,
        None => std::future::pending().await,
    }
}

async fn run(
    mut socket: WebSocket,
    mut viewer: Viewer,
    mut detections: Option<LiveViewer>,
    mode: Mode,
    app: App,
    headers: HeaderMap,
    admin: bool,
) {
    let mut muxer = Muxer::new(mode);
    let mut recheck = tokio::time::interval(RECHECK);
    let mut last_report = None;
    let latency = app.metrics.histogram(
        "vigil_web_live_latency_seconds",
        "Glass to glass (capture to on screen) of live video, as viewers' browsers report it.",
        &[("camera", viewer.camera()), ("mode", mode.name())],
        &bus::metrics::latency_buckets(),
    );
    loop {
        tokio::select! {
            r = next_detections(&mut detections) => {
                // Boxes are worth little late: a slow send skips this record
                // (the next one replaces it).
                let text = Message::Text(r.text.clone().into());
                match tokio::time::timeout(SLOW_SEND, socket.send(text)).await {
                    Ok(Ok(())) | Err(_) => {}
                    Ok(Err(_)) => return,
                }
            }
            f = viewer.next() => {
                let Some(f) = f else { return };
                for msg in muxer.messages(&f) {
                    match tokio::time::timeout(SLOW_SEND, socket.send(msg)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return, // the viewer left
                        Err(_) => {
                            // Behind: skip to the next key frame, and describe
                            // the stream again there (what was dropped may
                            // have been the hello or init segment).
                            viewer.skip_to_next_key();
                            muxer = Muxer::new(mode);
                            break;
                        }
                    }
                }
            }
            m = socket.recv() => match m {
                Some(Ok(Message::Text(t))) => {
                    // A browser reports about once a second; more often is
                    // not a browser and is not counted.
                    if last_report.is_none_or(|t: std::time::Instant| t.elapsed() >= MIN_REPORT_GAP) {
                        last_report = Some(std::time::Instant::now());
                        on_text(&app, &t, admin, &latency);
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            _ = recheck.tick() => {
                if app.auth.authenticate(&Method::GET, &headers).is_err() {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            }
        }
    }
}

/// The shortest time between two latency reports of one viewer that count.
const MIN_REPORT_GAP: Duration = Duration::from_millis(500);

/// Glass-to-glass latencies a viewer's browser reports (capture → on
/// screen): into the `vigil_web_live_latency_seconds` histogram, and
/// admins' reports into `/api/latency` (exact percentiles, for them and the
/// benchmark).
fn on_text(app: &App, text: &str, admin: bool, latency: &Histogram) {
    #[derive(Deserialize)]
    struct Report {
        r#type: String,
        #[serde(default)]
        ms: Vec<f64>,
    }
    let Ok(r) = serde_json::from_str::<Report>(text) else { return };
    if r.r#type != "latency" {
        return;
    }
    // A browser reports a second or so at a time; more is not a browser.
    let ms = &r.ms[..r.ms.len().min(1000)];
    for &m in ms.iter().filter(|m| m.is_finite() && (0.0..600_000.0).contains(*m)) {
        latency.observe(m / 1000.0);
    }
    if admin {
        app.latency.add(ms);
    }
}

/// Frames → messages for one viewer.
struct Muxer {
    mode: Mode,
    base_us: Option<i64>,
    /// The parameter sets the current hello/init describe.
    params: Vec<u8>,
    sequence: u32,
    last_us: Option<i64>,
    sample: Vec<u8>,
}

impl Muxer {
    fn new(mode: Mode) -> Self {
        Muxer { mode, base_us: None, params: Vec::new(), sequence: 0, last_us: None, sample: Vec::new() }
    }

    fn messages(&mut self, f: &Frame) -> Vec<Message> {
        let m = &f.meta;
        let base = *self.base_us.get_or_insert(m.capture_us);
        let mut out = Vec::new();
        let codec = match m.codec {
            Codec::H264 => VideoCodec::H264,
            Codec::H265 => VideoCodec::H265,
            Codec::Mjpeg => {
                if self.sequence == 0 {
                    out.push(hello("mjpeg", base, None, None, None));
                }
                self.sequence += 1;
                out.push(binary(JPEG, true, m.capture_us, &f.payload));
                return out;
            }
        };
        self.sample.clear();
        let ps = mp4::to_sample(codec, &f.payload, &mut self.sample);
        if m.key && ps.complete(codec) {
            let params: Vec<u8> = [ps.vps, ps.sps, ps.pps].into_iter().flatten().flatten().copied().collect();
            if params != self.params {
                let Ok(entry) = mp4::sample_entry(codec, &ps) else {
                    tracing::warn!(camera = %m.camera, "live: parameter sets not understood, frame skipped");
                    return out;
                };
                let name = if codec == VideoCodec::H264 { "h264" } else { "h265" };
                let cs = codec_string(codec, ps.sps.unwrap_or_default());
                out.push(hello(name, base, Some(&cs), Some(entry.width), Some(entry.height)));
                if self.mode == Mode::Mse {
                    out.push(binary(INIT, true, m.capture_us, &fmp4::init_segment(&entry)));
                }
                self.params = params;
            }
        }
        if self.params.is_empty() {
            return out; // nothing decodable before the first key frame
        }
        if self.mode == Mode::WebCodecs {
            out.push(binary(ACCESS_UNIT, m.key, m.capture_us, &f.payload));
            return out;
        }
        // MSE: one fragment per frame; media time is capture time since base.
        let duration_us = self.last_us.map_or(33_333, |l| (m.capture_us - l).clamp(1_000, 1_000_000));
        self.last_us = Some(m.capture_us);
        self.sequence += 1;
        let sample = fmp4::Sample {
            data: std::mem::take(&mut self.sample),
            decode_time_90k: ((m.capture_us - base).max(0) as u64) * 9 / 100,
            duration_90k: (duration_us * 9 / 100) as u32,
            key: m.key,
        };
        out.push(binary(FRAGMENT, m.key, m.capture_us, &fmp4::fragment(self.sequence, std::slice::from_ref(&sample))));
        self.sample = sample.data;
        out
    }
}

/// RFC 6381 codec string: `avc1.PPCCLL` from the SPS; HEVC Main profile
/// otherwise (browsers without HEVC refuse it either way).
fn codec_string(codec: VideoCodec, sps: &[u8]) -> String {
    match codec {
        VideoCodec::H264 if sps.len() >= 4 => format!("avc1.{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3]),
        VideoCodec::H264 => "avc1.42e01e".into(),
        VideoCodec::H265 => "hvc1.1.6.L93.B0".into(),
    }
}

fn hello(codec: &str, base_us: i64, cs: Option<&str>, width: Option<u32>, height: Option<u32>) -> Message {
    let mime = cs.map(|c| format!("video/mp4; codecs=\"{c}\""));
    let v = serde_json::json!({
        "type": "hello", "codec": codec, "base_us": base_us, "codec_string": cs,
        "mime": mime, "width": width, "height": height,
    });
    Message::Text(v.to_string().into())
}

fn binary(kind: u8, key: bool, capture_us: i64, payload: &[u8]) -> Message {
    let mut b = Vec::with_capacity(10 + payload.len());
    b.push(kind);
    b.push(key as u8);
    b.extend_from_slice(&capture_us.to_be_bytes());
    b.extend_from_slice(payload);
    Message::Binary(b.into())
}
