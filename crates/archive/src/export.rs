//! Export of a recorded time range: a standard MP4 for H.264 (`avc1`) and
//! H.265 (`hvc1`) cameras, a raw MJPEG stream (concatenated JPEGs, `.mjpeg`)
//! for MJPEG cameras.
//!
//! The export starts at the last key frame at or before the requested start,
//! so it decodes from its first frame. It is written to `<out>.partial` and
//! renamed when complete: a failed export never leaves a broken file behind.

use crate::Error;
use crate::index::{FrameRow, Index};
use crate::mp4::{self, VideoCodec};
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
    tokio::task::spawn_blocking(move || {
        let done = match codec.as_str() {
            "h264" => write_mp4(VideoCodec::H264, &dir, &rows, &out, progress),
            "h265" => write_mp4(VideoCodec::H265, &dir, &rows, &out, progress),
            "mjpeg" => write_mjpeg(&dir, &rows, &out, progress),
            other => Err(Error::Other(format!("export of {other} is not supported yet (H.264, H.265 and MJPEG are)"))),
        };
        if done.is_err() {
            let _ = std::fs::remove_file(partial(&out));
        }
        done
    })
    .await
    .map_err(|e| Error::Other(e.to_string()))?
}

/// Reads frames' bytes from their segments, checking each CRC. Frames are
/// read in order, so only the current segment file is kept open: a long
/// read holds one descriptor, not one per segment.
pub struct Frames {
    dir: PathBuf,
    open: Option<(String, File)>,
    buf: Vec<u8>,
}

impl Frames {
    pub fn new(dir: &Path) -> Self {
        Frames { dir: dir.to_path_buf(), open: None, buf: Vec::new() }
    }

    pub fn read(&mut self, r: &FrameRow) -> Result<&[u8], Error> {
        let path = self.dir.join(&r.file);
        let io = |e| Error::Io { path: path.clone(), source: e };
        let f = match &mut self.open {
            Some((file, f)) if *file == r.file => f,
            open => &mut open.insert((r.file.clone(), File::open(&path).map_err(io)?)).1,
        };
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
    let mut frames = Frames::new(dir);
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

fn write_mp4(
    codec: VideoCodec,
    dir: &Path,
    rows: &[FrameRow],
    out: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<Summary, Error> {
    let tmp = partial(out);
    let io = |e| Error::Io { path: tmp.clone(), source: e };
    let mut w = BufWriter::new(File::create(&tmp).map_err(io)?);
    let ftyp = mp4::ftyp(codec);
    w.write_all(&ftyp).map_err(io)?;
    w.write_all(&mp4::mdat_header(0)).map_err(io)?; // sized once known
    let mut pos = (ftyp.len() + 16) as u64;
    let mut frames = Frames::new(dir);
    let mut entry = None; // from the first complete set of parameter sets
    let mut samples = Vec::with_capacity(rows.len());
    let mut sample = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        sample.clear();
        let ps = mp4::to_sample(codec, frames.read(r)?, &mut sample);
        if entry.is_none() && ps.complete(codec) {
            entry = Some(mp4::sample_entry(codec, &ps)?);
        }
        let duration_90k = sample_duration(rows, i);
        w.write_all(&sample).map_err(io)?;
        samples.push(mp4::SampleInfo { size: sample.len() as u32, duration_90k, key: r.key, offset: pos });
        pos += sample.len() as u64;
        progress(i as u64 + 1, rows.len() as u64);
    }
    let Some(entry) = entry else {
        let wanted = if codec == VideoCodec::H265 { "VPS/SPS/PPS" } else { "SPS/PPS" };
        return Err(Error::Other(format!("no {wanted} in the exported range: cannot describe the stream")));
    };
    let mdat_len = pos - ftyp.len() as u64 - 16;
    w.write_all(&mp4::moov(&samples, &entry)).map_err(io)?;
    w.seek(SeekFrom::Start(ftyp.len() as u64)).map_err(io)?;
    w.write_all(&mp4::mdat_header(mdat_len)).map_err(io)?;
    finish(&tmp, out, w)?;
    Ok(summary(rows, mdat_len, "mp4"))
}

/// How long frame `i` is shown, in 90 kHz ticks (`mp4::delta_90k`: the
/// camera's clock, or the capture clock where that jumps).
fn sample_duration(rows: &[FrameRow], i: usize) -> u32 {
    match (rows.get(i), rows.get(i + 1)) {
        (Some(a), Some(b)) => mp4::delta_90k(a.stamp(), b.stamp()),
        _ if i > 0 => mp4::delta_90k(rows[i - 1].stamp(), rows[i].stamp()),
        _ => 3600, // a single frame: 40 ms
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::writer::{SegmentLimits, Writer};
    use media::{Codec, Frame, FrameMeta};
    use std::process::Command;

    /// Runs ffmpeg or ffprobe: (succeeded with nothing on stderr, stdout + stderr).
    pub(crate) fn ff(args: &[&str]) -> (bool, String) {
        let out = Command::new(args[0]).args(&args[1..]).output().expect("ffmpeg/ffprobe installed (scripts/setup)");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success() && out.stderr.is_empty(), text)
    }

    /// Splits an Annex B H.265 stream into access units (ITU-T H.265 7.4.2.4.4):
    /// a new one starts at a parameter set, delimiter or prefix SEI, or at a
    /// picture's first slice, once the current one has a slice. Returns each
    /// with 4-byte start codes, and whether it is an IRAP picture.
    fn access_units(stream: &[u8]) -> Vec<(Vec<u8>, bool)> {
        let mut aus: Vec<(Vec<u8>, bool)> = vec![];
        let mut has_slice = false;
        for nal in mp4::nal_units(stream) {
            let t = (nal[0] >> 1) & 0x3f;
            let slice = t < 32;
            let starts = if slice { nal[2] & 0x80 != 0 } else { matches!(t, 32..=35 | 39 | 41..=44 | 48..=55) };
            if aus.is_empty() || (has_slice && starts) {
                aus.push((vec![], false));
                has_slice = false;
            }
            let au = aus.last_mut().unwrap();
            au.0.extend_from_slice(&[0, 0, 0, 1]);
            au.0.extend_from_slice(nal);
            au.1 |= (16..=21).contains(&t);
            has_slice |= slice;
        }
        aus
    }

    fn frame(camera: &str, seq: u64, key: bool, payload: Vec<u8>) -> Frame {
        let meta = FrameMeta {
            camera: camera.into(),
            stream: media::Stream::Main,
            codec: Codec::H265,
            seq,
            capture_us: seq as i64 * 100_000,
            pts_90k: seq as i64 * 9000,
            key,
            discontinuity: false,
        };
        Frame { meta, payload }
    }

    /// An x265 stream (VPS/SPS/PPS before every key frame) archived frame
    /// by frame, exported, and read back by ffprobe and ffmpeg; and export
    /// errors on streams that cannot be described.
    #[tokio::test]
    async fn h265_exports_to_mp4_players_accept() {
        let d = std::env::temp_dir().join(format!("vigil-export-h265-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let h265 = d.join("in.h265");
        let (ok, out) = ff(&[
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=10",
            "-frames:v",
            "30",
            "-c:v",
            "libx265",
            "-x265-params",
            "keyint=10:bframes=0:repeat-headers=1:log-level=error",
            "-f",
            "hevc",
            h265.to_str().unwrap(),
        ]);
        assert!(ok, "{out}");
        let aus = access_units(&std::fs::read(&h265).unwrap());
        let keys: Vec<usize> = aus.iter().enumerate().filter(|(_, (_, key))| *key).map(|(i, _)| i).collect();
        assert_eq!((aus.len(), keys), (30, vec![0, 10, 20]));

        let index = crate::open_index(&d).await.unwrap();
        // Small segments: an export reads across several files.
        let mut w = Writer::new(&d, SegmentLimits { max_bytes: 20_000, max_duration_us: i64::MAX }).unwrap();
        for (seq, (au, key)) in aus.into_iter().enumerate() {
            w.add(&frame("c", seq as u64, key, au));
        }
        // Parameter sets that say nothing, and none at all.
        let (vps, pps, idr) =
            (&[0, 0, 1, 0x40, 1, 0xc][..], &[0, 0, 1, 0x44, 1, 0xc1][..], &[0, 0, 1, 0x26, 1, 0xaf][..]);
        w.add(&frame("bad", 0, true, [vps, &[0, 0, 1, 0x42, 1, 1, 0xff], pps, idr].concat()));
        w.add(&frame("none", 0, true, idr.to_vec()));
        index.commit(w.take().write().unwrap()).await.unwrap();
        assert!(index.segment_infos().await.unwrap().iter().filter(|s| s.camera == "c").count() > 1);

        let mp4 = d.join("c.mp4");
        let mut calls = 0;
        let sum = export(&d, &index, "c", 0, i64::MAX, &mp4, move |done, total| {
            calls += 1;
            assert_eq!((done, total), (calls, 30));
        })
        .await
        .unwrap();
        assert_eq!((sum.frames, sum.format), (30, "mp4"));
        let path = mp4.to_str().unwrap();
        let (ok, out) = ff(&[
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,codec_tag_string,width,height,nb_frames,nb_read_frames",
            "-of",
            "csv=p=0",
            path,
        ]);
        assert!(ok && out.trim() == "hevc,hvc1,320,240,30,30", "{out}");
        let (ok, out) = ff(&["ffprobe", "-v", "error", "-show_entries", "packet=flags", "-of", "csv=p=0", path]);
        let flags: Vec<&str> = out.lines().collect();
        let sync: Vec<usize> = flags.iter().enumerate().filter(|(_, f)| f.starts_with('K')).map(|(i, _)| i).collect();
        assert!(ok && flags.len() == 30 && sync == [0, 10, 20], "{out}");
        let (ok, out) = ff(&["ffmpeg", "-v", "error", "-i", path, "-f", "null", "-"]);
        assert!(ok, "{out}");
        // The very pictures the encoder made.
        let md5 = |input: &str| ff(&["ffmpeg", "-v", "error", "-i", input, "-f", "md5", "-"]);
        let (exported, source) = (md5(path), md5(h265.to_str().unwrap()));
        assert!(exported.0 && exported.1.starts_with("MD5=") && exported == source, "{exported:?} {source:?}");

        // A middle slice starts at the key frame before it (1.0 s).
        let slice = d.join("slice.mp4");
        let part = export(&d, &index, "c", 1_500_000, 2_500_000, &slice, |_, _| {}).await.unwrap();
        assert_eq!((part.frames, part.first_us, part.last_us), (16, 1_000_000, 2_500_000));
        let (ok, out) = ff(&["ffmpeg", "-v", "error", "-i", slice.to_str().unwrap(), "-f", "null", "-"]);
        assert!(ok, "{out}");

        // Playback takes H.265 the same way: a fragmented MP4 (hvc1) of
        // the same pictures.
        let mut rec = crate::playback::recording(&d, &index, "c", 0, i64::MAX).await.unwrap();
        let mut fragmented = vec![];
        while let Some(piece) = rec.next().await {
            fragmented.extend(piece.unwrap());
        }
        let init = crate::playback::init_segment(&d, &index, "c", 0).await.unwrap();
        assert!(fragmented.starts_with(&init));
        let fmp4 = d.join("c-fragmented.mp4");
        std::fs::write(&fmp4, fragmented).unwrap();
        let path = fmp4.to_str().unwrap();
        let (ok, out) = ff(&[
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_tag_string,nb_read_frames",
            "-of",
            "csv=p=0",
            path,
        ]);
        assert!(ok && out.trim() == "hvc1,30", "{out}");
        assert_eq!(md5(path), source);

        for (camera, error) in [("bad", "H.265 SPS is malformed"), ("none", "no VPS/SPS/PPS")] {
            let out = d.join(format!("{camera}.mp4"));
            let err = export(&d, &index, camera, 0, i64::MAX, &out, |_, _| {}).await.unwrap_err();
            assert!(err.to_string().contains(error), "{err}");
            assert!(!out.exists() && !partial(&out).exists());
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
