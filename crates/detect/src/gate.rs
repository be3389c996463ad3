//! The detector's motion check on each sampled frame, and the gate: a
//! camera where nothing has moved for `hold` is not analysed. Its frames
//! still get a record, with the objects of the last analysed frame (the
//! scene has not changed since), so downstream stages see the parked car
//! stay parked rather than vanish.
//!
//! The gate only closes after `hold` of stillness that the model saw: a
//! person who walks out of view is analysed until the image shows them
//! gone, so what is held is the empty scene, not the last sighting.

use crate::motion::{Grey, Mask, Motion, MotionConfig};
use codec::Picture;
use schema::{FrameMotion, Object};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct MotionSettings {
    /// Run the motion check (the live detector; re-analyses do not).
    pub enabled: bool,
    pub config: MotionConfig,
    /// Skip the model on cameras where nothing moved for `hold`.
    pub gate: bool,
    pub hold: Duration,
    /// By camera: polygons (source pixels) where changes are not motion.
    pub masks: BTreeMap<String, Vec<Vec<[f32; 2]>>>,
}

impl Default for MotionSettings {
    fn default() -> Self {
        MotionSettings {
            enabled: true,
            config: MotionConfig::default(),
            gate: true,
            hold: Duration::from_secs(10),
            masks: BTreeMap::new(),
        }
    }
}

/// What a camera's gate keeps (checkpointed with its tracker).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GateState {
    pub motion: Motion,
    /// The last analysed frame: its seq and objects.
    pub held: Option<(u64, Vec<Object>)>,
}

impl GateState {
    /// Checks one sampled picture at capture time `t`: the frame's motion,
    /// and whether the model may skip it.
    pub fn check(
        &mut self,
        s: &MotionSettings,
        mask: &mut Option<Mask>,
        picture: &Picture,
        t: i64,
    ) -> (FrameMotion, bool) {
        let (w, h) = (picture.width as usize, picture.height as usize);
        let out = self.motion.frame(&s.config, &Grey::packed(w, h, &picture.grey), mask.as_mut(), t);
        // Only a frame compared with a settled scene, with nothing moving,
        // is still (an image the check cannot read never is).
        let still = out.compared
            && out.region.is_none()
            && !out.recalibrated
            && !out.tamper
            && !self.motion.moving()
            && !self.motion.unsettled();
        let skip = s.gate && still && self.held.is_some() && self.motion.still_for(t) >= s.hold.as_secs_f64();
        let motion = FrameMotion {
            score: out.score,
            region: out.region,
            moving: self.motion.moving(),
            tamper: out.tamper,
            held_from: None,
        };
        (motion, skip)
    }
}

/// A camera's mask for pictures of `size`, if it has one.
pub fn mask_for(s: &MotionSettings, camera: &str, size: (usize, usize)) -> Option<Mask> {
    s.masks.get(camera).filter(|p| !p.is_empty()).map(|p| Mask::new(p.clone(), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: usize = 320;
    const H: usize = 180;

    fn picture(block_x: Option<usize>) -> Picture {
        let mut grey: Vec<u8> = (0..W * H).map(|i| (60 + ((i % W) / 8 + (i / W) / 8) % 2 * 80) as u8).collect();
        if let Some(x) = block_x {
            for y in 60..90 {
                for px in x..x + 30 {
                    grey[y * W + px] = 230;
                }
            }
        }
        Picture { width: W as u32, height: H as u32, rgb: Vec::new(), grey }
    }

    /// Frames 0.5 s apart: a block moves from 10 s to 15 s; the gate
    /// stays open while it moves and for `hold` after, and never opens on
    /// the first frames before anything was analysed.
    #[test]
    fn the_gate_closes_after_hold_of_stillness_and_opens_on_motion() {
        let s = MotionSettings { hold: Duration::from_secs(3), ..Default::default() };
        let mut g = GateState::default();
        let mut skipped = Vec::new();
        for i in 0..60 {
            let t = i * 500_000;
            let moving = (20..30).contains(&i);
            let (_, skip) = g.check(&s, &mut None, &picture(moving.then(|| 10 + 25 * (i as usize - 20))), t);
            if !skip {
                g.held = Some((i as u64, Vec::new()));
            }
            skipped.push(skip);
        }
        let analysed: Vec<usize> = (0..60).filter(|&i| !skipped[i]).collect();
        // 0-5: the first 3 s after learning; from 20: the moves, the
        // average fading for a few frames, then 3 s of stillness.
        assert_eq!(analysed[..7], [0, 1, 2, 3, 4, 5, 20]);
        assert!((20..=29).all(|i| analysed.contains(&i)), "{analysed:?}");
        assert!(analysed.len() < 35, "{analysed:?}");
        assert!(skipped[59], "still at the end");
        let off = MotionSettings { gate: false, ..s };
        let mut g = GateState { held: Some((0, Vec::new())), ..Default::default() };
        assert!((0..40).all(|i| !g.check(&off, &mut None, &picture(None), i * 500_000).1), "gate off: every frame");
    }

    #[test]
    fn the_gate_never_skips_what_it_cannot_judge() {
        let s = MotionSettings { hold: Duration::from_secs(1), ..Default::default() };
        // An image too small for the check, for a minute.
        let mut g = GateState { held: Some((0, Vec::new())), ..Default::default() };
        let tiny = Picture { width: 2, height: 2, rgb: Vec::new(), grey: vec![0; 4] };
        assert!((0..120).all(|i| !g.check(&s, &mut None, &tiny, i * 500_000).1), "an unreadable image");
        // Most of the image changed (someone in front of the lens) for
        // less than tamper_s: neither light nor tamper yet, not still.
        let mut g = GateState { held: Some((0, Vec::new())), ..Default::default() };
        for i in 0..10 {
            g.check(&s, &mut None, &picture(None), i * 500_000);
        }
        assert!(g.check(&s, &mut None, &picture(None), 5_000_000).1, "settled and still");
        let covered = Picture { grey: picture(None).grey.iter().map(|p| 255 - p).collect(), ..picture(None) };
        let skipped = (11..25).filter(|i| g.check(&s, &mut None, &covered, i * 500_000).1).count();
        assert_eq!(skipped, 0, "a scene changing wholesale is analysed");
    }
}
