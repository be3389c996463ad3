//! Roles as separate processes: the broker killed and restarted under a
//! running ingest, and the command line's error contract.

mod common;

use bus::topics;
use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_survives_a_broker_restart_without_losing_acknowledged_frames() {
    let dir = temp_dir("restart");
    let addr = free_port();
    let (broker_dir, ingest_dir) = (dir.join("broker"), dir.join("ingest"));
    let listen = addr.to_string();
    let broker_args =
        ["broker", "--listen", &listen, "--data-dir", broker_dir.to_str().unwrap(), "--metrics-listen", "off"];
    let mut broker = Vigil::start("broker", &broker_args, &dir);
    wait_port(addr, Duration::from_secs(30));
    let ack_log = dir.join("acks.log");
    // Small buffers, so the busy MJPEG camera runs out of room while the
    // broker is down and must drop (and count) new frames.
    let cfg = dir.join("ingest.toml");
    std::fs::write(&cfg, "max_message_bytes = 200000\n[ingest]\nbuffer_bytes = 400000\n").unwrap();
    let metrics_addr = free_port();
    let (metrics_listen, ack_path) = (metrics_addr.to_string(), ack_log.to_str().unwrap());
    #[rustfmt::skip]
    let ingest_args = [
        "ingest", "--config", cfg.to_str().unwrap(), "--brokers", &listen,
        "--data-dir", ingest_dir.to_str().unwrap(), "--metrics-listen", &metrics_listen,
        "--camera", "r1=synthetic:width=160,height=96,fps=20,gop=10",
        "--camera", "r2=synthetic:width=640,height=360,fps=20,codec=mjpeg,quality=95",
        "--ack-log", ack_path,
    ];
    let mut ingest = Vigil::start("ingest", &ingest_args, &dir);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = acked(&ack_log).len();
    assert!(before > 20, "ingest acknowledged only {before} frames before the restart");

    broker.kill(); // SIGKILL mid-stream
    tokio::time::sleep(Duration::from_secs(4)).await;
    let down = http_get(metrics_addr, "/metrics");
    let dropped =
        metric(&down, "vigil_ingest_dropped_frames_total{camera=\"r2\",topic=\"vigil.frames\",reason=\"buffer-full\"}");
    assert!(dropped.is_some_and(|d| d > 0.0), "no frames counted as dropped while the broker was down: {dropped:?}");
    let mut broker = Vigil::start("broker2", &broker_args, &dir);
    wait_port(addr, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(6)).await;
    let status = ingest.stop(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "ingest did not stop cleanly: {status:?}");

    let acks = acked(&ack_log);
    let after_restart = acks.len() - before;
    assert!(after_restart > 20, "ingest did not recover: {after_restart} frames acknowledged after the restart");
    let (frames, _) = read_all(&kafka(addr), &topics::plan()[0], 4, Duration::from_secs(5)).await;
    let stored: BTreeSet<(String, u64)> =
        frames.iter().map(|d| (d.frame.meta.camera.clone(), d.frame.meta.seq)).collect();
    let missing: Vec<_> = acks.iter().filter(|(c, _, s)| !stored.contains(&(c.clone(), *s))).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged frames lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    broker.stop(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_taken_broker_port_is_a_clear_error() {
    let dir = temp_dir("port");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, err) =
        vigil(&["broker", "--listen", &addr, "--data-dir", dir.to_str().unwrap(), "--metrics-listen", "off"]);
    assert_eq!(code, 1);
    assert!(err.contains("in use") && err.lines().count() == 1, "{err}");
}

#[test]
fn an_unwritable_data_dir_is_a_clear_error() {
    let dir = temp_dir("unwritable");
    let file = dir.join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let addr = free_port().to_string();
    let (code, _, err) = vigil(&[
        "broker",
        "--listen",
        &addr,
        "--data-dir",
        file.join("sub").to_str().unwrap(),
        "--metrics-listen",
        "off",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("not writable"), "{err}");
}

#[test]
fn bad_config_and_arguments_are_one_line_errors() {
    let dir = temp_dir("badcfg");
    let cfg = dir.join("v.toml");
    std::fs::write(&cfg, "data_dir = \"x\"\nfavourite_colour = \"red\"\n").unwrap();
    let (code, _, err) = vigil(&["--config", cfg.to_str().unwrap(), "topics"]);
    assert_eq!(code, 1);
    assert!(err.contains("favourite_colour"), "{err}");
    let (code, _, err) = vigil(&["ingest", "--camera", "bad id=synthetic:", "--brokers", "127.0.0.1:1"]);
    assert_eq!(code, 1);
    assert!(err.contains("camera id"), "{err}");
    let (code, _, err) = vigil(&["topics", "--brokers", "127.0.0.1:1", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("no Kafka broker answers"), "{err}");
    // Several data dirs: only for `vigil check`.
    let d = dir.to_str().unwrap();
    let (code, _, err) = vigil(&["archive", "--data-dir", d, "--data-dir", d]);
    assert_eq!(code, 1);
    assert!(err.contains("--data-dir is given 2 times"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_shows_the_plan_with_live_numbers() {
    let dir = temp_dir("topics");
    let b = embedded(&dir.join("broker")).await;
    let k = kafka(b.addr());
    k.ensure_topics(&topics::plan()).await.unwrap();
    // Ten frames on the frames topic, and a group that has read four.
    let producer = k.producer(bus::Delivery::ExactlyOnce, 1024).unwrap();
    for seq in 0..10 {
        let meta = media::FrameMeta {
            camera: "t".into(),
            stream: media::Stream::Main,
            codec: media::Codec::Mjpeg,
            seq,
            capture_us: bus::now_us(),
            pts_90k: 0,
            key: true,
            discontinuity: false,
        };
        let rec = media::split(&media::Frame { meta, payload: vec![7; 100] }, 10_000).unwrap().remove(0);
        producer
            .send(rdkafka::producer::FutureRecord::to("vigil.frames").key("t").payload(&rec), Duration::from_secs(5))
            .await
            .unwrap();
    }
    let (k2, group) = (k.clone(), "vigil-archive");
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
        let c: BaseConsumer = k2.consumer_config(bus::Delivery::ExactlyOnce, group).create().unwrap();
        let wm: Vec<(i32, i64)> =
            (0..4).map(|p| (p, c.fetch_watermarks("vigil.frames", p, Duration::from_secs(5)).unwrap().1)).collect();
        let (p, hi) = wm.into_iter().find(|(_, hi)| *hi == 10).expect("one partition holds the camera");
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset("vigil.frames", p, rdkafka::Offset::Offset(hi - 6)).unwrap();
        c.commit(&tpl, CommitMode::Sync).unwrap();
    })
    .await
    .unwrap();
    let brokers = b.addr().to_string();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || vigil(&["topics", "--json", "--brokers", &brokers])).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let frames = v.as_array().unwrap().iter().find(|t| t["name"] == "vigil.frames").unwrap();
    assert_eq!(frames["delivery"], "exactly-once");
    assert_eq!(frames["exists"], true);
    assert_eq!(frames["end_offsets"].as_array().unwrap().len(), 4);
    assert_eq!(frames["records"], 10);
    let groups = frames["groups"].as_array().unwrap();
    assert!(groups.iter().any(|g| g["group"] == "vigil-archive" && g["lag"] == 6), "{groups:?}");
    let brokers = b.addr().to_string();
    let (code, out, _) = tokio::task::spawn_blocking(move || vigil(&["topics", "--brokers", &brokers])).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("vigil.live") && out.contains("at-most-once"), "{out}");
}

/// A role that fails ends `vigil up` at once, non-zero, with the reason
/// (here the detector or the collector: a model file that is not a model). The rest of the
/// process does not go on serving a page while nothing is analysed.
#[test]
fn a_failing_role_ends_vigil_up_with_its_reason() {
    let runtime = detect::model::ModelOptions::default().runtime;
    assert!(runtime.exists(), "ONNX Runtime missing at {}: run scripts/fetch-model", runtime.display());
    let dir = temp_dir("up-fails");
    let model = dir.join("broken.onnx");
    std::fs::write(&model, b"not an onnx model").unwrap();
    let cfg = dir.join("vigil.toml");
    std::fs::write(&cfg, format!("[detect]\nmodel = \"{}\"\n[archive]\nmin_free_bytes = 0\n", model.display()))
        .unwrap();
    let (web, broker) = (free_port().to_string(), free_port().to_string());
    #[rustfmt::skip]
    let (code, out, err) = vigil(&[
        "up", "--config", cfg.to_str().unwrap(), "--data-dir", dir.join("d").to_str().unwrap(),
        "--listen", &web, "--broker-listen", &broker, "--metrics-listen", "off",
        "--demo-cameras", "1", "--insecure-no-auth",
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    // The detector and the collector both load that model: whichever
    // fails first ends `vigil up`, with its reason.
    let last = err.lines().last().unwrap_or_default();
    let role = ["detect", "collect"].iter().any(|r| last.starts_with(&format!("vigil: error: {r} stopped:")));
    assert!(role && last.contains("could not load the model"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A camera is ingested by one process: a second `vigil ingest` of the same
/// camera on the same data dir is refused, and says why.
#[test]
fn a_camera_already_ingested_is_refused() {
    let dir = temp_dir("twice");
    let addr = free_port();
    let listen = addr.to_string();
    let d = |s: &str| dir.join(s).to_str().unwrap().to_string();
    let _broker = Vigil::start(
        "broker",
        &["broker", "--listen", &listen, "--data-dir", &d("b"), "--metrics-listen", "off"],
        &dir,
    );
    wait_port(addr, Duration::from_secs(30));
    let args =
        ["ingest", "--brokers", &listen, "--data-dir", &d("i"), "--metrics-listen", "off", "--camera", "c1=synthetic:"];
    let mut first = Vigil::start("ingest", &args, &dir);
    // The first holds the counter once its log says it runs.
    wait_log(&dir.join("ingest.log"), "ingest running");
    let (code, _, err) = vigil(&args);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("camera c1") && err.contains("already being ingested by another process"), "{err}");
    first.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// While an archiver writes: `vigil topics` shows its lag without the
/// broker logging an error (listing groups made tansu 0.6 log one per
/// group), and `vigil check` finds nothing wrong, again and again (it used
/// to count a live writer's flush in progress as bytes without index).
#[test]
fn topics_and_check_beside_a_running_archive() {
    let dir = temp_dir("topics-check");
    let addr = free_port();
    let listen = addr.to_string();
    let d = |s: &str| dir.join(s).to_str().unwrap().to_string();
    let _broker = Vigil::start(
        "broker",
        &["broker", "--listen", &listen, "--data-dir", &d("b"), "--metrics-listen", "off"],
        &dir,
    );
    // Each role once the one before has made the topics: two processes
    // creating one topic at once make tansu log TopicAlreadyExists as an
    // ERROR (harmless, but not what this test is about).
    wait_log(&dir.join("broker.log"), "vigil broker listening");
    let cfg = dir.join("a.toml");
    std::fs::write(&cfg, "[archive]\nflush_interval_ms = 200\nmin_free_bytes = 0\n").unwrap();
    #[rustfmt::skip]
    let _ingest = Vigil::start("ingest", &["ingest", "--brokers", &listen, "--data-dir", &d("i"), "--metrics-listen", "off", "--camera", "t1=synthetic:width=160,height=96"], &dir);
    wait_log(&dir.join("ingest.log"), "ingest running");
    #[rustfmt::skip]
    let _archive = Vigil::start("archive", &["archive", "--config", cfg.to_str().unwrap(), "--brokers", &listen, "--data-dir", &d("a"), "--metrics-listen", "off"], &dir);
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let (code, out, err) = vigil(&["topics", "--brokers", &listen, "--metrics-listen", "off"]);
        assert_eq!(code, 0, "{err}");
        let frames = out.lines().find(|l| l.starts_with("vigil.frames")).unwrap_or_default().to_string();
        if frames.contains("vigil-archive (") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no archive lag in:\n{out}");
        std::thread::sleep(Duration::from_millis(500));
    }
    for i in 0..12 {
        let (code, out, err) = vigil(&["check", "--data-dir", &d("a")]);
        assert_eq!(code, 0, "check {i} on a running archive:\n{out}\n{err}");
        std::thread::sleep(Duration::from_millis(150));
    }
    let log = std::fs::read_to_string(dir.join("broker.log")).unwrap();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "the broker logged errors:\n{}", errors.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (30 s at most) until `log` contains `line`.
fn wait_log(log: &std::path::Path, line: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(log).unwrap_or_default().contains(line) {
        assert!(std::time::Instant::now() < deadline, "{} never said {line:?}", log.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Frames ingest took from a camera but the broker never acknowledged (the
/// broker is away, then ingest is killed with them buffered) are reported
/// by the next ingest (`frames-lost`), and `vigil check` with a broker
/// counts them as lost before the broker, apart from the seqs the restart
/// skipped; without one they count as not recorded. Never as missing.
#[test]
fn frames_lost_before_the_broker_are_told_from_not_recorded() {
    let dir = temp_dir("lost");
    let addr = free_port();
    let listen = addr.to_string();
    let d = |s: &str| dir.join(s).to_str().unwrap().to_string();
    let broker_args = ["broker", "--listen", &listen, "--data-dir", &d("b"), "--metrics-listen", "off"];
    let mut broker = Vigil::start("broker", &broker_args, &dir);
    wait_log(&dir.join("broker.log"), "vigil broker listening");
    let (ack_log, cfg) = (dir.join("acks.log"), dir.join("a.toml"));
    std::fs::write(&cfg, "[archive]\nflush_interval_ms = 200\nmin_free_bytes = 0\n").unwrap();
    #[rustfmt::skip]
    let ingest_args = ["ingest", "--brokers", &listen, "--data-dir", &d("i"), "--metrics-listen", "off",
        "--camera", "l1=synthetic:width=160,height=96,fps=25,gop=10", "--ack-log", ack_log.to_str().unwrap()];
    let mut ingest = Vigil::start("ingest", &ingest_args, &dir);
    wait_log(&dir.join("ingest.log"), "ingest running");
    #[rustfmt::skip]
    let mut archive = Vigil::start("archive", &["archive", "--config", cfg.to_str().unwrap(), "--brokers", &listen, "--data-dir", &d("a"), "--metrics-listen", "off"], &dir);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked(&ack_log).len() < 50 {
        assert!(std::time::Instant::now() < deadline, "ingest acknowledged too little");
        std::thread::sleep(Duration::from_millis(200));
    }
    broker.kill();
    std::thread::sleep(Duration::from_millis(1500)); // ingest buffers what the camera sends
    ingest.kill();
    let mut broker = Vigil::start("broker2", &broker_args, &dir);
    wait_log(&dir.join("broker2.log"), "vigil broker listening");
    let ingest_log = dir.join("ingest2.log");
    let mut ingest = Vigil::start("ingest2", &ingest_args, &dir);
    wait_log(&ingest_log, "ingest running");
    let log = std::fs::read_to_string(&ingest_log).unwrap();
    let reported: u64 = log
        .lines()
        .find(|l| l.contains("never acknowledged by the broker"))
        .and_then(|l| l.split(" frames (seq ").next()?.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("the second ingest reported no unacknowledged frames:\n{log}"));
    let events = topics::plan().into_iter().find(|t| t.name == topics::EVENTS).unwrap().partitions;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while bus::events::read_kind(&kafka(addr), events, Some("frames-lost"), Duration::from_secs(5))
        .unwrap_or_default()
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "no frames-lost event reached the broker");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(ingest.stop(Duration::from_secs(20)).is_some_and(|s| s.success()), "ingest did not stop cleanly");
    let acked: BTreeSet<(String, u64)> =
        acked(&ack_log).into_iter().filter(|(_, s, _)| s == "main").map(|(c, _, q)| (c, q)).collect();
    wait_archived(&dir.join("a"), &acked, Duration::from_secs(30));
    assert!(archive.stop(Duration::from_secs(20)).is_some_and(|s| s.success()), "archive did not stop cleanly");

    let report = |extra: &[&str]| {
        let (code, out, err) = vigil(&[&["check", "--json", "--data-dir", &d("a")], extra].concat());
        assert_eq!(code, 0, "{out}\n{err}");
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        let n = |k: &str| r[0][k].as_u64().unwrap();
        (n("lost_before_broker"), n("not_recorded"), n("missing"))
    };
    let (lost, not_recorded, missing) = report(&["--brokers", &listen]);
    assert_eq!(missing, 0);
    // Some of the reported frames may have reached the broker (its ack was
    // what got lost): only those absent count.
    assert!(lost > 0 && lost <= reported, "lost before the broker: {lost}, ingest reported {reported}");
    assert!(not_recorded > 0, "the rest of the reserved block is never used");
    assert_eq!(report(&[]), (0, lost + not_recorded, 0), "without a broker they read as not recorded");
    broker.stop(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
}
