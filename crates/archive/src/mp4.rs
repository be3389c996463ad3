//! A minimal ISO-BMFF (MP4) writer for H.264 and H.265 exports, pure and
//! synchronous: Annex B access units in, `avc1`/`hvc1` samples out, and the
//! `moov` box that describes them. The caller streams `mdat` to disk and
//! appends `moov` last, so an export of any length needs memory only for the
//! sample tables.
//!
//! The box helpers, the sample entry, the track description (`movie`) and
//! the frame timing (`delta_90k`) are shared with `fmp4`, the fragmented
//! writer for the browser and HLS.

mod hevc;

use crate::Error;

/// The video codecs an MP4 export carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    H265,
}

/// A frame's two clocks: when ingest captured it, and the camera's own
/// presentation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub capture_us: i64,
    pub pts_90k: i64,
}

/// The longest a frame is shown (one minute), whatever its clocks say.
pub const MAX_DELTA_90K: i64 = 90_000 * 60;

/// Ticks (90 kHz) from frame `a` to the frame after it, `b`: from the
/// camera's own timestamps where they move forward by less than a minute (a
/// steady media timeline), else from the capture clock (a source restart
/// resets the camera's clock), kept within [1 tick, 1 minute] so that one bad
/// jump never breaks a file.
pub fn delta_90k(a: Stamp, b: Stamp) -> u32 {
    let pts = b.pts_90k.saturating_sub(a.pts_90k);
    let d = if pts > 0 && pts < MAX_DELTA_90K {
        pts
    } else {
        (b.capture_us.saturating_sub(a.capture_us) / 100).saturating_mul(9).clamp(1, MAX_DELTA_90K)
    };
    d as u32
}

/// One sample as the tables need it.
#[derive(Clone, Copy, Debug)]
pub struct SampleInfo {
    pub size: u32,
    pub duration_90k: u32,
    pub key: bool,
    pub offset: u64,
}

/// Splits an Annex B access unit into NAL units (without start codes).
pub fn nal_units(au: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut start = None;
    while i + 3 <= au.len() {
        if au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 {
            if let Some(s) = start {
                let mut end = i;
                while end > s && au[end - 1] == 0 {
                    end -= 1; // a 4-byte start code's leading zero
                }
                out.push(&au[s..end]);
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start
        && s < au.len()
    {
        out.push(&au[s..]);
    }
    out
}

/// The parameter sets an access unit carries (`vps`: H.265 only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParamSets<'a> {
    pub vps: Option<&'a [u8]>,
    pub sps: Option<&'a [u8]>,
    pub pps: Option<&'a [u8]>,
}

impl ParamSets<'_> {
    /// Whether these are all the sample entry of `codec` needs.
    pub fn complete(&self, codec: VideoCodec) -> bool {
        self.sps.is_some() && self.pps.is_some() && (codec == VideoCodec::H264 || self.vps.is_some())
    }
}

/// Converts one access unit to a sample (NAL units with 4-byte lengths),
/// dropping parameter sets and delimiters (they live in the sample entry).
/// Returns the parameter sets it saw.
pub fn to_sample<'a>(codec: VideoCodec, au: &'a [u8], out: &mut Vec<u8>) -> ParamSets<'a> {
    use VideoCodec::*;
    let mut ps = ParamSets::default();
    for nal in nal_units(au) {
        let kind = match codec {
            H264 => nal.first().map(|b| b & 0x1f),
            H265 => hevc::nal_type(nal),
        };
        match (codec, kind) {
            (H264, Some(7)) | (H265, Some(hevc::SPS)) => ps.sps = Some(nal),
            (H264, Some(8)) | (H265, Some(hevc::PPS)) => ps.pps = Some(nal),
            (H265, Some(hevc::VPS)) => ps.vps = Some(nal),
            (H264, Some(9)) | (H265, Some(hevc::AUD)) | (_, None) => {}
            _ => {
                out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                out.extend_from_slice(nal);
            }
        }
    }
    ps
}

/// A track's sample entry (an `avc1` or `hvc1` box) and the picture size
/// it declares.
pub struct SampleEntry {
    pub codec: VideoCodec,
    pub width: u32,
    pub height: u32,
    entry: Vec<u8>,
}

/// The sample entry for a stream of `codec` described by `ps` (which must
/// be `complete`). An H.264 SPS this reader does not follow gives a size of
/// 0x0 (decoders read the SPS itself); an H.265 SPS must parse, as its
/// profile and format go into `hvcC`.
pub fn sample_entry(codec: VideoCodec, ps: &ParamSets) -> Result<SampleEntry, Error> {
    let (sps, pps) = ps.sps.zip(ps.pps).ok_or_else(|| Error::Other("no SPS/PPS to describe the stream".into()))?;
    let too_long = |what| Error::Other(format!("the stream's {what} is too long for an MP4 sample entry"));
    for (what, nal) in [("VPS", ps.vps.unwrap_or_default()), ("SPS", sps), ("PPS", pps)] {
        if nal.len() > u16::MAX as usize {
            return Err(too_long(what));
        }
    }
    let (kind, (width, height), config) = match codec {
        VideoCodec::H264 => {
            let mut avcc = vec![1, *sps.get(1).unwrap_or(&66), *sps.get(2).unwrap_or(&0), *sps.get(3).unwrap_or(&30)];
            avcc.extend_from_slice(&[0xff, 0xe1]); // 4-byte lengths, one SPS
            avcc.extend_from_slice(&(sps.len() as u16).to_be_bytes());
            avcc.extend_from_slice(sps);
            avcc.push(1);
            avcc.extend_from_slice(&(pps.len() as u16).to_be_bytes());
            avcc.extend_from_slice(pps);
            (b"avc1", sps_size(sps).unwrap_or((0, 0)), bx(b"avcC", &avcc))
        }
        VideoCodec::H265 => {
            let vps = ps.vps.ok_or_else(|| Error::Other("no VPS to describe the H.265 stream".into()))?;
            let parsed = hevc::Sps::parse(sps).ok_or_else(|| {
                Error::Other("the stream's H.265 SPS is malformed or unsupported: cannot describe it".into())
            })?;
            (b"hvc1", (parsed.width, parsed.height), bx(b"hvcC", &parsed.hvcc(vps, sps, pps)))
        }
    };
    let mut e = vec![0; 6];
    e.extend_from_slice(&[0, 1]); // data reference index
    e.extend_from_slice(&[0; 16]);
    e.extend_from_slice(&(width as u16).to_be_bytes());
    e.extend_from_slice(&(height as u16).to_be_bytes());
    e.extend_from_slice(&0x0048_0000u32.to_be_bytes()); // 72 dpi
    e.extend_from_slice(&0x0048_0000u32.to_be_bytes());
    e.extend_from_slice(&[0; 4]);
    e.extend_from_slice(&[0, 1]); // frame count
    e.extend_from_slice(&[0; 32]); // compressor name
    e.extend_from_slice(&[0, 0x18, 0xff, 0xff]); // depth, no colour table
    e.extend(config);
    Ok(SampleEntry { codec, width, height, entry: bx(kind, &e) })
}

/// Picture size from an SPS (ITU-T H.264 7.3.2.1.1, read by `h264-reader`),
/// or `None` if it does not parse.
pub fn sps_size(sps: &[u8]) -> Option<(u32, u32)> {
    use h264_reader::nal::sps::SeqParameterSet;
    use h264_reader::rbsp::{BitReader, decode_nal};
    let rbsp = decode_nal(sps).ok()?;
    SeqParameterSet::from_bits(BitReader::new(&rbsp[..])).ok()?.pixel_dimensions().ok()
}

pub(crate) fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(body.len() + 8);
    b.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
    b.extend_from_slice(kind);
    b.extend_from_slice(body);
    b
}

pub(crate) fn full(kind: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut v = vec![version, (flags >> 16) as u8, (flags >> 8) as u8, flags as u8];
    v.extend_from_slice(body);
    bx(kind, &v)
}

pub fn ftyp(codec: VideoCodec) -> Vec<u8> {
    match codec {
        VideoCodec::H264 => bx(b"ftyp", b"isom\0\0\x02\0isomiso2avc1mp41"),
        VideoCodec::H265 => bx(b"ftyp", b"isom\0\0\x02\0isomiso2mp41"),
    }
}

/// The header of an `mdat` box of `len` payload bytes (64-bit size).
pub fn mdat_header(len: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&1u32.to_be_bytes());
    h[4..8].copy_from_slice(b"mdat");
    h[8..].copy_from_slice(&(len + 16).to_be_bytes());
    h
}

const MATRIX: [u32; 9] = [0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x4000_0000];

/// The `moov` box for one video track.
pub fn moov(samples: &[SampleInfo], entry: &SampleEntry) -> Vec<u8> {
    let dur_90k: u64 = samples.iter().map(|s| s.duration_90k as u64).sum();
    let mut stts = vec![];
    let mut runs: Vec<(u32, u32)> = vec![];
    for s in samples {
        match runs.last_mut() {
            Some((n, d)) if *d == s.duration_90k => *n += 1,
            _ => runs.push((1, s.duration_90k)),
        }
    }
    be32(&mut stts, runs.len() as u32);
    runs.iter().for_each(|&(n, d)| {
        be32(&mut stts, n);
        be32(&mut stts, d)
    });
    let keys: Vec<u32> = samples.iter().enumerate().filter(|(_, s)| s.key).map(|(i, _)| i as u32 + 1).collect();
    let mut stss = vec![];
    be32(&mut stss, keys.len() as u32);
    keys.iter().for_each(|&k| be32(&mut stss, k));
    let mut stsc = vec![];
    for x in [1, 1, 1, 1] {
        be32(&mut stsc, x); // one entry: every chunk holds one sample
    }
    let mut stsz = vec![];
    be32(&mut stsz, 0);
    be32(&mut stsz, samples.len() as u32);
    samples.iter().for_each(|s| be32(&mut stsz, s.size));
    let mut co64 = vec![];
    be32(&mut co64, samples.len() as u32);
    samples.iter().for_each(|s| co64.extend_from_slice(&s.offset.to_be_bytes()));

    let tables = [
        full(b"stts", 0, 0, &stts),
        full(b"stss", 0, 0, &stss),
        full(b"stsc", 0, 0, &stsc),
        full(b"stsz", 0, 0, &stsz),
        full(b"co64", 0, 0, &co64),
    ]
    .concat();
    movie(entry, dur_90k, &tables, &[])
}

fn be32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_be_bytes());
}

/// A `moov` box with one video track (id 1, 90 kHz) of `dur_90k` ticks:
/// `tables` are the sample tables after `stsd`, `extra` follows the track
/// (`mvex` for a fragmented file).
pub(crate) fn movie(entry: &SampleEntry, dur_90k: u64, tables: &[u8], extra: &[u8]) -> Vec<u8> {
    // 32-bit durations: a longer export says "unknown" rather than a wrong value.
    let dur_ms = u32::try_from(dur_90k / 90).unwrap_or(u32::MAX);
    let mut mvhd = vec![];
    for x in [0, 0, 1000, dur_ms, 0x10000] {
        be32(&mut mvhd, x);
    }
    mvhd.extend_from_slice(&[1, 0, 0, 0]); // volume 1.0 + reserved
    mvhd.extend_from_slice(&[0; 8]);
    MATRIX.iter().for_each(|&m| be32(&mut mvhd, m));
    mvhd.extend_from_slice(&[0; 24]);
    be32(&mut mvhd, 2); // next track id

    let mut tkhd = vec![];
    for x in [0, 0, 1, 0, dur_ms, 0, 0, 0, 0] {
        be32(&mut tkhd, x); // times, track 1, reserved, duration, reserved, layer/group, volume/reserved
    }
    MATRIX.iter().for_each(|&m| be32(&mut tkhd, m));
    be32(&mut tkhd, entry.width << 16);
    be32(&mut tkhd, entry.height << 16);

    let mut mdhd = vec![];
    for x in [0, 0, 90_000, u32::try_from(dur_90k).unwrap_or(u32::MAX)] {
        be32(&mut mdhd, x);
    }
    mdhd.extend_from_slice(&[0x55, 0xc4, 0, 0]); // language "und"
    let hdlr = [&[0u8; 4][..], b"vide", &[0; 12], b"vigil video\0"].concat();

    let mut stsd = vec![];
    be32(&mut stsd, 1);
    stsd.extend_from_slice(&entry.entry);

    let stbl = [&full(b"stsd", 0, 0, &stsd)[..], tables].concat();
    let dref = full(b"dref", 0, 0, &[&1u32.to_be_bytes()[..], &full(b"url ", 0, 1, &[])].concat());
    let minf = [full(b"vmhd", 0, 1, &[0; 8]), bx(b"dinf", &dref), bx(b"stbl", &stbl)].concat();
    let mdia = [full(b"mdhd", 0, 0, &mdhd), full(b"hdlr", 0, 0, &hdlr), bx(b"minf", &minf)].concat();
    let trak = [full(b"tkhd", 0, 3, &tkhd), bx(b"mdia", &mdia)].concat();
    bx(b"moov", &[&full(b"mvhd", 0, 0, &mvhd)[..], &bx(b"trak", &trak), extra].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_annex_b() {
        let au = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 9, 9];
        assert_eq!(nal_units(&au), vec![&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 9, 9]]);
        let mut sample = vec![];
        let ps = to_sample(VideoCodec::H264, &au, &mut sample);
        assert_eq!((ps.sps, ps.pps), (Some(&[0x67, 1, 2][..]), Some(&[0x68, 3][..])));
        assert!(ps.complete(VideoCodec::H264));
        assert_eq!(sample, vec![0, 0, 0, 3, 0x65, 9, 9]);
        assert!(nal_units(&[1, 2, 3]).is_empty());
    }

    #[test]
    fn h265_samples_leave_parameter_sets_out() {
        // AUD, VPS, SPS, PPS, a prefix SEI, an IDR slice; a stray byte.
        let au = [
            &[0, 0, 0, 1, 0x46, 1, 0x50][..],
            &[0, 0, 1, 0x40, 1, 0xaa],
            &[0, 0, 1, 0x42, 1, 0xbb],
            &[0, 0, 1, 0x44, 1, 0xcc],
            &[0, 0, 1, 0x4e, 1, 5],
            &[0, 0, 0, 1, 0x26, 1, 0xaf, 9],
            &[0, 0, 1, 0x26],
        ]
        .concat();
        let mut sample = vec![];
        let ps = to_sample(VideoCodec::H265, &au, &mut sample);
        assert_eq!(
            (ps.vps, ps.sps, ps.pps),
            (Some(&[0x40, 1, 0xaa][..]), Some(&[0x42, 1, 0xbb][..]), Some(&[0x44, 1, 0xcc][..]))
        );
        assert!(ps.complete(VideoCodec::H265));
        assert!(!ParamSets { vps: None, ..ps }.complete(VideoCodec::H265));
        assert_eq!(sample, vec![0, 0, 0, 3, 0x4e, 1, 5, 0, 0, 0, 4, 0x26, 1, 0xaf, 9]);
        // An SPS that does not parse is an error, never a panic.
        let err = sample_entry(VideoCodec::H265, &ps).err().unwrap();
        assert!(err.to_string().contains("H.265 SPS is malformed"), "{err}");
    }

    #[test]
    fn reads_the_size_of_real_sps() {
        use ingest::synthetic::{Encoder, SyntheticConfig, render};
        for (w, h) in [(320, 180), (640, 360), (1280, 720), (160, 96)] {
            let c = SyntheticConfig { width: w, height: h, ..Default::default() };
            let mut pic = vec![];
            render(w, h, 0, 0, &mut pic);
            let e = Encoder::new(&c).unwrap().encode(&pic, w, h, true).unwrap();
            let sps = nal_units(&e.data).into_iter().find(|n| n[0] & 0x1f == 7).unwrap();
            assert_eq!(sps_size(sps), Some((w as u32, h as u32)));
        }
        assert_eq!(sps_size(&[0x67]), None);
    }
}
