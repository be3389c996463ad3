//! Encoded frames to RGB pictures, one decoder per camera.
//!
//! H.264 goes through openh264 (the encoder of the synthetic cameras is the
//! same library), MJPEG through zune-jpeg; both pure or bundled, no system
//! codec. H.265 is archived and played back but not analysed: no decoder
//! that needs no heavy dependency exists for it here.
//!
//! A decoder that has not seen a key frame yet (a fresh start, a resume in
//! the middle of a GOP, a decode error) drops frames until the next one, so
//! it never hands the model a picture built on missing references.

use media::{Codec, Frame};
use openh264::decoder::Decoder as H264;
use openh264::formats::YUVSource;

/// A decoded picture: packed RGB8, row by row, and its grey (luma)
/// image for motion, width × height bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    pub grey: Vec<u8>,
}

impl Picture {
    /// From RGB alone: grey is its luma (BT.601).
    pub fn from_rgb(width: u32, height: u32, rgb: Vec<u8>) -> Self {
        let grey = rgb
            .chunks_exact(3)
            .map(|p| ((77 * u32::from(p[0]) + 150 * u32::from(p[1]) + 29 * u32::from(p[2])) >> 8) as u8)
            .collect();
        Picture { width, height, rgb, grey }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} frames cannot be analysed (no decoder for it)")]
    Unsupported(&'static str),
    #[error("broken {codec} frame: {why}")]
    Broken { codec: &'static str, why: String },
}

pub struct Decoder {
    h264: Option<H264>,
    /// False until a key frame decoded: frames before it are dropped.
    synced: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder { h264: None, synced: false }
    }

    /// Feeds one frame. `want` says whether its picture is needed: H.264
    /// frames between analysed ones are still decoded (later frames refer
    /// to them) but not converted to RGB. Returns the picture when wanted
    /// and available; `Ok(None)` while waiting for a key frame.
    pub fn decode(&mut self, frame: &Frame, want: bool) -> Result<Option<Picture>, DecodeError> {
        if frame.meta.discontinuity {
            // A new camera session: its stream starts afresh.
            self.synced = false;
        }
        if !self.synced && !frame.meta.key {
            return Ok(None);
        }
        let out = match frame.meta.codec {
            Codec::Mjpeg => {
                if want {
                    jpeg(&frame.payload).map(Some)
                } else {
                    Ok(None)
                }
            }
            Codec::H264 => self.h264(&frame.payload, want),
            Codec::H265 => Err(DecodeError::Unsupported("H.265")),
        };
        self.synced = out.is_ok();
        if out.is_err() {
            // A fresh decoder at the next key frame: openh264 keeps state
            // that a corrupt frame may have poisoned.
            self.h264 = None;
        }
        out
    }

    fn h264(&mut self, au: &[u8], want: bool) -> Result<Option<Picture>, DecodeError> {
        let broken = |why: String| DecodeError::Broken { codec: "H.264", why };
        if self.h264.is_none() {
            self.h264 = Some(H264::new().map_err(|e| broken(format!("cannot start the decoder: {e}")))?);
        }
        let dec = self.h264.as_mut().expect("set above");
        let Some(yuv) = dec.decode(au).map_err(|e| broken(e.to_string()))? else {
            return Ok(None);
        };
        if !want {
            return Ok(None);
        }
        let (w, h) = yuv.dimensions();
        let mut rgb = vec![0; w * h * 3];
        yuv.write_rgb8(&mut rgb);
        let stride = yuv.strides().0;
        let grey = yuv.y().chunks(stride).take(h).flat_map(|row| &row[..w]).copied().collect();
        Ok(Some(Picture { width: w as u32, height: h as u32, rgb, grey }))
    }
}

/// Largest picture side accepted: bounds memory against a corrupt header.
const MAX_SIDE: usize = 8192;

/// A JPEG (an MJPEG frame, a photo) as an RGB picture.
pub fn jpeg(data: &[u8]) -> Result<Picture, DecodeError> {
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let broken = |why: String| DecodeError::Broken { codec: "MJPEG", why };
    let opts = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(MAX_SIDE)
        .set_max_height(MAX_SIDE);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(std::io::Cursor::new(data), opts);
    let rgb = dec.decode().map_err(|e| broken(e.to_string()))?;
    let info = dec.info().ok_or_else(|| broken("no image header".into()))?;
    let (w, h) = (info.width as u32, info.height as u32);
    if rgb.len() != (w * h * 3) as usize {
        return Err(broken(format!("{} bytes for {w}x{h} RGB", rgb.len())));
    }
    Ok(Picture::from_rgb(w, h, rgb))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest::synthetic::{Encoder, SyntheticConfig, render};
    use media::{FrameMeta, Stream};

    fn frame(codec: Codec, seq: u64, key: bool, payload: Vec<u8>) -> Frame {
        let meta = FrameMeta {
            camera: "c".into(),
            stream: Stream::Main,
            codec,
            seq,
            capture_us: seq as i64 * 40_000,
            pts_90k: seq as i64 * 3600,
            key,
            discontinuity: seq == 0,
        };
        Frame { meta, payload }
    }

    /// Synthetic camera frames (the same encoders as `synthetic:` cameras).
    fn encoded(codec: &str, n: u64) -> Vec<Frame> {
        let cfg = SyntheticConfig::parse(&format!("codec={codec},width=160,height=96,gop=5,bitrate=2M")).unwrap();
        let mut enc = Encoder::new(&cfg).unwrap();
        let mut i420 = Vec::new();
        (0..n)
            .map(|i| {
                render(160, 96, i, i as i64 * 40_000, &mut i420);
                let e = enc.encode(&i420, 160, 96, i % 5 == 0).unwrap();
                assert!(!e.data.is_empty() && (e.key || i % 5 != 0), "frame {i}");
                frame(enc.codec(), i, e.key, e.data)
            })
            .collect()
    }

    #[test]
    fn h264_decodes_from_the_first_key_frame_and_skips_what_comes_before() {
        let frames = encoded("h264", 13);
        let mut d = Decoder::new();
        // Joining mid-GOP: nothing until the key frame at 5.
        for f in &frames[2..5] {
            assert_eq!(d.decode(f, true).unwrap(), None);
        }
        for f in &frames[5..12] {
            let p = d.decode(f, true).unwrap_or_else(|e| panic!("{}: {e}", f.meta.seq)).expect("picture");
            assert_eq!((p.width, p.height, p.rgb.len()), (160, 96, 160 * 96 * 3));
        }
        // Not wanted: decoded (for references) but no picture.
        assert_eq!(d.decode(&frames[12], false).unwrap(), None);
    }

    #[test]
    fn mjpeg_decodes_every_frame() {
        let frames = encoded("mjpeg", 3);
        let mut d = Decoder::new();
        for f in &frames {
            let p = d.decode(f, true).unwrap().expect("picture");
            assert_eq!((p.width, p.height), (160, 96));
        }
    }

    #[test]
    fn broken_frames_are_errors_and_the_decoder_resyncs_at_the_next_key_frame() {
        let frames = encoded("h264", 11);
        let mut d = Decoder::new();
        d.decode(&frames[0], true).unwrap();
        let mut bad = frames[1].clone();
        bad.payload.truncate(bad.payload.len() / 3);
        bad.payload.extend_from_slice(&[0xff; 64]);
        // openh264 conceals some damage; whatever it says, no panic, and
        // after an error it waits for a key frame.
        if d.decode(&bad, true).is_err() {
            assert_eq!(d.decode(&frames[2], true).unwrap(), None);
        }
        assert!(d.decode(&frames[5], true).unwrap().is_some());
        let mut jpeg = encoded("mjpeg", 1).remove(0);
        jpeg.payload.truncate(40);
        assert!(matches!(d.decode(&jpeg, true), Err(DecodeError::Broken { codec: "MJPEG", .. })));
        let h265 = frame(Codec::H265, 0, true, vec![0, 0, 0, 1, 0x40, 1]);
        assert!(matches!(Decoder::new().decode(&h265, true), Err(DecodeError::Unsupported(_))));
    }
}
