//! Scripted scenes: a textured still scene, a block moving across it, a
//! change of light, a new scene.

use super::*;

const W: usize = 320;
const H: usize = 180;
/// Frames 0.2 s apart.
const STEP_US: i64 = 200_000;

/// A checkerboard of 8-pixel squares, values 60-160, `light` added.
fn scene(light: u8) -> Vec<u8> {
    (0..W * H).map(|i| (60 + ((i % W) / 8 + (i / W) / 8) % 2 * 80 + (i % W) % 17) as u8 + light).collect()
}

/// `base` with a 30 × 30 block of 230 at (x, 60).
fn with_block(base: &[u8], x: usize) -> Vec<u8> {
    let mut v = base.to_vec();
    for y in 60..90 {
        for px in x..(x + 30).min(W) {
            v[y * W + px] = 230;
        }
    }
    v
}

/// Plays frames: every output, in order.
fn play(frames: &[Vec<u8>]) -> Vec<MotionOut> {
    let cfg = MotionConfig::default();
    let mut m = Motion::default();
    frames.iter().enumerate().map(|(i, f)| m.frame(&cfg, &Grey::packed(W, H, f), None, i as i64 * STEP_US)).collect()
}

fn count(outs: &[MotionOut], f: impl Fn(&MotionOut) -> bool) -> usize {
    outs.iter().filter(|o| f(o)).count()
}

#[test]
fn a_still_scene_with_noise_has_no_motion() {
    let base = scene(0);
    let frames: Vec<Vec<u8>> = (0..50)
        .map(|i| base.iter().enumerate().map(|(j, &p)| p.saturating_add(((i * 7 + j * 13) % 7) as u8)).collect())
        .collect();
    let outs = play(&frames);
    assert_eq!(count(&outs, |o| o.started || o.region.is_some()), 0);
}

#[test]
fn a_moving_block_starts_and_ends_motion_around_its_moves() {
    let base = scene(0);
    let mut frames: Vec<Vec<u8>> = (0..20).map(|_| base.clone()).collect();
    frames.extend((0..30).map(|i| with_block(&base, 20 + 8 * i)));
    frames.extend((0..40).map(|_| base.clone()));
    let outs = play(&frames);
    let started: Vec<usize> = (0..outs.len()).filter(|&i| outs[i].started).collect();
    assert_eq!(started, [21], "started at the second moving frame");
    let r = outs[25].region.expect("a region while it moves");
    let x = (20 + 8 * 5) as f32;
    assert!(r[0] <= x && r[2] >= x + 30.0 && r[1] <= 60.0 && r[3] >= 90.0, "{r:?} holds the block at {x}");
    let ended: Vec<usize> = (0..outs.len()).filter(|&i| outs[i].ended.is_some()).collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
    // The block is gone after frame 49; motion ends end_s (10 frames)
    // after the last moving frame, which the scene's average fading may
    // keep for a few frames more.
    assert!((59..=66).contains(&ended[0]), "ended at frame {}", ended[0]);
}

#[test]
fn a_change_of_light_is_no_motion_storm() {
    let (dark, light) = (scene(0), scene(60));
    let mut frames: Vec<Vec<u8>> = (0..20).map(|_| dark.clone()).collect();
    frames.extend((0..40).map(|_| light.clone()));
    let outs = play(&frames);
    assert_eq!(count(&outs, |o| o.started || o.tamper), 0);
    assert_eq!(count(&outs, |o| o.recalibrated), 1);
}

#[test]
fn a_new_scene_that_stays_is_one_tamper_alarm() {
    let base = scene(0);
    let other: Vec<u8> = base.iter().map(|&p| 255 - p).collect();
    let mut frames: Vec<Vec<u8>> = (0..20).map(|_| base.clone()).collect();
    frames.extend((0..80).map(|_| other.clone()));
    let outs = play(&frames);
    let tamper: Vec<usize> = (0..outs.len()).filter(|&i| outs[i].tamper).collect();
    // 10 s (50 frames) after the change at frame 20.
    assert_eq!(tamper, [70]);
    assert_eq!(count(&outs, |o| o.started || o.recalibrated), 0);
}

#[test]
fn a_brief_global_change_is_neither() {
    // A flash of another scene for 1 s: no tamper, no motion.
    let base = scene(0);
    let other: Vec<u8> = base.iter().map(|&p| 255 - p).collect();
    let mut frames: Vec<Vec<u8>> = (0..20).map(|_| base.clone()).collect();
    frames.extend((0..5).map(|_| other.clone()));
    frames.extend((0..20).map(|_| base.clone()));
    let outs = play(&frames);
    assert_eq!(count(&outs, |o| o.started || o.tamper || o.recalibrated), 0);
}

#[test]
fn odd_images_give_nothing() {
    let cfg = MotionConfig::default();
    let mut m = Motion::default();
    for (w, h, n) in [(0, 0, 0), (2, 2, 4), (320, 180, 100)] {
        let pixels = vec![0u8; n];
        assert_eq!(m.frame(&cfg, &Grey::packed(w, h, &pixels), None, 0), MotionOut::default());
    }
}

#[test]
fn motion_inside_a_mask_is_ignored() {
    let base = scene(0);
    let mut frames: Vec<Vec<u8>> = (0..20).map(|_| base.clone()).collect();
    frames.extend((0..30).map(|i| with_block(&base, 20 + 8 * i)));
    let cfg = MotionConfig::default();
    let play_masked = |mask: Option<Mask>| {
        let mut m = Motion::default();
        let mut mask = mask;
        frames
            .iter()
            .enumerate()
            .filter(|(i, f)| m.frame(&cfg, &Grey::packed(W, H, f), mask.as_mut(), *i as i64 * STEP_US).started)
            .count()
    };
    // The block runs along y 60-90: a mask over that band hides it, one
    // elsewhere does not.
    let band = |y1: f32, y2: f32| Mask::new(vec![vec![[0.0, y1], [W as f32, y1], [W as f32, y2], [0.0, y2]]], (W, H));
    assert_eq!(play_masked(Some(band(50.0, 100.0))), 0);
    assert_eq!(play_masked(Some(band(120.0, 170.0))), 1);
    assert_eq!(play_masked(None), 1);
}

#[test]
fn a_restored_state_continues_exactly() {
    let base = scene(0);
    let frames: Vec<Vec<u8>> =
        (0..60).map(|i| if i < 20 { base.clone() } else { with_block(&base, 8 * (i - 20)) }).collect();
    let cfg = MotionConfig::default();
    let mut live = Motion::default();
    let mut outs = Vec::new();
    let mut restored = None;
    for (i, f) in frames.iter().enumerate() {
        outs.push(live.frame(&cfg, &Grey::packed(W, H, f), None, i as i64 * STEP_US));
        if i == 30 {
            let json = serde_json::to_string(&live).unwrap();
            restored = Some((serde_json::from_str::<Motion>(&json).unwrap(), json.len()));
        }
    }
    let (mut back, size) = restored.unwrap();
    assert!(size < 80 * 1024, "a checkpoint of {size} bytes");
    for (i, f) in frames.iter().enumerate().skip(31) {
        assert_eq!(back.frame(&cfg, &Grey::packed(W, H, f), None, i as i64 * STEP_US), outs[i], "frame {i}");
    }
    assert_eq!(back, live);
}

#[test]
fn a_padded_image_is_read_by_its_stride() {
    let base = scene(0);
    let padded: Vec<u8> = base.chunks(W).flat_map(|row| row.iter().copied().chain([255; 32])).collect();
    let cfg = MotionConfig::default();
    let (mut a, mut b) = (Motion::default(), Motion::default());
    let block = with_block(&base, 100);
    let block_padded: Vec<u8> = block.chunks(W).flat_map(|row| row.iter().copied().chain([0; 32])).collect();
    for t in 0..3 {
        let (f, p) = if t == 0 { (&base, &padded) } else { (&block, &block_padded) };
        let oa = a.frame(&cfg, &Grey::packed(W, H, f), None, t * STEP_US);
        let ob = b.frame(&cfg, &Grey { width: W, height: H, stride: W + 32, pixels: p }, None, t * STEP_US);
        assert_eq!(oa, ob);
    }
}

#[test]
fn an_object_that_stops_becomes_scene_as_soon_at_any_frame_rate() {
    // The block moves for 2 s, then stays: motion ends about the same
    // time after it stopped whether frames come 2 or 10 a second.
    let base = scene(0);
    let cfg = MotionConfig::default();
    let ended_after = |fps: i64| {
        let step = 1_000_000 / fps;
        let mut m = Motion::default();
        for i in 0..fps * 30 {
            let t = i * step;
            let x = (20 + (t.clamp(5_000_000, 7_000_000) - 5_000_000) / 10_000) as usize;
            let f = if t < 5_000_000 { base.clone() } else { with_block(&base, x) };
            if let Some(_lasted) = m.frame(&cfg, &Grey::packed(W, H, &f), None, t).ended {
                return (t - 7_000_000) as f64 / 1e6;
            }
        }
        f64::INFINITY
    };
    let (slow, fast) = (ended_after(2), ended_after(10));
    assert!(slow < 8.0 && fast < 8.0, "ended {slow} s and {fast} s after it stopped");
    assert!((slow - fast).abs() <= 1.5, "ended {slow} s (2/s) and {fast} s (10/s) after it stopped");
}
