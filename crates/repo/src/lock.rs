//! Repository locks.
//!
//! | operation running \ wants to start | backup, copy, check, restore, forget (no prune) | prune |
//! |---|---|---|
//! | backup, copy, check, restore, forget | yes (shared locks) | no |
//! | prune | no | no |
//!
//! A lock is a sealed object under `locks/`, rewritten in place every `refresh` interval. A lock whose
//! time is older than `lifetime`, or whose holder is a dead process on this host, is stale: others
//! may remove it. A holder that could not refresh for `lifetime` has lost its lock: [`LockGuard::check`]
//! then fails and the operation stops before writing anything more.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tidemark_format::objects::Lock;
use tidemark_format::{Id, ObjectType, object};

use crate::repository::{LOCKS, random_bytes, random_id, whoami};
use crate::{RepoError, Repository, Result};

/// A held lock; released on drop.
pub struct LockGuard {
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

struct State {
    repo: Repository,
    id: Id,
    lock: Mutex<Lock>,
    last_ok: Mutex<Instant>,
    lost: Mutex<Option<String>>,
    stop: Mutex<bool>,
    wake: Condvar,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LockGuard({})", self.state.id.short())
    }
}

fn describe(l: &Lock) -> String {
    format!(
        "{} lock by {}@{} pid {} ({}) since {}",
        if l.exclusive { "an exclusive" } else { "a shared" },
        l.username,
        l.hostname,
        l.pid,
        l.operation,
        l.time
    )
}

/// Whether someone else's lock is stale at `now`.
pub fn is_stale(l: &Lock, now: Timestamp, lifetime: Duration, host: &str) -> bool {
    let age = now.duration_since(l.time);
    if age.as_secs_f64() > lifetime.as_secs_f64() {
        return true;
    }
    l.hostname == host && l.pid != std::process::id() && !std::path::Path::new(&format!("/proc/{}", l.pid)).exists()
}

impl Repository {
    /// All locks with their ids; locks that fail to open are returned as errors in place.
    pub fn list_locks(&self) -> Result<Vec<(Id, Result<Lock>)>> {
        Ok(self.list_ids(LOCKS)?.into_iter().map(|id| (id, self.load_json(ObjectType::Lock, LOCKS, &id))).collect())
    }

    /// Remove stale locks; returns how many.
    pub fn unlock_stale(&self) -> Result<usize> {
        let (host, _) = whoami();
        let now = Timestamp::now();
        let mut n = 0;
        for (id, lock) in self.list_locks()? {
            if let Ok(lock) = lock
                && is_stale(&lock, now, self.lock_options().lifetime, &host)
            {
                self.storage().delete(&format!("{LOCKS}{id}"))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Remove every lock, stale or not (`unlock --remove-all`: only when no other process runs).
    pub fn remove_all_locks(&self) -> Result<usize> {
        let ids = self.list_ids(LOCKS)?;
        for id in &ids {
            self.storage().delete(&format!("{LOCKS}{id}"))?;
        }
        Ok(ids.len())
    }

    fn conflicting(&self, exclusive: bool, own: Option<Id>) -> Result<Option<String>> {
        let (host, _) = whoami();
        let now = Timestamp::now();
        for (id, lock) in self.list_locks()? {
            if Some(id) == own {
                continue;
            }
            match lock {
                Ok(l) if is_stale(&l, now, self.lock_options().lifetime, &host) => continue,
                Ok(l) if exclusive || l.exclusive => return Ok(Some(describe(&l))),
                Ok(_) => {}
                // A lock we cannot open still blocks prune: when in doubt, keep the data.
                Err(e) if exclusive => return Ok(Some(format!("an unreadable lock {id} ({e})"))),
                Err(_) => {}
            }
        }
        Ok(None)
    }

    /// Take a lock for `operation`: shared, or exclusive for prune.
    pub fn lock(&self, operation: &str, exclusive: bool) -> Result<LockGuard> {
        if let Some(holder) = self.conflicting(exclusive, None)? {
            return Err(RepoError::Locked { holder });
        }
        let (hostname, username) = whoami();
        let lock = Lock {
            time: Timestamp::now(),
            exclusive,
            hostname,
            pid: std::process::id(),
            username,
            operation: operation.into(),
        };
        let id = random_id();
        let sealed = object::encode_json(self.master_key(), ObjectType::Lock, &id, &lock, &random_bytes());
        self.storage().put(&format!("{LOCKS}{id}"), &sealed)?;
        // Someone may have raced us between the check and the write.
        if let Some(holder) = self.conflicting(exclusive, Some(id))? {
            let _ = self.storage().delete(&format!("{LOCKS}{id}"));
            return Err(RepoError::Locked { holder });
        }
        let state = Arc::new(State {
            repo: self.clone(),
            id,
            lock: Mutex::new(lock),
            last_ok: Mutex::new(Instant::now()),
            lost: Mutex::new(None),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let s = state.clone();
        let thread = std::thread::Builder::new()
            .name("tidemark-lock".into())
            .spawn(move || refresher(&s))
            .map_err(|e| RepoError::Invalid(format!("cannot start lock refresher: {e}")))?;
        Ok(LockGuard { state, thread: Some(thread) })
    }
}

fn refresher(s: &State) {
    let opts = s.repo.lock_options();
    loop {
        {
            let stop = s.stop.lock().unwrap_or_else(|e| e.into_inner());
            let (stop, _) =
                s.wake.wait_timeout_while(stop, opts.refresh, |stop| !*stop).unwrap_or_else(|e| e.into_inner());
            if *stop {
                return;
            }
        }
        if s.lost.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            return;
        }
        if let Err(why) = s.refresh_once() {
            // Keep trying until the lifetime runs out; check() turns an old last_ok into "lost".
            let _ = why;
        }
    }
}

impl State {
    fn refresh_once(&self) -> Result<()> {
        let lifetime = self.repo.lock_options().lifetime;
        let since = self.last_ok.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
        if since > lifetime {
            self.mark_lost(format!("not refreshed for {}s", since.as_secs()));
            return Err(RepoError::LockLost("expired".into()));
        }
        let key = format!("{LOCKS}{}", self.id);
        if self.repo.storage().stat(&key)?.is_none() {
            self.mark_lost("the lock file was removed by another process".into());
            return Err(RepoError::LockLost("removed".into()));
        }
        let lock = {
            let mut l = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            l.time = Timestamp::now();
            l.clone()
        };
        let sealed = object::encode_json(self.repo.master_key(), ObjectType::Lock, &self.id, &lock, &random_bytes());
        self.repo.storage().put_overwrite(&key, &sealed)?;
        *self.last_ok.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        Ok(())
    }

    fn mark_lost(&self, why: String) {
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        if lost.is_none() {
            *lost = Some(why);
        }
    }
}

impl LockGuard {
    /// Fails when the lock is lost: not refreshed within its lifetime (the process was paused or
    /// storage unreachable) or removed by someone else. Call before every write.
    pub fn check(&self) -> Result<()> {
        let s = &self.state;
        if let Some(why) = s.lost.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Err(RepoError::LockLost(why));
        }
        let since = s.last_ok.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
        let lifetime = s.repo.lock_options().lifetime;
        if since > lifetime {
            s.mark_lost(format!("not refreshed for {}s, lifetime {}s", since.as_secs(), lifetime.as_secs()));
            return self.check();
        }
        // Near the end of the lifetime (a paused process resuming), refresh now or fail.
        if since * 2 > lifetime {
            s.refresh_once()?;
        }
        Ok(())
    }

    /// Id of the lock object.
    pub fn id(&self) -> Id {
        self.state.id
    }

    /// Release now (also done on drop).
    pub fn release(mut self) -> Result<()> {
        self.stop_thread();
        self.state.repo.storage().delete(&format!("{LOCKS}{}", self.state.id))?;
        Ok(())
    }

    fn stop_thread(&mut self) {
        *self.state.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.state.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_thread();
            let _ = self.state.repo.storage().delete(&format!("{LOCKS}{}", self.state.id));
        }
    }
}
