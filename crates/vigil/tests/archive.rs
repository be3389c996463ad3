//! The archive in-process: cameras → broker → archive; `check` is clean and
//! exports of an H.264 and an MJPEG camera are accepted by ffprobe and
//! decode without errors in ffmpeg.

mod common;

use bus::topics;
use common::*;
use ingest::source::SourceSpec;
use std::process::Command;
use std::time::Duration;

fn ffmpeg_ok(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("ffmpeg/ffprobe installed (scripts/setup)");
    (
        out.status.success() && out.stderr.is_empty(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_ranges_export_to_files_players_accept() {
    let dir = temp_dir("archive-e2e");
    let b = embedded(&dir.join("broker")).await;
    let k = kafka(b.addr());
    let plan = topics::plan();
    k.ensure_topics(&plan).await.unwrap();
    let cameras = vec![
        ingest::CameraSpec {
            id: "h".into(),
            main: SourceSpec::parse("synthetic:width=320,height=180,fps=20,gop=10").unwrap(),
            sub: None,
        },
        ingest::CameraSpec {
            id: "m".into(),
            main: SourceSpec::parse("synthetic:width=160,height=96,fps=10,codec=mjpeg").unwrap(),
            sub: None,
        },
    ];
    let icfg = ingest::IngestConfig {
        data_dir: dir.join("ingest"),
        cameras,
        buffer_bytes: 8 << 20,
        ack_log: None,
        drain: Duration::from_secs(10),
    };
    let mut acfg = archive::ArchiveConfig::new(&dir);
    acfg.flush_interval = Duration::from_millis(200);
    acfg.retention = Default::default(); // no free-space floor on a full test machine
    let frames_topic = plan[0].clone();
    let metrics = bus::Metrics::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let arch = tokio::spawn(archive::run(acfg.clone(), k.clone(), frames_topic, metrics.clone(), stopped(stop_rx)));
    let start_us = bus::now_us();
    ingest::run(icfg, k.clone(), plan, metrics.clone(), tokio::time::sleep(Duration::from_secs(4))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await; // let the archive catch up
    stop_tx.send(true).unwrap();
    arch.await.unwrap().unwrap();

    let index = archive::open_index(&acfg.dir).await.unwrap();
    let report = archive::check::check(&acfg.dir, &index, None, &Default::default()).await.unwrap();
    assert_eq!(report.len(), 2);
    for r in &report {
        assert!(r.ok() && r.frames >= 30 && r.first_seq == Some(0), "{r:?}");
    }
    let text = metrics.render();
    assert!(metric(&text, "vigil_archive_frames_total{topic=\"vigil.frames\"}").is_some_and(|n| n >= 60.0), "{text}");

    // The whole range of the H.264 camera, and a middle slice of it.
    let mp4 = dir.join("h.mp4");
    let end_us = bus::now_us();
    let sum = archive::export::export(&acfg.dir, &index, "h", start_us, end_us, &mp4, |_, _| {}).await.unwrap();
    assert_eq!(sum.frames, report.iter().find(|r| r.camera == "h").unwrap().frames);
    let (ok, out) = ffmpeg_ok(&[
        "ffprobe",
        "-v",
        "error",
        "-show_entries",
        "stream=codec_name,width,height,nb_frames",
        "-of",
        "csv=p=0",
        mp4.to_str().unwrap(),
    ]);
    assert!(ok && out.trim() == format!("h264,320,180,{}", sum.frames), "{out}");
    let (ok, out) = ffmpeg_ok(&["ffmpeg", "-v", "error", "-i", mp4.to_str().unwrap(), "-f", "null", "-"]);
    assert!(ok, "{out}");
    let slice = dir.join("slice.mp4");
    let part =
        archive::export::export(&acfg.dir, &index, "h", start_us + 1_500_000, start_us + 2_500_000, &slice, |_, _| {})
            .await
            .unwrap();
    assert!(part.frames >= 20 && part.frames < sum.frames, "{part:?}");
    let (ok, out) = ffmpeg_ok(&["ffmpeg", "-v", "error", "-i", slice.to_str().unwrap(), "-f", "null", "-"]);
    assert!(ok, "{out}");

    let mjpeg = dir.join("m.mjpeg");
    archive::export::export(&acfg.dir, &index, "m", start_us, end_us, &mjpeg, |_, _| {}).await.unwrap();
    let (ok, out) =
        ffmpeg_ok(&["ffmpeg", "-v", "error", "-f", "mjpeg", "-i", mjpeg.to_str().unwrap(), "-f", "null", "-"]);
    assert!(ok, "{out}");

    // Nothing recorded there: a clear error, and no file left behind.
    let none = dir.join("none.mp4");
    let err = archive::export::export(&acfg.dir, &index, "h", 0, 1_000_000, &none, |_, _| {}).await.unwrap_err();
    assert!(err.to_string().contains("no recorded frames"), "{err}");
    assert!(!none.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
