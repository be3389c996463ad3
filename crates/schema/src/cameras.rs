//! `vigil.cameras` (compacted): each camera stream's current state, keyed
//! `camera/stream`. Schema: `docs/schemas/cameras.schema.json`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CameraState {
    pub camera: String,
    /// `main` or `sub`.
    pub stream: String,
    pub up: bool,
    /// When it went up or down, µs since the epoch.
    pub since_us: i64,
    /// Sessions that ended and were retried since ingest started.
    pub reconnects: u64,
    /// Why the last session ended (empty if none did).
    pub last_error: String,
}

/// The record key of a camera stream's state.
pub fn key(s: &CameraState) -> String {
    format!("{}/{}", s.camera, s.stream)
}
