//! RTSP cameras against a real server: GStreamer's gst-rtsp-server
//! (`rtsp_server.py`, Debian packages from `scripts/setup`) serving H.264,
//! H.265 and MJPEG, killed and restarted mid-stream.

use ingest::source::{SourceSpec, run_for};
use media::{Codec, Frame};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// This crate's directory, as cargo tells the test at run time (a test
/// binary built in another checkout and found fresh in a shared target
/// dir would carry that checkout's compile-time path).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map(Into::into).unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

/// The test server, killed (SIGKILL) when dropped, also when a test fails.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test server on `port`; with `auth`, it demands those credentials.
fn server(port: u16, auth: Option<(&str, &str)>) -> Server {
    let script = manifest_dir().join("tests/rtsp_server.py");
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(script).arg(port.to_string()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    if let Some((u, p)) = auth {
        cmd.args([u, p]);
    }
    let mut child = cmd.spawn().expect("/usr/bin/python3 (run scripts/setup for the RTSP test server's packages)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let server = Server(child);
    assert_eq!(line.trim(), "ready", "rtsp_server.py did not start (run scripts/setup: GStreamer RTSP packages)");
    server
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Everything the supervisor logs, from every test in this binary.
fn logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

fn log_buffer() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
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
    })
}

/// NAL unit types in an Annex-B access unit.
fn nal_types(codec: Codec, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 3 < data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            let h = data[i + 3];
            out.push(if codec == Codec::H264 { h & 0x1F } else { (h >> 1) & 0x3F });
            i += 3;
        } else {
            i += 1;
        }
    }
    out
}

/// Decodes the frames with ffmpeg: vigil's payloads must be what a decoder
/// takes as is.
fn decodes(codec: Codec, frames: &[Frame]) {
    let (format, name) = match codec {
        Codec::H264 => ("h264", "h264"),
        Codec::H265 => ("hevc", "h265"),
        Codec::Mjpeg => ("mjpeg", "mjpeg"),
    };
    let path = std::env::temp_dir().join(format!("vigil-rtsp-{}-{name}", std::process::id()));
    let data: Vec<u8> = frames.iter().flat_map(|f| f.payload.iter().copied()).collect();
    std::fs::write(&path, data).unwrap();
    let out =
        Command::new("ffmpeg").args(["-v", "error", "-f", format, "-i"]).arg(&path).args(["-f", "null", "-"]).output();
    let _ = std::fs::remove_file(&path);
    let out = out.expect("ffmpeg (run scripts/setup)");
    assert!(out.status.success() && out.stderr.is_empty(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Streams `path`, kills the server mid-stream, restarts it: frames before
/// and after, the first after flagged as following the gap.
fn stream_kill_restart(path: &str, codec: Codec) {
    log_buffer();
    let port = free_port();
    let srv = server(port, None);
    let spec = SourceSpec::parse(&format!("rtsp://127.0.0.1:{port}{path}")).unwrap();
    let run = std::thread::spawn(move || run_for(spec, Duration::from_secs(11)));
    std::thread::sleep(Duration::from_millis(3000));
    drop(srv); // SIGKILL, mid-stream
    let killed = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    let srv = server(port, None);
    let down = killed.elapsed();
    let frames = run.join().unwrap();
    drop(srv);

    let gap = frames.iter().skip(1).position(|f| f.meta.discontinuity).map(|i| i + 1);
    let gap = gap.unwrap_or_else(|| panic!("{path}: no reconnect in {} frames\n{}", frames.len(), logs()));
    let (before, after) = frames.split_at(gap);
    assert!(before.len() >= 25 && after.len() >= 10, "{path}: {} frames, then {}", before.len(), after.len());
    assert!(frames[0].meta.discontinuity && frames[0].meta.key && after[0].meta.key, "{path}");
    assert_eq!(after.iter().filter(|f| f.meta.discontinuity).count(), 1, "{path}: one gap only");
    assert!(frames.iter().all(|f| f.meta.codec == codec), "{path}");
    assert!(frames.windows(2).all(|w| w[1].meta.seq == w[0].meta.seq + 1), "{path}: seq contiguous");
    assert!(frames.windows(2).all(|w| w[1].meta.capture_us > w[0].meta.capture_us), "{path}: capture time monotonic");
    assert!(before.windows(2).all(|w| w[1].meta.pts_90k > w[0].meta.pts_90k), "{path}: pts increasing");
    // The gap in capture time covers the time the server was down.
    let hole = after[0].meta.capture_us - before[before.len() - 1].meta.capture_us;
    assert!(hole >= down.as_micros() as i64, "{path}: hole {hole} µs, down {down:?}");
    // Within a session frames are ~40 ms apart (25 fps).
    let max_step = before.windows(2).map(|w| w[1].meta.capture_us - w[0].meta.capture_us).max().unwrap();
    assert!(max_step < 500_000, "{path}: step of {max_step} µs inside a session");

    let key = &frames[0].payload;
    match codec {
        Codec::H264 => {
            let t = nal_types(codec, key);
            assert!(key.starts_with(&[0, 0, 0, 1]) && t.contains(&7) && t.contains(&8) && t.contains(&5), "{t:?}");
        }
        Codec::H265 => {
            let t = nal_types(codec, key);
            assert!(key.starts_with(&[0, 0, 0, 1]) && [32, 33, 34].iter().all(|n| t.contains(n)), "{t:?}");
            assert!(t.iter().any(|n| (16..=21).contains(n)), "{t:?}");
        }
        Codec::Mjpeg => {
            assert!(frames.iter().all(|f| f.payload.starts_with(&[0xFF, 0xD8]) && f.meta.key));
        }
    }
    decodes(codec, before);
    decodes(codec, after);
}

#[test]
fn h264_survives_a_server_restart() {
    stream_kill_restart("/h264", Codec::H264);
}

#[test]
fn h265_survives_a_server_restart() {
    stream_kill_restart("/h265", Codec::H265);
}

#[test]
fn mjpeg_survives_a_server_restart() {
    stream_kill_restart("/mjpeg", Codec::Mjpeg);
}

#[test]
fn h264_over_udp() {
    let port = free_port();
    let srv = server(port, None);
    let frames = run_for(
        SourceSpec::parse(&format!("rtsp://127.0.0.1:{port}/h264#transport=udp")).unwrap(),
        Duration::from_millis(2500),
    );
    drop(srv);
    assert!(frames.len() >= 25 && frames[0].meta.key, "{} frames\n{}", frames.len(), logs());
    decodes(Codec::H264, &frames);
}

#[test]
fn credentials_work_and_never_show() {
    log_buffer();
    let port = free_port();
    let srv = server(port, Some(("vigil", "Sesame-7x")));
    let good = SourceSpec::parse(&format!("rtsp://vigil:Sesame-7x@127.0.0.1:{port}/h264")).unwrap();
    let debug = format!("{good:?}");
    assert!(!debug.contains("Sesame") && debug.contains("vigil"), "{debug}");
    let frames = run_for(good, Duration::from_millis(2000));
    assert!(frames.len() >= 15 && frames[0].meta.key, "{} frames\n{}", frames.len(), logs());
    // A wrong password: a clear error, no frames, and the password nowhere.
    let bad = SourceSpec::parse(&format!("rtsp://vigil:Wrong-Pass-9@127.0.0.1:{port}/h264")).unwrap();
    assert!(run_for(bad, Duration::from_millis(1000)).is_empty());
    drop(srv);
    let logs = logs();
    assert!(logs.contains("authentication failed"), "{logs}");
    assert!(!logs.contains("Sesame") && !logs.contains("Wrong-Pass"), "{logs}");
}

#[test]
fn bad_paths_refused_ports_and_silent_servers_are_clear_errors() {
    log_buffer();
    let port = free_port();
    let srv = server(port, None);
    let refused = free_port(); // nothing listens there
    let silent = TcpListener::bind("127.0.0.1:0").unwrap(); // accepts, never answers
    let silent_port = silent.local_addr().unwrap().port();
    let cases = [
        (format!("rtsp://127.0.0.1:{port}/nothing-here"), "no such stream"),
        (format!("rtsp://127.0.0.1:{refused}/h264"), "cannot connect"),
        (format!("rtsp://127.0.0.1:{silent_port}/h264#timeout=1"), "no answer within 1s"),
    ];
    let runs: Vec<_> = cases
        .iter()
        .map(|(url, _)| {
            let spec = SourceSpec::parse(url).unwrap();
            std::thread::spawn(move || {
                let t = Instant::now();
                (run_for(spec, Duration::from_millis(1500)), t.elapsed())
            })
        })
        .collect();
    for ((url, says), run) in cases.iter().zip(runs) {
        let (frames, took) = run.join().unwrap();
        assert!(frames.is_empty(), "{url}");
        // Stopping is prompt even while the camera is silent.
        assert!(took < Duration::from_millis(1900), "{url}: stopped after {took:?}");
        let logs = logs();
        let line = logs.lines().find(|l| l.contains(&url[..url.find('#').unwrap_or(url.len())]) && l.contains(says));
        assert!(line.is_some(), "{url}: no log line saying `{says}`\n{logs}");
    }
    drop(srv);
    drop(silent);
}
