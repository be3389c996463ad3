//! The synthetic camera: a moving scene with a visible frame counter and
//! capture time, encoded as H.264 (openh264) or MJPEG.
//!
//! The scene is a pure function of (frame number, capture time, size), so a
//! main and a sub stream of one camera show the same picture at two sizes,
//! and tests can render any frame without running a camera.

mod font;

use media::Codec;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("encoder: {0}")]
    Codec(String),
}

/// Settings of one synthetic stream, parsed from `synthetic:k=v,k=v`.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticConfig {
    pub width: usize,
    pub height: usize,
    pub fps: u32,
    pub bitrate_bps: u32,
    /// Frames from one key frame to the next.
    pub gop: u32,
    pub codec: Codec,
    /// JPEG quality, 1-100 (MJPEG only).
    pub quality: u8,
    /// Encode this many frames once and replay them in a loop (0: encode
    /// every frame). For load tests: like a real camera, it then costs the
    /// machine nothing to produce video.
    pub replay: u32,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            width: 640,
            height: 360,
            fps: 10,
            bitrate_bps: 400_000,
            gop: 20,
            codec: Codec::H264,
            quality: 70,
            replay: 0,
        }
    }
}

impl SyntheticConfig {
    /// Parses the part after `synthetic:`, e.g. `width=1280,height=720,fps=30,codec=mjpeg`.
    pub fn parse(spec: &str) -> Result<Self, Error> {
        let mut c = SyntheticConfig::default();
        for kv in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) =
                kv.split_once('=').ok_or_else(|| Error::Config(format!("synthetic option `{kv}` is not key=value")))?;
            let num = |max: u64| -> Result<u64, Error> {
                let n = parse_si(v).ok_or_else(|| Error::Config(format!("synthetic {k}: `{v}` is not a number")))?;
                if n == 0 || n > max {
                    return Err(Error::Config(format!("synthetic {k}: {v} is out of range 1..={max}")));
                }
                Ok(n)
            };
            match k {
                "width" => c.width = num(7680)? as usize,
                "height" => c.height = num(4320)? as usize,
                "fps" => c.fps = num(120)? as u32,
                "bitrate" => c.bitrate_bps = num(100_000_000)? as u32,
                "gop" => c.gop = num(1000)? as u32,
                "quality" => c.quality = num(100)? as u8,
                "replay" => c.replay = num(100_000)? as u32,
                "codec" => {
                    c.codec = match v {
                        "h264" => Codec::H264,
                        "mjpeg" => Codec::Mjpeg,
                        _ => return Err(Error::Config(format!("synthetic codec `{v}`: use h264 or mjpeg"))),
                    }
                }
                _ => {
                    return Err(Error::Config(format!(
                        "unknown synthetic option `{k}` (width, height, fps, bitrate, gop, codec, quality, replay)"
                    )));
                }
            }
        }
        if c.width % 2 != 0 || c.height % 2 != 0 || c.width < 64 || c.height < 64 {
            return Err(Error::Config(format!(
                "synthetic size {}x{}: width and height must be even and at least 64",
                c.width, c.height
            )));
        }
        Ok(c)
    }
}

/// `400k`, `4M`, `25` → number.
fn parse_si(v: &str) -> Option<u64> {
    let (digits, mult) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1_000),
        b'm' | b'M' => (&v[..v.len() - 1], 1_000_000),
        _ => (v, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// Renders the scene into an I420 buffer (Y plane, then U, then V).
pub fn render(width: usize, height: usize, frame_no: u64, capture_us: i64, out: &mut Vec<u8>) {
    let (cw, ch) = (width / 2, height / 2);
    out.clear();
    out.resize(width * height + 2 * cw * ch, 128);
    let (luma, chroma) = out.split_at_mut(width * height);
    let (u, v) = chroma.split_at_mut(cw * ch);
    // Static background: a vertical gradient with a faint grid, so the
    // encoder sees texture that does not change.
    for y in 0..height {
        let base = 40 + (y * 80 / height) as u8;
        for x in 0..width {
            let grid = x % 64 == 0 || y % 64 == 0;
            luma[y * width + x] = if grid { base + 30 } else { base };
        }
    }
    // Three objects on different paths: something for motion and detection.
    let t = frame_no as f64;
    let objects = [
        // (x period, y period, size as fraction of height, Y, U, V)
        (97.0, 61.0, 0.22, 200u8, 60u8, 200u8),
        (151.0, 83.0, 0.15, 150, 200, 80),
        (67.0, 113.0, 0.30, 90, 90, 90),
    ];
    for (i, &(px, py, size, yy, uu, vv)) in objects.iter().enumerate() {
        let s = ((height as f64) * size) as usize;
        let fx = bounce(t / px + i as f64 * 0.3);
        let fy = bounce(t / py + i as f64 * 0.6);
        let x0 = (fx * (width - s) as f64) as usize;
        let y0 = (fy * (height - s) as f64) as usize;
        for y in y0..y0 + s {
            luma[y * width + x0..y * width + x0 + s].fill(yy);
        }
        for y in y0 / 2..(y0 + s) / 2 {
            u[y * cw + x0 / 2..y * cw + (x0 + s) / 2].fill(uu);
            v[y * cw + x0 / 2..y * cw + (x0 + s) / 2].fill(vv);
        }
    }
    let scale = (height / 120).max(1);
    let secs = capture_us.div_euclid(1_000_000);
    let ms = capture_us.rem_euclid(1_000_000) / 1000;
    let clock = format!("{:02}:{:02}:{:02}.{:03}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60, ms);
    for (row, text) in [(4, format!("#{frame_no}")), (14, clock)] {
        let (x0, y0) = (4 * scale, row * scale);
        let (w, h) = font::draw(luma, width, height, x0, y0, scale, &text);
        // Grey text box: no colour from an object passing underneath.
        for y in y0 / 2..((y0 + h) / 2).min(ch) {
            let (a, b) = (y * cw + x0 / 2, y * cw + ((x0 + w) / 2).min(cw));
            u[a..b].fill(128);
            v[a..b].fill(128);
        }
    }
}

/// Triangle wave in [0, 1]: positions that bounce off the edges.
fn bounce(x: f64) -> f64 {
    let f = x.rem_euclid(2.0);
    if f > 1.0 { 2.0 - f } else { f }
}

/// One encoded picture.
#[derive(Clone)]
pub struct Encoded {
    pub data: Vec<u8>,
    pub key: bool,
}

/// A video encoder for the synthetic camera.
pub enum Encoder {
    H264(Box<openh264::encoder::Encoder>),
    Mjpeg { quality: u8 },
}

impl Encoder {
    pub fn new(c: &SyntheticConfig) -> Result<Self, Error> {
        use openh264::encoder::{BitRate, EncoderConfig, FrameRate, IntraFramePeriod, RateControlMode, UsageType};
        match c.codec {
            Codec::H264 => {
                let cfg = EncoderConfig::new()
                    .bitrate(BitRate::from_bps(c.bitrate_bps))
                    .max_frame_rate(FrameRate::from_hz(c.fps as f32))
                    .rate_control_mode(RateControlMode::Bitrate)
                    .usage_type(UsageType::CameraVideoRealTime)
                    .intra_frame_period(IntraFramePeriod::from_num_frames(c.gop))
                    // Without frame skipping openh264 cannot hold the
                    // bitrate (and says so on every start); a skipped frame
                    // comes back empty and the camera leaves it out.
                    .skip_frames(true);
                let api = openh264::OpenH264API::from_source();
                let enc = openh264::encoder::Encoder::with_api_config(api, cfg)
                    .map_err(|e| Error::Codec(format!("openh264: {e}")))?;
                Ok(Encoder::H264(Box::new(enc)))
            }
            Codec::Mjpeg => Ok(Encoder::Mjpeg { quality: c.quality }),
            Codec::H265 => Err(Error::Config("the synthetic camera encodes h264 or mjpeg".into())),
        }
    }

    pub fn codec(&self) -> Codec {
        match self {
            Encoder::H264(_) => Codec::H264,
            Encoder::Mjpeg { .. } => Codec::Mjpeg,
        }
    }

    /// Encodes one I420 picture. `force_key` starts a new GOP (after frames
    /// were dropped downstream, so decoders can resume at once).
    pub fn encode(&mut self, i420: &[u8], width: usize, height: usize, force_key: bool) -> Result<Encoded, Error> {
        match self {
            Encoder::H264(enc) => {
                if force_key {
                    enc.force_intra_frame();
                }
                let yuv = openh264::formats::YUVSlices::new(
                    (
                        &i420[..width * height],
                        &i420[width * height..width * height * 5 / 4],
                        &i420[width * height * 5 / 4..],
                    ),
                    (width, height),
                    (width, width / 2, width / 2),
                );
                let bs = enc.encode(&yuv).map_err(|e| Error::Codec(format!("openh264: {e}")))?;
                let key = matches!(bs.frame_type(), openh264::encoder::FrameType::IDR);
                Ok(Encoded { data: bs.to_vec(), key })
            }
            Encoder::Mjpeg { quality } => {
                // jpeg-encoder takes interleaved YCbCr: upsample the chroma.
                let (cw, ch) = (width / 2, height / 2);
                let mut ycc = Vec::with_capacity(width * height * 3);
                for y in 0..height {
                    for x in 0..width {
                        let c = (y / 2).min(ch - 1) * cw + (x / 2).min(cw - 1);
                        ycc.push(i420[y * width + x]);
                        ycc.push(i420[width * height + c]);
                        ycc.push(i420[width * height + cw * ch + c]);
                    }
                }
                let mut out = Vec::with_capacity(width * height / 4);
                let mut enc = jpeg_encoder::Encoder::new(&mut out, *quality);
                enc.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
                enc.encode(&ycc, width as u16, height as u16, jpeg_encoder::ColorType::Ycbcr)
                    .map_err(|e| Error::Codec(format!("jpeg: {e}")))?;
                Ok(Encoded { data: out, key: true })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        let c = SyntheticConfig::parse("width=320,height=180,fps=5,bitrate=200k,gop=10,codec=mjpeg").unwrap();
        assert_eq!((c.width, c.height, c.fps, c.bitrate_bps, c.gop, c.codec), (320, 180, 5, 200_000, 10, Codec::Mjpeg));
        assert_eq!(SyntheticConfig::parse("").unwrap(), SyntheticConfig::default());
        for bad in ["width", "width=abc", "fps=0", "codec=vp9", "colour=red", "width=101", "width=32", "fps=1000"] {
            assert!(SyntheticConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scene_moves() {
        let (mut a, mut b) = (vec![], vec![]);
        render(320, 180, 0, 0, &mut a);
        render(320, 180, 30, 0, &mut b);
        assert_eq!(a.len(), 320 * 180 * 3 / 2);
        let changed = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert!(changed > 1000, "only {changed} bytes changed");
    }

    #[test]
    fn h264_starts_with_sps_and_idr() {
        let c = SyntheticConfig { width: 320, height: 176, gop: 5, ..Default::default() };
        let mut enc = Encoder::new(&c).unwrap();
        let mut pic = vec![];
        let mut keys = vec![];
        for n in 0..11 {
            render(c.width, c.height, n, 0, &mut pic);
            let e = enc.encode(&pic, c.width, c.height, n == 7).unwrap();
            assert!(e.data.starts_with(&[0, 0, 0, 1]));
            if e.key {
                // SPS (type 7) travels with every key frame.
                assert_eq!(e.data[4] & 0x1f, 7, "frame {n}");
            }
            keys.push(e.key);
        }
        assert!(keys[0] && keys[5] && keys[7], "{keys:?}");
        assert!(!keys[1] && !keys[6]);
    }

    #[test]
    fn mjpeg_is_jpeg() {
        let c = SyntheticConfig { width: 160, height: 96, codec: Codec::Mjpeg, ..Default::default() };
        let mut enc = Encoder::new(&c).unwrap();
        let mut pic = vec![];
        render(c.width, c.height, 3, 0, &mut pic);
        let e = enc.encode(&pic, c.width, c.height, false).unwrap();
        assert!(e.key);
        assert_eq!(&e.data[..2], &[0xFF, 0xD8]);
        assert_eq!(&e.data[e.data.len() - 2..], &[0xFF, 0xD9]);
    }
}
