//! The web app end to end: `vigil up` with three cameras (H.264 with a sub
//! stream, H.264, MJPEG) and two users; the JSON API without a browser
//! (auth failures, bad parameters, exports, HLS read by ffmpeg); then
//! Debian's chromium driven by playwright-core (crates/web/tests/browser).

mod common;

use common::*;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

const ADMIN_PW: &str = "admin-password-1";
const VIEWER_PW: &str = "viewer-password-1";

const CONFIG: &str = r#"
[[cameras]]
id = "w1"
source = "synthetic:width=320,height=180,fps=15,gop=15"
sub = "synthetic:width=160,height=96,fps=15,gop=15"
[[cameras]]
id = "w2"
source = "synthetic:width=320,height=180,fps=15,gop=15"
[[cameras]]
id = "w3"
source = "synthetic:width=320,height=180,fps=5,codec=mjpeg"
[archive]
min_free_bytes = 0
"#;

fn login(web: SocketAddr, user: &str, pw: &str) -> (String, String) {
    let (code, head, body) = http(web, "POST", "/api/login", &[], &format!(r#"{{"user":"{user}","password":"{pw}"}}"#));
    assert_eq!(code, 200, "login {user}: {}", String::from_utf8_lossy(&body));
    let token = json(&body)["token"].as_str().unwrap().to_string();
    let cookie = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().starts_with("set-cookie:").then(|| l[11..].trim().to_string()))
        .expect("a session cookie");
    (token, cookie.split(';').next().unwrap().to_string())
}

fn ffprobe_frames(input: &str, extra: &[&str]) -> (String, u64) {
    let out = Command::new("ffprobe")
        .args(extra)
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries"])
        .args(["stream=codec_name,nb_read_frames", "-of", "csv=p=0", input])
        .output()
        .expect("ffprobe (scripts/setup installs ffmpeg)");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success(), "ffprobe {input}: {}", String::from_utf8_lossy(&out.stderr));
    // One line per stream; an HLS input lists its stream under its program too.
    let first = text.lines().next().unwrap_or_default();
    let (codec, n) = first.split_once(',').unwrap_or((first, "0"));
    let n = n.trim().parse().unwrap_or(0);
    if n == 0 {
        eprintln!("ffprobe {input}: {text:?} {}", String::from_utf8_lossy(&out.stderr));
    }
    (codec.to_string(), n)
}

#[test]
fn web_app_api_and_browser() {
    let dir = temp_dir("web");
    let cfg = dir.join("vigil.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let (cfg, data) = (cfg.to_str().unwrap(), dir.join("data"));
    let data = data.to_str().unwrap();
    let base = ["--config", cfg, "--data-dir", data];
    let add = |args: &[&str], pw: &str| {
        let (code, _, err) = vigil_stdin(&[&["user", "add"], args, &base].concat(), &format!("{pw}\n"));
        assert_eq!(code, 0, "{err}");
    };
    add(&["admin", "--role", "admin"], ADMIN_PW);
    add(&["viewer1", "--role", "viewer", "--cameras", "w1"], VIEWER_PW);
    let (code, _, err) = vigil_stdin(&[&["user", "add", "x", "--role", "boss"], &base[..]].concat(), "password-123\n");
    assert!(code == 1 && err.contains("unknown role \"boss\""), "{err}");

    let (mut up, web) = start_up(&base, &dir);

    // Without a browser: health and metrics are open and show no video.
    assert_eq!(http(web, "GET", "/healthz", &[], "").0, 200);
    assert_eq!(http(web, "GET", "/metrics", &[], "").0, 200);
    // Everything else needs a login.
    let (code, _, body) = http(web, "GET", "/api/cameras", &[], "");
    assert_eq!((code, json(&body)["error"].as_str()), (401, Some("login required")));
    let (code, _, body) = http(web, "POST", "/api/login", &[], r#"{"user":"admin","password":"wrong-password"}"#);
    assert_eq!((code, json(&body)["error"].as_str()), (401, Some("wrong user or password")));
    let (code, _, _) = http(web, "POST", "/api/login", &[], "{not json");
    assert!((400..500).contains(&code), "bad login body: {code}");

    let (admin, admin_cookie) = login(web, "admin", ADMIN_PW);
    let bearer = format!("Bearer {admin}");
    let auth = [("Authorization", bearer.as_str())];
    let get = |path: &str| http(web, "GET", path, &auth, "");
    let cams = json(&get("/api/cameras").2);
    let ids: Vec<&str> = cams.as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["w1", "w2", "w3"]);
    assert_eq!(get("/api/cameras/nope/ranges").0, 404);
    assert_eq!(get("/api/cameras/w1/ranges?from=10&to=5").0, 400);
    assert_eq!(get("/api/cameras/w1/ranges?from=abc").0, 400);
    let huge = "/api/cameras/w1/export?from=-9223372036854775808&to=9223372036854775807";
    assert_eq!(get(huge).0, 400, "no overflow past the 24 h limit");
    assert_eq!(get("/api/cameras/w1/export?from=1&to=2").0, 404, "nothing recorded in 1970");
    let topics = json(&get("/api/topics").2);
    let frames = topics.as_array().unwrap().iter().find(|t| t["name"] == "vigil.frames").expect("frames topic");
    assert_eq!(frames["delivery"], "exactly-once");
    // Cookie sessions must prove same-origin on state changes (CSRF).
    let cookie = [("Cookie", admin_cookie.as_str())];
    assert_eq!(http(web, "GET", "/api/me", &cookie, "").0, 200);
    assert_eq!(http(web, "POST", "/api/logout", &cookie, "").0, 403);

    let (viewer, _) = login(web, "viewer1", VIEWER_PW);
    let vb = format!("Bearer {viewer}");
    let vget = |path: &str| http(web, "GET", path, &[("Authorization", vb.as_str())], "");
    let vcams = json(&vget("/api/cameras").2);
    assert_eq!(vcams.as_array().unwrap().len(), 1);
    assert_eq!(vget("/api/cameras/w2/ranges").0, 403);
    assert_eq!(vget("/api/cameras/w2/export").0, 403);
    assert_eq!(vget("/api/latency").0, 403, "admin only");

    // Let the archive fill, then export, play back and read HLS.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = json(&get("/api/status").2);
        let enough = s["cameras"].as_array().unwrap().iter().all(|c| c["frames"].as_u64().unwrap_or(0) > 60);
        if enough {
            break;
        }
        assert!(Instant::now() < deadline, "archive did not fill: {s}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let now = bus::now_us();
    let range = format!("from={}&to={}", now - 6_000_000, now);
    let (code, head, mp4) = get(&format!("/api/cameras/w2/export?{range}"));
    assert_eq!(code, 200, "{head}");
    assert!(head.contains("attachment"), "{head}");
    let f = dir.join("export.mp4");
    std::fs::write(&f, &mp4).unwrap();
    let (codec, n) = ffprobe_frames(f.to_str().unwrap(), &[]);
    assert!(codec == "h264" && n >= 60, "export: {codec} {n} frames");
    let (code, _, mjpeg) = get(&format!("/api/cameras/w3/export?{range}"));
    assert!(code == 200 && mjpeg.starts_with(&[0xff, 0xd8]), "mjpeg export {code}");

    let (code, _, rec) = get(&format!("/api/cameras/w2/recording.mp4?{range}"));
    assert_eq!(code, 200);
    let f = dir.join("recording.mp4");
    std::fs::write(&f, &rec).unwrap();
    let (codec, n) = ffprobe_frames(f.to_str().unwrap(), &[]);
    assert!(codec == "h264" && n >= 60, "recording: {codec} {n} frames");

    let header = format!("Authorization: {bearer}\r\n");
    let hls = format!("http://{web}/api/cameras/w2/hls.m3u8?{range}");
    let (codec, n) = ffprobe_frames(&hls, &["-headers", &header]);
    assert!(codec == "h264" && n >= 60, "HLS: {codec} {n} frames");
    let (code, _, _) = http(web, "GET", &format!("/api/cameras/w2/hls.m3u8?{range}"), &[], "");
    assert_eq!(code, 401, "HLS needs a login too");
    // Players that cannot send headers (VLC) put the token in the URL.
    let (codec, n) = ffprobe_frames(&format!("{hls}&token={admin}"), &[]);
    assert!(codec == "h264" && n >= 60, "HLS with ?token=: {codec} {n} frames");
    let (code, _, _) = http(web, "GET", &format!("/api/cameras/w2/hls.m3u8?{range}&token=bad"), &[], "");
    assert_eq!(code, 401, "a wrong token in the URL");

    // The browser, in both live modes.
    let downloads = dir.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    for mode in ["mse", "webcodecs"] {
        let out = Command::new("node")
            .arg(manifest_dir().join("../web/tests/browser/live.mjs"))
            .env("VIGIL_URL", format!("http://{web}/"))
            .env("ADMIN_PASSWORD", ADMIN_PW)
            .env("VIEWER_PASSWORD", VIEWER_PW)
            .env("CAMERAS", "w1,w2,w3")
            .env("DOWNLOAD_DIR", &downloads)
            .env("MODE", mode)
            .output()
            .expect("node (scripts/setup installs it)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "browser ({mode}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("results");
        eprintln!("browser {mode}: {r}");
        assert_eq!(r["ok"], true);
        assert!(r["wrong_password"].as_str().unwrap().contains("wrong user or password"));
        let (codec, n) = ffprobe_frames(r["download"].as_str().unwrap(), &[]);
        assert!(codec == "h264" && n > 0, "browser download: {codec} {n}");
    }
    assert!(up.stop(Duration::from_secs(30)).is_some_and(|s| s.success()), "vigil up did not stop cleanly");
    let _ = std::fs::remove_dir_all(&dir);
}
