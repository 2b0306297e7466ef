//! Test harness: fast repositories on memory storage, deterministic sample files, a crash layer.

#![allow(dead_code)]

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tidemark_repo::format::Id;
use tidemark_repo::format::keys::KdfParams;
use tidemark_repo::format::objects::{Node, NodeType, Snapshot, Tree};
use tidemark_repo::format::pack::BlobType;
use tidemark_repo::{Archiver, Credential, InitOptions, LockOptions, NoProgress, Repository, Result};
use tidemark_storage::{Entry, ErrorKind, MemoryStorage, Storage, StorageError};

pub fn password() -> Credential {
    Credential::Password(b"correct horse".to_vec())
}

pub fn fast_options() -> InitOptions {
    InitOptions {
        kdf: KdfParams { m_kib: 1024, t: 1, p: 1 },
        pack_size: 64 * 1024,
        compression_level: 1,
        shared_ids: None,
    }
}

pub fn short_locks() -> LockOptions {
    LockOptions { lifetime: Duration::from_millis(200), refresh: Duration::from_millis(50) }
}

pub fn init_on(storage: Arc<dyn Storage>) -> Repository {
    Repository::init(storage, &password(), &fast_options()).expect("init")
}

pub fn new_repo() -> (MemoryStorage, Repository) {
    let mem = MemoryStorage::new();
    let repo = init_on(Arc::new(mem.clone()));
    (mem, repo)
}

/// A fresh handle on the same storage (a new process, as far as the repository can tell).
pub fn reopen(repo: &Repository) -> Repository {
    Repository::open(repo.storage().clone(), &password()).expect("reopen")
}

/// `n` deterministic files of 30-90 KB: half compressible text, half random bytes.
pub fn sample_files(seed: u64, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let len = 30_000 + (next() % 60_000) as usize;
            let data: Vec<u8> = if i % 2 == 0 {
                (0..len).map(|j| b"lorem ipsum dolor sit amet, "[(j + seed as usize) % 28]).collect()
            } else {
                (0..len).map(|_| next() as u8).collect()
            };
            (format!("file-{seed}-{i}"), data)
        })
        .collect()
}

fn file_node(name: &str, size: u64, content: Vec<Id>) -> Node {
    Node {
        name: name.into(),
        name_bytes: None,
        node_type: NodeType::File,
        mode: 0o644,
        uid: 0,
        gid: 0,
        user: String::new(),
        group: String::new(),
        mtime_ns: 0,
        ctime_ns: 0,
        inode: 0,
        device: 0,
        size,
        content,
        subtree: None,
        link_target: None,
        attrs: Default::default(),
    }
}

/// Store files as one flat tree and commit a snapshot.
pub fn store_and_commit(archiver: Archiver, files: &[(String, Vec<u8>)]) -> Result<(Id, Snapshot)> {
    let mut tree = Tree::default();
    for (name, data) in files {
        let saved = archiver.save_reader(&data[..])?;
        tree.nodes.push(file_node(name, saved.size, saved.content));
    }
    let root = archiver.save_tree(&tree)?;
    let snapshot = Snapshot {
        time: jiff::Timestamp::now(),
        hostname: "test".into(),
        username: "test".into(),
        kind: "directory".into(),
        source: None,
        paths: vec!["/test".into()],
        tags: vec![],
        parent: None,
        tree: root,
        program: "tests".into(),
        summary: None,
        extra: Default::default(),
    };
    archiver.commit(snapshot)
}

pub fn backup_files_with_snapshot(repo: &Repository, files: &[(String, Vec<u8>)]) -> (Id, Snapshot) {
    let archiver = repo.archiver("test", Arc::new(NoProgress)).expect("archiver");
    store_and_commit(archiver, files).expect("commit")
}

pub fn backup_files(repo: &Repository, files: &[(String, Vec<u8>)]) -> Id {
    backup_files_with_snapshot(repo, files).0
}

pub fn read_files(repo: &Repository, snapshot: &Id) -> Vec<(String, Vec<u8>)> {
    let snap = repo.load_snapshot(snapshot).expect("snapshot");
    let tree = repo.load_tree(&snap.tree).expect("tree");
    tree.nodes
        .iter()
        .map(|n| {
            let mut data = Vec::new();
            for id in &n.content {
                data.extend(repo.read_blob(BlobType::Data, id).expect("blob"));
            }
            (n.name.clone(), data)
        })
        .collect()
}

/// Storage that, once armed with `k`, lets `k` more writes through and fails every write after:
/// a process that died at that instant.
#[derive(Debug, Clone)]
pub struct CrashAfter {
    inner: MemoryStorage,
    armed: Arc<AtomicBool>,
    left: Arc<AtomicUsize>,
}

impl CrashAfter {
    pub fn new(inner: MemoryStorage) -> Self {
        CrashAfter { inner, armed: Arc::new(AtomicBool::new(false)), left: Arc::new(AtomicUsize::new(0)) }
    }

    pub fn arm(&self, k: usize) {
        self.left.store(k, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    fn write(&self, key: &str) -> Result<(), StorageError> {
        if !self.armed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let ok = self.left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if ok { Ok(()) } else { Err(StorageError::new(ErrorKind::Permanent, "crashed").with_key(key)) }
    }
}

impl Storage for CrashAfter {
    fn location(&self) -> String {
        "crash-after".into()
    }
    fn list(&self, prefix: &str) -> Result<Vec<Entry>, StorageError> {
        self.inner.list(prefix)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, StorageError> {
        self.inner.get_range(key, range)
    }
    fn stat(&self, key: &str) -> Result<Option<u64>, StorageError> {
        self.inner.stat(key)
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<(), StorageError> {
        self.write(key)?;
        self.inner.put(key, data)
    }
    fn put_overwrite(&self, key: &str, data: &[u8]) -> Result<(), StorageError> {
        self.write(key)?;
        self.inner.put_overwrite(key, data)
    }
    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.write(key)?;
        self.inner.delete(key)
    }
}
