//! One video put back together from its chunks, in any order: duplicates
//! are recognised and ignored, a chunk that disagrees with the video's
//! first chunk is refused, and the whole file is checked against its
//! SHA-256 before anyone analyses it. A video larger than its memory
//! budget goes to a file in the spill directory instead (chunks written at
//! their offsets), so memory stays bounded whatever is submitted.

use crate::chunk::{Chunk, ChunkMeta};
use crate::{Error, hex};
use sha2::Digest;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// What adding a chunk did.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    New,
    /// Seen before (the price of at-least-once): nothing changed.
    Duplicate,
}

/// A whole, checked video.
#[derive(Debug)]
pub enum Whole {
    Memory(Vec<u8>),
    /// The spill file; the caller removes it when done.
    File(PathBuf),
}

enum Store {
    Memory(Vec<u8>),
    File { path: PathBuf, file: std::fs::File },
}

pub struct Assembly {
    meta: ChunkMeta,
    have: Vec<bool>,
    received: u32,
    store: Store,
}

impl Assembly {
    /// Starts a video from any of its chunks: in memory when the file fits
    /// `memory_bytes`, else in `spill_dir`.
    pub fn new(first: &ChunkMeta, memory_bytes: u64, spill_dir: &Path) -> Result<Assembly, Error> {
        let store = if first.file_bytes <= memory_bytes {
            Store::Memory(vec![0; first.file_bytes as usize])
        } else {
            let io = |source| Error::Io { path: spill_dir.to_path_buf(), source };
            std::fs::create_dir_all(spill_dir).map_err(io)?;
            let path = spill_dir.join(format!("{}.part", crate::sha256_hex(first.video_id.as_bytes())));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|source| Error::Io { path: path.clone(), source })?;
            file.set_len(first.file_bytes).map_err(|source| Error::Io { path: path.clone(), source })?;
            Store::File { path, file }
        };
        Ok(Assembly { meta: first.clone(), have: vec![false; first.count as usize], received: 0, store })
    }

    pub fn add(&mut self, c: &Chunk) -> Result<Added, Error> {
        let m = &c.meta;
        let refuse = |why: String| Error::Chunk { video: m.video_id.clone(), index: m.index, why };
        let v = &self.meta;
        if m.video_id != v.video_id
            || m.count != v.count
            || m.file_bytes != v.file_bytes
            || m.file_sha256 != v.file_sha256
        {
            return Err(refuse("does not belong to this video (count, size or file checksum differ)".into()));
        }
        // Where a payload lands is its own offset; the whole file's
        // checksum catches one that lies about it.
        if m.index >= v.count || m.offset.checked_add(m.len).is_none_or(|e| e > v.file_bytes) {
            return Err(refuse("outside the file".into()));
        }
        if c.payload.len() as u64 != m.len {
            return Err(refuse("payload length differs from the metadata".into()));
        }
        if self.have[m.index as usize] {
            return Ok(Added::Duplicate);
        }
        match &mut self.store {
            Store::Memory(buf) => buf[m.offset as usize..(m.offset + m.len) as usize].copy_from_slice(&c.payload),
            Store::File { path, file } => file
                .seek(SeekFrom::Start(m.offset))
                .and_then(|_| file.write_all(&c.payload))
                .map_err(|source| Error::Io { path: path.clone(), source })?,
        }
        self.have[m.index as usize] = true;
        self.received += 1;
        Ok(Added::New)
    }

    pub fn meta(&self) -> &ChunkMeta {
        &self.meta
    }

    pub fn complete(&self) -> bool {
        self.received == self.meta.count
    }

    /// (received, count).
    pub fn progress(&self) -> (u32, u32) {
        (self.received, self.meta.count)
    }

    /// The chunks not yet received, as inclusive ranges (for a failed job's
    /// reason).
    pub fn missing(&self) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = Vec::new();
        for (i, _) in self.have.iter().enumerate().filter(|(_, h)| !**h) {
            let i = i as u32;
            match out.last_mut() {
                Some(r) if r.1 + 1 == i => r.1 = i,
                _ => out.push((i, i)),
            }
        }
        out
    }

    /// Gives the video up: its spill file, if it has one, is removed.
    pub fn discard(self) {
        if let Store::File { path, .. } = self.store {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The whole file, once every chunk is in and its SHA-256 matches.
    pub fn finish(self) -> Result<Whole, Error> {
        let video = self.meta.video_id.clone();
        if !self.complete() {
            let missing = self.missing();
            self.discard();
            return Err(Error::Video { video, why: format!("chunks missing: {missing:?}") });
        }
        let mismatch = |got: String| Error::Video {
            video: video.clone(),
            why: format!("the file's SHA-256 is {got}, the submitter said {}", self.meta.file_sha256),
        };
        match self.store {
            Store::Memory(buf) => {
                let got = crate::sha256_hex(&buf);
                if got != self.meta.file_sha256 {
                    return Err(mismatch(got));
                }
                Ok(Whole::Memory(buf))
            }
            Store::File { path, mut file } => {
                let io = |source| Error::Io { path: path.clone(), source };
                file.seek(SeekFrom::Start(0)).map_err(io)?;
                let mut h = sha2::Sha256::new();
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = file.read(&mut buf).map_err(io)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                let got = hex(&h.finalize());
                if got != self.meta.file_sha256 {
                    let _ = std::fs::remove_file(&path);
                    return Err(mismatch(got));
                }
                Ok(Whole::File(path))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::tests::chunks_of;

    fn video(n: usize) -> Vec<u8> {
        (0..n as u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()
    }

    fn spill_dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("vigil-jobs-spill-{name}-{}", std::process::id()))
    }

    #[test]
    fn shuffled_and_duplicated_chunks_reassemble_byte_exact() {
        let bytes = video(50_000);
        let mut chunks = chunks_of("s.mp4", &bytes, 4096);
        // A fixed shuffle, and every third chunk twice.
        chunks.reverse();
        let dups: Vec<Chunk> = chunks.iter().step_by(3).cloned().collect();
        chunks.extend(dups);
        chunks.swap(0, 5);
        let mut a = Assembly::new(&chunks[0].meta, 1 << 20, &spill_dir("mem")).unwrap();
        let mut dup = 0;
        for c in &chunks {
            if a.add(c).unwrap() == Added::Duplicate {
                dup += 1;
            }
        }
        assert_eq!(dup, 5);
        assert!(a.complete() && a.missing().is_empty());
        let Whole::Memory(out) = a.finish().unwrap() else { panic!("in memory") };
        assert_eq!(out, bytes);
    }

    #[test]
    fn a_video_over_the_budget_spills_and_still_reassembles() {
        let bytes = video(100_000);
        let chunks = chunks_of("big.mp4", &bytes, 10_000);
        let mut a = Assembly::new(&chunks[3].meta, 30_000, &spill_dir("file")).unwrap();
        for c in chunks.iter().rev() {
            a.add(c).unwrap();
        }
        let Whole::File(path) = a.finish().unwrap() else { panic!("spilled") };
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn missing_chunks_and_strangers_are_named() {
        let bytes = video(10_000);
        let chunks = chunks_of("m.mp4", &bytes, 1000);
        let mut a = Assembly::new(&chunks[0].meta, 1 << 20, &spill_dir("miss")).unwrap();
        for c in chunks.iter().filter(|c| ![2, 3, 7].contains(&c.meta.index)) {
            a.add(c).unwrap();
        }
        assert_eq!(a.missing(), vec![(2, 3), (7, 7)]);
        assert_eq!(a.progress(), (7, 10));
        let other = chunks_of("o.mp4", &video(9_000), 1000).remove(0);
        assert!(a.add(&other).is_err(), "a chunk of another file");
        let err = a.finish().unwrap_err().to_string();
        assert!(err.contains("chunks missing: [(2, 3), (7, 7)]"), "{err}");
    }

    #[test]
    fn a_file_that_does_not_match_its_checksum_is_refused() {
        let bytes = video(5_000);
        let mut chunks = chunks_of("x.mp4", &bytes, 1000);
        // A submitter that lied about the whole file (each chunk is fine).
        for c in &mut chunks {
            c.meta.file_sha256 = crate::sha256_hex(b"something else");
        }
        let mut a = Assembly::new(&chunks[0].meta, 1 << 20, &spill_dir("sum")).unwrap();
        for c in &chunks {
            a.add(c).unwrap();
        }
        assert!(a.finish().unwrap_err().to_string().contains("SHA-256"));
    }
}
