//! Whole-video jobs in the web app end to end: `vigil up` (its collector,
//! no cameras to analyse) and chromium (crates/web/tests/browser/jobs.mjs):
//! a file uploaded on the Jobs page goes to Kafka in chunks, a collector
//! analyses it, the page shows it done, and the video plays with its boxes
//! and ids; then the API: the job list, results as a download, the video
//! by byte ranges, admins only.
//!
//! Needs the model (scripts/fetch-model), ffmpeg, chromium and the darknet
//! photos (scripts/setup installs them).

mod common;

use common::*;
use std::time::Duration;

const ADMIN_PW: &str = "admin-password-1";
const VIEWER_PW: &str = "viewer-password-1";

#[test]
fn upload_follow_and_play_a_job_in_the_browser() {
    model_installed();
    let dir = temp_dir("web-jobs");
    let clip = moving_dog(&dir, 4, &["-c:v", "mpeg4", "-q:v", "4"], "dog-walk.mkv");
    let cfg = dir.join("vigil.toml");
    std::fs::write(
        &cfg,
        "[[cameras]]\nid = \"c1\"\nsource = \"synthetic:width=160,height=96,fps=5,gop=5\"\n\
         [archive]\nmin_free_bytes = 0\n[detect]\nenabled = false\n",
    )
    .unwrap();
    let (cfg, data) = (cfg.to_str().unwrap(), dir.join("data"));
    let data = data.to_str().unwrap();
    let base = ["--config", cfg, "--data-dir", data];
    for (args, pw) in [(&["admin", "--role", "admin"][..], ADMIN_PW), (&["viewer1", "--cameras", "c1"][..], VIEWER_PW)]
    {
        let (code, _, err) = vigil_stdin(&[&["user", "add"], args, &base].concat(), &format!("{pw}\n"));
        assert_eq!(code, 0, "{err}");
    }
    let (mut up, web) = start_up(&base, &dir);

    let clip_s = clip.to_str().unwrap();
    let web_url = format!("http://{web}/");
    run_browser("jobs.mjs", &[("VIGIL_URL", &web_url), ("ADMIN_PASSWORD", ADMIN_PW), ("VIDEO", clip_s)]);

    // The API behind it.
    let bearer = format!("Bearer {}", login(web, "admin", ADMIN_PW));
    let get = |path: &str, extra: &[(&str, &str)]| {
        let mut h = vec![("Authorization", bearer.as_str())];
        h.extend_from_slice(extra);
        http(web, "GET", path, &h, "")
    };
    let (code, _, body) = get("/api/jobs", &[]);
    assert_eq!(code, 200);
    let jobs = json(&body)["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let id = jobs[0]["id"].as_str().unwrap().to_string();
    assert_eq!((jobs[0]["name"].as_str(), jobs[0]["state"].as_str()), (Some("dog-walk.mkv"), Some("done")));
    assert_eq!(id, jobs::sha256_hex(&std::fs::read(&clip).unwrap()), "the same id as `vigil submit` gives");
    let (code, head, body) = get(&format!("/api/jobs/{id}/results?download=1"), &[]);
    assert_eq!(code, 200);
    assert!(head.to_ascii_lowercase().contains("content-disposition: attachment"), "{head}");
    let results = json(&body);
    assert_eq!(results["frames"].as_array().unwrap().len(), 40);
    assert_eq!(results["summary"]["name"], "dog-walk.mkv");
    let (code, head, body) = get(&format!("/api/jobs/{id}/video"), &[("Range", "bytes=0-99")]);
    assert_eq!(code, 206, "{head}");
    assert_eq!(body.len(), 100);
    assert_eq!(&body[4..8], b"ftyp", "an MP4");
    assert!(head.to_ascii_lowercase().contains("content-range: bytes 0-99/"), "{head}");
    assert_eq!(get(&format!("/api/jobs/{id}/video"), &[("Range", "bytes=999999999-")]).0, 416);
    assert_eq!(get("/api/jobs/no-such-job/video", &[]).0, 404);

    // Viewers see no jobs; nobody uploads without a name or CSRF header.
    let vbearer = format!("Bearer {}", login(web, "viewer1", VIEWER_PW));
    assert_eq!(http(web, "GET", "/api/jobs", &[("Authorization", vbearer.as_str())], "").0, 403);
    let post = |path: &str| http(web, "POST", path, &[("Authorization", bearer.as_str())], "not a video");
    assert_eq!(post("/api/jobs").0, 400, "no name");
    let (code, _, body) = post("/api/jobs?name=notes.txt");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));

    assert!(up.stop(Duration::from_secs(30)).is_some_and(|s| s.success()), "vigil up did not stop cleanly");
    let _ = std::fs::remove_dir_all(&dir);
}
