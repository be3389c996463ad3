//! Two archivers sharing one archive dir form the `vigil-archive` consumer
//! group and split the partitions of `vigil.frames`; partitions move when
//! one joins, dies (SIGKILL) or stops, and no frame is archived twice or
//! skipped.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SERIES: &str = "vigil_stage_assigned_partitions{stage=\"archive\",topic=\"vigil.frames\"}";

fn owned(m: SocketAddr) -> Option<f64> {
    metric(&http_get(m, "/metrics"), SERIES)
}

/// Waits (bounded) until the archivers at `ms` own `want` partitions each.
fn wait_owned(ms: &[SocketAddr], want: &[f64], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now: Vec<Option<f64>> = ms.iter().map(|&m| owned(m)).collect();
        if now.iter().zip(want).all(|(n, w)| *n == Some(*w)) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: partitions owned {now:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn partitions_move_between_two_archivers_sharing_a_dir() {
    let dir = temp_dir("shared");
    let addr = free_port();
    let listen = addr.to_string();
    let (bdir, idir, adir) = (dir.join("broker"), dir.join("ingest"), dir.join("archive"));
    let (bdir, idir, adir) = (bdir.to_str().unwrap(), idir.to_str().unwrap(), adir.to_str().unwrap());
    let ack_log = dir.join("acks.log");
    let cfg = dir.join("archive.toml");
    std::fs::write(&cfg, "[archive]\nflush_interval_ms = 100\nmin_free_bytes = 0\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    let mut ingest_args: Vec<String> =
        ["ingest", "--brokers", &listen, "--data-dir", idir, "--metrics-listen", "off"].map(String::from).to_vec();
    // Six cameras: keys spread over the 4 partitions.
    for i in 1..=6 {
        ingest_args.extend(["--camera".into(), format!("s{i}=synthetic:width=160,height=96,fps=10,gop=10")]);
    }
    ingest_args.extend(["--ack-log".into(), ack_log.to_str().unwrap().into()]);
    let ingest_args: Vec<&str> = ingest_args.iter().map(String::as_str).collect();
    let (ma, mb) = (free_port(), free_port());
    let (ma_s, mb_s) = (ma.to_string(), mb.to_string());
    let archiver = |m: &str| {
        ["archive", "--config", cfg, "--brokers", &listen, "--data-dir", adir, "--metrics-listen", m].map(String::from)
    };

    let mut broker = Vigil::start("broker", &["broker", "--listen", &listen, "--data-dir", bdir], &dir);
    wait_port(addr, Duration::from_secs(30));
    let ingest = Vigil::start("ingest", &ingest_args, &dir);
    let args_a = archiver(&ma_s);
    let args_b = archiver(&mb_s);
    let args_a: Vec<&str> = args_a.iter().map(String::as_str).collect();
    let args_b: Vec<&str> = args_b.iter().map(String::as_str).collect();

    let mut a = Vigil::start("archive-a", &args_a, &dir);
    wait_owned(&[ma], &[4.0], "a alone");
    std::thread::sleep(Duration::from_secs(2));
    let mut b = Vigil::start("archive-b", &args_b, &dir);
    wait_owned(&[ma, mb], &[2.0, 2.0], "b joined");
    std::thread::sleep(Duration::from_secs(2));
    a.kill(); // the group moves its partitions once its session times out
    wait_owned(&[mb], &[4.0], "a killed");
    std::thread::sleep(Duration::from_secs(2));
    a = Vigil::start("archive-a", &args_a, &dir);
    wait_owned(&[ma, mb], &[2.0, 2.0], "a back");
    std::thread::sleep(Duration::from_secs(2));
    assert!(b.stop(Duration::from_secs(20)).is_some_and(|s| s.success()), "b did not stop cleanly");
    wait_owned(&[ma], &[4.0], "b stopped");
    std::thread::sleep(Duration::from_secs(1));

    let mut ingest = ingest;
    assert!(ingest.stop(Duration::from_secs(20)).is_some_and(|s| s.success()), "ingest did not stop cleanly");
    let acked: BTreeSet<(String, u64)> = acked(&ack_log).into_iter().map(|(c, _, q)| (c, q)).collect();
    assert!(acked.len() > 200, "only {} frames acknowledged", acked.len());
    wait_archived(&dir.join("archive"), &acked, Duration::from_secs(60));
    assert!(a.stop(Duration::from_secs(20)).is_some_and(|s| s.success()), "a did not stop cleanly");
    assert_archive_exact(&dir.join("archive"), &acked);

    // The work really was shared: segments from at least three writers
    // (a, b, and a again after its restart).
    let writers: BTreeSet<String> = walk_segments(&dir.join("archive/archive"))
        .iter()
        .filter_map(|f| archive::lock::writer_of(f).map(str::to_string))
        .collect();
    assert!(writers.len() >= 3, "segments by writers {writers:?}");
    broker.stop(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `<camera>/<file>` of every segment file under the archive dir.
fn walk_segments(archive_dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for cam in std::fs::read_dir(archive_dir).unwrap().flatten().filter(|e| e.path().is_dir()) {
        for f in std::fs::read_dir(cam.path()).unwrap().flatten() {
            out.push(format!("{}/{}", cam.file_name().to_string_lossy(), f.file_name().to_string_lossy()));
        }
    }
    out
}
