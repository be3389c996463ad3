//! Export of a recorded time range: a standard MP4 for H.264 cameras, a raw
//! MJPEG stream (concatenated JPEGs, `.mjpeg`) for MJPEG cameras.
//!
//! The export starts at the last key frame at or before the requested start,
//! so it decodes from its first frame. It is written to `<out>.partial` and
//! renamed when complete: a failed export never leaves a broken file behind.

use crate::index::{FrameRow, Index};
use crate::{Error, mp4};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub frames: u64,
    pub bytes: u64,
    pub first_us: i64,
    pub last_us: i64,
    pub format: &'static str,
}

/// Exports `camera` from `from_us` to `to_us` (capture time, µs) into `out`.
/// `progress(done, total)` is called as frames are written.
pub async fn export(
    dir: &Path,
    index: &Index,
    camera: &str,
    from_us: i64,
    to_us: i64,
    out: &Path,
    progress: impl FnMut(u64, u64) + Send + 'static,
) -> Result<Summary, Error> {
    let mut rows = index.frames_between(camera, from_us, to_us).await?;
    let first_key = rows.iter().position(|r| r.key).unwrap_or(rows.len());
    rows.drain(..first_key);
    if rows.is_empty() {
        return Err(Error::Other(format!("camera {camera} has no recorded frames in that range")));
    }
    let codec = rows[0].codec.clone();
    let (dir, out) = (dir.to_path_buf(), out.to_path_buf());
    tokio::task::spawn_blocking(move || match codec.as_str() {
        "h264" => write_mp4(&dir, &rows, &out, progress),
        "mjpeg" => write_mjpeg(&dir, &rows, &out, progress),
        other => Err(Error::Other(format!("export of {other} is not supported yet (H.264 and MJPEG are)"))),
    })
    .await
    .map_err(|e| Error::Other(e.to_string()))?
}

/// Reads frames' bytes from their segments, checking each CRC.
struct Frames<'a> {
    dir: &'a Path,
    open: HashMap<String, File>,
    buf: Vec<u8>,
}

impl Frames<'_> {
    fn read(&mut self, r: &FrameRow) -> Result<&[u8], Error> {
        let path = self.dir.join(&r.file);
        let io = |e| Error::Io { path: path.clone(), source: e };
        if !self.open.contains_key(&r.file) {
            self.open.insert(r.file.clone(), File::open(&path).map_err(io)?);
        }
        let f = self.open.get_mut(&r.file).expect("just opened");
        self.buf.resize(r.len as usize, 0);
        f.seek(SeekFrom::Start(r.offset)).and_then(|_| f.read_exact(&mut self.buf)).map_err(io)?;
        if crc32fast::hash(&self.buf) != r.crc {
            return Err(Error::Other(format!("{}: frame {} fails its checksum (run vigil check)", r.camera, r.seq)));
        }
        Ok(&self.buf)
    }
}

fn partial(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

fn finish(tmp: &Path, out: &Path, w: BufWriter<File>) -> Result<(), Error> {
    let io = |e| Error::Io { path: out.to_path_buf(), source: e };
    let f = w.into_inner().map_err(|e| io(e.into_error()))?;
    f.sync_all().map_err(io)?;
    std::fs::rename(tmp, out).map_err(io)
}

fn summary(rows: &[FrameRow], bytes: u64, format: &'static str) -> Summary {
    Summary {
        frames: rows.len() as u64,
        bytes,
        first_us: rows[0].capture_us,
        last_us: rows[rows.len() - 1].capture_us,
        format,
    }
}

fn write_mjpeg(
    dir: &Path,
    rows: &[FrameRow],
    out: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<Summary, Error> {
    let tmp = partial(out);
    let io = |e| Error::Io { path: tmp.clone(), source: e };
    let mut w = BufWriter::new(File::create(&tmp).map_err(io)?);
    let mut frames = Frames { dir, open: HashMap::new(), buf: Vec::new() };
    let mut bytes = 0;
    for (i, r) in rows.iter().enumerate() {
        let data = frames.read(r)?;
        w.write_all(data).map_err(io)?;
        bytes += data.len() as u64;
        progress(i as u64 + 1, rows.len() as u64);
    }
    finish(&tmp, out, w)?;
    Ok(summary(rows, bytes, "mjpeg"))
}

fn write_mp4(dir: &Path, rows: &[FrameRow], out: &Path, mut progress: impl FnMut(u64, u64)) -> Result<Summary, Error> {
    let tmp = partial(out);
    let io = |e| Error::Io { path: tmp.clone(), source: e };
    let mut w = BufWriter::new(File::create(&tmp).map_err(io)?);
    let ftyp = mp4::ftyp();
    w.write_all(&ftyp).map_err(io)?;
    w.write_all(&mp4::mdat_header(0)).map_err(io)?; // sized once known
    let mut pos = (ftyp.len() + 16) as u64;
    let mut frames = Frames { dir, open: HashMap::new(), buf: Vec::new() };
    let (mut sps, mut pps) = (Vec::new(), Vec::new());
    let mut samples = Vec::with_capacity(rows.len());
    let mut sample = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        sample.clear();
        let (s, p) = mp4::to_sample(frames.read(r)?, &mut sample);
        if sps.is_empty()
            && let (Some(s), Some(p)) = (s, p)
        {
            (sps, pps) = (s.to_vec(), p.to_vec());
        }
        let duration_90k = sample_duration(rows, i);
        w.write_all(&sample).map_err(io)?;
        samples.push(mp4::SampleInfo { size: sample.len() as u32, duration_90k, key: r.key, offset: pos });
        pos += sample.len() as u64;
        progress(i as u64 + 1, rows.len() as u64);
    }
    if sps.is_empty() {
        return Err(Error::Other("no SPS/PPS in the exported range: cannot describe the stream".into()));
    }
    let (width, height) = mp4::sps_size(&sps).unwrap_or((0, 0));
    let mdat_len = pos - ftyp.len() as u64 - 16;
    w.write_all(&mp4::moov(&samples, &sps, &pps, width, height)).map_err(io)?;
    w.seek(SeekFrom::Start(ftyp.len() as u64)).map_err(io)?;
    w.write_all(&mp4::mdat_header(mdat_len)).map_err(io)?;
    finish(&tmp, out, w)?;
    Ok(summary(rows, mdat_len, "mp4"))
}

/// How long frame `i` is shown, in 90 kHz ticks: from the camera's own
/// timestamps (a steady media timeline), or from the capture clock where
/// those jump (a source restart), so one bad gap never breaks the file.
fn sample_duration(rows: &[FrameRow], i: usize) -> u32 {
    let delta = |a: &FrameRow, b: &FrameRow| {
        let pts = b.pts_90k - a.pts_90k;
        if pts > 0 && pts < 90_000 * 60 { pts } else { ((b.capture_us - a.capture_us) * 9 / 100).clamp(1, 90_000 * 60) }
    };
    let d = match (rows.get(i), rows.get(i + 1)) {
        (Some(a), Some(b)) => delta(a, b),
        _ if i > 0 => delta(&rows[i - 1], &rows[i]),
        _ => 3600, // a single frame: 40 ms
    };
    d as u32
}
