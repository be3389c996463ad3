//! A real power cut, not only SIGKILL (which keeps the page cache, so the
//! crash test would pass without a single fdatasync): the archive's data
//! dir is a LazyFs (tests/support/lazyfs.rs) that keeps what was not
//! synced (file data, directory entries) in memory and throws it away on a
//! cut. The archiver is killed and
//! its disk loses power a few times while cameras record; afterwards
//! `vigil check` must be clean and every frame the broker acknowledged
//! must be in the archive exactly once.

mod common;
#[path = "support/lazyfs.rs"]
mod lazyfs;

use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

#[test]
fn archive_is_exactly_once_across_power_cuts() {
    let dir = temp_dir("power-cut");
    let mnt = dir.join("archive");
    std::fs::create_dir_all(&mnt).unwrap();
    let fs = lazyfs::LazyFs::new();
    let mount = |fs: &lazyfs::LazyFs| {
        fs.mount(&mnt).unwrap_or_else(|e| {
            panic!("cannot mount a FUSE file system at {} ({e}): this test needs root and /dev/fuse", mnt.display())
        })
    };
    let mut disk = Some(mount(&fs));

    let addr = free_port();
    let listen = addr.to_string();
    let (bdir, idir, adir) = (dir.join("broker"), dir.join("ingest"), mnt.to_str().unwrap().to_string());
    let (bdir, idir) = (bdir.to_str().unwrap(), idir.to_str().unwrap());
    let ack_log = dir.join("acks.log");
    let cfg = dir.join("archive.toml");
    std::fs::write(&cfg, "[archive]\nflush_interval_ms = 40\nmin_free_bytes = 0\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    #[rustfmt::skip]
    let ingest_args = [
        "ingest", "--brokers", &listen, "--data-dir", idir, "--metrics-listen", "off",
        "--camera", "p1=synthetic:width=160,height=96,fps=25,gop=10",
        "--camera", "p2=synthetic:width=160,height=96,fps=25,codec=mjpeg",
        "--ack-log", ack_log.to_str().unwrap(),
    ];
    #[rustfmt::skip]
    let archive_args = ["archive", "--config", cfg, "--brokers", &listen, "--data-dir", &adir, "--metrics-listen", "off"];
    let _broker =
        Vigil::start("broker", &["broker", "--listen", &listen, "--data-dir", bdir, "--metrics-listen", "off"], &dir);
    wait_port(addr, Duration::from_secs(30));
    let mut ingest = Vigil::start("ingest", &ingest_args, &dir);
    let mut archiver = Vigil::start("archive", &archive_args, &dir);

    let mut cuts = Vec::new();
    for i in 0..6u64 {
        // Uneven gaps, so cuts land at different points of a flush.
        std::thread::sleep(Duration::from_millis(1500 + (i * 337) % 1000));
        // What the index has committed (synchronous=FULL) just before the
        // power goes must all be there after it. Read only: opening it for
        // writing would sync the directory and the index itself, and so
        // hide a missing sync of the archiver's (with synchronous=NORMAL
        // this test fails).
        let committed = archived_seqs_read_only(&mnt);
        archiver.kill();
        // Unmounting hands the kernel's cached pages to the file system:
        // the cut then loses everything the archiver had not synced.
        drop(disk.take());
        cuts.push(fs.power_cut());
        disk = Some(mount(&fs));
        let kept = archived_seqs_read_only(&mnt);
        let gone = committed.difference(&kept).count();
        assert_eq!(gone, 0, "cut {i}: {gone} of {} committed frames gone from the index", committed.len());
        archiver = Vigil::start("archive", &archive_args, &dir);
    }
    for (i, c) in cuts.iter().enumerate() {
        eprintln!("cut {i}: lost {} unsynced bytes of {:?}, {} unsynced names", c.bytes, c.files, c.names);
    }
    // The file system had unsynced state to lose (SQLite never syncs its
    // -shm file, lock files' names are never synced); whether the archive
    // syncs enough is what the assertions say.
    assert!(cuts.iter().any(|c| c.bytes + c.names as u64 > 0), "no cut lost anything: is LazyFs mounted?");

    assert!(ingest.stop(Duration::from_secs(20)).is_some_and(|s| s.success()), "ingest did not stop cleanly");
    let acked: BTreeSet<(String, u64)> =
        acked(&ack_log).into_iter().filter(|(_, s, _)| s == "main").map(|(c, _, q)| (c, q)).collect();
    assert!(acked.len() > 300, "only {} frames acknowledged", acked.len());
    wait_archived(&mnt, &acked, Duration::from_secs(60));
    assert!(archiver.stop(Duration::from_secs(20)).is_some_and(|s| s.success()), "archiver did not stop cleanly");
    assert_archive_exact(&mnt, &acked);
    drop(disk);
    let _ = std::fs::remove_dir_all(&dir);
}
