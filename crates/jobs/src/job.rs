//! A job's state, as the collector will publish it (keyed by video id, last
//! value wins): queued → receiving (chunks k/n) → analysing (frames k/n) →
//! done, or failed with its reason from any state before done. A pure state
//! machine: a stale or repeated update (a collector's restart replays what
//! followed its checkpoint) never moves a job backwards, and an ended job
//! stays ended.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Receiving,
    Analysing,
    Done,
    Failed,
}

impl State {
    pub fn ended(self) -> bool {
        matches!(self, State::Done | State::Failed)
    }
}

/// One job, as `vigil jobs` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    /// The original file name.
    pub name: String,
    pub state: State,
    /// Why it failed (only when `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub chunks_received: u32,
    pub chunks: u32,
    pub frames_analysed: u64,
    /// Frames to analyse, once the video is decoded far enough to know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<u64>,
}

impl Job {
    pub fn queued(id: &str, name: &str, chunks: u32) -> Self {
        Job {
            id: id.into(),
            name: name.into(),
            state: State::Queued,
            error: None,
            chunks_received: 0,
            chunks,
            frames_analysed: 0,
            frames: None,
        }
    }

    /// Takes `next` if it is this job's and moves it on: a later state, or
    /// the same state with more progress. Returns whether it changed.
    pub fn update(&mut self, next: &Job) -> bool {
        if next.id != self.id || self.state.ended() {
            return false;
        }
        let progress = |j: &Job| (j.state, j.chunks_received, j.frames_analysed);
        if progress(next) <= progress(self) {
            return false;
        }
        *self = next.clone();
        true
    }

    /// Ends the job as failed with `why` (unless it has ended already).
    pub fn fail(&mut self, why: impl Into<String>) -> bool {
        if self.state.ended() {
            return false;
        }
        self.state = State::Failed;
        self.error = Some(why.into());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(state: State, chunks: u32, frames: u64) -> Job {
        Job { state, chunks_received: chunks, frames_analysed: frames, ..Job::queued("v", "a.mp4", 4) }
    }

    #[test]
    fn a_job_only_moves_forward_and_stays_ended() {
        let mut j = Job::queued("v", "a.mp4", 4);
        // (update, taken?)
        let steps = [
            (at(State::Receiving, 1, 0), true),
            (at(State::Receiving, 3, 0), true),
            (at(State::Receiving, 2, 0), false), // a stale replay
            (at(State::Queued, 0, 0), false),
            (at(State::Analysing, 4, 10), true),
            (at(State::Analysing, 4, 10), false), // a repeat
            (at(State::Receiving, 4, 0), false),
            (at(State::Done, 4, 50), true),
            (at(State::Analysing, 4, 60), false), // ended stays ended
        ];
        for (i, (next, taken)) in steps.iter().enumerate() {
            assert_eq!(j.update(next), *taken, "step {i}");
        }
        assert_eq!((j.state, j.frames_analysed), (State::Done, 50));
        assert!(!j.fail("too late"), "a done job does not fail");
        let mut other = Job::queued("w", "b.mp4", 1);
        assert!(!other.update(&at(State::Done, 4, 50)), "another video's update");
    }

    #[test]
    fn failure_keeps_its_reason_and_the_record_is_plain_json() {
        let mut j = at(State::Receiving, 2, 0);
        assert!(j.fail("chunks 3-4 never arrived (timeout 300 s)"));
        assert!(!j.update(&at(State::Analysing, 4, 1)));
        let json = serde_json::to_value(&j).unwrap();
        assert_eq!(json["state"], "failed");
        assert_eq!(json["error"], "chunks 3-4 never arrived (timeout 300 s)");
        assert_eq!(serde_json::from_value::<Job>(json).unwrap(), j);
    }
}
