//! Retry with exponential backoff for transient failures.

use std::ops::Range;
use std::time::Duration;

use backon::{BlockingRetryable, ExponentialBuilder};

use crate::{Entry, ErrorKind, Result, Storage, StorageError};

/// Retries the operations of any [`Storage`] that fail with a transient error
/// ([`StorageError::is_transient`]), with exponential backoff and jitter.
///
/// - Only transient errors are retried: not found, already exists, permission denied and the
///   like come back at once.
/// - When the attempts are used up, the last transient error becomes
///   [`ErrorKind::Unreachable`] with the message
///   `storage at <location> unreachable after <n> attempts: <last error>`.
/// - **`put` after a transient failure.** A transient failure of a `put` (a timeout, a reset
///   connection) does not say whether the object landed. If a retry then finds the key
///   [`AlreadyExists`](ErrorKind::AlreadyExists), this layer reads the object back: identical
///   bytes mean the earlier attempt landed and the `put` succeeds; different bytes keep the
///   `AlreadyExists` error. A first attempt that fails with `AlreadyExists` is never retried nor
///   compared.
///
/// Defaults: 6 attempts, delays from 200 ms doubling up to 5 s, with jitter.
///
/// ```
/// use std::time::Duration;
/// use tidemark_storage::{MemoryStorage, RetryStorage, Storage};
/// let s = RetryStorage::new(MemoryStorage::new())
///     .with_attempts(3)
///     .with_delays(Duration::from_millis(10), Duration::from_millis(100));
/// s.put("config", b"{}").unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct RetryStorage<S> {
    inner: S,
    attempts: usize,
    min_delay: Duration,
    max_delay: Duration,
}

impl<S: Storage> RetryStorage<S> {
    /// Wrap `inner` with the default policy.
    pub fn new(inner: S) -> Self {
        RetryStorage { inner, attempts: 6, min_delay: Duration::from_millis(200), max_delay: Duration::from_secs(5) }
    }

    /// Total number of attempts per operation, the first included (at least 1).
    #[must_use]
    pub fn with_attempts(mut self, attempts: usize) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Delay before the first retry and the ceiling the doubling delays stop at.
    #[must_use]
    pub fn with_delays(mut self, min: Duration, max: Duration) -> Self {
        self.min_delay = min;
        self.max_delay = max.max(min);
        self
    }

    /// The wrapped storage.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Unwrap.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn run<T>(&self, key: Option<&str>, mut op: impl FnMut() -> Result<T>) -> Result<T> {
        let backoff = ExponentialBuilder::new()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.attempts - 1)
            .with_jitter();
        let result = (|| op()).retry(backoff).when(StorageError::is_transient).call();
        result.map_err(|err| {
            if !err.is_transient() {
                return err;
            }
            let message = format!(
                "storage at {} unreachable after {} attempts: {}",
                self.inner.location(),
                self.attempts,
                err.message()
            );
            let wrapped = StorageError::new(ErrorKind::Unreachable, message);
            let wrapped = match key.or(err.key()) {
                Some(key) => wrapped.with_key(key),
                None => wrapped,
            };
            wrapped.with_source(err)
        })
    }
}

impl<S: Storage> Storage for RetryStorage<S> {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        self.run(None, || self.inner.list(prefix))
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.run(Some(key), || self.inner.get(key))
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        self.run(Some(key), || self.inner.get_range(key, range.clone()))
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        self.run(Some(key), || self.inner.stat(key))
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let mut failed_transiently = false;
        self.run(Some(key), || match self.inner.put(key, data) {
            Err(err) if err.kind() == ErrorKind::AlreadyExists && failed_transiently => {
                // An earlier attempt may have landed before its failure was reported.
                match self.inner.get(key) {
                    Ok(stored) if stored == data => Ok(()),
                    Ok(_) => Err(err),
                    Err(get_err) if get_err.is_transient() => Err(get_err),
                    Err(_) => Err(err),
                }
            }
            Err(err) => {
                failed_transiently |= err.is_transient();
                Err(err)
            }
            Ok(()) => Ok(()),
        })
    }

    fn put_overwrite(&self, key: &str, data: &[u8]) -> Result<()> {
        self.run(Some(key), || self.inner.put_overwrite(key, data))
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.run(Some(key), || self.inner.delete(key))
    }

    fn retention(&self) -> Option<&dyn crate::Retention> {
        self.inner.retention()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStorage;
    use crate::fault::{FaultStorage, Op};

    fn fast<S: Storage>(inner: S) -> RetryStorage<S> {
        RetryStorage::new(inner).with_attempts(4).with_delays(Duration::from_millis(1), Duration::from_millis(4))
    }

    #[test]
    fn succeeds_after_two_transient_faults() {
        let faults = FaultStorage::new(MemoryStorage::new());
        let s = fast(faults.clone());
        faults.fail_next(Op::Put, 2, ErrorKind::Transient);
        s.put("data/1", b"x").unwrap();
        assert_eq!(faults.calls(Op::Put), 3);
        faults.fail_next(Op::Get, 2, ErrorKind::Transient);
        assert_eq!(s.get("data/1").unwrap(), b"x");
        faults.fail_next(Op::List, 2, ErrorKind::Transient);
        assert_eq!(s.list("data/").unwrap().len(), 1);
    }

    #[test]
    fn gives_up_with_unreachable_naming_the_location() {
        let faults = FaultStorage::new(MemoryStorage::new());
        let s = fast(faults.clone());
        faults.fail_always(Op::Get, ErrorKind::Transient);
        let err = s.get("data/1").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unreachable);
        assert_eq!(err.key(), Some("data/1"));
        let text = err.to_string();
        assert!(text.starts_with("storage at memory unreachable after 4 attempts: injected"), "{text}");
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(faults.calls(Op::Get), 4);
    }

    #[test]
    fn permanent_errors_are_not_retried() {
        let faults = FaultStorage::new(MemoryStorage::new());
        let s = fast(faults.clone());
        s.put("k", b"1").unwrap();
        assert_eq!(s.put("k", b"1").unwrap_err().kind(), ErrorKind::AlreadyExists);
        assert_eq!(faults.calls(Op::Put), 2);
        assert!(s.get("missing").unwrap_err().is_not_found());
        assert_eq!(faults.calls(Op::Get), 1);
        faults.fail_next(Op::Delete, 5, ErrorKind::PermissionDenied);
        assert_eq!(s.delete("k").unwrap_err().kind(), ErrorKind::PermissionDenied);
        assert_eq!(faults.calls(Op::Delete), 1);
    }

    #[test]
    fn put_whose_first_attempt_landed_succeeds() {
        let faults = FaultStorage::new(MemoryStorage::new());
        let s = fast(faults.clone());
        faults.drop_after_write(1);
        s.put("data/1", b"payload").unwrap();
        assert_eq!(faults.calls(Op::Put), 2);
        assert_eq!(s.get("data/1").unwrap(), b"payload");
    }

    #[test]
    fn put_after_transient_failure_keeps_already_exists_for_other_bytes() {
        let memory = MemoryStorage::new();
        let faults = FaultStorage::new(memory.clone());
        let s = fast(faults.clone());
        memory.insert_raw("data/1", b"someone else's".to_vec());
        faults.fail_next(Op::Put, 1, ErrorKind::Transient);
        assert_eq!(s.put("data/1", b"mine").unwrap_err().kind(), ErrorKind::AlreadyExists);
        assert_eq!(memory.raw("data/1").unwrap(), b"someone else's");
    }

    #[test]
    fn one_attempt_means_no_retry() {
        let faults = FaultStorage::new(MemoryStorage::new());
        let s = RetryStorage::new(faults.clone()).with_attempts(0);
        faults.fail_next(Op::Stat, 1, ErrorKind::Transient);
        assert_eq!(s.stat("k").unwrap_err().kind(), ErrorKind::Unreachable);
        assert_eq!(faults.calls(Op::Stat), 1);
    }
}
