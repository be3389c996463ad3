//! Tests of the parent module (kept apart: the module stays readable).

use super::parse::Chunk;
use super::*;
use crate::source::jpeg::tests::image;
use crate::source::{SourceSpec, run_for};
use std::net::TcpListener;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, OnceLock};

mod secure;

#[test]
fn parses_sources_and_hides_the_password() {
    let c = HttpConfig::parse("http://admin:s%40cret@cam.local:8080/video.cgi?res=hd#poll=0.5,timeout=3").unwrap();
    assert_eq!(c.url.as_str(), "http://cam.local:8080/video.cgi?res=hd");
    assert_eq!((c.user.as_deref(), c.password.as_deref()), (Some("admin"), Some("s@cret")));
    assert_eq!((c.poll, c.timeout), (Duration::from_millis(500), Duration::from_secs(3)));
    let debug = format!("{c:?}");
    assert!(!debug.contains("cret") && debug.contains("<redacted>"), "{debug}");
    let request = String::from_utf8(c.request(None)).unwrap();
    assert!(request.starts_with("GET /video.cgi?res=hd HTTP/1.1\r\nHost: cam.local:8080\r\n"), "{request}");
    assert!(request.ends_with("\r\n\r\n") && !request.contains("Authorization"), "{request}");
    let request = String::from_utf8(c.request(Some("Basic eA=="))).unwrap();
    assert!(request.ends_with("Connection: close\r\nAuthorization: Basic eA==\r\n\r\n"), "{request}");
    let d = HttpConfig::parse("http://cam/snap.jpg").unwrap();
    assert!(d.poll == Duration::from_secs(1) && d.timeout == Duration::from_secs(10) && d.user.is_none());
    assert!(d.ca.is_none() && !d.insecure);
    let s = HttpConfig::parse("https://cam:8443/snap.jpg#ca=/etc/cam.pem,poll=2").unwrap();
    assert_eq!(
        (s.url.as_str(), s.ca.as_deref(), s.poll),
        ("https://cam:8443/snap.jpg", Some("/etc/cam.pem".as_ref()), Duration::from_secs(2))
    );
    assert!(HttpConfig::parse("https://cam/m#insecure").unwrap().insecure);
    for (bad, says) in [
        ("ftp://u:hunter2@cam/mjpeg", "only http:// and https://"),
        ("http://u:hunter2@cam/1#ca=/x.pem", "for https:// cameras"),
        ("http://u:hunter2@cam/1#insecure", "for https:// cameras"),
        ("https://u:hunter2@cam/1#ca=", "ca=/path"),
        ("https://u:hunter2@cam/1#ca", "ca=/path"),
        ("https://u:hunter2@cam/1#ca=/x.pem,insecure", "pick one"),
        ("http://u:hunter2@cam/1#poll=0", "poll"),
        ("http://u:hunter2@cam/1#timeout=x", "timeout"),
        ("http://u:hunter2@cam/1#fps=3", "unknown option"),
        ("https://u:hunter2@cam/1#insecure=yes", "unknown option"),
        ("http://u:hunter2@cam/1#poll", "key=value"),
        ("http://u:hunter2@:5/1", "valid URL"),
    ] {
        let e = HttpConfig::parse(bad).unwrap_err();
        assert!(e.contains(says) && !e.contains("hunter2"), "{bad}: {e}");
    }
}

#[test]
fn response_heads() {
    let text = "HTTP/1.0 200 OK\nContent-Type: Multipart/X-Mixed-Replace; boundary=\"--myboundary\"\r\n\
                transfer-encoding: chunked\nWWW-Authenticate: Digest realm=x\n\r\nBODY";
    let (head, used) = parse_head(text.as_bytes()).unwrap().unwrap();
    assert_eq!(&text[used..], "BODY");
    assert_eq!(
        (head.status, head.mime.as_str(), head.boundary.as_deref()),
        (200, "multipart/x-mixed-replace", Some("--myboundary"))
    );
    assert!(head.chunked && head.challenges == ["Digest realm=x"] && head.length.is_none());
    let (head, _) = parse_head(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\n\r\n").unwrap().unwrap();
    assert_eq!((head.status, head.reason.as_str(), head.length), (401, "Unauthorized", Some(12)));
    for n in 0..text.len() - 5 {
        assert!(parse_head(&text.as_bytes()[..n]).unwrap().is_none(), "prefix {n}");
    }
    let e = |b: &[u8]| parse_head(b).unwrap_err().to_string();
    assert!(e(b"<html>hello</html>").contains("not an HTTP response"));
    assert!(e(b"HTTP/1.1 OK\r\n\r\n").contains("status line"));
    assert!(e(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n").contains("header line"));
    assert!(e(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").contains("Content-Length"));
    let long = [&b"HTTP/1.1 200 OK\r\n"[..], &b"X: y\r\n".repeat(5000)].concat();
    assert!(e(&long).contains("over 16 KiB"));
    assert!(e(&[&b"HTTP/1.1 200 OK\r\nX: "[..], &[b'y'; 20_000]].concat()).contains("over 16 KiB"));
}

fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(size.max(1)) {
        out.extend_from_slice(format!("{:x};ext=1\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\nafter");
    out
}

#[test]
fn chunked_bodies_whatever_the_read_sizes() {
    let body: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    for (chunk, piece) in [(1, 1), (7, 3), (100, 64), (5000, 1000), (4096, 1)] {
        let coded = chunked(&body, chunk);
        let mut b = Body::Chunked { state: Chunk::Size, line: Vec::new() };
        let mut out = Vec::new();
        for p in coded.chunks(piece) {
            b.decode(p, &mut out).unwrap();
        }
        assert!(b.done() && out == body, "chunks of {chunk}, reads of {piece}");
    }
    let e = |s: &[u8]| {
        let mut b = Body::Chunked { state: Chunk::Size, line: Vec::new() };
        b.decode(s, &mut Vec::new()).unwrap_err().to_string()
    };
    assert!(e(b"zz\r\n").contains("chunk size"));
    assert!(e(b"+5\r\n").contains("chunk size"));
    assert!(e(b"3\r\nabcX\r\n").contains("no line end"));
    assert!(e(&[b'1'; 2000]).contains("too long"));
    let mut plain = Body::Plain(Some(3));
    let mut out = Vec::new();
    plain.decode(b"abcdef", &mut out).unwrap();
    assert!(plain.done() && out == b"abc");
}

/// A multipart body: each image after `prefix` (the boundary line as the
/// camera writes it), with or without a Content-Length, lines ending `eol`.
fn stream(images: &[Vec<u8>], prefix: &str, eol: &str, length: bool) -> Vec<u8> {
    let mut s = Vec::new();
    for j in images {
        s.extend_from_slice(format!("{prefix}{eol}Content-Type: image/jpeg{eol}").as_bytes());
        if length {
            s.extend_from_slice(format!("Content-Length: {}{eol}", j.len()).as_bytes());
        }
        s.extend_from_slice(eol.as_bytes());
        s.extend_from_slice(j);
        s.extend_from_slice(eol.as_bytes());
    }
    s
}

fn parts(boundary: Option<&str>, s: &[u8], piece: usize) -> Result<Vec<Vec<u8>>, SourceError> {
    let mut m = Multipart::new(boundary);
    let mut out = Vec::new();
    for p in s.chunks(piece.max(1)) {
        m.push(p, &mut out)?;
    }
    Ok(out)
}

#[test]
fn multipart_variants_whatever_the_read_sizes() {
    let images = vec![image(1), image(2), image(3)];
    for (declared, prefix, eol, length) in [
        (Some("ffmpeg"), "--ffmpeg", "\r\n", true),
        (Some("--myboundary"), "--myboundary", "\r\n", false),
        (Some("myboundary"), "myboundary", "\n", true),
        (Some("--myboundary"), "myboundary", "\n", false),
        (None, "--frame", "\r\n", false),
        (None, "----frame", "\n", true),
    ] {
        let s = stream(&images, prefix, eol, length);
        for piece in [1, 2, 5, 64, 4096] {
            let got = parts(declared, &s, piece).unwrap_or_else(|e| panic!("{declared:?} {prefix:?}: {e}"));
            // The last image without a length waits for the next boundary.
            let want = if length { &images[..] } else { &images[..2] };
            assert_eq!(got, want, "{declared:?} {prefix:?} {eol:?} length {length}, pieces of {piece}");
        }
    }
    // A closing boundary ends it; the epilogue is ignored.
    let s = [stream(&images[..1], "--b", "\r\n", false), b"--b--\r\ngarbage".to_vec()].concat();
    let mut m = Multipart::new(Some("b"));
    let mut out = Vec::new();
    m.push(&s, &mut out).unwrap();
    assert!(m.ended && out == [image(1)]);
    // No headers at all: the image follows the boundary line.
    let bare = [b"--b\r\n".to_vec(), image(1), b"\r\n--b\r\n".to_vec()].concat();
    assert_eq!(parts(Some("b"), &bare, 3).unwrap(), [image(1)]);
}

#[test]
fn multipart_errors_and_bounds() {
    let e = |boundary: Option<&str>, s: &[u8]| parts(boundary, s, 1000).unwrap_err().to_string();
    let mut corrupt = image(2);
    corrupt[10] = 0x42; // no marker where one must be
    let s = stream(&[image(1), corrupt.clone()], "--b", "\r\n", true);
    assert!(e(Some("b"), &s).contains("corrupt JPEG"), "{}", e(Some("b"), &s));
    let s = stream(&[image(1), corrupt, image(3)], "--b", "\r\n", false);
    assert!(e(Some("b"), &s).contains("corrupt JPEG"));
    let s = stream(&[b"<html>".to_vec()], "--b", "\r\n", true);
    assert!(e(Some("b"), &s).contains("corrupt JPEG"));
    let s = stream(&[image(1)[..20].to_vec()], "--b", "\r\n", true);
    assert!(e(Some("b"), &s).contains("not a whole JPEG"));
    assert!(e(None, b"hello\r\n").contains("does not start with a multipart boundary"));
    assert!(e(Some("b"), &[b'x'; 70_000]).contains("no multipart boundary"));
    assert!(e(Some("b"), b"--b\r\nContent-Length: 999999999\r\n").contains("over 16 MiB"));
    assert!(e(Some("b"), b"--b\r\nContent-Length: ten\r\n").contains("Content-Length"));
    assert!(e(Some("b"), b"--b\r\nno colon here\r\n").contains("header line"));
    assert!(e(Some("b"), &[&b"--b\r\nX: "[..], &[b'y'; 20_000]].concat()).contains("headers over"));
    // A part without a length that never ends is bounded.
    let mut m = Multipart::new(Some("b"));
    let mut out = Vec::new();
    m.push(b"--b\r\n\r\n", &mut out).unwrap();
    m.push(&image(1)[..20], &mut out).unwrap();
    let err = (0..40).find_map(|_| m.push(&vec![0x11; 1 << 20], &mut out).err()).expect("bounded");
    assert!(err.to_string().contains("a part over"), "{err}");
}

/// Bounded fuzzing in the default suite: the whole parser chain (head,
/// chunked body, multipart, JPEG check) on mutated input in random pieces.
/// Must never panic; every image it yields is a whole JPEG.
#[test]
fn parsers_survive_mutation() {
    let body = stream(&[image(1), image(2), image(3)], "--ffmpeg", "\r\n", true);
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=ffmpeg\r\n\
                 Transfer-Encoding: chunked\r\n\r\n";
    let seed = [&head[..], &chunked(&body, 50)].concat();
    let mut rng = media::fuzz::Rng::new(0x477e);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut runs = 0;
    while Instant::now() < deadline {
        let mut d = seed.clone();
        for _ in 0..=rng.below(6) {
            rng.mutate(&mut d);
        }
        fuzz(&d);
        let Ok(Some((head, used))) = parse_head(&d) else { continue };
        let (mut b, mut m) = (Body::new(&head), Multipart::new(head.boundary.as_deref()));
        let (mut decoded, mut out) = (Vec::new(), Vec::new());
        let mut rest = &d[used..];
        while !rest.is_empty() {
            let (a, r) = rest.split_at(rng.below(rest.len()) + 1);
            decoded.clear();
            if b.decode(a, &mut decoded).is_err() || m.push(&decoded, &mut out).is_err() {
                break;
            }
            rest = r;
        }
        assert!(out.iter().all(|j| j.starts_with(&[0xff, 0xd8]) && j.ends_with(&[0xff, 0xd9])));
        runs += 1;
    }
    assert!(runs > 1000, "only {runs} runs");
}

/// A tiny HTTP server: connection `n` (from 0) is answered by
/// `answer(n, request, socket)`, one at a time; it records the requests.
fn serve(answer: impl Fn(usize, &str, &mut dyn Write) + Send + 'static) -> (u16, Arc<Mutex<Vec<String>>>) {
    serve_on(None, answer)
}

/// `serve`, over TLS when given a server configuration.
fn serve_on(
    tls: Option<Arc<rustls::ServerConfig>>,
    answer: impl Fn(usize, &str, &mut dyn Write) + Send + 'static,
) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for (n, s) in listener.incoming().enumerate() {
            let Ok(s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut s: Box<dyn ReadWrite> = match &tls {
                None => Box::new(s),
                Some(c) => Box::new(rustls::StreamOwned::new(rustls::ServerConnection::new(c.clone()).unwrap(), s)),
            };
            let (mut req, mut b) = (Vec::new(), [0; 1024]);
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => req.extend_from_slice(&b[..k]),
                }
            }
            let req = String::from_utf8_lossy(&req).into_owned();
            seen.lock().unwrap().push(req.clone());
            answer(n, &req, &mut s);
            let _ = s.flush();
        }
    });
    (port, requests)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Runs one session for at most `d`: its frames, its end, how long it ran.
/// Credentials from the URL only (never this process's environment).
fn session_for(spec: &str, d: Duration) -> (Vec<Captured>, Result<(), SourceError>, Duration) {
    let cfg = HttpConfig::parse(spec).unwrap();
    let creds = credentials::lookup(ENV_PREFIX, "t", cfg.user.as_deref(), cfg.password.as_deref(), |_| None);
    session_with(&cfg, creds, d)
}

fn session_with(
    cfg: &HttpConfig,
    creds: Option<Credentials>,
    d: Duration,
) -> (Vec<Captured>, Result<(), SourceError>, Duration) {
    let t = Instant::now();
    let mut frames = Vec::new();
    let r = run(cfg, "t", creds, &|| t.elapsed() > d, &mut |c| frames.push(c));
    (frames, r, t.elapsed())
}

/// Everything logged by this test binary (a global subscriber, installed
/// by the first caller).
fn logs() -> String {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    let buf = LOGS.get_or_init(|| {
        let buf: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        struct W(&'static Mutex<Vec<u8>>);
        impl Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt().with_ansi(false).with_writer(move || W(buf)).try_init();
        buf
    });
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

fn jpeg_response(s: &mut dyn Write, tag: u8) {
    let j = image(tag);
    let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", j.len());
    let _ = s.write_all(&j);
}

#[test]
fn snapshots_are_polled() {
    // A Basic camera: asks once, then the credentials go with every request.
    let (port, requests) = serve(|n, req, s| match req.contains("Authorization: Basic bWU6cHc=\r\n") {
        true => jpeg_response(s, n as u8 - 1),
        false => {
            let _ = s.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"\r\n\r\n");
        }
    });
    let t = Instant::now();
    let (frames, r, _) =
        session_for(&format!("http://me:pw@127.0.0.1:{port}/snap.jpg#poll=0.2"), Duration::from_millis(1100));
    eprintln!("snapshots: {} frames in {:?}", frames.len(), t.elapsed());
    assert!(r.is_ok(), "{r:?}");
    assert!((5..=7).contains(&frames.len()), "{} frames", frames.len());
    for (i, f) in frames.iter().enumerate() {
        assert!(f.key && f.codec == Codec::Mjpeg && f.data == image(i as u8), "frame {i}");
    }
    assert!(frames.windows(2).all(|w| w[1].pts_90k - w[0].pts_90k >= 17_000), "about 0.2 s apart");
    let requests = requests.lock().unwrap();
    assert!(requests[0].starts_with("GET /snap.jpg HTTP/1.1\r\n") && !requests[0].contains("Authorization"));
    assert!(requests[1..].iter().all(|r| r.contains("Basic bWU6cHc=")), "{requests:?}");
    assert_eq!(requests.len(), frames.len() + 1, "one challenge only");
}

#[test]
fn wrong_answers_are_clear_errors() {
    let cases: [(&str, &[u8], &str); 6] = [
        ("html", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>", "content type `text/html`"),
        ("401", b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=cam\r\n\r\n", "authentication failed"),
        ("404", b"HTTP/1.1 404 Not Found\r\n\r\n", "no such URL"),
        ("garbage", b"\x00\x01binary garbage\xff\xfe", "not an HTTP response"),
        ("bad jpeg", b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n\r\nnot a jpeg", "corrupt JPEG"),
        ("closed", b"", "closed the connection"),
    ];
    for (what, answer, says) in cases {
        let (port, _) = serve(move |_, _, s| {
            let _ = s.write_all(answer);
        });
        let (frames, r, took) =
            session_for(&format!("http://u:hunter2@127.0.0.1:{port}/x#timeout=2"), Duration::from_secs(5));
        let e = r.expect_err(what).to_string();
        eprintln!("{what}: {e} ({took:?})");
        assert!(frames.is_empty() && e.contains(says) && !e.contains("hunter2"), "{what}: {e}");
        assert!(took < Duration::from_secs(1), "{what}: {took:?}");
    }
    // Nobody listening.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (_, r, _) = session_for(&format!("http://127.0.0.1:{port}/x"), Duration::from_secs(5));
    assert!(matches!(&r, Err(SourceError::Connect(e)) if e.contains("refused")), "{r:?}");
}

/// A multipart response head, then `body` (not chunked).
fn multipart(s: &mut dyn Write, body: &[u8]) {
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=b\r\n\r\n");
    let _ = s.write_all(body);
}

#[test]
fn broken_streams_end_the_session() {
    // A corrupt JPEG part after a good one.
    let (port, _) = serve(|_, _, s| {
        let mut bad = image(2);
        bad[10] = 0x42;
        multipart(s, &stream(&[image(1), bad], "--b", "\r\n", true));
        std::thread::sleep(Duration::from_secs(3));
    });
    let (frames, r, took) = session_for(&format!("http://127.0.0.1:{port}/m"), Duration::from_secs(5));
    let e = r.unwrap_err();
    assert!(matches!(&e, SourceError::Stream(t) if t.contains("corrupt JPEG")), "{e:?}");
    assert!(frames.len() == 1 && took < Duration::from_secs(1), "{} frames in {took:?}", frames.len());
    // A huge part: refused from its header, nothing read into memory.
    let (port, _) = serve(|_, _, s| {
        multipart(s, b"--b\r\nContent-Length: 1000000000\r\n\r\n");
        let _ = s.write_all(&[0; 1 << 20]);
    });
    let (_, r, _) = session_for(&format!("http://127.0.0.1:{port}/m"), Duration::from_secs(5));
    assert!(r.unwrap_err().to_string().contains("over 16 MiB"));
    // A part without a length that never ends: bounded.
    let (port, _) = serve(|_, _, s| {
        multipart(s, &[&b"--b\r\n\r\n"[..], &image(1)[..20]].concat());
        for _ in 0..20 {
            if s.write_all(&[0x11; 1 << 20]).is_err() {
                break;
            }
        }
    });
    let (_, r, took) = session_for(&format!("http://127.0.0.1:{port}/m"), Duration::from_secs(5));
    let e = r.unwrap_err().to_string();
    assert!(e.contains("a part over 16 MiB"), "{e}");
    eprintln!("endless part: {e} ({took:?})");
    // The server closes the stream.
    let (port, _) = serve(|_, _, s| multipart(s, &stream(&[image(1), image(2)], "--b", "\r\n", true)));
    let (frames, r, _) = session_for(&format!("http://127.0.0.1:{port}/m"), Duration::from_secs(5));
    assert!(frames.len() == 2 && r.unwrap_err().to_string().contains("closed the connection"));
}

#[test]
fn silence_times_out_and_stopping_is_prompt() {
    // Accepts, never answers.
    let (port, _) = serve(|_, _, _| std::thread::sleep(Duration::from_secs(5)));
    let (_, r, took) = session_for(&format!("http://127.0.0.1:{port}/m#timeout=0.5"), Duration::from_secs(5));
    assert!(r.unwrap_err().to_string().contains("no HTTP answer within"));
    assert!((Duration::from_millis(500)..Duration::from_millis(900)).contains(&took), "{took:?}");
    // Answers, sends a frame, then falls silent.
    let (port, _) = serve(|_, _, s| {
        multipart(s, &stream(&[image(1)], "--b", "\r\n", true));
        std::thread::sleep(Duration::from_secs(5));
    });
    let (frames, r, took) = session_for(&format!("http://127.0.0.1:{port}/m#timeout=0.5"), Duration::from_secs(5));
    assert!(frames.len() == 1 && matches!(r, Err(SourceError::Timeout(_))), "{r:?}");
    assert!(took < Duration::from_millis(900), "{took:?}");
    // Stopped while the camera is silent: back within a poll.
    let (port, _) = serve(|_, _, _| std::thread::sleep(Duration::from_secs(5)));
    let (_, r, took) = session_for(&format!("http://127.0.0.1:{port}/m"), Duration::from_millis(300));
    assert!(r.is_ok() && took < Duration::from_millis(500), "{r:?} {took:?}");
}

/// ffmpeg as an MJPEG-over-HTTP camera (one client, chunked).
fn ffmpeg_server(port: u16) -> Child {
    let url = format!("http://127.0.0.1:{port}/cam");
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "quiet", "-nostdin", "-re", "-f", "lavfi"])
        .args(["-i", "testsrc2=size=320x240:rate=10", "-threads", "1", "-c:v", "mjpeg", "-f", "mpjpeg"])
        .args(["-content_type", "multipart/x-mixed-replace;boundary=ffmpeg", "-listen", "1", &url])
        .spawn()
        .unwrap()
}

#[test]
fn mjpeg_from_an_ffmpeg_http_server_and_reconnects() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let first = Arc::new(Mutex::new(ffmpeg_server(port)));
    let killer = {
        let first = first.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(2000));
            let _ = first.lock().unwrap().kill();
            std::thread::sleep(Duration::from_millis(300));
            ffmpeg_server(port) // the camera comes back
        })
    };
    let t = Instant::now();
    let frames = run_for(SourceSpec::parse(&format!("http://127.0.0.1:{port}/cam")).unwrap(), Duration::from_secs(4));
    let mut second = killer.join().unwrap();
    let _ = second.kill();
    let _ = (second.wait(), first.lock().unwrap().wait());
    let gaps: Vec<usize> = (0..frames.len()).filter(|&i| frames[i].meta.discontinuity).collect();
    eprintln!("ffmpeg http: {} frames in {:?}, gaps at {gaps:?}", frames.len(), t.elapsed());
    assert!(frames.len() >= 20, "{} frames", frames.len());
    for f in &frames {
        assert!(f.meta.key && f.meta.codec == Codec::Mjpeg);
        assert!(one_jpeg(&f.payload).is_ok_and(|j| j == f.payload), "a whole JPEG");
    }
    // Killed and back: reconnected after a gap, no panic.
    assert_eq!(gaps.len(), 2, "{gaps:?} of {}", frames.len());
    assert!(frames.len() - gaps[1] >= 5, "frames after the reconnect");
}
