//! Whole-video jobs: files sent through Kafka in chunks, gathered and
//! analysed by a group of collectors. The pure parts: the chunk record on
//! `vigil.video.chunks` (`chunk`), the reassembly of one video from its
//! chunks in any order (`assemble`), a job's state (`job`). Around them:
//! `submit` (file → chunks), `decode` (a whole file through ffmpeg) and
//! `collect`, the collector stage on the shared runtime.

pub mod assemble;
pub mod chunk;
pub mod collect;
pub mod decode;
pub mod job;
pub mod read;
pub mod submit;

pub use assemble::{Added, Assembly, Whole};
pub use chunk::{Chunk, ChunkMeta, FileSummary};
pub use collect::{CollectConfig, Collector, Sample};
pub use job::{Job, State};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a vigil video chunk: {0}")]
    Envelope(String),
    #[error("chunk {index} of video {video}: {why}")]
    Chunk { video: String, index: u32, why: String },
    #[error("video {video}: {why}")]
    Video { video: String, why: String },
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error("sending chunks: {0}")]
    Send(String),
}

/// Lower-case hex of a SHA-256 digest.
pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}
