//! What an MP4 needs from an H.265 (HEVC) stream: NAL unit types, and from
//! the SPS the fields of the `hvcC` box and the picture size (ITU-T H.265
//! 7.3.2.2, ISO/IEC 14496-15 8.3.3).

pub const VPS: u8 = 32;
pub const SPS: u8 = 33;
pub const PPS: u8 = 34;
pub const AUD: u8 = 35;

/// The type of a NAL unit, from its two-byte header.
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    (nal.len() >= 2).then(|| (nal[0] >> 1) & 0x3f)
}

/// The parts of a sequence parameter set an MP4 sample entry describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sps {
    /// The general part of profile_tier_level, as `hvcC` copies it: profile
    /// space, tier and profile idc, 32 compatibility flags, 48 constraint
    /// flags, level idc.
    pub general: [u8; 12],
    /// sps_max_sub_layers_minus1 + 1.
    pub sub_layers: u8,
    pub temporal_id_nesting: bool,
    pub chroma_format: u8,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    /// The picture size after the conformance window's cropping.
    pub width: u32,
    pub height: u32,
}

impl Sps {
    /// Parses an SPS NAL unit (with its header); `None` if it is truncated
    /// or holds values no stream can have.
    pub fn parse(nal: &[u8]) -> Option<Sps> {
        let rbsp = rbsp(nal.get(2..)?);
        let mut r = Bits::new(&rbsp);
        r.bits(4)?; // sps_video_parameter_set_id
        let max_sub_layers_minus1 = r.bits(3)?;
        if max_sub_layers_minus1 > 6 {
            return None;
        }
        let temporal_id_nesting = r.bits(1)? == 1;
        // profile_tier_level: the general part is byte-aligned, 12 bytes.
        let general = rbsp.get(1..13)?.try_into().ok()?;
        r.skip(96)?;
        let mut sub_layer_bits = if max_sub_layers_minus1 > 0 { 2 * (8 - max_sub_layers_minus1) } else { 0 };
        for _ in 0..max_sub_layers_minus1 {
            sub_layer_bits += 88 * r.bits(1)? + 8 * r.bits(1)?; // profile, level present
        }
        r.skip(sub_layer_bits as usize)?;
        r.ue()?; // sps_seq_parameter_set_id
        let chroma_format = r.ue()?;
        if chroma_format > 3 {
            return None;
        }
        if chroma_format == 3 {
            r.bits(1)?; // separate_colour_plane_flag: crops like 4:4:4 either way
        }
        let (coded_width, coded_height) = (r.ue()?, r.ue()?);
        let (mut left, mut right, mut top, mut bottom) = (0, 0, 0, 0);
        if r.bits(1)? == 1 {
            (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        }
        let (luma_minus8, chroma_minus8) = (r.ue()?, r.ue()?);
        if luma_minus8 > 7 || chroma_minus8 > 7 {
            return None; // hvcC has three bits for each
        }
        // Offsets count chroma samples (SubWidthC, SubHeightC).
        let (sub_w, sub_h) = match chroma_format {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let width = coded_width.checked_sub(left.checked_add(right)?.checked_mul(sub_w)?)?;
        let height = coded_height.checked_sub(top.checked_add(bottom)?.checked_mul(sub_h)?)?;
        if !(1..=0xffff).contains(&width) || !(1..=0xffff).contains(&height) {
            return None;
        }
        Some(Sps {
            general,
            sub_layers: max_sub_layers_minus1 as u8 + 1,
            temporal_id_nesting,
            chroma_format: chroma_format as u8,
            bit_depth_luma: luma_minus8 as u8 + 8,
            bit_depth_chroma: chroma_minus8 as u8 + 8,
            width,
            height,
        })
    }

    /// The body of the `hvcC` box: this SPS's fields, 4-byte NAL lengths,
    /// and one array each for the VPS, SPS and PPS (each under 64 KiB).
    pub fn hvcc(&self, vps: &[u8], sps: &[u8], pps: &[u8]) -> Vec<u8> {
        let mut c = vec![1]; // configurationVersion
        c.extend_from_slice(&self.general);
        c.extend_from_slice(&[
            0xf0, // min_spatial_segmentation_idc 0 (unknown)
            0x00,
            0xfc, // parallelismType 0 (unknown)
            0xfc | self.chroma_format,
            0xf8 | self.bit_depth_luma.saturating_sub(8),
            0xf8 | self.bit_depth_chroma.saturating_sub(8),
            0, // avgFrameRate 0 (unknown)
            0,
            // constantFrameRate 0, numTemporalLayers, temporalIdNested, lengthSizeMinusOne 3
            self.sub_layers << 3 | (self.temporal_id_nesting as u8) << 2 | 3,
            3, // numOfArrays
        ]);
        for (kind, nal) in [(VPS, vps), (SPS, sps), (PPS, pps)] {
            c.push(0x80 | kind); // array_completeness 1: no others in the stream
            c.extend_from_slice(&1u16.to_be_bytes());
            c.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            c.extend_from_slice(nal);
        }
        c
    }
}

/// The payload of a NAL unit (after its header) without emulation
/// prevention bytes.
pub(crate) fn rbsp(payload: &[u8]) -> Vec<u8> {
    let mut rbsp = Vec::with_capacity(payload.len());
    let mut zeros = 0;
    for &b in payload {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    rbsp
}

/// A big-endian bit reader over an RBSP; every read past the end is `None`.
pub(crate) struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits { data, pos: 0 }
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        (self.pos + n <= self.data.len() * 8).then(|| self.pos += n)
    }
    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            v = (v << 1) | ((byte >> (7 - self.pos % 8)) & 1) as u32;
            self.pos += 1;
        }
        Some(v)
    }
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bits(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    // From libx265 3.5 (Debian's ffmpeg), `testsrc2` sources.
    const VPS_320X240: &str = "40010c01ffff01600000030090000003000003003c928090";
    const SPS_320X240: &str = "42010101600000030090000003000003003ca00a080f16592a4932bc05a02000000300200000030141";
    const PPS_320X240: &str = "4401c172b46240";
    /// Coded as 320x184, cropped by a conformance window.
    const SPS_320X180: &str = "42010101600000030090000003000003003ca00a080b9f796566924caf0168080000030008000003005040";
    /// Main 4:2:2 10 (`-pix_fmt yuv422p10le`).
    const SPS_422_10: &str = "4201010408000003009d0800000300003cb00b080484d96566924caf0168080000030008000003005040";

    #[test]
    fn parses_real_sps() {
        let s = Sps::parse(&hex(SPS_320X240)).unwrap();
        // Main profile, Main tier, level 2 (60 = 30 * 2); the 00 00 03 inside
        // the constraint flags is emulation prevention, not data.
        assert_eq!(s.general, [0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 0x3c]);
        assert_eq!((s.width, s.height, s.chroma_format, s.bit_depth_luma, s.bit_depth_chroma), (320, 240, 1, 8, 8));
        assert_eq!((s.sub_layers, s.temporal_id_nesting), (1, true));

        let s = Sps::parse(&hex(SPS_320X180)).unwrap();
        assert_eq!((s.width, s.height), (320, 180));

        let s = Sps::parse(&hex(SPS_422_10)).unwrap();
        assert_eq!(s.general[0], 0x04); // format range extensions
        assert_eq!((s.width, s.height, s.chroma_format, s.bit_depth_luma, s.bit_depth_chroma), (352, 288, 2, 10, 10));
    }

    #[test]
    fn malformed_sps_is_none_never_a_panic() {
        let sps = hex(SPS_320X240);
        let full = Sps::parse(&sps);
        for n in 0..sps.len() {
            let cut = Sps::parse(&sps[..n]);
            assert!(cut.is_none() || cut == full, "cut at {n}: {cut:?}");
        }
        assert_eq!(Sps::parse(&sps[..16]), None); // the size is further on
        let mut seed = 1u32;
        for _ in 0..20_000 {
            let len = (seed % 48) as usize;
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let _ = Sps::parse(&junk);
        }
        assert_eq!(Sps::parse(&[0xff; 64]), None); // eight sub-layers
        assert_eq!(Sps::parse(&[0; 64]), None); // Exp-Golomb codes too long
    }

    #[test]
    fn hvcc_layout() {
        let (vps, sps, pps) = (hex(VPS_320X240), hex(SPS_320X240), hex(PPS_320X240));
        let c = Sps::parse(&sps).unwrap().hvcc(&vps, &sps, &pps);
        assert_eq!(c[0], 1);
        assert_eq!(&c[1..13], &Sps::parse(&sps).unwrap().general);
        assert_eq!(&c[13..23], &[0xf0, 0, 0xfc, 0xfd, 0xf8, 0xf8, 0, 0, 0x0f, 3]);
        assert_eq!(&c[23..28], &[0xa0, 0, 1, 0, vps.len() as u8]);
        assert_eq!(&c[28..28 + vps.len()], &vps[..]);
        assert_eq!(c.len(), 23 + 3 * 5 + vps.len() + sps.len() + pps.len());
        assert_eq!(&c[c.len() - pps.len() - 5..c.len() - pps.len()], &[0xa2, 0, 1, 0, 7]);
    }

    #[test]
    fn nal_types() {
        assert_eq!(nal_type(&hex(VPS_320X240)), Some(VPS));
        assert_eq!(nal_type(&hex(SPS_320X240)), Some(SPS));
        assert_eq!(nal_type(&hex(PPS_320X240)), Some(PPS));
        assert_eq!(nal_type(&[0x26, 0x01, 0xaf]), Some(19)); // IDR_W_RADL
        assert_eq!(nal_type(&[0x26]), None);
    }
}
