//! Tidemark service: the daemon that keeps a `tidemark.toml`'s promises on its own.
//!
//! A [`Daemon`] holds the parsed [`Config`], the [`Catalog`] (job history, logs, leases), an
//! owner id (the host name by default) and a [`Clock`]. It
//!
//! - **schedules** each source's backups and drills from their cron schedules in their time
//!   zones ([`Daemon::tick`]): a run that cannot start inside its window is recorded as
//!   `missed` and notified; a run still going at its window's end continues or is cancelled per
//!   `overrun`; after downtime it catches up once, never N times; every scheduled run is claimed
//!   through [`Catalog::claim`] (the lease renewed on every tick while it runs, completed at the
//!   end), so that daemons sharing a catalog run it exactly once;
//! - **recovers** on [`Daemon::recover`]: jobs this owner left running (a crash) are marked
//!   `interrupted`, and backups and drills are rerun;
//! - **runs jobs** with the engine's own library functions: directory, bucket and PostgreSQL base
//!   backups, then retention (forget per the source's `retention`, then prune), then off-site
//!   copies (`copy_to`); restore drills that restore the latest snapshot into a scratch
//!   directory, compare every file with the snapshot (for PostgreSQL: start a server on the
//!   restored base backup and its WAL and ask it `SELECT 1`), measure and clean up; restores on
//!   request;
//! - **notifies** webhooks (`[[notify]]`) of failed jobs, missed windows, stale backups and
//!   failed drills;
//! - answers the HTTP layer through [`Control`](tidemark_service_core::Control) (sources, snapshots, jobs, the live policy,
//!   drills, files for download links).
//!
//! ```no_run
//! use std::sync::Arc;
//! use tidemark_service::{Daemon, DaemonOptions};
//! use tidemark_service_core::{Catalog, Config};
//!
//! # fn catalog() -> Arc<dyn Catalog> { unimplemented!() }
//! let config = Arc::new(Config::load("/etc/tidemark/tidemark.toml").unwrap());
//! let daemon = Daemon::new(config, catalog(), DaemonOptions::default());
//! daemon.recover().unwrap(); // marks interrupted jobs and reruns them
//! let (stop, stopped) = std::sync::mpsc::channel::<()>();
//! let scheduler = daemon.spawn_scheduler(stopped);
//! // ... serve the API with `daemon.clone()` as its `Control` ...
//! drop(stop);
//! scheduler.join().unwrap();
//! ```
#![deny(missing_docs)]

mod clock;
mod control;
mod files;
mod jobs;
mod notify;
mod repos;
mod scheduler;
mod words;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use jiff::{SignedDuration, Timestamp};
use tidemark_service_core::{Catalog, CatalogError, Config, JobKind, JobLogLine, JobRecord, RunKey};

pub use clock::{Clock, ManualClock, SystemClock};
pub use notify::{Notice, Notifier};
pub use repos::{open_repository, read_password_file, storage_for};
pub use scheduler::TickReport;
pub use words::{cron_words, frequency, retention as retention_words};

/// Errors of the daemon's own operations (jobs record theirs in the catalog instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// A configured repository cannot be opened.
    #[error("repository {name:?}: {message}")]
    Repository {
        /// Its name in the config.
        name: String,
        /// What went wrong and the fix.
        message: String,
    },
    /// The catalog refused or failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A job thread could not be started.
    #[error("cannot start a job thread: {0}; the system is out of threads or memory")]
    Thread(std::io::Error),
}

/// Lets tests hold or fail a job between its steps: a fault injected on top of the real jobs.
pub trait JobHook: Send + Sync {
    /// Called before each step of a job (`"backup"`, `"retention"`, `"copy"`, `"restore"`,
    /// `"verify"`); an error fails the job with that message.
    fn before_step(&self, job: &JobRecord, step: &str) -> Result<(), String>;
}

/// How a [`Daemon`] runs.
#[derive(Clone)]
pub struct DaemonOptions {
    /// Its id in the catalog (leases, job owners); the host name by default.
    pub owner: String,
    /// Its clock; the system clock by default.
    pub clock: Arc<dyn Clock>,
    /// How long a claim on a scheduled run lasts before it must be renewed (5 minutes); a daemon
    /// that dies loses its runs to the others after this long.
    pub lease: SignedDuration,
    /// How often the scheduler thread wakes at most (15 s).
    pub tick_interval: std::time::Duration,
    /// A test hook called between job steps.
    pub hook: Option<Arc<dyn JobHook>>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            owner: tidemark_repo::hostname(),
            clock: Arc::new(SystemClock),
            lease: SignedDuration::from_mins(5),
            tick_interval: std::time::Duration::from_secs(15),
            hook: None,
        }
    }
}

impl std::fmt::Debug for DaemonOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonOptions")
            .field("owner", &self.owner)
            .field("lease", &self.lease)
            .field("tick_interval", &self.tick_interval)
            .finish_non_exhaustive()
    }
}

/// The daemon: a cheap handle (clone it freely) on the scheduler, the jobs and the catalog.
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("owner", &self.inner.owner).finish_non_exhaustive()
    }
}

/// A job running in this daemon.
struct Running {
    record: Arc<Mutex<JobRecord>>,
    key: Option<RunKey>,
    cancel: Arc<AtomicBool>,
    /// Whether its window's end was dealt with already.
    overran: bool,
}

pub(crate) struct Inner {
    config: Arc<Config>,
    catalog: Arc<dyn Catalog>,
    owner: String,
    clock: Arc<dyn Clock>,
    lease: SignedDuration,
    tick_interval: std::time::Duration,
    hook: Option<Arc<dyn JobHook>>,
    notifier: Notifier,
    repos: repos::Repositories,
    running: Mutex<HashMap<String, Running>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    sched: Mutex<scheduler::State>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Daemon {
    /// A daemon for `config` keeping its state in `catalog`. Nothing runs until
    /// [`Daemon::recover`] and then [`Daemon::tick`] (or [`Daemon::spawn_scheduler`]).
    pub fn new(config: Arc<Config>, catalog: Arc<dyn Catalog>, options: DaemonOptions) -> Daemon {
        let notifier = Notifier::new(config.notify.clone());
        Daemon {
            inner: Arc::new(Inner {
                config,
                catalog,
                owner: options.owner,
                clock: options.clock,
                lease: options.lease,
                tick_interval: options.tick_interval,
                hook: options.hook,
                notifier,
                repos: repos::Repositories::default(),
                running: Mutex::new(HashMap::new()),
                threads: Mutex::new(Vec::new()),
                sched: Mutex::new(scheduler::State::default()),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.inner.config
    }

    /// This daemon's owner id.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// The catalog.
    pub fn catalog_handle(&self) -> &Arc<dyn Catalog> {
        &self.inner.catalog
    }

    /// Ids of the jobs running in this daemon now.
    pub fn running_jobs(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.inner.running).keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Waits until every job this daemon started has finished.
    pub fn wait_idle(&self) {
        loop {
            let threads: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.inner.threads));
            if threads.is_empty() {
                return;
            }
            for t in threads {
                // A job thread that panicked has already been recorded as failed (see jobs.rs).
                let _ = t.join();
            }
        }
    }
}

impl Inner {
    /// Appends a line to a job's log; a catalog that cannot take it loses the line only.
    fn log(&self, job_id: &str, level: &str, message: impl Into<String>) {
        let line = JobLogLine { time: self.clock.now(), level: level.to_string(), message: message.into() };
        let _ = self.catalog.append_log(job_id, &line);
    }

    /// A new job record owned by this daemon.
    fn new_job(
        &self,
        source: &str,
        kind: JobKind,
        trigger: tidemark_service_core::Trigger,
        scheduled_for: Option<Timestamp>,
    ) -> JobRecord {
        JobRecord {
            id: new_job_id(),
            source: source.to_string(),
            kind,
            trigger,
            scheduled_for,
            created: self.clock.now(),
            started: None,
            finished: None,
            status: tidemark_service_core::JobStatus::Queued,
            message: None,
            snapshot: None,
            bytes_added: None,
            verified: None,
            owner: self.owner.clone(),
        }
    }
}

/// 16 random hex characters.
fn new_job_id() -> String {
    let bytes: [u8; 8] = rand::random();
    hex::encode(bytes)
}
