//! Frames: the record every camera produces and every consumer reads.
//!
//! - `frame`: the versioned, checksummed envelope of one frame or chunk;
//! - `chunk`: splitting frames above the broker's message limit, and the
//!   reassembler that puts them back together.
//!
//! Nothing here does I/O: it is all tested without a broker or runtime.

pub mod chunk;
pub mod frame;
/// Fuzzing helpers: for the cargo-fuzz targets (feature `fuzz`) and the bounded fuzz tests.
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;

pub use chunk::{Incomplete, Limits, Pushed, Reassembler, split};
pub use frame::{Chunk, Codec, Frame, FrameMeta, Stream, validate_camera_id};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("malformed frame record: {0}")]
    Envelope(String),
    #[error("frame record version {0} is not supported by this vigil (it reads version {v})", v = frame::VERSION)]
    Version(u8),
    #[error("camera id `{0}`: use 1-64 characters of letters, digits, `-`, `_` and `.`, not starting with `.`")]
    CameraId(String),
    #[error("frame of {0} bytes is too large")]
    FrameTooLarge(usize),
    #[error("message limit of {0} bytes is too small to carry a frame")]
    RecordLimit(usize),
}
