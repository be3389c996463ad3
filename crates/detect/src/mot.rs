//! The tracker alone over detections in MOTChallenge text format, and its
//! tracks back in that format (`vigil track --mot-det`), so anyone can score
//! vigil's tracker with TrackEval or py-motmetrics on the field's own data.
//!
//! Input lines: `frame,id,x,y,w,h,conf[,...]` (frames from 1, `id` -1,
//! boxes in pixels from their top-left corner). Output lines:
//! `frame,id,x,y,w,h,conf,-1,-1,-1`, one per detection of a confirmed
//! track, ids from 1 in order of first appearance, the detection's own box.
//! Every frame from the first to the last is given to the tracker, those
//! without detections too, at `frame_rate`: the tracker works in time.

use crate::track::{FrameRef, Tracker, TrackerConfig};
use crate::{BBox, Detection};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The most frames a file may span: a typo'd frame number must not make a
/// loop of billions.
const MAX_FRAMES: i64 = 10_000_000;

/// What `track` made of a file.
#[derive(Debug, Default)]
pub struct Tracked {
    /// The tracks, in MOTChallenge text format.
    pub text: String,
    /// Frames given to the tracker.
    pub frames: u64,
    /// Time spent in the tracker alone (not reading or writing text).
    pub tracking: std::time::Duration,
}

/// Tracks the detections of `text`; an error names the line at fault.
pub fn track(text: &str, frame_rate: f64, cfg: TrackerConfig) -> Result<Tracked, String> {
    if !(frame_rate.is_finite() && frame_rate > 0.0 && frame_rate <= 1000.0) {
        return Err(format!("frame rate {frame_rate}: use a number of frames per second, 0 < F <= 1000"));
    }
    let mut frames: BTreeMap<i64, Vec<Detection>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why}: {line}", n + 1);
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < 7 {
            return Err(bad("expected frame,id,x,y,w,h,conf"));
        }
        let frame: i64 = f[0].parse().map_err(|_| bad("the frame is not a whole number"))?;
        if !(1..=MAX_FRAMES).contains(&frame) {
            return Err(bad(&format!("frame {frame} outside 1..={MAX_FRAMES}")));
        }
        let num = |i: usize| f[i].parse::<f32>().ok().filter(|v| v.is_finite());
        let (Some(x), Some(y), Some(w), Some(h), Some(conf)) = (num(2), num(3), num(4), num(5), num(6)) else {
            return Err(bad("x, y, w, h and conf must be numbers"));
        };
        frames.entry(frame).or_default().push(Detection {
            class: 0,
            score: conf,
            bbox: BBox { x1: x, y1: y, x2: x + w, y2: y + h },
        });
    }
    let (Some(&first), Some(&last)) = (frames.keys().next(), frames.keys().next_back()) else {
        return Ok(Tracked::default());
    };
    let mut tracker = Tracker::new("mot", cfg);
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Tracked::default();
    let none = Vec::new();
    for frame in first..=last {
        let dets = frames.get(&frame).unwrap_or(&none);
        let at = FrameRef { seq: frame as u64, time_us: ((frame - 1) as f64 * 1e6 / frame_rate).round() as i64 };
        let started = std::time::Instant::now();
        let update = tracker.update(at, dets);
        out.tracking += started.elapsed();
        out.frames += 1;
        let Some(update) = update else { continue };
        for t in &update.tracks {
            let next = ids.len() + 1;
            let id = *ids.entry(t.object_id.clone()).or_insert(next);
            let b = t.bbox;
            let _ = writeln!(
                out.text,
                "{frame},{id},{:.2},{:.2},{:.2},{:.2},{:.4},-1,-1,-1",
                b.x1,
                b.y1,
                b.x2 - b.x1,
                b.y2 - b.y1,
                t.score
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_walkers_keep_their_ids_across_a_frame_without_detections() {
        let mut text = String::from("# a comment\n");
        for f in 1..=20 {
            if f == 10 {
                continue; // nobody detected in frame 10
            }
            let x = 10.0 + 4.0 * f as f32;
            text += &format!("{f},-1,{x},50,40,100,0.9,-1,-1,-1\n{f},-1,{},60,40,100,0.8\n", 400.0 - 4.0 * f as f32);
        }
        let cfg = TrackerConfig { min_hits: 1, ..TrackerConfig::default() };
        let tracked = track(&text, 10.0, cfg).unwrap();
        assert_eq!(tracked.frames, 20);
        let out = tracked.text;
        let ids: std::collections::BTreeSet<&str> = out.lines().map(|l| l.split(',').nth(1).unwrap()).collect();
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["1", "2"], "{out}");
        assert_eq!(out.lines().count(), 38);
        assert!(out.starts_with("1,1,14.00,50.00,40.00,100.00,0.9000,-1,-1,-1\n"), "{out}");
    }

    #[test]
    fn bad_lines_are_named() {
        let cfg = TrackerConfig::default();
        for (text, why) in [
            ("1,-1,1,2,3\n", "line 1: expected"),
            ("x,-1,1,2,3,4,0.5\n", "not a whole number"),
            ("1,-1,1,2,3,4,0.5\n0,-1,1,2,3,4,0.5\n", "line 2: frame 0 outside"),
            ("1,-1,1,2,nan,4,0.5\n", "must be numbers"),
            ("99999999999,-1,1,2,3,4,0.5\n", "outside"),
        ] {
            let err = track(text, 25.0, cfg).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
        assert!(track("", 0.0, cfg).unwrap_err().contains("frame rate"));
        assert_eq!(track("", 25.0, cfg).unwrap().text, "");
    }
}
