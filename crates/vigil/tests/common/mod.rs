//! Helpers shared by the end-to-end tests: temp dirs, free ports, the
//! embedded broker, child `vigil` processes that are always cleaned up.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// This crate's directory, as cargo tells the test at run time (a test
/// binary built in another checkout and found fresh in a shared target
/// dir would carry that checkout's compile-time path).
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

/// A fresh directory of this test's own: two tests (threads of one test
/// binary) that ask for the same name still get different directories.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("vigil-test-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

pub async fn embedded(dir: &Path) -> broker::EmbeddedBroker {
    broker::EmbeddedBroker::start(&broker::BrokerConfig {
        data_dir: dir.to_path_buf(),
        listen: free_port(),
        maintenance_interval: Duration::from_secs(1),
    })
    .await
    .expect("embedded broker starts")
}

pub fn kafka(addr: SocketAddr) -> bus::KafkaConfig {
    let mut k = bus::KafkaConfig::new(addr.to_string());
    k.replication_factor = 1;
    k
}

/// An idempotent producer for a test's own camera thread (frames it
/// publishes without ingest).
pub fn camera_producer(kafka: &bus::KafkaConfig) -> rdkafka::producer::BaseProducer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("enable.idempotence", "true")
        .create()
        .unwrap()
}

/// A child `vigil` process, killed (SIGKILL) when dropped.
pub struct Vigil {
    pub child: Child,
    pub name: String,
}

impl Vigil {
    pub fn start(name: &str, args: &[&str], log: &Path) -> Vigil {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log.join(format!("{name}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(args)
            // VIGIL_TEST_LOG=debug,... for more (librdkafka's debug lines too).
            .env("VIGIL_LOG", std::env::var("VIGIL_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn vigil");
        Vigil { child, name: name.to_string() }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `patience` for a clean exit.
    pub fn stop(&mut self, patience: Duration) -> Option<std::process::ExitStatus> {
        unsafe_kill(self.child.id(), 15);
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        None
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

pub fn wait_port(addr: SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing listens on {addr} after {within:?}");
}

/// Runs `vigil ARGS` to completion (bounded) and returns (exit code, stdout, stderr).
pub fn vigil(args: &[&str]) -> (i32, String, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vigil");
    // Its output is read while it runs (a large one would fill the pipe
    // and stall it); a watchdog ends it after a minute.
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let late = done_rx.recv_timeout(Duration::from_secs(60)).is_err();
        if late {
            unsafe_kill(pid, 9);
        }
        late
    });
    let out = child.wait_with_output().unwrap();
    let _ = done_tx.send(());
    assert!(!watchdog.join().unwrap(), "vigil {args:?} did not finish in 60 s");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Every frame on `topic`, from the beginning, until `n` arrived or `idle` passed without one.
pub async fn read_all(
    k: &bus::KafkaConfig,
    topic: &bus::TopicSpec,
    partitions: i32,
    idle: Duration,
) -> (Vec<bus::Delivered>, bus::Metrics) {
    let metrics = bus::Metrics::default();
    let mut r = bus::FrameReader::assign(k, topic, partitions, rdkafka::Offset::Beginning, &metrics).unwrap();
    let mut out = Vec::new();
    while let Ok(Ok(d)) = tokio::time::timeout(idle, r.next()).await {
        out.push(d);
    }
    (out, metrics)
}

/// (camera, stream, seq) of every line of an ack log.
pub fn acked(path: &Path) -> Vec<(String, String, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (cam, stream, seq) = (f.next()?, f.next()?, f.next()?.parse().ok()?);
            Some((cam.to_string(), stream.to_string(), seq))
        })
        .collect()
}

/// `GET path` over plain HTTP/1.0; the body, or an empty string.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

/// The value of one Prometheus series in `text`, e.g. `name{a="b"}`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

/// Resolves once `rx` reads true: a shutdown signal to hand to a role.
pub async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Waits (bounded) until every frame in `acked` (camera, seq) is in the
/// archive of data dir `data_dir` (frames the broker took but ingest died
/// before logging may be archived too, so a count would not do).
pub fn wait_archived(data_dir: &Path, acked: &std::collections::BTreeSet<(String, u64)>, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let archived = archived_seqs(data_dir);
        if acked.iter().all(|k| archived.contains(k)) {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The exactly-once verdict on a stopped archive: `vigil check` finds no
/// missing or duplicate frame and no byte without its index entry or the
/// reverse, and every frame in `acked` (camera, seq) is archived.
pub fn assert_archive_exact(data_dir: &Path, acked: &std::collections::BTreeSet<(String, u64)>) {
    assert_archives_exact(&[data_dir], acked);
}

/// The same verdict on one archive kept in several data dirs (archivers
/// of one group, a dir each), checked as one by `vigil check --data-dir A
/// --data-dir B`. Returns check's totals.
pub fn assert_archives_exact(
    data_dirs: &[&Path],
    acked: &std::collections::BTreeSet<(String, u64)>,
) -> std::collections::BTreeMap<&'static str, u64> {
    let mut args = vec!["check", "--json"];
    for d in data_dirs {
        args.extend(["--data-dir", d.to_str().unwrap()]);
    }
    let (code, out, err) = vigil(&args);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("check output: {out} {err}"));
    let mut totals = std::collections::BTreeMap::new();
    for c in report.as_array().unwrap() {
        for k in ["frames", "missing", "duplicates", "overlap", "without_data", "without_index_bytes"] {
            *totals.entry(k).or_insert(0) += c[k].as_u64().unwrap();
        }
    }
    eprintln!("check totals: {totals:?}");
    for k in ["missing", "duplicates", "without_data", "without_index_bytes"] {
        assert_eq!(totals[k], 0, "{k}: {out}");
    }
    assert_eq!(code, 0, "{err}");
    let archived: std::collections::BTreeSet<(String, u64)> = data_dirs.iter().flat_map(|d| archived_seqs(d)).collect();
    let lost: Vec<_> = acked.iter().filter(|k| !archived.contains(*k)).collect();
    assert!(lost.is_empty(), "{} acknowledged frames not archived, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);
    totals
}

/// (camera, seq) of every archived frame, read from the index without
/// writing to it (no pragma, no sync, no checkpoint).
pub fn archived_seqs_read_only(data_dir: &Path) -> std::collections::BTreeSet<(String, u64)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = archive::ArchiveConfig::new(data_dir);
        // An index without its tables (not created yet, or lost whole in a
        // power cut) holds no frame.
        let read = async { archive::index::Index::open_read_only(&cfg.dir.join("index.db")).await?.frames(None).await };
        match read.await {
            Ok(rows) => rows.into_iter().map(|r| (r.camera, r.seq)).collect(),
            Err(e) => {
                eprintln!("index {}: {e}: no frames", cfg.dir.display());
                Default::default()
            }
        }
    })
}

/// (camera, seq) of every archived frame, read from the index.
pub fn archived_seqs(data_dir: &Path) -> std::collections::BTreeSet<(String, u64)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = archive::ArchiveConfig::new(data_dir);
        let index = archive::open_index(&cfg.dir).await.unwrap();
        index.frames(None).await.unwrap().into_iter().map(|r| (r.camera, r.seq)).collect()
    })
}

/// One HTTP/1.1 request (`Connection: close`): (status, response headers, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    if !body.is_empty() {
        req += &format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    }
    req += "\r\n";
    req += body;
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[(split + 4).min(raw.len())..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { return out };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < eol + 2 + n {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[(eol + 4 + n).min(b.len())..];
    }
}

/// Runs `vigil ARGS` with `input` on stdin; (exit code, stdout, stderr).
pub fn vigil_stdin(args: &[&str], input: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vigil");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `vigil up` with `base` arguments (config, data dir) on free ports,
/// metrics on its web address; returns it once the web app listens.
pub fn start_up(base: &[&str], log: &Path) -> (Vigil, SocketAddr) {
    let (web, broker) = (free_port(), free_port());
    let (web_s, broker_s) = (web.to_string(), broker.to_string());
    let args = [&["up", "--listen", &web_s, "--broker-listen", &broker_s, "--metrics-listen", "off"], base].concat();
    let up = Vigil::start("up", &args, log);
    wait_port(web, Duration::from_secs(60));
    (up, web)
}

pub const DOG: &str = "/usr/share/darknet/data/dog.jpg";

/// A photo with a dog, a bicycle and a car/truck drifting right over a
/// plain background, `secs` long at 10 fps.
pub fn moving_dog(dir: &Path, secs: u32, codec: &[&str], out: &str) -> std::path::PathBuf {
    assert!(Path::new(DOG).exists(), "{DOG} missing: run scripts/setup (Debian package darknet)");
    let path = dir.join(out);
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", "color=c=0x556655:s=640x360:r=10", "-i", DOG])
        .args(["-filter_complex", "[1:v]scale=360:270[d];[0:v][d]overlay=x='20+t*6':y=45"])
        .args(["-t", &secs.to_string()])
        .args(codec)
        .arg(&path)
        .status()
        .unwrap();
    assert!(ok.success());
    path
}

pub fn model_installed() {
    let m = detect::model::ModelOptions::default();
    assert!(
        m.path.exists() && m.runtime.exists(),
        "model or ONNX Runtime missing ({}, {}): run scripts/fetch-model",
        m.path.display(),
        m.runtime.display()
    );
}

/// Runs a browser test script of crates/web/tests/browser with `env`
/// (bounded: 180 s) and returns the JSON of its last line; panics with its
/// output when it fails.
pub fn run_browser(script: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let mut cmd = Command::new("node");
    cmd.arg(manifest_dir().join("../web/tests/browser").join(script));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut node = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("node (scripts/setup installs it)");
    let deadline = Instant::now() + Duration::from_secs(180);
    while node.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = node.kill();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = node.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("results");
    eprintln!("{script}: {r}");
    assert_eq!(r["ok"], true, "{script}: {r}");
    r
}

/// Every record of `topic` (4 partitions), all copies, by id (records
/// without one, such as a camera's up/down events, by partition/offset).
pub fn read_by_id(brokers: &str, topic: &str) -> std::collections::BTreeMap<String, Vec<Vec<u8>>> {
    use rdkafka::Message;
    let kafka = bus::KafkaConfig::new(brokers.to_string());
    let range = bus::range::Range::all(topic, bus::Delivery::AtLeastOnce, 4, Duration::from_secs(30));
    let mut out: std::collections::BTreeMap<String, Vec<Vec<u8>>> = Default::default();
    bus::range::read(&kafka, &range, |m| {
        let id = bus::reader::record_id(m).map_or_else(|| format!("{}/{}", m.partition(), m.offset()), String::from);
        out.entry(id).or_default().push(m.payload().unwrap().to_vec());
    })
    .unwrap();
    out
}

/// Waits until the stage processes serving metrics at `metrics` own the
/// 4 partitions of `topic` between them.
pub fn wait_owned(metrics: &[SocketAddr], stage: &str, topic: &str, within: Duration) {
    let deadline = Instant::now() + within;
    let series = format!("vigil_stage_assigned_partitions{{stage=\"{stage}\",topic=\"{topic}\"}}");
    loop {
        let owned: f64 = metrics.iter().filter_map(|m| metric(&http_get(*m, "/metrics"), &series)).sum();
        if owned == 4.0 {
            return;
        }
        assert!(Instant::now() < deadline, "the {stage} processes own {owned} of 4 partitions after {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Frame `seq` of camera `cam`, half a second apart from `t0`: person k
/// (of `people`) walks from x 50 to 350 along y 150 from frame 40 k,
/// 10 px a frame (through a zone at x 100-200, across a line at x 300).
pub fn walking(seq: u64, people: u64, t0: i64) -> schema::Detections {
    let objects = (0..people)
        .filter_map(|k| {
            let step = seq.checked_sub(40 * k).filter(|s| *s <= 30)?;
            let x = 50.0 + 10.0 * step as f32;
            Some(schema::Object {
                object_id: Some(format!("cam/{}/0", 40 * k)),
                class: "person".into(),
                class_id: 0,
                score: 0.9,
                bbox: [x - 10.0, 110.0, x + 10.0, 150.0],
            })
        })
        .collect();
    schema::Detections {
        id: schema::record_id("cam", seq, "m"),
        camera: "cam".into(),
        seq,
        capture_us: t0 + seq as i64 * 500_000,
        model: "m".into(),
        source: schema::SourceFrame { topic: "vigil.frames".into(), partition: 0, offset: seq as i64 },
        width: 640,
        height: 360,
        objects,
        motion: None,
    }
}

/// A response body as JSON (a panic showing it when it is not).
pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

/// Logs `user` in to the web app at `web`: their API token.
pub fn login(web: SocketAddr, user: &str, pw: &str) -> String {
    let (code, _, body) = http(web, "POST", "/api/login", &[], &format!(r#"{{"user":"{user}","password":"{pw}"}}"#));
    assert_eq!(code, 200, "login {user}: {}", String::from_utf8_lossy(&body));
    json(&body)["token"].as_str().unwrap().to_string()
}
