//! Retention (S3 Object Lock) kept on everything the newest snapshot needs.
//!
//! A storage with [`Retention`] locks each object for a period from when it is written. With
//! deduplication a new snapshot reuses packs written long ago, whose retention may be about to
//! end: after each snapshot the engine extends, to at least `now + period`, the retention of every
//! pack the snapshot references and of what any restore needs (config, keys, live index files).
//! Only objects whose known retention ends sooner are touched; each is extended a little further
//! ([`renewal_margin`]: a tenth of the period, at least an hour, at most a week; new objects are
//! written with it too) so that the next backups need not touch it again. What
//! the storage learns (its writes, reads and extensions) it remembers for the life of the process.
//!
//! Prune plans around retention: see [`crate::prune`].

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use serde::Serialize;
use tidemark_format::Id;
use tidemark_storage::{Retention, renewal_margin};

use crate::prune::used_blobs;
use crate::repository::{CONFIG_KEY, INDEX, KEYS, SEALED_CONFIG_KEY, pack_key};
use crate::{RepoError, Repository, Result};

/// Parallel requests when checking and extending retention.
const WORKERS: usize = 8;

/// What [`Repository::extend_retention`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Objects whose retention was looked at.
    pub checked: usize,
    /// Objects whose retention was extended.
    pub extended: usize,
}

impl Repository {
    /// Make everything the snapshots with root `trees`, taken at `from`, need retained until at
    /// least `from + period`; nothing to do when the storage has no retention. What this backup
    /// wrote itself already is; older objects that are not are extended to `now + period` and a
    /// margin.
    pub fn extend_retention(&self, trees: &[Id], from: SystemTime) -> Result<RetentionReport> {
        let Some(retention) = self.storage().retention() else { return Ok(RetentionReport::default()) };
        let index = self.index()?;
        let used = used_blobs(self, trees.iter().copied())?;
        let packs: HashSet<Id> = used.iter().filter_map(|b| index.get(b)).map(|loc| index.pack(loc.pack).id).collect();
        let mut keys: Vec<String> = packs.iter().map(pack_key).collect();
        keys.extend(index.files().iter().map(|id| format!("{INDEX}{id}")));
        keys.extend(self.storage().list(KEYS)?.into_iter().map(|e| e.key));
        // One listing finds both configs (where they exist).
        let configs = self.storage().list(CONFIG_KEY)?;
        keys.extend(configs.into_iter().map(|e| e.key).filter(|k| k == CONFIG_KEY || k == SEALED_CONFIG_KEY));
        let needed = from + retention.period();
        let target = SystemTime::now() + retention.period() + renewal_margin(retention.period());
        extend_all(retention, &keys, needed, target)
    }
}

/// Check `keys` and extend to `target` those retained for less than `needed`, in parallel.
fn extend_all(
    retention: &dyn Retention,
    keys: &[String],
    needed: SystemTime,
    target: SystemTime,
) -> Result<RetentionReport> {
    let next = AtomicUsize::new(0);
    let extended = AtomicUsize::new(0);
    let failure: Mutex<Option<RepoError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..WORKERS.min(keys.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(key) = keys.get(i) else { break };
                    let result = retention.retained_until(key).and_then(|until| {
                        if until.is_some_and(|u| u >= needed) {
                            return Ok(());
                        }
                        extended.fetch_add(1, Ordering::Relaxed);
                        retention.extend(key, target)
                    });
                    if let Err(err) = result {
                        let mut slot = failure.lock().unwrap_or_else(|e| e.into_inner());
                        slot.get_or_insert(RepoError::Invalid(format!(
                            "the snapshot is saved, but the retention (Object Lock) of {key} could not be extended: \
                             {err}; the next backup tries again, or check the credential's s3:PutObjectRetention permission"
                        )));
                        next.store(keys.len(), Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
    });
    if let Some(err) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(err);
    }
    Ok(RetentionReport { checked: keys.len(), extended: extended.into_inner() })
}
