//! The frame record: what a camera hands to Kafka, one encoded access unit.
//!
//! On the wire a frame travels as one or more *chunks* (see `chunk`); each
//! chunk is a self-describing, versioned, checksummed envelope. The layout of
//! version 1 (all integers big-endian):
//!
//! ```text
//! "VGF" | version u8 | codec u8 | stream u8 | flags u8 | camera_len u8 | camera
//! seq u64 | capture_us i64 | pts_90k i64 | chunk_index u16 | chunk_count u16
//! frame_len u32 | chunk_offset u32 | payload_len u32 | payload | crc32 u32
//! ```
//!
//! The CRC covers every byte before it, so a truncated or bit-flipped record
//! is rejected rather than archived.

use crate::Error;

pub const MAGIC: &[u8; 3] = b"VGF";
pub const VERSION: u8 = 1;
/// Longest camera id; ids are also Kafka keys and file names, so keep them short.
pub const MAX_CAMERA_ID: usize = 64;
const FLAG_KEY: u8 = 1;
const FLAG_DISCONTINUITY: u8 = 2;
/// Fixed bytes around the camera id and the payload.
pub const OVERHEAD: usize = 3 + 5 + 8 * 3 + 2 * 2 + 4 * 3 + 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    H264,
    H265,
    Mjpeg,
}

impl Codec {
    fn to_u8(self) -> u8 {
        match self {
            Codec::H264 => 1,
            Codec::H265 => 2,
            Codec::Mjpeg => 3,
        }
    }
    fn from_u8(v: u8) -> Result<Self, Error> {
        Ok(match v {
            1 => Codec::H264,
            2 => Codec::H265,
            3 => Codec::Mjpeg,
            _ => return Err(Error::Envelope(format!("unknown codec {v}"))),
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
            Codec::Mjpeg => "mjpeg",
        }
    }
}

/// Which of a camera's streams a frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The recorded stream (`vigil.frames`).
    Main,
    /// The low-resolution stream for live viewing (`vigil.live`).
    Sub,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Main => "main",
            Stream::Sub => "sub",
        }
    }
}

/// Everything about a frame except its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameMeta {
    pub camera: String,
    pub stream: Stream,
    pub codec: Codec,
    /// Per camera and stream, strictly increasing, survives ingest restarts.
    pub seq: u64,
    /// Wall clock at capture, microseconds since the Unix epoch.
    pub capture_us: i64,
    /// Presentation time in 90 kHz ticks.
    pub pts_90k: i64,
    /// A key frame (H.264/H.265 IDR with SPS/PPS in front; every MJPEG frame).
    pub key: bool,
    /// The first frame after the source (re)started: a gap in `seq` right
    /// before it is a recording gap, not a lost frame.
    pub discontinuity: bool,
}

/// One encoded access unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub meta: FrameMeta,
    pub payload: Vec<u8>,
}

/// One envelope as read from a record; borrows the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk<'a> {
    pub meta: FrameMeta,
    pub index: u16,
    pub count: u16,
    pub frame_len: u32,
    pub offset: u32,
    pub payload: &'a [u8],
}

pub fn validate_camera_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && !id.starts_with('.')
        && id.len() <= MAX_CAMERA_ID
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok { Ok(()) } else { Err(Error::CameraId(id.to_string())) }
}

impl Chunk<'_> {
    /// Serialises this chunk into `out` (cleared first).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let m = &self.meta;
        out.clear();
        out.reserve(OVERHEAD + m.camera.len() + self.payload.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(m.codec.to_u8());
        out.push(match m.stream {
            Stream::Main => 0,
            Stream::Sub => 1,
        });
        let mut flags = 0;
        if m.key {
            flags |= FLAG_KEY;
        }
        if m.discontinuity {
            flags |= FLAG_DISCONTINUITY;
        }
        out.push(flags);
        out.push(m.camera.len() as u8);
        out.extend_from_slice(m.camera.as_bytes());
        out.extend_from_slice(&m.seq.to_be_bytes());
        out.extend_from_slice(&m.capture_us.to_be_bytes());
        out.extend_from_slice(&m.pts_90k.to_be_bytes());
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.frame_len.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(self.payload);
        let crc = crc32fast::hash(out);
        out.extend_from_slice(&crc.to_be_bytes());
    }

    /// Parses one record. Never panics: anything malformed is an `Error::Envelope`.
    pub fn decode(buf: &[u8]) -> Result<Chunk<'_>, Error> {
        let bad = |why: &str| Error::Envelope(why.to_string());
        if buf.len() < 4 || &buf[..3] != MAGIC {
            return Err(bad("not a vigil frame (bad magic)"));
        }
        if buf[3] != VERSION {
            return Err(Error::Version(buf[3]));
        }
        if buf.len() < OVERHEAD {
            return Err(bad("truncated header"));
        }
        let (body, crc) = buf.split_at(buf.len() - 4);
        if crc32fast::hash(body) != u32::from_be_bytes(crc.try_into().unwrap_or_default()) {
            return Err(bad("checksum mismatch"));
        }
        let mut r = Reader { buf: body, pos: 4 };
        let codec = Codec::from_u8(r.u8()?)?;
        let stream = match r.u8()? {
            0 => Stream::Main,
            1 => Stream::Sub,
            s => return Err(Error::Envelope(format!("unknown stream {s}"))),
        };
        let flags = r.u8()?;
        let cam_len = r.u8()? as usize;
        let camera = std::str::from_utf8(r.take(cam_len)?).map_err(|_| bad("camera id is not UTF-8"))?.to_string();
        validate_camera_id(&camera).map_err(|_| bad("invalid camera id"))?;
        let seq = r.u64()?;
        let capture_us = r.u64()? as i64;
        let pts_90k = r.u64()? as i64;
        let index = r.u16()?;
        let count = r.u16()?;
        let frame_len = r.u32()?;
        let offset = r.u32()?;
        let payload_len = r.u32()? as usize;
        let payload = r.take(payload_len)?;
        if r.pos != body.len() {
            return Err(bad("trailing bytes after payload"));
        }
        if count == 0 || index >= count {
            return Err(Error::Envelope(format!("chunk {index} of {count}")));
        }
        // Hostile numbers stop here, so no consumer's arithmetic on them
        // can overflow.
        if !(0..=MAX_TIME_US).contains(&capture_us) {
            return Err(Error::Envelope(format!("capture time {capture_us} µs is out of range")));
        }
        if !(-MAX_TIME_US..=MAX_TIME_US).contains(&pts_90k) {
            return Err(Error::Envelope(format!("pts {pts_90k} is out of range")));
        }
        if seq > MAX_SEQ {
            return Err(Error::Envelope(format!("seq {seq} is out of range")));
        }
        if offset as u64 + payload_len as u64 > frame_len as u64 {
            return Err(bad("chunk extends past the end of its frame"));
        }
        Ok(Chunk {
            meta: FrameMeta {
                camera,
                stream,
                codec,
                seq,
                capture_us,
                pts_90k,
                key: flags & FLAG_KEY != 0,
                discontinuity: flags & FLAG_DISCONTINUITY != 0,
            },
            index,
            count,
            frame_len,
            offset,
            payload,
        })
    }
}

/// The latest capture time a frame may carry (µs since the epoch, about
/// the year 2255), and the largest |pts|.
pub const MAX_TIME_US: i64 = 1 << 53;
/// The largest seq a frame may carry.
pub const MAX_SEQ: u64 = 1 << 62;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| Error::Envelope("truncated record".into()))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap_or_default()))
    }
    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap_or_default()))
    }
    fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn meta(camera: &str, seq: u64) -> FrameMeta {
        FrameMeta {
            camera: camera.into(),
            stream: Stream::Main,
            codec: Codec::H264,
            seq,
            capture_us: 1_700_000_000_000_000,
            pts_90k: 3000 * seq as i64,
            key: seq.is_multiple_of(10),
            discontinuity: false,
        }
    }

    fn record(payload: &[u8]) -> Vec<u8> {
        let c =
            Chunk { meta: meta("cam-1", 7), index: 0, count: 1, frame_len: payload.len() as u32, offset: 0, payload };
        let mut out = Vec::new();
        c.encode_into(&mut out);
        out
    }

    #[test]
    fn round_trip() {
        let rec = record(b"hello");
        let c = Chunk::decode(&rec).unwrap();
        assert_eq!(c.meta, meta("cam-1", 7));
        assert_eq!(c.payload, b"hello");
        assert_eq!(rec.len(), OVERHEAD + 5 + 5);
    }

    #[test]
    fn rejects_garbage() {
        let good = record(b"payload bytes");
        let mut flipped = good.clone();
        flipped[20] ^= 0x40;
        let mut future = good.clone();
        future[3] = 9;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("json", br#"{"camera":"x"}"#.to_vec()),
            ("truncated", good[..good.len() - 3].to_vec()),
            ("header only", good[..10].to_vec()),
            ("bit flip", flipped),
        ];
        for (name, bytes) in cases {
            assert!(matches!(Chunk::decode(&bytes), Err(Error::Envelope(_))), "{name}");
        }
        assert!(matches!(Chunk::decode(&future), Err(Error::Version(9))));
    }

    /// Validly framed and checksummed, but carrying numbers no camera
    /// makes: refused at decode, before any consumer computes with them.
    #[test]
    fn hostile_numbers_are_refused() {
        let hostile = |f: fn(&mut FrameMeta)| {
            let mut m = meta("cam-1", 7);
            f(&mut m);
            let c = Chunk { meta: m, index: 0, count: 1, frame_len: 1, offset: 0, payload: b"x" };
            let mut out = Vec::new();
            c.encode_into(&mut out);
            out
        };
        type Change = fn(&mut FrameMeta);
        let cases: [(&str, Change); 6] = [
            ("capture time i64::MIN", |m| m.capture_us = i64::MIN),
            ("negative capture time", |m| m.capture_us = -1),
            ("capture time i64::MAX", |m| m.capture_us = i64::MAX),
            ("pts i64::MIN", |m| m.pts_90k = i64::MIN),
            ("seq u64::MAX", |m| m.seq = u64::MAX),
            ("seq past the limit", |m| m.seq = MAX_SEQ + 1),
        ];
        for (name, f) in cases {
            let e = Chunk::decode(&hostile(f)).err();
            assert!(matches!(&e, Some(Error::Envelope(w)) if w.contains("out of range")), "{name}: {e:?}");
        }
        assert!(Chunk::decode(&hostile(|m| m.capture_us = MAX_TIME_US)).is_ok(), "the limit itself is fine");
    }

    #[test]
    fn every_prefix_and_single_byte_change_is_rejected_without_panic() {
        let good = record(&[7u8; 40]);
        for n in 0..good.len() {
            assert!(Chunk::decode(&good[..n]).is_err());
        }
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] = b[i].wrapping_add(1);
            assert!(Chunk::decode(&b).is_err(), "byte {i}");
        }
    }

    #[test]
    fn camera_ids() {
        for ok in ["cam1", "door-2", "a.b_c"] {
            assert!(validate_camera_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "../x", "..", ".hidden", "é", &"x".repeat(65)] {
            assert!(validate_camera_id(bad).is_err(), "{bad}");
        }
    }
}
