//! The chunk record on `vigil.video.chunks`, keyed by video id:
//!
//! ```text
//! "VGV" | version u8 | meta_len u32 (big-endian) | meta (JSON) | payload
//! ```
//!
//! The metadata names the video and where the payload sits in the file,
//! with a SHA-256 of the payload and of the whole file; a collector checks
//! both. Splitting reads the file twice (once to hash it: the hash is in
//! every chunk and is the default video id), never holding more than one
//! chunk in memory.

use crate::{Error, hex};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

pub const MAGIC: &[u8; 3] = b"VGV";
pub const VERSION: u8 = 1;
/// The most chunks a video may have, and the largest metadata: bounds a
/// collector's bookkeeping whatever a record claims.
pub const MAX_CHUNKS: u32 = 1 << 20;
const MAX_META: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMeta {
    pub video_id: String,
    /// 0-based.
    pub index: u32,
    pub count: u32,
    /// Where the payload starts in the file.
    pub offset: u64,
    pub len: u64,
    pub chunk_sha256: String,
    pub file_sha256: String,
    pub file_bytes: u64,
    /// The file's original name (no directories).
    pub name: String,
    pub submitted_us: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub meta: ChunkMeta,
    pub payload: Vec<u8>,
}

impl Chunk {
    pub fn encode(&self) -> Vec<u8> {
        let meta = serde_json::to_vec(&self.meta).unwrap_or_default();
        let mut out = Vec::with_capacity(8 + meta.len() + self.payload.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Parses a record; anything malformed or inconsistent is an error
    /// (never a panic). The payload's checksum is checked here too.
    pub fn decode(buf: &[u8]) -> Result<Chunk, Error> {
        let bad = |why: String| Error::Envelope(why);
        if buf.len() < 8 || &buf[..3] != MAGIC {
            return Err(bad("bad magic".into()));
        }
        if buf[3] != VERSION {
            return Err(bad(format!("version {} (this vigil reads {VERSION})", buf[3])));
        }
        let meta_len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        if meta_len > MAX_META || buf.len() < 8 + meta_len {
            return Err(bad(format!("metadata of {meta_len} bytes in a record of {}", buf.len())));
        }
        let meta: ChunkMeta =
            serde_json::from_slice(&buf[8..8 + meta_len]).map_err(|e| bad(format!("metadata: {e}")))?;
        let payload = buf[8 + meta_len..].to_vec();
        let why = |why: String| Error::Chunk { video: meta.video_id.clone(), index: meta.index, why };
        if !valid_id(&meta.video_id) {
            return Err(bad("a video id is 1-128 of A-Z a-z 0-9 . _ -".into()));
        }
        // Every chunk holds a byte at least: a count beyond the file's size
        // is a lie that would only cost a collector bookkeeping.
        if meta.count == 0
            || meta.count > MAX_CHUNKS
            || meta.index >= meta.count
            || u64::from(meta.count) > meta.file_bytes.max(1)
        {
            return Err(why(format!("chunk {} of {}", meta.index, meta.count)));
        }
        if payload.len() as u64 != meta.len {
            return Err(why(format!("{} payload bytes, the metadata says {}", payload.len(), meta.len)));
        }
        if meta.offset.checked_add(meta.len).is_none_or(|end| end > meta.file_bytes) {
            return Err(why(format!("bytes {}+{} past the file's {}", meta.offset, meta.len, meta.file_bytes)));
        }
        if crate::sha256_hex(&payload) != meta.chunk_sha256 {
            return Err(why("checksum mismatch".into()));
        }
        Ok(Chunk { meta, payload })
    }
}

/// Whether `id` may name a video: 1-128 of `A-Za-z0-9._-` (it goes into
/// checkpoints, file names and URLs).
pub fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// What splitting needs to know of a file before its first chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSummary {
    pub sha256: String,
    pub bytes: u64,
}

impl FileSummary {
    pub fn of(path: &Path) -> Result<FileSummary, Error> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let mut f = std::fs::File::open(path).map_err(io)?;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            bytes += n as u64;
        }
        Ok(FileSummary { sha256: hex(&h.finalize()), bytes })
    }

    /// How many chunks of `chunk_bytes` the file makes (an empty file: one).
    pub fn chunk_count(&self, chunk_bytes: u64) -> u64 {
        self.bytes.div_ceil(chunk_bytes.max(1)).max(1)
    }
}

/// The chunks of `path`, one at a time, read as they are asked for.
pub struct Chunks {
    file: std::fs::File,
    path: std::path::PathBuf,
    template: ChunkMeta,
    chunk_bytes: u64,
    next: u32,
}

impl Chunks {
    pub fn open(
        path: &Path,
        summary: &FileSummary,
        video_id: &str,
        chunk_bytes: u64,
        submitted_us: i64,
    ) -> Result<Chunks, Error> {
        let count = summary.chunk_count(chunk_bytes);
        if count > MAX_CHUNKS as u64 {
            return Err(Error::Video {
                video: video_id.into(),
                why: format!("{count} chunks of {chunk_bytes} bytes: more than {MAX_CHUNKS}; use larger chunks"),
            });
        }
        let file = std::fs::File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let template = ChunkMeta {
            video_id: video_id.into(),
            index: 0,
            count: count as u32,
            offset: 0,
            len: 0,
            chunk_sha256: String::new(),
            file_sha256: summary.sha256.clone(),
            file_bytes: summary.bytes,
            name,
            submitted_us,
        };
        Ok(Chunks { file, path: path.to_path_buf(), template, chunk_bytes: chunk_bytes.max(1), next: 0 })
    }
}

impl Iterator for Chunks {
    type Item = Result<Chunk, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.template.count {
            return None;
        }
        let offset = self.next as u64 * self.chunk_bytes;
        let len = self.chunk_bytes.min(self.template.file_bytes - offset.min(self.template.file_bytes));
        let mut payload = vec![0u8; len as usize];
        let read = self.file.seek(SeekFrom::Start(offset)).and_then(|_| self.file.read_exact(&mut payload));
        if let Err(source) = read {
            self.next = self.template.count;
            return Some(Err(Error::Io { path: self.path.clone(), source }));
        }
        let meta = ChunkMeta {
            index: self.next,
            offset,
            len,
            chunk_sha256: crate::sha256_hex(&payload),
            ..self.template.clone()
        };
        self.next += 1;
        Some(Ok(Chunk { meta, payload }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #[test]
    fn video_ids_are_plain() {
        for ok in ["a", "54b6b442-1796665416823023", "clip_2.mp4", &"x".repeat(128)] {
            assert!(super::valid_id(ok), "{ok}");
        }
        for bad in ["", "a/b", "a b", "é", "\u{0}", &"x".repeat(129)] {
            assert!(!super::valid_id(bad), "{bad:?}");
        }
    }

    use super::*;

    pub(crate) fn file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vigil-jobs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    pub(crate) fn chunks_of(name: &str, bytes: &[u8], chunk_bytes: u64) -> Vec<Chunk> {
        let p = file(name, bytes);
        let s = FileSummary::of(&p).unwrap();
        Chunks::open(&p, &s, &s.sha256, chunk_bytes, 7).unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn a_file_splits_into_chunks_that_survive_the_wire() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let chunks = chunks_of("a.mp4", &bytes, 3000);
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks[3].meta.len, 1000);
        assert_eq!(chunks[0].meta.video_id, crate::sha256_hex(&bytes), "the id defaults to the content hash");
        assert_eq!(chunks[2].meta.name, "a.mp4");
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.payload.clone()).collect();
        assert_eq!(joined, bytes);
        for c in &chunks {
            assert_eq!(&Chunk::decode(&c.encode()).unwrap(), c);
        }
        let empty = chunks_of("empty.mp4", &[], 3000);
        assert_eq!((empty.len(), empty[0].meta.len), (1, 0));
    }

    #[test]
    fn garbage_and_lies_are_errors() {
        let c = chunks_of("b.mp4", b"0123456789", 4).remove(1);
        let good = c.encode();
        assert!(Chunk::decode(b"").is_err());
        assert!(Chunk::decode(b"VGF\x01\0\0\0\0").is_err());
        assert!(Chunk::decode(&[b'V', b'G', b'V', 9, 0, 0, 0, 0]).is_err(), "unknown version");
        assert!(Chunk::decode(&[b'V', b'G', b'V', 1, 0xff, 0xff, 0xff, 0xff]).is_err(), "hostile meta length");
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(Chunk::decode(&flipped).unwrap_err().to_string().contains("checksum"));
        assert!(Chunk::decode(&good[..good.len() - 1]).is_err(), "truncated payload");
        for lie in [
            ChunkMeta { index: 5, ..c.meta.clone() },
            ChunkMeta { count: 0, ..c.meta.clone() },
            ChunkMeta { offset: u64::MAX, ..c.meta.clone() },
            ChunkMeta { file_bytes: 3, ..c.meta.clone() },
            ChunkMeta { video_id: String::new(), ..c.meta.clone() },
        ] {
            let rec = Chunk { meta: lie.clone(), payload: c.payload.clone() }.encode();
            assert!(Chunk::decode(&rec).is_err(), "{lie:?}");
        }
    }
}
