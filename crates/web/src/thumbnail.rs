//! `GET /api/cameras/{id}/thumbnail?seq=N|at=US&box=x1,y1,x2,y2`: a small
//! JPEG of one archived frame, cropped around a box (an event's best
//! sighting) or whole.
//!
//! An H.264 frame decodes only with the frames since its key frame: the GOP
//! is read from the archive and decoded (`codec::Decoder`, the
//! detector's own decoder), up to `MAX_GOP` frames; a longer one is refused
//! rather than decoded. At most `CONCURRENT` thumbnails are made at once.

use crate::App;
use crate::api::{ApiError, camera};
use crate::auth::User;
use archive::index::{FrameRow, Index};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use codec::{DecodeError, Decoder, Picture};
use media::{Codec, Frame, FrameMeta, Stream};

use std::path::Path as FsPath;

/// Frames decoded for one thumbnail at most (key frame to the frame).
pub const MAX_GOP: usize = 300;
/// Thumbnails made at once (each is CPU work on the blocking pool).
pub const CONCURRENT: usize = 2;
/// Width of a thumbnail; the height follows the crop (4:3 around a box).
const WIDTH: u32 = 160;
/// `at=`: the first frame captured at or after it, within this.
const AT_WINDOW_US: i64 = 2_000_000;
const QUALITY: u8 = 80;

#[derive(serde::Deserialize)]
pub struct ThumbQuery {
    seq: Option<u64>,
    at: Option<i64>,
    #[serde(rename = "box")]
    bbox: Option<String>,
}

pub async fn thumbnail(
    State(app): State<App>,
    user: User,
    Path(id): Path<String>,
    Query(q): Query<ThumbQuery>,
) -> Result<Response, ApiError> {
    camera(&app, &user, &id)?;
    let bbox = q.bbox.as_deref().map(parse_box).transpose()?;
    let target = match (q.seq, q.at) {
        (Some(seq), None) => Target::Seq(seq),
        (None, Some(at)) => Target::At(at),
        _ => return Err(ApiError::bad("give `seq` (a frame's number) or `at` (a capture time, µs), one of them")),
    };
    let _permit = app.thumbnails.acquire().await.map_err(ApiError::internal)?;
    let rows = gop(&app.index, &id, target).await?;
    let dir = app.archive_dir.clone();
    let jpeg = tokio::task::spawn_blocking(move || render(&dir, &rows, bbox)).await.map_err(ApiError::internal)??;
    // The archived frame never changes; the user's permission might.
    Ok(([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "private, max-age=3600")], jpeg).into_response())
}

#[derive(Clone, Copy, Debug)]
enum Target {
    Seq(u64),
    At(i64),
}

/// `x1,y1,x2,y2` in source pixels.
fn parse_box(s: &str) -> Result<[f32; 4], ApiError> {
    let bad = || ApiError::bad(format!("box {s:?}: give x1,y1,x2,y2 in pixels, x1 < x2 and y1 < y2"));
    let v: Vec<f32> = s.split(',').map(|p| p.trim().parse::<f32>()).collect::<Result<_, _>>().map_err(|_| bad())?;
    match v[..] {
        [x1, y1, x2, y2] if v.iter().all(|n| n.is_finite() && n.abs() < 1e6) && x1 < x2 && y1 < y2 => {
            Ok([x1, y1, x2, y2])
        }
        _ => Err(bad()),
    }
}

/// The frames to decode: from the key frame before the target up to it.
async fn gop(index: &Index, camera: &str, target: Target) -> Result<Vec<FrameRow>, ApiError> {
    let (from, to, seq) = match target {
        Target::Seq(seq) => {
            let row = index.frames_by_seq(camera, seq, seq, 1).await.map_err(ApiError::internal)?;
            let row =
                row.first().ok_or_else(|| ApiError::not_found(format!("frame {seq} of {camera} is not archived")))?;
            (row.capture_us, row.capture_us, Some(seq))
        }
        Target::At(at) => (at, at.saturating_add(AT_WINDOW_US), None),
    };
    let not_there = || ApiError::not_found(format!("no archived frame of {camera} at that time"));
    let (start, end) = index.seq_span(camera, from, to).await.map_err(ApiError::internal)?.ok_or_else(not_there)?;
    let mut rows = index.frames_by_seq(camera, start, end, MAX_GOP + 1).await.map_err(ApiError::internal)?;
    let at = rows.iter().position(|r| match seq {
        Some(s) => r.seq == s,
        None => r.capture_us >= from,
    });
    match at {
        Some(i) if i < MAX_GOP => {
            rows.truncate(i + 1);
            Ok(rows)
        }
        _ if rows.len() > MAX_GOP => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("that frame of {camera} is more than {MAX_GOP} frames after its key frame: no thumbnail"),
        )),
        _ => Err(not_there()),
    }
}

fn codec(row: &FrameRow) -> Result<Codec, ApiError> {
    match row.codec.as_str() {
        "h264" => Ok(Codec::H264),
        "h265" => Ok(Codec::H265),
        "mjpeg" => Ok(Codec::Mjpeg),
        other => Err(ApiError(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("{other} frames: no thumbnail"))),
    }
}

/// Decodes the GOP and makes the thumbnail of its last frame (blocking).
fn render(dir: &FsPath, rows: &[FrameRow], bbox: Option<[f32; 4]>) -> Result<Vec<u8>, ApiError> {
    let mut files = archive::export::Frames::new(dir);
    let mut decoder = Decoder::new();
    let mut picture = None;
    for (i, r) in rows.iter().enumerate() {
        let last = i + 1 == rows.len();
        let meta = FrameMeta {
            camera: r.camera.clone(),
            stream: Stream::Main,
            codec: codec(r)?,
            seq: r.seq,
            capture_us: r.capture_us,
            pts_90k: r.pts_90k,
            key: r.key,
            discontinuity: r.discontinuity,
        };
        let frame = Frame { meta, payload: files.read(r).map_err(crate::api::archive_error)?.to_vec() };
        match decoder.decode(&frame, last) {
            Ok(p) => picture = p,
            Err(DecodeError::Unsupported(what)) => {
                return Err(ApiError(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("{what}: no thumbnail (no decoder)")));
            }
            // A broken frame before the target: the decoder waits for the
            // next key frame, so the target fails below if it needed it.
            Err(e) if last => return Err(ApiError::internal(format!("frame {} of {}: {e}", r.seq, r.camera))),
            Err(_) => {}
        }
    }
    let last = rows.last().ok_or_else(|| ApiError::not_found("no archived frame there"))?;
    let picture = picture.ok_or_else(|| {
        ApiError::not_found(format!("frame {} of {} does not decode (no key frame before it)", last.seq, last.camera))
    })?;
    let (w, h, rgb) = thumb(&picture, bbox);
    let mut out = Vec::with_capacity(8 << 10);
    jpeg_encoder::Encoder::new(&mut out, QUALITY)
        .encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| ApiError::internal(format!("JPEG: {e}")))?;
    Ok(out)
}

/// A rectangle of the picture, in whole pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Rect {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

/// What to show: 4:3 around the box with a margin (at least 48 px wide),
/// kept inside the picture; the whole picture without a box (or with one
/// entirely outside it).
fn crop(width: u32, height: u32, bbox: Option<[f32; 4]>) -> Rect {
    let whole = Rect { x: 0, y: 0, w: width, h: height };
    let (fw, fh) = (width as f32, height as f32);
    let Some([x1, y1, x2, y2]) =
        bbox.map(|[a, b, c, d]| [a.clamp(0.0, fw), b.clamp(0.0, fh), c.clamp(0.0, fw), d.clamp(0.0, fh)])
    else {
        return whole;
    };
    if x2 - x1 < 1.0 || y2 - y1 < 1.0 {
        return whole;
    }
    let (cx, cy) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
    let mut cw = ((x2 - x1).max((y2 - y1) * 4.0 / 3.0) * 1.25).max(48.0);
    let mut ch = cw * 0.75;
    if cw > fw {
        cw = fw;
        ch = cw * 0.75;
    }
    if ch > fh {
        ch = fh;
        cw = (ch * 4.0 / 3.0).min(fw);
    }
    let x = (cx - cw / 2.0).clamp(0.0, fw - cw);
    let y = (cy - ch / 2.0).clamp(0.0, fh - ch);
    let r = Rect { x: x as u32, y: y as u32, w: (cw as u32).max(1), h: (ch as u32).max(1) };
    Rect { w: r.w.min(width - r.x), h: r.h.min(height - r.y), ..r }
}

/// The thumbnail's pixels: the crop scaled to `WIDTH` wide (each output
/// pixel the mean of the source pixels it covers).
fn thumb(p: &Picture, bbox: Option<[f32; 4]>) -> (u32, u32, Vec<u8>) {
    let r = crop(p.width, p.height, bbox);
    let ow = WIDTH;
    let oh = ((WIDTH as f32 * r.h as f32 / r.w as f32).round() as u32).clamp(1, 2 * WIDTH);
    let span = |o: u32, n: u32, len: u32, from: u32| {
        let a = from + (o as u64 * len as u64 / n as u64) as u32;
        let b = from + ((o as u64 + 1) * len as u64 / n as u64) as u32;
        (a, b.max(a + 1).min(from + len))
    };
    let mut out = Vec::with_capacity((ow * oh * 3) as usize);
    for oy in 0..oh {
        let (y0, y1) = span(oy, oh, r.h, r.y);
        for ox in 0..ow {
            let (x0, x1) = span(ox, ow, r.w, r.x);
            let mut sum = [0u32; 3];
            for y in y0..y1 {
                let row = &p.rgb[((y * p.width + x0) * 3) as usize..((y * p.width + x1) * 3) as usize];
                for px in row.chunks_exact(3) {
                    for c in 0..3 {
                        sum[c] += px[c] as u32;
                    }
                }
            }
            let n = (y1 - y0) * (x1 - x0);
            out.extend(sum.map(|s| ((s + n / 2) / n) as u8));
        }
    }
    (ow, oh, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_parse_or_are_refused() {
        assert_eq!(parse_box("1,2,3.5,4").ok(), Some([1.0, 2.0, 3.5, 4.0]));
        for bad in ["", "1,2,3", "1,2,3,4,5", "a,b,c,d", "3,2,1,4", "1,4,3,4", "NaN,0,1,1", "0,0,inf,1"] {
            assert!(parse_box(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn crops_stay_inside_the_picture() {
        let cases = [
            // No box, or a box outside the picture: all of it.
            (640, 360, None, Rect { x: 0, y: 0, w: 640, h: 360 }),
            (640, 360, Some([700.0, 0.0, 800.0, 10.0]), Rect { x: 0, y: 0, w: 640, h: 360 }),
            // 4:3 around the box's centre with a 25 % margin.
            (640, 360, Some([100.0, 100.0, 200.0, 175.0]), Rect { x: 87, y: 90, w: 125, h: 93 }),
            // A small box: at least 48 px wide.
            (640, 360, Some([10.0, 10.0, 12.0, 12.0]), Rect { x: 0, y: 0, w: 48, h: 36 }),
            // Near the edge: shifted in.
            (640, 360, Some([600.0, 300.0, 640.0, 360.0]), Rect { x: 540, y: 285, w: 100, h: 75 }),
            // Larger than the picture: as much as fits.
            (640, 360, Some([0.0, 0.0, 640.0, 360.0]), Rect { x: 80, y: 0, w: 480, h: 360 }),
        ];
        for (w, h, b, want) in cases {
            let r = crop(w, h, b);
            assert_eq!(r, want, "{b:?}");
            assert!(r.x + r.w <= w && r.y + r.h <= h);
        }
    }

    #[test]
    fn thumbnails_are_160_wide_and_average_the_pixels() {
        // Left half black, right half white.
        let (w, h) = (320u32, 180u32);
        let rgb: Vec<u8> = (0..w * h).flat_map(|i| if i % w < w / 2 { [0, 0, 0] } else { [255, 255, 255] }).collect();
        let p = Picture::from_rgb(w, h, rgb);
        let (tw, th, px) = thumb(&p, None);
        assert_eq!((tw, th, px.len()), (160, 90, 160 * 90 * 3));
        assert_eq!(&px[..3], &[0, 0, 0]);
        assert_eq!(&px[px.len() - 3..], &[255, 255, 255]);
        // Upscaling a tiny crop works too (every output pixel covers one).
        let tiny = Picture::from_rgb(4, 3, vec![9; 36]);
        let (tw, th, px) = thumb(&tiny, None);
        assert_eq!((tw, th), (160, 120));
        assert!(px.iter().all(|&v| v == 9));
    }
}
