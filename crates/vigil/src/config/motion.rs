//! `[motion]`: the detector's motion check on sampled frames, the gate
//! that skips the model on still cameras, and per-camera masks.

use anyhow::{Result, bail};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MotionSection {
    /// Run the motion check (default true).
    pub enabled: Option<bool>,
    /// Skip the model on cameras where nothing moved for `hold_s`
    /// (default true).
    pub gate: Option<bool>,
    pub hold_s: Option<f32>,
    /// Least grey-level difference that is motion, 1-255.
    pub threshold: Option<u8>,
    /// Least area of a moving blob, a share of the image.
    pub min_area: Option<f32>,
    /// Seconds without motion before it ends.
    pub end_s: Option<f32>,
    /// Seconds the scene's average takes to take in a change.
    pub settle_s: Option<f32>,
    /// Seconds a changed scene must last to be a tamper alarm.
    pub tamper_s: Option<f32>,
    #[serde(default)]
    pub masks: Vec<MaskEntry>,
}

/// `[[motion.masks]]`: where changes on a camera are never motion.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskEntry {
    pub camera: String,
    /// A polygon in source pixels.
    pub points: Vec<[f32; 2]>,
}

pub fn settings(m: &MotionSection, cameras: &[&str]) -> Result<detect::gate::MotionSettings> {
    let mut s = detect::gate::MotionSettings {
        enabled: m.enabled.unwrap_or(true),
        gate: m.gate.unwrap_or(true),
        ..Default::default()
    };
    if let Some(h) = m.hold_s {
        if !(0.0..=3600.0).contains(&h) {
            bail!("motion.hold_s = {h}: use 0..=3600");
        }
        s.hold = std::time::Duration::from_secs_f32(h);
    }
    if let Some(t) = m.threshold {
        if t == 0 {
            bail!("motion.threshold = 0: use 1..=255 (0 would call every pixel moving)");
        }
        s.config.threshold = t;
    }
    for (name, v, slot, range) in [
        ("min_area", m.min_area, &mut s.config.min_area, 0.0..=1.0),
        ("end_s", m.end_s, &mut s.config.end_s, 0.0..=3600.0),
        ("settle_s", m.settle_s, &mut s.config.settle_s, 0.1..=3600.0),
        ("tamper_s", m.tamper_s, &mut s.config.tamper_s, 0.0..=86_400.0),
    ] {
        if let Some(v) = v {
            if !range.contains(&v) {
                bail!("motion.{name} = {v}: use {}..={}", range.start(), range.end());
            }
            *slot = v;
        }
    }
    for (i, mask) in m.masks.iter().enumerate() {
        let what = format!("motion.masks[{i}] (camera {:?})", mask.camera);
        if !cameras.contains(&mask.camera.as_str()) {
            bail!("{what}: not one of [[cameras]] ({})", cameras.join(", "));
        }
        if mask.points.len() < 3 {
            bail!("{what}: a polygon needs at least 3 points");
        }
        if mask.points.iter().flatten().any(|v| !v.is_finite() || *v < 0.0) {
            bail!("{what}: points are pixels, 0 or more");
        }
        s.masks.entry(mask.camera.clone()).or_default().push(mask.points.clone());
    }
    Ok(s)
}
