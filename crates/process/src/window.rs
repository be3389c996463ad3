//! Per-minute counts of one camera, by event time (capture time).
//!
//! A minute's window closes once the newest capture time seen is past
//! its end by the allowed lateness; a record older than a closed window
//! is late: dropped, and counted. Counts are per rule and class.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A window's length, microseconds.
pub const WINDOW_US: i64 = 60_000_000;

/// What one rule saw of one class in one window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub entries: u64,
    pub exits: u64,
    pub crossings_left_to_right: u64,
    pub crossings_right_to_left: u64,
    /// Most objects inside a zone at once.
    pub occupancy_peak: u32,
    /// Objects inside summed over the camera's frames of the window (the
    /// mean is this over those frames).
    pub occupancy_sum: u64,
    /// Seconds with motion on (the camera's `motion` row).
    #[serde(default)]
    pub motion_s: f64,
}

/// A closed window's tally.
#[derive(Clone, Debug, PartialEq)]
pub struct Closed {
    pub start_us: i64,
    pub rule: String,
    pub class: String,
    pub tally: Tally,
    /// The camera's analysed frames in the window.
    pub frames: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Open {
    frames: u64,
    /// rule → class → tally.
    tallies: BTreeMap<String, BTreeMap<String, Tally>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Windows {
    /// Open windows by start time.
    open: BTreeMap<i64, Open>,
    /// Windows ending at or before this are closed.
    closed_until: Option<i64>,
    /// The newest capture time seen.
    newest: Option<i64>,
}

/// The value at `key`, made (default) if missing: a key is allocated
/// only the first time, not on every frame.
pub(crate) fn slot<'a, V: Default>(map: &'a mut BTreeMap<String, V>, key: &str) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// The start of the window holding `t`.
pub fn window_of(t: i64) -> i64 {
    t.div_euclid(WINDOW_US) * WINDOW_US
}

impl Windows {
    /// A frame at `t`: `false` when it is late (its window closed), and
    /// nothing of it may be counted.
    pub fn frame(&mut self, t: i64) -> bool {
        if self.closed_until.is_some_and(|c| t < c) {
            return false;
        }
        self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
        self.open.entry(window_of(t)).or_default().frames += 1;
        true
    }

    /// The tally of `rule` and `class` in the window of `t` (a frame
    /// `frame` admitted).
    pub fn tally(&mut self, t: i64, rule: &str, class: &str) -> &mut Tally {
        let open = self.open.entry(window_of(t)).or_default();
        slot(slot(&mut open.tallies, rule), class)
    }

    /// Closes the windows that ended `lateness_us` or more before the
    /// newest capture time, oldest first.
    pub fn close(&mut self, lateness_us: i64) -> Vec<Closed> {
        let Some(newest) = self.newest else { return Vec::new() };
        let until = window_of(newest.saturating_sub(lateness_us));
        let mut out = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() + WINDOW_US > until {
                break;
            }
            let (start, open) = entry.remove_entry();
            for (rule, classes) in open.tallies {
                for (class, tally) in classes {
                    out.push(Closed { start_us: start, rule: rule.clone(), class, tally, frames: open.frames });
                }
            }
        }
        if self.closed_until.is_none_or(|c| c < until) {
            self.closed_until = Some(until);
        }
        out
    }

    /// Closes every window (the end of a bounded input).
    pub fn close_all(&mut self) -> Vec<Closed> {
        self.close(i64::MIN / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = WINDOW_US;

    #[test]
    fn a_window_closes_after_its_end_plus_the_lateness() {
        let mut w = Windows::default();
        assert!(w.frame(10));
        w.tally(10, "door", "person").entries += 1;
        assert!(w.frame(M + 1_000_000));
        assert!(w.close(5_000_000).is_empty(), "1 s past its end, 5 s allowed");
        assert!(w.frame(M + 4_000_000), "a record within the allowance");
        w.tally(M - 1, "door", "person").exits += 1;
        assert!(w.frame(M + 6_000_000));
        let closed = w.close(5_000_000);
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].start_us, closed[0].tally.entries, closed[0].tally.exits), (0, 1, 1));
        // Later than the closed window: refused, counts nothing.
        assert!(!w.frame(M - 1));
        assert!(w.frame(M));
    }

    #[test]
    fn a_checkpointed_window_set_continues_the_same() {
        let mut a = Windows::default();
        a.frame(5);
        a.tally(5, "line", "car").crossings_left_to_right += 2;
        let mut b: Windows = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        for w in [&mut a, &mut b] {
            w.frame(3 * M);
        }
        assert_eq!(a.close(0), b.close(0));
    }
}
