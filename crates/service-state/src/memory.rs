//! [`MemoryCatalog`]: the catalog in a mutex, for tests and throwaway daemons.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use jiff::Timestamp;
use tidemark_service_core::api::{Catalog, CatalogError, Claim, JobFilter, JobLogLine, JobRecord, RunKey};

use crate::lease::{Lease, completed, decide, newest_first};
use crate::{duplicate_job, unknown_job};

/// The catalog in memory: the same semantics as the durable ones, gone when dropped.
///
/// ```
/// use tidemark_service_core::api::Catalog;
/// use tidemark_service_state::MemoryCatalog;
///
/// let catalog = MemoryCatalog::new();
/// assert!(catalog.use_link("00ff", "2026-01-10T19:30:00Z".parse().unwrap()).unwrap());
/// assert!(!catalog.use_link("00ff", "2026-01-10T19:31:00Z".parse().unwrap()).unwrap());
/// ```
#[derive(Debug, Default)]
pub struct MemoryCatalog {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    jobs: HashMap<String, JobRecord>,
    logs: HashMap<String, Vec<JobLogLine>>,
    runs: HashMap<RunKey, Lease>,
    links: HashMap<String, Timestamp>,
}

impl MemoryCatalog {
    /// An empty catalog.
    pub fn new() -> MemoryCatalog {
        MemoryCatalog::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every method changes the state in one step that cannot panic halfway, so a poisoned
        // lock still guards a consistent state.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Catalog for MemoryCatalog {
    fn insert_job(&self, job: &JobRecord) -> Result<(), CatalogError> {
        let mut state = self.state();
        if state.jobs.contains_key(&job.id) {
            return Err(duplicate_job(&job.id));
        }
        state.jobs.insert(job.id.clone(), job.clone());
        Ok(())
    }

    fn update_job(&self, job: &JobRecord) -> Result<(), CatalogError> {
        match self.state().jobs.get_mut(&job.id) {
            Some(stored) => {
                *stored = job.clone();
                Ok(())
            }
            None => Err(unknown_job(&job.id)),
        }
    }

    fn job(&self, id: &str) -> Result<Option<JobRecord>, CatalogError> {
        Ok(self.state().jobs.get(id).cloned())
    }

    fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, CatalogError> {
        let jobs = self.state().jobs.values().filter(|j| filter.matches(j)).cloned().collect();
        Ok(newest_first(jobs, filter))
    }

    fn append_log(&self, job_id: &str, line: &JobLogLine) -> Result<(), CatalogError> {
        self.state().logs.entry(job_id.to_string()).or_default().push(line.clone());
        Ok(())
    }

    fn job_log(&self, job_id: &str) -> Result<Vec<JobLogLine>, CatalogError> {
        Ok(self.state().logs.get(job_id).cloned().unwrap_or_default())
    }

    fn claim(&self, run: &RunKey, owner: &str, until: Timestamp, now: Timestamp) -> Result<Claim, CatalogError> {
        let mut state = self.state();
        let (claim, lease) = decide(state.runs.get(run), owner, until, now);
        if let Some(lease) = lease {
            state.runs.insert(run.clone(), lease);
        }
        Ok(claim)
    }

    fn complete(&self, run: &RunKey, owner: &str) -> Result<(), CatalogError> {
        let mut state = self.state();
        let lease = completed(state.runs.get(run), owner);
        state.runs.insert(run.clone(), lease);
        Ok(())
    }

    fn use_link(&self, nonce: &str, at: Timestamp) -> Result<bool, CatalogError> {
        let mut state = self.state();
        if state.links.contains_key(nonce) {
            return Ok(false);
        }
        state.links.insert(nonce.to_string(), at);
        Ok(true)
    }
}
