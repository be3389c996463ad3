//! Multi-object tracking for one camera (or one video), as a pure state
//! machine: motion only, in time, with the ideas of the best trackers of
//! that kind (SORT, ByteTrack, OC-SORT, BoT-SORT) and a gate that copes
//! with frames analysed seconds apart.
//!
//! For each analysed frame:
//! 1. every track's Kalman filter (`kalman.rs`: centre, width, height and
//!    their velocities per second, BoT-SORT's state) predicts to the
//!    frame's capture time, however long ago its last frame was;
//! 2. **confirmed tracks** are matched to the frame's confident detections
//!    (score ≥ `high_score`) by the Hungarian method on their affinity:
//!    the IoU of predicted and detected box when it reaches
//!    `iou_threshold` (weighted by the detection's score, as BoT-SORT
//!    does), else, where frames are seconds apart, weakly, closeness of
//!    the centres within three standard deviations of the prediction
//!    (which grows with the time since the track was last seen: a track
//!    seen seconds ago may have moved far);
//! 3. confirmed tracks seen in the previous frame and still unmatched take
//!    the **less confident detections** (ByteTrack's second association: a
//!    person half hidden scores low, and is still that person), by IoU
//!    alone;
//! 4. **tentative tracks** take what confident detections are left (by
//!    IoU or closeness: a track seen once has no speed yet), then those
//!    scoring `new_track_score` start new tentative tracks;
//! 5. a track matched after frames unseen is **re-updated along the gap**
//!    (OC-SORT's observation-centric re-update): its filter goes back to
//!    its last sighting and is corrected at each missed frame with the box
//!    interpolated between that sighting and this one, so the velocity it
//!    carries on with is the one the object really had, not the drift of
//!    the blind predictions.
//!
//! A track is confirmed (gets its id reported, and an `appeared` event)
//! after `min_hits` sightings in a row, or after two sightings at least
//! `confirm_s` seconds apart (sparse sampling: a person seen twice 2.5 s
//! apart is no flicker); a tentative track missed once is dropped. A
//! confirmed track unseen for more than `max_age` analysed frames *and*
//! more than `max_age_s` seconds leaves.
//!
//! Appearance: none (a re-identification model would need weights vigil
//! does not ship). Its place is [`affinity`]: an embedding per detection
//! and per track would be one more term there (BoT-SORT takes the better
//! of IoU and cosine distance), nothing else changes.
//!
//! Invariants:
//! - **Ids.** A track's id is `"{camera}/{seq}/{index}"`: the seq of the
//!   frame of its first sighting and that detection's index in the frame's
//!   list. Frames must come in strictly increasing seq (an older or repeated
//!   seq is refused), so no id is given twice; camera names are unique, so
//!   ids are unique across cameras.
//! - **Determinism.** The same frames, with their detections in the same
//!   order, give the same ids and events on any machine: tracks are kept
//!   in creation order, each assignment is a fixed computation over a
//!   matrix built in that order, nothing is hashed or random, and the float
//!   arithmetic is plain IEEE.
//! - **Checkpoints.** The whole state, config included, is
//!   serde-serialisable; a tracker restored from a checkpoint continues
//!   exactly as the original would (filters' floats are stored as bit
//!   patterns).
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

/// A confirmed track unseen for this many analysed frames leaves whatever
/// the time says.
const MAX_MISSED: usize = 1000;
/// Frames at least this far apart (seconds) are sparse samples: confirmed
/// tracks may then match by closeness too. Between dense frames they match
/// by IoU alone (closeness there mostly swaps neighbours after an
/// occlusion: measured with `scripts/bench-track`).
const SPARSE_S: f32 = 0.5;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrackerConfig {
    /// Analysed frames a confirmed track survives unseen (occlusions)...
    pub max_age: u32,
    /// ...and seconds of capture time: it leaves once unseen for longer
    /// than both.
    pub max_age_s: f32,
    /// Sightings in a row that confirm a track (0 counts as 1).
    pub min_hits: u32,
    /// Two sightings this many seconds apart also confirm it.
    pub confirm_s: f32,
    /// Least IoU between a track's predicted box and a detection for an
    /// IoU match.
    pub iou_threshold: f32,
    /// Detections scoring below this only continue confirmed tracks, by
    /// IoU, after the confident ones (ByteTrack's second association).
    pub high_score: f32,
    /// Least score of a detection that starts a track (ByteTrack's
    /// new-track threshold): a lone low-confidence box is more often a
    /// false positive than an object coming into view.
    pub new_track_score: f32,
    /// After frames unseen, re-run the filter along the gap (OC-SORT).
    pub reupdate: bool,
    /// Match detections only to tracks of the same class.
    pub class_aware: bool,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            max_age: 15,
            max_age_s: 2.0,
            min_hits: 2,
            confirm_s: 0.5,
            iou_threshold: 0.3,
            high_score: 0.3,
            new_track_score: 0.6,
            reupdate: true,
            class_aware: true,
        }
    }
}

/// The analysed frame a set of detections came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameRef {
    /// The frame's seq: per camera and stream, strictly increasing.
    pub seq: u64,
    /// Capture time, microseconds (since the Unix epoch for a camera,
    /// since the start for a video).
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
    /// Confirmed tracks that left, in creation order.
    pub left: Vec<ObjectSummary>,
}

/// The tracks of one camera.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tracker {
    camera: String,
    cfg: TrackerConfig,
    /// The last frame taken, which later frames must follow.
    #[serde(default)]
    last: Option<FrameRef>,
    /// In creation order: the assignment's tie-breaking depends on it.
    #[serde(default, deserialize_with = "tracks_or_none")]
    tracks: Vec<Track>,
}

/// The tracks of a checkpoint, or none from one an older vigil wrote (its
/// SORT tracks do not carry on here): the detector keeps its place in the
/// stream, and objects in view get new ids once.
fn tracks_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Track>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Saved {
        Now(Vec<Track>),
        Older(serde::de::IgnoredAny),
    }
    Ok(match Saved::deserialize(d)? {
        Saved::Now(t) => t,
        Saved::Older(_) => Vec::new(),
    })
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Track {
    id: String,
    kf: Kalman,
    /// The filter as it was right after the last sighting, and the box
    /// seen then: where a re-update along a gap starts.
    seen_kf: Kalman,
    last_box: BBox,
    /// Sightings so far; for a tentative track, its run of sightings.
    hits: u32,
    confirmed: bool,
    /// Capture times of the analysed frames since the last sighting.
    missed: Vec<i64>,
    first: FrameRef,
    last: FrameRef,
    best: Sighting,
}

/// A detection the tracker can use: its index, measurement and score.
#[derive(Clone, Copy)]
struct Usable {
    index: usize,
    z: [f64; 4],
    det: Detection,
}

impl Tracker {
    pub fn new(camera: &str, cfg: TrackerConfig) -> Self {
        Tracker { camera: camera.to_string(), cfg, last: None, tracks: Vec::new() }
    }

    /// Settings changed by the operator since this state was saved apply
    /// from the next frame on.
    pub fn set_config(&mut self, cfg: TrackerConfig) {
        self.cfg = cfg;
    }

    /// The seq of the last frame taken: the next must be greater.
    pub fn last_seq(&self) -> Option<u64> {
        self.last.map(|f| f.seq)
    }

    /// Takes one analysed frame's detections. `None`, with nothing
    /// changed, for a frame not after the last one (a replay).
    pub fn update(&mut self, frame: FrameRef, detections: &[Detection]) -> Option<Update> {
        if self.last.is_some_and(|last| frame.seq <= last.seq) {
            return None;
        }
        // Frames seconds apart (a camera sampled at its key frames): an
        // object may move far beyond any overlap between two of them.
        let sparse =
            self.last.is_some_and(|l| frame.time_us.saturating_sub(l.time_us) as f64 / 1e6 >= f64::from(SPARSE_S));
        self.last = Some(frame);
        for t in &mut self.tracks {
            // Each filter steps from its own last time: the track's last
            // prediction was for the previous frame.
            let from = t.missed.last().copied().unwrap_or(t.last.time_us);
            t.kf.predict(frame.time_us.saturating_sub(from) as f64 / 1e6);
        }
        let usable: Vec<Usable> = detections
            .iter()
            .enumerate()
            .filter(|(_, d)| d.score.is_finite())
            .filter_map(|(index, d)| kalman::measure(&d.bbox).map(|z| Usable { index, z, det: *d }))
            .collect();
        let (high, low): (Vec<Usable>, Vec<Usable>) =
            usable.into_iter().partition(|u| u.det.score >= self.cfg.high_score);

        let mut track_of: Vec<Option<usize>> = vec![None; detections.len()];
        let confirmed: Vec<usize> = (0..self.tracks.len()).filter(|&t| self.tracks[t].confirmed).collect();
        let tentative: Vec<usize> = (0..self.tracks.len()).filter(|&t| !self.tracks[t].confirmed).collect();
        // 1. Confirmed tracks and confident detections.
        let rest = self.assign(&confirmed, &high, Against::Prediction { weak: sparse }, &mut track_of);
        // 2. The confirmed tracks left, and the less confident (a person
        // half hidden, or coming out from behind another, scores low).
        let lost = self.assign(&rest, &low, Against::Prediction { weak: false }, &mut track_of);
        // 3. Tentative tracks and the confident detections left.
        let left_high = |track_of: &[Option<usize>]| -> Vec<Usable> {
            high.iter().copied().filter(|u| track_of[u.index].is_none()).collect()
        };
        self.assign(&tentative, &left_high(&track_of), Against::Prediction { weak: true }, &mut track_of);
        // 4. A confident detection that would start a new track, where a
        // confirmed track still unmatched was last seen: that object again
        // (OC-SORT's observation-centric recovery: one that stopped or
        // turned, or whose boxes jittered, is no longer where the filter
        // predicts it), not a new one.
        self.assign(&lost, &left_high(&track_of), Against::LastSeen, &mut track_of);

        // Correct the matched tracks and start new ones, in detection order
        // (which is what makes the new ids deterministic).
        let rows = self.tracks.len();
        let mut out = Update::default();
        let min_hits = self.cfg.min_hits.max(1);
        let by_index: Vec<Option<Usable>> = {
            let mut v = vec![None; detections.len()];
            for u in high.iter().chain(&low) {
                v[u.index] = Some(*u);
            }
            v
        };
        for (d, u) in by_index.iter().enumerate() {
            let Some(u) = u else { continue };
            let det = u.det;
            let sighting =
                Sighting { seq: frame.seq, time_us: frame.time_us, class: det.class, score: det.score, bbox: det.bbox };
            let t = match track_of[d] {
                Some(t) => {
                    let reupdate = self.cfg.reupdate;
                    let track = &mut self.tracks[t];
                    track.observe(u.z, det.bbox, frame, reupdate);
                    if det.score > track.best.score {
                        track.best = sighting;
                    }
                    t
                }
                None if det.score >= self.cfg.high_score.max(self.cfg.new_track_score) => {
                    let kf = Kalman::new(u.z);
                    self.tracks.push(Track {
                        id: format!("{}/{}/{}", self.camera, frame.seq, d),
                        seen_kf: kf.clone(),
                        kf,
                        last_box: det.bbox,
                        hits: 1,
                        confirmed: false,
                        missed: Vec::new(),
                        first: frame,
                        last: frame,
                        best: sighting,
                    });
                    self.tracks.len() - 1
                }
                None => continue,
            };
            let track = &mut self.tracks[t];
            let span_s = track.last.time_us.saturating_sub(track.first.time_us) as f64 / 1e6;
            if !track.confirmed
                && (track.hits >= min_hits || (track.hits >= 2 && span_s >= f64::from(self.cfg.confirm_s)))
            {
                track.confirmed = true;
                out.appeared.push(track.summary(&self.camera));
            }
            if track.confirmed {
                out.tracks.push(TrackedObject {
                    object_id: track.id.clone(),
                    detection: d,
                    class: det.class,
                    score: det.score,
                    bbox: det.bbox,
                });
            }
        }
        self.age_unseen(rows, &track_of, frame, &mut out.left);
        Some(out)
    }

    /// Matches `tracks` (indices) to `dets` by the Hungarian method on
    /// their affinity, recording each match in `track_of`; returns the
    /// tracks left unmatched.
    fn assign(&self, tracks: &[usize], dets: &[Usable], to: Against, track_of: &mut [Option<usize>]) -> Vec<usize> {
        let (rows, cols) = (tracks.len(), dets.len());
        if rows == 0 || cols == 0 {
            return tracks.to_vec();
        }
        let mut sim = Vec::with_capacity(rows * cols);
        for &t in tracks {
            let track = &self.tracks[t];
            let (against, weak) = match to {
                Against::Prediction { weak } => (track.kf.bbox(), weak),
                Against::LastSeen => (Some(track.last_box), false),
            };
            for u in dets {
                sim.push(match against {
                    Some(p) => affinity(&self.cfg, track, &p, u, weak),
                    None => 0.0,
                });
            }
        }
        // Least total of 1 - affinity: the matches kept (affinity > 0)
        // have the greatest total affinity.
        let cost: Vec<f64> = sim.iter().map(|v| 1.0 - v).collect();
        let mut matched = vec![false; rows];
        for (r, c) in hungarian::assign(&cost, rows, cols).into_iter().enumerate() {
            if let Some(c) = c.filter(|&c| sim[r * cols + c] > 0.0) {
                track_of[dets[c].index] = Some(tracks[r]);
                matched[r] = true;
            }
        }
        tracks.iter().zip(matched).filter(|(_, m)| !m).map(|(&t, _)| t).collect()
    }

    /// Ages the first `rows` tracks (those before this frame) that no
    /// detection went to, ending the tentative ones and the confirmed ones
    /// unseen too long; the latter go to `left`.
    fn age_unseen(&mut self, rows: usize, track_of: &[Option<usize>], frame: FrameRef, left: &mut Vec<ObjectSummary>) {
        let mut seen = vec![false; rows];
        for t in track_of.iter().flatten() {
            seen[*t] = true;
        }
        let mut kept = Vec::with_capacity(self.tracks.len());
        for (i, mut t) in std::mem::take(&mut self.tracks).into_iter().enumerate() {
            if i < rows && !seen[i] {
                if !t.confirmed {
                    continue;
                }
                t.missed.push(frame.time_us);
                let unseen_s = frame.time_us.saturating_sub(t.last.time_us) as f64 / 1e6;
                let old = t.missed.len() > self.cfg.max_age as usize && unseen_s > f64::from(self.cfg.max_age_s);
                // Time that stands still (or a huge max_age_s) must not keep
                // a track, and its list of missed frames, forever.
                if old || t.missed.len() > MAX_MISSED {
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
        let tracks = std::mem::take(&mut self.tracks);
        tracks.iter().filter(|t| t.confirmed).map(|t| t.summary(&self.camera)).collect()
    }
}

/// What a track's box is compared with in a round of matching.
#[derive(Clone, Copy)]
enum Against {
    /// The filter's prediction for this frame; `weak`: a centre close to
    /// it matches too, where no box overlaps enough.
    Prediction { weak: bool },
    /// The box the track was last seen with.
    LastSeen,
}

/// How well detection `u` fits `track`, whose box is `p` (predicted, or as
/// last seen): when their IoU reaches the threshold, 0.1 + IoU × score (a
/// confident detection wins a tie); else, with `weak`, less than 0.1 for a centre within three
/// standard deviations of the prediction and a box of a like size; else
/// 0: no match. The one place an appearance term would join.
fn affinity(cfg: &TrackerConfig, track: &Track, p: &BBox, u: &Usable, weak: bool) -> f64 {
    // A class-aware track only ever has sightings of one class.
    if cfg.class_aware && track.best.class != u.det.class {
        return 0.0;
    }
    let iou = f64::from(p.iou(&u.det.bbox));
    if iou > 0.0 && iou >= f64::from(cfg.iou_threshold) {
        return 0.1 + iou * f64::from(u.det.score.clamp(0.0, 1.0));
    }
    if !weak {
        return 0.0;
    }
    let (w, h) = (f64::from(p.x2 - p.x1), f64::from(p.y2 - p.y1));
    let like = |a: f64, b: f64| a <= 2.0 * b && b <= 2.0 * a;
    match track.kf.centre_distance(&u.z) {
        Some(d) if d < 3.0 && like(u.z[2], w) && like(u.z[3], h) => 0.1 * (1.0 - d / 3.0).max(1e-6),
        _ => 0.0,
    }
}

impl Track {
    /// A sighting `z` in `frame`: corrects the filter, after re-updating it
    /// along the frames missed since the last sighting.
    fn observe(&mut self, z: [f64; 4], bbox: BBox, frame: FrameRef, reupdate: bool) {
        let before = kalman::measure(&self.last_box).filter(|_| reupdate && !self.missed.is_empty());
        if let Some(z0) = before {
            // Back to the last sighting, then along a straight path to this
            // one, a step per missed frame.
            let mut kf = self.seen_kf.clone();
            let (t0, t1) = (self.last.time_us, frame.time_us);
            let mut at = t0;
            for &t in &self.missed {
                kf.predict(t.saturating_sub(at) as f64 / 1e6);
                let f = if t1 > t0 { t.saturating_sub(t0) as f64 / t1.saturating_sub(t0) as f64 } else { 1.0 };
                kf.update(std::array::from_fn(|i| z0[i] + (z[i] - z0[i]) * f));
                at = t;
            }
            kf.predict(t1.saturating_sub(at) as f64 / 1e6);
            self.kf = kf;
        }
        self.kf.update(z);
        self.seen_kf = self.kf.clone();
        self.last_box = bbox;
        self.hits = self.hits.saturating_add(1);
        self.missed.clear();
        self.last = frame;
    }

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
