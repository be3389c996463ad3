//! Camera sources: where frames come from. A source runs on its own thread
//! (encoding and parsing are CPU work that must not stall the async
//! runtime) and offers each frame to its buffer.

use crate::buffer::BufferSender;
use bus::metrics::Metrics;
use media::synthetic::{Encoder, SyntheticConfig, render};
use media::{Frame, FrameMeta, Stream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A parsed `SOURCE` string.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceSpec {
    Synthetic(SyntheticConfig),
}

impl SourceSpec {
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("synthetic:") {
            return SyntheticConfig::parse(rest).map(SourceSpec::Synthetic).map_err(|e| e.to_string());
        }
        let scheme = s.split(':').next().unwrap_or(s);
        match scheme {
            "rtsp" | "http" | "https" | "ffmpeg" | "file" => {
                Err(format!("source `{s}`: {scheme} cameras are not supported by this build yet; use synthetic:"))
            }
            _ => Err(format!("source `{s}`: unknown kind (expected synthetic:OPTIONS)")),
        }
    }
}

/// Runs `spec` until `stop` is set, offering frames to `out`.
pub fn run(
    spec: SourceSpec,
    camera: String,
    stream: Stream,
    mut out: BufferSender,
    stop: Arc<AtomicBool>,
    metrics: Metrics,
) {
    match spec {
        SourceSpec::Synthetic(cfg) => {
            if let Err(e) = run_synthetic(&cfg, &camera, stream, &mut out, &stop, &metrics) {
                tracing::error!(camera, stream = stream.name(), error = %e, "synthetic camera stopped");
            }
        }
    }
}

/// A pre-encoded loop of whole GOPs (`replay=N`): it starts at a key frame
/// and wraps around at one, so the stream stays decodable.
struct Replay {
    frames: Vec<media::synthetic::Encoded>,
    at: usize,
}

impl Replay {
    fn encode(cfg: &SyntheticConfig, encoder: &mut Encoder) -> Result<Self, media::Error> {
        let n = cfg.replay.div_ceil(cfg.gop) * cfg.gop;
        let mut picture = Vec::new();
        let mut frames = Vec::with_capacity(n as usize);
        for i in 0..n {
            render(cfg.width, cfg.height, i as u64, i as i64 * 1_000_000 / cfg.fps as i64, &mut picture);
            let enc = encoder.encode(&picture, cfg.width, cfg.height, i % cfg.gop == 0)?;
            if !enc.data.is_empty() {
                frames.push(enc);
            }
        }
        Ok(Replay { frames, at: 0 })
    }

    /// The next frame; with `key`, the next key frame.
    fn next(&mut self, key: bool) -> media::synthetic::Encoded {
        if self.at >= self.frames.len() || (key && !self.frames[self.at].key) {
            let from = if self.at >= self.frames.len() { 0 } else { self.at };
            self.at = (from..self.frames.len()).find(|&i| self.frames[i].key).unwrap_or(0);
        }
        self.at += 1;
        self.frames[self.at - 1].clone()
    }
}

fn run_synthetic(
    cfg: &SyntheticConfig,
    camera: &str,
    stream: Stream,
    out: &mut BufferSender,
    stop: &AtomicBool,
    metrics: &Metrics,
) -> Result<(), media::Error> {
    let mut encoder = Encoder::new(cfg)?;
    let captured = metrics.counter(
        "vigil_ingest_captured_frames_total",
        "Frames the camera produced.",
        &[("camera", camera), ("stream", stream.name())],
    );
    let period = Duration::from_secs_f64(1.0 / cfg.fps as f64);
    let mut next = Instant::now();
    let mut picture = Vec::new();
    let mut n: u64 = 0;
    let mut replay = (cfg.replay > 0).then(|| Replay::encode(cfg, &mut encoder)).transpose()?;
    tracing::info!(
        camera,
        stream = stream.name(),
        width = cfg.width,
        height = cfg.height,
        fps = cfg.fps,
        codec = cfg.codec.name(),
        "synthetic camera started"
    );
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > period * 5 {
            next = now; // fell far behind (machine busy): skip, do not burst
        }
        next += period;
        let capture_us = bus::now_us();
        let enc = match replay.as_mut() {
            Some(r) => r.next(out.wants_key_frame()),
            None => {
                render(cfg.width, cfg.height, n, capture_us, &mut picture);
                encoder.encode(&picture, cfg.width, cfg.height, out.wants_key_frame())?
            }
        };
        n += 1;
        if enc.data.is_empty() {
            continue; // the encoder's rate control skipped this picture
        }
        captured.inc();
        let frame = Frame {
            meta: FrameMeta {
                camera: camera.to_string(),
                stream,
                codec: encoder.codec(),
                seq: 0,
                capture_us,
                pts_90k: ((n - 1) * 90_000 / cfg.fps as u64) as i64,
                key: enc.key,
                discontinuity: false,
            },
            payload: enc.data,
        };
        let _ = out.offer(frame);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_sources() {
        assert!(matches!(SourceSpec::parse("synthetic:"), Ok(SourceSpec::Synthetic(_))));
        assert!(SourceSpec::parse("synthetic:fps=0").unwrap_err().contains("fps"));
        assert!(SourceSpec::parse("rtsp://cam/1").unwrap_err().contains("not supported"));
        assert!(SourceSpec::parse("carrier-pigeon:").unwrap_err().contains("unknown"));
    }
}
