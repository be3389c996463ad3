//! `vigil.counts`: what the processor's rules counted per camera, rule,
//! class and minute (capture time). Exactly-once effect: a window's id is
//! `camera/rule/class/start_us`, the same whenever it is published again;
//! consumers drop copies by id. Schema: `docs/schemas/counts.schema.json`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Count {
    /// `camera/rule/class/start_us`.
    pub id: String,
    pub camera: String,
    /// The zone's or line's name.
    pub rule: String,
    pub class: String,
    /// The minute, microseconds since the Unix epoch: [start, end).
    pub start_us: i64,
    pub end_us: i64,
    /// Objects that entered and left the zone.
    pub entries: u64,
    pub exits: u64,
    /// Objects that crossed the line, each way (as seen facing from its
    /// start to its end).
    pub crossings_left_to_right: u64,
    pub crossings_right_to_left: u64,
    /// Most objects of the class inside the zone at once, and the mean
    /// over the camera's analysed frames of the minute.
    pub occupancy_peak: u32,
    pub occupancy_mean: f64,
    /// The camera's frames in the minute: analysed, or held by the motion
    /// gate (their records carry the last analysed frame's objects).
    pub frames: u64,
    /// Seconds with motion on, in the camera's `motion` row (rule
    /// `motion`, class `any`); 0 in the others.
    #[serde(default)]
    pub motion_s: f64,
}
