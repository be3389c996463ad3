//! Tables of scripted tracks against zones and lines.

use super::*;
use crate::rules::RuleSpec;
use schema::{Object, SourceFrame};

const T0: i64 = 1_700_000_000_000_000;

/// A 20 × 40 box whose bottom centre stands at (x, y).
fn at(id: &str, class: &str, x: f32, y: f32) -> Object {
    Object {
        object_id: Some(id.into()),
        class: class.into(),
        class_id: 0,
        score: 0.9,
        bbox: [x - 10.0, y - 40.0, x + 10.0, y],
    }
}

/// Frame `seq`, 0.1 s apart.
fn frame(seq: u64, objects: Vec<Object>) -> Detections {
    Detections {
        id: format!("cam/{seq}/m"),
        camera: "cam".into(),
        seq,
        capture_us: T0 + seq as i64 * 100_000,
        model: "m".into(),
        source: SourceFrame { topic: "vigil.frames".into(), partition: 0, offset: seq as i64 },
        width: 640,
        height: 360,
        objects,
        motion: None,
    }
}

/// A zone 100..200 × 100..200, and a vertical line at x = 300 drawn
/// downwards (its right, on screen, is towards smaller x).
fn rules(zone: impl FnOnce(&mut RuleSpec)) -> Rules {
    let mut r = Rules::default();
    let mut z = RuleSpec {
        camera: "cam".into(),
        name: "yard".into(),
        points: vec![[100.0, 100.0], [200.0, 100.0], [200.0, 200.0], [100.0, 200.0]],
        ..Default::default()
    };
    zone(&mut z);
    r.add_zone(&z).unwrap();
    let l = RuleSpec {
        camera: "cam".into(),
        name: "gate".into(),
        start: Some([300.0, 0.0]),
        end: Some([300.0, 360.0]),
        ..Default::default()
    };
    r.add_line(&l).unwrap();
    r
}

/// Plays `frames`; every hit as `kind rule object detail`, and the counts.
fn play(rules: &Rules, frames: Vec<Vec<Object>>) -> (Vec<String>, Vec<Closed>) {
    let mut cam = Camera::default();
    let (mut hits, mut counts) = (Vec::new(), Vec::new());
    for (i, objects) in frames.into_iter().enumerate() {
        let (h, c) = cam.frame(rules, &frame(i as u64 + 1, objects), 5_000_000);
        hits.extend(h.into_iter().map(|h| {
            format!("{} {} {} {}", h.kind, h.rule, h.object_id.as_deref().unwrap_or("-"), h.detail).trim().to_string()
        }));
        counts.extend(c);
    }
    counts.extend(cam.close_all());
    (hits, counts)
}

fn walk(id: &str, from: (f32, f32), step: (f32, f32), n: usize) -> Vec<Object> {
    (0..n).map(|i| at(id, "person", from.0 + step.0 * i as f32, from.1 + step.1 * i as f32)).collect()
}

#[test]
fn entering_and_leaving_a_zone() {
    // Walks from x 50 to 250 across the zone (100..200) at y 150.
    let frames = walk("a", (50.0, 150.0), (10.0, 0.0), 21).into_iter().map(|o| vec![o]).collect();
    let (hits, counts) = play(&rules(|_| {}), frames);
    assert_eq!(hits, ["zone-entered yard a", "zone-left yard a"]);
    let yard = counts.iter().find(|c| c.rule == "yard").unwrap();
    assert_eq!((yard.tally.entries, yard.tally.exits, yard.tally.occupancy_peak), (1, 1, 1));
}

#[test]
fn jitter_at_the_edge_does_not_flap() {
    // Standing on the edge (x 100), one frame in, one out, for 30 frames.
    let frames = (0..30).map(|i| vec![at("a", "person", if i % 2 == 0 { 99.0 } else { 101.0 }, 150.0)]).collect();
    let (hits, _) = play(&rules(|_| {}), frames);
    assert!(hits.is_empty(), "{hits:?}");
}

#[test]
fn crossing_a_line_both_ways_and_not_on_jitter() {
    let mut frames: Vec<Vec<Object>> =
        walk("a", (250.0, 300.0), (10.0, 0.0), 11).into_iter().map(|o| vec![o]).collect();
    frames.extend(walk("a", (350.0, 300.0), (-10.0, 0.0), 11).into_iter().map(|o| vec![o]));
    // Then sways on the line itself: never clearly across.
    frames.extend((0..20).map(|i| vec![at("a", "person", if i % 2 == 0 { 298.0 } else { 302.0 }, 300.0)]));
    let (hits, counts) = play(&rules(|_| {}), frames);
    assert_eq!(hits, ["line-crossed gate a right-to-left", "line-crossed gate a left-to-right"]);
    let gate = counts.iter().find(|c| c.rule == "gate").unwrap();
    assert_eq!((gate.tally.crossings_left_to_right, gate.tally.crossings_right_to_left), (1, 1));
}

#[test]
fn passing_beyond_a_line_end_is_no_crossing() {
    let mut r = Rules::default();
    let spec = RuleSpec {
        camera: "cam".into(),
        name: "short".into(),
        start: Some([300.0, 0.0]),
        end: Some([300.0, 100.0]),
        ..Default::default()
    };
    r.add_line(&spec).unwrap();
    let frames = walk("a", (250.0, 300.0), (10.0, 0.0), 11).into_iter().map(|o| vec![o]).collect();
    assert!(play(&r, frames).0.is_empty());
}

#[test]
fn a_track_ending_inside_leaves_the_zone_once_forgotten() {
    let mut frames: Vec<Vec<Object>> = (0..5).map(|_| vec![at("a", "person", 150.0, 150.0)]).collect();
    // Nobody for 6 s (60 frames at 0.1 s), then someone else far away.
    frames.extend((0..60).map(|_| vec![]));
    frames.push(vec![at("b", "person", 500.0, 300.0)]);
    let (hits, _) = play(&rules(|_| {}), frames);
    assert_eq!(hits, ["zone-entered yard a", "zone-left yard a track-ended"]);
}

#[test]
fn loitering_counts_from_entry_at_the_limit() {
    let limit = |secs: f64| {
        let r = rules(|z| z.loiter_s = Some(secs));
        // Inside from frame 2 (entered at its second frame, min_frames 2)
        // to frame 31: 2.9 s after entering.
        let frames = (0..31).map(|_| vec![at("a", "person", 150.0, 150.0)]).collect();
        play(&r, frames).0
    };
    assert_eq!(limit(3.0), ["zone-entered yard a"], "T + 0.1 s short of the limit");
    assert_eq!(limit(2.9), ["zone-entered yard a", "zone-loitering yard a inside for 2.9 s"]);
}

#[test]
fn occupancy_over_the_limit_and_back() {
    let r = rules(|z| z.max_objects = Some(1));
    let mut frames: Vec<Vec<Object>> = (0..3).map(|_| vec![at("a", "person", 150.0, 150.0)]).collect();
    frames.extend((0..3).map(|_| vec![at("a", "person", 150.0, 150.0), at("b", "person", 160.0, 150.0)]));
    frames.extend((0..3).map(|_| vec![at("a", "person", 150.0, 150.0), at("b", "person", 260.0, 150.0)]));
    let (hits, counts) = play(&r, frames);
    let kinds: Vec<&str> = hits.iter().map(|h| h.split(' ').next().unwrap()).collect();
    assert_eq!(kinds, ["zone-entered", "zone-entered", "zone-occupancy", "zone-left", "zone-occupancy"], "{hits:?}");
    let yard = counts.iter().find(|c| c.rule == "yard").unwrap();
    assert_eq!(yard.tally.occupancy_peak, 2);
}

#[test]
fn classes_a_rule_does_not_count_are_ignored() {
    let r = rules(|z| z.classes = vec!["car".into()]);
    let frames = walk("a", (50.0, 150.0), (10.0, 0.0), 21).into_iter().map(|o| vec![o]).collect();
    let (hits, _) = play(&r, frames);
    assert!(hits.iter().all(|h| !h.contains("yard")), "{hits:?}");
}

#[test]
fn replays_and_late_frames_count_nothing() {
    let r = rules(|_| {});
    let mut cam = Camera::default();
    let inside = || vec![at("a", "person", 150.0, 150.0)];
    cam.frame(&r, &frame(1, inside()), 5_000_000);
    let (h, _) = cam.frame(&r, &frame(2, inside()), 5_000_000);
    assert_eq!(h.len(), 1);
    assert!(cam.frame(&r, &frame(2, inside()), 5_000_000).0.is_empty(), "a replay");
    // Two minutes on: the first minute closes; a frame from it is late.
    let mut later = frame(3, vec![]);
    later.capture_us = T0 + 120_000_000;
    assert!(!cam.frame(&r, &later, 5_000_000).1.is_empty());
    let mut old = frame(4, inside());
    old.capture_us = T0 + 1_000;
    assert!(cam.frame(&r, &old, 5_000_000).0.is_empty());
    assert_eq!(cam.late, 1);
}

#[test]
fn a_checkpoint_continues_exactly() {
    let r = rules(|z| z.loiter_s = Some(1.0));
    let frames: Vec<Vec<Object>> = walk("a", (50.0, 150.0), (5.0, 0.0), 60).into_iter().map(|o| vec![o]).collect();
    let mut whole = Camera::default();
    let mut first = Camera::default();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (i, objects) in frames.iter().enumerate() {
        let d = frame(i as u64 + 1, objects.clone());
        a.push(whole.frame(&r, &d, 5_000_000));
        if i == 20 {
            first = serde_json::from_str(&serde_json::to_string(&first).unwrap()).unwrap();
        }
        b.push(first.frame(&r, &d, 5_000_000));
    }
    assert_eq!(a, b);
    assert_eq!(whole, first);
}

#[test]
fn bad_rules_name_themselves() {
    let mut r = Rules::default();
    let spec = |name: &str| RuleSpec { camera: "cam".into(), name: name.into(), ..Default::default() };
    let two = RuleSpec { points: vec![[0.0, 0.0], [1.0, 1.0]], ..spec("tiny") };
    assert!(r.add_zone(&two).unwrap_err().contains("zone \"tiny\" of camera \"cam\": needs at least 3 points"));
    let dot = RuleSpec { start: Some([5.0, 5.0]), end: Some([5.0, 5.0]), ..spec("dot") };
    assert!(r.add_line(&dot).unwrap_err().contains("line \"dot\" of camera \"cam\": start and end must be"));
    let bad = RuleSpec { points: vec![[0.0, 0.0], [9.0, 0.0], [0.0, 9.0]], ..spec("a b") };
    assert!(r.add_zone(&bad).unwrap_err().contains("name it with"));
    let taken = RuleSpec { points: vec![[0.0, 0.0], [9.0, 0.0], [0.0, 9.0]], ..spec("motion") };
    assert!(r.add_zone(&taken).unwrap_err().contains("`motion` names the camera's motion events"));
}

/// Frame `seq` with the detector's motion flags.
fn moving(seq: u64, on: bool, tamper: bool) -> Detections {
    let mut d = frame(seq, vec![]);
    d.motion =
        Some(schema::FrameMotion { score: if on { 0.05 } else { 0.0 }, moving: on, tamper, ..Default::default() });
    d
}

#[test]
fn motion_flags_become_events_and_seconds() {
    // Frames 0.1 s apart: motion on for frames 10-29 (2 s), a tamper at 40.
    let mut cam = Camera::default();
    let none = Rules::default();
    let mut hits = Vec::new();
    for seq in 1..=50 {
        let d = moving(seq, (10..30).contains(&seq), seq == 40);
        hits.extend(
            cam.frame(&none, &d, 5_000_000).0.into_iter().map(|h| format!("{} {} {}", h.kind, h.seq, h.detail)),
        );
        // A replay changes nothing.
        assert!(cam.frame(&none, &d, 5_000_000).0.is_empty());
    }
    assert_eq!(
        hits,
        [
            "motion-started 10 in 5 % of the image",
            "motion-ended 30 after 1.9 s",
            "tamper 40 the scene changed and stayed changed"
        ]
    );
    let closed = cam.close_all();
    assert_eq!(closed.len(), 1);
    assert_eq!((closed[0].rule.as_str(), closed[0].class.as_str()), ("motion", "any"));
    assert!((closed[0].tally.motion_s - 1.9).abs() < 1e-9, "{}", closed[0].tally.motion_s);
}

#[test]
fn a_gap_in_motion_frames_is_not_motion() {
    let mut cam = Camera::default();
    let none = Rules::default();
    for seq in [1, 2, 200, 201] {
        cam.frame(&none, &moving(seq, true, false), 5_000_000);
    }
    let total: f64 = cam.close_all().iter().map(|c| c.tally.motion_s).sum();
    // 0.1 + at most 2 (a 19.8 s gap) + 0.1.
    assert!((total - 2.2).abs() < 1e-9, "{total}");
}

#[test]
fn motion_seconds_stay_within_their_minute() {
    // Moving frames 1.5 s apart across a minute boundary: the first frame
    // of the new minute counts only its part of the gap.
    let mut cam = Camera::default();
    let none = Rules::default();
    let at = |seq: u64, t: i64| {
        let mut d = moving(seq, true, false);
        d.capture_us = t;
        d
    };
    let minute = (T0 / 60_000_000 + 1) * 60_000_000;
    cam.frame(&none, &at(1, minute - 1_000_000), 5_000_000);
    cam.frame(&none, &at(2, minute + 500_000), 5_000_000);
    let closed = cam.close_all();
    let second: f64 = closed.iter().filter(|c| c.start_us == minute).map(|c| c.tally.motion_s).sum();
    assert!((second - 0.5).abs() < 1e-9, "{second}");
}
