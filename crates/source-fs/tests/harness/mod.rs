//! Test harness: a real repository on in-memory storage, temp trees, and a comparison of a source
//! tree with its restored copy.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use filetime::FileTime;
use tempfile::TempDir;
use tidemark_repo::format::Id;
use tidemark_repo::format::keys::KdfParams;
use tidemark_repo::format::objects::{Node, Snapshot};
use tidemark_repo::{Credential, InitOptions, LockOptions, NoProgress, Progress, Repository};
use tidemark_source_fs::{BackupOptions, BackupOutcome, RestoreOptions, RestoreOutcome};
use tidemark_storage::MemoryStorage;

pub const HOST: &str = "test-host";

/// A fresh repository; the `MemoryStorage` clone lets tests damage what was stored.
pub fn new_repo() -> (MemoryStorage, Repository) {
    let mem = MemoryStorage::new();
    let opts = InitOptions { kdf: KdfParams { m_kib: 1024, t: 1, p: 1 }, ..Default::default() };
    let repo = Repository::init(Arc::new(mem.clone()), &Credential::Password(b"test".to_vec()), &opts).unwrap();
    (mem, reopen(&repo))
}

/// The same repository with an empty index cache (as a new process would see it).
///
/// The short refresh bounds a lost-wakeup race in the lock refresher (a guard dropped right after
/// it was taken can wait a whole refresh interval); remove once `lock.rs` checks `stop` before
/// waiting.
pub fn reopen(repo: &Repository) -> Repository {
    let lock_options = LockOptions { refresh: Duration::from_secs(1), ..repo.lock_options() };
    repo.clone().with_lock_options(lock_options)
}

/// Progress that records warnings.
#[derive(Default)]
pub struct Recorder {
    pub warnings: Mutex<Vec<String>>,
}

impl Progress for Recorder {
    fn warn(&self, message: &str) {
        self.warnings.lock().unwrap().push(message.to_string());
    }
}

pub fn opts(paths: &[&Path]) -> BackupOptions {
    BackupOptions { paths: paths.iter().map(|p| p.to_path_buf()).collect(), host: HOST.into(), ..Default::default() }
}

pub fn backup(repo: &Repository, paths: &[&Path]) -> BackupOutcome {
    tidemark_source_fs::backup(&reopen(repo), &opts(paths), Arc::new(NoProgress)).unwrap()
}

pub fn restore(repo: &Repository, snapshot: &Snapshot, opts: &RestoreOptions) -> RestoreOutcome {
    tidemark_source_fs::restore(&reopen(repo), snapshot, opts, Arc::new(NoProgress)).unwrap()
}

pub fn restore_to(repo: &Repository, snapshot: &Snapshot, target: &Path) -> RestoreOutcome {
    restore(repo, snapshot, &RestoreOptions { target: target.to_path_buf(), ..Default::default() })
}

/// Where `source` (absolute) lands below a restore `target`.
pub fn restored_path(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").unwrap())
}

/// A temp directory with a `src` tree inside.
pub struct Tree {
    pub dir: TempDir,
}

impl Tree {
    pub fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("src")).unwrap();
        Tree { dir }
    }

    pub fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.src().join(rel)
    }

    /// A scratch directory next to `src` (restore targets, "outside" directories).
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn write(&self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        p
    }

    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn symlink(&self, rel: &str, target: &str) -> PathBuf {
        let p = self.path(rel);
        std::os::unix::fs::symlink(target, &p).unwrap();
        p
    }

    pub fn chmod(&self, rel: &str, mode: u32) {
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(mode)).unwrap();
    }

    pub fn set_mtime(&self, rel: &str, secs: i64, nanos: u32) {
        filetime::set_symlink_file_times(
            self.path(rel),
            FileTime::from_unix_time(secs, nanos),
            FileTime::from_unix_time(secs, nanos),
        )
        .unwrap();
    }
}

/// Deterministic pseudo-random bytes (incompressible enough to make several chunks).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Everything comparable about one filesystem entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32, uid: u32, gid: u32, mtime: (i64, i64) },
    File { mode: u32, uid: u32, gid: u32, mtime: (i64, i64), content: Vec<u8> },
    Symlink { target: PathBuf, mtime: (i64, i64) },
    Other,
}

/// Every entry below `root` (relative path -> entry), never following symlinks.
pub fn snapshot_fs(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    collect(root, Path::new(""), &mut out);
    out
}

fn collect(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    for e in fs::read_dir(root.join(rel)).unwrap() {
        let e = e.unwrap();
        let child = rel.join(e.file_name());
        let abs = root.join(&child);
        let md = fs::symlink_metadata(&abs).unwrap();
        let mtime = (md.mtime(), md.mtime_nsec());
        let (mode, uid, gid) = (md.mode() & 0o7777, md.uid(), md.gid());
        let entry = if md.is_dir() {
            collect(root, &child, out);
            Entry::Dir { mode, uid, gid, mtime }
        } else if md.is_file() {
            Entry::File { mode, uid, gid, mtime, content: fs::read(&abs).unwrap() }
        } else if md.file_type().is_symlink() {
            Entry::Symlink { target: fs::read_link(&abs).unwrap(), mtime }
        } else {
            Entry::Other
        };
        out.insert(child, entry);
    }
}

/// Assert that `restored` holds exactly what `source` holds.
pub fn assert_same_tree(source: &Path, restored: &Path) {
    let a = snapshot_fs(source);
    let b = snapshot_fs(restored);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "same entries");
    for (path, entry) in &a {
        assert_eq!(Some(entry), b.get(path), "{}", path.display());
    }
    let (ma, mb) = (fs::metadata(source).unwrap(), fs::metadata(restored).unwrap());
    assert_eq!((ma.mode(), ma.mtime(), ma.mtime_nsec()), (mb.mode(), mb.mtime(), mb.mtime_nsec()), "top directory");
}

/// The snapshot node at the absolute `path`.
pub fn node_at(repo: &Repository, snapshot: &Snapshot, path: &Path) -> Option<Node> {
    tidemark_repo::tree::find_node(&reopen(repo), &snapshot.tree, &path.to_string_lossy()).unwrap()
}

/// Storage key and offset of the pack holding blob `id`.
pub fn blob_location(repo: &Repository, id: &Id) -> (String, u64) {
    let repo = reopen(repo);
    let index = repo.index().unwrap();
    let loc = index.get(id).unwrap();
    (tidemark_repo::pack_key(&index.pack(loc.pack).id), loc.offset)
}
