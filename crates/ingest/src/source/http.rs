//! MJPEG cameras over HTTP: a `multipart/x-mixed-replace` stream, or a JPEG
//! snapshot URL polled at an interval. Plain `std::net` and blocking reads.
//!
//! Source syntax: `http://[USER:PASSWORD@]HOST[:PORT]/PATH[?QUERY][#OPTIONS]`,
//! OPTIONS vigil's own (never sent), comma-separated `key=value`:
//! `poll=SECONDS` (default 1: the interval between snapshot requests) and
//! `timeout=SECONDS` (default 10: no frame for that long ends the session).
//! Credentials go out as `Authorization: Basic`; the URL kept in the config
//! has them stripped and `Debug` redacts the password, so they never reach a
//! log. `https://` is refused at parse time: vigil carries no root
//! certificates yet.
//!
//! A session sends one `GET`. The answer's content type picks the mode:
//!
//! - `multipart/x-mixed-replace; boundary=B`: a stream of parts, each a few
//!   header lines (an optional `Content-Length`) and one JPEG image. The
//!   boundary may be written with or without its leading `--`, lines may end
//!   in CRLF or LF, a missing `boundary=` is learnt from the first line, and
//!   the body may be chunked (ffmpeg's HTTP server chunks).
//! - `image/jpeg`: a snapshot; it is a frame, and the URL is requested again
//!   every `poll` seconds (a fresh connection each time).
//!
//! Any other content type, a status other than 200, a part that is not
//! exactly one whole JPEG image (checked by `jpeg.rs`), a closed connection
//! or silence end the session with the reason; the supervisor reconnects.
//! Every buffer is bounded (HTTP head and part headers 16 KiB, a part
//! `jpeg::MAX_IMAGE`, bytes skipped while looking for a boundary 64 KiB), so
//! a broken or hostile server cannot exhaust memory. The parsers (`parse_head`,
//! `Body`, `Multipart`) are pure state machines without I/O, fuzzed in the
//! default suite (`fuzz`). Capture time is arrival; `pts_90k` the arrival
//! clock since the session started.

use super::jpeg::{MAX_IMAGE, Splitter};
use super::{Captured, Sink, SourceError};
use media::Codec;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// How often a blocked session looks at the stop flag and its deadline.
const POLL: Duration = Duration::from_millis(100);
/// The largest HTTP response head, and the largest set of part headers.
const MAX_HEAD: usize = 16 << 10;
/// The most bytes skipped while looking for a multipart boundary.
const MAX_PREAMBLE: usize = 64 << 10;
/// The longest chunk-size or trailer line of a chunked body.
const MAX_CHUNK_LINE: usize = 1 << 10;

/// A parsed `http://` source.
#[derive(Clone, PartialEq)]
pub struct HttpConfig {
    /// Without credentials and without vigil's options: safe to show.
    pub url: url::Url,
    pub user: Option<String>,
    password: Option<String>,
    /// Between two snapshot requests (snapshot URLs only).
    pub poll: Duration,
    /// No frame for this long ends the session.
    pub timeout: Duration,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("url", &self.url.as_str())
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("poll", &self.poll)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HttpConfig {
    /// Parses a whole source string (`http://...`). Errors never echo the
    /// credentials.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (url, options) = s.split_once('#').unwrap_or((s, ""));
        let mut url = url::Url::parse(url).map_err(|e| format!("http source: not a valid URL ({e})"))?;
        let decode = |v: &str| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned();
        let user = Some(decode(url.username())).filter(|u| !u.is_empty());
        let password = url.password().map(decode);
        // Stripped before anything can print the URL.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(format!(
                    "source `{url}`: https cameras: not supported yet; use ffmpeg:-i {url} -c:v mjpeg"
                ));
            }
            _ => return Err(format!("source `{url}`: only http:// is supported")),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("source `{url}`: no camera host"));
        }
        let mut c = HttpConfig { url, user, password, poll: Duration::from_secs(1), timeout: Duration::from_secs(10) };
        for kv in options.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) =
                kv.split_once('=').ok_or_else(|| format!("source `{}`: option `{kv}` is not key=value", c.url))?;
            let secs = v.trim_end_matches('s').parse::<f64>().ok();
            match (k, secs) {
                ("poll", Some(s)) if (0.05..=3600.0).contains(&s) => c.poll = Duration::from_secs_f64(s),
                ("poll", _) => return Err(format!("source `{}`: poll `{v}`: use 0.05..=3600 seconds", c.url)),
                ("timeout", Some(s)) if (0.1..=600.0).contains(&s) => c.timeout = Duration::from_secs_f64(s),
                ("timeout", _) => return Err(format!("source `{}`: timeout `{v}`: use 0.1..=600 seconds", c.url)),
                _ => return Err(format!("source `{}`: unknown option `{k}` (poll, timeout)", c.url)),
            }
        }
        Ok(c)
    }

    /// The GET request, with the credentials when the URL had some.
    fn request(&self) -> Vec<u8> {
        let u = &self.url;
        let target = &u[url::Position::BeforePath..url::Position::AfterQuery];
        let host = u.host_str().unwrap_or_default();
        let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
        let mut r = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}{port}\r\nUser-Agent: vigil/{}\r\n\
             Accept: multipart/x-mixed-replace, image/jpeg\r\nConnection: close\r\n",
            env!("CARGO_PKG_VERSION")
        );
        if self.user.is_some() || self.password.is_some() {
            let pair = format!("{}:{}", self.user.as_deref().unwrap_or(""), self.password.as_deref().unwrap_or(""));
            r.push_str(&format!("Authorization: Basic {}\r\n", base64(pair.as_bytes())));
        }
        r.push_str("\r\n");
        r.into_bytes()
    }
}

/// Standard base64 with padding (RFC 4648), for Basic authentication.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let byte = |i: usize| u32::from(c.get(i).copied().unwrap_or(0));
        let n = byte(0) << 16 | byte(1) << 8 | byte(2);
        for i in 0..4 {
            s.push(if i <= c.len() { char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]) } else { '=' });
        }
    }
    s
}

/// One connection to the camera, until it fails or the camera is stopped.
pub fn session(cfg: &HttpConfig, sink: &mut Sink) -> Result<(), SourceError> {
    let stop = sink.ctx.stop.clone();
    run(cfg, &|| stop.load(Ordering::Relaxed), &mut |c| sink.frame(c))
}

/// The session without the supervisor's `Sink`, so tests see its error.
fn run(cfg: &HttpConfig, stopping: &dyn Fn() -> bool, frame: &mut dyn FnMut(Captured)) -> Result<(), SourceError> {
    let start = Instant::now();
    let Some(mut r) = Response::get(cfg, stopping)? else { return Ok(()) };
    let mut deliver = |data: Vec<u8>| {
        let pts_90k = start.elapsed().as_micros() as i64 * 9 / 100;
        frame(Captured { codec: Codec::Mjpeg, key: true, capture_us: bus::now_us(), pts_90k, data });
    };
    if r.snapshot {
        loop {
            let Some(image) = r.image(cfg, stopping)? else { return Ok(()) };
            deliver(image);
            let next = r.sent + cfg.poll;
            while Instant::now() < next {
                if stopping() {
                    return Ok(());
                }
                std::thread::sleep(POLL.min(next.saturating_duration_since(Instant::now())));
            }
            match Response::get(cfg, stopping)? {
                Some(next) if next.snapshot => r = next,
                Some(_) => return Err(connect(cfg, "the snapshot URL now answers with a stream")),
                None => return Ok(()),
            }
        }
    }
    let mut parts = Multipart::new(r.head.boundary.as_deref());
    let (mut decoded, mut images) = (Vec::new(), Vec::new());
    let mut last_frame = Instant::now();
    loop {
        decoded.clear();
        let Some(more) =
            r.body(&mut decoded, last_frame + cfg.timeout, stopping, || SourceError::Timeout(cfg.timeout))?
        else {
            return Ok(());
        };
        // The images before a broken part still count.
        let pushed = parts.push(&decoded, &mut images);
        for image in images.drain(..) {
            last_frame = Instant::now();
            deliver(image);
        }
        pushed.map_err(|e| in_stream(cfg, e))?;
        if stopping() {
            return Ok(());
        }
        if parts.ended {
            return Err(SourceError::Stream(format!("{}: the camera ended the stream", cfg.url)));
        }
        if !more {
            return Err(SourceError::Stream(format!("{}: the camera closed the connection", cfg.url)));
        }
    }
}

fn connect(cfg: &HttpConfig, why: &str) -> SourceError {
    SourceError::Connect(format!("{}: {why}", cfg.url))
}

/// Puts the URL into a parser's error.
fn in_stream(cfg: &HttpConfig, e: SourceError) -> SourceError {
    match e {
        SourceError::Stream(why) => SourceError::Stream(format!("{}: {why}", cfg.url)),
        other => other,
    }
}

/// An HTTP response being read: its head parsed, its body still coming.
struct Response {
    tcp: TcpStream,
    head: Head,
    body: Body,
    /// Body bytes read together with the head.
    early: Vec<u8>,
    /// `image/jpeg`, else a multipart stream.
    snapshot: bool,
    /// When the request went out.
    sent: Instant,
}

impl Response {
    /// Connects, sends the GET and reads the head; `None` if stopped meanwhile.
    fn get(cfg: &HttpConfig, stopping: &dyn Fn() -> bool) -> Result<Option<Self>, SourceError> {
        let Some(mut tcp) = open(cfg, stopping)? else { return Ok(None) };
        let sent = Instant::now();
        let io = |e: std::io::Error| connect(cfg, &e.to_string());
        tcp.set_write_timeout(Some(cfg.timeout)).map_err(io)?;
        tcp.set_read_timeout(Some(POLL)).map_err(io)?;
        tcp.write_all(&cfg.request()).map_err(io)?;
        let deadline = sent + cfg.timeout;
        let mut buf = Vec::new();
        let mut chunk = vec![0; 16 << 10];
        let (head, used) = loop {
            let head = parse_head(&buf).map_err(|e| match e {
                SourceError::Stream(why) => connect(cfg, &why),
                other => other,
            })?;
            if let Some(found) = head {
                break found;
            }
            let timeout = || connect(cfg, &format!("no HTTP answer within {:?}", cfg.timeout));
            match read(&mut tcp, &mut chunk, deadline, stopping, timeout).map_err(|e| in_stream(cfg, e))? {
                None => return Ok(None),
                Some(0) => return Err(connect(cfg, "the camera closed the connection without an answer")),
                Some(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        if head.status != 200 {
            return Err(connect(cfg, &status_error(cfg, &head)));
        }
        let snapshot = match head.mime.as_str() {
            "multipart/x-mixed-replace" | "multipart/mixed" => false,
            "image/jpeg" | "image/jpg" => true,
            other => {
                return Err(connect(
                    cfg,
                    &format!(
                        "the camera sent content type `{}`, not an MJPEG stream \
                         (multipart/x-mixed-replace) or a JPEG snapshot (image/jpeg)",
                        printable(other)
                    ),
                ));
            }
        };
        let body = Body::new(&head);
        Ok(Some(Response { tcp, head, body, early: buf.split_off(used), snapshot, sent }))
    }

    /// Reads and decodes more of the body into `out`: `Some(false)` once the
    /// body is complete, `None` if stopped meanwhile.
    fn body(
        &mut self,
        out: &mut Vec<u8>,
        deadline: Instant,
        stopping: &dyn Fn() -> bool,
        timeout: impl Fn() -> SourceError,
    ) -> Result<Option<bool>, SourceError> {
        if !self.early.is_empty() {
            let early = std::mem::take(&mut self.early);
            self.body.decode(&early, out)?;
            return Ok(Some(!self.body.done()));
        }
        if self.body.done() {
            return Ok(Some(false));
        }
        let mut chunk = [0; 64 << 10];
        match read(&mut self.tcp, &mut chunk, deadline, stopping, timeout)? {
            None => Ok(None),
            Some(0) if self.body.until_close() => Ok(Some(false)),
            Some(0) => Err(SourceError::Stream("the camera closed the connection".into())),
            Some(n) => {
                self.body.decode(&chunk[..n], out)?;
                Ok(Some(!self.body.done()))
            }
        }
    }

    /// Reads a snapshot's whole body and checks it is one JPEG image.
    fn image(&mut self, cfg: &HttpConfig, stopping: &dyn Fn() -> bool) -> Result<Option<Vec<u8>>, SourceError> {
        let mut data = Vec::new();
        let deadline = self.sent + cfg.timeout;
        loop {
            match self.body(&mut data, deadline, stopping, || SourceError::Timeout(cfg.timeout)) {
                Ok(None) => return Ok(None),
                Ok(Some(false)) => break,
                Ok(Some(true)) => {}
                Err(e) => return Err(in_stream(cfg, e)),
            }
            if data.len() > MAX_IMAGE {
                return Err(in_stream(cfg, bad(&format!("a snapshot over {} MiB", MAX_IMAGE >> 20))));
            }
        }
        one_jpeg(&data).map(Some).map_err(|e| in_stream(cfg, e))
    }
}

/// Resolves and connects on a helper thread, so that a camera that does
/// not answer cannot hold up a stop; `None` if stopped meanwhile.
fn open(cfg: &HttpConfig, stopping: &dyn Fn() -> bool) -> Result<Option<TcpStream>, SourceError> {
    let (url, timeout) = (cfg.url.clone(), cfg.timeout);
    let (tx, rx) = channel();
    let connecting = move || {
        let mut last = std::io::Error::new(ErrorKind::NotFound, "the host name has no address");
        for addr in url.socket_addrs(|| Some(80)).unwrap_or_else(|e| {
            last = e;
            Vec::new()
        }) {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    std::thread::Builder::new()
        .name("vigil-http-connect".into())
        .spawn(move || tx.send(connecting()))
        .map_err(|e| connect(cfg, &format!("cannot start a thread: {e}")))?;
    let deadline = Instant::now() + timeout + POLL;
    loop {
        match rx.recv_timeout(POLL) {
            Ok(Ok(s)) => return Ok(Some(s)),
            Ok(Err(e)) => return Err(connect(cfg, &e.to_string())),
            Err(RecvTimeoutError::Timeout) if stopping() => return Ok(None),
            Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(_) => return Err(connect(cfg, &format!("no connection within {timeout:?}"))),
        }
    }
}

/// One read, waiting in `POLL` steps: `None` if stopped meanwhile, `timeout()`
/// past the deadline.
fn read(
    tcp: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    stopping: &dyn Fn() -> bool,
    timeout: impl Fn() -> SourceError,
) -> Result<Option<usize>, SourceError> {
    loop {
        match tcp.read(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => return Err(SourceError::Stream(e.to_string())),
        }
        if stopping() {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            return Err(timeout());
        }
    }
}

/// Why a status other than 200 ends the session, in words.
fn status_error(cfg: &HttpConfig, head: &Head) -> String {
    let status = format!("HTTP {} {}", head.status, printable(&head.reason));
    match head.status {
        401 if cfg.user.is_none() && cfg.password.is_none() => {
            format!("authentication failed ({status}): the camera wants credentials: http://USER:PASSWORD@HOST/...")
        }
        401 if head.digest => format!(
            "authentication failed ({status}): the camera asks for Digest authentication, which vigil \
             does not support yet (only Basic)"
        ),
        401 | 403 => format!("authentication failed ({status}): check the camera's user and password"),
        404 => format!("the camera has no such URL ({status}): check the path"),
        _ => status,
    }
}

/// Text from the camera made safe for a log line.
fn printable(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(100).collect()
}

fn bad(why: &str) -> SourceError {
    SourceError::Stream(why.to_string())
}

/// What vigil needs from a response head.
#[derive(Debug, Default, PartialEq)]
struct Head {
    status: u16,
    reason: String,
    /// The media type, lower case, without parameters.
    mime: String,
    /// The multipart boundary as declared (leading dashes kept).
    boundary: Option<String>,
    chunked: bool,
    length: Option<u64>,
    /// `WWW-Authenticate: Digest ...`.
    digest: bool,
}

/// Parses a response head at the start of `buf`: the head and its length,
/// or `None` while incomplete. Lines may end in CRLF or LF.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, SourceError> {
    if buf.len() >= 5 && !buf.starts_with(b"HTTP/") {
        return Err(bad("not an HTTP response"));
    }
    let mut head = Head::default();
    let mut pos = 0;
    while let Some(n) = buf[pos..].iter().position(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(&buf[pos..pos + n]);
        let line = line.trim_end_matches('\r');
        if pos == 0 {
            let mut words = line.splitn(3, ' ');
            let (_version, code, reason) = (words.next(), words.next(), words.next());
            head.status = code.and_then(|c| c.parse().ok()).ok_or_else(|| bad("a malformed HTTP status line"))?;
            head.reason = reason.unwrap_or("").to_string();
        } else if line.is_empty() {
            return Ok(Some((head, pos + n + 1)));
        } else {
            let (name, value) = line.split_once(':').ok_or_else(|| bad("a malformed HTTP header line"))?;
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-type" => {
                    let mut params = value.split(';');
                    head.mime = params.next().unwrap_or("").trim().to_ascii_lowercase();
                    head.boundary = params
                        .filter_map(|p| p.split_once('='))
                        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
                        .map(|(_, v)| v.trim().trim_matches('"').to_string());
                }
                "transfer-encoding" => head.chunked = value.to_ascii_lowercase().contains("chunked"),
                "content-length" => {
                    head.length = Some(value.parse().map_err(|_| bad("a malformed HTTP Content-Length"))?);
                }
                "www-authenticate" => head.digest |= value.to_ascii_lowercase().starts_with("digest"),
                _ => {}
            }
        }
        pos += n + 1;
        if pos > MAX_HEAD {
            break;
        }
    }
    if buf.len() > MAX_HEAD {
        return Err(bad(&format!("an HTTP response head over {} KiB", MAX_HEAD >> 10)));
    }
    Ok(None)
}

/// Decodes a response body: by `Content-Length`, chunked, or to the close.
#[derive(Debug)]
enum Body {
    /// Bytes left, `None` until the connection closes.
    Plain(Option<u64>),
    Chunked {
        state: Chunk,
        line: Vec<u8>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailer,
    Done,
}

impl Body {
    fn new(head: &Head) -> Self {
        if head.chunked { Body::Chunked { state: Chunk::Size, line: Vec::new() } } else { Body::Plain(head.length) }
    }

    fn done(&self) -> bool {
        matches!(self, Body::Plain(Some(0)) | Body::Chunked { state: Chunk::Done, .. })
    }

    fn until_close(&self) -> bool {
        matches!(self, Body::Plain(None))
    }

    /// Appends the body bytes in `data` to `out`; what follows the body is
    /// ignored.
    fn decode(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), SourceError> {
        let (state, line) = match self {
            Body::Plain(None) => {
                out.extend_from_slice(data);
                return Ok(());
            }
            Body::Plain(Some(left)) => {
                let n = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                out.extend_from_slice(&data[..n]);
                *left -= n as u64;
                return Ok(());
            }
            Body::Chunked { state, line } => (state, line),
        };
        while !data.is_empty() && *state != Chunk::Done {
            if let Chunk::Data(left) = *state {
                let n = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                out.extend_from_slice(&data[..n]);
                data = &data[n..];
                *state = if left == n as u64 { Chunk::DataEnd } else { Chunk::Data(left - n as u64) };
                continue;
            }
            // A line: a chunk size, the end of a chunk's data, a trailer.
            let Some(n) = data.iter().position(|&b| b == b'\n') else {
                line.extend_from_slice(data);
                if line.len() > MAX_CHUNK_LINE {
                    return Err(bad("a malformed chunked body (a line too long)"));
                }
                return Ok(());
            };
            line.extend_from_slice(&data[..n]);
            data = &data[n + 1..];
            let text = String::from_utf8_lossy(line).trim_end_matches('\r').to_string();
            line.clear();
            *state = match *state {
                Chunk::Size => {
                    let hex = text.split(';').next().unwrap_or("").trim();
                    match u64::from_str_radix(hex, 16) {
                        Ok(0) => Chunk::Trailer,
                        Ok(n) if !hex.starts_with('+') => Chunk::Data(n),
                        _ => return Err(bad("a malformed chunked body (a bad chunk size)")),
                    }
                }
                Chunk::DataEnd if text.is_empty() => Chunk::Size,
                Chunk::DataEnd => return Err(bad("a malformed chunked body (no line end after a chunk)")),
                Chunk::Trailer if text.is_empty() => Chunk::Done,
                s => s,
            };
        }
        Ok(())
    }
}

/// Where `Multipart` is in its stream.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Part {
    Boundary,
    Headers,
    /// The part's data, its length if its headers gave one.
    Data(Option<usize>),
}

/// Splits a `multipart/x-mixed-replace` body into its parts, each checked
/// to be one JPEG image. Pure: no I/O, never panics on any input.
struct Multipart {
    /// The boundary without leading dashes; learnt from the first line when
    /// the head gave none.
    token: Option<Vec<u8>>,
    buf: Vec<u8>,
    state: Part,
    /// Part header bytes so far.
    header_bytes: usize,
    length: Option<usize>,
    /// How far `buf` was searched for the boundary (data without a length).
    searched: usize,
    /// The closing boundary came.
    ended: bool,
}

impl Multipart {
    fn new(boundary: Option<&str>) -> Self {
        let token = boundary.map(|b| b.trim_start_matches('-').as_bytes().to_vec()).filter(|t| !t.is_empty());
        Multipart {
            token,
            buf: Vec::new(),
            state: Part::Boundary,
            header_bytes: 0,
            length: None,
            searched: 0,
            ended: false,
        }
    }

    /// Appends body bytes and moves every image they complete to `out`.
    fn push(&mut self, data: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), SourceError> {
        if self.ended {
            return Ok(()); // the epilogue
        }
        self.buf.extend_from_slice(data);
        while !self.ended && self.step(out)? {}
        let (limit, why) = match self.state {
            Part::Boundary => (MAX_PREAMBLE, format!("no multipart boundary in {} KiB", MAX_PREAMBLE >> 10)),
            Part::Headers => (MAX_HEAD, format!("part headers over {} KiB", MAX_HEAD >> 10)),
            Part::Data(_) => (MAX_IMAGE + MAX_PREAMBLE, format!("a part over {} MiB", MAX_IMAGE >> 20)),
        };
        if self.buf.len() > limit {
            return Err(bad(&why));
        }
        Ok(())
    }

    /// One step; false when it needs more bytes.
    fn step(&mut self, out: &mut Vec<Vec<u8>>) -> Result<bool, SourceError> {
        match self.state {
            Part::Boundary => {
                let Some(token) = &self.token else {
                    // Learn the boundary: the first non-empty line, `--B`.
                    let Some(n) = self.buf.iter().position(|&b| b == b'\n') else { return Ok(false) };
                    let line = self.buf[..n].trim_ascii();
                    if !line.is_empty() {
                        if !line.starts_with(b"--") || line.trim_ascii_start().iter().all(|&b| b == b'-') {
                            return Err(bad("the stream does not start with a multipart boundary"));
                        }
                        let token = line.iter().skip_while(|&&b| b == b'-').copied().collect();
                        self.token = Some(token);
                        (self.state, self.header_bytes, self.length) = (Part::Headers, 0, None);
                    }
                    self.buf.drain(..=n);
                    return Ok(true);
                };
                let Some(at) = find(&self.buf, token, 0) else { return Ok(false) };
                let after = at + token.len();
                let Some(n) = self.buf[after..].iter().position(|&b| b == b'\n') else {
                    if self.buf[after..].starts_with(b"--") {
                        self.ended = true; // the closing boundary, without a line end
                    }
                    return Ok(false);
                };
                if self.buf[after..].starts_with(b"--") {
                    self.ended = true;
                    return Ok(false);
                }
                self.buf.drain(..after + n + 1);
                (self.state, self.header_bytes, self.length) = (Part::Headers, 0, None);
                Ok(true)
            }
            Part::Headers => {
                if self.header_bytes == 0 && self.buf.starts_with(&[0xff, 0xd8]) {
                    self.state = Part::Data(None); // no headers, no blank line: the image at once
                    return Ok(true);
                }
                let Some(n) = self.buf.iter().position(|&b| b == b'\n') else { return Ok(false) };
                self.header_bytes += n + 1;
                if self.header_bytes > MAX_HEAD {
                    return Err(bad(&format!("part headers over {} KiB", MAX_HEAD >> 10)));
                }
                let line = String::from_utf8_lossy(&self.buf[..n]).trim().to_string();
                self.buf.drain(..=n);
                if line.is_empty() {
                    (self.state, self.searched) = (Part::Data(self.length), 0);
                    return Ok(true);
                }
                let (name, value) = line.split_once(':').ok_or_else(|| bad("a malformed part header line"))?;
                if name.trim().eq_ignore_ascii_case("content-length") {
                    let len: usize = value.trim().parse().map_err(|_| bad("a malformed part Content-Length"))?;
                    if len > MAX_IMAGE {
                        return Err(bad(&format!("a part of {len} bytes (over {} MiB)", MAX_IMAGE >> 20)));
                    }
                    self.length = Some(len);
                }
                Ok(true)
            }
            Part::Data(Some(len)) => {
                if self.buf.len() < len {
                    return Ok(false);
                }
                let rest = self.buf.split_off(len);
                out.push(one_jpeg(&std::mem::replace(&mut self.buf, rest))?);
                self.state = Part::Boundary;
                Ok(true)
            }
            Part::Data(None) => {
                let token = self.token.as_deref().unwrap_or_default();
                let from = self.searched.saturating_sub(token.len() + 4);
                let Some(at) = find(&self.buf, token, from) else {
                    self.searched = self.buf.len();
                    return Ok(false);
                };
                let rest = self.buf.split_off(at);
                // The dashes and line end before the boundary are not data.
                let data = std::mem::replace(&mut self.buf, rest);
                let end = data.iter().rposition(|&b| !matches!(b, b'-' | b'\r' | b'\n')).map_or(0, |i| i + 1);
                out.push(one_jpeg(&data[..end])?);
                self.state = Part::Boundary;
                Ok(true)
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|i| from + i)
}

/// `data` as one whole JPEG image (padding after it dropped), else why not.
fn one_jpeg(data: &[u8]) -> Result<Vec<u8>, SourceError> {
    let mut split = Splitter::default();
    let mut images = Vec::new();
    split.push(data, &mut images)?;
    match images.len() {
        1 => Ok(images.pop().unwrap_or_default()),
        0 => Err(bad(&format!("corrupt JPEG: a part of {} bytes that is not a whole JPEG image", data.len()))),
        n => Err(bad(&format!("corrupt JPEG: {n} images in one part"))),
    }
}

/// Fuzzing entry point: every parser here of bytes from the camera (and the
/// source string) must never panic, whatever the input.
pub fn fuzz(data: &[u8]) {
    let _ = HttpConfig::parse(&String::from_utf8_lossy(data));
    let _ = parse_head(data);
    let (mut body, mut chunked) = (Vec::new(), Body::Chunked { state: Chunk::Size, line: Vec::new() });
    for piece in data.chunks(7) {
        if chunked.decode(piece, &mut body).is_err() {
            break;
        }
    }
    for boundary in [Some("--ffmpeg"), None] {
        let mut parts = Multipart::new(boundary);
        let mut images = Vec::new();
        for piece in data.chunks(61) {
            if parts.push(piece, &mut images).is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests;
