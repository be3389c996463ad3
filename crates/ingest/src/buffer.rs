//! The buffer between a camera and its publisher, bounded by bytes.
//!
//! A camera cannot be paused, so when the buffer is full the *newest* frame
//! is dropped at the camera, counted, and every later frame is dropped until
//! the next key frame (a decoder could not use them anyway). A frame the
//! buffer accepts gets its sequence number here, so `seq` numbers exactly
//! the frames ingest took responsibility for.

use crate::seq::SeqCounter;
use bus::metrics::{Counter, Gauge, Metrics};
use media::Frame;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};

/// Why a frame never entered the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    Full,
    WaitingForKeyFrame,
    SeqStore,
}

impl Dropped {
    fn label(self) -> &'static str {
        match self {
            Dropped::Full => "buffer-full",
            Dropped::WaitingForKeyFrame => "waiting-for-key-frame",
            Dropped::SeqStore => "seq-store-error",
        }
    }
}

pub struct BufferSender {
    tx: mpsc::UnboundedSender<Frame>,
    room: Arc<Semaphore>,
    seq: SeqCounter,
    need_key: bool,
    first: bool,
    dropped: [Counter; 3],
    accepted: Counter,
}

pub struct BufferReceiver {
    rx: mpsc::UnboundedReceiver<Frame>,
    room: Arc<Semaphore>,
    held: Gauge,
    capacity: usize,
}

/// A buffer of `capacity` bytes for one camera stream publishing to `topic`.
pub fn buffer(
    capacity: usize,
    seq: SeqCounter,
    metrics: &Metrics,
    camera: &str,
    topic: &str,
) -> (BufferSender, BufferReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let room = Arc::new(Semaphore::new(capacity.min(Semaphore::MAX_PERMITS)));
    let drop_counter = |d: Dropped| {
        metrics.counter(
            "vigil_ingest_dropped_frames_total",
            "Frames a camera produced that ingest did not accept, by reason.",
            &[("camera", camera), ("topic", topic), ("reason", d.label())],
        )
    };
    let labels = [("camera", camera), ("topic", topic)];
    (
        BufferSender {
            tx,
            room: room.clone(),
            seq,
            need_key: true,
            first: true,
            dropped: [
                drop_counter(Dropped::Full),
                drop_counter(Dropped::WaitingForKeyFrame),
                drop_counter(Dropped::SeqStore),
            ],
            accepted: metrics.counter(
                "vigil_ingest_accepted_frames_total",
                "Frames accepted into ingest's buffer (each got a seq).",
                &labels,
            ),
        },
        BufferReceiver {
            rx,
            room,
            held: metrics.gauge(
                "vigil_ingest_buffer_bytes",
                "Bytes waiting between a camera and the producer.",
                &labels,
            ),
            capacity,
        },
    )
}

impl BufferSender {
    /// Offers a frame; on acceptance it gets its `seq` (and the
    /// `discontinuity` flag if it is the first since start). Never blocks.
    pub fn offer(&mut self, mut frame: Frame) -> Result<u64, Dropped> {
        let r = self.try_offer(&mut frame);
        if let Err(d) = r {
            self.dropped[d as usize].inc();
            if d != Dropped::WaitingForKeyFrame {
                self.need_key = true;
            }
        }
        r.inspect(|&seq| {
            frame.meta.seq = seq;
            self.accepted.inc();
            // A closed receiver means the publisher is gone (shutting down).
            let _ = self.tx.send(frame);
        })
    }

    fn try_offer(&mut self, frame: &mut Frame) -> Result<u64, Dropped> {
        if self.need_key && !frame.meta.key {
            return Err(Dropped::WaitingForKeyFrame);
        }
        let len = frame.payload.len().max(1) as u32;
        let permit = self.room.try_acquire_many(len).map_err(|_| Dropped::Full)?;
        let seq = match self.seq.take() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(camera = %frame.meta.camera, error = %e, "cannot reserve sequence numbers");
                return Err(Dropped::SeqStore);
            }
        };
        permit.forget();
        self.need_key = false;
        frame.meta.discontinuity = std::mem::take(&mut self.first);
        Ok(seq)
    }

    /// The next accepted frame follows a gap (the camera was away): it gets
    /// the `discontinuity` flag, so the gap reads as "not recorded".
    pub fn mark_gap(&mut self) {
        self.first = true;
        self.need_key = true;
    }

    /// Whether the camera should make its next frame a key frame.
    pub fn wants_key_frame(&self) -> bool {
        self.need_key
    }
}

impl BufferReceiver {
    /// A frame if one is waiting (tests).
    pub fn try_recv(&mut self) -> Result<Frame, mpsc::error::TryRecvError> {
        self.rx.try_recv()
    }

    pub async fn recv(&mut self) -> Option<Frame> {
        self.rx.recv().await
    }

    /// Gives the frame's bytes back to the camera once the producer holds it.
    pub fn release(&self, frame_len: usize) {
        self.room.add_permits(frame_len.max(1));
        self.held.set((self.capacity - self.room.available_permits()) as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media::{Codec, FrameMeta, Stream};

    fn frame(key: bool, len: usize) -> Frame {
        Frame {
            meta: FrameMeta {
                camera: "c".into(),
                stream: Stream::Main,
                codec: Codec::H264,
                seq: 0,
                capture_us: 0,
                pts_90k: 0,
                key,
                discontinuity: false,
            },
            payload: vec![0; len],
        }
    }

    #[tokio::test]
    async fn full_buffer_drops_until_key_frame() {
        let dir = std::env::temp_dir().join(format!("vigil-buf-{}", std::process::id()));
        let m = Metrics::default();
        let (mut tx, mut rx) = buffer(1000, SeqCounter::open(&dir, "c.main").unwrap(), &m, "c", "t");
        // (key, len) -> accepted?
        let script = [
            (false, 10, Err(Dropped::WaitingForKeyFrame)), // must start at a key frame
            (true, 400, Ok(0)),
            (false, 400, Ok(1)),
            (false, 400, Err(Dropped::Full)),
            (false, 10, Err(Dropped::WaitingForKeyFrame)), // fits, but undecodable
            (true, 150, Ok(2)),
        ];
        for (i, (key, len, want)) in script.into_iter().enumerate() {
            assert_eq!(tx.offer(frame(key, len)), want, "step {i}");
        }
        let first = rx.recv().await.unwrap();
        assert!(first.meta.discontinuity && first.meta.seq == 0);
        let second = rx.recv().await.unwrap();
        assert!(!second.meta.discontinuity && second.meta.seq == 1);
        rx.release(400);
        rx.release(400);
        assert_eq!(tx.offer(frame(false, 500)), Ok(3));
        assert!(m.render().contains("reason=\"buffer-full\"} 1"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
