//! The exactly-once proof: broker, ingest and archiver as separate
//! processes; the archiver is SIGKILLed at random moments while it owns
//! partitions of `vigil.frames` (is archiving) 20 times, ingest
//! a few times and the broker once, each restarted; afterwards `vigil check`
//! must find 0 missing and 0 duplicate frames, and every frame the broker
//! acknowledged must be in the archive.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A small deterministic generator, seeded from the clock (printed, so a
/// failure can be replayed with VIGIL_CRASH_SEED).
struct Lcg(u64);
impl Lcg {
    fn next_ms(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        lo + (self.0 >> 33) % (hi - lo)
    }
}

const OWNED: &str = "vigil_stage_assigned_partitions{stage=\"archive\",topic=\"vigil.frames\"}";

#[test]
fn archive_is_exactly_once_under_repeated_sigkill() {
    let dir = temp_dir("crash");
    let seed = std::env::var("VIGIL_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("crash test seed {seed}");
    let mut rng = Lcg(seed);
    let addr = free_port();
    let listen = addr.to_string();
    let (bdir, idir, adir) = (dir.join("broker"), dir.join("ingest"), dir.join("archive"));
    let (bdir, idir, adir) = (bdir.to_str().unwrap(), idir.to_str().unwrap(), adir.to_str().unwrap());
    let ack_log = dir.join("acks.log");
    let broker_args = ["broker", "--listen", &listen, "--data-dir", bdir, "--metrics-listen", "off"];
    #[rustfmt::skip]
    let ingest_args = [
        "ingest", "--brokers", &listen, "--data-dir", idir, "--metrics-listen", "off",
        "--camera", "k1=synthetic:width=160,height=96,fps=25,gop=10",
        "--camera", "k2=synthetic:width=160,height=96,fps=25,codec=mjpeg",
        "--camera", "k3=synthetic:width=320,height=180,fps=15,gop=15",
        "--ack-log", ack_log.to_str().unwrap(),
    ];
    // Frequent flushes: more kills land between a flush's data sync and its
    // index commit, the window recovery exists for.
    let cfg = dir.join("archive.toml");
    // No free-space floor: on a nearly full test machine retention would
    // otherwise (rightly) delete recordings this test counts.
    // A short group session: a killed archiver's partitions move soon.
    std::fs::write(
        &cfg,
        "[archive]\nflush_interval_ms = 40\nmin_free_bytes = 0\n[groups]\nsession_timeout_ms = 1000\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let metrics = free_port();
    let metrics_listen = metrics.to_string();
    #[rustfmt::skip]
    let archive_args = ["archive", "--config", cfg, "--brokers", &listen, "--data-dir", adir, "--metrics-listen", &metrics_listen];
    // Kills count only while the archiver owns partitions (is archiving),
    // not while it is still joining its group.
    let owning = || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !metric(&http_get(metrics, "/metrics"), OWNED).is_some_and(|n| n > 0.0) {
            assert!(Instant::now() < deadline, "the archiver owned no partition within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    let mut broker = Vigil::start("broker", &broker_args, &dir);
    wait_port(addr, Duration::from_secs(30));
    let mut ingest = Vigil::start("ingest", &ingest_args, &dir);
    let mut archiver = Vigil::start("archive", &archive_args, &dir);
    let (mut archive_kills, mut ingest_kills, mut broker_kills) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(300);
    while archive_kills < 20 && Instant::now() < deadline {
        owning();
        std::thread::sleep(Duration::from_millis(rng.next_ms(300, 1800)));
        archiver.kill();
        archive_kills += 1;
        if archive_kills % 6 == 3 {
            ingest.kill();
            ingest_kills += 1;
            ingest = Vigil::start("ingest", &ingest_args, &dir);
        }
        if archive_kills == 10 {
            broker.kill();
            broker_kills += 1;
            std::thread::sleep(Duration::from_millis(rng.next_ms(200, 1500)));
            broker = Vigil::start("broker", &broker_args, &dir);
            wait_port(addr, Duration::from_secs(30));
        }
        archiver = Vigil::start("archive", &archive_args, &dir);
    }
    assert_eq!((archive_kills, ingest_kills, broker_kills), (20, 3, 1), "the chaos did not run to the end in time");

    // Cameras stop; the archiver catches up and stops cleanly.
    assert!(ingest.stop(Duration::from_secs(20)).is_some_and(|s| s.success()), "ingest did not stop cleanly");
    let acked: BTreeSet<(String, u64)> =
        acked(&ack_log).into_iter().filter(|(_, s, _)| s == "main").map(|(c, _, q)| (c, q)).collect();
    assert!(acked.len() > 300, "only {} frames acknowledged", acked.len());
    wait_archived(&dir.join("archive"), &acked, Duration::from_secs(60));
    assert!(archiver.stop(Duration::from_secs(20)).is_some_and(|s| s.success()), "archiver did not stop cleanly");

    assert_archive_exact(&dir.join("archive"), &acked);
    broker.stop(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
}
