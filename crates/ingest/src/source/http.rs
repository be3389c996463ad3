//! MJPEG cameras over HTTP(S): a `multipart/x-mixed-replace` stream, or a
//! JPEG snapshot URL polled at an interval. Plain `std::net`, blocking reads,
//! rustls for `https://` (`tls`).
//!
//! Source syntax: `http[s]://[USER:PASSWORD@]HOST[:PORT]/PATH[?QUERY][#OPTIONS]`,
//! OPTIONS vigil's own (never sent), comma-separated: `poll=SECONDS`
//! (default 1: the interval between snapshot requests), `timeout=SECONDS`
//! (default 10: no frame for that long ends the session), and for
//! `https://` `ca=FILE` (also trust the CA or self-signed certificate(s) in
//! this PEM file) or `insecure` (accept any certificate; warned once per
//! session).
//!
//! Credentials come from the URL, else from the environment at each session
//! (`VIGIL_HTTP_USER[_<CAMERA>]` / `VIGIL_HTTP_PASSWORD[_<CAMERA>]`, see
//! `credentials`). They go out only when the camera answers `401`, with the
//! scheme it asks for: Digest, else Basic (`auth`). The URL kept in the
//! config has them stripped, `Debug` redacts the password, and every error
//! text is scrubbed of it, so it never reaches a log.
//!
//! A session sends a `GET` (again with credentials after a `401`). The
//! answer's content type picks the mode:
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
//! exactly one whole JPEG image (checked by `jpeg.rs`), a closed connection,
//! a failed TLS handshake or silence end the session with the reason; the
//! supervisor reconnects. Every buffer is bounded (HTTP head and part
//! headers 16 KiB, a part `jpeg::MAX_IMAGE`, bytes skipped while looking for
//! a boundary 64 KiB), so a broken or hostile server cannot exhaust memory.
//! The parsers (`parse`, `auth`'s challenges) are pure, without I/O, and
//! fuzzed in the default suite (`fuzz`). Capture time is arrival; `pts_90k`
//! the arrival clock since the session started.

mod auth;
mod parse;
mod tls;

use super::credentials::{self, Credentials};
use super::jpeg::MAX_IMAGE;
use super::{Captured, Sink, SourceError};
use auth::Auth;
use media::Codec;
use parse::{Body, Head, Multipart, bad, one_jpeg, parse_head};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};
use tls::Conn;

/// How often a blocked session looks at the stop flag and its deadline.
const POLL: Duration = Duration::from_millis(100);
/// The largest HTTP response head, and the largest set of part headers.
const MAX_HEAD: usize = 16 << 10;
/// The most bytes skipped while looking for a multipart boundary.
const MAX_PREAMBLE: usize = 64 << 10;
/// The longest chunk-size or trailer line of a chunked body.
const MAX_CHUNK_LINE: usize = 1 << 10;
/// The environment variables' prefix (see `credentials`).
const ENV_PREFIX: &str = "VIGIL_HTTP";

/// A parsed `http://` or `https://` source.
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
    /// `https://`: more certificates to trust (`#ca=`).
    pub ca: Option<PathBuf>,
    /// `https://`: accept any certificate (`#insecure`).
    pub insecure: bool,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("url", &self.url.as_str())
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("poll", &self.poll)
            .field("timeout", &self.timeout)
            .field("ca", &self.ca)
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl HttpConfig {
    /// Parses a whole source string (`http://...`, `https://...`). Errors
    /// never echo the credentials.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (url, options) = s.split_once('#').unwrap_or((s, ""));
        let mut url = url::Url::parse(url).map_err(|e| format!("http source: not a valid URL ({e})"))?;
        // Stripped before anything can print the URL.
        let (user, password) = credentials::take_from_url(&mut url);
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("source `{url}`: only http:// and https:// are supported"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("source `{url}`: no camera host"));
        }
        let mut c = HttpConfig {
            url,
            user,
            password,
            poll: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            ca: None,
            insecure: false,
        };
        let https = c.url.scheme() == "https";
        for kv in options.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let e = |why: String| Err(format!("source `{}`: {why}", c.url));
            if matches!(kv, "insecure" | "ca") || kv.starts_with("ca=") {
                if !https {
                    return e(format!("option `{kv}` is for https:// cameras"));
                }
                match kv.strip_prefix("ca=").map(str::trim) {
                    None if kv == "insecure" => c.insecure = true,
                    Some(path) if !path.is_empty() => c.ca = Some(PathBuf::from(path)),
                    _ => return e("ca: write ca=/path/to/cert.pem".into()),
                }
                continue;
            }
            let Some((k, v)) = kv.split_once('=') else { return e(format!("option `{kv}` is not key=value")) };
            let secs = v.trim_end_matches('s').parse::<f64>().ok();
            match (k, secs) {
                ("poll", Some(s)) if (0.05..=3600.0).contains(&s) => c.poll = Duration::from_secs_f64(s),
                ("poll", _) => return e(format!("poll `{v}`: use 0.05..=3600 seconds")),
                ("timeout", Some(s)) if (0.1..=600.0).contains(&s) => c.timeout = Duration::from_secs_f64(s),
                ("timeout", _) => return e(format!("timeout `{v}`: use 0.1..=600 seconds")),
                _ => return e(format!("unknown option `{k}` (poll, timeout, ca, insecure)")),
            }
        }
        if c.insecure && c.ca.is_some() {
            return Err(format!("source `{}`: `ca` and `insecure` together: pick one", c.url));
        }
        Ok(c)
    }

    /// The request target: the path and the query.
    fn target(&self) -> &str {
        &self.url[url::Position::BeforePath..url::Position::AfterQuery]
    }

    /// The GET request, with an `Authorization` value when there is one.
    fn request(&self, authorization: Option<&str>) -> Vec<u8> {
        let u = &self.url;
        let host = u.host_str().unwrap_or_default();
        let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
        let mut r = format!(
            "GET {} HTTP/1.1\r\nHost: {host}{port}\r\nUser-Agent: vigil/{}\r\n\
             Accept: multipart/x-mixed-replace, image/jpeg\r\nConnection: close\r\n",
            self.target(),
            env!("CARGO_PKG_VERSION")
        );
        if let Some(a) = authorization {
            r.push_str(&format!("Authorization: {a}\r\n"));
        }
        r.push_str("\r\n");
        r.into_bytes()
    }
}

/// Standard base64 with padding (RFC 4648), for Basic authentication.
fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// One connection to the camera, until it fails or the camera is stopped.
pub fn session(cfg: &HttpConfig, sink: &mut Sink) -> Result<(), SourceError> {
    let camera = sink.camera;
    let creds =
        credentials::lookup(ENV_PREFIX, camera, cfg.user.as_deref(), cfg.password.as_deref(), credentials::env_var);
    let stop = sink.ctx.stop.clone();
    run(cfg, camera, creds, &|| stop.load(Ordering::Relaxed), &mut |c| sink.frame(c))
}

/// The session without the supervisor's `Sink`, so tests see its error.
fn run(
    cfg: &HttpConfig,
    camera: &str,
    creds: Option<Credentials>,
    stopping: &dyn Fn() -> bool,
    frame: &mut dyn FnMut(Captured),
) -> Result<(), SourceError> {
    let mut client = Client { cfg, tls: None, auth: Auth::new(creds), stopping };
    let result = client.setup(camera).and_then(|()| frames(&mut client, frame));
    // What the camera says may echo a (Basic) password: never into a log.
    result.map_err(|e| {
        let clean = |s: String| credentials::redact(&s, client.auth.credentials());
        match e {
            SourceError::Connect(s) => SourceError::Connect(clean(s)),
            SourceError::Stream(s) => SourceError::Stream(clean(s)),
            other => other,
        }
    })
}

/// Reads the camera's frames until the session ends.
fn frames(client: &mut Client, frame: &mut dyn FnMut(Captured)) -> Result<(), SourceError> {
    let (cfg, stopping) = (client.cfg, client.stopping);
    let start = Instant::now();
    let Some(mut r) = client.get()? else { return Ok(()) };
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
            match client.get()? {
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

/// What every request of a session shares.
struct Client<'a> {
    cfg: &'a HttpConfig,
    /// `https://`: the TLS configuration and the name to check.
    tls: Option<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
    auth: Auth,
    stopping: &'a dyn Fn() -> bool,
}

impl Client<'_> {
    /// Per session: the TLS configuration (a CA file fixed meanwhile counts
    /// at the next session) and the `#insecure` warning.
    fn setup(&mut self, camera: &str) -> Result<(), SourceError> {
        let cfg = self.cfg;
        if cfg.url.scheme() != "https" {
            return Ok(());
        }
        if cfg.insecure {
            tracing::warn!(
                camera,
                url = %cfg.url,
                "https camera with #insecure: its certificate is not checked, so whoever is on the path can \
                 watch, alter or impersonate it"
            );
        }
        let config = tls::config(cfg.ca.as_deref(), cfg.insecure).map_err(|e| connect(cfg, &e))?;
        self.tls = Some((config, tls::server_name(&cfg.url).map_err(|e| connect(cfg, &e))?));
        Ok(())
    }

    /// Sends the GET (again with credentials when the camera asks) and reads
    /// the answer's head; `None` if stopped meanwhile.
    fn get(&mut self) -> Result<Option<Response>, SourceError> {
        let cfg = self.cfg;
        let mut retried = false;
        loop {
            let authorization = self.auth.authorization(cfg.target()).map_err(|e| connect(cfg, &e))?;
            let Some(mut r) = self.exchange(authorization.as_deref())? else { return Ok(None) };
            let head = &r.head;
            if head.status == 401 && !retried {
                let failed = |e: String| connect(cfg, &format!("authentication failed ({}): {e}", status(head)));
                if self.auth.challenged(&head.challenges, authorization.is_some()).map_err(failed)? {
                    retried = true;
                    continue;
                }
            }
            if head.status != 200 {
                return Err(connect(cfg, &status_error(head, &self.auth)));
            }
            self.auth.accepted();
            r.snapshot = match head.mime.as_str() {
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
            return Ok(Some(r));
        }
    }

    /// Connects (TLS included), sends one request and reads the head.
    fn exchange(&self, authorization: Option<&str>) -> Result<Option<Response>, SourceError> {
        let (cfg, stopping) = (self.cfg, self.stopping);
        let Some(tcp) = open(cfg, stopping)? else { return Ok(None) };
        let io = |e: std::io::Error| connect(cfg, &e.to_string());
        tcp.set_write_timeout(Some(cfg.timeout)).map_err(io)?;
        tcp.set_read_timeout(Some(POLL)).map_err(io)?;
        let mut conn = match &self.tls {
            None => Conn::Plain(tcp),
            Some((config, name)) => match tls::handshake(tcp, config.clone(), name.clone(), cfg.timeout, stopping) {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(None),
                Err(why) => return Err(connect(cfg, &why)),
            },
        };
        let sent = Instant::now();
        conn.write_all(&cfg.request(authorization)).and_then(|()| conn.flush()).map_err(io)?;
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
            match read(&mut conn, &mut chunk, deadline, stopping, timeout).map_err(|e| in_stream(cfg, e))? {
                None => return Ok(None),
                Some(0) => return Err(connect(cfg, "the camera closed the connection without an answer")),
                Some(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let body = Body::new(&head);
        Ok(Some(Response { conn, head, body, early: buf.split_off(used), snapshot: false, sent }))
    }
}

/// An HTTP response being read: its head parsed, its body still coming.
struct Response {
    conn: Conn,
    head: Head,
    body: Body,
    /// Body bytes read together with the head.
    early: Vec<u8>,
    /// `image/jpeg`, else a multipart stream (set once the status is 200).
    snapshot: bool,
    /// When the request went out.
    sent: Instant,
}

impl Response {
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
        match read(&mut self.conn, &mut chunk, deadline, stopping, timeout)? {
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
    conn: &mut Conn,
    buf: &mut [u8],
    deadline: Instant,
    stopping: &dyn Fn() -> bool,
    timeout: impl Fn() -> SourceError,
) -> Result<Option<usize>, SourceError> {
    loop {
        match conn.read(buf) {
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

/// `HTTP 401 Unauthorized`, made safe for a log line.
fn status(head: &Head) -> String {
    format!("HTTP {} {}", head.status, printable(&head.reason))
}

/// Why a status other than 200 ends the session, in words.
fn status_error(head: &Head, auth: &Auth) -> String {
    let status = status(head);
    match (head.status, auth.credentials(), auth.scheme()) {
        (401, None, _) => format!(
            "authentication failed ({status}): the camera wants credentials: put them in the URL \
             (http://USER:PASSWORD@HOST/...) or set {ENV_PREFIX}_USER/{ENV_PREFIX}_PASSWORD \
             (or {ENV_PREFIX}_USER_<CAMERA>/{ENV_PREFIX}_PASSWORD_<CAMERA>)"
        ),
        (401, Some(c), Some(scheme)) => format!(
            "authentication failed ({status}): the camera refused user `{}` with that password ({scheme})",
            printable(&c.user)
        ),
        (401 | 403, _, _) => format!("authentication failed ({status}): check the camera's user and password"),
        (404, _, _) => format!("the camera has no such URL ({status}): check the path"),
        _ => status,
    }
}

/// Text from the camera made safe for a log line.
fn printable(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(100).collect()
}

/// Fuzzing entry point: every parser here of bytes from the camera (and the
/// source string) must never panic, whatever the input.
#[cfg(any(test, feature = "fuzz"))]
pub fn fuzz(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = HttpConfig::parse(&text);
    auth::fuzz(&text);
    parse::fuzz(data);
}

#[cfg(test)]
mod tests;
