//! A file system that can lose power, for tests: FUSE, in memory, in the
//! test process. After Jepsen's LazyFS: every write lands in a file's live
//! contents at once (what processes read), but only `fsync`/`fdatasync` of
//! the file copies them to its durable contents, and only `fsync` of a
//! directory makes its entries (creates, renames, unlinks) durable, as
//! POSIX promises and no more. `power_cut` throws away everything else:
//! unsynced data whole (no torn writes: a write either was synced or is
//! gone) and unsynced names.
//!
//! The kernel's page cache would survive a cut, so a cut is always
//! unmount (which flushes the cache into live contents), cut, mount again.

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};
use libc::{EEXIST, EINVAL, EISDIR, ENOENT, ENOTDIR, ENOTEMPTY};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const TTL: Duration = Duration::from_secs(1);
const ROOT: u64 = 1;

enum Body {
    File { live: Vec<u8>, durable: Vec<u8> },
    Dir(BTreeMap<OsString, u64>),
}

struct Node {
    body: Body,
    perm: u16,
    mtime: SystemTime,
}

#[derive(Default)]
struct Tree {
    /// Every node ever made: one removed from every directory stays, so a
    /// cut can bring back a name whose removal was never synced.
    nodes: HashMap<u64, Node>,
    /// Each directory's entries as of its last fsync.
    durable_dirs: HashMap<u64, BTreeMap<OsString, u64>>,
    next: u64,
}

/// What one power cut threw away.
#[derive(Debug, Default, Clone)]
pub struct Cut {
    /// Files reachable by name whose unsynced data was lost, by path.
    pub files: Vec<String>,
    pub bytes: u64,
    /// Directory entries that changed back.
    pub names: usize,
}

/// The file system's state, shared by its mounts; survives unmounting.
#[derive(Clone)]
pub struct LazyFs(Arc<Mutex<Tree>>);

/// A mounted `LazyFs`; unmounted when dropped.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    path: std::path::PathBuf,
}

/// How long a drop waits for the file system's thread to finish.
const UNMOUNT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

impl Drop for Mounted {
    fn drop(&mut self) {
        // Lazily: a mount still busy (a file left open) is detached at once
        // and goes when its last user does, instead of failing with EBUSY
        // and leaving the join below waiting for ever.
        use std::os::unix::ffi::OsStrExt;
        if let Ok(path) = std::ffi::CString::new(self.path.as_os_str().as_bytes()) {
            // SAFETY: a valid C string; umount2 has no other precondition.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
        if let Some(s) = self.session.take() {
            let (done, joined) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                s.join();
                let _ = done.send(());
            });
            if joined.recv_timeout(UNMOUNT_DEADLINE).is_err() {
                eprintln!(
                    "lazyfs: {} still served {UNMOUNT_DEADLINE:?} after the unmount; left behind",
                    self.path.display()
                );
            }
        }
    }
}

impl LazyFs {
    pub fn new() -> LazyFs {
        let mut t = Tree { next: ROOT + 1, ..Tree::default() };
        t.nodes.insert(ROOT, Node { body: Body::Dir(BTreeMap::new()), perm: 0o755, mtime: SystemTime::now() });
        LazyFs(Arc::new(Mutex::new(t)))
    }

    /// Mounts at `path` (an existing empty directory); needs root and /dev/fuse.
    /// Through fusermount3 with `auto_unmount`, so that a test killed
    /// mid-run leaves no mount behind; without fusermount3, a plain mount.
    pub fn mount(&self, path: &Path) -> std::io::Result<Mounted> {
        let opts = [MountOption::FSName("vigil-lazyfs".into()), MountOption::RW];
        let auto = [&opts[..], &[MountOption::AutoUnmount, MountOption::AllowRoot]].concat();
        let session = match fuser::spawn_mount2(Fs(self.0.clone()), path, &auto) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("lazyfs: no auto_unmount mount ({e}; fusermount3 from scripts/setup): a plain one");
                fuser::spawn_mount2(Fs(self.0.clone()), path, &opts)?
            }
        };
        Ok(Mounted { session: Some(session), path: path.to_path_buf() })
    }

    /// Loses power: every file and directory goes back to what was last
    /// synced.
    pub fn power_cut(&self) -> Cut {
        let mut cut = Cut::default();
        let t = &mut *self.0.lock().unwrap();
        for (path, ino) in t.paths() {
            if let Some(Node { body: Body::File { live, durable }, .. }) = t.nodes.get(&ino)
                && live != durable
            {
                cut.bytes += live.iter().zip(durable.iter()).filter(|(a, b)| a != b).count() as u64
                    + live.len().abs_diff(durable.len()) as u64;
                cut.files.push(path);
            }
        }
        for (ino, n) in t.nodes.iter_mut() {
            match &mut n.body {
                Body::File { live, durable } => live.clone_from(durable),
                Body::Dir(entries) => {
                    let durable = t.durable_dirs.get(ino).cloned().unwrap_or_default();
                    cut.names += entries.iter().filter(|(k, v)| durable.get(*k) != Some(v)).count()
                        + durable.keys().filter(|k| !entries.contains_key(*k)).count();
                    *entries = durable;
                }
            }
        }
        cut
    }
}

struct Fs(Arc<Mutex<Tree>>);

impl Tree {
    /// (path, inode) of every file reachable by name now.
    fn paths(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut todo = vec![(String::new(), ROOT)];
        while let Some((path, ino)) = todo.pop() {
            if let Some(Node { body: Body::Dir(d), .. }) = self.nodes.get(&ino) {
                for (name, &child) in d {
                    todo.push((format!("{path}/{}", name.to_string_lossy()), child));
                }
            } else {
                out.push((path, ino));
            }
        }
        out
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let n = self.nodes.get(&ino)?;
        let (kind, size, nlink) = match &n.body {
            Body::File { live, .. } => (FileType::RegularFile, live.len() as u64, 1),
            Body::Dir(_) => (FileType::Directory, 0, 2),
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.mtime,
            crtime: n.mtime,
            kind,
            perm: n.perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn dir(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, i32> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.body) {
            Some(Body::Dir(d)) => Ok(d),
            Some(_) => Err(ENOTDIR),
            None => Err(ENOENT),
        }
    }

    /// A file's (live, durable) contents; a write's caller touches mtime.
    fn file(&mut self, ino: u64) -> Result<(&mut Vec<u8>, &mut Vec<u8>), i32> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.body) {
            Some(Body::File { live, durable }) => Ok((live, durable)),
            Some(_) => Err(EISDIR),
            None => Err(ENOENT),
        }
    }

    fn add(&mut self, parent: u64, name: &OsStr, body: Body, perm: u16) -> Result<u64, i32> {
        let ino = self.next;
        let dir = self.dir(parent)?;
        if dir.contains_key(name) {
            return Err(EEXIST);
        }
        dir.insert(name.to_owned(), ino);
        self.next += 1;
        self.nodes.insert(ino, Node { body, perm, mtime: SystemTime::now() });
        Ok(ino)
    }

    fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<u64, i32> {
        self.dir(parent)?.get(name).copied().ok_or(ENOENT)
    }

    fn is_empty_dir(&self, ino: u64) -> bool {
        matches!(self.nodes.get(&ino).map(|n| &n.body), Some(Body::Dir(d)) if d.is_empty())
    }
}

fn new_file() -> Body {
    Body::File { live: Vec::new(), durable: Vec::new() }
}

impl Fs {
    fn tree(&self) -> std::sync::MutexGuard<'_, Tree> {
        self.0.lock().unwrap()
    }

    fn entry(&self, ino: Result<u64, i32>, reply: ReplyEntry) {
        let t = self.tree();
        match ino.map(|i| t.attr(i)) {
            Ok(Some(a)) => reply.entry(&TTL, &a, 0),
            Ok(None) => reply.error(ENOENT),
            Err(e) => reply.error(e),
        }
    }
}

impl Filesystem for Fs {
    fn lookup(&mut self, _r: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let ino = self.tree().lookup(parent, name);
        self.entry(ino, reply);
    }

    fn getattr(&mut self, _r: &Request<'_>, ino: u64, reply: ReplyAttr) {
        match self.tree().attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(ENOENT),
        }
    }

    fn setattr(
        &mut self,
        _r: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut t = self.tree();
        let Some(n) = t.nodes.get_mut(&ino) else { return reply.error(ENOENT) };
        if let Some(m) = mode {
            n.perm = (m & 0o7777) as u16;
        }
        if let Some(len) = size {
            match &mut n.body {
                Body::File { live, .. } => live.resize(len as usize, 0),
                Body::Dir(_) => return reply.error(EISDIR),
            }
            n.mtime = SystemTime::now();
        }
        let a = t.attr(ino).unwrap();
        reply.attr(&TTL, &a);
    }

    fn mkdir(&mut self, _r: &Request<'_>, parent: u64, name: &OsStr, mode: u32, _u: u32, reply: ReplyEntry) {
        let ino = self.tree().add(parent, name, Body::Dir(BTreeMap::new()), (mode & 0o7777) as u16);
        self.entry(ino, reply);
    }

    fn create(
        &mut self,
        _r: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut t = self.tree();
        let ino = match t.lookup(parent, name) {
            Ok(_) if flags & libc::O_EXCL != 0 => return reply.error(EEXIST),
            Ok(ino) => ino,
            Err(_) => match t.add(parent, name, new_file(), (mode & 0o7777) as u16) {
                Ok(ino) => ino,
                Err(e) => return reply.error(e),
            },
        };
        if flags & libc::O_TRUNC != 0
            && let Ok((live, _)) = t.file(ino)
        {
            live.clear();
        }
        let a = t.attr(ino).unwrap();
        reply.created(&TTL, &a, 0, 0, 0);
    }

    fn unlink(&mut self, _r: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut t = self.tree();
        match t.lookup(parent, name) {
            Ok(ino) if matches!(t.nodes[&ino].body, Body::Dir(_)) => reply.error(EISDIR),
            Ok(_) => {
                t.dir(parent).unwrap().remove(name);
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&mut self, _r: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut t = self.tree();
        match t.lookup(parent, name) {
            Ok(ino) if !matches!(t.nodes[&ino].body, Body::Dir(_)) => reply.error(ENOTDIR),
            Ok(ino) if !t.is_empty_dir(ino) => reply.error(ENOTEMPTY),
            Ok(_) => {
                t.dir(parent).unwrap().remove(name);
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &mut self,
        _r: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let mut t = self.tree();
        let ino = match t.lookup(parent, name) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return reply.error(EINVAL);
        }
        if let Ok(old) = t.lookup(newparent, newname) {
            if flags & libc::RENAME_NOREPLACE != 0 {
                return reply.error(EEXIST);
            }
            let (dir_over, dir_from) =
                (matches!(t.nodes[&old].body, Body::Dir(_)), matches!(t.nodes[&ino].body, Body::Dir(_)));
            if dir_over && (!dir_from || !t.is_empty_dir(old)) {
                return reply.error(if dir_from { ENOTEMPTY } else { EISDIR });
            }
        }
        t.dir(parent).unwrap().remove(name);
        match t.dir(newparent) {
            Ok(d) => {
                d.insert(newname.to_owned(), ino);
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn open(&mut self, _r: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let mut t = self.tree();
        match t.file(ino) {
            Ok((live, _)) => {
                if flags & libc::O_TRUNC != 0 {
                    live.clear();
                }
                reply.opened(0, 0)
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &mut self,
        _r: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyData,
    ) {
        let mut t = self.tree();
        match t.file(ino) {
            Ok((live, _)) => {
                let start = (offset.max(0) as usize).min(live.len());
                let end = (start + size as usize).min(live.len());
                reply.data(&live[start..end])
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &mut self,
        _r: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _wf: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut t = self.tree();
        match t.file(ino) {
            Ok((live, _)) => {
                let start = offset.max(0) as usize;
                if live.len() < start + data.len() {
                    live.resize(start + data.len(), 0);
                }
                live[start..start + data.len()].copy_from_slice(data);
                t.nodes.get_mut(&ino).unwrap().mtime = SystemTime::now();
                reply.written(data.len() as u32)
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(&mut self, _r: &Request<'_>, _ino: u64, _fh: u64, _lock: u64, reply: ReplyEmpty) {
        reply.ok()
    }

    /// The one place data becomes durable.
    fn fsync(&mut self, _r: &Request<'_>, ino: u64, _fh: u64, _datasync: bool, reply: ReplyEmpty) {
        let mut t = self.tree();
        match t.file(ino) {
            Ok((live, durable)) => {
                durable.clone_from(live);
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&mut self, _r: &Request<'_>, ino: u64, _fh: u64, offset: i64, mut reply: ReplyDirectory) {
        let mut t = self.tree();
        let entries: Vec<(u64, OsString)> = match t.dir(ino) {
            Ok(d) => d.iter().map(|(n, i)| (*i, n.clone())).collect(),
            Err(e) => return reply.error(e),
        };
        let all = [(ino, OsString::from(".")), (ino, OsString::from(".."))].into_iter().chain(entries);
        for (i, (child, name)) in all.enumerate().skip(offset as usize) {
            let kind = match t.nodes.get(&child).map(|n| &n.body) {
                Some(Body::Dir(_)) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            if reply.add(child, (i + 1) as i64, kind, name) {
                break;
            }
        }
        reply.ok()
    }

    /// The one place names become durable.
    fn fsyncdir(&mut self, _r: &Request<'_>, ino: u64, _fh: u64, _datasync: bool, reply: ReplyEmpty) {
        let mut t = self.tree();
        match t.dir(ino) {
            Ok(d) => {
                let d = d.clone();
                t.durable_dirs.insert(ino, d);
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&mut self, _r: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        // 64 GiB, nearly all free: the archive's free-space floor stays quiet.
        let blocks = 16 << 20;
        reply.statfs(blocks, blocks - 1024, blocks - 1024, 1 << 20, 1 << 20, 4096, 255, 4096)
    }

    fn fallocate(
        &mut self,
        _r: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(libc::EOPNOTSUPP);
        }
        let mut t = self.tree();
        match t.file(ino) {
            Ok((live, _)) => {
                let end = (offset + length).max(0) as usize;
                if live.len() < end {
                    live.resize(end, 0);
                }
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }
}
