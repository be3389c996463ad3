//! `vigil-bench`: vigil's benchmarks, each measured beside a baseline in the
//! same run and reported as a ratio (docs/benchmarks.md has the numbers
//! and the commands). A binary of its own, so the production `vigil` ships
//! no benchmark code; it reads the same config file and flags as `vigil`.

mod archive_path;
mod detection;
mod gate;
mod group;
mod index;
mod index_v1;
mod ingest_path;
mod jobs_path;
mod live;
mod motion;
mod process_path;
mod street;

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use vigil::cli::Global;
use vigil::config::Settings;

#[derive(Parser, Debug)]
#[command(
    name = "vigil-bench",
    version,
    about = "vigil's benchmarks, each beside a baseline measured in the same run."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    which: Bench,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// Frames through vigil's ingest path (envelope, buffer, publisher,
    /// broker, reader) beside a bare rdkafka produce→consume loop.
    Ingest(ingest_path::BenchArgs),
    /// The archive beside a bare consume loop and the disk's sequential
    /// write speed; CPU per 1080p30 4 Mbit/s camera.
    Archive(archive_path::ArchiveBenchArgs),
    /// The archive index at the scale of months (30 days × 16 cameras ×
    /// 30 fps) beside the previous row-per-frame design.
    Index(index::IndexBenchArgs),
    /// Glass-to-glass live latency in headless chromium (p50/p95/p99), and
    /// how many WebSocket viewers one server holds, with its CPU.
    Live(live::LiveBenchArgs),
    /// The detection stage (decode, preprocess, inference, NMS, tracking)
    /// beside a Python onnxruntime + numpy pipeline: frames/s and the ratio.
    Detect(detection::DetectBenchArgs),
    /// The detector scaled out: 1 detector, then 2 in one consumer group,
    /// over the same backlog: frames/s each and together, and the ratio.
    Group(group::GroupBenchArgs),
    /// Whole-video jobs (submit → Kafka → collect → results) beside the
    /// same decode, model and tracker run directly on the file: video-
    /// seconds per second and the ratio; a collector's memory peak while a
    /// video larger than its budget is gathered.
    Jobs(jobs_path::JobsBenchArgs),
    /// The stream processor (rules, events, counts, checkpoints) beside a
    /// bare consume loop of the same backlog of detections: records/s.
    Process(process_path::ProcessBenchArgs),
    /// Skipping the model on still cameras: the detector's CPU with the
    /// motion gate and without on a clip with long still periods, and the
    /// objects the gate missed.
    Gate(gate::GateBenchArgs),
    /// The motion check's CPU per camera (320x180 and 1080p) beside
    /// Frigate's method in Python/OpenCV, and what decoding costs.
    Motion(motion::MotionBenchArgs),
    /// Real footage of people walking (scripts/bench-street fetches it):
    /// the share of person boxes with an id, ids and track breaks, for the
    /// live detector at its default sampling and for a whole-video job.
    Street(street::StreetBenchArgs),
    /// (Used by `live`.) WebSocket viewers measuring arrival latency.
    #[command(hide = true)]
    Viewers(live::ViewersArgs),
}

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
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vigil-bench: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = || Settings::load(&cli.global, &Default::default());
    match cli.which {
        Bench::Ingest(a) => ingest_path::ingest(settings()?, a).await,
        Bench::Archive(a) => archive_path::archive(settings()?, a).await,
        Bench::Index(a) => index::index(a).await,
        Bench::Live(a) => live::live(settings()?, a).await,
        Bench::Viewers(a) => live::viewers(a).await,
        Bench::Detect(a) => detection::detect(settings()?, a),
        Bench::Group(a) => group::group(settings()?, a).await,
        Bench::Jobs(a) => jobs_path::jobs(settings()?, a).await,
        Bench::Process(a) => process_path::process(settings()?, a).await,
        Bench::Motion(a) => motion::motion(a),
        Bench::Gate(a) => gate::gate(settings()?, a).await,
        Bench::Street(a) => street::street(settings()?, a).await,
    }
}
