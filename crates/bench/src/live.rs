//! `vigil-bench live`: glass-to-glass latency of live video, and how many
//! viewers one server holds.
//!
//! Everything runs on loopback: the embedded broker, N synthetic cameras,
//! ingest and the web server in this process.
//!
//! 1. Glass to glass: headless chromium (crates/web/tests/browser/latency.mjs)
//!    shows the grid of every camera, in each live mode; the page reports,
//!    per frame it presents, now − capture time (the capture time travels
//!    inside the frame); the server collects the reports (`/api/latency`).
//! 2. Viewers: `vigil-bench viewers` child processes open K WebSockets
//!    (mode mse: the server muxes fMP4 per viewer) and time each frame's
//!    arrival against its capture time; the server's CPU is measured with
//!    K = 0 as the baseline in the same run.

use crate::ingest_path::start_broker;
use anyhow::{Context, Result, bail};
use bus::Metrics;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use vigil::config::Settings;

#[derive(clap::Args, Debug)]
pub struct LiveBenchArgs {
    #[arg(long, default_value_t = 16)]
    pub cameras: usize,
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Synthetic camera picture size (the cameras are encoded in this process).
    #[arg(long, default_value = "320x180")]
    pub size: String,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Viewer counts to try, in order; stops at the first over the target.
    #[arg(long, value_delimiter = ',', default_value = "1,10,25,50,100,200")]
    pub viewers: Vec<usize>,
    /// p99 target, milliseconds.
    #[arg(long, default_value_t = 150.0)]
    pub target_ms: f64,
    /// Skip the browser part (no chromium here).
    #[arg(long)]
    pub no_browser: bool,
}

#[derive(clap::Args, Debug)]
pub struct ViewersArgs {
    #[arg(long)]
    pub url: String,
    #[arg(long, value_delimiter = ',')]
    pub cameras: Vec<String>,
    #[arg(long)]
    pub viewers: usize,
    #[arg(long)]
    pub seconds: u64,
}

pub async fn live(mut s: Settings, a: LiveBenchArgs) -> Result<()> {
    let (w, h) = a.size.split_once('x').context("--size WIDTHxHEIGHT")?;
    if a.cameras == 0 || a.seconds == 0 {
        bail!("bench needs cameras and seconds");
    }
    let dir = std::env::temp_dir().join(format!("vigil-bench-live-{}", std::process::id()));
    let _broker = start_broker(&mut s, &dir).await?;
    s.data_dir = dir.clone();
    s.archive = archive::ArchiveConfig::new(&dir);
    s.kafka.ensure_topics(&s.plan).await?;
    // Pre-encoded loops: like real cameras, they cost this machine nothing,
    // so the CPU left is the server's and the browser's.
    let spec = format!("synthetic:width={w},height={h},fps={},gop={},replay={}", a.fps, a.fps, 2 * a.fps);
    s.cameras = (1..=a.cameras)
        .map(|i| -> Result<ingest::CameraSpec> {
            let main = ingest::source::SourceSpec::parse(&spec).map_err(anyhow::Error::msg)?;
            Ok(ingest::CameraSpec { id: format!("b{i:02}"), main, sub: None })
        })
        .collect::<Result<_>>()?;
    let ids: Vec<String> = s.cameras.iter().map(|c| c.id.clone()).collect();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let metrics = Metrics::default();
    let cfg = ingest::IngestConfig {
        data_dir: dir.clone(),
        cameras: s.cameras.clone(),
        buffer_bytes: s.buffer_bytes,
        ack_log: None,
        drain: Duration::from_secs(2),
    };
    let ingest =
        tokio::spawn(ingest::run(cfg, s.kafka.clone(), s.plan.clone(), metrics.clone(), stopped(stop_rx.clone())));
    let listen = crate::ingest_path::free_port()?;
    let web_cfg = web::WebConfig {
        listen,
        archive_dir: s.archive.dir.clone(),
        users_file: dir.join("users.toml"),
        insecure_no_auth: true,
        tls: None,
        cameras: ids.iter().map(|id| web::CameraInfo { id: id.clone(), source: spec.clone(), sub: false }).collect(),
        work_dir: dir.join("web"),
        max_upload_bytes: s.jobs.max_file_bytes,
        config_rules: Default::default(),
    };
    let web = web::start(web_cfg, s.kafka.clone(), s.plan.clone(), metrics, stopped(stop_rx)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await; // cameras warm up

    println!(
        "{} cameras × {} fps {}x{} H.264 (GOP 1 s, pre-encoded), server, broker and cameras in one process, loopback, {} s per row\n",
        a.cameras, a.fps, w, h, a.seconds
    );
    if !a.no_browser {
        println!("Glass to glass (capture → presented in headless chromium, every camera in one grid):\n");
        println!("| live mode | frames measured | p50 ms | p95 ms | p99 ms | max ms |");
        println!("|---|---:|---:|---:|---:|---:|");
        for mode in ["webcodecs", "mse"] {
            reset_latency(listen)?;
            browser(listen, mode, a.seconds, &ids)?;
            let l = latency(listen)?;
            println!(
                "| {mode} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
                l["count"],
                l["p50_ms"].as_f64().unwrap_or(f64::NAN),
                l["p95_ms"].as_f64().unwrap_or(f64::NAN),
                l["p99_ms"].as_f64().unwrap_or(f64::NAN),
                l["max_ms"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    println!(
        "\nViewers (WebSocket clients in a separate process, mode mse: fMP4 muxed per viewer; latency = capture → arrival):\n"
    );
    println!("| viewers | frames delivered | p50 ms | p99 ms | server CPU (% of one core) | per viewer |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let secs = a.seconds.min(15);
    let base_cpu = cpu_share(Duration::from_secs(secs)).await;
    println!("| 0 | - | - | - | {:.1} | baseline |", base_cpu * 100.0);
    for &k in &a.viewers {
        let child = viewers_process(listen, &ids, k, secs)?;
        let cpu = cpu_share(Duration::from_secs(secs)).await;
        let out = child.wait_with_output()?;
        let r: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("viewers: {}", String::from_utf8_lossy(&out.stderr)))?;
        let p99 = r["p99_ms"].as_f64().unwrap_or(f64::INFINITY);
        println!(
            "| {k} | {} | {:.0} | {:.0} | {:.1} | {:.2} |",
            r["count"],
            r["p50_ms"].as_f64().unwrap_or(f64::NAN),
            p99,
            cpu * 100.0,
            (cpu - base_cpu).max(0.0) * 100.0 / k as f64
        );
        if p99 > a.target_ms {
            println!("\np99 over {} ms at {k} viewers: stopping here.", a.target_ms);
            break;
        }
    }
    let _ = stop_tx.send(true);
    let _ = ingest.await;
    let _ = web.await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// This process's CPU over `d`, as a share of one core.
async fn cpu_share(d: Duration) -> f64 {
    let (t0, c0) = (Instant::now(), crate::archive_path::cpu_seconds());
    tokio::time::sleep(d).await;
    (crate::archive_path::cpu_seconds() - c0) / t0.elapsed().as_secs_f64()
}

fn request(addr: SocketAddr, method: &str, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nX-Vigil-CSRF: 1\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn reset_latency(addr: SocketAddr) -> Result<()> {
    request(addr, "DELETE", "/api/latency").map(|_| ())
}

fn latency(addr: SocketAddr) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(&request(addr, "GET", "/api/latency")?)?)
}

fn browser(addr: SocketAddr, mode: &str, seconds: u64, ids: &[String]) -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/tests/browser/latency.mjs");
    let out = std::process::Command::new("node")
        .arg(&script)
        .env("VIGIL_URL", format!("http://{addr}/"))
        .env("MODE", mode)
        .env("SECONDS", seconds.to_string())
        .env("CAMERAS", ids.join(","))
        .output()
        .context("node (scripts/setup installs node, chromium and playwright-core)")?;
    if !out.status.success() {
        bail!("browser ({mode}): {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn viewers_process(addr: SocketAddr, ids: &[String], k: usize, secs: u64) -> Result<std::process::Child> {
    Ok(std::process::Command::new(std::env::current_exe()?)
        .args(["viewers", "--url", &format!("ws://{addr}"), "--cameras", &ids.join(",")])
        .args(["--viewers", &k.to_string(), "--seconds", &secs.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?)
}

/// `vigil-bench viewers`: K WebSocket viewers, round robin over cameras;
/// prints capture → arrival latency percentiles as JSON.
pub async fn viewers(a: ViewersArgs) -> Result<()> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for i in 0..a.viewers {
        let url = format!("{}/api/cameras/{}/live?mode=mse", a.url, a.cameras[i % a.cameras.len()]);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else { return lat };
            // The first second is start-up (GOP burst), not steady state.
            let measure_from = tokio::time::Instant::now() + Duration::from_secs(1);
            while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await {
                if let Message::Binary(b) = m
                    && b.len() >= 10
                    && b[0] == 1
                    && tokio::time::Instant::now() > measure_from
                {
                    let capture = i64::from_be_bytes(b[2..10].try_into().expect("8 bytes"));
                    lat.push((bus::now_us() - capture) as f64 / 1000.0);
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort_by(f64::total_cmp);
    let q = |p: f64| (!all.is_empty()).then(|| all[((all.len() - 1) as f64 * p).round() as usize]);
    println!("{}", serde_json::json!({ "count": all.len(), "p50_ms": q(0.5), "p99_ms": q(0.99) }));
    Ok(())
}
