//! Tidemark storage: where repository bytes live, behind one synchronous trait over opaque keys.
//!
//! Keys are `/`-separated relative paths such as `data/ab/ab12...` or `snapshots/0f3c...`
//! ([`check_key`] says exactly which). Backends store and return bytes; they know nothing of the
//! format. Layers wrap any `Storage` and are themselves a `Storage`.
//!
//! - Backends: [`LocalStorage`] (a directory; atomic create-only writes with fsync) and
//!   [`MemoryStorage`] (tests, dry runs). S3 lives in the `tidemark-storage-s3` crate.
//! - Layers: [`RetryStorage`] (exponential backoff for transient errors, then
//!   [`ErrorKind::Unreachable`]) and [`fault::FaultStorage`] (programmable failures for tests).
//!
//! ```
//! use tidemark_storage::{MemoryStorage, Storage};
//! let s = MemoryStorage::new();
//! s.put("snapshots/1", b"x").unwrap();
//! assert_eq!(s.get("snapshots/1").unwrap(), b"x");
//! assert_eq!(s.list("snapshots/").unwrap().len(), 1);
//! ```
#![deny(missing_docs)]

mod error;
pub mod fault;
mod local;
mod memory;
mod retention;
mod retry;

use std::ops::Range;

pub use error::{ErrorKind, StorageError};
pub use local::LocalStorage;
pub use memory::MemoryStorage;
pub use retention::{Retention, renewal_margin};
pub use retry::RetryStorage;

/// Result of storage operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Check that `key` is a well-formed object key, as every backend in this workspace does before
/// touching it.
///
/// A key is a non-empty relative path of `/`-separated components of at most 1024 bytes in total:
/// no leading or trailing `/` or whitespace, no empty, `.` or `..` component, no control character
/// or backslash, and no component starting with `.tmp-` (reserved for [`LocalStorage`]'s temporary
/// files). A bad key is a [`ErrorKind::Permanent`] error: it is a bug in the caller, and retrying
/// will not help.
///
/// ```
/// assert!(tidemark_storage::check_key("data/ab/ab12").is_ok());
/// assert!(tidemark_storage::check_key("../etc/passwd").is_err());
/// ```
pub fn check_key(key: &str) -> Result<()> {
    let problem = if key.is_empty() {
        Some("it is empty")
    } else if key.len() > 1024 {
        Some("it is longer than 1024 bytes")
    } else if key.starts_with('/') || key.ends_with('/') {
        Some("it starts or ends with '/'")
    } else if key.contains(|c: char| c.is_control() || c == '\\') {
        Some("it contains a control character or a backslash")
    } else if key.trim() != key {
        Some("it starts or ends with whitespace")
    } else {
        key.split('/').find_map(|part| match part {
            "" => Some("it has an empty path component"),
            "." | ".." => Some("it has a '.' or '..' component"),
            p if p.starts_with(local::TEMP_PREFIX) => Some("a component starts with the reserved '.tmp-'"),
            _ => None,
        })
    };
    match problem {
        None => Ok(()),
        Some(why) => {
            Err(StorageError::new(ErrorKind::Permanent, format!("invalid object key {key:?}: {why}")).with_key(key))
        }
    }
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Full key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// Where repository objects live.
///
/// Contract for every backend:
/// - `put` is atomic (readers see all of the object or none) and durable when it returns `Ok`;
///   it refuses to replace an existing key ([`ErrorKind::AlreadyExists`]) so nothing is ever
///   overwritten, except for keys under `locks/` (refreshed in place).
/// - `list` returns every key under a prefix or fails: a partial listing is an error, never a short list.
/// - `get` of a missing key is [`ErrorKind::NotFound`].
/// - errors say whether retrying may help ([`StorageError::is_transient`]).
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Human-readable location, for messages (`/srv/repo`, `s3://bucket/prefix`).
    fn location(&self) -> String;

    /// Every object whose key starts with `prefix` (recursively).
    fn list(&self, prefix: &str) -> Result<Vec<Entry>>;

    /// The whole object.
    fn get(&self, key: &str) -> Result<Vec<u8>>;

    /// A byte range of an object; a range beyond the end is an error.
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>>;

    /// Size of an object, or `None` when it does not exist.
    fn stat(&self, key: &str) -> Result<Option<u64>>;

    /// Store a new object atomically and durably, with a content checksum where the backend has one.
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;

    /// Replace or create an object (only for `locks/`); same atomicity and durability as `put`.
    fn put_overwrite(&self, key: &str, data: &[u8]) -> Result<()>;

    /// Delete an object; deleting a missing object is not an error.
    fn delete(&self, key: &str) -> Result<()>;

    /// The retention this storage enforces on objects written with `put`, if any (S3 Object
    /// Lock); layers pass their inner storage's through.
    fn retention(&self) -> Option<&dyn Retention> {
        None
    }
}

impl<S: Storage + ?Sized> Storage for std::sync::Arc<S> {
    fn location(&self) -> String {
        (**self).location()
    }
    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        (**self).list(prefix)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        (**self).get(key)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        (**self).get_range(key, range)
    }
    fn stat(&self, key: &str) -> Result<Option<u64>> {
        (**self).stat(key)
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        (**self).put(key, data)
    }
    fn put_overwrite(&self, key: &str, data: &[u8]) -> Result<()> {
        (**self).put_overwrite(key, data)
    }
    fn delete(&self, key: &str) -> Result<()> {
        (**self).delete(key)
    }
    fn retention(&self) -> Option<&dyn Retention> {
        (**self).retention()
    }
}

impl<S: Storage + ?Sized> Storage for Box<S> {
    fn location(&self) -> String {
        (**self).location()
    }
    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        (**self).list(prefix)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        (**self).get(key)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        (**self).get_range(key, range)
    }
    fn stat(&self, key: &str) -> Result<Option<u64>> {
        (**self).stat(key)
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        (**self).put(key, data)
    }
    fn put_overwrite(&self, key: &str, data: &[u8]) -> Result<()> {
        (**self).put_overwrite(key, data)
    }
    fn delete(&self, key: &str) -> Result<()> {
        (**self).delete(key)
    }
    fn retention(&self) -> Option<&dyn Retention> {
        (**self).retention()
    }
}
