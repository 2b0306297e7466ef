//! Tidemark repository engine: keys, packs, index, snapshots, locks, backup, check, forget and prune.
//!
//! The engine sees storage only through [`tidemark_storage::Storage`] and bytes only through
//! [`tidemark_format`]. Sources (directories, buckets, PostgreSQL) drive an [`Archiver`] to store
//! content and trees, and read back with [`Repository::load_tree`] and [`Repository::read_blob`].
//! Policies (forget, prune plans) are pure functions of their inputs; executors do the I/O.
//!
//! ```
//! use std::sync::Arc;
//! use tidemark_repo::{Credential, InitOptions, Repository, NoProgress};
//! use tidemark_format::keys::KdfParams;
//! let storage = Arc::new(tidemark_storage::MemoryStorage::new());
//! let cred = Credential::Password(b"secret".to_vec());
//! let opts = InitOptions { kdf: KdfParams { m_kib: 1024, t: 1, p: 1 }, ..Default::default() };
//! let repo = Repository::init(storage, &cred, &opts).unwrap();
//! let archiver = repo.archiver("example", Arc::new(NoProgress)).unwrap();
//! let saved = archiver.save_reader(&b"hello"[..]).unwrap();
//! assert_eq!(saved.size, 5);
//! ```
#![deny(missing_docs)]

mod archiver;
pub mod check;
pub mod copy;
mod error;
pub mod forget;
pub mod index;
mod keys;
mod lock;
pub mod named;
mod progress;
pub mod prune;
mod repository;
pub mod retention;
mod snapshots;
pub mod stats;
pub mod tree;

pub use archiver::{Archiver, ArchiverStats, SavedContent};
pub use error::{RepoError, Result};
pub use keys::KeyInfo;
pub use lock::{LockGuard, is_stale};
pub use progress::{NoProgress, Progress};
pub use repository::{Credential, InitOptions, LockOptions, Repository, SharedIds, hostname, pack_key, username};
pub use snapshots::SnapshotFilter;
pub use tidemark_format as format;
