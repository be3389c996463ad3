//! Playback of the archive in a browser or a player: the recorded ranges of
//! a camera (the timeline), a fragmented MP4 stream of a time range (a
//! `<video src>` in Chromium), and HLS (VLC, phones).
//!
//! A range is read in pages of index rows and cut into runs: a run starts
//! at a key frame and ends before the next run's key frame or at a recording
//! gap, so every fragment decodes on its own. Memory is bounded by a page of
//! rows plus one run's frames, however long the range.
//!
//! Timing (`timing`): within a run, durations come from the camera's clock
//! where it is steady, else the capture clock (`mp4::delta_90k`, as
//! exports); a run spans the capture time from its first frame to the next
//! run's, so the media timeline does not drift from the wall clock. A gap
//! (`GAP_US`, or a source restart) is left out of the timeline: the frame
//! before it lasts as long as the one before that.
//!
//! H.264 and H.265 only: MJPEG cameras are shown frame by frame elsewhere.

use crate::Error;
use crate::export::Frames;
use crate::fmp4::{self, Sample};
use crate::index::{FrameRow, Index};
use crate::mp4::{self, SampleEntry, Stamp, VideoCodec};
use std::borrow::Borrow;
use std::fmt::Write as _;
use std::path::Path;

/// Frames further apart than this (or a frame after a source restart) are
/// a recording gap: an HLS discontinuity, a cut in a recording's timeline.
/// The web app's timeline uses the same value with `ranges`.
pub const GAP_US: i64 = 2_000_000;

/// Index rows read at a time.
const PAGE: usize = 1024;
/// The most frames one HLS segment may hold (a request for more is refused
/// rather than read into memory).
const MAX_SEGMENT_FRAMES: usize = 20_000;
/// The duration of a frame with no neighbour to measure it by (40 ms).
const DEFAULT_90K: u32 = 3600;

/// The stretches of `camera` recorded in [from_us, to_us] where consecutive
/// frames are at most `max_gap_us` apart, as (first, last) capture times.
pub async fn ranges(
    index: &Index,
    camera: &str,
    from_us: i64,
    to_us: i64,
    max_gap_us: i64,
) -> Result<Vec<(i64, i64)>, Error> {
    if to_us < from_us {
        return Ok(Vec::new());
    }
    index.recorded_ranges(camera, from_us, to_us, max_gap_us.max(0)).await
}

/// The fMP4 init segment for `camera`, from the parameter sets of the key
/// frame that playback from `at_us` starts at. An HLS playlist's `init_uri`
/// should name this with the playlist's `from_us`.
pub async fn init_segment(dir: &Path, index: &Index, camera: &str, at_us: i64) -> Result<Vec<u8>, Error> {
    let Some((start, end)) = index.seq_span(camera, at_us, i64::MAX).await? else {
        return Err(no_frames(camera));
    };
    let rows = index.frames_by_seq(camera, start, end, PAGE).await?;
    let codec = video_codec(camera, rows.first().ok_or_else(|| no_frames(camera))?)?;
    let keys: Vec<FrameRow> = rows.into_iter().filter(|r| r.key).take(16).collect();
    let dir = dir.to_path_buf();
    let entry = blocking(move || {
        let mut frames = Frames::new(&dir);
        for r in &keys {
            let ps = mp4::to_sample(codec, frames.read(r)?, &mut Vec::new());
            if ps.complete(codec) {
                return mp4::sample_entry(codec, &ps);
            }
        }
        Err(no_parameter_sets(codec))
    })
    .await?;
    Ok(fmp4::init_segment(&entry))
}

/// A fragmented MP4 of a time range, produced piece by piece: the init
/// segment, then one fragment per GOP, decode times from 0. Concatenated
/// they are a file Chromium plays as it arrives. Frames are read on
/// tokio's blocking pool. `I` is `&Index` or `Arc<Index>` (for a `'static`
/// response stream).
pub struct Recording<I> {
    pages: Pages<I>,
    splitter: Splitter,
    codec: VideoCodec,
    frames: Option<Frames>,
    sequence: u32,
    decode_90k: u64,
    /// The first fragment, held back while the init segment goes out.
    pending: Option<Vec<u8>>,
    done: bool,
}

/// Starts a recording of `camera` over [from_us, to_us]; it begins at the
/// key frame `from_us` needs. Fails at once if nothing was recorded there
/// or the camera is not H.264/H.265.
pub async fn recording<I: Borrow<Index>>(
    dir: &Path,
    index: I,
    camera: &str,
    from_us: i64,
    to_us: i64,
) -> Result<Recording<I>, Error> {
    let mut pages = Pages::open(index, camera, from_us, to_us).await?.ok_or_else(|| no_frames(camera))?;
    let first = pages.peek().await?.ok_or_else(|| no_frames(camera))?;
    let codec = video_codec(camera, first)?;
    Ok(Recording {
        pages,
        splitter: Splitter::new(0), // a fragment per GOP
        codec,
        frames: Some(Frames::new(dir)),
        sequence: 0,
        decode_90k: 0,
        pending: None,
        done: false,
    })
}

impl<I: Borrow<Index>> Recording<I> {
    /// The next piece of the file; `None` once it is complete. After an
    /// error (a frame failing its checksum, a missing file) it ends: the
    /// bytes sent so far are a valid but shorter file.
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, Error>> {
        if let Some(fragment) = self.pending.take() {
            return Some(Ok(fragment));
        }
        if self.done {
            return None;
        }
        let piece = self.step().await;
        self.done = !matches!(piece, Ok(Some(_)));
        piece.transpose()
    }

    async fn step(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let Some(run) = next_run(&mut self.pages, &mut self.splitter, self.codec).await? else {
            if self.sequence == 0 {
                return Err(Error::Other(format!("{}: no key frame in that range", self.pages.camera)));
            }
            return Ok(None);
        };
        let (durations, span) = timing(&run.rows, run.next);
        let start = self.decode_90k;
        self.decode_90k += span;
        self.sequence = self.sequence.wrapping_add(1);
        let (codec, sequence, want_entry) = (self.codec, self.sequence, self.sequence == 1);
        let mut frames = self.frames.take().ok_or_else(|| Error::Other("recording reader lost".into()))?;
        let (frames, built) = blocking(move || {
            let built = build(&mut frames, codec, &run.rows, &durations, start, sequence, want_entry);
            Ok((frames, built))
        })
        .await?;
        self.frames = Some(frames);
        let (fragment, entry) = built?;
        match entry {
            Some(entry) => {
                self.pending = Some(fragment);
                Ok(Some(fmp4::init_segment(&entry)))
            }
            None => Ok(Some(fragment)),
        }
    }
}

/// An HLS media playlist and the segments it names.
#[derive(Clone, Debug, PartialEq)]
pub struct Playlist {
    /// The `#EXTM3U` text.
    pub text: String,
    pub segments: Vec<HlsSegment>,
}

/// One segment: capture times [from_us, to_us), what `hls_segment` takes.
#[derive(Clone, Debug, PartialEq)]
pub struct HlsSegment {
    pub from_us: i64,
    pub to_us: i64,
    pub duration_90k: u64,
    /// A recording gap (or source restart) comes before it.
    pub discontinuity: bool,
    pub uri: String,
}

/// An HLS VOD playlist (version 7, fMP4) of `camera` over [from_us, to_us]:
/// segments of about `target_secs`, each starting at a key frame, a
/// discontinuity at every recording gap. `init_uri` names the init segment
/// (`init_segment` with `from_us`); `segment_uri(from_us, to_us)` names each
/// segment (`hls_segment` with those bounds): the caller decides URLs.
pub async fn hls_playlist(
    index: &Index,
    camera: &str,
    from_us: i64,
    to_us: i64,
    target_secs: f64,
    init_uri: &str,
    segment_uri: impl Fn(i64, i64) -> String,
) -> Result<Playlist, Error> {
    if !(target_secs.is_finite() && target_secs > 0.0) {
        return Err(Error::Other(format!("HLS target duration {target_secs} s: give a positive number of seconds")));
    }
    let mut pages = Pages::open(index, camera, from_us, to_us).await?.ok_or_else(|| no_frames(camera))?;
    let first = pages.peek().await?.ok_or_else(|| no_frames(camera))?;
    let codec = video_codec(camera, first)?;
    let mut splitter = Splitter::new((target_secs * 1e6) as i64);
    let mut segments = Vec::new();
    while let Some(run) = next_run(&mut pages, &mut splitter, codec).await? {
        let (_, span) = timing(&run.rows, run.next);
        let from_us = run.rows[0].capture_us;
        // Contiguous: up to the next segment's first frame. Before a gap:
        // just past the last frame (`hls_segment` then finds no next frame).
        let to_us = run.next.map_or(run.rows[run.rows.len() - 1].capture_us.saturating_add(1), |n| n.capture_us);
        let uri = checked_uri(segment_uri(from_us, to_us))?;
        segments.push(HlsSegment { from_us, to_us, duration_90k: span, discontinuity: run.discontinuity, uri });
    }
    if segments.is_empty() {
        return Err(Error::Other(format!("{camera}: no key frame in that range")));
    }
    let text = playlist_text(&checked_uri(init_uri.to_string())?, &segments);
    Ok(Playlist { text, segments })
}

/// One HLS media segment (`moof` + `mdat`) of `camera`: the frames captured
/// in [seg_from_us, seg_to_us), as `hls_playlist` named them. Its decode
/// times are capture times (90 kHz since the Unix epoch), so each segment
/// is placed on its own and consecutive segments meet exactly.
pub async fn hls_segment(
    dir: &Path,
    index: &Index,
    camera: &str,
    seg_from_us: i64,
    seg_to_us: i64,
) -> Result<Vec<u8>, Error> {
    let Some((start, end)) = index.seq_span(camera, seg_from_us, seg_to_us).await? else {
        return Err(no_frames(camera));
    };
    let mut rows = index.frames_by_seq(camera, start, end, MAX_SEGMENT_FRAMES + 1).await?;
    if rows.len() > MAX_SEGMENT_FRAMES {
        return Err(Error::Other(format!("{camera}: an HLS segment of more than {MAX_SEGMENT_FRAMES} frames")));
    }
    let at_end = rows.iter().position(|r| r.capture_us >= seg_to_us).unwrap_or(rows.len());
    let next = rows.drain(at_end..).next();
    let first_key = rows.iter().position(|r| r.key).unwrap_or(rows.len());
    rows.drain(..first_key); // nothing before a key frame decodes
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Err(Error::Other(format!("{camera}: no key frame in that segment")));
    };
    let codec = video_codec(camera, first)?;
    let next = next.filter(|n| !is_gap(last, n)).map(|n| n.stamp());
    let (durations, _) = timing(&rows, next);
    // Sequence numbers grow from segment to segment, starting at 1.
    let (start_90k, sequence) = (cap90(first.capture_us), (first.seq as u32).wrapping_add(1));
    let dir = dir.to_path_buf();
    let (fragment, _) =
        blocking(move || build(&mut Frames::new(&dir), codec, &rows, &durations, start_90k, sequence, false)).await?;
    Ok(fragment)
}

/// The codec of a frame, if fragmented MP4 carries it.
fn video_codec(camera: &str, row: &FrameRow) -> Result<VideoCodec, Error> {
    match row.codec.as_str() {
        "h264" => Ok(VideoCodec::H264),
        "h265" => Ok(VideoCodec::H265),
        "mjpeg" => Err(Error::Other(format!(
            "{camera} records MJPEG: playback and HLS carry H.264 and H.265 (show MJPEG as JPEG frames)"
        ))),
        other => Err(Error::Other(format!("{camera} records {other}: playback carries H.264 and H.265"))),
    }
}

fn no_frames(camera: &str) -> Error {
    Error::Other(format!("camera {camera} has no recorded frames in that range"))
}

fn no_parameter_sets(codec: VideoCodec) -> Error {
    let wanted = if codec == VideoCodec::H265 { "VPS/SPS/PPS" } else { "SPS/PPS" };
    Error::Other(format!("no {wanted} on the key frames of that range: cannot describe the stream"))
}

/// Runs blocking file work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Other(format!("playback reader: {e}")))?
}

/// A range's index rows in seq order, a page at a time.
struct Pages<I> {
    index: I,
    camera: String,
    next_seq: u64,
    end_seq: u64,
    page: std::collections::VecDeque<FrameRow>,
    exhausted: bool,
}

impl<I: Borrow<Index>> Pages<I> {
    /// `None` if nothing was captured in [from_us, to_us].
    async fn open(index: I, camera: &str, from_us: i64, to_us: i64) -> Result<Option<Self>, Error> {
        let span = index.borrow().seq_span(camera, from_us, to_us).await?;
        Ok(span.map(|(next_seq, end_seq)| Pages {
            index,
            camera: camera.to_string(),
            next_seq,
            end_seq,
            page: Default::default(),
            exhausted: false,
        }))
    }

    async fn peek(&mut self) -> Result<Option<&FrameRow>, Error> {
        if self.page.is_empty() && !self.exhausted {
            let rows = self.index.borrow().frames_by_seq(&self.camera, self.next_seq, self.end_seq, PAGE).await?;
            self.exhausted = rows.len() < PAGE;
            match rows.last().and_then(|r| r.seq.checked_add(1)) {
                Some(next) => self.next_seq = next,
                None => self.exhausted = true,
            }
            self.page = rows.into();
        }
        Ok(self.page.front())
    }

    async fn next(&mut self) -> Result<Option<FrameRow>, Error> {
        self.peek().await?;
        Ok(self.page.pop_front())
    }
}

/// Feeds rows to the splitter until it closes a run (or the range ends).
/// A change of codec inside the range is an error: one init segment
/// describes one stream.
async fn next_run<I: Borrow<Index>>(
    pages: &mut Pages<I>,
    splitter: &mut Splitter,
    codec: VideoCodec,
) -> Result<Option<Run>, Error> {
    while let Some(row) = pages.next().await? {
        if video_codec(&row.camera, &row)? != codec {
            return Err(Error::Other(format!(
                "{}: the codec changes to {} at frame {}: play the range from there separately",
                row.camera, row.codec, row.seq
            )));
        }
        if let Some(run) = splitter.push(row) {
            return Ok(Some(run));
        }
    }
    Ok(splitter.finish())
}

/// Frames from a key frame up to the next run, or to a gap.
#[derive(Debug)]
struct Run {
    rows: Vec<FrameRow>,
    /// The next run's first frame, if it follows without a gap.
    next: Option<Stamp>,
    /// A gap comes before this run.
    discontinuity: bool,
}

/// Cuts frames (in seq order) into runs: a new run at the first key frame
/// `target_us` or more after the current run's start, and at every gap.
/// Frames before a stretch's first key frame are dropped: nothing decodes
/// them.
struct Splitter {
    target_us: i64,
    run: Vec<FrameRow>,
    discontinuity: bool,
}

impl Splitter {
    fn new(target_us: i64) -> Self {
        Splitter { target_us, run: Vec::new(), discontinuity: false }
    }

    /// Takes the next frame; returns the run it closes, if any.
    fn push(&mut self, row: FrameRow) -> Option<Run> {
        let Some(last) = self.run.last() else {
            self.start(row);
            return None;
        };
        let closed = if is_gap(last, &row) {
            let run = self.take(None);
            self.discontinuity = true;
            run
        } else if row.key && row.capture_us.saturating_sub(self.run[0].capture_us) >= self.target_us {
            self.take(Some(row.stamp()))
        } else {
            self.run.push(row);
            return None;
        };
        self.start(row);
        closed
    }

    fn finish(&mut self) -> Option<Run> {
        self.take(None)
    }

    fn start(&mut self, row: FrameRow) {
        if row.key {
            self.run.push(row);
        }
    }

    fn take(&mut self, next: Option<Stamp>) -> Option<Run> {
        if self.run.is_empty() {
            return None;
        }
        let discontinuity = std::mem::take(&mut self.discontinuity);
        Some(Run { rows: std::mem::take(&mut self.run), next, discontinuity })
    }
}

/// Whether `b`, the frame after `a`, starts a new stretch of recording.
fn is_gap(a: &FrameRow, b: &FrameRow) -> bool {
    b.discontinuity || b.capture_us < a.capture_us || b.capture_us.saturating_sub(a.capture_us) > GAP_US
}

/// Capture time on a 90 kHz clock since the Unix epoch.
fn cap90(us: i64) -> u64 {
    let us = us.max(0) as u64;
    us / 100 * 9 + us % 100 * 9 / 100
}

/// The durations of a run's frames and their sum. Frame to frame as
/// `mp4::delta_90k` says; the last frame lasts until `next` on the capture
/// clock (so the run spans exactly the capture time to the next run, and
/// the camera clock's drift is taken up once per run), or, before a gap,
/// as long as the frame before it.
fn timing(rows: &[FrameRow], next: Option<Stamp>) -> (Vec<u32>, u64) {
    let mut durations: Vec<u32> = rows.windows(2).map(|w| mp4::delta_90k(w[0].stamp(), w[1].stamp())).collect();
    let typical = durations.last().copied().unwrap_or(DEFAULT_90K);
    let before: u64 = durations.iter().map(|&d| d as u64).sum();
    let (first, last) = match (rows.first(), rows.last()) {
        (Some(f), Some(l)) => (f.capture_us, l.capture_us),
        _ => return (Vec::new(), 0),
    };
    let span = match next {
        Some(n) => cap90(n.capture_us).saturating_sub(cap90(first)),
        None => cap90(last).saturating_sub(cap90(first)) + typical as u64,
    };
    let rest = span.saturating_sub(before);
    let last = if rest > 0 && rest <= mp4::MAX_DELTA_90K as u64 { rest as u32 } else { typical };
    durations.push(last);
    (durations, before + last as u64)
}

/// Reads a run's frames and makes them one fragment starting at
/// `start_90k`; with `want_entry`, also the sample entry from the first
/// complete parameter sets.
fn build(
    frames: &mut Frames,
    codec: VideoCodec,
    rows: &[FrameRow],
    durations: &[u32],
    start_90k: u64,
    sequence: u32,
    want_entry: bool,
) -> Result<(Vec<u8>, Option<SampleEntry>), Error> {
    let mut samples = Vec::with_capacity(rows.len());
    let mut entry = None;
    let mut at = start_90k;
    for (r, &duration_90k) in rows.iter().zip(durations) {
        let mut data = Vec::with_capacity(r.len as usize);
        let ps = mp4::to_sample(codec, frames.read(r)?, &mut data);
        if want_entry && entry.is_none() && ps.complete(codec) {
            entry = Some(mp4::sample_entry(codec, &ps)?);
        }
        samples.push(Sample { data, decode_time_90k: at, duration_90k, key: r.key });
        at += duration_90k as u64;
    }
    if want_entry && entry.is_none() {
        return Err(no_parameter_sets(codec));
    }
    Ok((fmp4::fragment(sequence, &samples), entry))
}

/// A URI must not break the playlist's lines or quotes.
fn checked_uri(uri: String) -> Result<String, Error> {
    if uri.is_empty() || uri.contains(['"', '\r', '\n']) {
        return Err(Error::Other(format!("HLS URI {uri:?} is empty or holds a quote or line break")));
    }
    Ok(uri)
}

fn playlist_text(init_uri: &str, segments: &[HlsSegment]) -> String {
    let longest = segments.iter().map(|s| s.duration_90k).max().unwrap_or(0);
    let mut t = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-PLAYLIST-TYPE:VOD\n");
    // Every EXTINF, rounded, must be at most the target duration.
    let _ = writeln!(t, "#EXT-X-TARGETDURATION:{}", longest.div_ceil(90_000).max(1));
    t.push_str("#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let _ = writeln!(t, "#EXT-X-MAP:URI=\"{init_uri}\"");
    for (i, s) in segments.iter().enumerate() {
        if s.discontinuity {
            t.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if i == 0 || s.discontinuity {
            // Wall-clock time, for players that show it and for seeking by date.
            let _ = writeln!(t, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601(s.from_us));
        }
        let _ = writeln!(t, "#EXTINF:{:.6},\n{}", s.duration_90k as f64 / 90_000.0, s.uri);
    }
    t.push_str("#EXT-X-ENDLIST\n");
    t
}

/// `2024-05-01T12:00:00.000Z` from µs since the Unix epoch (civil from
/// days, proleptic Gregorian calendar).
fn iso8601(us: i64) -> String {
    let (secs, ms) = (us.div_euclid(1_000_000), us.rem_euclid(1_000_000) / 1000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    let (h, m, s) = (sod / 3600, sod / 60 % 60, sod % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

#[cfg(test)]
mod tests;
