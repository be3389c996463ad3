//! The command line, as parsed by clap. Validation into typed settings
//! happens in `config`.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "vigil",
    version,
    about = "Video monitoring on Kafka: cameras → Kafka topics → archive, live view, detection."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone, Default)]
pub struct Global {
    /// TOML config file (see vigil.example.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where this role keeps its state [default: ./vigil-data]. `vigil
    /// check` takes it more than once: one archive kept in several dirs.
    #[arg(long, global = true, value_name = "DIR", action = clap::ArgAction::Append)]
    pub data_dir: Vec<PathBuf>,
    /// Kafka brokers, HOST:PORT,... [default: the embedded broker: `up`
    /// starts it; other roles use the one started for the data dir, else
    /// 127.0.0.1:9092].
    #[arg(long, global = true, value_name = "HOST:PORT,...")]
    pub brokers: Option<String>,
    /// Where this role serves /metrics and /healthz (`off` to disable).
    #[arg(long, global = true, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Everything in one process: embedded broker, cameras, every role.
    Up(UpArgs),
    /// Only the embedded Kafka-compatible broker.
    Broker {
        /// Address to listen on [default: 127.0.0.1:9092].
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Publish cameras to Kafka.
    Ingest(IngestArgs),
    /// Keep every frame of every camera on local disk, exactly once.
    Archive,
    /// Run the detector: analyse frames of vigil.frames with a YOLO-family
    /// model, track objects, publish to vigil.detections and vigil.events.
    Detect(DetectArgs),
    /// Print object events (appeared/left) from vigil.events.
    Events {
        /// Only this camera's.
        #[arg(long)]
        camera: Option<String>,
        /// Only this class's (e.g. person).
        #[arg(long)]
        class: Option<String>,
        /// Only this rule's (a zone or line of `vigil process`, or `motion`).
        #[arg(long)]
        rule: Option<String>,
        /// Every event, not only objects' and rules' (camera up/down, archive paused...).
        #[arg(long)]
        all: bool,
        /// JSON: a list of objects.
        #[arg(long)]
        json: bool,
    },
    /// Audit the archive: missing and duplicate frames, bytes without index
    /// and index without bytes, a checksum per segment. Exit 1 on any violation.
    /// With a broker (--brokers, or this data dir's embedded one) a restart's
    /// gap is split into frames lost before the broker and seqs never used.
    /// --data-dir more than once: one archive kept by archivers with a dir
    /// each, audited as one (a frame found identical in two dirs counts once).
    Check {
        /// Only this camera.
        #[arg(long)]
        camera: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Export a recorded range: MP4 for H.264 and H.265 cameras, MJPEG (concatenated
    /// JPEGs) for MJPEG cameras.
    Export {
        #[arg(long)]
        camera: String,
        /// Start: RFC 3339 (`2026-11-22T10:00:00Z`) or relative (`-5m`, `-1h30m`).
        #[arg(long, allow_hyphen_values = true)]
        from: String,
        /// End, same forms, or `now` [default: now].
        #[arg(long, allow_hyphen_values = true, default_value = "now")]
        to: String,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Send video files to vigil.video.chunks, in chunks keyed by video id
    /// (default: the file's SHA-256); prints each video's id.
    Submit {
        /// The files (any format ffmpeg reads).
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// The video id, instead of the content hash (one file only).
        #[arg(long)]
        id: Option<String>,
        /// A new job even for content sent before: the id is the content
        /// hash and the submission time.
        #[arg(long, conflicts_with = "id")]
        force: bool,
        /// Bytes per chunk (below the broker's message limit).
        #[arg(long, default_value_t = jobs::submit::DEFAULT_CHUNK_BYTES)]
        chunk_bytes: u64,
        /// Follow each job until it ends; exit 1 if one failed.
        #[arg(long)]
        wait: bool,
        /// Machine-readable output: a list of objects.
        #[arg(long)]
        json: bool,
    },
    /// Gather submitted videos from vigil.video.chunks (a member of the
    /// collectors' group), analyse them with the detector's model and
    /// tracker, publish to vigil.video.results and vigil.video.jobs.
    Collect(CollectArgs),
    /// Run the stream processor (a member of the processors' group): each
    /// camera's rules ([[process.zones]], [[process.lines]]) over its
    /// tracks on vigil.detections, by capture time; rule events to
    /// vigil.events, per-minute counts to vigil.counts.
    Process {
        /// Kafka transactions for events + counts + checkpoint + offsets
        /// (brokers that have them; not the embedded one).
        #[arg(long)]
        transactions: bool,
    },
    /// Per-minute counts of `vigil process`'s rules (from vigil.counts):
    /// entries, exits, crossings each way, peak and mean occupancy.
    Counts {
        /// Only this camera's.
        #[arg(long)]
        camera: Option<String>,
        /// Minutes from: RFC 3339 or relative (`-1h`) [default: -1h].
        #[arg(long, allow_hyphen_values = true, default_value = "-1h")]
        from: String,
        /// Until, same forms [default: now].
        #[arg(long, allow_hyphen_values = true, default_value = "now")]
        to: String,
        /// JSON: a list of the count records.
        #[arg(long)]
        json: bool,
    },
    /// Whole-video jobs and their progress (from vigil.video.jobs).
    Jobs {
        /// Only this video.
        id: Option<String>,
        /// Machine-readable output: a list of objects.
        #[arg(long)]
        json: bool,
    },
    /// A whole-video job's results (from vigil.video.results): its summary
    /// and objects, or every frame's.
    Results {
        id: String,
        /// Everything (summary, objects, frames) as one JSON object.
        #[arg(long, conflicts_with = "mot")]
        json: bool,
        /// MOTChallenge text (`frame,id,x,y,w,h,conf,-1,-1,-1`), for
        /// TrackEval or py-motmetrics.
        #[arg(long)]
        mot: bool,
    },
    /// Run vigil's tracker alone over detections in MOTChallenge format
    /// (`frame,-1,x,y,w,h,conf,...`) and write its tracks in that format
    /// (`frame,id,x,y,w,h,conf,-1,-1,-1`), for TrackEval or py-motmetrics.
    /// The tracker settings are `[detect]`'s; the time spent tracking goes to stderr.
    Track {
        /// The detections file.
        #[arg(long, value_name = "FILE")]
        mot_det: PathBuf,
        /// Frames per second of the sequence (the tracker works in time).
        #[arg(long, default_value_t = 30.0)]
        frame_rate: f64,
        /// Where the tracks go [default: stdout].
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// The topic plan with live numbers: guarantee, partitions, retention,
    /// end offsets, consumer-group lag.
    Topics {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The web app: live video, timeline and playback, export, HLS, topics,
    /// status; a JSON API (docs/api.md). Login required.
    Serve(ServeArgs),
    /// Manage the web app's users (the users file, see `[web] users_file`).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Synthetic demo cameras to run when no camera is configured.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub demo_cameras: usize,
    #[command(flatten)]
    pub cameras: CameraArgs,
    #[command(flatten)]
    pub web: ServeArgs,
    /// Address of the embedded broker [default: 127.0.0.1:9092].
    #[arg(long, value_name = "ADDR")]
    pub broker_listen: Option<SocketAddr>,
    /// Do not run the detector (also `[detect] enabled = false`).
    #[arg(long)]
    pub no_detect: bool,
}

/// The model and how results are published: `vigil detect` and `vigil collect`.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// A YOLOv8-layout ONNX model [default: `[detect] model`, else the one
    /// scripts/fetch-model installs].
    #[arg(long, value_name = "FILE")]
    pub model: Option<std::path::PathBuf>,
    /// Inference threads (0: every core) [default: `[detect] threads`, 1].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Run on the CUDA execution provider (fails clearly without a GPU).
    #[arg(long)]
    pub cuda: bool,
    /// Commit results with Kafka transactions (brokers that have them).
    #[arg(long)]
    pub transactions: bool,
}

impl ModelArgs {
    /// Applies the flags to `model`; returns whether `--transactions` was given.
    pub fn apply(&self, model: &mut detect::model::ModelOptions) -> bool {
        if let Some(m) = &self.model {
            model.path = m.clone();
        }
        if let Some(t) = self.threads {
            model.threads = t;
        }
        model.cuda |= self.cuda;
        self.transactions
    }
}

#[derive(Args, Debug)]
pub struct DetectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Which frames to analyse: `key-frames` or `N/s` [default: key-frames].
    #[arg(long, value_name = "RULE")]
    pub sample: Option<String>,
    /// Where results go [default: vigil.detections; for a re-analysis
    /// vigil.detections.MODEL-ID].
    #[arg(long, value_name = "TOPIC")]
    pub output_topic: Option<String>,
    /// Re-analyse archived footage from this time (RFC 3339 or -1h) instead
    /// of following vigil.frames; ends when done.
    #[arg(long, allow_hyphen_values = true, value_name = "TIME")]
    pub from: Option<String>,
    /// End of the re-analysed footage [default: now].
    #[arg(long, allow_hyphen_values = true, value_name = "TIME", requires = "from")]
    pub to: Option<String>,
    /// Re-analyse only this camera (repeatable) [default: every camera].
    #[arg(long = "camera", value_name = "ID", requires = "from")]
    pub cameras: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CollectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Which frames to analyse: `all` or `N/s` of video time [default: all].
    #[arg(long, value_name = "RULE")]
    pub sample: Option<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Web address (UI, API, /metrics) [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// No login: every visitor is an admin. Only for a demo on your own
    /// machine; never on a network.
    #[arg(long)]
    pub insecure_no_auth: bool,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user (the password is read from stdin, or asked for).
    Add {
        name: String,
        /// admin (everything) or viewer (the cameras given).
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Cameras a viewer may watch, comma separated, or `*` for all.
        #[arg(long, value_delimiter = ',', default_value = "*")]
        cameras: Vec<String>,
        /// Replace the user if it exists (e.g. a new password).
        #[arg(long)]
        replace: bool,
    },
    /// Remove a user; their sessions end at their next request.
    Remove { name: String },
    /// List users, roles and cameras.
    List,
}

#[derive(Args, Debug)]
pub struct IngestArgs {
    #[command(flatten)]
    pub cameras: CameraArgs,
    /// Append `camera stream seq partition offset` for every frame the
    /// broker acknowledged (the crash tests' record; feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    #[arg(long, value_name = "FILE")]
    pub ack_log: Option<PathBuf>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct CameraArgs {
    /// A camera, ID=SOURCE, e.g. `cam1=synthetic:` or
    /// `door=synthetic:width=1280,height=720,fps=15,codec=mjpeg`. Repeatable;
    /// adds to the cameras of the config file.
    #[arg(long = "camera", value_name = "ID=SOURCE")]
    pub camera: Vec<String>,
}
