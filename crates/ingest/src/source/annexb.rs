//! Splits an H.264 or H.265 Annex-B byte stream into access units.
//!
//! The ffmpeg source makes ffmpeg insert an access unit delimiter (AUD) at
//! the start of every access unit, so a unit is exactly the bytes from one
//! AUD's start code to the next (emulation prevention guarantees that
//! `00 00 01` never occurs inside a NAL unit). A unit is therefore complete
//! only when the next one begins: one frame of latency.
//!
//! Invariants of what comes out: every unit starts with its AUD; a key unit
//! (an H.264 IDR, an H.265 IRAP picture) carries its parameter sets
//! (SPS/PPS, and VPS for H.265) in band, as the archive and web need. A
//! stream that sends them only with some key frames gets the last ones seen
//! inserted after the AUD of the others; a key frame with none to give is a
//! stream error. Nothing is stripped. Pure: no I/O, never panics on any
//! input (`fuzz`, run by cargo-fuzz and, bounded, by the tests).

use super::SourceError;
use media::Codec;

/// The largest access unit accepted: beyond it the stream is broken.
pub const MAX_UNIT: usize = 16 << 20;

/// One access unit.
#[derive(Debug, PartialEq)]
pub struct Unit {
    pub data: Vec<u8>,
    pub key: bool,
}

/// The incremental splitter for one stream.
pub struct Splitter {
    hevc: bool,
    buf: Vec<u8>,
    /// Where to look for the next start code (everything before is known
    /// to hold none that ends a unit).
    scan: usize,
    started: bool,
    /// The last parameter sets seen: [VPS, SPS, PPS].
    params: [Option<Vec<u8>>; 3],
}

impl Splitter {
    /// For `Codec::H264` or `Codec::H265`.
    pub fn new(codec: Codec) -> Self {
        Splitter { hevc: codec == Codec::H265, buf: Vec::new(), scan: 0, started: false, params: [None, None, None] }
    }

    /// Appends `data` and moves every access unit it completes to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Unit>) -> Result<(), SourceError> {
        self.buf.extend_from_slice(data);
        loop {
            let Some(p) = find_start(&self.buf, self.scan) else {
                self.scan = self.buf.len().saturating_sub(2).max(self.scan);
                if !self.started {
                    // Only zeros may come before the first start code.
                    if self.buf[..self.scan].iter().any(|&b| b != 0) {
                        return Err(bad("bytes before the first start code: not an Annex-B stream"));
                    }
                    // Keep a 4-byte start code's leading zero.
                    let cut = self.scan.saturating_sub(1);
                    self.buf.drain(..cut);
                    self.scan -= cut;
                }
                break;
            };
            // (Before waiting for the header: the verdict must not depend on
            // where the reads end.)
            if !self.started && self.buf[..p].iter().any(|&b| b != 0) {
                return Err(bad("bytes before the first start code: not an Annex-B stream"));
            }
            let Some(&header) = self.buf.get(p + 3) else {
                self.scan = p; // the NAL header has not arrived yet
                break;
            };
            if !self.started {
                if !self.is_aud(header) {
                    return Err(bad("the stream does not begin with an access unit delimiter"));
                }
                self.started = true;
                let cut = p.saturating_sub(1); // keep one zero: a 4-byte start code
                self.buf.drain(..cut);
                self.scan = p - cut + 3;
                continue;
            }
            if !self.is_aud(header) || p == 0 {
                self.scan = p + 3;
                continue;
            }
            // A new unit starts at this AUD (with a 4-byte start code's zero).
            let cut = if self.buf[p - 1] == 0 { p - 1 } else { p };
            let rest = self.buf.split_off(cut);
            let unit = std::mem::replace(&mut self.buf, rest);
            self.scan = p - cut + 3;
            out.push(self.unit(unit)?);
        }
        if self.buf.len() > MAX_UNIT {
            return Err(SourceError::Stream(format!("an access unit over {} MiB", MAX_UNIT >> 20)));
        }
        Ok(())
    }

    /// The stream ended cleanly (ffmpeg writes whole packets): what is left
    /// is the last access unit.
    pub fn finish(&mut self) -> Result<Option<Unit>, SourceError> {
        let rest = std::mem::take(&mut self.buf);
        self.scan = 0;
        if !self.started || rest.len() < 5 {
            return Ok(None);
        }
        self.unit(rest).map(Some)
    }

    fn is_aud(&self, header: u8) -> bool {
        header & 0x80 == 0 && self.nal_type(header) == if self.hevc { 35 } else { 9 }
    }

    fn nal_type(&self, header: u8) -> u8 {
        if self.hevc { (header >> 1) & 0x3f } else { header & 0x1f }
    }

    /// Which parameter set a NAL type is: 0 VPS, 1 SPS, 2 PPS.
    fn param_index(&self, t: u8) -> Option<usize> {
        match (self.hevc, t) {
            (true, 32..=34) => Some(t as usize - 32),
            (false, 7) => Some(1),
            (false, 8) => Some(2),
            _ => None,
        }
    }

    /// Classifies a unit, remembers its parameter sets and, for a key unit
    /// that lacks them, inserts the last ones seen.
    fn unit(&mut self, mut data: Vec<u8>) -> Result<Unit, SourceError> {
        let nals = nal_units(&data);
        let mut have = [!self.hevc, false, false]; // H.264 has no VPS
        let mut key = false;
        for &(start, end) in &nals {
            let t = self.nal_type(data[start]);
            if let Some(i) = self.param_index(t) {
                have[i] = true;
                self.params[i] = Some(data[start..end].to_vec());
            }
            key |= if self.hevc { (16..=21).contains(&t) } else { t == 5 };
        }
        if key && have.iter().any(|h| !h) {
            let mut insert = Vec::new();
            for (i, p) in self.params.iter().enumerate() {
                if have[i] {
                    continue;
                }
                let p = p.as_ref().ok_or_else(|| {
                    bad("a key frame without parameter sets (SPS/PPS), and none seen before: the camera sends them only out of band, which this source does not support")
                })?;
                insert.extend_from_slice(&[0, 0, 0, 1]);
                insert.extend_from_slice(p);
            }
            // After the AUD: at the second NAL unit's start code.
            let at = nals.get(1).map_or(data.len(), |&(start, _)| start - 3);
            data.splice(at..at, insert);
        }
        Ok(Unit { data, key })
    }
}

fn bad(why: &str) -> SourceError {
    SourceError::Stream(format!("bad H.264/H.265 stream: {why}"))
}

/// The position of the next `00 00 01` at or after `from`.
fn find_start(buf: &[u8], from: usize) -> Option<usize> {
    let hay = buf.get(from..)?;
    let mut i = 0;
    while i + 3 <= hay.len() {
        // Skip fast: a start code's third byte is 1, its second 0.
        match hay[i + 2] {
            1 if hay[i] == 0 && hay[i + 1] == 0 => return Some(from + i),
            0 => i += 1,
            _ => i += 3,
        }
    }
    None
}

/// The NAL units of one access unit: (header position, end), the end
/// without trailing zero bytes (a following 4-byte start code's zero).
pub fn nal_units(au: &[u8]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    while let Some(p) = find_start(au, at) {
        if let Some(last) = out.last_mut() {
            last.1 = p;
        }
        if p + 3 < au.len() {
            out.push((p + 3, au.len()));
        }
        at = p + 3;
    }
    for n in &mut out {
        while n.1 > n.0 + 1 && au[n.1 - 1] == 0 {
            n.1 -= 1;
        }
    }
    out
}

/// Fuzzing entry point (`ingest::fuzz::annexb`). The first byte picks the
/// codec (bit 0: H.265) and the read sizes (`crate::fuzz::Pieces`); the
/// rest is ffmpeg's output. Checks, besides never panicking: the stream
/// fed in those reads yields the same units and the same verdict as fed in
/// one piece; every unit starts with its AUD; every key unit carries its
/// parameter sets.
#[cfg(any(test, feature = "fuzz"))]
pub fn fuzz(data: &[u8]) {
    let Some((&ctl, stream)) = data.split_first() else { return };
    let codec = if ctl & 1 == 1 { Codec::H265 } else { Codec::H264 };
    let split = |pieces: &mut dyn Iterator<Item = &[u8]>| {
        let mut s = Splitter::new(codec);
        let mut out = Vec::new();
        for piece in pieces {
            if let Err(e) = s.push(piece, &mut out) {
                return (out, Err(e.to_string()));
            }
        }
        let end = s.finish().map(|last| out.extend(last)).map_err(|e| e.to_string());
        (out, end)
    };
    let got = split(&mut crate::fuzz::Pieces::new(ctl, stream));
    // (A larger stream may trip the size bound at a different read.)
    if stream.len() <= MAX_UNIT {
        assert_eq!(got, split(&mut std::iter::once(stream)), "the read sizes changed the split");
    }
    let s = Splitter::new(codec);
    for u in &got.0 {
        let nals = nal_units(&u.data);
        let first = nals.first().map(|&(start, _)| start);
        assert!(first.is_some_and(|h| u.data[..h].ends_with(&[0, 0, 1]) && s.is_aud(u.data[h])), "{u:?}");
        if u.key {
            let mut have = [!s.hevc, false, false];
            for &(start, _) in &nals {
                if let Some(i) = s.param_index(s.nal_type(u.data[start])) {
                    have[i] = true;
                }
            }
            assert_eq!(have, [true; 3], "a key unit without its parameter sets: {u:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const AUD: &[u8] = &[0, 0, 0, 1, 0x09, 0xf0];
    const SPS: &[u8] = &[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e];
    const PPS: &[u8] = &[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80];
    const IDR: &[u8] = &[0, 0, 1, 0x65, 0x88, 0x84, 0x00, 0x00, 0x03, 0x01, 0x7f];
    const P: &[u8] = &[0, 0, 1, 0x41, 0x9a, 0x02, 0x03];
    const H5_AUD: &[u8] = &[0, 0, 0, 1, 0x46, 0x01, 0x10];
    const H5_VPS: &[u8] = &[0, 0, 0, 1, 0x40, 0x01, 0x0c];
    const H5_SPS: &[u8] = &[0, 0, 0, 1, 0x42, 0x01, 0x01];
    const H5_PPS: &[u8] = &[0, 0, 0, 1, 0x44, 0x01, 0xc1];
    const H5_IDR: &[u8] = &[0, 0, 1, 0x28, 0x01, 0xaf]; // type 20, IDR_N_LP
    const H5_CRA: &[u8] = &[0, 0, 1, 0x2a, 0x01, 0xaf]; // type 21
    const H5_TRAIL: &[u8] = &[0, 0, 1, 0x02, 0x01, 0xd0]; // type 1

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn split_all(s: &mut Splitter, stream: &[u8], piece: usize) -> Result<Vec<Unit>, SourceError> {
        let mut out = Vec::new();
        for chunk in stream.chunks(piece.max(1)) {
            s.push(chunk, &mut out)?;
        }
        out.extend(s.finish()?);
        Ok(out)
    }

    #[test]
    fn splits_at_delimiters_whatever_the_read_sizes() {
        let units = [cat(&[AUD, SPS, PPS, IDR]), cat(&[AUD, P]), cat(&[AUD, P]), cat(&[AUD, SPS, PPS, IDR])];
        let stream = units.concat();
        for piece in [1, 2, 3, 5, 7, 64, 4096] {
            let got = split_all(&mut Splitter::new(Codec::H264), &stream, piece).unwrap();
            let data: Vec<_> = got.iter().map(|u| u.data.clone()).collect();
            assert_eq!(data, units, "pieces of {piece}");
            assert_eq!(got.iter().map(|u| u.key).collect::<Vec<_>>(), [true, false, false, true]);
        }
    }

    #[test]
    fn a_unit_is_complete_only_when_the_next_begins() {
        let mut s = Splitter::new(Codec::H264);
        let mut out = Vec::new();
        s.push(&cat(&[AUD, SPS, PPS, IDR]), &mut out).unwrap();
        assert!(out.is_empty());
        s.push(&AUD[..4], &mut out).unwrap(); // start code, header not yet
        assert!(out.is_empty());
        s.push(&AUD[4..], &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn key_frames_get_the_last_parameter_sets() {
        let stream = cat(&[AUD, SPS, PPS, IDR, AUD, P, AUD, IDR, AUD, P]);
        let got = split_all(&mut Splitter::new(Codec::H264), &stream, 1000).unwrap();
        assert_eq!(got[2].data, cat(&[AUD, SPS, PPS, IDR]));
        assert!(got[2].key);
        // A key frame with nothing to give is a clear error.
        let err = split_all(&mut Splitter::new(Codec::H264), &cat(&[AUD, IDR, AUD, P]), 1000).unwrap_err();
        assert!(err.to_string().contains("parameter sets"), "{err}");
    }

    #[test]
    fn hevc_irap_and_parameter_sets() {
        let stream = cat(&[H5_AUD, H5_VPS, H5_SPS, H5_PPS, H5_IDR, H5_AUD, H5_TRAIL, H5_AUD, H5_CRA, H5_AUD, H5_TRAIL]);
        let got = split_all(&mut Splitter::new(Codec::H265), &stream, 3).unwrap();
        assert_eq!(got.iter().map(|u| u.key).collect::<Vec<_>>(), [true, false, true, false]);
        assert_eq!(got[2].data, cat(&[H5_AUD, H5_VPS, H5_SPS, H5_PPS, H5_CRA]));
    }

    #[test]
    fn garbage_and_truncation_are_errors_or_nothing() {
        let e = |s: &[u8]| split_all(&mut Splitter::new(Codec::H264), s, 7).map(|u| u.len());
        assert!(e(b"Error opening input: no such file\n").unwrap_err().to_string().contains("Annex-B"));
        assert!(e(&cat(&[SPS, AUD, P])).unwrap_err().to_string().contains("delimiter"));
        assert_eq!(e(&[]).unwrap(), 0);
        assert_eq!(e(&[0, 0, 0, 1]).unwrap(), 0); // truncated before any header
        assert_eq!(e(&cat(&[AUD, SPS, PPS, &IDR[..5]])).unwrap(), 1); // a truncated tail is passed on
        // A unit that never ends is bounded.
        let mut s = Splitter::new(Codec::H264);
        let mut out = Vec::new();
        s.push(&cat(&[AUD, SPS, PPS, IDR]), &mut out).unwrap();
        let filler = vec![0x55u8; 1 << 20];
        let err = (0..20).find_map(|_| s.push(&filler, &mut out).err()).expect("bounded");
        assert!(err.to_string().contains("16 MiB"), "{err}");
    }

    #[test]
    fn nal_units_trim_start_code_zeros() {
        let au = cat(&[AUD, SPS, IDR]);
        let n: Vec<&[u8]> = nal_units(&au).into_iter().map(|(a, b)| &au[a..b]).collect();
        assert_eq!(n, [&AUD[4..], &SPS[4..], &IDR[3..]]);
        assert!(nal_units(&[0, 0, 1]).is_empty());
    }

    /// Bounded fuzzing in the default suite: `fuzz` on mutated valid
    /// streams of both codecs, read whole and in pieces of many sizes.
    #[test]
    fn splitter_survives_mutation() {
        let h264 = cat(&[AUD, SPS, PPS, IDR, AUD, P, AUD, IDR, AUD, P, P]);
        let h265 = cat(&[H5_AUD, H5_VPS, H5_SPS, H5_PPS, H5_IDR, H5_AUD, H5_TRAIL, H5_AUD, H5_CRA, H5_AUD]);
        // The control byte: bit 0 the codec, the top three bits the reads.
        let seeds = [0x00, 0x40, 0x80, 0xe0].map(|c| [&[c], &h264[..]].concat());
        let seeds = [seeds, [0x21, 0x61, 0xa1, 0xe1].map(|c| [&[c], &h265[..]].concat())].concat();
        crate::fuzz::bounded("annexb", &seeds, 0xa0d, Duration::from_secs(2), fuzz);
    }
}
