//! Tests of the parent module (kept apart: the module stays readable).

use super::*;
use crate::source::{SourceSpec, run_for};

/// (command line, pid) of every process spawned, for tests that kill one.
pub(in crate::source) static SPAWNED: Mutex<Vec<(String, u32)>> = Mutex::new(Vec::new());

#[test]
fn splits_args_like_a_shell() {
    let ok = |s: &str| split_args(s).unwrap();
    assert_eq!(ok("  -i  a.mp4 "), ["-i", "a.mp4"]);
    assert_eq!(
        ok(r#"-i 'rtsp://u:p@cam/a b' -vf "drawtext=text='x y'" x\ y"#),
        ["-i", "rtsp://u:p@cam/a b", "-vf", "drawtext=text='x y'", "x y"]
    );
    assert_eq!(ok(r#""a\"b\\c\d" '' """#), [r#"a"b\c\d"#, "", ""]);
    assert_eq!(ok(r"a\"), ["a\\"]);
    assert!(split_args("-i 'open").unwrap_err().contains("unterminated"));
    assert!(split_args("-i \"open\\\"").unwrap_err().contains("unterminated"));
    assert!(ok("").is_empty());
}

#[test]
fn the_codec_picks_the_output() {
    let cfg = |s: &str| Config::parse(s).unwrap();
    let tail = |c: &Config| c.command()[c.command().len() - 10..].join(" ");
    let copy = cfg("-rtsp_transport tcp -i rtsp://cam/1");
    assert_eq!((copy.codec, copy.copy), (Codec::H264, true));
    assert_eq!(
        copy.command().join(" "),
        "-hide_banner -loglevel error -nostdin -rtsp_transport tcp -i rtsp://cam/1 -c:v copy -an -sn -dn \
         -bsf:v h264_mp4toannexb,h264_metadata=aud=insert -flush_packets 1 -f h264 pipe:1"
    );
    // A decoder chosen before -i is not the output codec.
    let c = cfg("-c:v h264_cuvid -i x -c:v mjpeg -q:v 5");
    assert_eq!((c.codec, c.copy), (Codec::Mjpeg, false));
    assert_eq!(tail(&c), "-q:v 5 -an -sn -dn -flush_packets 1 -f mjpeg pipe:1");
    for (args, codec) in [
        ("-i x -vcodec mjpeg", Codec::Mjpeg),
        ("-i x -c:v libx265", Codec::H265),
        ("-i x -codec:v hevc_nvenc", Codec::H265),
        ("-i x -c:v libx264", Codec::H264),
        ("-i x -c copy", Codec::H264),
        ("-i a -i x -c:v libx265 -c:v libx264", Codec::H264),
    ] {
        assert_eq!(cfg(args).codec, codec, "{args}");
        assert!(!cfg(args).copy, "{args}");
    }
    assert!(cfg("-i x -c:v libx265").command().join(" ").contains("hevc_metadata=aud=insert -flush_packets 1 -f hevc"));
    for bad in ["", "-f lavfi", "-i", "-i 'x"] {
        assert!(Config::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn credentials_are_left_out() {
    assert_eq!(redact("rtsp://admin:s3cret@10.0.0.5:554/live?x=1: 401"), "rtsp://***@10.0.0.5:554/live?x=1: 401");
    assert_eq!(redact("a http://u@h/p and srt://h:1 rtmp://u:p@h"), "a http://***@h/p and srt://h:1 rtmp://***@h");
    assert_eq!(redact("x://"), "x://");
    let cfg = Config::parse("-rtsp_transport tcp -i 'rtsp://admin:s3cret@cam/1'").unwrap();
    assert!(!format!("{cfg:?}").contains("s3cret"));
    assert!(!Config::parse("rtsp://admin:s3cret@cam/1").unwrap_err().contains("s3cret"));
    // Both read text from outside (ffmpeg's stderr, config): never panic.
    let mut rng = media::fuzz::Rng::new(0x7ed);
    let alphabet = ['a', ':', '/', '@', ' ', '\'', '"', '\\', 'é', '€', '\n'];
    for _ in 0..20_000 {
        let s: String = (0..rng.below(24)).map(|_| alphabet[rng.below(alphabet.len())]).collect();
        let r = redact(&s);
        assert!(r.len() <= s.len() + 3 * s.matches("://").count(), "{s:?} -> {r:?}");
        let _ = split_args(&s);
    }
}

#[test]
fn file_options() {
    let dir = temp_dir("opts");
    let f = dir.join("a?b.mp4");
    std::fs::write(&f, b"x").unwrap();
    let p = |s: String| FileConfig::parse(&s);
    let plain = p(f.display().to_string()).unwrap(); // a `?` in the name
    assert_eq!((plain.path.clone(), plain.looping, plain.fast), (f.clone(), false, false));
    let both = p(format!("{}?loop&fast", f.display())).unwrap();
    assert_eq!((both.path, both.looping, both.fast), (f.clone(), true, true));
    assert!(p(format!("{}?fast", f.display())).unwrap().fast);
    assert!(p(format!("{}?often", f.display())).unwrap_err().contains("unknown option `often`"));
    assert!(p("/no/such/file.mp4".into()).unwrap_err().contains("No such file"));
    assert!(p(dir.display().to_string()).unwrap_err().contains("directory"));
    assert!(p(String::new()).is_err());
    let probe = Probe { codec: "vp9".into(), fps: None };
    let (codec, args) = FileConfig { path: "/v/a:b.mkv".into(), looping: false, fast: true }.command(&probe);
    assert_eq!(codec, Codec::H264);
    assert!(args.join(" ").contains("-nostdin -i file:/v/a:b.mkv -map 0:v:0 -c:v libx264"), "{args:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ffprobe_answers() {
    let p = Probe::parse("codec_name=h264\navg_frame_rate=0/0\nr_frame_rate=30000/1001\n").unwrap();
    assert_eq!((p.codec.as_str(), p.fps), ("h264", Some((30000, 1001))));
    let p = Probe::parse("codec_name=hevc\navg_frame_rate=25/1\nr_frame_rate=50/1").unwrap();
    assert_eq!(p.fps, Some((25, 1)));
    for no_rate in ["codec_name=mjpeg", "codec_name=mjpeg\navg_frame_rate=-1/2", "codec_name=x\nr_frame_rate=9000/1"] {
        assert_eq!(Probe::parse(no_rate).unwrap().fps, None, "{no_rate}");
    }
    assert!(Probe::parse("").is_none() && Probe::parse("codec_name=\n").is_none());
}

/// Bounded fuzzing in the default suite: `fuzz` (ffmpeg's stdout for each
/// codec, its stderr, ffprobe's answer) on mutated seeds of each kind.
#[test]
fn ffmpeg_output_survives_mutation() {
    let h264: &[u8] = &[
        0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80, 0, 0, 1, 0x65,
        0x88, 0x84, 0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x41, 0x9a, 0x02,
    ];
    let hevc: &[u8] = &[
        0, 0, 0, 1, 0x46, 0x01, 0x10, 0, 0, 0, 1, 0x40, 0x01, 0x0c, 0, 0, 0, 1, 0x42, 0x01, 0x01, 0, 0, 0, 1, 0x44,
        0x01, 0xc1, 0, 0, 1, 0x28, 0x01, 0xaf, 0, 0, 0, 1, 0x46, 0x01, 0x10, 0, 0, 1, 0x02, 0x01, 0xd0,
    ];
    let mjpeg = [jpeg::tests::image(1), jpeg::tests::image(2)].concat();
    let stderr: &[u8] = b"[h264 @ 0x5] error\r\nrtsp://admin:pw@cam/1: Connection refused\n\nlast";
    let ffprobe: &[u8] = b"codec_name=h264\navg_frame_rate=0/0\nr_frame_rate=30000/1001\n";
    let seeds =
        [(0x00, h264), (0x40, h264), (0xe1, hevc), (0x22, &mjpeg), (0xe2, &mjpeg), (0x60, stderr), (0xe0, ffprobe)]
            .map(|(ctl, d)| [&[ctl], d].concat());
    crate::fuzz::bounded("ffmpeg", &seeds, 0xff, Duration::from_secs(2), fuzz);
}

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vigil-ffmpeg-{name}-{}-{}", std::process::id(), bus::now_us()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// ffmpeg decodes `data` (a raw stream of `format`) without an error.
fn decodes(format: &str, data: &[u8]) {
    let dir = temp_dir("decode");
    let f = dir.join("stream");
    std::fs::write(&f, data).unwrap();
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-nostdin", "-f", format, "-i"])
        .arg(&f)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn nal_types(au: &[u8], hevc: bool) -> Vec<u8> {
    annexb::nal_units(au).iter().map(|&(s, _)| if hevc { (au[s] >> 1) & 0x3f } else { au[s] & 0x1f }).collect()
}

/// A paced test picture, one encoder thread (the test machines are small).
const TESTSRC: &str = "-re -f lavfi -i testsrc2=size=160x120:rate=15 -threads 1";

fn live(spec: &str, d: Duration) -> Vec<media::Frame> {
    let t = Instant::now();
    let frames = run_for(SourceSpec::parse(spec).unwrap(), d);
    eprintln!("{spec}: {} frames in {:?}", frames.len(), t.elapsed());
    assert!(frames.len() >= 10, "{} frames", frames.len());
    assert!(frames[0].meta.key && frames[0].meta.discontinuity);
    for w in frames.windows(2) {
        let (a, b) = (&w[0].meta, &w[1].meta);
        assert!(b.capture_us > a.capture_us && b.pts_90k > a.pts_90k && b.seq == a.seq + 1 && !b.discontinuity);
    }
    frames
}

#[test]
fn h264_from_ffmpeg() {
    let frames = live(&format!("ffmpeg:{TESTSRC} -c:v libx264 -g 15 -tune zerolatency"), Duration::from_secs(2));
    assert!(frames.iter().all(|f| f.meta.codec == Codec::H264));
    let types = nal_types(&frames[0].payload, false);
    assert!(types.starts_with(&[9]) && [7, 8, 5].iter().all(|t| types.contains(t)), "{types:?}");
    assert!(frames.iter().filter(|f| f.meta.key).count() >= 2);
    let stream: Vec<u8> = frames.iter().flat_map(|f| f.payload.iter().copied()).collect();
    decodes("h264", &stream);
}

#[test]
fn h265_from_ffmpeg() {
    let spec = format!("ffmpeg:{TESTSRC} -c:v libx265 -preset ultrafast -g 15 -x265-params log-level=error");
    let frames = live(&spec, Duration::from_secs(3));
    assert!(frames.iter().all(|f| f.meta.codec == Codec::H265));
    let types = nal_types(&frames[0].payload, true);
    assert!(types.starts_with(&[35]) && [32, 33, 34].iter().all(|t| types.contains(t)), "{types:?}");
    let stream: Vec<u8> = frames.iter().flat_map(|f| f.payload.iter().copied()).collect();
    decodes("hevc", &stream);
}

#[test]
fn mjpeg_from_ffmpeg() {
    let frames = live(&format!("ffmpeg:{TESTSRC} -c:v mjpeg -q:v 5"), Duration::from_secs(2));
    for f in &frames {
        assert!(f.meta.key && f.meta.codec == Codec::Mjpeg);
        assert!(f.payload.starts_with(&[0xff, 0xd8]) && f.payload.ends_with(&[0xff, 0xd9]));
    }
    // Whole images: a cut or merged one would not decode cleanly.
    decodes("mjpeg", &frames.iter().flat_map(|f| f.payload.iter().copied()).collect::<Vec<_>>());
}

#[test]
fn files_fast_and_at_real_time_pace() {
    let dir = temp_dir("file");
    let mp4 = dir.join("clip.mp4");
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10"])
        .args(["-t", "1", "-threads", "1", "-c:v", "libx264", "-g", "5", "-pix_fmt", "yuv420p"])
        .arg(&mp4)
        .status()
        .unwrap();
    assert!(made.success());
    // Fast and looping: many passes in a second, 10 frames each.
    let t = Instant::now();
    let fast =
        run_for(SourceSpec::parse(&format!("file:{}?loop&fast", mp4.display())).unwrap(), Duration::from_secs(1));
    eprintln!("fast: {} frames in {:?}", fast.len(), t.elapsed());
    assert!(fast.len() >= 20, "{} frames", fast.len());
    assert!(fast.iter().filter(|f| f.meta.discontinuity).count() == 1, "a pass is not a reconnect");
    assert!(fast.windows(2).all(|w| w[1].meta.pts_90k == w[0].meta.pts_90k + 9000));
    let types = nal_types(&fast[0].payload, false);
    assert!(types.starts_with(&[9]) && [7, 8, 5].iter().all(|t| types.contains(t)), "{types:?}");
    decodes("h264", &fast[..10].iter().flat_map(|f| f.payload.iter().copied()).collect::<Vec<_>>());
    // Real time: 10 fps.
    let t = Instant::now();
    let paced =
        run_for(SourceSpec::parse(&format!("file:{}?loop", mp4.display())).unwrap(), Duration::from_millis(1500));
    let gaps: Vec<i64> = paced.windows(2).map(|w| (w[1].meta.capture_us - w[0].meta.capture_us) / 1000).collect();
    eprintln!("paced: {} frames in {:?}, ms apart: {gaps:?}", paced.len(), t.elapsed());
    // ffmpeg's -re lets the first frames of a pass (B-frame delay) out at once.
    assert!((6..=20).contains(&paced.len()), "{} frames", paced.len());
    assert!(gaps.iter().filter(|g| (70..=150).contains(*g)).count() >= gaps.len() / 2, "{gaps:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failing_ffmpeg_is_a_clear_error_and_retried() {
    let cfg = Config::parse("-i /no/such/file.mp4").unwrap();
    let mut p = Process::spawn("ffmpeg", &cfg.command(), cfg.codec).unwrap();
    let e = p.next(&|| false).err().expect("an error");
    assert!(matches!(e, SourceError::Connect(_)), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("ffmpeg exited with status 1") && text.contains("No such file or directory"), "{text}");
    // Under the supervisor: retried (several spawns), no frames, no panic.
    let t = Instant::now();
    let before = spawned("/no/such/other.mp4");
    assert!(
        run_for(SourceSpec::parse("ffmpeg:-i /no/such/other.mp4").unwrap(), Duration::from_millis(1500)).is_empty()
    );
    assert!(spawned("/no/such/other.mp4") >= before + 2, "retried");
    assert!(t.elapsed() < Duration::from_secs(3));
}

fn spawned(needle: &str) -> usize {
    SPAWNED.lock().unwrap().iter().filter(|(a, _)| a.contains(needle)).count()
}

#[test]
fn garbage_silence_and_stopping() {
    let sh = |script: &str| vec!["-c".to_string(), script.to_string()];
    // Garbage on stdout: a stream error at once.
    let mut p = Process::spawn("sh", &sh("echo oops; exec sleep 5"), Codec::H264).unwrap();
    let e = p.next(&|| false).err().expect("an error").to_string();
    assert!(e.contains("not an Annex-B stream"), "{e}");
    let mut p = Process::spawn("sh", &sh("echo oops; exec sleep 5"), Codec::Mjpeg).unwrap();
    assert!(p.next(&|| false).err().expect("an error").to_string().contains("JPEG"));
    // Silence: a timeout.
    let mut p = Process::spawn("sleep", &["30".into()], Codec::H264).unwrap();
    p.no_frame = Duration::from_millis(300);
    assert!(matches!(p.next(&|| false), Err(SourceError::Timeout(_))));
    // Stopping while silent: back within a poll, the child reaped.
    let mut p = Process::spawn("sleep", &["30".into()], Codec::H264).unwrap();
    let pid = p.child.0.id();
    let t = Instant::now();
    let stop = |_: ()| t.elapsed() > Duration::from_millis(200);
    assert!(p.next(&|| stop(())).unwrap().is_none());
    drop(p);
    assert!(t.elapsed() < Duration::from_millis(800), "{:?}", t.elapsed());
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "child reaped");
    // A clean end without output; stderr lines in a failure.
    let mut p = Process::spawn("true", &[], Codec::H264).unwrap();
    assert!(p.next(&|| false).unwrap().is_none());
    let mut p =
        Process::spawn("sh", &sh("echo first >&2; echo 'rtsp://x: Connection refused' >&2; exit 1"), Codec::H264)
            .unwrap();
    let e = p.next(&|| false).err().unwrap().to_string();
    assert_eq!(e, "cannot connect: ffmpeg exited with status 1: first; rtsp://x: Connection refused");
}

#[test]
fn a_killed_ffmpeg_is_reconnected_after_a_gap() {
    let marker = "testsrc2=size=96x64:rate=15";
    let spec = format!("ffmpeg:-re -f lavfi -i {marker} -threads 1 -c:v libx264 -g 15 -tune zerolatency");
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1200));
        let pid = SPAWNED.lock().unwrap().iter().find(|(a, _)| a.contains(marker)).map(|&(_, p)| p).unwrap();
        Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    });
    let frames = run_for(SourceSpec::parse(&spec).unwrap(), Duration::from_secs(3));
    killer.join().unwrap();
    let gaps: Vec<usize> = (0..frames.len()).filter(|&i| frames[i].meta.discontinuity).collect();
    assert_eq!(gaps.len(), 2, "{gaps:?} of {}", frames.len());
    assert_eq!(gaps[0], 0);
    let after = &frames[gaps[1]];
    assert!(after.meta.key && after.meta.capture_us > frames[gaps[1] - 1].meta.capture_us);
    assert!(frames.len() - gaps[1] >= 5, "frames after the reconnect");
}
