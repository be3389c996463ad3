//! SORT tracking for one camera, as a pure state machine (Bewley et al.,
//! "Simple Online and Realtime Tracking", 2016).
//!
//! For each analysed frame, every track's Kalman filter predicts one step,
//! the predicted boxes are matched to the frame's detections by the
//! Hungarian method on IoU, matched tracks are corrected, the others age,
//! and detections left over start new tracks.
//!
//! Invariants:
//! - **Ids.** A track's id is `"{camera}/{seq}/{index}"`: the seq of the
//!   frame of its first sighting and that detection's index in the frame's
//!   list. Frames must come in strictly increasing seq (an older or repeated
//!   seq is refused), so no id is given twice; camera names are unique, so
//!   ids are unique across cameras.
//! - **Determinism.** The same frames, with their detections in the same
//!   order (the detector sorts them deterministically), give the same ids
//!   and events, on any machine: tracks are kept in creation order, the
//!   assignment is a fixed computation over a matrix built in that order,
//!   nothing is hashed or random, and the float arithmetic is plain IEEE.
//! - **Checkpoints.** The whole state, config included, is
//!   serde-serialisable; a tracker restored from a checkpoint continues
//!   exactly as the original would (the filters' floats are stored as bit
//!   patterns, so even JSON restores them exactly).
//! - **Reporting.** A track is reported only once confirmed (`min_hits`
//!   sightings in a row); a tentative track missed once is dropped, since
//!   flickering false positives are what `min_hits` is there to hide. A
//!   confirmed track survives `max_age` analysed frames unseen (occlusion),
//!   then leaves.
//! - **Time.** The filter takes one step per analysed frame whatever the
//!   time between frames, as SORT does: velocities are per analysed frame.
//!   At a steady sampling rate that is exact; a frame lost now and then
//!   looks like a brief change of speed, which the filter absorbs.
//! - **Bad input.** A detection with a non-finite score or corner, or no
//!   width or height, is never matched, never starts a track and is never
//!   reported; nothing panics.

mod hungarian;
mod kalman;
#[cfg(test)]
mod tests;

use crate::{BBox, Detection};
use kalman::Kalman;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackerConfig {
    /// Analysed frames a confirmed track survives unseen (occlusions).
    pub max_age: u32,
    /// Sightings in a row before a track is reported (0 counts as 1).
    pub min_hits: u32,
    /// Least IoU between a track's predicted box and a detection for them
    /// to match; a match also needs some overlap, whatever this says.
    pub iou_threshold: f32,
    /// Match detections only to tracks of the same class.
    pub class_aware: bool,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig { max_age: 15, min_hits: 3, iou_threshold: 0.3, class_aware: true }
    }
}

/// The analysed frame a set of detections came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameRef {
    /// The frame's seq: per camera and stream, strictly increasing.
    pub seq: u64,
    /// Capture time, microseconds since the Unix epoch.
    pub time_us: i64,
}

/// One detection of a tracked object, in one frame.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sighting {
    pub seq: u64,
    pub time_us: i64,
    pub class: u16,
    pub score: f32,
    pub bbox: BBox,
}

/// A detection that belongs to a confirmed track.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackedObject {
    pub object_id: String,
    /// Index into the detections given to [`Tracker::update`].
    pub detection: usize,
    pub class: u16,
    pub score: f32,
    /// The detection's box (not the filter's smoothed one).
    pub bbox: BBox,
}

/// An object's life so far: what `appeared` and `left` events carry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectSummary {
    pub object_id: String,
    pub camera: String,
    /// The class of the best sighting.
    pub class: u16,
    pub first_seen_us: i64,
    pub last_seen_us: i64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Frames it was seen in.
    pub sightings: u32,
    /// The sighting with the highest score (the earliest of equals): the
    /// frame to show for the object.
    pub best: Sighting,
}

/// What one frame changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Update {
    /// One per detection of a confirmed track, in detection order.
    pub tracks: Vec<TrackedObject>,
    /// Tracks confirmed by this frame, in detection order.
    pub appeared: Vec<ObjectSummary>,
    /// Confirmed tracks unseen for more than `max_age` frames, in creation
    /// order.
    pub left: Vec<ObjectSummary>,
}

/// The tracks of one camera.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tracker {
    camera: String,
    cfg: TrackerConfig,
    /// The last frame taken, which later frames must follow.
    last_seq: Option<u64>,
    /// In creation order: the assignment's tie-breaking depends on it.
    tracks: Vec<Track>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Track {
    id: String,
    kf: Kalman,
    /// Sightings so far; for a tentative track also its run of sightings
    /// in a row, since a miss ends it.
    hits: u32,
    /// Analysed frames since the last sighting.
    missed: u32,
    first: FrameRef,
    last: FrameRef,
    best: Sighting,
}

impl Tracker {
    pub fn new(camera: &str, cfg: TrackerConfig) -> Self {
        Tracker { camera: camera.to_string(), cfg, last_seq: None, tracks: Vec::new() }
    }

    /// Settings changed by the operator since this state was saved apply
    /// from the next frame on.
    pub fn set_config(&mut self, cfg: TrackerConfig) {
        self.cfg = cfg;
    }

    /// The seq of the last frame taken: the next must be greater.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// Takes one analysed frame's detections. `None`, with nothing
    /// changed, for a frame not after the last one (a replay).
    pub fn update(&mut self, frame: FrameRef, detections: &[Detection]) -> Option<Update> {
        if self.last_seq.is_some_and(|last| frame.seq <= last) {
            return None;
        }
        self.last_seq = Some(frame.seq);
        let measured: Vec<Option<[f64; 4]>> =
            detections.iter().map(|d| if d.score.is_finite() { kalman::measure(&d.bbox) } else { None }).collect();
        let track_of = self.associate(detections, &measured);
        // The tracks from before this frame: only they can have gone unseen.
        let rows = self.tracks.len();

        // Correct the matched tracks and start new ones, in detection order
        // (which is what makes the new ids deterministic).
        let mut out = Update::default();
        let min_hits = self.cfg.min_hits.max(1);
        for (d, det) in detections.iter().enumerate() {
            let sighting =
                Sighting { seq: frame.seq, time_us: frame.time_us, class: det.class, score: det.score, bbox: det.bbox };
            let t = match (track_of[d], measured[d]) {
                (Some(t), Some(z)) => {
                    let track = &mut self.tracks[t];
                    track.kf.update(z);
                    track.hits = track.hits.saturating_add(1);
                    track.missed = 0;
                    track.last = frame;
                    if det.score > track.best.score {
                        track.best = sighting;
                    }
                    t
                }
                (None, Some(z)) => {
                    self.tracks.push(Track {
                        id: format!("{}/{}/{}", self.camera, frame.seq, d),
                        kf: Kalman::new(z),
                        hits: 1,
                        missed: 0,
                        first: frame,
                        last: frame,
                        best: sighting,
                    });
                    self.tracks.len() - 1
                }
                (_, None) => continue,
            };
            let track = &self.tracks[t];
            if track.hits == min_hits {
                out.appeared.push(track.summary(&self.camera));
            }
            if track.hits >= min_hits {
                out.tracks.push(TrackedObject {
                    object_id: track.id.clone(),
                    detection: d,
                    class: det.class,
                    score: det.score,
                    bbox: det.bbox,
                });
            }
        }

        self.age_unseen(rows, &track_of, &mut out.left);
        Some(out)
    }

    /// Predicts every track one step and matches the predictions to the
    /// usable detections (those `measured`): the track of each detection.
    fn associate(&mut self, detections: &[Detection], measured: &[Option<[f64; 4]>]) -> Vec<Option<usize>> {
        // The Hungarian method on 1 - IoU, with pairs that may not match
        // counted as no overlap, so that the assignment maximises the IoU
        // of the matches that will be kept.
        let (rows, cols) = (self.tracks.len(), detections.len());
        let mut iou = Vec::with_capacity(rows * cols);
        for t in &mut self.tracks {
            t.kf.predict();
            let predicted = t.kf.bbox();
            for (d, m) in detections.iter().zip(measured) {
                iou.push(match predicted {
                    Some(p) if m.is_some() => gated_iou(&self.cfg, t, &p, d),
                    _ => 0.0,
                });
            }
        }
        let cost: Vec<f64> = iou.iter().map(|v| 1.0 - f64::from(*v)).collect();
        let mut track_of = vec![None; cols];
        for (t, d) in hungarian::assign(&cost, rows, cols).into_iter().enumerate() {
            if let Some(d) = d.filter(|d| iou[t * cols + d] > 0.0) {
                track_of[d] = Some(t);
            }
        }
        track_of
    }

    /// Ages the first `rows` tracks (those before this frame) that no
    /// detection went to, ending the tentative ones and the confirmed ones
    /// unseen too long; the latter go to `left`.
    fn age_unseen(&mut self, rows: usize, track_of: &[Option<usize>], left: &mut Vec<ObjectSummary>) {
        let min_hits = self.cfg.min_hits.max(1);
        let mut seen = vec![false; rows];
        for t in track_of.iter().flatten() {
            seen[*t] = true;
        }
        let mut kept = Vec::with_capacity(self.tracks.len());
        for (i, mut t) in std::mem::take(&mut self.tracks).into_iter().enumerate() {
            if i < rows && !seen[i] {
                t.missed = t.missed.saturating_add(1);
                if t.hits < min_hits {
                    continue;
                }
                if t.missed > self.cfg.max_age {
                    left.push(t.summary(&self.camera));
                    continue;
                }
            }
            kept.push(t);
        }
        self.tracks = kept;
    }

    /// Ends every track (the end of a video), returning the confirmed ones
    /// in creation order. Frames may follow, with new tracks.
    pub fn finish(&mut self) -> Vec<ObjectSummary> {
        let min_hits = self.cfg.min_hits.max(1);
        let tracks = std::mem::take(&mut self.tracks);
        tracks.iter().filter(|t| t.hits >= min_hits).map(|t| t.summary(&self.camera)).collect()
    }
}

/// The IoU of a track's predicted box and a usable detection, or 0 where
/// they may not match: another class (when class-aware), or below the
/// threshold.
fn gated_iou(cfg: &TrackerConfig, t: &Track, predicted: &BBox, d: &Detection) -> f32 {
    // A class-aware track only ever has sightings of one class.
    if cfg.class_aware && t.best.class != d.class {
        return 0.0;
    }
    let iou = predicted.iou(&d.bbox);
    if iou > 0.0 && iou >= cfg.iou_threshold { iou } else { 0.0 }
}

impl Track {
    fn summary(&self, camera: &str) -> ObjectSummary {
        ObjectSummary {
            object_id: self.id.clone(),
            camera: camera.to_string(),
            class: self.best.class,
            first_seen_us: self.first.time_us,
            last_seen_us: self.last.time_us,
            first_seq: self.first.seq,
            last_seq: self.last.seq,
            sightings: self.hits,
            best: self.best,
        }
    }
}
