//! Splits an MJPEG byte stream (JPEG images back to back) into images.
//!
//! An image runs from SOI (`FF D8`) to EOI (`FF D9`). Between them the
//! marker segments are walked by their lengths (so `FF D9` inside a table or
//! a thumbnail cannot end an image early) up to each SOS; the entropy-coded
//! data after it is scanned for the next marker, skipping stuffed bytes
//! (`FF 00`), restart markers (`FF D0`..`FF D7`) and fill bytes (`FF FF`).
//! An image without a scan is a stream error, as is anything but a marker
//! where one must be. Padding between images is skipped (some cameras pad
//! frames), up to a bound. Pure: no I/O, never panics on any input
//! (`fuzz`, run by cargo-fuzz and, bounded, by the tests).

use super::SourceError;

/// The largest image accepted: beyond it the stream is broken.
pub const MAX_IMAGE: usize = 16 << 20;
/// The most padding skipped between two images.
const MAX_PADDING: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Looking for SOI.
    Seek,
    /// At a marker (`pos` is its `FF`), between segments.
    Marker,
    /// In entropy-coded data.
    Entropy,
}

/// The incremental splitter for one stream.
pub struct Splitter {
    buf: Vec<u8>,
    pos: usize,
    state: State,
    /// Whether any image was seen yet: the stream itself must start with one.
    started: bool,
    scanned: bool,
    skipped: usize,
}

impl Default for Splitter {
    fn default() -> Self {
        Splitter { buf: Vec::new(), pos: 0, state: State::Seek, started: false, scanned: false, skipped: 0 }
    }
}

impl Splitter {
    /// Appends `data` and moves every image it completes to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), SourceError> {
        self.buf.extend_from_slice(data);
        while self.step(out)? {}
        if self.buf.len() > MAX_IMAGE {
            return Err(SourceError::Stream(format!("a JPEG image over {} MiB", MAX_IMAGE >> 20)));
        }
        Ok(())
    }

    /// One step of the state machine; false when it needs more bytes.
    fn step(&mut self, out: &mut Vec<Vec<u8>>) -> Result<bool, SourceError> {
        let buf = &self.buf;
        match self.state {
            State::Seek => {
                let found = buf.windows(2).position(|w| w == [0xff, 0xd8]);
                let skip = found.unwrap_or(buf.len().saturating_sub(usize::from(buf.last() == Some(&0xff))));
                if !self.started && (skip > 0 || (found.is_none() && buf.first().is_some_and(|&b| b != 0xff))) {
                    return Err(bad("the stream does not start with a JPEG image"));
                }
                self.skipped += skip;
                if self.skipped > MAX_PADDING {
                    return Err(bad(&format!("no JPEG image in {} bytes", self.skipped)));
                }
                self.buf.drain(..skip);
                if found.is_none() {
                    return Ok(false);
                }
                (self.pos, self.state, self.started, self.scanned, self.skipped) = (2, State::Marker, true, false, 0);
                Ok(true)
            }
            State::Marker => {
                let p = self.pos;
                let (Some(&ff), Some(&m)) = (buf.get(p), buf.get(p + 1)) else { return Ok(false) };
                if ff != 0xff {
                    return Err(bad(&format!("no marker at byte {p} of an image")));
                }
                match m {
                    0xff => self.pos += 1, // fill byte
                    0xd9 if !self.scanned => return Err(bad("an image without a scan (SOS)")),
                    0xd9 => {
                        let rest = self.buf.split_off(p + 2);
                        out.push(std::mem::replace(&mut self.buf, rest));
                        (self.pos, self.state) = (0, State::Seek);
                    }
                    0xd8 => return Err(bad("a start of image (SOI) inside an image")),
                    0xd0..=0xd7 | 0x01 => self.pos += 2, // no length
                    0x00 => return Err(bad(&format!("an invalid marker FF00 at byte {p} of an image"))),
                    _ => {
                        let (Some(&hi), Some(&lo)) = (buf.get(p + 2), buf.get(p + 3)) else { return Ok(false) };
                        let len = usize::from(u16::from_be_bytes([hi, lo]));
                        if len < 2 {
                            return Err(bad(&format!("a marker segment of length {len} at byte {p}")));
                        }
                        if buf.len() < p + 2 + len {
                            return Ok(false); // wait for the whole segment
                        }
                        self.pos = p + 2 + len;
                        if m == 0xda {
                            (self.state, self.scanned) = (State::Entropy, true);
                        }
                    }
                }
                Ok(true)
            }
            State::Entropy => {
                let Some(i) = buf[self.pos..].iter().position(|&b| b == 0xff).map(|i| self.pos + i) else {
                    self.pos = buf.len();
                    return Ok(false);
                };
                let Some(&next) = buf.get(i + 1) else {
                    self.pos = i;
                    return Ok(false);
                };
                match next {
                    0x00 | 0xd0..=0xd7 => self.pos = i + 2, // stuffed byte, restart marker
                    0xff => self.pos = i + 1,               // fill: look again
                    _ => (self.pos, self.state) = (i, State::Marker),
                }
                Ok(true)
            }
        }
    }
}

fn bad(why: &str) -> SourceError {
    SourceError::Stream(format!("corrupt JPEG: {why}"))
}

/// Fuzzing entry point (`ingest::fuzz::jpeg`). The first byte picks the
/// read sizes (`crate::fuzz::Pieces`); the rest is the MJPEG stream (from
/// ffmpeg, or one HTTP part). Checks, besides never panicking: the stream
/// fed in those reads yields the same images and the same verdict as fed
/// in one piece; every image runs from SOI to EOI.
#[cfg(any(test, feature = "fuzz"))]
pub fn fuzz(data: &[u8]) {
    let Some((&ctl, stream)) = data.split_first() else { return };
    let split = |pieces: &mut dyn Iterator<Item = &[u8]>| {
        let mut s = Splitter::default();
        let mut out = Vec::new();
        for piece in pieces {
            if let Err(e) = s.push(piece, &mut out) {
                return (out, Err(e.to_string()));
            }
        }
        (out, Ok(()))
    };
    let got = split(&mut crate::fuzz::Pieces::new(ctl, stream));
    // (A larger stream may trip a bound at a different read.)
    if stream.len() <= MAX_PADDING {
        assert_eq!(got, split(&mut std::iter::once(stream)), "the read sizes changed the split");
    }
    assert!(got.0.iter().all(|j| j.starts_with(&[0xff, 0xd8]) && j.ends_with(&[0xff, 0xd9])), "{got:?}");
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// A small structurally complete JPEG: an APP0 whose payload holds
    /// `FF D9`, a scan with stuffed bytes, a restart marker and fill bytes.
    pub(crate) fn image(tag: u8) -> Vec<u8> {
        let mut j = vec![0xff, 0xd8];
        j.extend_from_slice(&[0xff, 0xe0, 0x00, 0x06, 0xff, 0xd9, 0x00, tag]);
        j.extend_from_slice(&[0xff, 0xdb, 0x00, 0x03, 0x00]);
        j.extend_from_slice(&[0xff, 0xda, 0x00, 0x04, 0x01, 0x02]);
        j.extend_from_slice(&[0x12, 0xff, 0x00, 0x34, 0xff, 0xd3, 0x56, 0xff, 0xff, 0xd9]);
        j
    }

    fn split_all(stream: &[u8], piece: usize) -> Result<Vec<Vec<u8>>, SourceError> {
        let mut s = Splitter::default();
        let mut out = Vec::new();
        for chunk in stream.chunks(piece.max(1)) {
            s.push(chunk, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn splits_images_whatever_the_read_sizes() {
        let images = [image(1), image(2), image(3)];
        for piece in [1, 2, 3, 5, 64] {
            assert_eq!(split_all(&images.concat(), piece).unwrap(), images, "pieces of {piece}");
        }
        // Padding between images is skipped.
        let padded = [image(1), vec![0; 100], image(2)].concat();
        assert_eq!(split_all(&padded, 7).unwrap(), [image(1), image(2)]);
    }

    #[test]
    fn truncated_and_corrupt_images() {
        let e = |s: &[u8]| split_all(s, 5).map_err(|e| e.to_string());
        // Truncated: nothing yet, no error (the rest may still come).
        let whole = image(1);
        for n in 0..whole.len() {
            assert_eq!(e(&whole[..n]).unwrap().len(), 0, "prefix {n}");
        }
        assert!(e(b"[mjpeg @ 0x55] error").unwrap_err().contains("does not start"));
        assert!(e(&[0xff, 0xd8, 0xff, 0xd9]).unwrap_err().contains("without a scan"));
        assert!(e(&[0xff, 0xd8, 0x12, 0x34]).unwrap_err().contains("no marker"));
        assert!(e(&[0xff, 0xd8, 0xff, 0xd8]).unwrap_err().contains("inside"));
        assert!(e(&[0xff, 0xd8, 0xff, 0xe0, 0x00, 0x01]).unwrap_err().contains("length 1"));
        let after = [image(1), vec![0x42; MAX_PADDING + 2]].concat();
        assert!(e(&after).unwrap_err().contains("no JPEG image"));
        // An image that never ends is bounded.
        let mut s = Splitter::default();
        let mut out = Vec::new();
        s.push(&image(1)[..20], &mut out).unwrap();
        let err = (0..20).find_map(|_| s.push(&vec![0x11; 1 << 20], &mut out).err()).expect("bounded");
        assert!(err.to_string().contains("16 MiB"), "{err}");
    }

    /// Bounded fuzzing in the default suite: `fuzz` on mutated streams,
    /// read whole and in pieces of many sizes.
    #[test]
    fn splitter_survives_mutation() {
        let stream = [image(1), image(2), vec![0, 0], image(3)].concat();
        let seeds = [0x00, 0x20, 0x40, 0x60, 0xe0].map(|c| [&[c], &stream[..]].concat()).to_vec();
        crate::fuzz::bounded("jpeg", &seeds, 0x1e6, Duration::from_secs(2), fuzz);
    }
}
