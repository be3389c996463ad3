//! Splitting frames into records no larger than the broker's message limit,
//! and putting them back together on the consumer side.
//!
//! `Reassembler` is a pure state machine (no I/O, time passed in): chunks may
//! arrive out of order or twice; a frame whose chunks stop arriving is given
//! up after a timeout and reported; memory held for incomplete frames is
//! bounded, the oldest incomplete frame is dropped (and reported) first.

use crate::Error;
use crate::frame::{Chunk, Frame, FrameMeta, OVERHEAD};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Encodes `frame` as one or more records, each at most `max_record` bytes.
pub fn split(frame: &Frame, max_record: usize) -> Result<Vec<Vec<u8>>, Error> {
    let room = max_record
        .checked_sub(OVERHEAD + frame.meta.camera.len())
        .filter(|&r| r > 0)
        .ok_or(Error::RecordLimit(max_record))?;
    let len = frame.payload.len();
    let count = len.div_ceil(room).max(1);
    let count = u16::try_from(count).map_err(|_| Error::FrameTooLarge(len))?;
    let frame_len = u32::try_from(len).map_err(|_| Error::FrameTooLarge(len))?;
    let mut out = Vec::with_capacity(count as usize);
    for index in 0..count {
        let start = index as usize * room;
        let end = (start + room).min(len);
        let mut rec = Vec::new();
        Chunk {
            meta: frame.meta.clone(),
            index,
            count,
            frame_len,
            offset: start as u32,
            payload: &frame.payload[start..end],
        }
        .encode_into(&mut rec);
        out.push(rec);
    }
    Ok(out)
}

/// Identity of a frame: a camera's stream and its sequence number.
type FrameKey = (String, crate::Stream, u64);

/// What the reassembler could not complete, for logs, metrics and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incomplete {
    /// Some chunks never arrived within the timeout.
    TimedOut { meta: FrameMeta, have: u16, count: u16 },
    /// Dropped to stay within the memory limit.
    Evicted { meta: FrameMeta, have: u16, count: u16 },
    /// A chunk disagreed with the earlier chunks of the same frame.
    Conflict { meta: FrameMeta },
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long to wait for the rest of a frame after its first chunk.
    pub timeout: Duration,
    /// Bytes held for incomplete frames, all cameras together.
    pub max_pending_bytes: usize,
    /// Largest frame accepted; guards the allocation against hostile headers.
    pub max_frame_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { timeout: Duration::from_secs(10), max_pending_bytes: 256 << 20, max_frame_bytes: 64 << 20 }
    }
}

struct Pending {
    meta: FrameMeta,
    count: u16,
    frame_len: u32,
    buf: Vec<u8>,
    have: Vec<bool>,
    got: u16,
    first_seen: Instant,
}

/// Outcome of feeding one chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// The frame is whole.
    Frame(Frame),
    /// Stored; more chunks to come.
    Waiting,
    /// A chunk seen before (or of a frame already completed): ignored.
    Duplicate,
}

pub struct Reassembler {
    limits: Limits,
    pending: HashMap<FrameKey, Pending>,
    /// Insertion order of `pending`, for timeouts and eviction.
    order: VecDeque<FrameKey>,
    pending_bytes: usize,
    /// Recently completed multi-chunk frames, so a late duplicate chunk does
    /// not open a new entry that would later be reported as lost.
    done: HashSet<FrameKey>,
    done_order: VecDeque<FrameKey>,
    problems: Vec<Incomplete>,
}

const DONE_MEMORY: usize = 4096;

impl Reassembler {
    pub fn new(limits: Limits) -> Self {
        Reassembler {
            limits,
            pending: HashMap::new(),
            order: VecDeque::new(),
            pending_bytes: 0,
            done: HashSet::new(),
            done_order: VecDeque::new(),
            problems: Vec::new(),
        }
    }

    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Frames given up since the last call.
    pub fn take_problems(&mut self) -> Vec<Incomplete> {
        std::mem::take(&mut self.problems)
    }

    pub fn push(&mut self, chunk: Chunk<'_>, now: Instant) -> Result<Pushed, Error> {
        if chunk.frame_len as usize > self.limits.max_frame_bytes {
            return Err(Error::FrameTooLarge(chunk.frame_len as usize));
        }
        if chunk.count == 1 {
            if chunk.payload.len() != chunk.frame_len as usize {
                return Err(Error::Envelope("single chunk shorter than its frame".into()));
            }
            return Ok(Pushed::Frame(Frame { meta: chunk.meta, payload: chunk.payload.to_vec() }));
        }
        let key = (chunk.meta.camera.clone(), chunk.meta.stream, chunk.meta.seq);
        if self.done.contains(&key) {
            return Ok(Pushed::Duplicate);
        }
        self.expire(now);
        if !self.pending.contains_key(&key) {
            self.make_room(chunk.frame_len as usize);
            self.pending_bytes += chunk.frame_len as usize;
            self.order.push_back(key.clone());
            self.pending.insert(
                key.clone(),
                Pending {
                    meta: chunk.meta.clone(),
                    count: chunk.count,
                    frame_len: chunk.frame_len,
                    buf: vec![0; chunk.frame_len as usize],
                    have: vec![false; chunk.count as usize],
                    got: 0,
                    first_seen: now,
                },
            );
        }
        let Some(p) = self.pending.get_mut(&key) else {
            return Ok(Pushed::Waiting);
        };
        if p.count != chunk.count || p.frame_len != chunk.frame_len || p.meta != chunk.meta {
            let meta = p.meta.clone();
            self.remove(&key);
            self.problems.push(Incomplete::Conflict { meta });
            return Err(Error::Envelope("chunk disagrees with its frame".into()));
        }
        if p.have[chunk.index as usize] {
            return Ok(Pushed::Duplicate);
        }
        let start = chunk.offset as usize;
        p.buf[start..start + chunk.payload.len()].copy_from_slice(chunk.payload);
        p.have[chunk.index as usize] = true;
        p.got += 1;
        if p.got < p.count {
            return Ok(Pushed::Waiting);
        }
        let p = self.remove(&key).expect("entry present");
        self.remember_done(key);
        Ok(Pushed::Frame(Frame { meta: p.meta, payload: p.buf }))
    }

    /// Forgets a frame still being collected, without reporting it: its
    /// partition moved to another reader, which reads it whole again.
    pub fn abandon(&mut self, camera: &str, stream: crate::Stream, seq: u64) {
        self.remove(&(camera.to_string(), stream, seq));
    }

    /// Forgets which of `camera`'s frames were completed: its partition
    /// left this reader, and if it comes back, read again from an earlier
    /// offset, those frames must be whole frames again, not duplicates.
    pub fn forget_done(&mut self, camera: &str) {
        self.done.retain(|k| k.0 != camera);
        self.done_order.retain(|k| k.0 != camera);
    }

    /// Gives up frames older than the timeout.
    pub fn expire(&mut self, now: Instant) {
        while let Some(key) = self.order.front() {
            let stale = match self.pending.get(key) {
                Some(p) => now.saturating_duration_since(p.first_seen) >= self.limits.timeout,
                None => true, // already completed
            };
            if !stale {
                break;
            }
            let key = self.order.pop_front().expect("front exists");
            if let Some(p) = self.remove(&key) {
                self.problems.push(Incomplete::TimedOut { meta: p.meta, have: p.got, count: p.count });
            }
        }
    }

    fn make_room(&mut self, incoming: usize) {
        while self.pending_bytes + incoming > self.limits.max_pending_bytes {
            let Some(key) = self.order.pop_front() else { break };
            if let Some(p) = self.remove(&key) {
                self.problems.push(Incomplete::Evicted { meta: p.meta, have: p.got, count: p.count });
            }
        }
    }

    fn remove(&mut self, key: &FrameKey) -> Option<Pending> {
        let p = self.pending.remove(key)?;
        self.pending_bytes -= p.frame_len as usize;
        Some(p)
    }

    fn remember_done(&mut self, key: FrameKey) {
        if self.done_order.len() == DONE_MEMORY
            && let Some(old) = self.done_order.pop_front()
        {
            self.done.remove(&old);
        }
        self.done.insert(key.clone());
        self.done_order.push_back(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Codec, Stream};

    fn frame(camera: &str, seq: u64, len: usize) -> Frame {
        Frame {
            meta: FrameMeta {
                camera: camera.into(),
                stream: Stream::Main,
                codec: Codec::H264,
                seq,
                capture_us: 1,
                pts_90k: 2,
                key: true,
                discontinuity: false,
            },
            payload: (0..len).map(|i| (i * 31 + seq as usize) as u8).collect(),
        }
    }

    fn feed(r: &mut Reassembler, recs: &[Vec<u8>], now: Instant) -> Vec<Frame> {
        let mut out = vec![];
        for rec in recs {
            if let Pushed::Frame(f) = r.push(Chunk::decode(rec).unwrap(), now).unwrap() {
                out.push(f);
            }
        }
        out
    }

    #[test]
    fn split_sizes() {
        // (payload, limit) -> chunks
        let cases = [(0, 200, 1), (10, 200, 1), (1000, 200, 7), (3_000_000, 1_000_000, 4)];
        for (len, limit, chunks) in cases {
            let f = frame("c", 1, len);
            let recs = split(&f, limit).unwrap();
            assert_eq!(recs.len(), chunks, "{len}/{limit}");
            assert!(recs.iter().all(|r| r.len() <= limit));
        }
        assert!(matches!(split(&frame("c", 1, 10), 20), Err(Error::RecordLimit(20))));
    }

    #[test]
    fn reassembles_in_any_order_with_duplicates() {
        let f = frame("cam", 5, 5000);
        let mut recs = split(&f, 600).unwrap();
        assert!(recs.len() > 5);
        recs.reverse();
        let dup = recs[2].clone();
        recs.insert(4, dup);
        let mut r = Reassembler::new(Limits::default());
        let out = feed(&mut r, &recs, Instant::now());
        assert_eq!(out, vec![f.clone()]);
        assert_eq!(r.pending_bytes(), 0);
        // A late duplicate of a completed frame is ignored, not a new entry.
        let late = Chunk::decode(&recs[0]).unwrap();
        assert_eq!(r.push(late, Instant::now()).unwrap(), Pushed::Duplicate);
        assert_eq!(r.pending_bytes(), 0);
    }

    #[test]
    fn a_camera_read_again_after_its_partition_left_gives_whole_frames() {
        let (a, b) = (frame("a", 1, 3000), frame("b", 1, 3000));
        let (ra, rb) = (split(&a, 700).unwrap(), split(&b, 700).unwrap());
        let mut r = Reassembler::new(Limits::default());
        let now = Instant::now();
        assert_eq!(feed(&mut r, &ra, now), vec![a.clone()]);
        assert_eq!(feed(&mut r, &rb, now), vec![b.clone()]);
        // a's partition left and came back: its frames are read again.
        r.forget_done("a");
        assert_eq!(feed(&mut r, &ra, now), vec![a], "a whole frame again, not a duplicate");
        assert!(feed(&mut r, &rb, now).is_empty(), "b's partition stayed: its repeat is a duplicate");
    }

    #[test]
    fn interleaved_cameras() {
        let a = frame("a", 1, 3000);
        let b = frame("b", 1, 2500);
        let (ra, rb) = (split(&a, 700).unwrap(), split(&b, 700).unwrap());
        let mut mixed = vec![];
        for i in 0..ra.len().max(rb.len()) {
            mixed.extend(ra.get(i).cloned());
            mixed.extend(rb.get(i).cloned());
        }
        let mut r = Reassembler::new(Limits::default());
        let out = feed(&mut r, &mixed, Instant::now());
        assert_eq!(out.len(), 2);
        assert!(out.contains(&a) && out.contains(&b));
    }

    #[test]
    fn missing_chunk_times_out() {
        let f = frame("cam", 9, 3000);
        let recs = split(&f, 700).unwrap();
        let t0 = Instant::now();
        let mut r = Reassembler::new(Limits { timeout: Duration::from_secs(5), ..Limits::default() });
        assert!(feed(&mut r, &recs[1..], t0).is_empty());
        r.expire(t0 + Duration::from_secs(4));
        assert!(r.take_problems().is_empty());
        r.expire(t0 + Duration::from_secs(6));
        let p = r.take_problems();
        assert!(
            matches!(&p[..], [Incomplete::TimedOut { have, count, .. }] if *have as usize == recs.len() - 1 && *count as usize == recs.len())
        );
        assert_eq!(r.pending_bytes(), 0);
    }

    #[test]
    fn memory_is_bounded() {
        let mut r = Reassembler::new(Limits { max_pending_bytes: 10_000, ..Limits::default() });
        let now = Instant::now();
        for seq in 0..10 {
            let recs = split(&frame("cam", seq, 4000), 1000).unwrap();
            feed(&mut r, &recs[..2], now); // never complete
            assert!(r.pending_bytes() <= 10_000);
        }
        let evicted = r.take_problems();
        assert_eq!(evicted.len(), 8);
        assert!(matches!(&evicted[0], Incomplete::Evicted { meta, .. } if meta.seq == 0));
    }

    #[test]
    fn oversized_and_conflicting() {
        let mut r = Reassembler::new(Limits { max_frame_bytes: 1000, ..Limits::default() });
        let recs = split(&frame("c", 1, 2000), 500).unwrap();
        assert!(matches!(r.push(Chunk::decode(&recs[0]).unwrap(), Instant::now()), Err(Error::FrameTooLarge(2000))));

        let mut r = Reassembler::new(Limits::default());
        let a = split(&frame("c", 1, 2000), 500).unwrap();
        let mut other = frame("c", 1, 2000);
        other.meta.capture_us = 99;
        let b = split(&other, 500).unwrap();
        feed(&mut r, &a[..1], Instant::now());
        assert!(r.push(Chunk::decode(&b[1]).unwrap(), Instant::now()).is_err());
        assert!(matches!(&r.take_problems()[..], [Incomplete::Conflict { .. }]));
    }
}
