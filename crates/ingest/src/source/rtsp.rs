//! RTSP cameras, through `retina` (a pure-Rust RTSP client).
//!
//! Source syntax: `rtsp://[USER:PASSWORD@]HOST[:PORT]/PATH[#OPTIONS]`, where
//! OPTIONS are vigil's own, comma-separated `key=value` (never sent to the
//! camera): `transport=tcp|udp` (default tcp: RTP interleaved on the RTSP
//! connection) and `timeout=SECONDS` (default 10: no frame for that long ends
//! the session).
//!
//! Credentials come from the URL, else from the environment at each connect
//! (`VIGIL_RTSP_USER_<CAMERA>` / `VIGIL_RTSP_PASSWORD_<CAMERA>`, the camera
//! id upper-cased with every other character than `A-Z0-9` as `_`, else
//! `VIGIL_RTSP_USER` / `VIGIL_RTSP_PASSWORD`). The URL kept in the config has
//! them stripped, `Debug` redacts the password, and every error text is
//! scrubbed of it, so they never reach a log.
//!
//! A session plays the first H.264, H.265 or JPEG video stream. Frames are
//! stored as vigil stores them: H.26x access units in Annex B with the
//! parameter sets in-band before every key frame (retina's
//! `FrameFormat::SIMPLE`; `check_access_unit` verifies what it hands over),
//! MJPEG frames as whole JPEG files.
//!
//! Capture time: the camera's wall clock when it sends RTCP sender reports
//! (the frame's RTP timestamp mapped through the latest report's NTP/RTP
//! pair), unless that clock is more than `MAX_CLOCK_SKEW` away from the local
//! clock (an unset camera clock reads 1970); otherwise, and before the first
//! report, the local time the frame's first packet arrived. `Sink::frame`
//! keeps it strictly increasing per camera. `pts_90k` is the RTP timestamp
//! since the session started, in 90 kHz units.

use super::{Captured, Sink, SourceError};
use futures::StreamExt;
use media::Codec;
use retina::client::{Credentials, PlayOptions, Session, SessionOptions, SetupOptions, Transport};
use retina::codec::{CodecItem, FrameFormat, VideoFrame};
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How far the camera's clock may be from ours before arrival time is used.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// A forward RTP timestamp jump larger than this ends the session.
const MAX_TIMESTAMP_JUMP_SECS: u32 = 10;
/// How often a silent session looks at the stop flag and the timeout.
const POLL: Duration = Duration::from_millis(50);

/// A parsed `rtsp://` source.
#[derive(Clone, PartialEq)]
pub struct RtspConfig {
    /// Without credentials: safe to show.
    pub url: url::Url,
    pub user: Option<String>,
    password: Option<String>,
    pub udp: bool,
    /// No frame for this long ends the session (`SourceError::Timeout`).
    pub timeout: Duration,
}

impl std::fmt::Debug for RtspConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtspConfig")
            .field("url", &self.url.as_str())
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("udp", &self.udp)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RtspConfig {
    /// Parses a whole source string (`rtsp://...`). Errors never echo the
    /// credentials.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (url, options) = s.split_once('#').unwrap_or((s, ""));
        let mut url = url::Url::parse(url).map_err(|e| format!("rtsp source: not a valid URL ({e})"))?;
        // Stripped before anything can print the URL.
        let (user, password) = super::credentials::take_from_url(&mut url);
        if url.scheme() != "rtsp" {
            return Err(format!("source `{url}`: only rtsp:// is supported"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("source `{url}`: no camera host"));
        }
        let mut c = RtspConfig { url, user, password, udp: false, timeout: Duration::from_secs(10) };
        for kv in options.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) =
                kv.split_once('=').ok_or_else(|| format!("source `{}`: option `{kv}` is not key=value", c.url))?;
            match (k, v) {
                ("transport", "tcp") => c.udp = false,
                ("transport", "udp") => c.udp = true,
                ("transport", _) => return Err(format!("source `{}`: transport `{v}`: use tcp or udp", c.url)),
                ("timeout", _) => match v.trim_end_matches('s').parse::<u64>() {
                    Ok(n @ 1..=600) => c.timeout = Duration::from_secs(n),
                    _ => return Err(format!("source `{}`: timeout `{v}`: use 1..=600 seconds", c.url)),
                },
                _ => return Err(format!("source `{}`: unknown option `{k}` (transport, timeout)", c.url)),
            }
        }
        Ok(c)
    }

    /// The credentials for `camera`: the URL's, else the environment's.
    fn credentials(&self, camera: &str) -> Option<Credentials> {
        self.credentials_from(camera, |name| std::env::var(name).ok())
    }

    fn credentials_from(&self, camera: &str, var: impl Fn(&str) -> Option<String>) -> Option<Credentials> {
        super::credentials::lookup("VIGIL_RTSP", camera, self.user.as_deref(), self.password.as_deref(), var)
            .map(|c| Credentials { username: c.user, password: c.password })
    }
}

/// Turns a retina error into one line without the credentials.
fn clean(e: &retina::Error, creds: Option<&Credentials>) -> String {
    let mut text = e.to_string().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    if let Some(p) = creds.map(|c| c.password.as_str()).filter(|p| !p.is_empty()) {
        text = text.replace(p, "<redacted>");
    }
    match e.status_code() {
        Some(401) => format!("authentication failed (check the camera's credentials): {text}"),
        Some(404) => format!("the camera has no such stream (check the path): {text}"),
        _ => text,
    }
}

/// One connection to the camera, until it fails or the camera is stopped.
pub fn session(cfg: &RtspConfig, sink: &mut Sink) -> Result<(), SourceError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SourceError::Connect(format!("{}: cannot start an I/O runtime: {e}", cfg.url)))?;
    let creds = cfg.credentials(sink.camera);
    let stop = sink.ctx.stop.clone();
    rt.block_on(play(cfg, creds, &stop, sink))
}

/// Awaits one handshake step: `None` if the camera is stopped meanwhile.
async fn step<T>(
    cfg: &RtspConfig,
    creds: Option<&Credentials>,
    stop: &AtomicBool,
    what: &str,
    fut: impl Future<Output = Result<T, retina::Error>>,
) -> Result<Option<T>, SourceError> {
    let deadline = Instant::now() + cfg.timeout;
    let mut fut = std::pin::pin!(fut);
    loop {
        tokio::select! {
            r = &mut fut => {
                return r.map(Some).map_err(|e| SourceError::Connect(format!("{} ({what}): {}", cfg.url, clean(&e, creds))))
            }
            _ = tokio::time::sleep(POLL) => {
                if stop.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                if Instant::now() > deadline {
                    return Err(SourceError::Connect(format!("{} ({what}): no answer within {:?}", cfg.url, cfg.timeout)));
                }
            }
        }
    }
}

async fn play(
    cfg: &RtspConfig,
    creds: Option<Credentials>,
    stop: &AtomicBool,
    sink: &mut Sink<'_>,
) -> Result<(), SourceError> {
    let c = creds.as_ref();
    let options =
        SessionOptions::default().creds(creds.clone()).user_agent(format!("vigil/{}", env!("CARGO_PKG_VERSION")));
    let Some(mut described) = step(cfg, c, stop, "DESCRIBE", Session::describe(cfg.url.clone(), options)).await? else {
        return Ok(());
    };
    let Some((index, codec)) = described.streams().iter().enumerate().find_map(|(i, s)| {
        let codec = match (s.media(), s.encoding_name()) {
            ("video", "h264") => Codec::H264,
            ("video", "h265") => Codec::H265,
            ("video", "jpeg") => Codec::Mjpeg,
            _ => return None,
        };
        Some((i, codec))
    }) else {
        let found: Vec<_> =
            described.streams().iter().map(|s| format!("{}/{}", s.media(), s.encoding_name())).collect();
        return Err(SourceError::Connect(format!(
            "{}: no H.264, H.265 or JPEG video stream (the camera offers {found:?})",
            cfg.url
        )));
    };
    let transport = if cfg.udp { Transport::Udp(Default::default()) } else { Transport::Tcp(Default::default()) };
    let setup = SetupOptions::default().transport(transport).frame_format(FrameFormat::SIMPLE);
    if step(cfg, c, stop, "SETUP", described.setup(index, setup)).await?.is_none() {
        return Ok(());
    }
    let play = PlayOptions::default()
        .enforce_timestamps_with_max_jump_secs(NonZeroU32::new(MAX_TIMESTAMP_JUMP_SECS).unwrap_or(NonZeroU32::MIN));
    let Some(playing) = step(cfg, c, stop, "PLAY", described.play(play)).await? else {
        return Ok(());
    };
    let mut demuxed =
        playing.demuxed().map_err(|e| SourceError::Connect(format!("{} (PLAY): {}", cfg.url, clean(&e, c))))?;
    let mut clock = Clock::default();
    let mut last_frame = Instant::now();
    loop {
        let item = tokio::select! {
            item = demuxed.next() => Some(item),
            _ = tokio::time::sleep(POLL) => None,
        };
        // Checked after anything, not only after silence: RTCP alone does
        // not keep a session alive.
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if last_frame.elapsed() > cfg.timeout {
            return Err(SourceError::Timeout(cfg.timeout));
        }
        let Some(item) = item else { continue };
        match item {
            None => return Err(SourceError::Stream(format!("{}: the camera closed the connection", cfg.url))),
            Some(Err(e)) => return Err(SourceError::Stream(format!("{}: {}", cfg.url, clean(&e, c)))),
            Some(Ok(CodecItem::Rtcp(rtcp))) if rtcp.stream_id() == index => {
                let report = rtcp.pkts().next().and_then(|p| p.as_sender_report().ok().flatten());
                if let (Some(ts), Some(sr)) = (rtcp.rtp_timestamp(), report) {
                    clock.sender_report(ntp_to_unix_us(sr.ntp_timestamp().0), ts.timestamp(), ts.clock_rate().get());
                }
            }
            Some(Ok(CodecItem::VideoFrame(f))) if f.stream_id() == index => {
                last_frame = Instant::now();
                sink.frame(
                    convert(codec, f, &mut clock).map_err(|e| SourceError::Stream(format!("{}: {e}", cfg.url)))?,
                );
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Turns one retina frame into what vigil stores.
fn convert(codec: Codec, f: VideoFrame, clock: &mut Clock) -> Result<Captured, String> {
    let ts = f.timestamp();
    let rate = i128::from(ts.clock_rate().get());
    let pts_90k = (i128::from(ts.elapsed()) * 90_000 / rate).clamp(i64::MIN.into(), i64::MAX.into()) as i64;
    let arrival_us = SystemTime::from(f.start_ctx().received_wall())
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_else(|_| bus::now_us());
    let capture_us = clock.capture_us(ts.timestamp(), arrival_us);
    let rap = f.is_random_access_point();
    let data = f.into_data();
    let au = check_access_unit(codec, &data)?;
    // A key frame without its parameter sets cannot start decoding.
    let key = rap && au.decodable_alone;
    Ok(Captured { codec, key, capture_us, pts_90k, data })
}

/// What `check_access_unit` found.
#[derive(Debug, PartialEq)]
pub struct AccessUnit {
    /// A decoder can start here: an IRAP picture with its parameter sets
    /// (H.26x), or any JPEG.
    pub decodable_alone: bool,
}

/// Checks a frame as retina handed it over: Annex-B NAL units (non-empty,
/// forbidden bit clear) for H.26x, a JPEG start-of-image for MJPEG.
pub fn check_access_unit(codec: Codec, data: &[u8]) -> Result<AccessUnit, String> {
    let name = match codec {
        Codec::H264 => "H.264",
        Codec::H265 => "H.265",
        Codec::Mjpeg => {
            if data.len() < 4 || data[..2] != [0xFF, 0xD8] {
                return Err(format!("malformed JPEG frame ({} bytes, no start-of-image marker)", data.len()));
            }
            return Ok(AccessUnit { decodable_alone: true });
        }
    };
    let bad = |why: &str| format!("malformed {name} access unit ({} bytes): {why}", data.len());
    let (mut sps, mut pps, mut vps, mut irap) = (false, false, false, false);
    let mut nals = 0;
    for nal in annex_b_nals(data).map_err(&bad)? {
        let Some(&h) = nal.first() else { return Err(bad("empty NAL unit")) };
        if h & 0x80 != 0 {
            return Err(bad("NAL unit header with the forbidden bit set"));
        }
        nals += 1;
        match codec {
            Codec::H264 => match h & 0x1F {
                7 => sps = true,
                8 => pps = true,
                5 => irap = true,
                _ => {}
            },
            _ => {
                if nal.len() < 2 {
                    return Err(bad("truncated NAL unit header"));
                }
                match (h >> 1) & 0x3F {
                    32 => vps = true,
                    33 => sps = true,
                    34 => pps = true,
                    16..=21 => irap = true,
                    _ => {}
                }
            }
        }
    }
    if nals == 0 {
        return Err(bad("no NAL unit"));
    }
    let params = sps && pps && (codec == Codec::H264 || vps);
    Ok(AccessUnit { decodable_alone: irap && params })
}

/// Splits Annex-B data at its start codes (`00 00 01` or `00 00 00 01`); it
/// must begin with one.
fn annex_b_nals(data: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    let starts_at = |i: usize| data.get(i..i + 3) == Some(&[0, 0, 1]);
    let first = if starts_at(0) {
        3
    } else if data.first() == Some(&0) && starts_at(1) {
        4
    } else {
        return Err("does not begin with a start code");
    };
    let mut out = Vec::new();
    let (mut begin, mut i) = (first, first);
    while i + 3 <= data.len() {
        if starts_at(i) {
            // A zero before the start code belongs to it (`00 00 00 01`).
            let end = if i > begin && data[i - 1] == 0 { i - 1 } else { i };
            out.push(&data[begin..end]);
            i += 3;
            begin = i;
        } else {
            i += 1;
        }
    }
    out.push(&data[begin..]);
    Ok(out)
}

/// Maps RTP timestamps to the camera's wall clock through the latest RTCP
/// sender report (see the module doc for the rule).
#[derive(Default)]
struct Clock {
    /// (NTP time as Unix µs, extended RTP timestamp, clock rate).
    report: Option<(i64, i64, u32)>,
    skew_warned: bool,
    camera_clock_noted: bool,
}

impl Clock {
    fn sender_report(&mut self, ntp_us: i64, rtp: i64, rate: u32) {
        self.report = Some((ntp_us, rtp, rate.max(1)));
    }

    fn capture_us(&mut self, rtp: i64, arrival_us: i64) -> i64 {
        let Some((ntp_us, at, rate)) = self.report else { return arrival_us };
        let camera_us = i128::from(ntp_us) + (i128::from(rtp) - i128::from(at)) * 1_000_000 / i128::from(rate);
        if (camera_us - i128::from(arrival_us)).unsigned_abs() <= MAX_CLOCK_SKEW.as_micros() {
            if !self.camera_clock_noted {
                self.camera_clock_noted = true;
                let skew_ms = ((camera_us - i128::from(arrival_us)) / 1000) as i64;
                tracing::info!(skew_ms, "capture times from the camera's clock (RTCP sender reports)");
            }
            return camera_us as i64; // within ±60 s of arrival, so in range
        }
        if !self.skew_warned {
            self.skew_warned = true;
            tracing::warn!(
                skew_s = ((camera_us - i128::from(arrival_us)) / 1_000_000) as i64,
                "camera clock is far from ours; using arrival times"
            );
        }
        arrival_us
    }
}

/// NTP (seconds since 1900, 32.32 fixed point) to Unix microseconds.
fn ntp_to_unix_us(ntp: u64) -> i64 {
    let secs = (ntp >> 32) as i64 - 2_208_988_800;
    let frac_us = ((ntp & 0xFFFF_FFFF) * 1_000_000) >> 32;
    secs * 1_000_000 + frac_us as i64
}

/// Fuzzing entry point: the parsers of outside bytes in this module (the
/// source string and a frame from the camera) must never panic.
#[cfg(any(test, feature = "fuzz"))]
pub fn fuzz(data: &[u8]) {
    let _ = RtspConfig::parse(&String::from_utf8_lossy(data));
    for codec in [Codec::H264, Codec::H265, Codec::Mjpeg] {
        let _ = check_access_unit(codec, data);
    }
    let mut clock = Clock::default();
    let word = |i: usize| data.get(i..i + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    clock.sender_report(word(0) as i64, word(8) as i64, word(16) as u32);
    let _ = clock.capture_us(word(24) as i64, word(32) as i64);
    let _ = ntp_to_unix_us(word(40));
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDR: &[u8] = &[0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xCE, 0, 0, 1, 0x65, 0x88, 0x84];

    #[test]
    fn parses_sources_and_hides_the_password() {
        let c = RtspConfig::parse("rtsp://admin:s%40cret@cam.local:8554/live/1#transport=udp,timeout=5").unwrap();
        assert_eq!(c.url.as_str(), "rtsp://cam.local:8554/live/1");
        assert_eq!((c.user.as_deref(), c.password.as_deref()), (Some("admin"), Some("s@cret")));
        assert!(c.udp && c.timeout == Duration::from_secs(5));
        let debug = format!("{c:?}");
        assert!(!debug.contains("cret") && debug.contains("<redacted>"), "{debug}");
        let d = RtspConfig::parse("rtsp://cam/1").unwrap();
        assert!(!d.udp && d.timeout == Duration::from_secs(10) && d.user.is_none());
        for (bad, says) in [
            ("rtsp://u:hunter2@cam/1#transport=sctp", "transport"),
            ("rtsp://u:hunter2@cam/1#fps=3", "unknown option"),
            ("rtsp://u:hunter2@cam/1#timeout=0", "timeout"),
            ("rtsp://u:hunter2@cam/1#udp", "key=value"),
            ("rtsp://u:hunter2@:5/1", "valid URL"),
        ] {
            let e = RtspConfig::parse(bad).unwrap_err();
            assert!(e.contains(says) && !e.contains("hunter2"), "{bad}: {e}");
        }
    }

    #[test]
    fn credentials_from_the_environment_per_camera() {
        let env = |name: &str| match name {
            "VIGIL_RTSP_USER_CAM_ENV_1" => Some("viewer".to_string()),
            "VIGIL_RTSP_PASSWORD_CAM_ENV_1" => Some("pw".to_string()),
            "VIGIL_RTSP_USER" => Some("everyone".to_string()),
            "VIGIL_RTSP_PASSWORD" => Some("shared".to_string()),
            _ => None,
        };
        let c = RtspConfig::parse("rtsp://cam/1").unwrap();
        let got = c.credentials_from("cam-env.1", env).unwrap();
        assert_eq!((got.username.as_str(), got.password.as_str()), ("viewer", "pw"));
        let other = c.credentials_from("door", env).unwrap();
        assert_eq!((other.username.as_str(), other.password.as_str()), ("everyone", "shared"));
        let url = RtspConfig::parse("rtsp://me:mine@cam/1").unwrap().credentials_from("cam-env.1", env).unwrap();
        assert_eq!((url.username.as_str(), url.password.as_str()), ("me", "mine"));
        assert!(c.credentials_from("door", |_| None).is_none());
    }

    #[test]
    fn access_units_are_checked() {
        assert_eq!(check_access_unit(Codec::H264, IDR), Ok(AccessUnit { decodable_alone: true }));
        // An IDR alone, or a P slice, does not start decoding.
        assert!(!check_access_unit(Codec::H264, &[0, 0, 0, 1, 0x65, 0x88]).unwrap().decodable_alone);
        assert!(!check_access_unit(Codec::H264, &[0, 0, 1, 0x41, 0x9A]).unwrap().decodable_alone);
        let hevc =
            [0, 0, 0, 1, 0x40, 1, 0xC, 0, 0, 0, 1, 0x42, 1, 1, 0, 0, 0, 1, 0x44, 1, 0xC1, 0, 0, 1, 0x26, 1, 0xAF];
        assert!(check_access_unit(Codec::H265, &hevc).unwrap().decodable_alone);
        assert!(check_access_unit(Codec::Mjpeg, &[0xFF, 0xD8, 0xFF, 0xD9]).unwrap().decodable_alone);
        for (codec, bad) in [
            (Codec::H264, &[0x65, 0x88][..]),
            (Codec::H264, &[0, 0, 0, 1][..]),
            (Codec::H264, &[0, 0, 1, 0xE5][..]),
            (Codec::H264, &[0, 0, 1, 0x65, 0, 0, 1][..]),
            (Codec::H265, &[0, 0, 1, 0x26][..]),
            (Codec::Mjpeg, &[0xFF, 0xD9, 0, 0][..]),
        ] {
            assert!(check_access_unit(codec, bad).unwrap_err().contains("malformed"), "{bad:?}");
        }
    }

    #[test]
    fn capture_time_follows_the_camera_clock_within_bounds() {
        let mut c = Clock::default();
        assert_eq!(c.capture_us(1000, 5_000_000), 5_000_000, "arrival before any report");
        c.sender_report(100_000_000, 90_000, 90_000);
        assert_eq!(c.capture_us(180_000, 101_200_000), 101_000_000, "camera clock: report + 1 s");
        assert_eq!(c.capture_us(180_000, 999_000_000), 999_000_000, "too far off: arrival");
        assert_eq!(ntp_to_unix_us(2_208_988_800u64 << 32 | 1 << 31), 500_000);
    }

    #[test]
    fn fuzz_bounded() {
        let mut rng = media::fuzz::Rng::new(0x5EED);
        let seeds: [&[u8]; 4] =
            [IDR, b"rtsp://u:p@cam:554/a#transport=udp,timeout=3", &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10], &[0; 48]];
        let started = Instant::now();
        for i in 0..20_000 {
            let mut data = seeds[i % seeds.len()].to_vec();
            for _ in 0..=rng.below(4) {
                rng.mutate(&mut data);
            }
            fuzz(&data);
        }
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}
