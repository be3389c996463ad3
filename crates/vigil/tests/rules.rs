//! Rules drawn in the web app reach a running processor without a
//! restart: `vigil serve` checks and publishes them to `vigil.rules`, and
//! `vigil process` follows the topic. An admin replaces the config file's
//! line with a zone; frames of people walking through it then give zone
//! events and counts, the config's line none; a viewer may read the rules
//! but not change them; a bad rule is refused, naming it; `DELETE` gives
//! the config's rules back. In chromium (crates/web/tests/browser/rules.mjs):
//! the zone over the video, the counts chart, the event strip, an admin
//! drawing and saving a zone, the events page of a rule.

mod common;

use common::*;
use rdkafka::producer::{BaseRecord, Producer};
use std::time::{Duration, Instant};

const ADMIN_PW: &str = "admin-password-1";
const VIEWER_PW: &str = "viewer-password-1";

const CONFIG: &str = r#"
[[cameras]]
id = "cam"
source = "synthetic:"

[process]
checkpoint_interval_ms = 200
lateness_s = 1

[[process.lines]]
camera = "cam"
name = "gate"
start = [300, 0]
end = [300, 360]
"#;

/// The rule events on `vigil.events`, as `kind rule`.
fn rule_events(brokers: &str) -> Vec<String> {
    read_by_id(brokers, bus::topics::EVENTS)
        .values()
        .filter_map(|copies| serde_json::from_slice::<schema::Event>(&copies[0]).ok())
        .filter_map(|e| e.rule.map(|r| format!("{} {}", e.kind, r.rule)))
        .collect()
}

#[test]
fn rules_drawn_in_the_web_app_apply_without_a_restart() {
    let dir = temp_dir("rules");
    let (addr, web) = (free_port(), free_port());
    let listen = addr.to_string();
    let config = dir.join("vigil.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let cfg = config.to_str().unwrap();
    let data = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let _broker = Vigil::start(
        "broker",
        &["broker", "--listen", &listen, "--data-dir", &data("broker"), "--metrics-listen", "off"],
        &dir,
    );
    wait_port(addr, Duration::from_secs(30));
    let pm = free_port();
    let pm_s = pm.to_string();
    let p_args =
        ["process", "--brokers", &listen, "--config", cfg, "--data-dir", &data("p"), "--metrics-listen", &pm_s];
    let _processor = Vigil::start("process", &p_args, &dir);
    let web_data = data("web");
    let base = ["--config", cfg, "--data-dir", web_data.as_str()];
    for (args, pw) in [(&["admin", "--role", "admin"][..], ADMIN_PW), (&["viewer", "--cameras", "cam"][..], VIEWER_PW)]
    {
        let (code, _, err) = vigil_stdin(&[&["user", "add"], args, &base].concat(), &format!("{pw}\n"));
        assert_eq!(code, 0, "{err}");
    }
    let web_s = web.to_string();
    let s_args = ["serve", "--brokers", &listen, "--listen", &web_s, "--metrics-listen", "off"];
    let _serve = Vigil::start("serve", &[&s_args[..], &base].concat(), &dir);
    wait_port(web, Duration::from_secs(60));
    wait_owned(&[pm], "process", bus::topics::DETECTIONS, Duration::from_secs(60));
    let bearer = |user, pw| format!("Bearer {}", login(web, user, pw));
    let (admin, viewer) = (bearer("admin", ADMIN_PW), bearer("viewer", VIEWER_PW));
    let path = "/api/cameras/cam/rules";
    // Recent capture times: the web app shows the last hours.
    let t0 = (bus::now_us() / 60_000_000 - 2) * 60_000_000;

    // The config file's rules, to anyone who may see the camera.
    let (code, _, body) = http(web, "GET", path, &[("Authorization", &viewer)], "");
    assert_eq!(code, 200);
    let r = json(&body);
    assert_eq!((r["source"].as_str(), r["lines"][0]["name"].as_str()), (Some("config"), Some("gate")), "{r}");

    // Only an admin changes them; a bad rule is refused, naming it.
    let yard = r#"{"zones":[{"name":"yard","points":[[100,100],[200,100],[200,200],[100,200]],"classes":["person"],"min_frames":1}]}"#;
    let (code, _, _) = http(web, "PUT", path, &[("Authorization", &viewer)], yard);
    assert_eq!(code, 403, "a viewer");
    let bad = r#"{"zones":[{"name":"tiny","points":[[0,0],[1,1]]}]}"#;
    let (code, _, body) = http(web, "PUT", path, &[("Authorization", &admin)], bad);
    assert_eq!(code, 400);
    assert!(json(&body)["error"].as_str().unwrap().contains("zone \"tiny\" of camera \"cam\""), "{}", json(&body));
    let (code, _, body) = http(web, "PUT", path, &[("Authorization", &admin)], yard);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let (_, _, body) = http(web, "GET", path, &[("Authorization", &viewer)], "");
    let r = json(&body);
    assert_eq!((r["source"].as_str(), r["by"].as_str()), (Some("web"), Some("admin")), "{r}");
    assert_eq!(r["lines"].as_array().map(Vec::len), Some(0), "the drawn rules replace the config's: {r}");

    // The running processor applies them to the frames that follow.
    std::thread::sleep(Duration::from_secs(1));
    let producer = camera_producer(&bus::KafkaConfig::new(listen.clone()));
    let mut last = walking(0, 4, t0);
    for seq in 0..160 {
        last = walking(seq, 4, t0);
        producer
            .send(BaseRecord::to(bus::topics::DETECTIONS).key("cam").payload(&serde_json::to_vec(&last).unwrap()))
            .unwrap();
    }
    // A frame two minutes on closes the minutes.
    last.seq += 1000;
    last.capture_us += 120_000_000;
    last.id = schema::record_id("cam", last.seq, "m");
    last.objects.clear();
    producer
        .send(BaseRecord::to(bus::topics::DETECTIONS).key("cam").payload(&serde_json::to_vec(&last).unwrap()))
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let events = loop {
        let e = rule_events(&listen);
        if e.iter().filter(|e| e.as_str() == "zone-entered yard").count() >= 4 || Instant::now() > deadline {
            break e;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(events.iter().filter(|e| e.as_str() == "zone-entered yard").count(), 4, "{events:?}");
    assert!(!events.iter().any(|e| e.ends_with(" gate")), "the config's line is not in effect: {events:?}");

    // Counts, through the web app.
    let q = format!("/api/cameras/cam/counts?from={}&to={}", t0 - 60_000_000, t0 + 300_000_000);
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let (code, _, body) = http(web, "GET", &q, &[("Authorization", &viewer)], "");
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        let rows = json(&body);
        let entries: u64 = rows
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["rule"] == "yard")
            .map(|c| c["entries"].as_u64().unwrap())
            .sum();
        if entries == 4 || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let entries: u64 =
        rows.as_array().unwrap().iter().filter(|c| c["rule"] == "yard").map(|c| c["entries"].as_u64().unwrap()).sum();
    assert_eq!(entries, 4, "{rows}");

    // The same in a browser; an admin draws a zone there.
    let url = format!("http://{web}/");
    let got = run_browser("rules.mjs", &[("VIGIL_URL", &url), ("ADMIN_PASSWORD", ADMIN_PW), ("CAMERA", "cam")]);
    eprintln!("browser: {got}");
    assert_eq!(got["counts"]["yard"], 4, "{got}");
    assert_eq!(got["source"], "web", "{got}");
    // Corners clicked at a quarter and three quarters of the picture as
    // shown: in the frame's pixels (640 x 360), within a pixel or two.
    let porch: Vec<[f64; 2]> = serde_json::from_value(got["porch"].clone()).unwrap();
    for (p, want) in porch.iter().zip([[160.0, 90.0], [480.0, 90.0], [320.0, 270.0]]) {
        assert!(
            (p[0] - want[0]).abs() <= 3.0 && (p[1] - want[1]).abs() <= 3.0,
            "porch corner {p:?}, want {want:?}: {got}"
        );
    }
    let kinds: Vec<String> = serde_json::from_value(got["rule_events"].clone()).unwrap();
    assert_eq!(kinds.iter().filter(|k| *k == "zone-entered").count(), 4, "{got}");
    let (_, _, body) = http(web, "GET", path, &[("Authorization", &admin)], "");
    let names: Vec<String> =
        json(&body)["zones"].as_array().unwrap().iter().map(|z| z["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["yard", "porch"], "saved through the API");

    // Back to the config file's.
    let (code, _, _) = http(web, "DELETE", path, &[("Authorization", &admin)], "");
    assert_eq!(code, 204);
    let (_, _, body) = http(web, "GET", path, &[("Authorization", &admin)], "");
    assert_eq!(json(&body)["source"], "config");
    let _ = std::fs::remove_dir_all(&dir);
}
