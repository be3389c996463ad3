//! Fragmented MP4 (ISO/IEC 14496-12 movie fragments, as Media Source
//! Extensions and HLS take it), pure and synchronous: an init segment
//! (`ftyp` + `moov` with an empty sample table and `mvex`) and media
//! fragments (`moof` + `mdat`).
//!
//! The track is the one `mp4::movie` describes for exports (id 1, 90 kHz,
//! the same `avc1`/`hvc1` sample entry); samples are what `mp4::to_sample`
//! makes. A fragment may hold a single sample: live video sends one per
//! frame, so its overhead is kept small: 108 bytes for one sample.

use crate::mp4::{self, SampleEntry, VideoCodec, bx, full};

/// One sample of a fragment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// NAL units with 4-byte big-endian lengths (`mp4::to_sample`).
    pub data: Vec<u8>,
    /// When it is decoded on the track's 90 kHz timeline. No B-frames are
    /// assumed: it is also when it is shown.
    pub decode_time_90k: u64,
    pub duration_90k: u32,
    /// A sync sample (IDR / IRAP picture).
    pub key: bool,
}

/// `sample_flags` (14496-12 8.8.3.1): a key frame depends on no other
/// sample; any other frame depends on others and is not a sync sample.
/// Chromium reads both (a "key frame that depends on others" is refused).
const KEY_FLAGS: u32 = 0x0200_0000;
const NON_KEY_FLAGS: u32 = 0x0101_0000;

/// tfhd: the data offsets count from the start of the `moof` (what MSE
/// requires instead of absolute file positions).
const DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// trun: data offset, then per sample duration, size and flags.
const TRUN_FLAGS: u32 = 0x01 | 0x100 | 0x200 | 0x400;

/// The init segment of a track described by `entry`: `ftyp` and a `moov`
/// whose sample tables are empty, with `mvex` announcing fragments.
pub fn init_segment(entry: &SampleEntry) -> Vec<u8> {
    let brands: &[u8] = match entry.codec {
        VideoCodec::H264 => b"iso5\0\0\x02\0iso5iso6mp41avc1",
        VideoCodec::H265 => b"iso5\0\0\x02\0iso5iso6mp41",
    };
    let mut tables = Vec::new();
    for kind in [b"stts", b"stsc", b"stco"] {
        tables.extend(full(kind, 0, 0, &0u32.to_be_bytes())); // no entries
    }
    tables.extend(full(b"stsz", 0, 0, &[0; 8])); // sample size 0, no samples
    // trex: track 1, sample description 1; every fragment states its own
    // durations, sizes and flags, so the defaults are zero.
    let trex = full(b"trex", 0, 0, &[1u32, 1, 0, 0, 0].map(u32::to_be_bytes).concat());
    let mvex = bx(b"mvex", &trex);
    [bx(b"ftyp", brands), mp4::movie(entry, 0, &tables, &mvex)].concat()
}

/// One movie fragment (`moof` + `mdat`) holding `samples` in order.
/// `sequence_number` should grow by one from fragment to fragment. Each
/// sample's size must fit in 32 bits (frames are megabytes at most).
pub fn fragment(sequence_number: u32, samples: &[Sample]) -> Vec<u8> {
    let data_len: usize = samples.iter().map(|s| s.data.len()).sum();
    // 64-bit mdat size only when needed: the 8-byte header is the common case.
    let mdat_header_len = if data_len + 8 > u32::MAX as usize { 16 } else { 8 };
    let mfhd = full(b"mfhd", 0, 0, &sequence_number.to_be_bytes());
    let tfhd = full(b"tfhd", 0, DEFAULT_BASE_IS_MOOF, &1u32.to_be_bytes());
    let decode_time = samples.first().map_or(0, |s| s.decode_time_90k);
    let tfdt = full(b"tfdt", 1, 0, &decode_time.to_be_bytes());
    let trun_len = 8 + 4 + 8 + 12 * samples.len();
    let moof_len = 8 + mfhd.len() + 8 + tfhd.len() + tfdt.len() + trun_len;
    let data_offset = (moof_len + mdat_header_len) as u32;

    let mut trun = Vec::with_capacity(trun_len - 12);
    trun.extend_from_slice(&(samples.len() as u32).to_be_bytes());
    trun.extend_from_slice(&data_offset.to_be_bytes());
    for s in samples {
        let flags = if s.key { KEY_FLAGS } else { NON_KEY_FLAGS };
        for x in [s.duration_90k, s.data.len() as u32, flags] {
            trun.extend_from_slice(&x.to_be_bytes());
        }
    }
    let traf = bx(b"traf", &[tfhd, tfdt, full(b"trun", 0, TRUN_FLAGS, &trun)].concat());
    let mut out = Vec::with_capacity(moof_len + mdat_header_len + data_len);
    out.extend(bx(b"moof", &[mfhd, traf].concat()));
    if mdat_header_len == 8 {
        out.extend_from_slice(&((data_len + 8) as u32).to_be_bytes());
        out.extend_from_slice(b"mdat");
    } else {
        out.extend_from_slice(&mp4::mdat_header(data_len as u64));
    }
    for s in samples {
        out.extend_from_slice(&s.data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mp4::{ParamSets, sample_entry};

    /// (type, offset, size) of the boxes in `b`, top level only.
    fn boxes(b: &[u8]) -> Vec<(String, usize, usize)> {
        let mut out = vec![];
        let mut at = 0;
        while at + 8 <= b.len() {
            let size = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
            out.push((String::from_utf8_lossy(&b[at + 4..at + 8]).into_owned(), at, size));
            assert!(size >= 8, "box at {at} has size {size}");
            at += size;
        }
        assert_eq!(at, b.len(), "boxes end exactly at the end");
        out
    }

    fn entry() -> SampleEntry {
        // A real 64x64 baseline SPS (openh264's) and a PPS.
        let sps = [0x67, 0x42, 0xc0, 0x0a, 0x8c, 0x8d, 0x42, 0x12, 0x01, 0xe1, 0x00, 0x8a, 0x80];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        sample_entry(VideoCodec::H264, &ParamSets { vps: None, sps: Some(&sps), pps: Some(&pps) }).unwrap()
    }

    #[test]
    fn init_segment_is_ftyp_then_moov_with_mvex() {
        let init = init_segment(&entry());
        let top = boxes(&init);
        assert_eq!(top.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(), ["ftyp", "moov"]);
        let moov = &init[top[1].1 + 8..];
        let inner: Vec<String> = boxes(moov).into_iter().map(|b| b.0).collect();
        assert_eq!(inner, ["mvhd", "trak", "mvex"]);
        let find = |kind: &[u8]| init.windows(4).position(|w| w == kind).is_some();
        for kind in [&b"avcC"[..], b"stts", b"stsc", b"stsz", b"stco", b"trex", b"vmhd", b"dref"] {
            assert!(find(kind), "{}", String::from_utf8_lossy(kind));
        }
        assert!(!find(b"stss") && !find(b"co64"), "no sample tables beyond the empty ones");
    }

    /// One sample: 108 bytes of boxes; the data offset points at the
    /// sample's first byte; flags mark sync and non-sync samples.
    #[test]
    fn fragments_are_small_and_point_at_their_data() {
        let key = Sample { data: vec![0, 0, 0, 2, 0x65, 1], decode_time_90k: 1 << 40, duration_90k: 3000, key: true };
        let f = fragment(7, std::slice::from_ref(&key));
        assert_eq!(f.len() - key.data.len(), 108);
        let top = boxes(&f);
        assert_eq!(top.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(), ["moof", "mdat"]);
        let trun = f.windows(4).position(|w| w == b"trun").unwrap() - 4;
        let be = |at: usize| u32::from_be_bytes(f[at..at + 4].try_into().unwrap());
        assert_eq!((be(trun + 12), be(trun + 16) as usize), (1, f.len() - key.data.len()));
        assert_eq!((be(trun + 20), be(trun + 24), be(trun + 28)), (3000, 6, KEY_FLAGS));
        let tfdt = f.windows(4).position(|w| w == b"tfdt").unwrap() + 4;
        assert_eq!((f[tfdt], &f[tfdt + 4..tfdt + 12]), (1, &(1u64 << 40).to_be_bytes()[..]));
        assert_eq!(be(f.windows(4).position(|w| w == b"mfhd").unwrap() + 8), 7);

        let other = Sample { key: false, decode_time_90k: 3000, ..key.clone() };
        let two = fragment(8, &[key.clone(), other]);
        let trun = two.windows(4).position(|w| w == b"trun").unwrap() - 4;
        let be = |at: usize| u32::from_be_bytes(two[at..at + 4].try_into().unwrap());
        assert_eq!((be(trun + 12), be(trun + 28), be(trun + 40)), (2, KEY_FLAGS, NON_KEY_FLAGS));
        assert_eq!(be(trun + 16) as usize, two.len() - 12);
        // Nothing to carry is still well-formed.
        assert_eq!(boxes(&fragment(9, &[])).len(), 2);
    }
}
