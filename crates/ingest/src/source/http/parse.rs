//! The parsers of what an HTTP camera sends: the response head, the body
//! (by length, chunked, or to the close) and the `multipart/x-mixed-replace`
//! parts. Pure state machines without I/O; every buffer is bounded (see the
//! parent module), and none panics on any input (`fuzz`).

use super::{MAX_CHUNK_LINE, MAX_HEAD, MAX_PREAMBLE};
use crate::source::SourceError;
use crate::source::jpeg::{MAX_IMAGE, Splitter};

pub(super) fn bad(why: &str) -> SourceError {
    SourceError::Stream(why.to_string())
}

/// What vigil needs from a response head.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Head {
    pub(super) status: u16,
    pub(super) reason: String,
    /// The media type, lower case, without parameters.
    pub(super) mime: String,
    /// The multipart boundary as declared (leading dashes kept).
    pub(super) boundary: Option<String>,
    pub(super) chunked: bool,
    pub(super) length: Option<u64>,
    /// Every `WWW-Authenticate` value, in order (bounded with the head).
    pub(super) challenges: Vec<String>,
}

/// Parses a response head at the start of `buf`: the head and its length,
/// or `None` while incomplete. Lines may end in CRLF or LF.
pub(super) fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, SourceError> {
    if buf.len() >= 5 && !buf.starts_with(b"HTTP/") {
        return Err(bad("not an HTTP response"));
    }
    let mut head = Head::default();
    let mut pos = 0;
    while let Some(n) = buf[pos..].iter().position(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(&buf[pos..pos + n]);
        let line = line.trim_end_matches('\r');
        if pos == 0 {
            let mut words = line.splitn(3, ' ');
            let (_version, code, reason) = (words.next(), words.next(), words.next());
            head.status = code.and_then(|c| c.parse().ok()).ok_or_else(|| bad("a malformed HTTP status line"))?;
            head.reason = reason.unwrap_or("").to_string();
        } else if line.is_empty() {
            return Ok(Some((head, pos + n + 1)));
        } else {
            let (name, value) = line.split_once(':').ok_or_else(|| bad("a malformed HTTP header line"))?;
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-type" => {
                    let mut params = value.split(';');
                    head.mime = params.next().unwrap_or("").trim().to_ascii_lowercase();
                    head.boundary = params
                        .filter_map(|p| p.split_once('='))
                        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
                        .map(|(_, v)| v.trim().trim_matches('"').to_string());
                }
                "transfer-encoding" => head.chunked = value.to_ascii_lowercase().contains("chunked"),
                "content-length" => {
                    head.length = Some(value.parse().map_err(|_| bad("a malformed HTTP Content-Length"))?);
                }
                "www-authenticate" => head.challenges.push(value.to_string()),
                _ => {}
            }
        }
        pos += n + 1;
        if pos > MAX_HEAD {
            break;
        }
    }
    if buf.len() > MAX_HEAD {
        return Err(bad(&format!("an HTTP response head over {} KiB", MAX_HEAD >> 10)));
    }
    Ok(None)
}

/// Decodes a response body: by `Content-Length`, chunked, or to the close.
#[derive(Debug)]
pub(super) enum Body {
    /// Bytes left, `None` until the connection closes.
    Plain(Option<u64>),
    Chunked {
        state: Chunk,
        line: Vec<u8>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailer,
    Done,
}

impl Body {
    pub(super) fn new(head: &Head) -> Self {
        if head.chunked { Body::Chunked { state: Chunk::Size, line: Vec::new() } } else { Body::Plain(head.length) }
    }

    pub(super) fn done(&self) -> bool {
        matches!(self, Body::Plain(Some(0)) | Body::Chunked { state: Chunk::Done, .. })
    }

    pub(super) fn until_close(&self) -> bool {
        matches!(self, Body::Plain(None))
    }

    /// Appends the body bytes in `data` to `out`; what follows the body is
    /// ignored.
    pub(super) fn decode(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), SourceError> {
        let (state, line) = match self {
            Body::Plain(None) => {
                out.extend_from_slice(data);
                return Ok(());
            }
            Body::Plain(Some(left)) => {
                let n = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                out.extend_from_slice(&data[..n]);
                *left -= n as u64;
                return Ok(());
            }
            Body::Chunked { state, line } => (state, line),
        };
        while !data.is_empty() && *state != Chunk::Done {
            if let Chunk::Data(left) = *state {
                let n = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                out.extend_from_slice(&data[..n]);
                data = &data[n..];
                *state = if left == n as u64 { Chunk::DataEnd } else { Chunk::Data(left - n as u64) };
                continue;
            }
            // A line: a chunk size, the end of a chunk's data, a trailer.
            let Some(n) = data.iter().position(|&b| b == b'\n') else {
                line.extend_from_slice(data);
                if line.len() > MAX_CHUNK_LINE {
                    return Err(bad("a malformed chunked body (a line too long)"));
                }
                return Ok(());
            };
            line.extend_from_slice(&data[..n]);
            data = &data[n + 1..];
            let text = String::from_utf8_lossy(line).trim_end_matches('\r').to_string();
            line.clear();
            *state = match *state {
                Chunk::Size => {
                    let hex = text.split(';').next().unwrap_or("").trim();
                    match u64::from_str_radix(hex, 16) {
                        Ok(0) => Chunk::Trailer,
                        Ok(n) if !hex.starts_with('+') => Chunk::Data(n),
                        _ => return Err(bad("a malformed chunked body (a bad chunk size)")),
                    }
                }
                Chunk::DataEnd if text.is_empty() => Chunk::Size,
                Chunk::DataEnd => return Err(bad("a malformed chunked body (no line end after a chunk)")),
                Chunk::Trailer if text.is_empty() => Chunk::Done,
                s => s,
            };
        }
        Ok(())
    }
}

/// Where `Multipart` is in its stream.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Part {
    Boundary,
    Headers,
    /// The part's data, its length if its headers gave one.
    Data(Option<usize>),
}

/// Splits a `multipart/x-mixed-replace` body into its parts, each checked
/// to be one JPEG image. Pure: no I/O, never panics on any input.
pub(super) struct Multipart {
    /// The boundary without leading dashes; learnt from the first line when
    /// the head gave none.
    token: Option<Vec<u8>>,
    buf: Vec<u8>,
    state: Part,
    /// Part header bytes so far.
    header_bytes: usize,
    length: Option<usize>,
    /// How far `buf` was searched for the boundary (data without a length).
    searched: usize,
    /// The closing boundary came.
    pub(super) ended: bool,
}

impl Multipart {
    pub(super) fn new(boundary: Option<&str>) -> Self {
        let token = boundary.map(|b| b.trim_start_matches('-').as_bytes().to_vec()).filter(|t| !t.is_empty());
        Multipart {
            token,
            buf: Vec::new(),
            state: Part::Boundary,
            header_bytes: 0,
            length: None,
            searched: 0,
            ended: false,
        }
    }

    /// Appends body bytes and moves every image they complete to `out`.
    pub(super) fn push(&mut self, data: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), SourceError> {
        if self.ended {
            return Ok(()); // the epilogue
        }
        self.buf.extend_from_slice(data);
        while !self.ended && self.step(out)? {}
        let (limit, why) = match self.state {
            Part::Boundary => (MAX_PREAMBLE, format!("no multipart boundary in {} KiB", MAX_PREAMBLE >> 10)),
            Part::Headers => (MAX_HEAD, format!("part headers over {} KiB", MAX_HEAD >> 10)),
            Part::Data(_) => (MAX_IMAGE + MAX_PREAMBLE, format!("a part over {} MiB", MAX_IMAGE >> 20)),
        };
        if self.buf.len() > limit {
            return Err(bad(&why));
        }
        Ok(())
    }

    /// One step; false when it needs more bytes.
    fn step(&mut self, out: &mut Vec<Vec<u8>>) -> Result<bool, SourceError> {
        match self.state {
            Part::Boundary => {
                let Some(token) = &self.token else {
                    // Learn the boundary: the first non-empty line, `--B`.
                    let Some(n) = self.buf.iter().position(|&b| b == b'\n') else { return Ok(false) };
                    let line = self.buf[..n].trim_ascii();
                    if !line.is_empty() {
                        if !line.starts_with(b"--") || line.trim_ascii_start().iter().all(|&b| b == b'-') {
                            return Err(bad("the stream does not start with a multipart boundary"));
                        }
                        let token = line.iter().skip_while(|&&b| b == b'-').copied().collect();
                        self.token = Some(token);
                        (self.state, self.header_bytes, self.length) = (Part::Headers, 0, None);
                    }
                    self.buf.drain(..=n);
                    return Ok(true);
                };
                let Some(at) = find(&self.buf, token, 0) else { return Ok(false) };
                let after = at + token.len();
                let Some(n) = self.buf[after..].iter().position(|&b| b == b'\n') else {
                    if self.buf[after..].starts_with(b"--") {
                        self.ended = true; // the closing boundary, without a line end
                    }
                    return Ok(false);
                };
                if self.buf[after..].starts_with(b"--") {
                    self.ended = true;
                    return Ok(false);
                }
                self.buf.drain(..after + n + 1);
                (self.state, self.header_bytes, self.length) = (Part::Headers, 0, None);
                Ok(true)
            }
            Part::Headers => {
                if self.header_bytes == 0 && self.buf.starts_with(&[0xff, 0xd8]) {
                    self.state = Part::Data(None); // no headers, no blank line: the image at once
                    return Ok(true);
                }
                let Some(n) = self.buf.iter().position(|&b| b == b'\n') else { return Ok(false) };
                self.header_bytes += n + 1;
                if self.header_bytes > MAX_HEAD {
                    return Err(bad(&format!("part headers over {} KiB", MAX_HEAD >> 10)));
                }
                let line = String::from_utf8_lossy(&self.buf[..n]).trim().to_string();
                self.buf.drain(..=n);
                if line.is_empty() {
                    (self.state, self.searched) = (Part::Data(self.length), 0);
                    return Ok(true);
                }
                let (name, value) = line.split_once(':').ok_or_else(|| bad("a malformed part header line"))?;
                if name.trim().eq_ignore_ascii_case("content-length") {
                    let len: usize = value.trim().parse().map_err(|_| bad("a malformed part Content-Length"))?;
                    if len > MAX_IMAGE {
                        return Err(bad(&format!("a part of {len} bytes (over {} MiB)", MAX_IMAGE >> 20)));
                    }
                    self.length = Some(len);
                }
                Ok(true)
            }
            Part::Data(Some(len)) => {
                if self.buf.len() < len {
                    return Ok(false);
                }
                let rest = self.buf.split_off(len);
                out.push(one_jpeg(&std::mem::replace(&mut self.buf, rest))?);
                self.state = Part::Boundary;
                Ok(true)
            }
            Part::Data(None) => {
                let token = self.token.as_deref().unwrap_or_default();
                let from = self.searched.saturating_sub(token.len() + 4);
                let Some(at) = find(&self.buf, token, from) else {
                    self.searched = self.buf.len();
                    return Ok(false);
                };
                let rest = self.buf.split_off(at);
                // The dashes and line end before the boundary are not data.
                let data = std::mem::replace(&mut self.buf, rest);
                let end = data.iter().rposition(|&b| !matches!(b, b'-' | b'\r' | b'\n')).map_or(0, |i| i + 1);
                out.push(one_jpeg(&data[..end])?);
                self.state = Part::Boundary;
                Ok(true)
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|i| from + i)
}

/// `data` as one whole JPEG image (padding after it dropped), else why not.
pub(super) fn one_jpeg(data: &[u8]) -> Result<Vec<u8>, SourceError> {
    let mut split = Splitter::default();
    let mut images = Vec::new();
    split.push(data, &mut images)?;
    match images.len() {
        1 => Ok(images.pop().unwrap_or_default()),
        0 => Err(bad(&format!("corrupt JPEG: a part of {} bytes that is not a whole JPEG image", data.len()))),
        n => Err(bad(&format!("corrupt JPEG: {n} images in one part"))),
    }
}

/// Fuzzing: the head, a chunked body and multipart bodies of `data`.
#[cfg(any(test, feature = "fuzz"))]
pub(super) fn fuzz(data: &[u8]) {
    let _ = parse_head(data);
    let (mut body, mut chunked) = (Vec::new(), Body::Chunked { state: Chunk::Size, line: Vec::new() });
    for piece in data.chunks(7) {
        if chunked.decode(piece, &mut body).is_err() {
            break;
        }
    }
    for boundary in [Some("--ffmpeg"), None] {
        let mut parts = Multipart::new(boundary);
        let mut images = Vec::new();
        for piece in data.chunks(61) {
            if parts.push(piece, &mut images).is_err() {
                break;
            }
        }
    }
}
