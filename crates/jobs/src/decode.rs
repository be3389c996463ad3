//! A whole video file decoded by an ffmpeg child process: any container
//! and codec ffmpeg reads, every frame of the first video stream in
//! presentation order, at the file's own timestamps, as packed RGB.
//!
//! ffmpeg reads the file by path, not from a pipe: an MP4 whose index sits
//! at the end cannot be read from a stream. Frames come on stdout
//! (`rawvideo rgb24`, at the size `probe` reported: `-noautorotate` keeps
//! ffmpeg from turning portrait files, and a stream that changes size is
//! scaled to its first), their timestamps from the `showinfo` filter on
//! stderr, paired in order. Two threads read them into a bounded channel:
//! the decoder runs ahead of the model by a few frames at most.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tokio::sync::mpsc;

/// What `probe` learns of a file before decoding it.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoInfo {
    pub width: u32,
    pub height: u32,
    /// Frames in the stream (packets counted by ffprobe: exact for
    /// ordinary files, an estimate where the container says nothing).
    pub frames: Option<u64>,
    pub duration_us: Option<i64>,
    pub codec: String,
}

/// One decoded frame.
pub struct Decoded {
    /// Its number in the video, from 0, in presentation order.
    pub index: u64,
    /// Its timestamp in the file, microseconds.
    pub time_us: i64,
    pub rgb: Vec<u8>,
}

/// The largest frame side accepted (a hostile header cannot make a
/// collector allocate hundreds of megabytes per frame): 4K.
const MAX_SIDE: u32 = 4096;
/// Lines of ffmpeg's stderr kept for an error.
const TAIL: usize = 6;

/// Describes the first video stream of `path`, or says why it has none.
pub fn probe(path: &Path) -> Result<VideoInfo, String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_packets", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=codec_name,width,height,nb_read_packets,duration:format=duration"])
        .args(["-of", "json"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ffprobe: {e}"))?;
    let err = tidy(&String::from_utf8_lossy(&out.stderr), path);
    if !out.status.success() {
        return Err(format!("not a video ffmpeg can read: {err}"));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("ffprobe's answer: {e}"))?;
    let Some(s) = v["streams"].get(0) else {
        return Err("no video stream in the file".into());
    };
    let side = |k: &str| s[k].as_u64().filter(|&n| n > 0 && n <= MAX_SIDE as u64).map(|n| n as u32);
    let (Some(width), Some(height)) = (side("width"), side("height")) else {
        return Err(format!("a video stream of size {}x{} (at most {MAX_SIDE} a side)", s["width"], s["height"]));
    };
    let secs = |x: &serde_json::Value| x.as_str().and_then(|t| t.parse::<f64>().ok()).filter(|t| t.is_finite());
    let duration = secs(&s["duration"]).or_else(|| secs(&v["format"]["duration"]));
    Ok(VideoInfo {
        width,
        height,
        frames: s["nb_read_packets"].as_str().and_then(|n| n.parse().ok()),
        duration_us: duration.map(|d| (d * 1e6) as i64),
        codec: s["codec_name"].as_str().unwrap_or("?").to_string(),
    })
}

/// `src` as an MP4 a browser plays (H.264, index first), at the file's own
/// timestamps: the video copied when it is H.264, re-encoded otherwise.
/// Written to a temporary name and renamed: `out` is whole or absent.
pub fn browser_mp4(src: &Path, out: &Path) -> Result<(), String> {
    let info = probe(src)?;
    let tmp = out.with_extension("part.mp4");
    let codec: &[&str] = if info.codec == "h264" {
        &["-c:v", "copy"]
    } else {
        &["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
    };
    let done = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(src)
        .args(["-map", "0:v:0", "-an", "-sn", "-dn", "-fps_mode", "passthrough"])
        .args(codec)
        .args(["-movflags", "+faststart", "-f", "mp4"])
        .arg(&tmp)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    if !done.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("ffmpeg could not make an MP4: {}", tidy(&String::from_utf8_lossy(&done.stderr), src)));
    }
    std::fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))
}

/// ffmpeg's error lines, short: without the path (a collector's work
/// file, not the user's) and the demuxer's address (`[mov,mp4 @ 0x55..]`).
fn tidy(stderr: &str, path: &Path) -> String {
    let path = format!("{}: ", path.display());
    let lines: Vec<String> = stderr
        .lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .map(|l| match (l.starts_with('['), l.find("] ")) {
            (true, Some(i)) => &l[i + 2..],
            _ => l,
        })
        .map(|l| l.replace(&path, ""))
        .collect();
    lines[lines.len().saturating_sub(TAIL)..].join(" | ")
}

/// A running decode. Dropping it stops ffmpeg (at its next frame).
pub struct Frames {
    rx: mpsc::Receiver<Result<Decoded, String>>,
}

impl Frames {
    /// Starts ffmpeg on `path`; frames come from `next`.
    pub fn start(path: &Path, info: &VideoInfo) -> Result<Frames, String> {
        let mut child = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", "-noautorotate", "-i"])
            .arg(path)
            .args(["-map", "0:v:0", "-an", "-sn", "-dn", "-fps_mode", "passthrough", "-vf"])
            .arg(format!("showinfo,scale={}:{}", info.width, info.height))
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
            return Err("ffmpeg without pipes".into());
        };
        let (times_tx, times_rx) = std::sync::mpsc::channel::<Option<i64>>();
        let (tail_tx, tail_rx) = std::sync::mpsc::channel::<Vec<String>>();
        std::thread::Builder::new()
            .name("ffmpeg-log".into())
            .spawn(move || read_log(stderr, times_tx, tail_tx))
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        let (tx, rx) = mpsc::channel(4);
        let size = 3 * info.width as usize * info.height as usize;
        let file = path.to_path_buf();
        std::thread::Builder::new()
            .name("ffmpeg-frames".into())
            .spawn(move || read_frames(child, stdout, size, times_rx, tail_rx, tx, file))
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        Ok(Frames { rx })
    }

    /// The next frame; `None` at the end of the video; an error when ffmpeg
    /// failed (its last lines), after which nothing more comes.
    pub async fn next(&mut self) -> Option<Result<Decoded, String>> {
        self.rx.recv().await
    }

    /// What is ready now, without waiting.
    pub fn try_next(&mut self) -> Next {
        match self.rx.try_recv() {
            Ok(Ok(f)) => Next::Frame(f),
            Ok(Err(why)) => Next::Failed(why),
            Err(mpsc::error::TryRecvError::Empty) => Next::NotYet,
            Err(mpsc::error::TryRecvError::Disconnected) => Next::Ended,
        }
    }
}

/// What `Frames::try_next` found.
pub enum Next {
    Frame(Decoded),
    /// ffmpeg failed (its last lines); nothing more comes.
    Failed(String),
    /// The decoder has not caught up yet.
    NotYet,
    /// The video's end.
    Ended,
}

/// ffmpeg's stderr: each `showinfo` line's `pts_time` in order; the last
/// other lines, for an error, once it closes.
fn read_log(
    stderr: impl Read,
    times: std::sync::mpsc::Sender<Option<i64>>,
    tail: std::sync::mpsc::Sender<Vec<String>>,
) {
    let mut last: std::collections::VecDeque<String> = Default::default();
    let mut reader = BufReader::new(stderr);
    let mut raw = Vec::new();
    // Bytes, not text: metadata in another encoding must not end the
    // reading (ffmpeg would then die on a closed pipe).
    while matches!(reader.read_until(b'\n', &mut raw), Ok(n) if n > 0) {
        let line = String::from_utf8_lossy(&raw).trim_end().to_string();
        raw.clear();
        // One line per frame, in order (the frame's time, or none).
        if line.starts_with("[Parsed_showinfo") && line.contains(" n:") {
            let _ = times.send(pts_time(&line).map(|t| (t * 1e6).round() as i64));
            continue;
        }
        // Stream descriptions are indented; errors are not.
        if line.starts_with(' ') || line.is_empty() {
            continue;
        }
        if last.len() == TAIL {
            last.pop_front();
        }
        last.push_back(line);
    }
    let _ = tail.send(last.into());
}

fn pts_time(line: &str) -> Option<f64> {
    let rest = &line[line.find("pts_time:")? + "pts_time:".len()..];
    let t: f64 = rest.split_whitespace().next()?.parse().ok()?;
    // Beyond ±a million years of video is no timestamp.
    (t.is_finite() && t.abs() < 3e13).then_some(t)
}

fn read_frames(
    mut child: Child,
    mut stdout: impl Read,
    size: usize,
    times: std::sync::mpsc::Receiver<Option<i64>>,
    tail: std::sync::mpsc::Receiver<Vec<String>>,
    tx: mpsc::Sender<Result<Decoded, String>>,
    file: PathBuf,
) {
    let mut index = 0u64;
    let mut last_time: i64 = -1;
    loop {
        let mut rgb = vec![0u8; size];
        match read_full(&mut stdout, &mut rgb) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = tx.blocking_send(Err(format!("reading ffmpeg's frames: {e}")));
                return;
            }
        }
        // showinfo logs a frame before ffmpeg writes it.
        // A frame without a time takes the one after the last.
        let time_us = times.recv().ok().flatten().unwrap_or(last_time.saturating_add(1));
        last_time = time_us;
        if tx.blocking_send(Ok(Decoded { index, time_us, rgb })).is_err() {
            // The job was dropped: stop ffmpeg.
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        index += 1;
    }
    drop(stdout);
    let lines = tail.recv().unwrap_or_default();
    let status = child.wait();
    if index == 0 || !status.as_ref().is_ok_and(|s| s.success()) {
        let why = if lines.is_empty() { "no frame decoded".to_string() } else { tidy(&lines.join("\n"), &file) };
        let _ = tx.blocking_send(Err(format!("ffmpeg could not decode the video: {why}")));
    }
}

/// Fills `buf` entirely: `Ok(false)` at a clean end before its first byte.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) if at == 0 => return Ok(false),
            Ok(0) => return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "a partial frame")),
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_without_work_paths_or_addresses() {
        let err = "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d0c] moov atom not found\n/w/jobs/ab.video: Invalid data found when processing input\n";
        assert_eq!(
            tidy(err, Path::new("/w/jobs/ab.video")),
            "moov atom not found | Invalid data found when processing input"
        );
    }

    #[test]
    fn showinfo_times() {
        let l = "[Parsed_showinfo_0 @ 0x55] n:   3 pts:  12288 pts_time:0.8     duration:512 pos: 1 fmt:yuv420p";
        assert_eq!(pts_time(l), Some(0.8));
        assert_eq!(pts_time("[Parsed_showinfo_0 @ 0x55] config in time_base: 1/15360"), None);
        assert_eq!(pts_time("pts_time:nan x"), None);
    }
}
