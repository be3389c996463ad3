//! A full disk: the archive (on a 3 MB tmpfs) pauses, says so (metric and
//! event), resumes when space returns, and loses nothing it had accepted.
//! Needs root to mount the tmpfs, as CI and the development machines have.

mod common;

use bus::topics;
use common::*;
use ingest::source::SourceSpec;
use std::process::Command;
use std::time::{Duration, Instant};

struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

async fn until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_the_archive_and_loses_nothing() {
    let dir = temp_dir("diskfull");
    let disk = dir.join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"]).arg(&disk).status().unwrap();
    assert!(mounted.success(), "this test mounts a 3 MB tmpfs and needs root");
    let _mount = Mount(disk.clone());
    let filler = disk.join("filler");
    std::fs::write(&filler, vec![0u8; 2 << 20]).unwrap();

    let b = embedded(&dir.join("broker")).await;
    let k = kafka(b.addr());
    let plan = topics::plan();
    k.ensure_topics(&plan).await.unwrap();
    let mut acfg = archive::ArchiveConfig::new(&disk);
    acfg.flush_interval = Duration::from_millis(100);
    acfg.retention = Default::default(); // no floor: let the disk fill
    acfg.retention_interval = Duration::from_secs(1);
    acfg.segment.max_bytes = 256 << 10;
    let metrics = bus::Metrics::default();
    let (stop_archive, rx) = tokio::sync::watch::channel(false);
    let arch = tokio::spawn(archive::run(acfg.clone(), k.clone(), plan[0].clone(), metrics.clone(), stopped(rx)));

    let ack_log = dir.join("acks.log");
    let cameras = vec![ingest::CameraSpec {
        id: "full".into(),
        main: SourceSpec::parse("synthetic:width=320,height=180,fps=20,codec=mjpeg,quality=90").unwrap(),
        sub: None,
    }];
    let icfg = ingest::IngestConfig {
        data_dir: dir.join("ingest"),
        cameras,
        buffer_bytes: 8 << 20,
        ack_log: Some(ack_log.clone()),
        drain: Duration::from_secs(10),
    };
    let (stop_ingest, rx) = tokio::sync::watch::channel(false);
    let ing = tokio::spawn(ingest::run(icfg, k.clone(), plan.clone(), bus::Metrics::default(), stopped(rx)));

    let paused = || metric(&metrics.render(), "vigil_archive_paused{topic=\"vigil.frames\"}");
    until("the archive pauses on the full disk", Duration::from_secs(40), || paused() == Some(1.0)).await;
    stop_ingest.send(true).unwrap();
    ing.await.unwrap().unwrap();
    let acked = acked(&ack_log).len() as f64;
    assert!(acked > 40.0, "only {acked} frames acknowledged");

    std::fs::remove_file(&filler).unwrap(); // space returns
    let archived = || metric(&metrics.render(), "vigil_archive_frames_total{topic=\"vigil.frames\"}").unwrap_or(0.0);
    until("the archive resumes and catches up", Duration::from_secs(40), || {
        paused() == Some(0.0) && archived() >= acked
    })
    .await;
    stop_archive.send(true).unwrap();
    arch.await.unwrap().unwrap();

    let index = archive::open_index(&acfg.dir).await.unwrap();
    let report = archive::check::check(&acfg.dir, &index, None, &Default::default()).await.unwrap();
    assert!(report.len() == 1 && report[0].ok(), "{report:?}");
    assert_eq!(report[0].frames as f64, acked, "every acknowledged frame archived once");
    let text = metrics.render();
    assert!(
        metric(&text, "vigil_archive_flush_errors_total{topic=\"vigil.frames\"}").is_some_and(|n| n >= 1.0),
        "{text}"
    );

    // The pause and the resume were announced on vigil.events.
    let c: rdkafka::consumer::BaseConsumer = k.consumer_config(bus::Delivery::AtLeastOnce, "t").create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset(topics::EVENTS, p, rdkafka::Offset::Beginning).unwrap();
    }
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Message;
    c.assign(&tpl).unwrap();
    let mut kinds = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(kinds.len() >= 2 && kinds.last().is_some_and(|k| k == "archive-resumed")) && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(500)) {
            let e: bus::events::Event = serde_json::from_slice(m.payload().unwrap()).unwrap();
            // Only the archive's: the camera's up/down events share the topic.
            if e.kind.starts_with("archive-") {
                kinds.push(e.kind);
            }
        }
    }
    // The disk may fill more than once before the camera stops: pauses and
    // resumes alternate, starting with a pause.
    assert!(
        kinds.len() >= 2 && kinds.iter().enumerate().all(|(i, k)| k == ["archive-paused", "archive-resumed"][i % 2]),
        "{kinds:?}"
    );
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
