//! The rules a camera's tracks are held to: zones and lines, declared in
//! config, checked here (a bad rule is an error naming it).

use crate::geometry::{Point, Polygon, Segment};
use serde::{Deserialize, Serialize};

/// The rule name of motion events and counts: no zone or line may take it.
pub const MOTION: &str = "motion";

/// A polygon on the ground: objects (by the bottom centre of their box)
/// enter and leave it, may loiter in it, and may crowd it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    pub name: String,
    pub polygon: Polygon,
    /// Classes the zone counts (`person`, `car`...); empty: every class.
    pub classes: Vec<String>,
    /// Frames in a row an object must be inside (or outside) before it
    /// counts as entered (or left): jitter at the edge does not flap.
    pub min_frames: u32,
    /// An object inside longer than this raises `zone-loitering`.
    pub loiter_s: Option<f64>,
    /// More objects inside than this raises `zone-occupancy`.
    pub max_objects: Option<u32>,
}

/// A directed line objects cross, from its left to its right or back (as
/// seen on screen, facing from `start` to `end`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub name: String,
    pub segment: Segment,
    pub classes: Vec<String>,
}

/// Every rule of one camera.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rules {
    pub zones: Vec<Zone>,
    pub lines: Vec<Line>,
}

pub use schema::RuleSpec;

/// Frames in a row that settle an object inside or outside a zone.
pub const DEFAULT_MIN_FRAMES: u32 = 2;

impl Rules {
    /// A camera's rules from their specs, checked; the first error.
    pub fn from_specs(zones: &[RuleSpec], lines: &[RuleSpec]) -> Result<Rules, String> {
        let mut r = Rules::default();
        for z in zones {
            r.add_zone(z)?;
        }
        for l in lines {
            r.add_line(l)?;
        }
        Ok(r)
    }

    /// Adds a zone checked from `s`; an error names the rule.
    pub fn add_zone(&mut self, s: &RuleSpec) -> Result<(), String> {
        let what = format!("zone {:?} of camera {:?}", s.name, s.camera);
        self.check_name(&s.name, &what)?;
        if s.start.is_some() || s.end.is_some() {
            return Err(format!("{what}: a zone has points, not start and end"));
        }
        let polygon = Polygon::new(s.points.iter().map(|&[x, y]| Point::new(x, y)).collect()).ok_or_else(|| {
            format!("{what}: needs at least 3 points, finite and enclosing an area (has {})", s.points.len())
        })?;
        let min_frames = s.min_frames.unwrap_or(DEFAULT_MIN_FRAMES);
        if !(1..=1000).contains(&min_frames) {
            return Err(format!("{what}: min_frames = {min_frames}: use 1..=1000"));
        }
        if let Some(t) = s.loiter_s.filter(|t| !(t.is_finite() && *t > 0.0 && *t <= 86_400.0)) {
            return Err(format!("{what}: loiter_s = {t}: use seconds, more than 0 and at most 86400"));
        }
        if s.max_objects == Some(0) {
            return Err(format!("{what}: max_objects = 0: use at least 1 (leave it out for no limit)"));
        }
        self.zones.push(Zone {
            name: s.name.clone(),
            polygon,
            classes: s.classes.clone(),
            min_frames,
            loiter_s: s.loiter_s,
            max_objects: s.max_objects,
        });
        Ok(())
    }

    /// Adds a line checked from `s`.
    pub fn add_line(&mut self, s: &RuleSpec) -> Result<(), String> {
        let what = format!("line {:?} of camera {:?}", s.name, s.camera);
        self.check_name(&s.name, &what)?;
        if !s.points.is_empty() || s.min_frames.is_some() || s.loiter_s.is_some() || s.max_objects.is_some() {
            return Err(format!("{what}: a line has start, end and classes only"));
        }
        let (Some([ax, ay]), Some([bx, by])) = (s.start, s.end) else {
            return Err(format!("{what}: needs start = [x, y] and end = [x, y]"));
        };
        let segment = Segment::new(Point::new(ax, ay), Point::new(bx, by))
            .ok_or_else(|| format!("{what}: start and end must be finite and apart (its length is 0)"))?;
        self.lines.push(Line { name: s.name.clone(), segment, classes: s.classes.clone() });
        Ok(())
    }

    fn check_name(&self, name: &str, what: &str) -> Result<(), String> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            return Err(format!("{what}: name it with 1-64 of A-Z a-z 0-9 - _ ."));
        }
        if name == MOTION {
            return Err(format!("{what}: `{MOTION}` names the camera's motion events and counts"));
        }
        if self.zones.iter().any(|z| z.name == name) || self.lines.iter().any(|l| l.name == name) {
            return Err(format!("{what}: another rule of the camera has that name"));
        }
        Ok(())
    }
}

/// Whether a rule with `classes` applies to `class`.
pub fn applies(classes: &[String], class: &str) -> bool {
    classes.is_empty() || classes.iter().any(|c| c == class)
}
