//! Cameras through an ffmpeg child process: `ffmpeg:ARGS` (anything ffmpeg
//! reads: V4L2, RTSP, RTMP, HLS, SRT, a generator) and `file:PATH` (an
//! MP4/MKV/raw H.264/H.265 file, by way of the same path).
//!
//! vigil runs `ffmpeg -hide_banner -loglevel error -nostdin ARGS -an -sn -dn
//! OUTPUT` and splits OUTPUT (ffmpeg's stdout) into frames. OUTPUT follows
//! the video codec that the last `-c:v`/`-vcodec`/`-codec:v`/`-c`/`-codec`
//! after the last `-i` names:
//!
//! - `mjpeg`: `-f mjpeg pipe:1`, split into JPEG images (`jpeg.rs`);
//! - `libx265` or `hevc…`: `-bsf:v hevc_mp4toannexb,hevc_metadata=aud=insert
//!   -f hevc pipe:1`;
//! - anything else is taken to be H.264 (`-c:v copy` is added when ARGS name
//!   no codec): `-bsf:v h264_mp4toannexb,h264_metadata=aud=insert -f h264
//!   pipe:1`.
//!
//! The AUD insert makes access units exact to split (`annexb.rs`);
//! `*_mp4toannexb` puts the parameter sets from an MP4/MKV header in band
//! (without it ffmpeg 5.1 drops them when copying from a container) and
//! passes an Annex-B input through.
//!
//! `file:PATH?OPTIONS` (options `&`-separated, all optional): real-time pace
//! (`-re`) unless `fast`; `loop` plays the file again when it ends (vigil
//! restarts ffmpeg: ffmpeg 5.1's `-stream_loop` stops after the first pass
//! when bitstream filters are used). `ffprobe` picks the codec: H.264,
//! H.265 and MJPEG are copied, anything else is encoded with libx264.
//!
//! Clocks: capture time is arrival (the moment a whole frame has been read
//! from ffmpeg). `pts_90k` is the arrival clock since the session started
//! for `ffmpeg:`, and the frame count times the file's frame rate for
//! `file:` (so a file played `fast` keeps its media timeline).
//!
//! Failure: ffmpeg exiting, a stream the splitters reject, or no frame for
//! 10 s end the session with the reason (ffmpeg's last stderr lines
//! included); the supervisor reconnects. The child is killed and reaped
//! whenever a session ends, however it ends (`Drop`). Key frames cannot be
//! requested from ffmpeg: after a drop the buffer waits for the next one.

use super::{Captured, Sink, SourceError, annexb, jpeg};
use media::Codec;
use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A session with no frame for this long has failed.
pub const NO_FRAME: Duration = Duration::from_secs(10);
/// How often a session looks at `Sink::stopping` while no frame arrives.
const POLL: Duration = Duration::from_millis(100);
/// ffmpeg's last stderr lines kept for the error.
const STDERR_LINES: usize = 4;
const STDERR_LINE_BYTES: usize = 300;

/// `ffmpeg:ARGS`. `Debug` leaves out credentials in URLs.
#[derive(Clone, PartialEq)]
pub struct Config {
    /// ffmpeg's input arguments, as given.
    pub args: Vec<String>,
    pub codec: Codec,
    /// ARGS name no video codec: copy the input's (taken to be H.264).
    copy: bool,
}

impl Config {
    pub fn parse(s: &str) -> Result<Self, String> {
        let args = split_args(s)?;
        let input = args.iter().rposition(|a| a == "-i").filter(|&i| i + 1 < args.len());
        let input = input.ok_or_else(|| format!("ffmpeg:{}: no input (ARGS must contain -i INPUT)", redact(s)))?;
        let mut codec = None;
        let mut i = input + 2;
        while i + 1 < args.len() {
            if matches!(args[i].as_str(), "-c:v" | "-c:v:0" | "-vcodec" | "-codec:v" | "-codec:v:0" | "-c" | "-codec") {
                codec = Some(args[i + 1].as_str());
                i += 1;
            }
            i += 1;
        }
        let (codec, copy) = match codec {
            None => (Codec::H264, true),
            Some("mjpeg") => (Codec::Mjpeg, false),
            Some(c) if c == "libx265" || c.starts_with("hevc") => (Codec::H265, false),
            Some(_) => (Codec::H264, false),
        };
        Ok(Config { args, codec, copy })
    }

    /// ffmpeg's whole command line (after the program name).
    pub fn command(&self) -> Vec<String> {
        let mut c = head();
        c.extend(self.args.iter().cloned());
        if self.copy {
            c.extend(["-c:v".into(), "copy".into()]);
        }
        c.extend(output(self.codec));
        c
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ffmpeg {} ({})", redact(&self.args.join(" ")), self.codec.name())
    }
}

/// `s` with the user and password of every `scheme://user:password@host`
/// replaced by `***` (ffmpeg repeats its input URL in its errors).
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority =
            tail.find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"').unwrap_or(tail.len());
        match tail[..authority].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// `file:PATH[?loop][&fast]`.
#[derive(Clone, Debug, PartialEq)]
pub struct FileConfig {
    pub path: PathBuf,
    /// Play again from the start when the file ends.
    pub looping: bool,
    /// As fast as ffmpeg reads, not at real-time pace.
    pub fast: bool,
}

impl FileConfig {
    pub fn parse(s: &str) -> Result<Self, String> {
        // Options follow the last `?`, unless the whole string names a file.
        let (path, opts) = match s.rsplit_once('?') {
            Some((p, o)) if !Path::new(s).exists() => (p, o),
            _ => (s, ""),
        };
        let (mut looping, mut fast) = (false, false);
        for o in opts.split('&').filter(|o| !o.is_empty()) {
            match o {
                "loop" => looping = true,
                "fast" => fast = true,
                _ => return Err(format!("file:{s}: unknown option `{o}` (expected loop, fast: file:PATH?loop&fast)")),
            }
        }
        if path.is_empty() {
            return Err("file: needs a path: file:PATH[?loop][&fast]".into());
        }
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => Err(format!("file:{path}: is a directory")),
            Ok(_) => Ok(FileConfig { path: path.into(), looping, fast }),
            Err(e) => Err(format!("file:{path}: {e}")),
        }
    }

    /// ffmpeg's command line for a file whose video ffprobe described.
    fn command(&self, probe: &Probe) -> (Codec, Vec<String>) {
        let mut c = head();
        if !self.fast {
            c.push("-re".into());
        }
        // `file:` so that a `:` in the path is not read as a protocol.
        c.extend(["-i".into(), format!("file:{}", self.path.display()), "-map".into(), "0:v:0".into()]);
        let codec = match probe.codec.as_str() {
            "h264" => Codec::H264,
            "hevc" => Codec::H265,
            "mjpeg" => Codec::Mjpeg,
            _ => {
                c.extend(["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency"].map(String::from));
                return (Codec::H264, [c, output(Codec::H264)].concat());
            }
        };
        c.extend(["-c:v".into(), "copy".into()]);
        (codec, [c, output(codec)].concat())
    }
}

fn head() -> Vec<String> {
    ["-hide_banner", "-loglevel", "error", "-nostdin"].map(String::from).to_vec()
}

fn output(codec: Codec) -> Vec<String> {
    let (bsf, format) = match codec {
        Codec::H264 => (Some("h264_mp4toannexb,h264_metadata=aud=insert"), "h264"),
        Codec::H265 => (Some("hevc_mp4toannexb,hevc_metadata=aud=insert"), "hevc"),
        Codec::Mjpeg => (None, "mjpeg"),
    };
    let mut o: Vec<String> = ["-an", "-sn", "-dn"].map(String::from).to_vec();
    if let Some(b) = bsf {
        o.extend(["-bsf:v".into(), b.into()]);
    }
    o.extend(["-flush_packets", "1", "-f", format, "pipe:1"].map(String::from));
    o
}

/// Splits ARGS like a shell: words at whitespace; `'…'` literal; `"…"`
/// with `\"` and `\\`; outside quotes `\` escapes the next character.
pub fn split_args(s: &str) -> Result<Vec<String>, String> {
    let (mut out, mut word, mut in_word) = (Vec::new(), String::new(), false);
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                in_word = true;
                loop {
                    match (c, chars.next()) {
                        (_, None) => return Err(format!("`{s}`: unterminated {c} quote")),
                        (q, Some(d)) if d == q => break,
                        ('"', Some('\\')) => match chars.next() {
                            Some(e @ ('"' | '\\')) => word.push(e),
                            Some(e) => word.extend(['\\', e]),
                            None => return Err(format!("`{s}`: unterminated \" quote")),
                        },
                        (_, Some(d)) => word.push(d),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next().unwrap_or('\\'));
            }
            c if c.is_whitespace() => {
                if std::mem::take(&mut in_word) {
                    out.push(std::mem::take(&mut word));
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        out.push(word);
    }
    Ok(out)
}

/// An `ffmpeg:` camera session.
pub fn session(cfg: &Config, sink: &mut Sink) -> Result<(), SourceError> {
    let mut ff = Process::spawn("ffmpeg", &cfg.command(), cfg.codec)?;
    let (start, mut last_pts) = (Instant::now(), -1);
    loop {
        let Some(f) = ff.next(&|| sink.stopping())? else { return Ok(()) };
        // Frames read at once arrive at one instant: keep pts increasing.
        let pts_90k = arrival_90k(start, f.at).max(last_pts + 1);
        last_pts = pts_90k;
        sink.frame(Captured { codec: cfg.codec, key: f.key, capture_us: f.at_us, pts_90k, data: f.data });
    }
}

/// A `file:` camera session.
pub fn file_session(cfg: &FileConfig, sink: &mut Sink) -> Result<(), SourceError> {
    let probe = Probe::run(&cfg.path, &|| sink.stopping())?;
    let (codec, args) = cfg.command(&probe);
    let (start, mut last_pts) = (Instant::now(), -1);
    let mut n: i64 = 0;
    loop {
        let mut ff = Process::spawn("ffmpeg", &args, codec)?;
        let before = n;
        while let Some(f) = ff.next(&|| sink.stopping())? {
            let pts_90k = match probe.fps {
                Some((num, den)) => n.saturating_mul(90_000 * den) / num,
                None => arrival_90k(start, f.at),
            }
            .max(last_pts + 1);
            (last_pts, n) = (pts_90k, n + 1);
            sink.frame(Captured { codec, key: f.key, capture_us: f.at_us, pts_90k, data: f.data });
        }
        if !cfg.looping || sink.stopping() {
            return Ok(());
        }
        if n == before {
            return Err(SourceError::Stream(format!("{}: no video frames to loop", cfg.path.display())));
        }
    }
}

/// The arrival clock since `start`, 90 kHz.
fn arrival_90k(start: Instant, at: Instant) -> i64 {
    (at.saturating_duration_since(start).as_micros() as i64) * 9 / 100
}

/// What ffprobe says about a file's first video stream.
struct Probe {
    codec: String,
    /// Frames per second as a fraction, when known.
    fps: Option<(i64, i64)>,
}

impl Probe {
    fn run(path: &Path, stopping: &dyn Fn() -> bool) -> Result<Self, SourceError> {
        let file = format!("file:{}", path.display());
        let args =
            ["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name,avg_frame_rate,r_frame_rate"];
        let child = Command::new("ffprobe")
            .args(args)
            .args(["-of", "default=noprint_wrappers=1", file.as_str()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| SourceError::Connect(format!("cannot start ffprobe: {e}")))?;
        let mut child = Reaped(child);
        let deadline = Instant::now() + NO_FRAME;
        let status = loop {
            if let Some(s) = child.0.try_wait().map_err(|e| SourceError::Connect(format!("ffprobe: {e}")))? {
                break s;
            }
            if stopping() || Instant::now() > deadline {
                return Err(SourceError::Connect(format!("ffprobe {}: no answer in {NO_FRAME:?}", path.display())));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Small outputs: they fit the pipes, so reading after exit is safe.
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(s) = child.0.stdout.as_mut() {
            let _ = s.take(1 << 16).read_to_string(&mut out);
        }
        if let Some(s) = child.0.stderr.as_mut() {
            let _ = s.take(1 << 16).read_to_string(&mut err);
        }
        if !status.success() {
            return Err(SourceError::Connect(format!("ffprobe {}: {}", path.display(), err.trim())));
        }
        Probe::parse(&out).ok_or_else(|| SourceError::Connect(format!("{}: no video stream", path.display())))
    }

    /// ffprobe's answer (`key=value` lines); `None` without a codec.
    fn parse(out: &str) -> Option<Self> {
        let field = |k: &str| out.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix('=')).unwrap_or("");
        let codec = field("codec_name").to_string();
        if codec.is_empty() {
            return None;
        }
        let rate = |s: &str| {
            let (a, b) = s.split_once('/')?;
            let (a, b) = (a.parse::<i64>().ok()?, b.parse::<i64>().ok()?);
            (a > 0 && b > 0 && a / b < 1000 && b < 1 << 24).then_some((a, b))
        };
        Some(Probe { codec, fps: rate(field("avg_frame_rate")).or_else(|| rate(field("r_frame_rate"))) })
    }
}

/// A child process that is killed and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A frame as read from ffmpeg.
struct Out {
    data: Vec<u8>,
    key: bool,
    /// Arrival: wall clock, and monotonic.
    at_us: i64,
    at: Instant,
}

enum Msg {
    Frame(Out),
    Failed(SourceError),
    /// ffmpeg's output ended; the last frame, if whole.
    End(Option<Out>),
}

/// A running ffmpeg and the threads that read its output; dropping it
/// kills and reaps the process and ends the threads.
struct Process {
    child: Reaped,
    frames: Receiver<Msg>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    readers: Vec<JoinHandle<()>>,
    last_frame: Instant,
    frames_seen: u64,
    no_frame: Duration,
    ended: bool,
}

impl Process {
    fn spawn(program: &str, args: &[String], codec: Codec) -> Result<Self, SourceError> {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| SourceError::Connect(format!("cannot start {program}: {e}")))?;
        let mut child = Reaped(child);
        #[cfg(test)]
        tests::SPAWNED.lock().unwrap_or_else(|e| e.into_inner()).push((args.join(" "), child.0.id()));
        let (stdout, stderr) = (child.0.stdout.take(), child.0.stderr.take());
        let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
            return Err(SourceError::Connect(format!("{program}: no pipes")));
        };
        // Few frames in flight: the reader blocks, then ffmpeg, when the
        // session is slow; memory stays bounded by the splitters' limits.
        let (tx, frames) = sync_channel(4);
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let split = match codec {
            Codec::Mjpeg => Split::Jpeg(jpeg::Splitter::default()),
            c => Split::AnnexB(annexb::Splitter::new(c)),
        };
        let mut p = Process {
            child,
            frames,
            stderr: tail.clone(),
            readers: Vec::new(),
            last_frame: Instant::now(),
            frames_seen: 0,
            no_frame: NO_FRAME,
            ended: false,
        };
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| SourceError::Connect(format!("cannot start a thread: {e}")))
        };
        let send = move |m| tx.send(m).is_ok();
        p.readers.push(spawn("ffmpeg-out", Box::new(move || read_frames(stdout, split, send)))?);
        p.readers.push(spawn("ffmpeg-err", Box::new(move || read_stderr(stderr, &tail)))?);
        Ok(p)
    }

    /// The next frame; `None` when ffmpeg's output ended cleanly or the
    /// camera is stopping. Waits at most `POLL` between looks at `stopping`.
    fn next(&mut self, stopping: &dyn Fn() -> bool) -> Result<Option<Out>, SourceError> {
        while !self.ended && !stopping() {
            match self.frames.recv_timeout(POLL) {
                Ok(Msg::Frame(f)) => {
                    self.last_frame = Instant::now();
                    self.frames_seen += 1;
                    return Ok(Some(f));
                }
                Ok(Msg::Failed(e)) => return Err(self.failed(e)),
                Ok(Msg::End(last)) => return self.end(last, stopping),
                Err(RecvTimeoutError::Disconnected) => return self.end(None, stopping),
                Err(RecvTimeoutError::Timeout) if self.last_frame.elapsed() > self.no_frame => {
                    return Err(SourceError::Timeout(self.no_frame));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        Ok(None)
    }

    /// ffmpeg's output ended: its exit status decides.
    fn end(&mut self, last: Option<Out>, stopping: &dyn Fn() -> bool) -> Result<Option<Out>, SourceError> {
        self.ended = true;
        let deadline = Instant::now() + Duration::from_secs(2);
        let status = loop {
            match self.child.0.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline && !stopping() => std::thread::sleep(Duration::from_millis(20)),
                _ => break None,
            }
        };
        match status {
            Some(s) if s.success() => Ok(last),
            Some(s) => {
                let what = match s.code() {
                    Some(c) => format!("ffmpeg exited with status {c}"),
                    None => format!("ffmpeg was killed ({s})"),
                };
                Err(self.failed(SourceError::Stream(what)))
            }
            None => Err(self.failed(SourceError::Stream("ffmpeg closed its output but did not exit".into()))),
        }
    }

    /// `e` with ffmpeg's last stderr lines; a connection error if no frame
    /// ever came.
    fn failed(&mut self, e: SourceError) -> SourceError {
        // The stderr reader ends when ffmpeg does: give it a moment to
        // catch the last lines.
        if self.child.0.try_wait().ok().flatten().is_some() {
            let deadline = Instant::now() + Duration::from_millis(500);
            while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let mut text = match e {
            SourceError::Stream(s) | SourceError::Connect(s) => s,
            other => return other,
        };
        let lines = self.stderr.lock().map(|l| l.iter().cloned().collect::<Vec<_>>()).unwrap_or_default();
        if !lines.is_empty() {
            text = format!("{text}: {}", lines.join("; "));
        }
        if self.frames_seen == 0 { SourceError::Connect(text) } else { SourceError::Stream(text) }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        // Unblock a reader waiting to send, then let both see end of file.
        drop(std::mem::replace(&mut self.frames, sync_channel(0).1));
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        for r in self.readers.drain(..).filter(|r| r.is_finished()) {
            let _ = r.join();
        }
    }
}

enum Split {
    AnnexB(annexb::Splitter),
    Jpeg(jpeg::Splitter),
}

impl Split {
    /// Frames (data, key) that `data` completes; those before an error too.
    fn push(&mut self, data: &[u8], out: &mut Vec<(Vec<u8>, bool)>) -> Result<(), SourceError> {
        match self {
            Split::AnnexB(s) => {
                let mut units = Vec::new();
                let r = s.push(data, &mut units);
                out.extend(units.into_iter().map(|u| (u.data, u.key)));
                r
            }
            Split::Jpeg(s) => {
                let mut images = Vec::new();
                let r = s.push(data, &mut images);
                out.extend(images.into_iter().map(|j| (j, true)));
                r
            }
        }
    }

    fn finish(&mut self) -> Option<(Vec<u8>, bool)> {
        match self {
            Split::AnnexB(s) => s.finish().ok().flatten().map(|u| (u.data, u.key)),
            Split::Jpeg(_) => None, // an image is complete at its EOI
        }
    }
}

/// Reads ffmpeg's stdout and sends every frame it splits, then how the
/// output ended; stops when `send` says the session is gone.
fn read_frames(mut stdout: impl Read, mut split: Split, mut send: impl FnMut(Msg) -> bool) {
    let mut buf = vec![0u8; 64 << 10];
    let mut frames = Vec::new();
    let stamp = |(data, key): (Vec<u8>, bool)| Out { data, key, at_us: bus::now_us(), at: Instant::now() };
    loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                send(Msg::Failed(SourceError::Stream(format!("reading ffmpeg's output: {e}"))));
                return;
            }
        };
        let r = split.push(&buf[..n], &mut frames);
        for f in frames.drain(..) {
            if !send(Msg::Frame(stamp(f))) {
                return; // the session is gone
            }
        }
        if let Err(e) = r {
            send(Msg::Failed(e));
            return;
        }
    }
    send(Msg::End(split.finish().map(stamp)));
}

/// Keeps ffmpeg's last stderr lines (bounded in number and length).
fn read_stderr(mut stderr: impl Read, tail: &Mutex<VecDeque<String>>) {
    let mut buf = [0u8; 4096];
    let mut line = Vec::new();
    let keep = |line: &mut Vec<u8>| {
        let text = redact(String::from_utf8_lossy(line).trim());
        line.clear();
        if text.is_empty() {
            return;
        }
        tracing::debug!(stderr = %text, "ffmpeg");
        if let Ok(mut t) = tail.lock() {
            t.push_back(text);
            while t.len() > STDERR_LINES {
                t.pop_front();
            }
        }
    };
    while let Ok(n) = stderr.read(&mut buf) {
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            match b {
                b'\n' | b'\r' => keep(&mut line),
                _ if line.len() < STDERR_LINE_BYTES => line.push(b),
                _ => {}
            }
        }
    }
    keep(&mut line);
}

/// Fuzzing entry point (`ingest::fuzz::ffmpeg`): everything read from
/// ffmpeg and ffprobe. The first byte picks the codec (`& 3`: H.264, H.265,
/// MJPEG, H.264) and the read sizes (`crate::fuzz::Pieces`); the rest is
/// read as ffmpeg's stdout by the frame reader, as its stderr by the line
/// keeper, and as ffprobe's answer. Checks, besides never panicking: the
/// frames end with exactly one verdict; MJPEG frames are all key frames;
/// the stderr tail stays bounded; a frame rate is positive.
#[cfg(any(test, feature = "fuzz"))]
pub fn fuzz(data: &[u8]) {
    let Some((&ctl, rest)) = data.split_first() else { return };
    let codec = [Codec::H264, Codec::H265, Codec::Mjpeg, Codec::H264][usize::from(ctl & 3)];
    let split = match codec {
        Codec::Mjpeg => Split::Jpeg(jpeg::Splitter::default()),
        c => Split::AnnexB(annexb::Splitter::new(c)),
    };
    let mut msgs = Vec::new();
    read_frames(crate::fuzz::Pieces::new(ctl, rest), split, |m| {
        msgs.push(m);
        true
    });
    let Some((last, frames)) = msgs.split_last() else { panic!("no verdict") };
    assert!(matches!(last, Msg::End(_) | Msg::Failed(_)), "no verdict");
    for m in frames {
        let Msg::Frame(f) = m else { panic!("a verdict before the last frame") };
        assert!(f.key || codec != Codec::Mjpeg, "an MJPEG frame not a key frame");
    }
    let tail = Mutex::new(VecDeque::new());
    read_stderr(crate::fuzz::Pieces::new(ctl, rest), &tail);
    let tail = tail.into_inner().unwrap_or_else(|e| e.into_inner());
    assert!(tail.len() <= STDERR_LINES && tail.iter().all(|l| !l.is_empty() && !l.contains(['\n', '\r'])));
    if let Some(p) = Probe::parse(&String::from_utf8_lossy(rest)) {
        assert!(!p.codec.is_empty() && p.fps.is_none_or(|(a, b)| a > 0 && b > 0));
    }
}

#[cfg(test)]
pub(super) mod tests;
