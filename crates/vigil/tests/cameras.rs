//! Real camera sources end to end, through ingest, the broker and the
//! archive as separate processes: `ffmpeg:` (H.264 and MJPEG) and `file:`
//! cameras, one ffmpeg killed mid-stream; RTSP H.264, H.265 and MJPEG from a
//! real server that is killed and restarted. Every frame the broker
//! acknowledged is archived, `vigil check` is clean, each interruption is a
//! flagged gap, and each camera's export plays (ffprobe).

mod common;

use common::*;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

fn ffprobe_frames(path: &str, extra: &[&str]) -> u64 {
    let out = Command::new("ffprobe")
        .args(extra)
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", path])
        .output()
        .expect("ffprobe");
    assert!(out.status.success(), "ffprobe {path}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().next().and_then(|l| l.trim().parse().ok()).unwrap_or(0)
}

#[test]
fn ffmpeg_and_file_cameras_are_archived_and_export() {
    let dir = temp_dir("cameras");
    // A short MP4 to play as a looping file camera.
    let clip = dir.join("clip.mp4");
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=10", "-frames:v", "20"])
        .args(["-c:v", "libx264", "-g", "10", "-y"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(made.success());
    // A marker in the H.264 camera's arguments finds its ffmpeg to kill.
    let marker = format!("testsrc2=size=320x240:rate=15:duration={}", 3600 + std::process::id() % 1000);
    let cameras = [
        format!("ffh=ffmpeg:-re -f lavfi -i {marker} -c:v libx264 -g 15 -preset ultrafast -tune zerolatency"),
        "ffm=ffmpeg:-re -f lavfi -i testsrc2=size=320x240:rate=5 -c:v mjpeg -q:v 5".to_string(),
        format!("fil=file:{}?loop", clip.display()),
    ];
    let archive = record(&dir, &cameras, || {
        // The camera's ffmpeg dies: ingest reconnects, and the gap is flagged.
        // (Only the ffmpeg: ingest's own command line holds the marker too.)
        let killed = Command::new("pkill").args(["-KILL", "-f", &format!("^ffmpeg .*{marker}")]).status().unwrap();
        assert!(killed.success(), "the H.264 camera's ffmpeg was not running");
        std::thread::sleep(Duration::from_secs(5));
    });
    assert_eq!(flagged_gaps(&archive, "ffh"), 1, "one reconnect, one flagged gap");
    assert_eq!(flagged_gaps(&archive, "ffm"), 0);
    for (cam, out) in [("ffh", "ffh.mp4"), ("ffm", "ffm.mjpeg"), ("fil", "fil.mp4")] {
        assert_exports(&archive, cam, &dir.join(out));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// H.264, H.265 and MJPEG cameras from a real RTSP server (GStreamer, as
/// in the ingest tests), which is killed mid-stream and started again.
#[test]
fn rtsp_cameras_survive_a_server_restart_with_gaps_in_the_archive() {
    let dir = temp_dir("rtsp-cameras");
    let port = free_port().port();
    let cameras = ["h264", "h265", "mjpeg"].map(|p| format!("{p}=rtsp://127.0.0.1:{port}/{p}"));
    let mut server = Some(RtspServer::start(port));
    let archive = record(&dir, &cameras, || {
        drop(server.take()); // SIGKILL, mid-stream
        std::thread::sleep(Duration::from_secs(2));
        server = Some(RtspServer::start(port));
        // Reconnects back off 0.5 s, 1 s, 2 s...: time to come back and record.
        std::thread::sleep(Duration::from_secs(8));
    });
    drop(server);
    for (cam, out) in [("h264", "h264.mp4"), ("h265", "h265.mp4"), ("mjpeg", "mjpeg.mjpeg")] {
        assert_eq!(flagged_gaps(&archive, cam), 1, "{cam}: one restart, one flagged gap");
        assert_exports(&archive, cam, &dir.join(out));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a broker, ingest (with an ack log) and an archiver as processes with
/// `cameras`, calls `interrupt` after 5 s of recording, stops ingest, and
/// checks the archive holds exactly the acknowledged frames, `vigil check`
/// finding nothing missing. Returns the archive's directory.
fn record(dir: &std::path::Path, cameras: &[String], interrupt: impl FnOnce()) -> std::path::PathBuf {
    let addr = free_port();
    let listen = addr.to_string();
    let (bdir, idir, adir) = (dir.join("broker"), dir.join("ingest"), dir.join("archive"));
    let (bdir_s, idir_s, adir_s) = (bdir.to_str().unwrap(), idir.to_str().unwrap(), adir.to_str().unwrap());
    let ack_log = dir.join("acks.log");
    let cfg = dir.join("archive.toml");
    std::fs::write(&cfg, "[archive]\nflush_interval_ms = 200\nmin_free_bytes = 0\n").unwrap();
    let cfg = cfg.to_str().unwrap();

    let mut broker =
        Vigil::start("broker", &["broker", "--listen", &listen, "--data-dir", bdir_s, "--metrics-listen", "off"], dir);
    wait_port(addr, Duration::from_secs(30));
    let mut ingest_args = vec!["ingest", "--brokers", &listen, "--data-dir", idir_s, "--metrics-listen", "off"];
    ingest_args.extend(["--ack-log", ack_log.to_str().unwrap()]);
    for c in cameras {
        ingest_args.extend(["--camera", c]);
    }
    let mut ingest = Vigil::start("ingest", &ingest_args, dir);
    #[rustfmt::skip]
    let archiver_args = ["archive", "--config", cfg, "--brokers", &listen, "--data-dir", adir_s, "--metrics-listen", "off"];
    let mut archiver = Vigil::start("archive", &archiver_args, dir);
    std::thread::sleep(Duration::from_secs(5));
    interrupt();
    assert!(ingest.stop(Duration::from_secs(20)).is_some_and(|s| s.success()), "ingest did not stop cleanly");
    let acked: BTreeSet<(String, u64)> =
        acked(&ack_log).into_iter().filter(|(_, s, _)| s == "main").map(|(c, _, q)| (c, q)).collect();
    for cam in cameras.iter().map(|c| c.split('=').next().unwrap()) {
        let n = acked.iter().filter(|(c, _)| c == cam).count();
        assert!(n > 10, "camera {cam}: only {n} frames acknowledged");
    }
    wait_archived(&adir, &acked, Duration::from_secs(60));
    assert!(archiver.stop(Duration::from_secs(20)).is_some_and(|s| s.success()), "archiver did not stop cleanly");
    broker.stop(Duration::from_secs(10));
    assert_archive_exact(&adir, &acked);
    // Reconnects show as gaps that were not recorded, never as loss.
    let (_, out, _) = vigil(&["check", "--json", "--data-dir", adir_s]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    for cam in report.as_array().unwrap() {
        assert_eq!(cam["missing"], 0, "{out}");
    }
    adir
}

/// Gaps the archive knows were not recorded (a reconnect), after the first frame.
fn flagged_gaps(archive: &std::path::Path, camera: &str) -> usize {
    archived_rows(archive, camera).iter().skip(1).filter(|r| r.1).count()
}

/// `vigil export` of the camera's recording to `out` plays (ffprobe).
fn assert_exports(archive: &std::path::Path, cam: &str, out: &std::path::Path) {
    let args = ["export", "--camera", cam, "--from", "-5m", "-o", out.to_str().unwrap()];
    let (code, _, err) = vigil(&[&args[..], &["--data-dir", archive.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "export {cam}: {err}");
    let extra: &[&str] = if out.extension().is_some_and(|e| e == "mjpeg") { &["-f", "mjpeg"] } else { &[] };
    let frames = ffprobe_frames(out.to_str().unwrap(), extra);
    assert!(frames > 10, "export of {cam}: {frames} frames");
}

/// crates/ingest/tests/rtsp_server.py on `port`, SIGKILLed when dropped.
struct RtspServer(std::process::Child);

impl RtspServer {
    fn start(port: u16) -> RtspServer {
        use std::io::BufRead;
        let script = manifest_dir().join("../ingest/tests/rtsp_server.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(port.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 (scripts/setup installs the RTSP test server's packages)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let server = RtspServer(child);
        assert_eq!(line.trim(), "ready", "rtsp_server.py did not start (run scripts/setup)");
        server
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (seq, discontinuity) of every archived frame of `camera`.
fn archived_rows(data_dir: &std::path::Path, camera: &str) -> Vec<(u64, bool)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = archive::ArchiveConfig::new(data_dir);
        let index = archive::open_index(&cfg.dir).await.unwrap();
        index.frames(Some(camera)).await.unwrap().into_iter().map(|r| (r.seq, r.discontinuity)).collect()
    })
}
