//! Fuzzing entry points for every parser of outside bytes in this crate,
//! shared by the bounded fuzz test below (run in the default suite) and the
//! cargo-fuzz targets in `fuzz/` (for long runs with a nightly toolchain).

use crate::{Chunk, Limits, Reassembler};
use std::time::Instant;

/// Decodes `data` as a record and feeds it to a reassembler. Must never
/// panic, whatever the bytes.
pub fn envelope(data: &[u8]) {
    let mut r = Reassembler::new(Limits { max_pending_bytes: 1 << 20, max_frame_bytes: 1 << 20, ..Limits::default() });
    if let Ok(c) = Chunk::decode(data) {
        let _ = r.push(c, Instant::now());
    }
    // Also as a stream of records split at arbitrary points.
    for piece in data.chunks(97) {
        if let Ok(c) = Chunk::decode(piece) {
            let _ = r.push(c, Instant::now());
        }
    }
}

/// A small deterministic generator (xorshift), so a failure replays.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// One random mutation of `data`: flip, set, insert, delete, truncate,
    /// or fix up the checksum so the mutation reaches the field parsers.
    pub fn mutate(&mut self, data: &mut Vec<u8>) {
        match self.below(6) {
            0 if !data.is_empty() => {
                let i = self.below(data.len());
                data[i] ^= 1 << self.below(8);
            }
            1 if !data.is_empty() => {
                let i = self.below(data.len());
                data[i] = self.next_u64() as u8;
            }
            2 => {
                let i = self.below(data.len() + 1);
                data.insert(i, self.next_u64() as u8);
            }
            3 if !data.is_empty() => {
                let i = self.below(data.len());
                data.remove(i);
            }
            4 => {
                let n = self.below(data.len() + 1);
                data.truncate(n);
            }
            _ if data.len() > 4 => {
                let n = data.len() - 4;
                let crc = crc32fast::hash(&data[..n]);
                data[n..].copy_from_slice(&crc.to_be_bytes());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Codec, Frame, FrameMeta, Stream, split};

    /// Bounded fuzzing in the default suite: mutated valid records, with
    /// checksums often repaired so the header parsers see hostile values.
    #[test]
    fn envelope_survives_mutation() {
        let frame = Frame {
            meta: FrameMeta {
                camera: "fuzz".into(),
                stream: Stream::Sub,
                codec: Codec::H264,
                seq: 42,
                capture_us: -5,
                pts_90k: 9,
                key: true,
                discontinuity: true,
            },
            payload: (0..600u32).map(|i| i as u8).collect(),
        };
        let seeds = split(&frame, 256).unwrap();
        let mut rng = Rng::new(0x5eed);
        let deadline = Instant::now() + std::time::Duration::from_secs(3);
        let mut runs = 0;
        while Instant::now() < deadline {
            let mut d = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(4) {
                rng.mutate(&mut d);
            }
            envelope(&d);
            runs += 1;
        }
        assert!(runs > 1000, "only {runs} runs");
    }
}
