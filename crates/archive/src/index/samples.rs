//! The packed sample table of a recording: one entry per frame, a few
//! bytes each (moonfire-nvr keeps its per-frame index the same way, as a
//! blob beside a row per recording).
//!
//! Per frame, relative to the frame before it (the first to the
//! recording's first seq and capture time, and pts 0): seq delta
//! (varint), length (varint), capture-time delta µs (zigzag varint), pts
//! delta (zigzag varint), flags (1 byte: key, discontinuity), CRC-32 of the
//! bytes (4 bytes, little endian). Offsets are implied: a recording's
//! frames are contiguous in its segment file. Decoding a corrupt table is
//! an error, never a panic.

/// One frame as the sample table records it, with its offset worked out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub seq: u64,
    /// Byte offset in the segment file.
    pub offset: u64,
    pub len: u64,
    pub capture_us: i64,
    pub pts_90k: i64,
    pub key: bool,
    pub discontinuity: bool,
    pub crc: u32,
}

/// Where the previous entry left off: what the next one is relative to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Last {
    pub seq: u64,
    pub capture_us: i64,
    pub pts_90k: i64,
}

const KEY: u8 = 1;
const DISCONTINUITY: u8 = 2;

/// Appends `s` after `last`; `s.seq` must be above `last.seq` (the first
/// entry: equal, with `last` the recording's start).
pub fn append(out: &mut Vec<u8>, last: Last, s: &Sample) {
    varint(out, s.seq - last.seq);
    varint(out, s.len);
    varint(out, zigzag(s.capture_us.wrapping_sub(last.capture_us)));
    varint(out, zigzag(s.pts_90k.wrapping_sub(last.pts_90k)));
    out.push(if s.key { KEY } else { 0 } | if s.discontinuity { DISCONTINUITY } else { 0 });
    out.extend_from_slice(&s.crc.to_le_bytes());
}

/// The entries of a table, given the recording's first seq, capture time
/// and byte offset.
pub struct Samples<'a> {
    data: &'a [u8],
    pos: usize,
    last: Last,
    offset: u64,
    first: bool,
}

impl<'a> Samples<'a> {
    pub fn new(data: &'a [u8], first_seq: u64, first_us: i64, offset: u64) -> Self {
        Samples { data, pos: 0, last: Last { seq: first_seq, capture_us: first_us, pts_90k: 0 }, offset, first: true }
    }

    #[inline]
    fn varint(&mut self) -> Option<u64> {
        // Most entries' seq deltas and flags fit one byte.
        let b = *self.data.get(self.pos)?;
        if b < 0x80 {
            self.pos += 1;
            return Some(u64::from(b));
        }
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.data.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None // more than ten bytes: not a varint we wrote
    }

    fn entry(&mut self) -> Option<Sample> {
        let seq_delta = self.varint()?;
        if seq_delta == 0 && !self.first {
            return None;
        }
        let seq = self.last.seq.checked_add(seq_delta)?;
        let len = self.varint()?;
        let capture_us = self.last.capture_us.checked_add(unzigzag(self.varint()?))?;
        let pts_90k = self.last.pts_90k.checked_add(unzigzag(self.varint()?))?;
        let flags = *self.data.get(self.pos)?;
        let crc = u32::from_le_bytes(self.data.get(self.pos + 1..self.pos + 5)?.try_into().ok()?);
        self.pos += 5;
        let s = Sample {
            seq,
            offset: self.offset,
            len,
            capture_us,
            pts_90k,
            key: flags & KEY != 0,
            discontinuity: flags & DISCONTINUITY != 0,
            crc,
        };
        self.offset = self.offset.checked_add(len)?;
        self.last = Last { seq, capture_us, pts_90k };
        self.first = false;
        Some(s)
    }
}

/// A sample table that does not decode.
#[derive(Debug, PartialEq, Eq)]
pub struct Corrupt {
    pub at: usize,
}

impl Iterator for Samples<'_> {
    type Item = Result<Sample, Corrupt>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() {
            return None;
        }
        let at = self.pos;
        match self.entry() {
            Some(s) => Some(Ok(s)),
            None => {
                self.pos = self.data.len(); // stop after the first error
                Some(Err(Corrupt { at }))
            }
        }
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64, offset: u64, len: u64, capture_us: i64, pts_90k: i64, key: bool) -> Sample {
        Sample { seq, offset, len, capture_us, pts_90k, key, discontinuity: false, crc: seq as u32 * 7919 }
    }

    fn pack(samples: &[Sample]) -> Vec<u8> {
        let first = samples[0];
        let mut last = Last { seq: first.seq, capture_us: first.capture_us, pts_90k: 0 };
        let mut out = Vec::new();
        for s in samples {
            append(&mut out, last, s);
            last = Last { seq: s.seq, capture_us: s.capture_us, pts_90k: s.pts_90k };
        }
        out
    }

    #[test]
    fn round_trip_and_size() {
        // 30 fps, a key frame a second, a seq gap, a clock step back in pts.
        let mut samples = Vec::new();
        let (mut offset, mut seq) = (1000u64, 500u64);
        for i in 0..300i64 {
            let len = if i % 30 == 0 { 60_000 } else { 12_000 + (i as u64 * 37) % 900 };
            seq += if i == 150 { 3 } else { 1 };
            let pts = if i < 200 { i * 3000 } else { (i - 200) * 3000 - 10 };
            samples.push(sample(seq, offset, len, 1_700_000_000_000_000 + i * 33_333, pts, i % 30 == 0));
            offset += len;
        }
        let packed = pack(&samples);
        let back: Vec<Sample> =
            Samples::new(&packed, samples[0].seq, samples[0].capture_us, 1000).collect::<Result<_, _>>().unwrap();
        assert_eq!(back, samples);
        // A handful of bytes a frame, where a row per frame took ~100.
        assert!(packed.len() < 300 * 14, "{} bytes for 300 frames", packed.len());
    }

    #[test]
    fn corrupt_tables_are_errors_never_panics() {
        let s: Vec<Sample> = (0..5).map(|i| sample(10 + i, i * 10, 10, i as i64 * 100, 0, i == 0)).collect();
        let good = pack(&s);
        for n in 0..good.len() {
            let got: Vec<_> = Samples::new(&good[..n], 10, 0, 0).collect();
            assert!(got.iter().filter(|r| r.is_err()).count() <= 1, "stops after the first error");
            assert!(got.len() <= 5);
        }
        // A repeated seq (delta 0 after the first) and hostile varints.
        let mut repeat = good.clone();
        let second = good.len() / 5;
        repeat[second] = 0;
        assert!(Samples::new(&repeat, 10, 0, 0).any(|r| r.is_err()));
        let hostile = [0xffu8; 40];
        assert!(Samples::new(&hostile, u64::MAX, i64::MAX, u64::MAX).all(|r| r.is_err()));
    }
}
