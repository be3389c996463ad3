//! Fuzzing entry points, one per parser of bytes that come from cameras
//! (directly, or relayed by ffmpeg). The cargo-fuzz targets in `fuzz/` call
//! these for long runs (nightly); each module's bounded fuzz test calls the
//! same function in the default suite. None may panic, whatever the bytes:
//! a panic is a bug found (a parser crashing, or one of the invariants an
//! entry point asserts not holding).
//!
//! Parsers that a source feeds read by read take the first input byte as a
//! control byte: it picks the read sizes (`Pieces`) and, where there is a
//! choice, the codec.

pub use crate::source::annexb::fuzz as annexb;
pub use crate::source::ffmpeg::fuzz as ffmpeg;
pub use crate::source::http::fuzz as http;
pub use crate::source::jpeg::fuzz as jpeg;
pub use crate::source::rtsp::fuzz as rtsp;

use media::fuzz::Rng;

/// `data` cut into pieces the way a pipe or socket hands bytes over: the
/// sizes are drawn from a generator seeded with `ctl`, up to 1, 4, 16, …,
/// 4096 bytes (`ctl >> 5` from 0 to 6) or whole (7). An iterator, and a
/// `std::io::Read` (a read returns at most one piece).
pub(crate) struct Pieces<'a> {
    rest: &'a [u8],
    rng: Rng,
    max: usize,
}

impl<'a> Pieces<'a> {
    pub(crate) fn new(ctl: u8, data: &'a [u8]) -> Self {
        let k = u32::from(ctl >> 5);
        let max = if k == 7 { usize::MAX } else { 1 << (2 * k) };
        Pieces { rest: data, rng: Rng::new(u64::from(ctl)), max }
    }

    fn take(&mut self, limit: usize) -> &'a [u8] {
        let n = self.rng.below(self.max).saturating_add(1).min(limit).min(self.rest.len());
        let (piece, rest) = self.rest.split_at(n);
        self.rest = rest;
        piece
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        (!self.rest.is_empty()).then(|| self.take(usize::MAX))
    }
}

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let piece = self.take(buf.len());
        buf[..piece.len()].copy_from_slice(piece);
        Ok(piece.len())
    }
}

/// Runs `target` on mutations of `seeds` for `budget` (the default suite's
/// bounded fuzzing), from a fixed generator seed so that a failure replays;
/// the failing input is printed. With `VIGIL_FUZZ_SEEDS=DIR` set, the seeds
/// are also written to `DIR/NAME/` (the cargo-fuzz seed corpus).
#[cfg(test)]
pub(crate) fn bounded(name: &str, seeds: &[Vec<u8>], seed: u64, budget: std::time::Duration, target: fn(&[u8])) {
    if let Some(dir) = std::env::var_os("VIGIL_FUZZ_SEEDS") {
        let dir = std::path::Path::new(&dir).join(name);
        std::fs::create_dir_all(&dir).expect("seed dir");
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), s).expect("seed file");
        }
    }
    let mut rng = Rng::new(seed);
    let deadline = std::time::Instant::now() + budget;
    let mut runs = 0;
    while std::time::Instant::now() < deadline {
        let mut d = seeds[rng.below(seeds.len())].clone();
        for _ in 0..=rng.below(6) {
            rng.mutate(&mut d);
        }
        if let Err(panic) = std::panic::catch_unwind(|| target(&d)) {
            let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
            eprintln!("fuzz {name}: run {runs} failed on input {hex}");
            std::panic::resume_unwind(panic);
        }
        runs += 1;
    }
    // A loop too slow to try much is not fuzzing.
    assert!(runs > 200, "fuzz {name}: only {runs} runs");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn pieces_cover_the_input_in_order() {
        let data: Vec<u8> = (0..=255).collect();
        for ctl in [0, 0x20, 0x45, 0xc3, 0xe0, 0xff] {
            let pieces: Vec<&[u8]> = Pieces::new(ctl, &data).collect();
            assert_eq!(pieces.concat(), data, "{ctl:#x}");
            assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= 1 << (2 * (ctl >> 5))), "{ctl:#x}");
        }
        assert_eq!(Pieces::new(0xe0, &data).count(), 1);
        assert!(Pieces::new(0, &data).all(|p| p.len() == 1));
        let (mut r, mut buf, mut read) = (Pieces::new(0xe0, &data), [0; 100], Vec::new());
        while let Ok(n @ 1..) = r.read(&mut buf) {
            read.extend_from_slice(&buf[..n]);
        }
        assert_eq!(read, data);
    }
}
