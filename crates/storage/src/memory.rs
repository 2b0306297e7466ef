//! An in-memory backend for tests and dry runs.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{Entry, ErrorKind, Result, Storage, StorageError, check_key};

/// Objects in a `BTreeMap` behind a mutex.
///
/// Clones share the same objects, so a test can hand one clone to the code under test and keep
/// another to inspect or damage what was stored ([`corrupt`](Self::corrupt),
/// [`remove_raw`](Self::remove_raw), [`insert_raw`](Self::insert_raw)). Those helpers bypass the
/// no-overwrite rule on purpose.
///
/// ```
/// use tidemark_storage::{MemoryStorage, Storage};
/// let s = MemoryStorage::new();
/// let inspect = s.clone();
/// s.put("data/1", b"abc").unwrap();
/// inspect.corrupt("data/1", |bytes| bytes[0] ^= 1);
/// assert_eq!(s.get("data/1").unwrap(), b"`bc");
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn objects(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A panic while holding the lock cannot leave the map half-updated: every critical section
        // is a single map operation. So a poisoned lock is still safe to use.
        self.objects.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Change a stored object in place, bypassing every rule; `false` when `key` does not exist.
    pub fn corrupt(&self, key: &str, f: impl FnOnce(&mut Vec<u8>)) -> bool {
        match self.objects().get_mut(key) {
            Some(bytes) => {
                f(bytes);
                true
            }
            None => false,
        }
    }

    /// Remove an object behind the caller's back and return its bytes.
    pub fn remove_raw(&self, key: &str) -> Option<Vec<u8>> {
        self.objects().remove(key)
    }

    /// Store or replace an object without any check (not even of the key).
    pub fn insert_raw(&self, key: &str, data: impl Into<Vec<u8>>) {
        self.objects().insert(key.to_owned(), data.into());
    }

    /// The stored bytes of an object, if any.
    pub fn raw(&self, key: &str) -> Option<Vec<u8>> {
        self.objects().get(key).cloned()
    }

    /// Every stored key, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.objects().keys().cloned().collect()
    }

    /// Number of stored objects.
    pub fn len(&self) -> usize {
        self.objects().len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.objects().is_empty()
    }
}

fn not_found(key: &str) -> StorageError {
    StorageError::new(ErrorKind::NotFound, "no such object in memory storage").with_key(key)
}

impl Storage for MemoryStorage {
    fn location(&self) -> String {
        "memory".to_owned()
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        Ok(self
            .objects()
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, bytes)| Entry { key: key.clone(), size: bytes.len() as u64 })
            .collect())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        check_key(key)?;
        self.objects().get(key).cloned().ok_or_else(|| not_found(key))
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        check_key(key)?;
        let objects = self.objects();
        let bytes = objects.get(key).ok_or_else(|| not_found(key))?;
        let slice = usize::try_from(range.start)
            .ok()
            .zip(usize::try_from(range.end).ok())
            .and_then(|(start, end)| bytes.get(start..end));
        slice.map(<[u8]>::to_vec).ok_or_else(|| range_error(key, &range, bytes.len() as u64))
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        check_key(key)?;
        Ok(self.objects().get(key).map(|bytes| bytes.len() as u64))
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        check_key(key)?;
        let mut objects = self.objects();
        if objects.contains_key(key) {
            return Err(already_exists(key));
        }
        objects.insert(key.to_owned(), data.to_vec());
        Ok(())
    }

    fn put_overwrite(&self, key: &str, data: &[u8]) -> Result<()> {
        check_key(key)?;
        self.objects().insert(key.to_owned(), data.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.objects().remove(key);
        Ok(())
    }
}

/// The error for `put` of a key that exists, shared by the backends of this crate.
pub(crate) fn already_exists(key: &str) -> StorageError {
    StorageError::new(ErrorKind::AlreadyExists, "object already exists and is never overwritten").with_key(key)
}

/// The error for a byte range that is empty-reversed or reaches past the end of the object.
pub(crate) fn range_error(key: &str, range: &Range<u64>, size: u64) -> StorageError {
    StorageError::new(
        ErrorKind::Permanent,
        format!("byte range {}..{} is invalid for an object of {size} bytes", range.start, range.end),
    )
    .with_key(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_refuses_to_overwrite() {
        let s = MemoryStorage::new();
        s.put("a/b", b"1").unwrap();
        let err = s.put("a/b", b"2").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(err.key(), Some("a/b"));
        assert_eq!(s.get("a/b").unwrap(), b"1");
        s.put_overwrite("a/b", b"3").unwrap();
        assert_eq!(s.get("a/b").unwrap(), b"3");
    }

    #[test]
    fn list_is_by_string_prefix_and_sorted() {
        let s = MemoryStorage::new();
        for key in ["data/ab/1", "data/ac/2", "data/ab/0", "index/1", "data0"] {
            s.put(key, key.as_bytes()).unwrap();
        }
        let keys = |p| s.list(p).unwrap().into_iter().map(|e| e.key).collect::<Vec<_>>();
        assert_eq!(keys("data/"), ["data/ab/0", "data/ab/1", "data/ac/2"]);
        assert_eq!(keys("data/ab"), ["data/ab/0", "data/ab/1"]);
        assert_eq!(keys("").len(), 5);
        assert_eq!(s.list("index/").unwrap(), [Entry { key: "index/1".into(), size: 7 }]);
    }

    #[test]
    fn ranges_stat_delete_and_missing() {
        let s = MemoryStorage::new();
        s.put("k", b"0123456789").unwrap();
        assert_eq!(s.get_range("k", 2..5).unwrap(), b"234");
        assert_eq!(s.get_range("k", 10..10).unwrap(), b"");
        assert_eq!(s.get_range("k", 8..11).unwrap_err().kind(), ErrorKind::Permanent);
        assert_eq!(s.stat("k").unwrap(), Some(10));
        s.delete("k").unwrap();
        s.delete("k").unwrap();
        assert_eq!(s.stat("k").unwrap(), None);
        assert!(s.get("k").unwrap_err().is_not_found());
        assert!(s.get_range("k", 0..1).unwrap_err().is_not_found());
    }

    #[test]
    fn clones_share_state_and_helpers_bypass_rules() {
        let s = MemoryStorage::new();
        let t = s.clone();
        s.put("x", b"abc").unwrap();
        assert!(t.corrupt("x", |b| b.truncate(1)));
        assert!(!t.corrupt("missing", |_| unreachable!()));
        assert_eq!(s.get("x").unwrap(), b"a");
        t.insert_raw("x", b"zz".to_vec());
        assert_eq!(s.raw("x").as_deref(), Some(&b"zz"[..]));
        assert_eq!(t.remove_raw("x"), Some(b"zz".to_vec()));
        assert!(s.is_empty());
    }

    #[test]
    fn bad_keys_are_refused() {
        let s = MemoryStorage::new();
        for key in ["", "/a", "a/", "a//b", "a/../b", "./a", "a/.tmp-1", "a\\b", " a", "a\n"] {
            assert_eq!(s.put(key, b"").unwrap_err().kind(), ErrorKind::Permanent, "{key:?}");
        }
    }
}
