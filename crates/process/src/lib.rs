//! Stream processing (`vigil process`): rules over each camera's tracks,
//! by event time, with state on the stage runtime.
//!
//! - `geometry`: points, polygons, directed segments;
//! - `rules`: zones and lines as declared in config or drawn in the web
//!   app, checked;
//! - `drawn`: each camera's rules in effect (the config's, or those drawn
//!   in the web app, followed on `vigil.rules`);
//! - `window`: per-minute counts by capture time, late records counted;
//! - `camera`: one camera's rules over its tracks, a pure state machine
//!   (zones entered and left, loitering, occupancy, lines crossed, motion
//!   events from the detector's per-frame motion, counts);
//! - `read`: counts read back, copies dropped;
//! - `stage`: the processor on the runtime: `vigil.detections` in, rule
//!   events to `vigil.events` and counts to `vigil.counts` out.

pub mod camera;
pub mod drawn;
pub mod geometry;
pub mod read;
pub mod rules;
pub mod stage;
pub mod window;

pub use camera::{Camera, Hit};
pub use rules::{Line, RuleSpec, Rules, Zone};
pub use stage::{ProcessConfig, Processor, run, stage_spec};
