//! Which archiver archives which partition, when several share one archive
//! dir (one index): a partition belongs to whoever holds its claim lock.
//!
//! Each archiver aims at its fair share, ceil(partitions / live archivers):
//! one that holds more releases the surplus (after a flush, so the index
//! already names everything it read), one that holds less claims free
//! partitions. A dead archiver's claims free themselves at once (flock), and
//! the next owner starts from the offsets in the index, which the previous
//! owner committed together with its frames: no frame twice, none skipped.
//! The index's offset check (`Index::commit`) stays the last line of
//! defence should two processes ever write one partition.

use crate::lock::{CLAIMS, Lock, live_writers};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What to change so this archiver holds its fair share.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub release: Vec<i32>,
    /// How many more partitions to try to claim.
    pub claim: usize,
}

/// Pure: `held` partitions now, `partitions` in the topic, `live`
/// archivers sharing the dir (this one included).
pub fn plan(held: &[i32], partitions: i32, live: usize) -> Plan {
    let fair = (partitions.max(0) as usize).div_ceil(live.max(1));
    if held.len() > fair {
        let mut sorted = held.to_vec();
        sorted.sort_unstable();
        return Plan { release: sorted[fair..].to_vec(), claim: 0 };
    }
    Plan { release: Vec::new(), claim: fair - held.len() }
}

pub struct Claims {
    dir: PathBuf,
    topic: String,
    partitions: i32,
    held: BTreeMap<i32, Lock>,
}

impl Claims {
    pub fn new(dir: &Path, topic: &str, partitions: i32) -> Self {
        Claims { dir: dir.to_path_buf(), topic: topic.to_string(), partitions, held: BTreeMap::new() }
    }

    pub fn owned(&self) -> Vec<i32> {
        self.held.keys().copied().collect()
    }

    pub fn owns(&self, partition: i32) -> bool {
        self.held.contains_key(&partition)
    }

    /// What this archiver should change now.
    pub fn plan(&self) -> std::io::Result<Plan> {
        let live = live_writers(&self.dir)?.len();
        Ok(plan(&self.owned(), self.partitions, live))
    }

    /// Gives partitions up; call only once the index names all they delivered.
    pub fn release(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.held.remove(p);
        }
    }

    /// Claims up to `n` free partitions, lowest first; returns those claimed.
    pub fn claim(&mut self, n: usize) -> std::io::Result<Vec<i32>> {
        let mut got = Vec::new();
        for p in 0..self.partitions {
            if got.len() == n {
                break;
            }
            if self.held.contains_key(&p) {
                continue;
            }
            let path = self.dir.join(CLAIMS).join(format!("{}.{p}.lock", self.topic));
            if let Some(lock) = Lock::try_acquire(&path)? {
                self.held.insert(p, lock);
                got.push(p);
            }
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::writer_lock_path;

    #[test]
    fn fair_share_table() {
        // (held, partitions, live archivers) → plan
        let cases: &[(&[i32], i32, usize, Plan)] = &[
            (&[], 4, 1, Plan { release: vec![], claim: 4 }),
            (&[0, 1, 2, 3], 4, 1, Plan::default()),
            (&[0, 1, 2, 3], 4, 2, Plan { release: vec![2, 3], claim: 0 }),
            (&[3, 0, 2, 1], 4, 2, Plan { release: vec![2, 3], claim: 0 }),
            (&[0, 1], 4, 2, Plan::default()),
            (&[], 4, 2, Plan { release: vec![], claim: 2 }),
            (&[0, 1], 4, 3, Plan::default()), // ceil(4/3) = 2: one may idle
            (&[0, 1, 2, 3], 4, 0, Plan::default()),
            (&[], 1, 2, Plan { release: vec![], claim: 1 }),
        ];
        for (held, partitions, live, want) in cases {
            assert_eq!(plan(held, *partitions, *live), *want, "{held:?} {partitions} {live}");
        }
    }

    /// Claims what the plan says, trying again briefly: a child process
    /// forked elsewhere in this test binary (ffmpeg) may hold a copy of a
    /// lock's descriptor until its exec closes it. The archiver simply
    /// claims again on its next tick.
    fn claim(c: &mut Claims, want: usize) -> Vec<i32> {
        let mut got = Vec::new();
        for _ in 0..50 {
            let n = c.plan().unwrap().claim;
            got.extend(c.claim(n).unwrap());
            if got.len() >= want {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        got.sort();
        got
    }

    /// Two archivers: the second takes half; when the first dies (its locks
    /// dropped) the second takes the rest.
    #[test]
    fn partitions_move_between_two_archivers() {
        let d = std::env::temp_dir().join(format!("vigil-claims-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let wa = Lock::try_acquire(&writer_lock_path(&d, "a")).unwrap().unwrap();
        let mut a = Claims::new(&d, "t", 4);
        assert_eq!(claim(&mut a, 4), vec![0, 1, 2, 3]);

        let wb = Lock::try_acquire(&writer_lock_path(&d, "b")).unwrap().unwrap();
        let mut b = Claims::new(&d, "t", 4);
        assert_eq!(b.claim(b.plan().unwrap().claim).unwrap(), Vec::<i32>::new(), "all held by a");
        let pa = a.plan().unwrap();
        assert_eq!(pa.release, vec![2, 3]);
        a.release(&pa.release);
        assert_eq!(claim(&mut b, 2), vec![2, 3]);
        assert!(b.owns(2) && !a.owns(2));

        drop((a, wa)); // the first archiver dies
        assert_eq!(claim(&mut b, 2), vec![0, 1]);
        assert_eq!(b.owned(), vec![0, 1, 2, 3]);
        drop((b, wb));
        let _ = std::fs::remove_dir_all(&d);
    }
}
