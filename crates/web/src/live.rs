//! Live video: one Kafka consumer per watched camera, fanned out to every
//! viewer of it (at-most-once, latest wins: ARCHITECTURE.md).
//!
//! A feed reads its camera from the end of the topic and never commits. It
//! keeps the frames since the last key frame, so a new viewer starts at
//! once from that key frame. Frames go to viewers through a bounded
//! broadcast channel that never waits for anyone: a viewer that falls
//! behind (slow network, slow browser) loses the frames it missed and skips
//! ahead to the next key frame; nobody else notices, and the archive reads
//! its own topic position. The feed stops when its last viewer leaves.

use bus::metrics::{Counter, Metrics};
use bus::{FrameReader, KafkaConfig, TopicSpec};
use media::{Frame, Stream};
use rdkafka::Offset;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::broadcast;

/// Frames a viewer may fall behind before it skips to the next key frame.
const QUEUE: usize = 90;
/// Bound on the frames kept since the last key frame (a camera with a very
/// long GOP only delays a new viewer until its next key frame).
const GOP_MAX_FRAMES: usize = 600;
const GOP_MAX_BYTES: usize = 64 << 20;

/// Which stream of a camera a viewer watches and where it is read from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Source {
    pub camera: String,
    /// The sub stream on `vigil.live` when the camera has one; else the main
    /// stream on `vigil.frames`, read with the same at-most-once policy.
    pub sub: bool,
}

pub struct Hub {
    kafka: KafkaConfig,
    frames: TopicSpec,
    live: TopicSpec,
    partitions: HashMap<&'static str, i32>,
    feeds: Mutex<HashMap<Source, Weak<Feed>>>,
    metrics: Metrics,
}

struct Feed {
    /// The feed's task holds the only sender: when it ends (an error no
    /// retry cures) the channel closes and every viewer's stream ends.
    tx: broadcast::WeakSender<Arc<Frame>>,
    gop: Arc<Mutex<Gop>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort(); // the last viewer left: stop consuming
    }
}

#[derive(Default)]
struct Gop {
    frames: Vec<Arc<Frame>>,
    bytes: usize,
}

impl Gop {
    fn push(&mut self, f: &Arc<Frame>) {
        if f.meta.key {
            self.frames.clear();
            self.bytes = 0;
        } else if self.frames.is_empty() {
            return; // nothing decodable until a key frame
        }
        if self.frames.len() >= GOP_MAX_FRAMES || self.bytes + f.payload.len() > GOP_MAX_BYTES {
            self.frames.clear();
            self.bytes = 0;
            return;
        }
        self.bytes += f.payload.len();
        self.frames.push(f.clone());
    }
}

impl Hub {
    pub fn new(
        kafka: KafkaConfig,
        frames: TopicSpec,
        live: TopicSpec,
        partitions: HashMap<&'static str, i32>,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Hub { kafka, frames, live, partitions, feeds: Mutex::new(HashMap::new()), metrics })
    }

    /// Starts watching `source`: the frames since its last key frame first,
    /// then every new one.
    pub fn watch(self: &Arc<Self>, source: &Source) -> Result<Viewer, bus::Error> {
        let feed = {
            let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
            feeds.retain(|_, f| f.strong_count() > 0);
            // A feed whose reader ended (an error no retry cures) is replaced.
            match feeds.get(source).and_then(Weak::upgrade).filter(|f| !f.task.is_finished()) {
                Some(f) => f,
                None => {
                    let f = self.start(source)?;
                    feeds.insert(source.clone(), Arc::downgrade(&f));
                    f
                }
            }
        };
        // Subscribe before copying the GOP: a frame sent in between is then
        // in both, and the viewer drops it by seq.
        let Some(rx) = feed.tx.upgrade().map(|tx| tx.subscribe()) else {
            return Err(bus::Error::Other(format!("the live feed of {} has stopped", source.camera)));
        };
        let backlog: VecDeque<Arc<Frame>> =
            feed.gop.lock().unwrap_or_else(|p| p.into_inner()).frames.iter().cloned().collect();
        let labels = [("camera", source.camera.as_str())];
        Ok(Viewer {
            camera: source.camera.clone(),
            _feed: feed,
            rx,
            last_seq: None,
            waiting_for_key: backlog.is_empty(),
            backlog,
            skipped: self.metrics.counter(
                "vigil_web_live_skipped_frames_total",
                "Frames a slow viewer missed (it skipped to the next key frame).",
                &labels,
            ),
        })
    }

    /// How many feeds (Kafka consumers) are running.
    pub fn feeds(&self) -> usize {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner()).values().filter(|f| f.strong_count() > 0).count()
    }

    fn start(&self, source: &Source) -> Result<Arc<Feed>, bus::Error> {
        let topic = if source.sub { &self.live } else { &self.frames };
        let partitions = self.partitions.get(topic.name).copied().unwrap_or(topic.partitions);
        let mut reader = FrameReader::assign(&self.kafka, topic, partitions, Offset::End, &self.metrics)?;
        let (tx, _) = broadcast::channel(QUEUE);
        let gop = Arc::new(Mutex::new(Gop::default()));
        let (camera, stream) = (source.camera.clone(), if source.sub { Stream::Sub } else { Stream::Main });
        let (weak, task_gop) = (tx.downgrade(), gop.clone());
        let task_tx = tx;
        let task = tokio::spawn(async move {
            let mut narrowed = false;
            loop {
                // Transient errors are retried inside the reader; this one
                // no retry cures: the feed ends and its viewers see it close.
                let d = match reader.next().await {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(camera = %camera, error = %e, "live feed stopped");
                        return;
                    }
                };
                if d.frame.meta.camera != camera || d.frame.meta.stream != stream {
                    continue;
                }
                if !narrowed {
                    // A camera's frames all go to one partition (keyed by
                    // camera): read only that one from here on.
                    let only = HashMap::from([(d.partition, Offset::Offset(d.offset + 1))]);
                    if reader.reassign(&only).is_ok() {
                        narrowed = true;
                    }
                }
                let f = Arc::new(d.frame);
                task_gop.lock().unwrap_or_else(|p| p.into_inner()).push(&f);
                let _ = task_tx.send(f); // no viewer right now is fine
            }
        });
        Ok(Arc::new(Feed { tx: weak, gop, task: task.abort_handle() }))
    }
}

/// One viewer's view of a feed.
pub struct Viewer {
    camera: String,
    _feed: Arc<Feed>,
    rx: broadcast::Receiver<Arc<Frame>>,
    backlog: VecDeque<Arc<Frame>>,
    last_seq: Option<u64>,
    waiting_for_key: bool,
    skipped: Counter,
}

impl Viewer {
    pub fn camera(&self) -> &str {
        &self.camera
    }

    /// The next frame to show, or `None` when the feed has ended.
    pub async fn next(&mut self) -> Option<Arc<Frame>> {
        loop {
            let f = match self.backlog.pop_front() {
                Some(f) => f,
                None => match self.rx.recv().await {
                    Ok(f) => f,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.skipped.add(n);
                        self.waiting_for_key = true;
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            if self.last_seq.is_some_and(|s| f.meta.seq <= s) {
                continue; // already shown (GOP copy and channel overlap)
            }
            if self.waiting_for_key && !f.meta.key {
                self.skipped.inc();
                continue;
            }
            self.waiting_for_key = false;
            self.last_seq = Some(f.meta.seq);
            return Some(f);
        }
    }

    /// Drops what is queued and waits for the next key frame: for a viewer
    /// that knows it is behind (its socket was slow to drain).
    pub fn skip_to_next_key(&mut self) {
        self.backlog.clear();
        self.waiting_for_key = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media::{Codec, FrameMeta};

    fn frame(seq: u64, key: bool) -> Arc<Frame> {
        Arc::new(Frame {
            meta: FrameMeta {
                camera: "c".into(),
                stream: Stream::Main,
                codec: Codec::H264,
                seq,
                capture_us: seq as i64,
                pts_90k: 0,
                key,
                discontinuity: false,
            },
            payload: vec![0; 10],
        })
    }

    fn viewer(backlog: Vec<Arc<Frame>>, rx: broadcast::Receiver<Arc<Frame>>) -> Viewer {
        let (tx, _) = broadcast::channel(1);
        let feed = Arc::new(Feed {
            tx: tx.downgrade(),
            gop: Default::default(),
            task: tokio::spawn(std::future::pending::<()>()).abort_handle(),
        });
        Viewer {
            camera: "c".into(),
            _feed: feed,
            rx,
            waiting_for_key: backlog.is_empty(),
            backlog: backlog.into(),
            last_seq: None,
            skipped: Metrics::default().counter("t", "t", &[]),
        }
    }

    #[tokio::test]
    async fn a_new_viewer_starts_at_the_last_key_frame_without_repeats() {
        let (tx, rx) = broadcast::channel(8);
        let mut v = viewer(vec![frame(10, true), frame(11, false)], rx);
        tx.send(frame(11, false)).unwrap(); // in both the GOP copy and the channel
        tx.send(frame(12, false)).unwrap();
        let seqs: Vec<u64> = [v.next().await, v.next().await, v.next().await].map(|f| f.unwrap().meta.seq).into();
        assert_eq!(seqs, vec![10, 11, 12]);
    }

    #[tokio::test]
    async fn a_slow_viewer_skips_to_the_next_key_frame() {
        let (tx, rx) = broadcast::channel(4);
        let mut v = viewer(vec![], rx);
        // Nothing before the first key frame is shown.
        tx.send(frame(1, false)).unwrap();
        tx.send(frame(2, true)).unwrap();
        assert_eq!(v.next().await.unwrap().meta.seq, 2);
        // The viewer stalls while 10 frames pass through a 4-slot queue.
        for s in 3..13 {
            tx.send(frame(s, s == 5 || s == 11)).unwrap();
        }
        tx.send(frame(13, false)).unwrap();
        // It lost the oldest ones; it resumes at a key frame, never between.
        let next = v.next().await.unwrap();
        assert!(next.meta.key, "resumed at {}", next.meta.seq);
        assert_eq!(next.meta.seq, 11);
        assert_eq!(v.next().await.unwrap().meta.seq, 12);
    }

    #[test]
    fn the_gop_holds_frames_since_the_last_key_frame() {
        let mut g = Gop::default();
        g.push(&frame(1, false)); // no key frame yet: useless
        assert!(g.frames.is_empty());
        for (s, k) in [(2, true), (3, false), (4, true), (5, false)] {
            g.push(&frame(s, k));
        }
        assert_eq!(g.frames.iter().map(|f| f.meta.seq).collect::<Vec<_>>(), vec![4, 5]);
    }
}
