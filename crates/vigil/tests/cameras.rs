//! Real camera sources end to end: `ffmpeg:` (H.264 and MJPEG) and `file:`
//! cameras through ingest, the broker and the archive as separate
//! processes; one ffmpeg is killed mid-stream and comes back. Every frame
//! the broker acknowledged is archived, `vigil check` is clean, and each
//! camera's export plays (ffprobe).

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
    let addr = free_port();
    let listen = addr.to_string();
    let (bdir, idir, adir) = (dir.join("broker"), dir.join("ingest"), dir.join("archive"));
    let (bdir, idir, adir) = (bdir.to_str().unwrap(), idir.to_str().unwrap(), adir.to_str().unwrap());
    let ack_log = dir.join("acks.log");
    // A marker in the H.264 camera's arguments finds its ffmpeg to kill.
    let marker = format!("testsrc2=size=320x240:rate=15:duration={}", 3600 + std::process::id() % 1000);
    let h264 = format!("ffh=ffmpeg:-re -f lavfi -i {marker} -c:v libx264 -g 15 -preset ultrafast -tune zerolatency");
    let mjpeg = "ffm=ffmpeg:-re -f lavfi -i testsrc2=size=320x240:rate=5 -c:v mjpeg -q:v 5".to_string();
    let file = format!("fil=file:{}?loop", clip.display());
    let cfg = dir.join("archive.toml");
    std::fs::write(&cfg, "[archive]\nflush_interval_ms = 200\nmin_free_bytes = 0\n").unwrap();
    let cfg = cfg.to_str().unwrap();

    let mut broker = Vigil::start("broker", &["broker", "--listen", &listen, "--data-dir", bdir], &dir);
    wait_port(addr, Duration::from_secs(30));
    #[rustfmt::skip]
    let ingest_args = [
        "ingest", "--brokers", &listen, "--data-dir", idir, "--metrics-listen", "off",
        "--camera", &h264, "--camera", &mjpeg, "--camera", &file, "--ack-log", ack_log.to_str().unwrap(),
    ];
    let mut ingest = Vigil::start("ingest", &ingest_args, &dir);
    #[rustfmt::skip]
    let archiver_args = ["archive", "--config", cfg, "--brokers", &listen, "--data-dir", adir, "--metrics-listen", "off"];
    let mut archiver = Vigil::start("archive", &archiver_args, &dir);
    std::thread::sleep(Duration::from_secs(5));
    // The camera's ffmpeg dies: ingest reconnects, and the gap is flagged.
    // (Only the ffmpeg: ingest's own command line holds the marker too.)
    let killed = Command::new("pkill").args(["-KILL", "-f", &format!("^ffmpeg .*{marker}")]).status().unwrap();
    assert!(killed.success(), "the H.264 camera's ffmpeg was not running");
    std::thread::sleep(Duration::from_secs(5));
    assert!(ingest.stop(Duration::from_secs(20)).is_some_and(|s| s.success()), "ingest did not stop cleanly");
    let acked: BTreeSet<(String, u64)> =
        acked(&ack_log).into_iter().filter(|(_, s, _)| s == "main").map(|(c, _, q)| (c, q)).collect();
    for cam in ["ffh", "ffm", "fil"] {
        let n = acked.iter().filter(|(c, _)| c == cam).count();
        assert!(n > 10, "camera {cam}: only {n} frames acknowledged");
    }
    wait_archived(&dir.join("archive"), &acked, Duration::from_secs(60));
    assert!(archiver.stop(Duration::from_secs(20)).is_some_and(|s| s.success()), "archiver did not stop cleanly");
    assert_archive_exact(&dir.join("archive"), &acked);

    // The reconnect shows as a gap that was not recorded, not as loss.
    let (_, out, _) = vigil(&["check", "--json", "--camera", "ffh", "--data-dir", adir]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report[0]["missing"], 0, "{out}");
    let rows = archived_rows(&dir.join("archive"), "ffh");
    let gaps = rows.iter().skip(1).filter(|r| r.1).count();
    assert_eq!(gaps, 1, "one reconnect, one flagged gap");

    for (cam, out) in [("ffh", "ffh.mp4"), ("ffm", "ffm.mjpeg"), ("fil", "fil.mp4")] {
        let path = dir.join(out);
        let (code, _, err) =
            vigil(&["export", "--camera", cam, "--from", "-5m", "-o", path.to_str().unwrap(), "--data-dir", adir]);
        assert_eq!(code, 0, "export {cam}: {err}");
        let extra: &[&str] = if out.ends_with(".mjpeg") { &["-f", "mjpeg"] } else { &[] };
        let frames = ffprobe_frames(path.to_str().unwrap(), extra);
        assert!(frames > 10, "export of {cam}: {frames} frames");
    }
    broker.stop(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
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
