//! Tests of the parent module (kept apart: the module stays readable).

use super::*;
use crate::export::tests::ff;
use crate::writer::{SegmentLimits, Writer};
use ingest::synthetic::{Encoder, SyntheticConfig, render};
use media::{Codec, Frame, FrameMeta};
use std::sync::Arc;

/// A realistic wall clock (2023-11-14): HLS decode times are capture times.
const BASE: i64 = 1_700_000_000_000_000;

fn row(seq: u64, ms: i64, key: bool) -> FrameRow {
    FrameRow {
        camera: "c".into(),
        seq,
        file: String::new(),
        offset: 0,
        len: 0,
        capture_us: ms * 1000,
        pts_90k: ms * 90,
        key,
        discontinuity: false,
        codec: "h264".into(),
        crc: 0,
    }
}

/// Runs as (first seq, frames, next seq, discontinuity) from a script
/// of (seq, ms, key).
fn split(target_us: i64, script: &[(u64, i64, bool)]) -> Vec<(u64, usize, Option<i64>, bool)> {
    let mut s = Splitter::new(target_us);
    let mut runs: Vec<Run> = script.iter().filter_map(|&(seq, ms, key)| s.push(row(seq, ms, key))).collect();
    runs.extend(s.finish());
    runs.iter().map(|r| (r.rows[0].seq, r.rows.len(), r.next.map(|n| n.capture_us / 1000), r.discontinuity)).collect()
}

#[test]
fn splits_at_key_frames_and_gaps() {
    // 100 ms frames, keys every 5; a 3 s gap after seq 9; seq 12 and 13
    // (no key frame yet after the gap) cannot decode and are dropped.
    let mut script: Vec<(u64, i64, bool)> = (0..10).map(|i| (i, i as i64 * 100, i % 5 == 0)).collect();
    script.extend([(10, 4000, true), (11, 4100, false), (12, 7200, false), (13, 7300, false)]);
    script.extend((14..20).map(|i| (i, 7400 + (i as i64 - 14) * 100, i == 14)));
    let gop = split(0, &script);
    assert_eq!(
        gop,
        [(0, 5, Some(500), false), (5, 5, None, false), (10, 2, None, true), (14, 6, None, true)],
        "a run per GOP"
    );
    let long = split(1_000_000, &script);
    assert_eq!(long, [(0, 10, None, false), (10, 2, None, true), (14, 6, None, true)]);
    // A range that starts mid-GOP: its first frames are dropped.
    assert_eq!(split(0, &[(3, 0, false), (4, 100, false), (5, 200, true)]), [(5, 1, None, false)]);
    // A source restart is a gap however close in time.
    let mut restart = row(2, 200, true);
    restart.discontinuity = true;
    let mut s = Splitter::new(0);
    assert!(s.push(row(1, 100, true)).is_none());
    assert!(s.push(restart).is_some_and(|r| r.next.is_none()));
    assert!(s.finish().is_some_and(|r| r.discontinuity));
}

#[test]
fn timing_follows_the_camera_and_meets_the_next_run() {
    // Camera clock steady at 100 ms; capture clock 5 ms late at the end.
    let rows = [row(0, 0, true), row(1, 100, false), row(2, 200, false)];
    let next = Stamp { capture_us: 305_000, pts_90k: 300 * 90 };
    assert_eq!(timing(&rows, Some(next)), (vec![9000, 9000, 9450], 27_450));
    // Before a gap the last frame lasts as long as the one before it.
    assert_eq!(timing(&rows, None), (vec![9000, 9000, 9000], 27_000));
    assert_eq!(timing(&rows[..1], None), (vec![DEFAULT_90K], DEFAULT_90K as u64));
    // A camera clock that jumps falls back to the capture clock.
    let mut jumpy = rows.clone();
    jumpy[2].pts_90k = -5;
    assert_eq!(timing(&jumpy, None).0, [9000, 9000, 9000]);
    // A next frame "before" this run (a clock step) never underflows.
    let back = Stamp { capture_us: -1, pts_90k: 0 };
    assert_eq!(timing(&rows, Some(back)), (vec![9000, 9000, 9000], 27_000));
    assert_eq!(timing(&[], None), (vec![], 0));
}

#[test]
fn dates() {
    for (us, text) in [
        (0, "1970-01-01T00:00:00.000Z"),
        (BASE + 123_456, "2023-11-14T22:13:20.123Z"),
        (951_782_400_000_000, "2000-02-29T00:00:00.000Z"),
        (-1000, "1969-12-31T23:59:59.999Z"),
    ] {
        assert_eq!(iso8601(us), text);
    }
    assert_eq!(cap90(BASE), (BASE as u64) * 9 / 100);
    assert_eq!((cap90(-5), cap90(111)), (0, 9));
}

fn frame(camera: &str, codec: Codec, seq: u64, capture_us: i64, key: bool, payload: Vec<u8>) -> Frame {
    let meta = FrameMeta {
        camera: camera.into(),
        stream: media::Stream::Main,
        codec,
        seq,
        capture_us,
        pts_90k: (capture_us - BASE) * 9 / 100,
        key,
        discontinuity: false,
    };
    Frame { meta, payload }
}

/// Archives 70 frames of the synthetic camera (10 fps, a key frame
/// every 10) as camera `c`: 0.0-3.9 s, a recording gap, 9.0-11.9 s
/// (the first frame after the gap a key frame, as ingest makes it).
/// Returns the Annex B stream and the key frames' capture times.
fn archive_h264(w: &mut Writer) -> (Vec<u8>, Vec<i64>) {
    let c = SyntheticConfig { width: 160, height: 96, fps: 10, gop: 10, ..Default::default() };
    let mut enc = Encoder::new(&c).unwrap();
    let (mut pic, mut raw, mut keys) = (vec![], vec![], vec![]);
    for n in 0..70u64 {
        let t = BASE + if n < 40 { n as i64 * 100_000 } else { 9_000_000 + (n as i64 - 40) * 100_000 };
        render(160, 96, n, t, &mut pic);
        let e = enc.encode(&pic, 160, 96, n == 40).unwrap();
        assert!(!e.data.is_empty(), "openh264 skipped frame {n}");
        raw.extend_from_slice(&e.data);
        if e.key {
            keys.push(t);
        }
        w.add(&frame("c", Codec::H264, n, t, e.key, e.data));
    }
    (raw, keys)
}

/// Everything a recording yields, concatenated; the number of pieces.
async fn collect<I: Borrow<Index>>(mut rec: Recording<I>) -> Result<(Vec<u8>, usize), Error> {
    let (mut file, mut pieces) = (vec![], 0);
    while let Some(piece) = rec.next().await {
        file.extend(piece?);
        pieces += 1;
    }
    Ok((file, pieces))
}

fn probe_frames(path: &str) -> (bool, String) {
    ff(&["ffprobe", "-v", "error", "-count_frames", "-show_streams", path])
}

/// The synthetic camera archived with a gap, played back three ways:
/// ranges, a fragmented MP4 recording and HLS, each read back whole by
/// ffprobe and ffmpeg; then what goes wrong gives clear errors.
#[tokio::test]
async fn plays_back_what_was_archived() {
    let d = std::env::temp_dir().join(format!("vigil-playback-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let index = Arc::new(crate::open_index(&d).await.unwrap());
    // Small segments: playback reads across several files.
    let mut w = Writer::new(&d, SegmentLimits { max_bytes: 30_000, max_duration_us: i64::MAX }).unwrap();
    let (raw, keys) = archive_h264(&mut w);
    for seq in 0..3 {
        w.add(&frame("m", Codec::Mjpeg, seq, BASE + seq as i64 * 100_000, true, vec![0xff, 0xd8, 0xff, 0xd9]));
    }
    w.add(&frame("nokey", Codec::H264, 0, BASE, false, vec![0, 0, 0, 1, 0x41, 1]));
    index.commit(w.take().write().unwrap()).await.unwrap();
    let raw_path = d.join("raw.h264");
    std::fs::write(&raw_path, &raw).unwrap();
    assert_eq!(keys.first(), Some(&BASE));
    assert!(keys.contains(&(BASE + 9_000_000)));

    // The timeline: exactly the two stretches, clipped to the request.
    let ranges = |from, to| ranges(&index, "c", from, to, GAP_US);
    assert_eq!(ranges(0, i64::MAX).await.unwrap(), [(BASE, BASE + 3_900_000), (BASE + 9_000_000, BASE + 11_900_000)]);
    assert_eq!(
        ranges(BASE + 1_000_000, BASE + 10_000_000).await.unwrap(),
        [(BASE + 1_000_000, BASE + 3_900_000), (BASE + 9_000_000, BASE + 10_000_000)]
    );
    assert_eq!(ranges(BASE + 5_000_000, BASE + 8_000_000).await.unwrap(), []);
    assert_eq!(index.recorded_ranges("c", 0, i64::MAX, 10_000_000).await.unwrap().len(), 1);
    let cameras = index.cameras().await.unwrap();
    let c = cameras.iter().find(|c| c.camera == "c").unwrap();
    assert_eq!((c.codec.as_str(), c.first_us, c.last_us, c.frames), ("h264", BASE, BASE + 11_900_000, 70));
    assert_eq!(cameras.iter().find(|c| c.camera == "m").unwrap().codec, "mjpeg");

    // A recording: init, then a fragment per GOP; every frame decodes,
    // the very pictures the encoder made.
    let rec = recording(&d, index.clone(), "c", 0, i64::MAX).await.unwrap();
    let next = Box::pin(async move { collect(rec).await });
    fn is_send<T: Send>(_: &T) {}
    is_send(&next); // a web server can stream it
    let (file, pieces) = next.await.unwrap();
    assert_eq!(pieces, 1 + keys.len());
    let mp4 = d.join("recording.mp4");
    std::fs::write(&mp4, &file).unwrap();
    let path = mp4.to_str().unwrap();
    let (ok, out) = probe_frames(path);
    assert!(ok && out.contains("codec_name=h264") && out.contains("nb_read_frames=70"), "{out}");
    eprintln!("ffprobe -count_frames -show_streams recording.mp4:\n{out}");
    let (ok, out) = ff(&["ffmpeg", "-v", "error", "-i", path, "-f", "null", "-"]);
    assert!(ok && out.is_empty(), "{out}");
    let md5 = |input: &str| ff(&["ffmpeg", "-v", "error", "-i", input, "-fps_mode", "passthrough", "-f", "md5", "-"]);
    let source = md5(raw_path.to_str().unwrap());
    assert!(source.0 && source.1.starts_with("MD5="), "{source:?}");
    assert_eq!(md5(path), source);
    // The gap is left out of the timeline: 7 s of video.
    let (ok, out) = ff(&["ffprobe", "-v", "error", "-show_entries", "packet=pts_time", "-of", "csv=p=0", path]);
    let last: f64 = out.lines().last().unwrap().parse().unwrap();
    assert!(ok && (last - 6.9).abs() < 1e-6, "{out}");

    // From the middle of a GOP: starts at its key frame (1.0 s).
    let (part, _) =
        collect(recording(&d, &*index, "c", BASE + 1_500_000, BASE + 2_500_000).await.unwrap()).await.unwrap();
    std::fs::write(&mp4, &part).unwrap();
    let (ok, out) = probe_frames(path);
    assert!(ok && out.contains("nb_read_frames=16"), "{out}");

    hls(&d, &index, &keys, &source).await;

    // Bad input: clear errors, no panics.
    fn err<T>(r: Result<T, Error>) -> String {
        r.err().map(|e| e.to_string()).unwrap_or_default()
    }
    let in_gap = (BASE + 5_000_000, BASE + 8_000_000);
    for e in [
        err(recording(&d, &*index, "c", in_gap.0, in_gap.1).await),
        err(hls_playlist(&index, "c", in_gap.0, in_gap.1, 2.0, "i", |_, _| "s".into()).await),
        err(hls_segment(&d, &index, "c", in_gap.0, in_gap.1).await),
        err(init_segment(&d, &index, "c", BASE + 20_000_000).await),
        err(recording(&d, &*index, "nobody", 0, i64::MAX).await),
    ] {
        assert!(e.contains("no recorded frames in that range"), "{e}");
    }
    for e in [
        err(recording(&d, &*index, "m", 0, i64::MAX).await),
        err(hls_playlist(&index, "m", 0, i64::MAX, 2.0, "i", |_, _| "s".into()).await),
        err(hls_segment(&d, &index, "m", 0, i64::MAX).await),
        err(init_segment(&d, &index, "m", 0).await),
    ] {
        assert!(e.contains("records MJPEG"), "{e}");
    }
    let nokey = collect(recording(&d, &*index, "nokey", 0, i64::MAX).await.unwrap()).await;
    assert!(err(nokey).contains("no key frame"));
    assert!(err(hls_playlist(&index, "c", 0, i64::MAX, f64::NAN, "i", |_, _| "s".into()).await).contains("target"));
    let bad_uri = hls_playlist(&index, "c", 0, i64::MAX, 2.0, "i", |_, _| "a\nb".into()).await;
    assert!(err(bad_uri).contains("line break"));

    // A corrupt byte in the second stretch: the recording stops there
    // with the checksum error (and ends), so does that HLS segment.
    let rows = index.frames_between("c", BASE + 10_000_000, BASE + 10_000_000).await.unwrap();
    let victim = rows.last().unwrap();
    let seg = d.join(&victim.file);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[victim.offset as usize + 5] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let mut rec = recording(&d, &*index, "c", 0, i64::MAX).await.unwrap();
    let mut pieces = vec![];
    while let Some(p) = rec.next().await {
        pieces.push(p);
    }
    let e = err(pieces.pop().unwrap());
    assert!(e.contains(&format!("frame {} fails its checksum", victim.seq)), "{e}");
    assert!(pieces.iter().all(Result::is_ok) && rec.next().await.is_none());
    let e = err(hls_segment(&d, &index, "c", BASE + 9_000_000, BASE + 11_000_000).await);
    assert!(e.contains("fails its checksum"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

/// HLS of camera `c`: the playlist written beside its init segment and
/// segments (relative URIs) and read back by ffprobe and ffmpeg.
async fn hls(d: &Path, index: &Index, keys: &[i64], source: &(bool, String)) {
    let hls = d.join("hls");
    std::fs::create_dir_all(&hls).unwrap();
    let uri = |from: i64, to: i64| format!("seg-{from}-{to}.m4s");
    let p = hls_playlist(index, "c", 0, i64::MAX, 2.0, "init.mp4", uri).await.unwrap();
    std::fs::write(hls.join("init.mp4"), init_segment(d, index, "c", 0).await.unwrap()).unwrap();
    for s in &p.segments {
        let bytes = hls_segment(d, index, "c", s.from_us, s.to_us).await.unwrap();
        std::fs::write(hls.join(&s.uri), bytes).unwrap();
    }
    let playlist = hls.join("playlist.m3u8");
    std::fs::write(&playlist, &p.text).unwrap();
    let path = playlist.to_str().unwrap();

    // Segments start at key frames, about 2 s each (GOPs are 1 s); the
    // discontinuity is at the gap, and the timeline leaves the gap out.
    assert!(p.segments.iter().all(|s| keys.contains(&s.from_us)), "{:?}", p.segments);
    let starts: Vec<i64> = p.segments.iter().map(|s| (s.from_us - BASE) / 100_000).collect();
    assert_eq!(starts, [0, 20, 90, 110], "{}", p.text);
    let after_gap: Vec<bool> = p.segments.iter().map(|s| s.discontinuity).collect();
    assert_eq!(after_gap, [false, false, true, false]);
    assert_eq!(p.text.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
    let durations: Vec<u64> = p.segments.iter().map(|s| s.duration_90k).collect();
    assert_eq!(durations, [180_000, 180_000, 180_000, 90_000]);
    assert!(p.text.starts_with("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-TARGETDURATION:2\n"));
    assert!(p.text.contains("#EXT-X-MAP:URI=\"init.mp4\"\n") && p.text.ends_with("#EXT-X-ENDLIST\n"));
    assert!(p.text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:29.000Z\n"));
    eprintln!("{}", p.text);

    let (ok, out) = probe_frames(path);
    assert!(ok && out.contains("codec_name=h264") && out.contains("nb_read_frames=70"), "{out}");
    let (ok, out) = ff(&["ffmpeg", "-v", "error", "-i", path, "-f", "null", "-"]);
    assert!(ok && out.is_empty(), "{out}");
    let md5 = ff(&["ffmpeg", "-v", "error", "-i", path, "-fps_mode", "passthrough", "-f", "md5", "-"]);
    assert_eq!(&md5, source);
    // One segment alone (init + segment) plays its 20 frames from a key frame.
    let one = [std::fs::read(hls.join("init.mp4")).unwrap(), std::fs::read(hls.join(&p.segments[2].uri)).unwrap()];
    let single = hls.join("one.mp4");
    std::fs::write(&single, one.concat()).unwrap();
    let (ok, out) =
        ff(&["ffprobe", "-v", "error", "-show_entries", "packet=flags", "-of", "csv=p=0", single.to_str().unwrap()]);
    let flags: Vec<&str> = out.lines().collect();
    assert!(ok && flags.len() == 20 && flags[0].starts_with('K'), "{out}");
}
