//! `vigil`: one binary, a subcommand per role. This file only wires the
//! library crates together; each role's logic lives in its crate.

mod archive_cmd;
mod detect_cmd;
mod jobs_cmd;
mod process_cmd;
mod submit_cmd;
mod topics_cmd;
mod user_cmd;

use anyhow::{Context, Result};
use bus::Metrics;
use clap::Parser;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use vigil::cli::{self, Cli, Command};
use vigil::config::{self, Settings};

fn main() -> ExitCode {
    // SAFETY: the first thing main does; no other thread runs yet.
    unsafe { detect::model::disable_telemetry() };
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
                .unwrap_or_else(|_| "info,librdkafka=warn,rdkafka=warn,tansu=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vigil: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Up(a) => {
            let mut s = Settings::load(g, &a.cameras)?;
            if s.cameras.is_empty() {
                let footage = demo_footage();
                if footage.is_none() {
                    println!(
                        "  demo     footage missing ({}): every demo camera is synthetic; scripts/demo-clip builds it",
                        detect::model::cache_dir().join("demo/people-and-animals.mp4").display()
                    );
                }
                s.cameras = demo_cameras(a.demo_cameras, footage.as_deref());
            }
            if let Some(l) = a.broker_listen {
                s.broker_listen = l;
            }
            if a.no_detect {
                s.detect_in_up = false;
            }
            up(s, a.web).await
        }
        Command::Serve(a) => {
            let mut s = Settings::load(g, &Default::default())?;
            s.resolve_brokers();
            run_serve(s, a).await
        }
        Command::User { command } => {
            let s = Settings::load(g, &Default::default())?;
            user_cmd::run(&s.web.users_file, command)
        }
        Command::Broker { listen } => {
            let mut s = Settings::load(g, &Default::default())?;
            if let Some(l) = listen {
                s.broker_listen = l;
            }
            run_broker(s).await
        }
        Command::Ingest(a) => {
            let mut s = Settings::load(g, &a.cameras)?;
            anyhow::ensure!(
                !s.cameras.is_empty(),
                "no cameras: add --camera ID=SOURCE or [[cameras]] in the config file"
            );
            s.resolve_brokers();
            #[cfg(feature = "test-hooks")]
            let ack_log = a.ack_log;
            #[cfg(not(feature = "test-hooks"))]
            let ack_log = None;
            run_ingest(s, ack_log).await
        }
        Command::Archive => {
            let mut s = Settings::load(g, &Default::default())?;
            s.resolve_brokers();
            run_archive(s).await
        }
        Command::Detect(a) => {
            let mut s = Settings::load(g, &Default::default())?;
            s.resolve_brokers();
            detect_cmd::run(s, a).await
        }
        Command::Events { camera, class, rule, all, json } => {
            let mut s = Settings::load(g, &Default::default())?;
            s.resolve_brokers();
            let only = detect_cmd::Only { camera, class, rule, all };
            detect_cmd::events(s, only, json).await
        }
        Command::Check { camera, json } => {
            // One archive kept in several dirs: each dir's settings, the
            // first's for the rest (brokers, output).
            let mut dirs = Vec::new();
            for d in g.data_dir.iter().map(|d| Some(d.clone())).chain(g.data_dir.is_empty().then_some(None)) {
                let one = vigil::cli::Global { data_dir: d.into_iter().collect(), ..g.clone() };
                dirs.push(Settings::load(&one, &Default::default())?);
            }
            archive_cmd::run(&dirs, camera.as_deref(), json).await
        }
        Command::Export { camera, from, to, output } => {
            let s = Settings::load(g, &Default::default())?;
            archive_cmd::export(&s, &camera, &from, &to, &output).await
        }
        Command::Topics { json } => {
            let mut s = Settings::load(g, &Default::default())?;
            s.resolve_brokers();
            topics_cmd::run(s, json).await
        }
        Command::Submit { files, id, force, chunk_bytes, wait, json } => {
            let mut s = Settings::load(g, &Default::default())?;
            s.resolve_brokers();
            submit_cmd::run(&s, &files, id.as_deref(), force, chunk_bytes, wait, json).await
        }
        Command::Track { mot_det, frame_rate, output } => {
            let s = Settings::load(g, &Default::default())?;
            let text = std::fs::read_to_string(&mot_det).with_context(|| format!("reading {}", mot_det.display()))?;
            let tracked = detect::mot::track(&text, frame_rate, s.detect.tracker)
                .map_err(|e| anyhow::anyhow!("{}: {e}", mot_det.display()))?;
            let ms = tracked.tracking.as_secs_f64() * 1e3;
            eprintln!(
                "vigil track: {} frames in {ms:.3} ms of tracking ({:.0} frames/s)",
                tracked.frames,
                tracked.frames as f64 / tracked.tracking.as_secs_f64().max(1e-9)
            );
            match output {
                Some(o) => std::fs::write(&o, tracked.text).with_context(|| format!("writing {}", o.display())),
                None => {
                    print!("{}", tracked.text);
                    Ok(())
                }
            }
        }
        Command::Collect(a) => {
            let mut s = Settings::load(g, &Default::default())?;
            s.resolve_brokers();
            jobs_cmd::collect(s, a).await
        }
        Command::Process { transactions } => {
            let mut s = Settings::load(g, &Default::default())?;
            s.resolve_brokers();
            process_cmd::run(s, transactions).await
        }
        Command::Counts { camera, from, to, json } => {
            let mut s = Settings::load(g, &Default::default())?;
            s.resolve_brokers();
            process_cmd::counts(&s, camera, &from, &to, json).await
        }
        Command::Jobs { id, json } => {
            let mut s = Settings::load(g, &Default::default())?;
            s.resolve_brokers();
            jobs_cmd::jobs(&s, id.as_deref(), json).await
        }
        Command::Results { id, json, mot } => {
            let mut s = Settings::load(g, &Default::default())?;
            s.resolve_brokers();
            jobs_cmd::results(&s, &id, json, mot).await
        }
    }
}

/// The demo: synthetic cameras sized to leave most of a small machine free
/// (see README for the measured CPU). The first has a sub stream for live
/// view, the last is MJPEG so both codecs are always exercised. When the
/// demo footage is installed (`scripts/demo-clip`, run by scripts/setup),
/// cam2 (cam1 with fewer than three cameras) plays it: real people and
/// animals, so detection, tracking and events show at once.
fn demo_cameras(n: usize, footage: Option<&std::path::Path>) -> Vec<ingest::CameraSpec> {
    use ingest::source::SourceSpec;
    let clip_camera = if n >= 3 { 2 } else { 1 };
    (1..=n)
        .map(|i| {
            let synthetic = |spec: &str| SourceSpec::parse(&format!("synthetic:{spec}")).expect("valid demo");
            if let Some(clip) = footage.filter(|_| i == clip_camera) {
                // A bad clip is the camera's problem: it reports it and
                // retries, as any camera does.
                let main = SourceSpec::parse(&format!("file:{}?loop", clip.display()))
                    .unwrap_or_else(|_| synthetic("width=640,height=360,fps=10,bitrate=300k,gop=20"));
                return ingest::CameraSpec { id: format!("cam{i}"), main, sub: None };
            }
            let main = if i == n && n > 1 {
                "codec=mjpeg,fps=5,quality=60"
            } else {
                "width=640,height=360,fps=10,bitrate=300k,gop=20"
            };
            let sub = (i == 1).then(|| synthetic("width=320,height=180,fps=10,bitrate=120k,gop=20"));
            ingest::CameraSpec { id: format!("cam{i}"), main: synthetic(main), sub }
        })
        .collect()
}

/// The demo footage, if scripts/setup installed it.
fn demo_footage() -> Option<std::path::PathBuf> {
    let clip = detect::model::cache_dir().join("demo/people-and-animals.mp4");
    clip.is_file().then_some(clip)
}

async fn start_embedded(s: &mut Settings) -> Result<broker::EmbeddedBroker> {
    let b = broker::EmbeddedBroker::start(&broker::BrokerConfig {
        data_dir: s.data_dir.clone(),
        listen: s.broker_listen,
        maintenance_interval: Duration::from_secs(s.maintenance_interval_s),
    })
    .await?;
    s.kafka.brokers = b.addr().to_string();
    Ok(b)
}

/// Connects and creates missing topics; warnings go to the log.
async fn prepare_bus(s: &Settings) -> Result<()> {
    let k = s.kafka.clone();
    tokio::task::spawn_blocking(move || k.wait_ready(Duration::from_secs(15))).await??;
    for w in s.kafka.ensure_topics(&s.plan).await? {
        tracing::warn!("{w}");
    }
    Ok(())
}

async fn serve_metrics(m: &Metrics, addr: Option<SocketAddr>) -> Result<Option<tokio::task::JoinHandle<()>>> {
    match addr {
        Some(a) => Ok(Some(m.clone().serve(a).await.with_context(|| format!("cannot serve metrics on {a}"))?)),
        None => Ok(None),
    }
}

async fn up(mut s: Settings, web: cli::ServeArgs) -> Result<()> {
    let embedded = match s.brokers {
        None => Some(start_embedded(&mut s).await?),
        Some(_) => None,
    };
    prepare_bus(&s).await?;
    let metrics = Metrics::default();
    // Every role in this process stops on the same signal: cameras first,
    // then the archive, which flushes what it holds.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let web_cfg = web_config(&s, &web);
    let first_password = if web.insecure_no_auth { None } else { user_cmd::first_admin(&web_cfg.users_file)? };
    let web_task =
        web::start(web_cfg.clone(), s.kafka.clone(), s.plan.clone(), metrics.clone(), stopped(stop_rx.clone())).await?;
    println!("vigil is up");
    match &embedded {
        Some(b) => println!("  broker   {} (embedded, data in {})", b.addr(), s.data_dir.join("broker.db").display()),
        None => println!("  brokers  {}", s.kafka.brokers),
    }
    for c in &s.cameras {
        println!(
            "  camera   {:<12} {} → {}{}",
            c.id,
            describe(&c.main),
            bus::topics::FRAMES,
            if c.sub.is_some() { format!(", sub stream → {}", bus::topics::LIVE) } else { String::new() }
        );
    }
    println!("  archive  {}", s.archive.dir.display());
    if s.detect_in_up && s.detect.transactions && s.brokers.is_none() {
        anyhow::bail!("the embedded broker has no Kafka transactions: set detect.transactions = false");
    }
    let detecting = s.detect_in_up && detector_ready(&s.detect);
    if detecting {
        println!("  detect   {} → {}, {}", s.detect.model.path.display(), bus::topics::DETECTIONS, bus::topics::EVENTS);
    }
    if s.jobs_in_up && s.jobs.transactions && s.brokers.is_none() {
        anyhow::bail!("the embedded broker has no Kafka transactions: set jobs.transactions = false");
    }
    let model = &s.jobs.model;
    let collecting = s.jobs_in_up && model.path.exists() && model.runtime.exists();
    if collecting {
        println!(
            "  collect  {} → {}, {} (vigil submit FILE)",
            bus::topics::VIDEO_CHUNKS,
            bus::topics::VIDEO_RESULTS,
            bus::topics::VIDEO_JOBS
        );
    }
    if s.process_in_up && s.process.transactions && s.brokers.is_none() {
        anyhow::bail!("the embedded broker has no Kafka transactions: set process.transactions = false");
    }
    let processing = detecting && s.process_in_up;
    if processing {
        let rules: usize = s.process.rules.values().map(|r| r.zones.len() + r.lines.len()).sum();
        println!(
            "  process  {} → {}, {} ({rules} rule(s))",
            bus::topics::DETECTIONS,
            bus::topics::EVENTS,
            bus::topics::COUNTS
        );
    }
    println!("  metrics  {}metrics", web::url(&web_cfg));
    println!("  topics   vigil topics --data-dir {}", s.data_dir.display());
    match &first_password {
        Some(p) => println!(
            "  login    admin / {p}  (first run: change it with `vigil user add admin --role admin --replace`)"
        ),
        None => print_login_hint(&web_cfg),
    }
    println!("open {}  (Ctrl-C stops)", web::url(&web_cfg));
    // Every role is a task of one set: the first that fails (or panics, or
    // ends on its own) is reported at once and stops the others, and `vigil
    // up` exits non-zero with its reason; a recording that silently stopped
    // behind a working web page is worse than no page.
    let mut roles = Roles::default();
    roles.spawn("web", async move { Ok(web_task.await??) });
    roles.spawn("archive", archive_role(&s, metrics.clone(), stopped(stop_rx.clone())));
    if detecting {
        let (s2, cfg, m, stop) = (s.clone(), s.detect.clone(), metrics.clone(), stopped(stop_rx.clone()));
        roles.spawn("detect", async move { detect_cmd::role(&s2, cfg, m, stop).await });
    }
    if collecting {
        let (s2, cfg, m, stop) = (s.clone(), s.jobs.clone(), metrics.clone(), stopped(stop_rx.clone()));
        roles.spawn("collect", async move { jobs_cmd::role(&s2, cfg, m, stop).await });
    }
    if processing {
        let (s2, cfg, m, stop) = (s.clone(), s.process.clone(), metrics.clone(), stopped(stop_rx.clone()));
        roles.spawn("process", async move { process_cmd::role(&s2, cfg, m, stop).await });
    }
    let (cfg, kafka, plan) = (ingest_config(&s, None), s.kafka.clone(), s.plan.clone());
    let stop = stopped(stop_rx);
    roles.spawn("ingest", async move { Ok(ingest::run(cfg, kafka, plan, metrics, stop).await?) });
    // The embedded broker is supervised like a role: without it every
    // role stalls, so its end ends `up` too.
    let mut embedded = embedded;
    let broker_down = async {
        match embedded.as_mut() {
            Some(b) => b.stopped().await,
            None => std::future::pending().await,
        }
    };
    let failed = tokio::select! {
        _ = shutdown_signal() => None,
        f = roles.next_end() => Some(f),
        why = broker_down => Some(("broker", why)),
    };
    let _ = stop_tx.send(true);
    let mut first = failed.clone().map(|(role, why)| anyhow::anyhow!("{role} stopped: {why}"));
    if let Some((role, why)) = &failed {
        tracing::error!("{role} stopped: {why}; stopping vigil up");
    }
    // The others finish what they hold (the archive flushes), bounded.
    let drained = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some((role, why)) = roles.next_stopped().await {
            tracing::error!("{role} failed while stopping: {why}");
            first.get_or_insert_with(|| anyhow::anyhow!("{role} failed while stopping: {why}"));
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("roles still busy 30 s after the stop: leaving them");
    }
    drop(embedded);
    first.map_or(Ok(()), Err)
}

/// The roles of `vigil up`, each a task with a name.
#[derive(Default)]
struct Roles {
    set: tokio::task::JoinSet<Result<()>>,
    names: std::collections::HashMap<tokio::task::Id, &'static str>,
}

impl Roles {
    fn spawn(&mut self, name: &'static str, role: impl std::future::Future<Output = Result<()>> + Send + 'static) {
        let id = self.set.spawn(role).id();
        self.names.insert(id, name);
    }

    /// The first role to end, while none should: its name and why.
    async fn next_end(&mut self) -> (&'static str, String) {
        match self.set.join_next_with_id().await {
            Some(r) => self.describe(r).unwrap_or_else(|role| (role, "ended on its own".into())),
            None => std::future::pending().await,
        }
    }

    /// While stopping: the next role that fails (those that end well are
    /// skipped); `None` when all have ended.
    async fn next_stopped(&mut self) -> Option<(&'static str, String)> {
        while let Some(r) = self.set.join_next_with_id().await {
            if let Ok(failure) = self.describe(r) {
                return Some(failure);
            }
        }
        None
    }

    /// `Ok((role, why))` for a failure or a panic, `Err(role)` for a clean end.
    fn describe(
        &self,
        r: Result<(tokio::task::Id, Result<()>), tokio::task::JoinError>,
    ) -> Result<(&'static str, String), &'static str> {
        let name = |id| self.names.get(&id).copied().unwrap_or("a role");
        match r {
            Ok((id, Ok(()))) => Err(name(id)),
            Ok((id, Err(e))) => Ok((name(id), format!("{e:#}"))),
            Err(e) if e.is_panic() => Ok((name(e.id()), "panicked (see the log above)".into())),
            Err(e) => Ok((name(e.id()), e.to_string())),
        }
    }
}

/// Whether the detector's model and runtime are installed; says what to do
/// when not (`vigil up` then runs without detection).
fn detector_ready(cfg: &detect::DetectConfig) -> bool {
    for (what, path) in [("model", &cfg.model.path), ("ONNX Runtime library", &cfg.model.runtime)] {
        if !path.exists() {
            println!("  detect   off: no {what} at {} (run scripts/fetch-model)", path.display());
            return false;
        }
    }
    true
}

fn web_config(s: &Settings, a: &cli::ServeArgs) -> web::WebConfig {
    web::WebConfig {
        listen: a.listen.unwrap_or(s.web.listen),
        archive_dir: s.archive.dir.clone(),
        users_file: s.web.users_file.clone(),
        insecure_no_auth: a.insecure_no_auth,
        tls: s.web.tls.clone(),
        cameras: s
            .cameras
            .iter()
            .map(|c| web::CameraInfo { id: c.id.clone(), source: describe(&c.main), sub: c.sub.is_some() })
            .collect(),
        work_dir: s.data_dir.join("web"),
        max_upload_bytes: s.jobs.max_file_bytes,
        config_rules: s.rule_specs.clone(),
    }
}

fn print_login_hint(cfg: &web::WebConfig) {
    if cfg.insecure_no_auth {
        println!("  WARNING  --insecure-no-auth: no login, every visitor is an admin. Local demos only.");
    } else if !cfg.users_file.exists() {
        println!(
            "  login    no users yet: vigil user add NAME --role admin --data-dir ... (users file {})",
            cfg.users_file.display()
        );
    }
}

async fn run_serve(s: Settings, a: cli::ServeArgs) -> Result<()> {
    prepare_bus(&s).await?;
    let metrics = Metrics::default();
    let cfg = web_config(&s, &a);
    let task = web::start(cfg.clone(), s.kafka.clone(), s.plan.clone(), metrics, shutdown_signal()).await?;
    print_login_hint(&cfg);
    println!("vigil serve: open {}", web::url(&cfg));
    task.await??;
    Ok(())
}

/// A camera source in words, for people (never credentials: each source's
/// `Debug` leaves them out).
fn describe(src: &ingest::source::SourceSpec) -> String {
    match src {
        ingest::source::SourceSpec::Synthetic(c) => {
            format!("synthetic {}x{} {}fps {}", c.width, c.height, c.fps, c.codec.name())
        }
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}

fn archive_role(
    s: &Settings,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
    let topic = s.plan.iter().find(|t| t.name == bus::topics::FRAMES).cloned().expect("frames topic in plan");
    let (cfg, kafka) = (s.archive.clone(), s.kafka.clone());
    async move {
        let partitions = partitions_of(&kafka, topic.name).await?;
        archive::run(cfg, kafka, bus::TopicSpec { partitions, ..topic }, metrics, shutdown).await?;
        Ok(())
    }
}

/// How many partitions `topic` has on the broker (it may differ from the plan).
async fn partitions_of(kafka: &bus::KafkaConfig, topic: &'static str) -> Result<i32> {
    let k = kafka.clone();
    let counts = tokio::task::spawn_blocking(move || k.partition_counts(&[topic.to_string()])).await??;
    counts.get(topic).copied().with_context(|| format!("topic {topic} does not exist"))
}

async fn run_archive(s: Settings) -> Result<()> {
    prepare_bus(&s).await?;
    let metrics = Metrics::default();
    let _m = serve_metrics(&metrics, s.metrics_addr("127.0.0.1:9467")).await?;
    println!("vigil archive: {} → {}", s.kafka.brokers, s.archive.dir.display());
    archive_role(&s, metrics, shutdown_signal()).await
}

async fn run_broker(mut s: Settings) -> Result<()> {
    let b = start_embedded(&mut s).await?;
    prepare_bus(&s).await?;
    let metrics = Metrics::default();
    let _m = serve_metrics(&metrics, s.metrics_addr("127.0.0.1:9465")).await?;
    println!("vigil broker listening on {} (data in {})", b.addr(), s.data_dir.join("broker.db").display());
    let mut b = b;
    tokio::select! {
        _ = shutdown_signal() => Ok(()),
        why = b.stopped() => Err(anyhow::anyhow!(why)),
    }
}

async fn run_ingest(s: Settings, ack_log: Option<std::path::PathBuf>) -> Result<()> {
    prepare_bus(&s).await?;
    let metrics = Metrics::default();
    let _m = serve_metrics(&metrics, s.metrics_addr("127.0.0.1:9466")).await?;
    println!("vigil ingest: {} camera(s) → {}", s.cameras.len(), s.kafka.brokers);
    ingest::run(ingest_config(&s, ack_log), s.kafka.clone(), s.plan.clone(), metrics, shutdown_signal()).await?;
    Ok(())
}

fn ingest_config(s: &Settings, ack_log: Option<std::path::PathBuf>) -> ingest::IngestConfig {
    ingest::IngestConfig {
        data_dir: s.data_dir.clone(),
        cameras: s.cameras.clone(),
        buffer_bytes: s.buffer_bytes,
        ack_log,
        drain: Duration::from_secs(10),
    }
}

/// Resolves on the first Ctrl-C or SIGTERM; a second one exits at once.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping (again to stop at once)");
    tokio::spawn(async {
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A role that panics, one that ends by itself and one that fails are
    /// each reported, by name, as the end of `vigil up`.
    #[tokio::test]
    async fn a_role_that_panics_or_ends_ends_up() {
        let forever = || async {
            std::future::pending::<()>().await;
            Ok(())
        };
        type Role = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;
        let cases: [(&str, Role, &str); 3] = [
            ("detect", Box::pin(async { panic!("injected") }), "panicked"),
            ("ingest", Box::pin(async { Ok(()) }), "ended on its own"),
            ("archive", Box::pin(async { anyhow::bail!("disk gone") }), "disk gone"),
        ];
        for (name, role, why) in cases {
            let mut roles = Roles::default();
            roles.spawn("web", forever());
            roles.spawn(name, role);
            let (ended, reason) = roles.next_end().await;
            assert_eq!(ended, name);
            assert!(reason.contains(why), "{name}: {reason}");
        }
    }
}
