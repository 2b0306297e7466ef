//! Fault injection for tests: a layer that makes a real backend fail on command.
//!
//! [`FaultStorage`] wraps any [`Storage`] and consults a list of [`Fault`]s before (and for some
//! faults, after) each call. Clones share the faults and the call counters, so a test keeps one
//! clone to program faults while the code under test owns another.
//!
//! | fault | effect |
//! | --- | --- |
//! | [`Action::Fail`] | the call fails with the given kind without reaching the backend |
//! | [`Action::FailAfterWrite`] | a `put`/`put_overwrite` reaches the backend, then reports failure: the write landed but the caller is told otherwise (a dropped connection after upload) |
//! | [`Action::BreakListAfter`] | a `list` that would return more than `n` entries fails instead, as when a paginated listing breaks after `n` entries |
//! | [`Action::Delay`] | the call sleeps first, then goes on (other faults still apply) |
//!
//! A fault applies to one operation or to all ([`Fault::op`]), optionally only to keys under a
//! prefix ([`Fault::prefix`]), for a number of matching calls or forever ([`Fault::times`]).
//! Faults are checked in the order they were added; the first failing one wins.
//!
//! ```
//! use tidemark_storage::fault::{FaultStorage, Op};
//! use tidemark_storage::{ErrorKind, MemoryStorage, Storage};
//!
//! let s = FaultStorage::new(MemoryStorage::new());
//! s.fail_next(Op::Put, 1, ErrorKind::Transient);
//! assert!(s.put("data/1", b"x").unwrap_err().is_transient());
//! s.put("data/1", b"x").unwrap();
//! assert_eq!(s.calls(Op::Put), 2);
//! ```

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::{Entry, ErrorKind, Result, Storage, StorageError};

/// The storage operations, to aim faults and count calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// [`Storage::list`].
    List,
    /// [`Storage::get`].
    Get,
    /// [`Storage::get_range`].
    GetRange,
    /// [`Storage::stat`].
    Stat,
    /// [`Storage::put`].
    Put,
    /// [`Storage::put_overwrite`].
    PutOverwrite,
    /// [`Storage::delete`].
    Delete,
}

impl Op {
    const ALL: [Op; 7] = [Op::List, Op::Get, Op::GetRange, Op::Stat, Op::Put, Op::PutOverwrite, Op::Delete];

    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Op::List => "list",
            Op::Get => "get",
            Op::GetRange => "get_range",
            Op::Stat => "stat",
            Op::Put => "put",
            Op::PutOverwrite => "put_overwrite",
            Op::Delete => "delete",
        }
    }
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Fail with this kind before reaching the backend.
    Fail(ErrorKind),
    /// Let a write reach the backend, then fail with this kind (only affects `put` and
    /// `put_overwrite`).
    FailAfterWrite(ErrorKind),
    /// Make a `list` that yields more than `entries` entries fail with `kind` (only affects `list`).
    BreakListAfter {
        /// Entries the listing got through before breaking.
        entries: usize,
        /// Kind of the error.
        kind: ErrorKind,
    },
    /// Sleep this long, then go on.
    Delay(Duration),
}

/// One programmed fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The operation it applies to; `None` for every operation.
    pub op: Option<Op>,
    /// Apply only to keys (or listing prefixes) starting with this.
    pub prefix: Option<String>,
    /// How many matching calls it affects; `None` for all.
    pub times: Option<usize>,
    /// What it does.
    pub action: Action,
}

impl Fault {
    /// A fault on every call of `op`, forever; narrow it with the other fields.
    pub fn new(op: Op, action: Action) -> Self {
        Fault { op: Some(op), prefix: None, times: None, action }
    }

    fn matches(&self, op: Op, key: &str) -> bool {
        let applies = match self.action {
            Action::FailAfterWrite(_) => matches!(op, Op::Put | Op::PutOverwrite),
            Action::BreakListAfter { .. } => op == Op::List,
            Action::Fail(_) | Action::Delay(_) => true,
        };
        applies
            && self.op.is_none_or(|o| o == op)
            && self.prefix.as_deref().is_none_or(|p| key.starts_with(p))
            && self.times != Some(0)
    }
}

#[derive(Debug, Default)]
struct State {
    faults: Vec<Fault>,
    calls: [usize; Op::ALL.len()],
    /// Every call since the last [`FaultStorage::take_log`], as `"<op> <key or prefix>"`.
    log: Vec<String>,
}

/// A [`Storage`] that injects the programmed [`Fault`]s into calls to the inner storage; see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct FaultStorage<S> {
    inner: S,
    state: Arc<Mutex<State>>,
}

/// What to do with a call, decided under the lock and carried out without it.
#[derive(Default)]
struct Plan {
    delay: Duration,
    fail: Option<ErrorKind>,
    fail_after_write: Option<ErrorKind>,
    break_list: Option<(usize, ErrorKind)>,
}

impl<S: Storage> FaultStorage<S> {
    /// Wrap `inner` with no faults programmed.
    pub fn new(inner: S) -> Self {
        FaultStorage { inner, state: Arc::default() }
    }

    /// The wrapped storage.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Add a fault after the existing ones.
    pub fn add(&self, fault: Fault) {
        self.state().faults.push(fault);
    }

    /// The next `n` calls of `op` fail with `kind`.
    pub fn fail_next(&self, op: Op, n: usize, kind: ErrorKind) {
        self.add(Fault { times: Some(n), ..Fault::new(op, Action::Fail(kind)) });
    }

    /// Every call of `op` fails with `kind` until [`clear`](Self::clear).
    pub fn fail_always(&self, op: Op, kind: ErrorKind) {
        self.add(Fault::new(op, Action::Fail(kind)));
    }

    /// Every `put` and `put_overwrite` of a key under `prefix` fails with `kind`.
    pub fn fail_writes_under(&self, prefix: &str, kind: ErrorKind) {
        for op in [Op::Put, Op::PutOverwrite] {
            self.add(Fault { prefix: Some(prefix.to_owned()), ..Fault::new(op, Action::Fail(kind)) });
        }
    }

    /// Every `list` that would return more than `entries` entries fails with a transient error
    /// instead (a listing that broke after `entries` entries); shorter listings succeed.
    pub fn break_list_after(&self, entries: usize) {
        let kind = ErrorKind::Transient;
        self.add(Fault { op: None, ..Fault::new(Op::List, Action::BreakListAfter { entries, kind }) });
    }

    /// Every call of `op` first sleeps for `delay`.
    pub fn delay(&self, op: Op, delay: Duration) {
        self.add(Fault::new(op, Action::Delay(delay)));
    }

    /// The next `n` writes (`put` or `put_overwrite`) land in the backend but report a transient
    /// error, as when the connection drops before the response arrives.
    pub fn drop_after_write(&self, n: usize) {
        let fault =
            Fault { op: None, times: Some(n), ..Fault::new(Op::Put, Action::FailAfterWrite(ErrorKind::Transient)) };
        self.add(fault);
    }

    /// Remove every fault (the call counters stay).
    pub fn clear(&self) {
        self.state().faults.clear();
    }

    /// How many times `op` was called on this layer, faulted calls included.
    pub fn calls(&self, op: Op) -> usize {
        self.state().calls[op.index()]
    }

    /// Every call since the last time this was asked, oldest first, as `"<op> <key or prefix>"`
    /// (e.g. `"get index/ab…"`, `"list data/"`): what an operation touched, to assert on.
    pub fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut self.state().log)
    }

    fn plan(&self, op: Op, key: &str) -> Plan {
        let mut state = self.state();
        state.calls[op.index()] += 1;
        state.log.push(format!("{} {key}", op.name()));
        let mut plan = Plan::default();
        for fault in state.faults.iter_mut().filter(|f| f.matches(op, key)) {
            let decided = plan.fail.is_some() || plan.fail_after_write.is_some() || plan.break_list.is_some();
            match fault.action {
                Action::Delay(d) => plan.delay += d,
                _ if decided => continue,
                Action::Fail(kind) => plan.fail = Some(kind),
                Action::FailAfterWrite(kind) => plan.fail_after_write = Some(kind),
                Action::BreakListAfter { entries, kind } => plan.break_list = Some((entries, kind)),
            }
            if let Some(times) = &mut fault.times {
                *times -= 1;
            }
        }
        state.faults.retain(|f| f.times != Some(0));
        plan
    }

    fn call<T>(&self, op: Op, key: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let plan = self.plan(op, key);
        if !plan.delay.is_zero() {
            std::thread::sleep(plan.delay);
        }
        if let Some(kind) = plan.fail {
            return Err(injected(kind, format!("injected fault: {} failed", op.name()), key));
        }
        let result = f()?;
        if let Some(kind) = plan.fail_after_write {
            let message = format!("injected fault: {} landed but its response was lost", op.name());
            return Err(injected(kind, message, key));
        }
        Ok(result)
    }
}

fn injected(kind: ErrorKind, message: String, key: &str) -> StorageError {
    let err = StorageError::new(kind, message);
    if key.is_empty() { err } else { err.with_key(key) }
}

impl<S: Storage> Storage for FaultStorage<S> {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        let plan = self.plan(Op::List, prefix);
        if !plan.delay.is_zero() {
            std::thread::sleep(plan.delay);
        }
        if let Some(kind) = plan.fail {
            return Err(injected(kind, "injected fault: list failed".to_owned(), ""));
        }
        let entries = self.inner.list(prefix)?;
        match plan.break_list {
            Some((n, kind)) if entries.len() > n => {
                let message = format!("injected fault: listing {prefix:?} broke after {n} entries");
                Err(injected(kind, message, ""))
            }
            _ => Ok(entries),
        }
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.call(Op::Get, key, || self.inner.get(key))
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        self.call(Op::GetRange, key, || self.inner.get_range(key, range))
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        self.call(Op::Stat, key, || self.inner.stat(key))
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.call(Op::Put, key, || self.inner.put(key, data))
    }

    fn put_overwrite(&self, key: &str, data: &[u8]) -> Result<()> {
        self.call(Op::PutOverwrite, key, || self.inner.put_overwrite(key, data))
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.call(Op::Delete, key, || self.inner.delete(key))
    }

    fn retention(&self) -> Option<&dyn crate::Retention> {
        self.inner.retention()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LocalStorage, MemoryStorage};

    #[test]
    fn fail_next_counts_down_and_is_per_op() {
        let s = FaultStorage::new(MemoryStorage::new());
        s.fail_next(Op::Put, 2, ErrorKind::StorageFull);
        assert_eq!(s.put("a", b"1").unwrap_err().kind(), ErrorKind::StorageFull);
        assert!(s.get("a").unwrap_err().is_not_found());
        assert_eq!(s.put("a", b"1").unwrap_err().kind(), ErrorKind::StorageFull);
        s.put("a", b"1").unwrap();
        assert_eq!(s.calls(Op::Put), 3);
        assert_eq!(s.calls(Op::Get), 1);
    }

    #[test]
    fn prefix_faults_hit_only_their_keys() {
        let s = FaultStorage::new(MemoryStorage::new());
        s.fail_writes_under("locks/", ErrorKind::PermissionDenied);
        assert_eq!(s.put("locks/1", b"").unwrap_err().kind(), ErrorKind::PermissionDenied);
        assert_eq!(s.put_overwrite("locks/1", b"").unwrap_err().kind(), ErrorKind::PermissionDenied);
        s.put("data/1", b"").unwrap();
        s.clear();
        s.put("locks/1", b"").unwrap();
    }

    #[test]
    fn broken_listing_is_an_error_not_a_short_list() {
        let s = FaultStorage::new(MemoryStorage::new());
        for i in 0..5 {
            s.put(&format!("data/{i}"), b"").unwrap();
        }
        s.break_list_after(3);
        let err = s.list("data/").unwrap_err();
        assert!(err.is_transient());
        assert!(err.to_string().contains("after 3 entries"), "{err}");
        assert_eq!(s.list("data/1").unwrap().len(), 1);
    }

    #[test]
    fn drop_after_write_lands_the_object() {
        let memory = MemoryStorage::new();
        let s = FaultStorage::new(memory.clone());
        s.drop_after_write(1);
        assert!(s.put("data/1", b"x").unwrap_err().is_transient());
        assert_eq!(memory.raw("data/1").unwrap(), b"x");
        s.put("data/2", b"y").unwrap();
        // Not applicable to reads.
        s.drop_after_write(1);
        assert_eq!(s.get("data/1").unwrap(), b"x");
        assert!(s.put_overwrite("locks/1", b"z").is_err());
    }

    #[test]
    fn delays_and_any_op_faults() {
        let dir = tempfile::tempdir().unwrap();
        let s = FaultStorage::new(LocalStorage::new(dir.path()));
        s.delay(Op::Stat, Duration::from_millis(30));
        let start = std::time::Instant::now();
        assert_eq!(s.stat("k").unwrap(), None);
        assert!(start.elapsed() >= Duration::from_millis(30));
        s.add(Fault { op: None, times: Some(1), ..Fault::new(Op::Get, Action::Fail(ErrorKind::Unreachable)) });
        assert_eq!(s.stat("k").unwrap_err().kind(), ErrorKind::Unreachable);
        assert_eq!(s.stat("k").unwrap(), None);
    }
}
