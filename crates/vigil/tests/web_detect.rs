//! Detections in the web app end to end: `vigil up` with the detector on a
//! camera that shows COCO objects (the darknet dog photo moving across a
//! background, played from a file in a loop) and a synthetic one; the API
//! (recorded detections, object events, thumbnails, permissions, bad
//! parameters); then chromium (crates/web/tests/browser/detect.mjs): live
//! boxes, the events page, playback from an event.
//!
//! Needs the model (scripts/fetch-model), ffmpeg and the darknet photos
//! (Debian's `darknet` data); without them it says so and passes.

mod common;

use common::*;
use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const ADMIN_PW: &str = "admin-password-1";
const VIEWER_PW: &str = "viewer-password-1";
const PHOTO: &str = "/usr/share/darknet/data/dog.jpg";

/// What this test needs beyond the build; `None` when all is there.
fn missing() -> Option<String> {
    let model = detect::model::default_model_path();
    let runtime = detect::model::default_runtime_path();
    for p in [model.as_path(), runtime.as_path(), Path::new(PHOTO)] {
        if !p.exists() {
            return Some(format!("no {}", p.display()));
        }
    }
    Command::new("ffmpeg").arg("-version").output().is_err().then(|| "no ffmpeg".to_string())
}

/// 20 s of the dog photo moving across a plain background, H.264, a key
/// frame every second.
fn make_clip(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "color=c=0x556655:s=640x360:r=10", "-i", PHOTO])
        .args(["-filter_complex", "[1:v]scale=360:270[d];[0:v][d]overlay=x='20+t*12':y=45", "-t", "20"])
        .args(["-c:v", "libx264", "-g", "10", "-bf", "0", "-pix_fmt", "yuv420p"])
        .arg(path)
        .output()
        .expect("ffmpeg");
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
}

fn is_jpeg(b: &[u8]) -> bool {
    b.starts_with(&[0xff, 0xd8]) && b.ends_with(&[0xff, 0xd9])
}

/// `file`'s and ffprobe's view of an image: ("JPEG image data, ...", "mjpeg,160,120").
fn inspect_image(path: &Path) -> (String, String) {
    let file = Command::new("file").arg("-b").arg(path).output().expect("file");
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name,width,height"])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    assert!(probe.status.success(), "ffprobe: {}", String::from_utf8_lossy(&probe.stderr));
    (String::from_utf8_lossy(&file.stdout).trim().into(), String::from_utf8_lossy(&probe.stdout).trim().into())
}

#[test]
fn detections_events_thumbnails_and_browser() {
    if let Some(what) = missing() {
        panic!("{what}: scripts/setup (scripts/fetch-model) installs it");
    }
    let dir = temp_dir("web-detect");
    let clip = dir.join("dog.mp4");
    make_clip(&clip);
    let cfg = dir.join("vigil.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[[cameras]]
id = "d1"
source = "file:{}?loop"
[[cameras]]
id = "d2"
source = "synthetic:width=160,height=96,fps=5,gop=5"
[archive]
min_free_bytes = 0
[detect]
sample = "2/s"
"#,
            clip.display()
        ),
    )
    .unwrap();
    let (cfg, data) = (cfg.to_str().unwrap(), dir.join("data"));
    let data = data.to_str().unwrap();
    let base = ["--config", cfg, "--data-dir", data];
    for (args, pw) in [(&["admin", "--role", "admin"][..], ADMIN_PW), (&["viewer1", "--cameras", "d1"][..], VIEWER_PW)]
    {
        let (code, _, err) = vigil_stdin(&[&["user", "add"], args, &base].concat(), &format!("{pw}\n"));
        assert_eq!(code, 0, "{err}");
    }
    let (mut up, web) = start_up(&base, &dir);
    let started = bus::now_us();

    let bearer = format!("Bearer {}", login(web, "admin", ADMIN_PW));
    let get = |path: &str| http(web, "GET", path, &[("Authorization", bearer.as_str())], "");
    let vbearer = format!("Bearer {}", login(web, "viewer1", VIEWER_PW));
    let vget = |path: &str| http(web, "GET", path, &[("Authorization", vbearer.as_str())], "");

    // The detector finds the dog (and bicycle, car or truck) and tracks it:
    // records, then an object event.
    let deadline = Instant::now() + Duration::from_secs(150);
    let (records, events) = loop {
        let range = format!("from={}&to={}", started - 1_000_000, bus::now_us());
        let (code, _, body) = get(&format!("/api/cameras/d1/detections?{range}"));
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        let records = json(&body)["records"].as_array().cloned().unwrap_or_default();
        let (code, _, body) = get(&format!("/api/events?camera=d1&{range}"));
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        let events = json(&body).as_array().cloned().unwrap_or_default();
        let found = records.iter().any(|r| r["objects"].as_array().is_some_and(|o| !o.is_empty()));
        if found && !events.is_empty() {
            break (records, events);
        }
        let log = std::fs::read_to_string(dir.join("up.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "no detections and events: {} records, {events:?}\n{log}", records.len());
        std::thread::sleep(Duration::from_secs(2));
    };
    eprintln!("{} records, {} events", records.len(), events.len());

    // Records: d1's only, each once, in capture order, boxes in the frame.
    let mut seqs = HashSet::new();
    let mut last_us = i64::MIN;
    let mut classes = HashSet::new();
    for r in &records {
        assert_eq!(r["camera"], "d1");
        assert!(seqs.insert(r["seq"].as_u64().unwrap()), "seq {} twice", r["seq"]);
        let at = r["capture_us"].as_i64().unwrap();
        assert!(at >= last_us, "records out of order");
        last_us = at;
        assert_eq!((r["width"].as_u64(), r["height"].as_u64()), (Some(640), Some(360)));
        for o in r["objects"].as_array().unwrap() {
            let b: Vec<f64> = o["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert!(b.len() == 4 && b[0] < b[2] && b[1] < b[3] && b[2] <= 641.0 && b[3] <= 361.0, "box {b:?}");
            classes.insert(o["class"].as_str().unwrap().to_string());
        }
    }
    assert!(classes.iter().any(|c| ["dog", "bicycle", "car", "truck"].contains(&c.as_str())), "classes {classes:?}");

    // Events: object events of d1, newest first, each once.
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "an event twice");
    let times: Vec<i64> = events.iter().map(|e| e["time_us"].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "not newest first: {times:?}");
    for e in &events {
        assert_eq!(e["camera"], "d1");
        assert!(e["kind"] == "object-appeared" || e["kind"] == "object-left", "{e}");
    }
    let event = &events[0];
    let class = event["object"]["class"].as_str().unwrap();
    let (code, _, body) = get(&format!("/api/events?camera=d1&class={class}&from={}", started - 1_000_000));
    assert_eq!(code, 200);
    assert!(json(&body).as_array().unwrap().iter().all(|e| e["object"]["class"] == class));
    let (_, _, body) = get(&format!("/api/events?limit=1&from={}", started - 1_000_000));
    assert_eq!(json(&body).as_array().unwrap().len(), 1);
    let (_, _, body) = get(&format!("/api/events?class=no-such-class&from={}", started - 1_000_000));
    assert_eq!(json(&body), serde_json::json!([]));

    // Thumbnails of the event's best sighting: a JPEG that file and ffprobe read.
    let best = &event["object"]["best"];
    let bbox: Vec<String> =
        best["box"].as_array().unwrap().iter().map(|v| format!("{:.0}", v.as_f64().unwrap())).collect();
    let thumb = format!("/api/cameras/d1/thumbnail?seq={}&box={}", best["seq"], bbox.join(","));
    let (code, head, jpeg) = get(&thumb);
    assert_eq!(code, 200, "{thumb}: {head} {}", String::from_utf8_lossy(&jpeg));
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: image/jpeg") && head.contains("cache-control: private"), "{head}");
    assert!(is_jpeg(&jpeg), "not a JPEG: {} bytes", jpeg.len());
    let f = dir.join("thumb.jpg");
    std::fs::write(&f, &jpeg).unwrap();
    let (kind, probe) = inspect_image(&f);
    assert!(kind.starts_with("JPEG image data"), "file: {kind}");
    assert_eq!(probe, "mjpeg,160,120", "a 4:3 crop around the box");
    let (code, _, whole) = get(&format!("/api/cameras/d1/thumbnail?at={}", best["time_us"]));
    assert!(code == 200 && is_jpeg(&whole), "thumbnail by time: {code}");
    std::fs::write(&f, &whole).unwrap();
    assert_eq!(inspect_image(&f).1, "mjpeg,160,90", "the whole 16:9 frame");
    for (path, want) in [
        ("/api/cameras/d1/thumbnail?seq=999999999", 404),
        ("/api/cameras/d1/thumbnail?at=1000000", 404),
        ("/api/cameras/d1/thumbnail", 400),
        ("/api/cameras/d1/thumbnail?seq=1&at=1", 400),
        ("/api/cameras/d1/thumbnail?seq=1&box=1,2,3", 400),
        ("/api/cameras/d1/thumbnail?seq=1&box=5,5,1,1", 400),
        ("/api/cameras/d1/thumbnail?seq=abc", 400),
        ("/api/cameras/nope/thumbnail?seq=1", 404),
        ("/api/cameras/d1/detections?from=10&to=5", 400),
        ("/api/cameras/d1/detections?from=0&to=90000000000", 400),
        ("/api/cameras/d1/detections?from=abc", 400),
        ("/api/cameras/nope/detections", 404),
        ("/api/events?from=10&to=5", 400),
        ("/api/events?limit=0", 400),
        ("/api/events?limit=5000", 400),
        ("/api/events?camera=nope", 404),
    ] {
        assert_eq!(get(path).0, want, "{path}");
    }
    assert_eq!(http(web, "GET", "/api/events", &[], "").0, 401);

    // A viewer sees only their camera.
    for path in ["/api/cameras/d2/detections", "/api/cameras/d2/thumbnail?seq=1", "/api/events?camera=d2"] {
        let (code, _, body) = vget(path);
        assert_eq!(code, 403, "{path}");
        assert_eq!(json(&body)["error"], "no permission for camera d2");
    }
    let (code, _, body) = vget(&format!("/api/events?from={}", started - 1_000_000));
    assert_eq!(code, 200);
    assert!(json(&body).as_array().unwrap().iter().all(|e| e["camera"] == "d1"));
    assert_eq!(vget(&thumb).0, 200);

    // Playback says where its media time starts (the web app draws boxes by it).
    let (from, to) = (best["time_us"].as_i64().unwrap(), best["time_us"].as_i64().unwrap() + 2_000_000);
    let (code, head, _) = get(&format!("/api/cameras/d1/recording.mp4?from={from}&to={to}"));
    let start: i64 = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-vigil-start-us:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no X-Vigil-Start-Us: {code} {head}"));
    assert!(start <= from && from - start <= 1_100_000, "start {start} for from {from}: the key frame before");

    // The browser.
    let web_url = format!("http://{web}/");
    run_browser("detect.mjs", &[("VIGIL_URL", &web_url), ("ADMIN_PASSWORD", ADMIN_PW), ("CAMERA", "d1")]);

    assert!(up.stop(Duration::from_secs(30)).is_some_and(|s| s.success()), "vigil up did not stop cleanly");
    let _ = std::fs::remove_dir_all(&dir);
}
