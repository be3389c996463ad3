//! Camera sources: where frames come from. Each camera stream runs on its
//! own thread (encoding and parsing are CPU work that must not stall the
//! async runtime) under a supervisor (`run`): a *session* connects and
//! delivers frames to a `Sink` until it fails or ends; the supervisor then
//! reports the camera down and reconnects with backoff, and the first frame
//! of the next session is flagged as following a gap.
//!
//! - `synthetic`: the built-in test camera.
//! - `rtsp`: network cameras over RTSP (`rtsp://`, through retina).
//! - `http`: MJPEG cameras over HTTP (`http://`, `https://`: a multipart
//!   stream, or a JPEG snapshot URL polled).
//! - `ffmpeg`: `ffmpeg:ARGS` and `file:PATH`, through an ffmpeg child
//!   process whose output `annexb` (H.264/H.265) or `jpeg` (MJPEG) splits
//!   into frames.

pub mod annexb;
mod credentials;
pub(crate) mod ffmpeg;
pub mod http;
pub(crate) mod jpeg;
pub mod rtsp;
mod synthetic;

use crate::buffer::BufferSender;
use crate::synthetic::SyntheticConfig;
use bus::metrics::{Counter, Gauge, Metrics};
use media::{Codec, Frame, FrameMeta, Stream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A parsed `SOURCE` string.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceSpec {
    Synthetic(SyntheticConfig),
    Rtsp(rtsp::RtspConfig),
    Http(http::HttpConfig),
    Ffmpeg(ffmpeg::Config),
    File(ffmpeg::FileConfig),
}

impl SourceSpec {
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("synthetic:") {
            return SyntheticConfig::parse(rest).map(SourceSpec::Synthetic).map_err(|e| e.to_string());
        }
        if let Some(rest) = s.strip_prefix("ffmpeg:") {
            return ffmpeg::Config::parse(rest).map(SourceSpec::Ffmpeg);
        }
        if let Some(rest) = s.strip_prefix("file:") {
            return ffmpeg::FileConfig::parse(rest).map(SourceSpec::File);
        }
        if s.starts_with("rtsp://") {
            return rtsp::RtspConfig::parse(s).map(SourceSpec::Rtsp);
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            return http::HttpConfig::parse(s).map(SourceSpec::Http);
        }
        // Only the scheme goes into the message: the rest may hold a password.
        let scheme = s.split(':').next().unwrap_or(s);
        match scheme {
            "http" | "https" => Err(format!("source {scheme}: write {scheme}://HOST[:PORT]/PATH")),
            "rtsp" => Err("source rtsp: write rtsp://HOST[:PORT]/PATH".into()),
            _ => Err(format!(
                "source kind `{scheme}` unknown: use synthetic:, rtsp://, http://, ffmpeg:ARGS or file:PATH"
            )),
        }
    }
}

/// A frame as a source captured it; the buffer gives it its `seq`.
#[derive(Debug)]
pub struct Captured {
    pub codec: Codec,
    pub key: bool,
    /// Wall-clock capture time, µs (the camera's clock when it says, else
    /// arrival; monotonic per camera stream, see `Sink::frame`).
    pub capture_us: i64,
    pub pts_90k: i64,
    pub data: Vec<u8>,
}

/// Why a session with a camera ended.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("stream broken: {0}")]
    Stream(String),
    #[error("no frame for {0:?}")]
    Timeout(Duration),
    #[error("the source ended")]
    Ended,
}

/// Where a session puts its frames.
pub struct Sink<'a> {
    camera: &'a str,
    stream: Stream,
    out: &'a mut BufferSender,
    ctx: &'a Context,
    captured: Counter,
    up: Gauge,
    frames: u64,
    last_us: i64,
    /// For the camera's state record: retries so far, and why the last
    /// session ended.
    reconnects: u64,
    last_error: String,
}

impl Sink<'_> {
    /// Offers a frame. Capture times are kept strictly increasing: a camera
    /// clock that jumps back is clamped to just after the previous frame.
    pub fn frame(&mut self, c: Captured) {
        if self.frames == 0 {
            self.up.set(1.0);
            tracing::info!(camera = self.camera, stream = self.stream.name(), "camera up");
            self.ctx.report(self.camera, self.stream, true, self.reconnects, &self.last_error);
        }
        let capture_us = c.capture_us.max(self.last_us + 1);
        self.last_us = capture_us;
        self.frames += 1;
        self.captured.inc();
        let frame = Frame {
            meta: FrameMeta {
                camera: self.camera.to_string(),
                stream: self.stream,
                codec: c.codec,
                seq: 0,
                capture_us,
                pts_90k: c.pts_90k,
                key: c.key,
                discontinuity: false,
            },
            payload: c.data,
        };
        let _ = self.out.offer(frame);
    }

    /// Whether the next frame should be a key frame (after a drop).
    pub fn wants_key_frame(&self) -> bool {
        self.out.wants_key_frame()
    }

    /// Whether the camera is being stopped: a session returns soon after.
    pub fn stopping(&self) -> bool {
        self.ctx.stop.load(Ordering::Relaxed)
    }
}

/// Reconnect delays: doubling from 0.5 s to 30 s, ±25 % jitter so many
/// cameras behind one failed switch do not reconnect in lockstep.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let base = 0.5 * 2f64.powi(attempt.min(6) as i32);
    Duration::from_secs_f64(base.min(30.0) * (0.75 + 0.5 * jitter.clamp(0.0, 1.0)))
}

/// Supervises one camera stream until `stop`: runs sessions, reconnects
/// with backoff after each failure, reports up/down (events, metrics) and
/// flags the first frame after a reconnect as following a recording gap.
pub fn run(spec: SourceSpec, camera: String, stream: Stream, mut out: BufferSender, ctx: Context) {
    let labels = [("camera", camera.as_str()), ("stream", stream.name())];
    let m = &ctx.metrics;
    let up = m.gauge("vigil_ingest_camera_up", "1 while the camera delivers frames.", &labels);
    let reconnects = m.counter("vigil_ingest_reconnects_total", "Sessions that ended and were retried.", &labels);
    let captured = m.counter("vigil_ingest_captured_frames_total", "Frames the camera produced.", &labels);
    let (mut attempt, mut last_us, mut down_reported, mut last_error) = (0u32, 0, false, String::new());
    while !ctx.stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let mut sink = Sink {
            camera: &camera,
            stream,
            out: &mut out,
            ctx: &ctx,
            captured: captured.clone(),
            up: up.clone(),
            frames: 0,
            last_us,
            reconnects: reconnects.get(),
            last_error: last_error.clone(),
        };
        let result = match &spec {
            SourceSpec::Synthetic(cfg) => synthetic::session(cfg, &mut sink),
            SourceSpec::Rtsp(cfg) => rtsp::session(cfg, &mut sink),
            SourceSpec::Http(cfg) => http::session(cfg, &mut sink),
            SourceSpec::Ffmpeg(cfg) => ffmpeg::session(cfg, &mut sink),
            SourceSpec::File(cfg) => ffmpeg::file_session(cfg, &mut sink),
        };
        let (frames, stopping) = (sink.frames, sink.stopping());
        last_us = sink.last_us;
        up.set(0.0);
        if stopping {
            break;
        }
        let reason = result.err().unwrap_or(SourceError::Ended).to_string();
        if frames > 0 {
            out.mark_gap(); // the next session's first frame follows a gap
            down_reported = false;
            if started.elapsed() > Duration::from_secs(10) {
                attempt = 0; // it ran a while: a fresh failure, retry fast
            }
        }
        // Once per outage, not once per failed retry.
        if !down_reported {
            tracing::warn!(camera, stream = stream.name(), error = %reason, "camera down; reconnecting");
            ctx.report(&camera, stream, false, reconnects.get(), &reason);
            down_reported = true;
        }
        last_error = reason;
        reconnects.inc();
        let until = Instant::now() + backoff(attempt, jitter());
        attempt += 1;
        while Instant::now() < until && !ctx.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
        }
    }
}

fn jitter() -> f64 {
    // Good enough spread without a random number crate.
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0) % 1000)
        as f64
        / 1000.0
}

/// What every camera stream's supervisor shares.
#[derive(Clone)]
pub struct Context {
    pub stop: Arc<AtomicBool>,
    pub metrics: Metrics,
    /// camera-up / camera-down events (`vigil.events`).
    pub events: Option<bus::events::Events>,
    /// The camera's current state (`vigil.cameras`).
    pub states: Option<bus::cameras::CameraStates>,
}

impl Context {
    /// A camera stream went up or down: an event, and its new state.
    fn report(&self, camera: &str, stream: Stream, up: bool, reconnects: u64, last_error: &str) {
        let source = format!("ingest:{}", stream.name());
        if let Some(e) = &self.events {
            let (kind, detail) = if up { ("camera-up", "delivering frames") } else { ("camera-down", last_error) };
            e.publish(bus::events::Event::new(kind, Some(camera), &source, detail));
        }
        if let Some(s) = &self.states {
            s.publish(&bus::cameras::CameraState {
                camera: camera.to_string(),
                stream: stream.name().to_string(),
                up,
                since_us: bus::now_us(),
                reconnects,
                last_error: last_error.to_string(),
            });
        }
    }
}

/// Runs `spec` under the supervisor for `d` and returns every frame it
/// delivered (seq assigned, gaps flagged): for tests of sources.
pub fn run_for(spec: SourceSpec, d: Duration) -> Vec<Frame> {
    let dir = std::env::temp_dir().join(format!("vigil-source-{}-{}", std::process::id(), bus::now_us()));
    let seq = crate::seq::SeqCounter::open(&dir, "t.main").expect("seq dir");
    let metrics = Metrics::default();
    let (tx, mut rx) = crate::buffer::buffer(256 << 20, seq, &metrics, "t", "t");
    let ctx = Context { stop: Arc::new(AtomicBool::new(false)), metrics, events: None, states: None };
    let stop = ctx.stop.clone();
    let t = std::thread::spawn(move || run(spec, "t".into(), Stream::Main, tx, ctx));
    std::thread::sleep(d);
    stop.store(true, Ordering::Relaxed);
    let _ = t.join();
    let mut out = Vec::new();
    while let Ok(f) = rx.try_recv() {
        out.push(f);
    }
    let _ = std::fs::remove_dir_all(&dir);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_sources() {
        assert!(matches!(SourceSpec::parse("synthetic:"), Ok(SourceSpec::Synthetic(_))));
        assert!(SourceSpec::parse("synthetic:fps=0").unwrap_err().contains("fps"));
        assert!(matches!(SourceSpec::parse("rtsp://cam/1"), Ok(SourceSpec::Rtsp(_))));
        assert!(SourceSpec::parse("carrier-pigeon:").unwrap_err().contains("unknown"));
        // A malformed source never echoes what may be a password.
        assert!(matches!(SourceSpec::parse("http://cam/mjpeg"), Ok(SourceSpec::Http(_))));
        for bad in [
            "rtsp:admin:s3cret@cam/1",
            "rtsp//admin:s3cret@cam",
            "http//admin:s3cret@cam/mjpeg",
            "https://admin:s3cret@cam/mjpeg#ca",
            "http://admin:s3cret@cam/mjpeg#poll=x",
        ] {
            let e = SourceSpec::parse(bad).unwrap_err();
            assert!(!e.contains("s3cret"), "{e}");
        }
        assert!(matches!(SourceSpec::parse("ffmpeg:-i rtsp://cam/1"), Ok(SourceSpec::Ffmpeg(_))));
        assert!(SourceSpec::parse("ffmpeg:-f v4l2").unwrap_err().contains("-i INPUT"));
        assert!(SourceSpec::parse("file:/no/such/clip.mp4?loop").unwrap_err().contains("No such file"));
    }

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter() {
        let secs = |a, j| backoff(a, j).as_secs_f64();
        assert_eq!((secs(0, 0.5), secs(1, 0.5), secs(2, 0.5)), (0.5, 1.0, 2.0));
        assert_eq!(secs(30, 0.5), 30.0);
        assert!((secs(3, 0.0), secs(3, 1.0)) == (3.0, 5.0));
    }

    #[test]
    fn a_synthetic_camera_runs_under_the_supervisor() {
        let frames = run_for(
            SourceSpec::parse("synthetic:width=64,height=64,fps=20,gop=5").unwrap(),
            Duration::from_millis(600),
        );
        assert!(frames.len() >= 5, "{} frames", frames.len());
        assert!(frames[0].meta.key && frames[0].meta.discontinuity);
        assert!(
            frames
                .windows(2)
                .all(|w| w[1].meta.seq == w[0].meta.seq + 1 && w[1].meta.capture_us > w[0].meta.capture_us)
        );
    }
}
