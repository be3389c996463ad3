//! Tests of the parent module (kept apart: the module stays readable).
//!
//! Most are scripted scenes: each detection carries the label of the
//! object the test means it to be, and [`play`] checks the tracker agrees.

use super::*;
use std::collections::BTreeMap;

const CAM: &str = "cam";

fn det(class: u16, x: f32, y: f32, w: f32, h: f32) -> Detection {
    Detection { class, score: 0.9, bbox: BBox { x1: x, y1: y, x2: x + w, y2: y + h } }
}

/// Frame `i` of a scene: analysed frames are sampled, so seqs have gaps.
fn frame(i: usize) -> FrameRef {
    FrameRef { seq: 100 + 10 * i as u64, time_us: 1_700_000_000_000_000 + 400_000 * i as i64 }
}

/// Per frame, the detections in list order, each labelled with the object
/// the test means it to be. A label is one id: an object that comes back
/// under a new id gets a new label. `_`: never to be reported.
type Scene = Vec<Vec<(char, Detection)>>;

fn scene(frames: usize, at: impl Fn(usize) -> Vec<(char, Detection)>) -> Scene {
    (0..frames).map(at).collect()
}

/// A 60 × 120 box of `class` starting at (x, y), moving (dx, dy) a frame.
fn walker(label: char, class: u16, i: usize, (x, y): (f32, f32), (dx, dy): (f32, f32)) -> (char, Detection) {
    (label, det(class, x + dx * i as f32, y + dy * i as f32, 60.0, 120.0))
}

/// Detections sorted by left edge, as a detector might list them.
fn by_x(mut v: Vec<(char, Detection)>) -> Vec<(char, Detection)> {
    v.sort_by(|a, b| a.1.bbox.x1.total_cmp(&b.1.bbox.x1));
    v
}

/// A small deterministic wobble of -2..=2 px.
fn jitter(i: usize, k: usize) -> f32 {
    ((i * 7919 + k * 104_729) % 5) as f32 - 2.0
}

struct Case {
    name: &'static str,
    cfg: TrackerConfig,
    scene: Scene,
    /// Labels of the `appeared` events, in order.
    appeared: &'static str,
    /// Labels of the `left` events, then of `finish`, in order.
    left: &'static str,
}

struct Seen {
    first: FrameRef,
    index: usize,
    count: u32,
    last: FrameRef,
}

/// Plays a case, checking each detection's report, each event and the ids.
fn play(case: &Case) {
    let name = case.name;
    let mut tracker = Tracker::new(CAM, case.cfg);
    let min_hits = case.cfg.min_hits.max(1);
    let mut seen: BTreeMap<char, Seen> = BTreeMap::new();
    let id_of = |s: &Seen| format!("{CAM}/{}/{}", s.first.seq, s.index);
    let (mut appeared, mut left) = (String::new(), String::new());
    let label_of = |seen: &BTreeMap<char, Seen>, id: &str| {
        *seen.iter().find(|(_, s)| id_of(s) == id).unwrap_or_else(|| panic!("{name}: unknown object {id}")).0
    };
    let check_left = |seen: &BTreeMap<char, Seen>, s: &ObjectSummary, left: &mut String| {
        let l = label_of(seen, &s.object_id);
        let want = &seen[&l];
        assert_eq!((s.first_seq, s.last_seq, s.sightings), (want.first.seq, want.last.seq, want.count), "{name}: {l}");
        assert_eq!((s.first_seen_us, s.last_seen_us), (want.first.time_us, want.last.time_us), "{name}: {l}");
        left.push(l);
    };
    for (i, dets) in case.scene.iter().enumerate() {
        let f = frame(i);
        let list: Vec<Detection> = dets.iter().map(|(_, d)| *d).collect();
        let up = tracker.update(f, &list).unwrap_or_else(|| panic!("{name}: frame {i} refused"));
        let mut reported = vec![None; list.len()];
        for (n, t) in up.tracks.iter().enumerate() {
            assert!(n == 0 || up.tracks[n - 1].detection < t.detection, "{name}: frame {i}: order");
            assert_eq!(
                (t.class, t.score, t.bbox),
                (list[t.detection].class, list[t.detection].score, list[t.detection].bbox)
            );
            reported[t.detection] = Some(t.object_id.clone());
        }
        for (d, (label, _)) in dets.iter().enumerate() {
            if *label == '_' {
                assert_eq!(reported[d], None, "{name}: frame {i}: detection {d}");
                continue;
            }
            let s = seen.entry(*label).or_insert(Seen { first: f, index: d, count: 0, last: f });
            s.count += 1;
            s.last = f;
            let want = (s.count >= min_hits).then(|| id_of(s));
            assert_eq!(reported[d], want, "{name}: frame {i}: detection {d} ({label})");
        }
        for s in &up.appeared {
            let l = label_of(&seen, &s.object_id);
            assert_eq!((s.first_seq, s.last_seq, s.sightings), (seen[&l].first.seq, f.seq, min_hits), "{name}: {l}");
            assert_eq!(s.camera, CAM);
            appeared.push(l);
        }
        for s in &up.left {
            check_left(&seen, s, &mut left);
        }
    }
    for s in &tracker.finish() {
        check_left(&seen, s, &mut left);
    }
    assert_eq!(appeared, case.appeared, "{name}: appeared");
    assert_eq!(left, case.left, "{name}: left");
}

/// Counted in frames only (`max_age_s` 0), as the scripted scenes are;
/// every usable detection of 0.5 or more may start a track.
fn cfg(max_age: u32, min_hits: u32, class_aware: bool) -> TrackerConfig {
    TrackerConfig {
        max_age,
        min_hits,
        class_aware,
        max_age_s: 0.0,
        high_score: 0.5,
        new_track_score: 0.5,
        ..TrackerConfig::default()
    }
}

/// An object seen in frames `0..20` and from `20 + gap` to 40, moving.
fn occluded(gap: usize, after: char) -> Scene {
    scene(40 + gap, |i| match i {
        0..20 => vec![walker('a', 0, i, (0.0, 50.0), (5.0, 1.0))],
        _ if i < 20 + gap => vec![],
        _ => vec![walker(after, 0, i, (0.0, 50.0), (5.0, 1.0))],
    })
}

/// A class 2 box that the model calls class 7 from frame 15 on.
fn class_flip(after: char) -> Scene {
    scene(30, |i| {
        let (l, c) = if i < 15 { ('a', 2) } else { (after, 7) };
        vec![walker(l, c, i, (100.0, 100.0), (3.0, 0.0))]
    })
}

/// Boxes neither to follow nor to compare, each beside a real object.
fn with_bad_boxes(min_hits: u32) -> Case {
    let bad = [
        BBox { x1: f32::NAN, y1: 0.0, x2: 10.0, y2: 10.0 },
        BBox { x1: 0.0, y1: 0.0, x2: f32::INFINITY, y2: 10.0 },
        BBox { x1: 100.0, y1: 100.0, x2: 100.0, y2: 150.0 },
        BBox { x1: 150.0, y1: 100.0, x2: 100.0, y2: 150.0 },
        BBox { x1: -1e30, y1: -1e30, x2: 1e30, y2: 1e30 },
    ];
    Case {
        name: "bad boxes and scores",
        cfg: cfg(15, min_hits, true),
        scene: scene(20, |i| {
            let mut v: Vec<_> = bad.iter().map(|b| ('_', Detection { class: 0, score: 0.5, bbox: *b })).collect();
            let good = walker('a', 0, i, (100.0, 100.0), (1.0, 0.0));
            v.push(('_', Detection { score: f32::NAN, ..good.1 }));
            v.push(('_', Detection { score: f32::INFINITY, ..good.1 }));
            v.insert(i % v.len(), good);
            v
        }),
        appeared: "a",
        left: "a",
    }
}

#[test]
fn scenes() {
    let d = TrackerConfig::default();
    let cases = vec![
        Case { name: "nothing", cfg: d, scene: scene(10, |_| vec![]), appeared: "", left: "" },
        Case {
            name: "a long straight run with jitter",
            cfg: d,
            scene: scene(1000, |i| {
                let (x, y) = (2.0 * i as f32 + jitter(i, 0), 0.5 * i as f32 + jitter(i, 1));
                vec![('a', det(0, x, y, 80.0 + jitter(i, 2), 160.0 + jitter(i, 3)))]
            }),
            appeared: "a",
            left: "a",
        },
        Case {
            name: "two crossing fast: only the velocity tells them apart",
            cfg: d,
            scene: scene(21, |i| {
                by_x(vec![
                    walker('a', 0, i, (10.0, 100.0), (25.0, 0.0)),
                    walker('b', 0, i, (510.0, 105.0), (-25.0, 0.0)),
                ])
            }),
            appeared: "ab",
            left: "ab",
        },
        Case {
            name: "two crossing slowly, overlapping for many frames",
            cfg: d,
            scene: scene(80, |i| {
                by_x(vec![walker('a', 0, i, (10.0, 100.0), (4.0, 0.5)), walker('b', 0, i, (310.0, 110.0), (-4.0, 0.0))])
            }),
            appeared: "ab",
            left: "ab",
        },
        Case {
            name: "three in a row, one starting later",
            cfg: d,
            scene: scene(50, |i| {
                let mut v =
                    vec![walker('a', 0, i, (0.0, 0.0), (3.0, 0.0)), walker('b', 0, i, (100.0, 0.0), (3.0, 0.0))];
                if i >= 10 {
                    v.push(walker('c', 0, i, (200.0, 0.0), (3.0, 0.0)));
                }
                v
            }),
            appeared: "abc",
            left: "abc",
        },
        Case {
            name: "occluded for max_age frames keeps its id",
            cfg: cfg(5, 3, true),
            scene: occluded(5, 'a'),
            appeared: "a",
            left: "a",
        },
        Case {
            name: "occluded for longer gets a new id",
            cfg: cfg(5, 3, true),
            scene: occluded(6, 'b'),
            appeared: "ab",
            left: "ab",
        },
        Case {
            name: "stopping while hidden keeps the id (its box far from the prediction)",
            cfg: d,
            scene: scene(40, |i| match i {
                0..15 => vec![walker('a', 0, i, (0.0, 50.0), (10.0, 0.0))],
                15..20 => vec![],
                _ => vec![walker('a', 0, 15, (0.0, 50.0), (10.0, 0.0))],
            }),
            appeared: "a",
            left: "a",
        },
        Case {
            name: "unconfirmed flicker is never reported",
            cfg: cfg(15, 3, true),
            scene: scene(40, |i| {
                let mut v = vec![walker('a', 0, i, (0.0, 0.0), (1.0, 0.0))];
                // Two frames of three: never three in a row.
                if i % 3 != 2 {
                    v.push(('_', det(0, 400.0, 400.0, 50.0, 50.0)));
                }
                v
            }),
            appeared: "a",
            left: "a",
        },
        Case {
            name: "min_hits 1 reports at once, and again after too long a gap",
            cfg: cfg(2, 1, true),
            scene: scene(10, |i| match i {
                0..2 => vec![walker('a', 0, i, (0.0, 0.0), (0.0, 0.0))],
                5..7 => vec![walker('b', 0, i, (0.0, 0.0), (0.0, 0.0))],
                _ => vec![],
            }),
            appeared: "ab",
            left: "ab",
        },
        Case {
            name: "class-aware: a rider and a bicycle in one box",
            cfg: d,
            scene: scene(40, |i| {
                let p = walker('p', 0, i, (50.0, 50.0), (6.0, 0.0));
                let b = walker('b', 1, i, (52.0, 60.0), (6.0, 0.0));
                if i % 2 == 0 { vec![p, b] } else { vec![b, p] }
            }),
            // Confirmed by the second frame, in its order.
            appeared: "bp",
            left: "pb",
        },
        Case {
            name: "class-aware: a change of class is a new object",
            cfg: d,
            scene: class_flip('b'),
            appeared: "ab",
            left: "ab",
        },
        Case {
            name: "not class-aware: a change of class keeps the id",
            cfg: cfg(15, 3, false),
            scene: class_flip('a'),
            appeared: "a",
            left: "a",
        },
        with_bad_boxes(3),
        with_bad_boxes(1),
    ];
    for case in &cases {
        play(case);
    }
}

#[test]
fn first_frame_ids_follow_the_detection_order() {
    let (p, q, r) = (det(0, 0.0, 0.0, 50.0, 50.0), det(0, 100.0, 0.0, 50.0, 50.0), det(0, 200.0, 0.0, 50.0, 50.0));
    for (order, want) in
        [([p, q, r], ["cam/100/0", "cam/100/1", "cam/100/2"]), ([r, p, q], ["cam/100/1", "cam/100/2", "cam/100/0"])]
    {
        let mut t = Tracker::new(CAM, cfg(15, 1, true));
        let mut ids = Vec::new();
        for (i, frame_order) in [order, [p, q, r], [r, q, p]].iter().enumerate() {
            let up = t.update(frame(i), frame_order).unwrap();
            let id = |b: &Detection| up.tracks[frame_order.iter().position(|d| d == b).unwrap()].object_id.clone();
            ids.push([id(&p), id(&q), id(&r)]);
        }
        assert!(ids.iter().all(|got| got == &want), "{order:?}: {ids:?}");
    }
}

#[test]
fn summaries_carry_the_life_of_the_object() {
    let mut t = Tracker::new(CAM, cfg(2, 2, true));
    let scores = [0.5, 0.8, 0.6, 0.8];
    let mut ups = Vec::new();
    for (i, s) in scores.iter().enumerate() {
        ups.push(t.update(frame(i), &[Detection { score: *s, ..det(3, 10.0, 10.0, 40.0, 40.0) }]).unwrap());
    }
    for i in 4..7 {
        ups.push(t.update(frame(i), &[]).unwrap());
    }
    let best = Sighting {
        seq: frame(1).seq,
        time_us: frame(1).time_us,
        class: 3,
        score: 0.8,
        bbox: det(3, 10.0, 10.0, 40.0, 40.0).bbox,
    };
    let summary = |last: usize, sightings| ObjectSummary {
        object_id: "cam/100/0".into(),
        camera: CAM.into(),
        class: 3,
        first_seen_us: frame(0).time_us,
        last_seen_us: frame(last).time_us,
        first_seq: frame(0).seq,
        last_seq: frame(last).seq,
        sightings,
        best,
    };
    let events: Vec<_> = ups.iter().map(|u| (u.appeared.clone(), u.left.clone())).collect();
    let none = (vec![], vec![]);
    // Appears on its second sighting; leaves when unseen for a third frame.
    let want = [
        none.clone(),
        (vec![summary(1, 2)], vec![]),
        none.clone(),
        none.clone(),
        none.clone(),
        none.clone(),
        (vec![], vec![summary(3, 4)]),
    ];
    assert_eq!(events, want);
    assert_eq!(t.finish(), vec![]);
}

#[test]
fn replayed_frames_are_refused() {
    let mut t = Tracker::new(CAM, TrackerConfig::default());
    let d = [det(0, 0.0, 0.0, 10.0, 10.0)];
    assert!(t.update(frame(5), &d).is_some());
    let before = t.clone();
    assert_eq!(t.update(frame(5), &d), None);
    assert_eq!(t.update(frame(4), &d), None);
    assert_eq!(t, before);
    assert_eq!(t.last_seq(), Some(frame(5).seq));
    assert!(t.update(frame(6), &d).is_some());
}

/// A busy random scene: objects coming and going on straight paths with
/// jitter, missed detections, false positives, shuffled lists.
fn busy_scene(seed: u64, frames: usize) -> Vec<Vec<Detection>> {
    let mut rng = Lcg(seed);
    let mut objects: Vec<(u16, f32, f32, f32, f32, usize, usize)> = Vec::new();
    for _ in 0..20 {
        let start = rng.below(frames as u64) as usize;
        let len = 5 + rng.below(100) as usize;
        let (x, y) = (rng.below(1800) as f32, rng.below(1000) as f32);
        let (dx, dy) = (rng.below(21) as f32 - 10.0, rng.below(11) as f32 - 5.0);
        objects.push((rng.below(3) as u16, x, y, dx, dy, start, start + len));
    }
    (0..frames)
        .map(|i| {
            let mut v: Vec<Detection> = Vec::new();
            for &(class, x, y, dx, dy, from, to) in &objects {
                if (from..to).contains(&i) && rng.below(10) != 0 {
                    let t = (i - from) as f32;
                    let j = rng.below(5) as f32 - 2.0;
                    v.push(Detection {
                        score: 0.3 + rng.below(70) as f32 / 100.0,
                        ..det(class, x + dx * t + j, y + dy * t, 60.0, 120.0)
                    });
                }
            }
            if rng.below(4) == 0 {
                v.push(det(0, rng.below(1800) as f32, rng.below(1000) as f32, 40.0, 40.0));
            }
            for k in (1..v.len()).rev() {
                v.swap(k, rng.below(k as u64 + 1) as usize);
            }
            v
        })
        .collect()
}

/// Every update and the final summaries.
fn run_from(mut t: Tracker, scene: &[Vec<Detection>], from: usize) -> (Vec<Update>, Vec<ObjectSummary>) {
    let ups = scene.iter().enumerate().skip(from).map(|(i, d)| t.update(frame(i), d).unwrap()).collect();
    (ups, t.finish())
}

#[test]
fn same_frames_same_ids_and_events() {
    for seed in 1..6 {
        let scene = busy_scene(seed, 300);
        let a = run_from(Tracker::new(CAM, TrackerConfig::default()), &scene, 0);
        let b = run_from(Tracker::new(CAM, TrackerConfig::default()), &scene, 0);
        assert_eq!(a, b, "seed {seed}");
        assert!(!a.1.is_empty() && a.0.iter().any(|u| !u.left.is_empty()), "seed {seed}: scene too quiet");
        // Ids are never reused: each appears once, and leaves once.
        let appeared: Vec<_> = a.0.iter().flat_map(|u| &u.appeared).map(|s| &s.object_id).collect();
        let mut left: Vec<_> = a.0.iter().flat_map(|u| &u.left).chain(&a.1).map(|s| &s.object_id).collect();
        let mut unique = appeared.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), appeared.len(), "seed {seed}");
        left.sort();
        assert_eq!(left, unique, "seed {seed}");
    }
}

#[test]
fn a_copy_of_the_state_continues_exactly() {
    // Tracker must stay checkpointable: serde both ways.
    fn serde_both_ways<T: Serialize + for<'de> Deserialize<'de>>() {}
    serde_both_ways::<Tracker>();
    let scene = busy_scene(42, 200);
    let whole = run_from(Tracker::new(CAM, TrackerConfig::default()), &scene, 0);
    for cut in [0, 1, 25, 99, 150, 199] {
        let mut t = Tracker::new(CAM, TrackerConfig::default());
        let mut ups: Vec<Update> = (0..cut).map(|i| t.update(frame(i), &scene[i]).unwrap()).collect();
        let (rest, finished) = run_from(t.clone(), &scene, cut);
        ups.extend(rest);
        assert_eq!((ups, finished), whole, "cut at {cut}");
    }
}

#[test]
fn cameras_have_their_own_ids() {
    let d = [det(0, 0.0, 0.0, 10.0, 10.0)];
    let ids: Vec<String> = ["north", "south"]
        .iter()
        .map(|cam| {
            let mut t = Tracker::new(cam, cfg(15, 1, true));
            t.update(frame(0), &d).unwrap().tracks[0].object_id.clone()
        })
        .collect();
    assert_eq!(ids, ["north/100/0", "south/100/0"]);
}

/// A tiny LCG (Knuth's MMIX constants): reproducible input, no crate.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// People walking (1.4 m/s: about 0.8 of their height a second), analysed
/// once every 2.5 s as the live detector's key-frame sampling does: each
/// moves two heights (five widths) between samples, far beyond any overlap.
#[test]
fn sparse_samples_of_walking_people_get_ids_and_keep_them() {
    let t = |i: usize| FrameRef { seq: 1000 + 25 * i as u64, time_us: 2_500_000 * i as i64 };
    // Two people crossing, one standing; height 150 px.
    let at = |i: usize| {
        let s = i as f32 * 2.5;
        vec![
            det(0, 100.0 + 120.0 * s, 200.0, 60.0, 150.0),
            det(0, 1500.0 - 110.0 * s, 230.0, 60.0, 150.0),
            det(0, 700.0, 500.0, 60.0, 150.0),
        ]
    };
    let mut tracker = Tracker::new(CAM, TrackerConfig::default());
    let mut ids: Vec<Vec<Option<String>>> = Vec::new();
    for i in 0..5 {
        let dets = at(i);
        let up = tracker.update(t(i), &dets).unwrap();
        let mut row = vec![None; dets.len()];
        for o in up.tracks {
            row[o.detection] = Some(o.object_id);
        }
        ids.push(row);
    }
    assert!(ids[0].iter().all(Option::is_none), "one sighting is no id yet: {ids:?}");
    for (d, first) in ids[1].iter().enumerate() {
        let first = first.as_ref().unwrap_or_else(|| panic!("person {d} has an id at the second sample: {ids:?}"));
        assert_eq!(first, &format!("{CAM}/1000/{d}"), "the id of the first sighting");
        for (i, row) in ids.iter().enumerate().skip(2) {
            assert_eq!(row[d].as_ref(), Some(first), "sample {i}: person {d} keeps the id: {ids:?}");
        }
    }
}

/// ByteTrack's second association: a walker hidden for a frame, then
/// half hidden for a while, scores low, and stays the same object; a
/// low-scoring box alone starts nothing.
#[test]
fn low_scores_continue_a_track_but_never_start_one() {
    let d = TrackerConfig::default();
    let low = d.high_score - 0.05;
    let mut tracker = Tracker::new(CAM, d);
    let mut id = None;
    for i in 0..30 {
        let mut w = walker('a', 0, i, (0.0, 50.0), (5.0, 0.0)).1;
        if (10..20).contains(&i) {
            w.score = low;
        }
        let stray = Detection { score: low, ..det(0, 900.0, 400.0, 60.0, 120.0) };
        if i == 9 {
            tracker.update(frame(i), &[stray]).unwrap();
            continue;
        }
        let up = tracker.update(frame(i), &[w, stray]).unwrap();
        assert!(up.tracks.iter().all(|t| t.detection == 0), "frame {i}: the stray got an id");
        if i >= 1 {
            let got = up.tracks.first().map(|t| t.object_id.clone());
            assert!(got.is_some(), "frame {i}: the walker lost its id");
            assert_eq!(id.get_or_insert(got.clone()), &got, "frame {i}");
        }
    }
}

#[test]
fn an_older_checkpoint_loads_without_its_tracks() {
    // What vigil's SORT tracker wrote before: its config, last seq and tracks.
    let old = r#"{"camera":"cam","cfg":{"max_age":9,"min_hits":3,"iou_threshold":0.3,"class_aware":true},
        "last_seq":120,"tracks":[{"id":"cam/100/0","kf":{"x":[1,2,3,4,5,6,7],"p":[[0]]},"hits":4,"missed":0}]}"#;
    let mut t: Tracker = serde_json::from_str(old).unwrap();
    assert!(t.tracks.is_empty());
    assert_eq!((t.cfg.max_age, t.cfg.max_age_s), (9, TrackerConfig::default().max_age_s));
    assert!(t.update(frame(0), &[det(0, 0.0, 0.0, 10.0, 10.0)]).is_some(), "it carries on");
}
