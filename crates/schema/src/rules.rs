//! `vigil.rules` (compacted, last value wins): a camera's zones and lines
//! as an admin drew them in the web app. They replace the config file's
//! rules for that camera; a tombstone gives the config's back. The
//! processor follows the topic and applies a change without a restart.
//! Schema: `docs/schemas/rules.schema.json`.

use serde::{Deserialize, Serialize};

/// A zone or a line, as written in config or drawn in the web app, before
/// it is checked (`process::Rules`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// (The web app fills it in from the camera it edits.)
    #[serde(default)]
    pub camera: String,
    pub name: String,
    /// A zone's corners, `[[x, y], ...]`, in the camera's source pixels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<[f64; 2]>,
    /// A line's ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<[f64; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<[f64; 2]>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_frames: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loiter_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_objects: Option<u32>,
}

/// One record of `vigil.rules`, keyed by camera.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CameraRules {
    pub camera: String,
    pub zones: Vec<RuleSpec>,
    pub lines: Vec<RuleSpec>,
    /// Who saved them, and when (microseconds since the Unix epoch).
    pub by: String,
    pub updated_us: i64,
}
