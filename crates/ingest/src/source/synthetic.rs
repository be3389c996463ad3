//! The synthetic camera as a source: renders and encodes a moving scene
//! (or replays a pre-encoded loop), paced to its frame rate.

use super::{Captured, Sink, SourceError};
use crate::synthetic::{Encoder, SyntheticConfig, render};
use std::time::{Duration, Instant};

/// A pre-encoded loop of whole GOPs (`replay=N`): it starts at a key frame
/// and wraps around at one, so the stream stays decodable.
struct Replay {
    frames: Vec<crate::synthetic::Encoded>,
    at: usize,
}

impl Replay {
    fn encode(cfg: &SyntheticConfig, encoder: &mut Encoder) -> Result<Self, crate::synthetic::Error> {
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
    fn next(&mut self, key: bool) -> crate::synthetic::Encoded {
        if self.at >= self.frames.len() || (key && !self.frames[self.at].key) {
            let from = if self.at >= self.frames.len() { 0 } else { self.at };
            self.at = (from..self.frames.len()).find(|&i| self.frames[i].key).unwrap_or(0);
        }
        self.at += 1;
        self.frames[self.at - 1].clone()
    }
}

/// Runs until the camera stops; a synthetic camera never fails on its own.
pub fn session(cfg: &SyntheticConfig, sink: &mut Sink) -> Result<(), SourceError> {
    let err = |e: crate::synthetic::Error| SourceError::Stream(e.to_string());
    let mut encoder = Encoder::new(cfg).map_err(err)?;
    let period = Duration::from_secs_f64(1.0 / cfg.fps as f64);
    let mut next = Instant::now();
    let mut picture = Vec::new();
    let mut n: u64 = 0;
    let mut replay = (cfg.replay > 0).then(|| Replay::encode(cfg, &mut encoder)).transpose().map_err(err)?;
    while !sink.stopping() {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > period * 5 {
            next = now; // fell far behind (machine busy): skip, do not burst
        }
        next += period;
        let capture_us = bus::now_us();
        let enc = match replay.as_mut() {
            Some(r) => r.next(sink.wants_key_frame()),
            None => {
                render(cfg.width, cfg.height, n, capture_us, &mut picture);
                encoder.encode(&picture, cfg.width, cfg.height, sink.wants_key_frame()).map_err(err)?
            }
        };
        n += 1;
        if enc.data.is_empty() {
            continue; // the encoder's rate control skipped this picture
        }
        sink.frame(Captured {
            codec: encoder.codec(),
            key: enc.key,
            capture_us,
            pts_90k: ((n - 1) * 90_000 / cfg.fps as u64) as i64,
            data: enc.data,
        });
    }
    Ok(())
}
