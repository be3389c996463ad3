//! One camera's rules over its tracks: a pure state machine fed the
//! camera's analysed frames (`vigil.detections` records) in order, giving
//! rule events and, as minutes close, counts.

use crate::geometry::Point;
use crate::rules::{MOTION, Rules, applies};
use crate::window::{Closed, Windows, slot, window_of};
use schema::Detections;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An object unseen for this long (capture time) is gone: it leaves the
/// zones it was in. Longer than the detector keeps an unseen track (2 s).
pub const FORGET_US: i64 = 5_000_000;
/// How far past a line (a share of the object's box height) an object
/// must be before a crossing counts: a box jittering on the line does not
/// cross it again and again.
const LINE_MARGIN: f64 = 0.1;

/// Between two frames with motion on, at most this counts as motion (a
/// gap in the input is not seconds of motion).
const MOTION_GAP_US: i64 = 2_000_000;

/// What happened, by a rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    /// `zone-entered`, `zone-left`, `zone-loitering`, `zone-occupancy`,
    /// `line-crossed`; `motion-started`, `motion-ended`, `tamper` (rule
    /// `motion`, class `any`).
    pub kind: &'static str,
    pub rule: String,
    /// The object, for every kind but `zone-occupancy`.
    pub object_id: Option<String>,
    pub class: String,
    /// The frame that settled it.
    pub seq: u64,
    pub time_us: i64,
    /// The object's box there (x1, y1, x2, y2).
    pub bbox: Option<[f32; 4]>,
    /// `left-to-right` or `right-to-left` for a line; for
    /// `zone-left`, `track-ended` when the object was not seen leaving.
    pub detail: String,
    /// Objects of the class inside, for `zone-occupancy`.
    pub inside: Option<u32>,
}

/// A zone as one object stands to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Membership {
    inside: bool,
    /// Frames in a row the object was seen on the other side.
    streak: u32,
    /// Capture time it entered.
    since_us: i64,
    loitered: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Object {
    class: String,
    seen_us: i64,
    seq: u64,
    bbox: [f32; 4],
    /// By zone name.
    zones: BTreeMap<String, Membership>,
    /// By line name: the last point clearly on one side, and the side.
    lines: BTreeMap<String, Option<(Point, bool)>>,
}

/// What the processor keeps of one camera (checkpointed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Camera {
    objects: BTreeMap<String, Object>,
    /// Zones over their occupancy limit, by name and class.
    crowded: BTreeMap<String, Vec<String>>,
    windows: Windows,
    /// The last frame taken: an older or equal seq is a replay.
    last_seq: Option<u64>,
    /// Since when motion is on (capture time).
    #[serde(default)]
    moving_since: Option<i64>,
    /// The last frame with motion on.
    #[serde(default)]
    moved_at: Option<i64>,
    /// Frames refused as late since the start.
    pub late: u64,
}

impl Camera {
    /// Takes one analysed frame: the rule events it settles (in a fixed
    /// order), and the counts of the minutes that closed.
    pub fn frame(&mut self, rules: &Rules, d: &Detections, lateness_us: i64) -> (Vec<Hit>, Vec<Closed>) {
        let mut hits = Vec::new();
        if self.last_seq.is_some_and(|s| d.seq <= s) {
            return (hits, Vec::new());
        }
        self.last_seq = Some(d.seq);
        let t = d.capture_us;
        if !self.windows.frame(t) {
            self.late += 1;
            return (hits, Vec::new());
        }
        self.forget(rules, t, &mut hits);
        self.motion(d, &mut hits);
        for o in &d.objects {
            let Some(id) = &o.object_id else { continue };
            let obj = slot(&mut self.objects, id);
            obj.class.clone_from(&o.class);
            obj.seen_us = t;
            obj.seq = d.seq;
            obj.bbox = o.bbox;
            let foot = Point::foot(o.bbox);
            for z in rules.zones.iter().filter(|z| applies(&z.classes, &o.class)) {
                let m = slot(&mut obj.zones, &z.name);
                let hit = |kind| Hit {
                    kind,
                    rule: z.name.clone(),
                    object_id: Some(id.clone()),
                    class: o.class.clone(),
                    seq: d.seq,
                    time_us: t,
                    bbox: Some(o.bbox),
                    detail: String::new(),
                    inside: None,
                };
                if z.polygon.contains(foot) == m.inside {
                    m.streak = 0;
                } else {
                    m.streak += 1;
                    if m.streak >= z.min_frames {
                        m.inside = !m.inside;
                        m.streak = 0;
                        let tally = self.windows.tally(t, &z.name, &o.class);
                        if m.inside {
                            m.since_us = t;
                            m.loitered = false;
                            tally.entries += 1;
                            hits.push(hit("zone-entered"));
                        } else {
                            tally.exits += 1;
                            hits.push(hit("zone-left"));
                        }
                    }
                }
                if let Some(limit) = z.loiter_s
                    && m.inside
                    && !m.loitered
                    && (t - m.since_us) as f64 / 1e6 >= limit
                {
                    m.loitered = true;
                    let mut h = hit("zone-loitering");
                    h.detail = format!("inside for {:.1} s", (t - m.since_us) as f64 / 1e6);
                    hits.push(h);
                }
            }
            let margin = LINE_MARGIN * f64::from(o.bbox[3] - o.bbox[1]).abs();
            for l in rules.lines.iter().filter(|l| applies(&l.classes, &o.class)) {
                let side = l.segment.side(foot);
                if side.abs() <= margin {
                    continue; // on the line: which side is not clear yet
                }
                let right = side > 0.0;
                let before = slot(&mut obj.lines, &l.name).replace((foot, right));
                if let Some((from, was_right)) = before
                    && was_right != right
                    && l.segment.crossed_by(from, foot)
                {
                    let tally = self.windows.tally(t, &l.name, &o.class);
                    let detail = if right {
                        tally.crossings_left_to_right += 1;
                        "left-to-right"
                    } else {
                        tally.crossings_right_to_left += 1;
                        "right-to-left"
                    };
                    hits.push(Hit {
                        kind: "line-crossed",
                        rule: l.name.clone(),
                        object_id: Some(id.clone()),
                        class: o.class.clone(),
                        seq: d.seq,
                        time_us: t,
                        bbox: Some(o.bbox),
                        detail: detail.into(),
                        inside: None,
                    });
                }
            }
        }
        self.occupancy(rules, d.seq, t, &mut hits);
        (hits, self.windows.close(lateness_us))
    }

    /// The detector's motion flags as events, and seconds of motion in
    /// the minute's `motion` row.
    fn motion(&mut self, d: &Detections, hits: &mut Vec<Hit>) {
        let Some(m) = &d.motion else { return };
        let t = d.capture_us;
        let hit = |kind, detail: String| Hit {
            kind,
            rule: MOTION.into(),
            object_id: None,
            class: "any".into(),
            seq: d.seq,
            time_us: t,
            bbox: m.region,
            detail,
            inside: None,
        };
        let tally = self.windows.tally(t, MOTION, "any");
        if m.moving
            && let Some(before) = self.moved_at
        {
            // Only the part within this minute: a minute holds at most 60 s.
            let from = before.max(window_of(t)).max(t - MOTION_GAP_US);
            tally.motion_s += (t - from).max(0) as f64 / 1e6;
        }
        match (self.moving_since, m.moving) {
            (None, true) => {
                self.moving_since = Some(t);
                hits.push(hit("motion-started", format!("in {:.0} % of the image", m.score * 100.0)));
            }
            (Some(since), false) => {
                self.moving_since = None;
                let lasted = self.moved_at.unwrap_or(since) - since;
                hits.push(hit("motion-ended", format!("after {:.1} s", lasted as f64 / 1e6)));
            }
            _ => {}
        }
        self.moved_at = m.moving.then_some(t);
        if m.tamper {
            hits.push(hit("tamper", "the scene changed and stayed changed".into()));
        }
    }

    /// Objects unseen since `FORGET_US` before `t` are gone: out of every
    /// zone they were in.
    fn forget(&mut self, rules: &Rules, t: i64, hits: &mut Vec<Hit>) {
        let gone: Vec<String> =
            self.objects.iter().filter(|(_, o)| t - o.seen_us > FORGET_US).map(|(id, _)| id.clone()).collect();
        for id in gone {
            let o = self.objects.remove(&id).expect("listed");
            for (zone, m) in &o.zones {
                if m.inside && rules.zones.iter().any(|z| &z.name == zone) {
                    self.windows.tally(t, zone, &o.class).exits += 1;
                    hits.push(Hit {
                        kind: "zone-left",
                        rule: zone.clone(),
                        object_id: Some(id.clone()),
                        class: o.class.clone(),
                        seq: o.seq,
                        time_us: o.seen_us,
                        bbox: Some(o.bbox),
                        detail: "track-ended".into(),
                        inside: None,
                    });
                }
            }
        }
    }

    /// Objects inside each zone, by class: the counts' occupancy, and the
    /// zones whose limit is passed (or no longer).
    fn occupancy(&mut self, rules: &Rules, seq: u64, t: i64, hits: &mut Vec<Hit>) {
        for z in &rules.zones {
            let mut by_class: BTreeMap<&str, u32> = BTreeMap::new();
            for o in self.objects.values() {
                if o.zones.get(&z.name).is_some_and(|m| m.inside) {
                    *by_class.entry(&o.class).or_default() += 1;
                }
            }
            for (class, &n) in &by_class {
                let tally = self.windows.tally(t, &z.name, class);
                tally.occupancy_peak = tally.occupancy_peak.max(n);
                tally.occupancy_sum += u64::from(n);
            }
            let Some(limit) = z.max_objects else { continue };
            let crowded = self.crowded.entry(z.name.clone()).or_default();
            let classes: std::collections::BTreeSet<String> =
                by_class.keys().map(|c| c.to_string()).chain(crowded.iter().cloned()).collect();
            let mut now = Vec::new();
            for class in classes {
                let n = by_class.get(class.as_str()).copied().unwrap_or(0);
                let (over, was) = (n > limit, crowded.contains(&class));
                if over != was {
                    hits.push(Hit {
                        kind: "zone-occupancy",
                        rule: z.name.clone(),
                        object_id: None,
                        class: class.clone(),
                        seq,
                        time_us: t,
                        bbox: None,
                        detail: if over {
                            format!("more than {limit} inside")
                        } else {
                            format!("{limit} or fewer inside again")
                        },
                        inside: Some(n),
                    });
                }
                if over {
                    now.push(class);
                }
            }
            *crowded = now;
        }
    }

    /// Closes every open window (the end of a bounded input).
    pub fn close_all(&mut self) -> Vec<Closed> {
        self.windows.close_all()
    }
}

#[cfg(test)]
mod tests;
